"""`iotdtls.aio` under cancellation: what cancelling `connect()` leaves behind, and how long
`DtlsServer.close()` may take with handlers that do not end at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from typing import Any

import pytest

from iotdtls import aio, loop
from iotdtls.connection import ConnectionState
from tests.aio_support import client_config, echo, eventually, run, server_config
from tests.peers import LOCALHOST


def test_connect_cancelled_once_its_handshake_completed_sends_close_notify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task was cancelled in the instant between the handshake's end and its resuming
    (probe AV, p1b): the socket was closed without close_notify, and the server kept the
    association and its handler task until idle_timeout (an hour by default). Now the
    server hears close_notify and its handler ends at once."""
    protocols: list[Any] = []
    made = aio._ClientProtocol.__init__

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        protocols.append(self)

    monkeypatch.setattr(aio._ClientProtocol, "__init__", record)

    async def main() -> None:
        ended: list[None] = []

        async def handler(session: aio.ServerSession) -> None:
            try:
                async for datagram in session:
                    session.send(datagram)
            finally:
                ended.append(None)

        server = await aio.serve(handler, LOCALHOST, 0, server_config())
        async with server:
            task = asyncio.create_task(aio.connect(*server.address, client_config()))
            for _ in range(10000):  # a turn of the loop at a time: the protocol, made
                if protocols:  # before its socket, long before the handshake's end
                    break
                await asyncio.sleep(0)
            [protocol] = protocols
            assert not protocol.handshake_done.done()
            # Run before the task's own wake-up (added later): the cancellation meets a
            # handshake that has just completed.
            protocol.handshake_done.add_done_callback(lambda done: task.cancel())
            with pytest.raises(asyncio.CancelledError):
                await task
            assert protocol.connection.state is ConnectionState.CLOSED
            assert await eventually(lambda: ended, 2.0), "the server keeps the association"
            assert ended == [None]

    run(main(), limit=10.0)


def open_sockets() -> int:
    """How many sockets this process holds open (its /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_connect_cancelled_at_any_turn_of_the_loop_leaves_no_socket_and_no_association(
    loop_choice: str,
) -> None:
    """connect() cancelled after k turns of the loop, for each k until it completes (probe
    BF, finding 1): on uvloop (0.23), cancelled within create_datagram_endpoint, the
    transport stayed open and its connection_made sent the ClientHello all the same; the
    handshake completed in the background, the client's socket stayed open until the loop
    closed and the server kept the association until its idle_timeout. Now, on either
    loop, nothing is left: no socket here, no association there."""
    if loop_choice == "uvloop" and not loop.uvloop_available():
        pytest.skip("uvloop is not installed")

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with server:
            async with aio.connect(*server.address, client_config()):
                pass  # whatever the first connection sets up once (the resolver, say)
            gc.collect()
            before = open_sockets()
            completed = False
            turns = 0
            while not completed:
                for _ in range(3):  # the cancellation can fall between two events of a turn
                    task = asyncio.ensure_future(aio.connect(*server.address, client_config()))
                    for _ in range(turns):
                        await asyncio.sleep(0)
                    task.cancel()
                    try:
                        await (await task).close()
                        completed = True
                    except asyncio.CancelledError:
                        pass
                turns += 1
            await asyncio.sleep(0.3)  # long enough for a handshake left running to end
            gc.collect()
            assert (open_sockets() - before, len(server.endpoint.connections)) == (0, 0)
            assert turns > 3  # the sweep got past the socket's making

    loop.run(asyncio.wait_for(main(), 20.0), loop_choice)


async def closed_unsent(sock: socket.socket, listener: socket.socket) -> None:
    """`sock`, the connect's socket, is closed, and `listener`, the address it would send to,
    got nothing (a ClientHello would be there after 0.1 s on loopback)."""
    assert sock.fileno() == -1
    await asyncio.sleep(0.1)
    with pytest.raises(BlockingIOError):
        listener.recv(2048)  # nothing was sent


def test_a_connect_cancelled_before_its_loop_calls_connection_made_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop whose create_datagram_endpoint, cancelled, returns before it calls the
    protocol's connection_made (uvloop's can, 5d6aa7b): connect() marks its protocol
    abandoned as it gives up, so the late connection_made closes the transport at once and
    sends no ClientHello (M14: `_open_on` 13, 14 left it unmarked)."""

    async def main() -> None:
        running = asyncio.get_running_loop()
        original = running.create_datagram_endpoint
        late: list[asyncio.Future[Any]] = []

        async def returns_first(factory: Any, **kwargs: Any) -> Any:
            late.append(asyncio.ensure_future(original(factory, **kwargs)))
            raise asyncio.CancelledError

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind((LOCALHOST, 0))
            listener.setblocking(False)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            monkeypatch.setattr(running, "create_datagram_endpoint", returns_first)
            with pytest.raises(asyncio.CancelledError):
                await aio.connect(*listener.getsockname(), client_config(), sock=sock)
            monkeypatch.undo()
            _, protocol = await asyncio.wait_for(late[0], 2.0)
            await asyncio.wait_for(protocol.lost, 2.0)
            await closed_unsent(sock, listener)

    run(main(), limit=10.0)


