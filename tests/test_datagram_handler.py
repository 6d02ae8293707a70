"""`aio.DatagramHandler`: a server without a task per peer (issue 9: 100,000 mostly idle peers
in one process). The server calls the handler's methods as peers come, talk and go."""

from __future__ import annotations

import asyncio
import logging
import sys
from types import FrameType
from typing import Any, cast

import pytest

from iotdtls import aio
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import DtlsError, IdleTimeout, LocalProtocolError
from iotdtls.events import ConnectionClosed, DataReceived, Event
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


def break_one_peer(handler: aio.DatagramHandler, trigger: bytes) -> int:
    """Two clients of a server with `handler`: the first sends `trigger`, on which the handler
    fails, and gets close_notify; the second is still echoed. The first client's port."""
    ports: list[int] = []

    async def main() -> None:
        async with (
            await aio.serve(handler, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as broken,
            aio.connect(*server.address, client_config()) as fine,
        ):
            ports.append(broken.local_address[1])
            broken.send(trigger)
            assert await asyncio.wait_for(broken.recv(), 5.0) is None  # close_notify
            fine.send(b"still")
            assert await asyncio.wait_for(fine.recv(), 5.0) == b"llits"

    run(main())
    return ports[0]


def test_an_exception_ends_that_peer_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="iotdtls.aio")
    handler = Recorder()
    port = break_one_peer(handler, b"boom")
    assert ("ended", None) in handler.calls
    failed = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert failed == [f"handler failed for peer 127.0.0.1:{port}"]


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
    port = break_one_peer(CancelledOnCue(), b"cancel")
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed == [f"handler failed for peer 127.0.0.1:{port}"]


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


# One datagram of many records (RFC 6347 §4.1.1: a datagram may hold several records), in
# memory: the server's protocol behind a transport that keeps what it sends, the clients the
# core's sans-I/O `DtlsConnection`. Probe CF: each handler's `send` or `close` (or the close
# after it raised) flushed the next record's event into the handler again, one level deeper per
# record: a RecursionError at a few hundred records, a traceback per record, each chained to
# all the earlier ones.

#: Records in the one datagram: past what the nested flushes survived (RecursionError at
#: about 300 with Python's default limit), within one UDP datagram (30 bytes each).
MANY_RECORDS = 400
BAD_PEER = ("192.0.2.1", 40000)
GOOD_PEER = ("192.0.2.2", 40000)


class KeptTransport:
    """Stands in for the server's UDP transport: keeps each datagram sent, with its address."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, address: Any = None) -> None:
        self.sent.append((bytes(data), address))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass

    def take(self, address: Any) -> list[bytes]:
        """What was sent to `address` since the last take, and forget it."""
        mine = [data for data, to in self.sent if to == address]
        self.sent = [(data, to) for data, to in self.sent if to != address]
        return mine


class InMemoryServer:
    """`aio`'s server protocol on a `KeptTransport`, with clients made of the core alone."""

    def __init__(self, handler: aio.DatagramHandler) -> None:
        self.loop = asyncio.get_running_loop()
        self.protocol = aio._ServerProtocol(handler, server_config(), None)
        self.transport = KeptTransport()
        self.protocol.connection_made(cast(asyncio.BaseTransport, self.transport))

    def connect(self, address: Any) -> DtlsConnection:
        client = DtlsConnection(client_config())
        client.connect(self.loop.time())
        for _ in range(10):
            self.deliver(client, address)
            if client.state is ConnectionState.ESTABLISHED:
                return client
        raise AssertionError(f"no handshake: {client.state}")

    def deliver(self, client: DtlsConnection, address: Any) -> list[Event]:
        """What `client` has to send goes to the server, and the answers back: its events."""
        now = self.loop.time()
        for datagram in client.datagrams_to_send(now):
            self.protocol.datagram_received(datagram, address)
        for datagram in self.transport.take(address):
            client.receive_datagram(datagram, now)
        return list(iter(client.next_event, None))

    def send_coalesced(
        self, client: DtlsConnection, address: Any, records: list[bytes]
    ) -> list[Event]:
        """`records` as one record each, all in one UDP datagram; the client's events after."""
        for data in records:
            client.send(data)
        datagram = b"".join(client.datagrams_to_send(self.loop.time()))
        assert len(datagram) < 65_507  # one UDP datagram
        self.protocol.datagram_received(datagram, address)
        return self.deliver(client, address)


