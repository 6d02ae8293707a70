"""`aio.DatagramHandler`: a server without a task per peer (issue 9: 100,000 mostly idle peers
in one process). The server calls the handler's methods as peers come, talk and go."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iotdtls import aio
from iotdtls.errors import DtlsError, IdleTimeout, LocalProtocolError
from iotdtls.events import DataReceived
from tests.aio_support import client_config, run, server_config
from tests.peers import CLIENT_IDENTITY, LOCALHOST


class Recorder(aio.DatagramHandler):
    """Answers each datagram reversed and notes every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.ended = asyncio.Event()

    def session_started(self, session: aio.ServerSession) -> None:
        self.calls.append(("started", session.psk_identity))

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        self.calls.append(("datagram", data))
        if data == b"boom":
            raise RuntimeError("the application broke")
        session.send(data[::-1])

    def session_ended(self, session: aio.ServerSession, error: DtlsError | None) -> None:
        self.calls.append(("ended", error))
        assert session.ended
        self.ended.set()


@pytest.mark.req("PSK-1", "HS-1")
def test_calls_in_order_and_no_task_per_peer() -> None:
    handler = Recorder()

    async def main() -> None:
        async with await aio.serve(handler, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as client:
                client.send(b"abc")
                assert await client.recv() == b"cba"
                (session,) = server._protocol.sessions.values()
                assert not server._protocol.tasks  # nothing runs per peer
                assert session.inbox is None
                with pytest.raises(LocalProtocolError, match="DatagramHandler"):
                    await session.recv()
            await asyncio.wait_for(handler.ended.wait(), 5.0)
        assert handler.calls == [
            ("started", CLIENT_IDENTITY.encode()),
            ("datagram", b"abc"),
            ("ended", None),
        ]

    run(main())


def test_an_exception_ends_that_peer_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="iotdtls.aio")
    handler = Recorder()

    async def main() -> None:
        async with (
            await aio.serve(handler, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as broken,
            aio.connect(*server.address, client_config()) as fine,
        ):
            ports.append(broken.local_address[1])
            broken.send(b"boom")
            assert await asyncio.wait_for(broken.recv(), 5.0) is None  # close_notify
            fine.send(b"still")
            assert await fine.recv() == b"llits"

    ports: list[int] = []
    run(main())
    assert ("ended", None) in handler.calls
    failed = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert failed == [f"handler failed for peer 127.0.0.1:{ports[0]}"]


def test_the_error_that_ended_the_association_reaches_session_ended() -> None:
    handler = Recorder()

    async def main() -> None:
        config = server_config(idle_timeout=0.3)
        async with await aio.serve(handler, LOCALHOST, 0, config) as server:
            async with aio.connect(*server.address, client_config()) as client:
                assert await asyncio.wait_for(client.recv(), 5.0) is None
            await asyncio.wait_for(handler.ended.wait(), 5.0)

    run(main())
    ((_, error),) = [c for c in handler.calls if c[0] == "ended"]
    assert isinstance(error, IdleTimeout)


def test_a_session_ended_that_raises_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler's exception at the end of one association is its bug, logged with the
    peer; the server keeps serving the next client."""

    class BrokenAtTheEnd(Recorder):
        def session_ended(self, session: aio.ServerSession, error: DtlsError | None) -> None:
            super().session_ended(session, error)
            raise RuntimeError("the application broke at the end")

    handler = BrokenAtTheEnd()
    ports: list[int] = []

    async def main() -> None:
        async with await aio.serve(handler, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as first:
                ports.append(first.local_address[1])
            await asyncio.wait_for(handler.ended.wait(), 5.0)
            async with aio.connect(*server.address, client_config()) as second:
                second.send(b"next")
                assert await second.recv() == b"txen"

    caplog.set_level(logging.ERROR)
    run(main())
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failed][:1] == [f"handler failed for peer 127.0.0.1:{ports[0]}"]
    assert all(r.getMessage().startswith("handler failed for peer ") for r in failed)


def test_a_session_started_that_raises_ends_that_peer_with_close_notify(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenAtTheStart(aio.DatagramHandler):
        def session_started(self, session: aio.ServerSession) -> None:
            raise RuntimeError("the application broke at the start")

    async def main() -> None:
        async with (
            await aio.serve(BrokenAtTheStart(), LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as client,
        ):
            port.append(client.local_address[1])
            assert await asyncio.wait_for(client.recv(), 5.0) is None  # close_notify

    port: list[int] = []
    caplog.set_level(logging.ERROR, logger="iotdtls.aio")
    run(main())
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failed] == [f"handler failed for peer 127.0.0.1:{port[0]}"]


class CancelledOnCue(Recorder):
    """A handler whose `datagram_received` raises CancelledError (a BaseException) for
    b"cancel": as an exception of the handler's, not as a cancellation of the server."""

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        if data == b"cancel":
            raise asyncio.CancelledError
        super().datagram_received(session, data)


def test_a_cancelled_error_from_a_handler_method_ends_that_peer_as_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: a `DatagramHandler` method that raises has the failure logged ("handler failed
    for peer ...") and its association closed with close_notify. CancelledError escaped into
    asyncio's "Exception in callback" log and left the association open (probe CE F5)."""
    caplog.set_level(logging.ERROR)
    ports: list[int] = []

    async def main() -> None:
        async with (
            await aio.serve(CancelledOnCue(), LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as cancelling,
            aio.connect(*server.address, client_config()) as fine,
        ):
            ports.append(cancelling.local_address[1])
            cancelling.send(b"cancel")
            assert await asyncio.wait_for(cancelling.recv(), 5.0) is None  # close_notify
            fine.send(b"still")
            assert await asyncio.wait_for(fine.recv(), 5.0) == b"llits"

    run(main())
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed == [f"handler failed for peer 127.0.0.1:{ports[0]}"]


def test_the_flush_goes_on_past_a_handler_method_that_raised_cancelled_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The events after the one whose handler raised CancelledError are handed on, and the
    wake-up for the endpoint's next deadline is set, in the same flush (probe CE F5: the
    flush was abandoned halfway)."""
    handler = CancelledOnCue()

    async def main() -> None:
        async with (
            await aio.serve(handler, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as first,
            aio.connect(*server.address, client_config()) as second,
        ):
            protocol = server._protocol
            addresses = [
                (LOCALHOST, first.local_address[1]),
                (LOCALHOST, second.local_address[1]),
            ]
            assert set(addresses) <= set(protocol.sessions)
            events = [(addresses[0], DataReceived(b"cancel")), (addresses[1], DataReceived(b"on"))]
            deadline = asyncio.get_running_loop().time() + 60.0
            monkeypatch.setattr(
                protocol.endpoint, "next_event", lambda: events.pop(0) if events else None
            )
            monkeypatch.setattr(protocol.endpoint, "get_timer", lambda: deadline)
            if protocol._timer is not None:
                protocol._timer.cancel()
                protocol._timer = None
            protocol.flush()
            monkeypatch.undo()
            assert events == []
            assert protocol._timer is not None and protocol._timer_at == deadline
            assert await asyncio.wait_for(second.recv(), 5.0) == b"no"

    run(main())
    assert ("datagram", b"on") in handler.calls