def test_a_protocol_abandoned_by_connect_closes_its_transport_and_sends_nothing() -> None:
    """A loop that calls connection_made only after connect() gave up (cancelled within
    create_datagram_endpoint) gets its transport closed at once, no ClientHello sent."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind((LOCALHOST, 0))
            listener.setblocking(False)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(listener.getsockname())
            protocol = aio._ClientProtocol(client_config(), None)
            protocol.abandoned = True  # as connect() marks it when cancelled
            await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
            await asyncio.wait_for(protocol.lost, 2.0)
            await closed_unsent(sock, listener)

    run(main(), limit=10.0)


def test_recv_cancelled_as_its_datagram_arrives_loses_nothing() -> None:
    """A recv() cancelled in the instant its datagram arrived (woken, not yet resumed): the
    datagram waits for the next recv() (as the README says)."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with server, aio.connect(*server.address, client_config()) as client:
            reading = asyncio.ensure_future(client.recv())
            await asyncio.sleep(0.05)  # it waits for a datagram
            assert not reading.done()
            client._protocol.inbox.put(b"arrived")  # as a received datagram does
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert await asyncio.wait_for(client.recv(), 2.0) == b"arrived"

    run(main(), limit=10.0)


@pytest.mark.parametrize("handler_end", ["slow cleanup", "swallows cancellation"])
def test_server_close_cut_short_has_freed_the_port_and_returns(handler_end: str) -> None:
    """server.close() waits for the handlers it cancelled. Cut short by wait_for (probe AV,
    p12 and p3): with a handler still cleaning up, it raised TimeoutError with the port still
    bound (until close() was called again); with a handler that swallows CancelledError,
    even wait_for(server.close(), 0.5) never returned. Now the port is free first, and
    wait_for bounds close(): the handler is left to end on its own."""
    release = asyncio.Event()
    handler_ended = asyncio.Event()

    async def handler(session: aio.ServerSession) -> None:
        try:
            async for datagram in session:
                session.send(datagram)
        finally:
            if handler_end == "slow cleanup":
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()  # say, flushing state to a database
            else:
                while not release.is_set():
                    with contextlib.suppress(asyncio.CancelledError):
                        await release.wait()
            handler_ended.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, release.set)  # the test's own bound on the handler
        server = await aio.serve(handler, LOCALHOST, 0, server_config())
        port = server.address[1]
        async with aio.connect(*server.address, client_config()) as client:
            client.send(b"ping")
            assert await asyncio.wait_for(client.recv(), 5.0) == b"ping"
            started = loop.time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(server.close(), 0.5)
            assert loop.time() - started < 1.5
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
                again.bind((LOCALHOST, port))  # free
            release.set()
            await asyncio.wait_for(handler_ended.wait(), 2.0)
            await server.close()  # closed already: returns at once

    run(main(), limit=10.0)