def stack_depth() -> int:
    frame: FrameType | None = sys._getframe()
    depth = 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


class DepthRecorder(aio.DatagramHandler):
    """Echoes, or raises / closes on cue, noting each call and its stack depth."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.depths: list[int] = []

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        self.calls.append(("datagram", data))
        self.depths.append(stack_depth())
        if data == b"boom":
            raise RuntimeError("the application broke")
        if data == b"bye":
            session.close()
            self.calls.append(("closed", session.ended))
            return
        session.send(data)

    def session_ended(self, session: aio.ServerSession, error: DtlsError | None) -> None:
        self.calls.append(("ended", error))


def test_every_record_of_one_datagram_is_echoed_in_order_at_one_stack_depth() -> None:
    """An echo handler's `send` inside the flush of a datagram of 400 records: each record is
    handed on at the same depth (the send does not hand on the next one) and echoed, in
    order; 300 made a RecursionError (probe CF)."""
    handler = DepthRecorder()
    records = [b"%04d" % i for i in range(MANY_RECORDS)]

    async def main() -> None:
        server = InMemoryServer(handler)
        client = server.connect(BAD_PEER)
        events = server.send_coalesced(client, BAD_PEER, records)
        echoed = [e.data for e in events if isinstance(e, DataReceived)]
        assert echoed == records
        assert not [e for e in events if isinstance(e, ConnectionClosed)]
        assert server.protocol._timer is not None  # the flush went on to set the timer

    run(main())
    assert [data for _, data in handler.calls] == records
    assert max(handler.depths) == min(handler.depths)


@pytest.mark.parametrize("cue", [b"boom", b"bye"])
def test_after_a_handler_raised_or_closed_the_rest_of_its_datagram_is_not_handed_on(
    cue: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """README: a `DatagramHandler` method that raises ends that peer's association and is
    logged: once, however many records its datagram holds after the one that raised; a
    `session.close()` ends it as much. The peer gets close_notify, `session_ended` comes once
    the method has returned, and the other peers are served. The raising case made 400
    tracebacks (or a RecursionError into asyncio), the handler called after it raised or
    closed, `session.ended` still False (probe CF)."""
    caplog.set_level(logging.ERROR)
    handler = DepthRecorder()

    async def main() -> None:
        server = InMemoryServer(handler)
        good = server.connect(GOOD_PEER)
        bad = server.connect(BAD_PEER)
        (session,) = [s for s in server.protocol.sessions.values() if s.address == BAD_PEER]
        events = server.send_coalesced(bad, BAD_PEER, [cue] * MANY_RECORDS)
        assert [e for e in events if isinstance(e, ConnectionClosed)] == [ConnectionClosed(None)]
        assert session.ended
        assert BAD_PEER not in server.protocol.sessions
        (echo,) = server.send_coalesced(good, GOOD_PEER, [b"still"])
        assert echo == DataReceived(b"still")

    run(main())
    closed = [("closed", True)] if cue == b"bye" else []
    assert handler.calls == [("datagram", cue), *closed, ("ended", None), ("datagram", b"still")]
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if cue == b"boom":
        assert failed == [f"handler failed for peer {BAD_PEER[0]}:{BAD_PEER[1]}"]
    else:
        assert failed == []


def test_a_flush_left_by_system_exit_leaves_the_next_one_to_hand_events_on() -> None:
    """SystemExit (and KeyboardInterrupt) from a handler method stop the loop, as README says;
    a server run again afterwards (the loop's `run_forever` again) still hands datagrams on:
    the flush that SystemExit left is not still taken for running."""

    class ExitOnCue(DepthRecorder):
        def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
            if data == b"exit":
                raise SystemExit(3)
            super().datagram_received(session, data)

    async def main() -> None:
        server = InMemoryServer(ExitOnCue())
        client = server.connect(BAD_PEER)
        with pytest.raises(SystemExit):
            server.send_coalesced(client, BAD_PEER, [b"exit"])
        events = server.send_coalesced(client, BAD_PEER, [b"after"])
        assert events == [DataReceived(b"after")]

    run(main())
