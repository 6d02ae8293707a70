"""An asyncio connection belongs to the event loop that opened it: `asyncio.run(connect(...))`
ends with a warning and the connection closed; using it (or a server's session) once that
loop is closed, or from another running loop, raises `ForeignEventLoop` rather than sending
into nowhere, waiting forever or leaving a coroutine never awaited."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import sys
import threading
import time
import warnings
from typing import Any

import pytest

from iotdtls import _process, aio, loop, sync
from iotdtls.errors import AssociationEnded, ForeignEventLoop, LocalProtocolError
from tests.aio_support import client_config, echo, eventually, server_config
from tests.interop_support import ServerThread

#: What `ForeignEventLoop` says of a connection whose loop is closed, and used from another
#: running loop.
CLOSED = re.escape("this connection's event loop is closed: open and use it inside one"
                   " asyncio.run")
ANOTHER_LOOP = re.escape("this connection belongs to another event loop than the one running"
                         " here: use it only in the loop that opened it")
ANOTHER_THREAD = re.escape(
    "this connection belongs to an event loop running in another thread, not in this one: hand"
    " the call to that loop (loop.call_soon_threadsafe, asyncio.run_coroutine_threadsafe)")
#: Bound of each asyncio.run of these tests (seconds).
LIMIT = 10.0


def refused_in_another_loop(conn: aio.ClientConnection, why: str, *, closed: bool) -> None:
    """send, recv, heartbeat and close of `conn` all raise ForeignEventLoop from within
    another loop, saying `why` (a pattern); a close of a connection `closed` already does
    nothing instead."""

    async def use() -> None:
        with pytest.raises(ForeignEventLoop, match=why):
            conn.send(b"late")
        with pytest.raises(ForeignEventLoop, match=why):
            await conn.recv()
        with pytest.raises(ForeignEventLoop, match=why):
            await conn.heartbeat(1.0)
        if closed:
            await conn.close()
        else:
            with pytest.raises(ForeignEventLoop, match=why):
                await conn.close()

    asyncio.run(asyncio.wait_for(use(), LIMIT))


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_asyncio_run_of_connect_warns_closes_and_later_use_raises(loop_choice: str) -> None:
    """On either loop: the loop's end (its runner's shutdown_asyncgens) closes the connection."""
    with ServerThread(server_config()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conn = loop.run(asyncio.wait_for(
                aio.connect(*server.address, client_config()), LIMIT), loop_choice)
        assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
            f"iotdtls: the connection to 127.0.0.1:{server.port} was still open when its event"
            " loop ended (asyncio.run(connect(...))?): closed it; open, use and close it inside"
            " one asyncio.run"]
        # Closed as the loop ended: the server got close_notify (a clean end).
        assert server.wait_until(lambda: len(server.ended) == 1)
        assert server.ended[0][1] is None
        with pytest.raises(ForeignEventLoop, match=CLOSED):  # outside any loop too
            conn.send(b"late")
        refused_in_another_loop(conn, CLOSED, closed=True)
    assert issubclass(ForeignEventLoop, LocalProtocolError)


async def serve_and_echo_once(
    sessions: list[aio.ServerSession],
) -> tuple[aio.DtlsServer, aio.ClientConnection]:
    """An echo server keeping its sessions in `sessions`, and a connection to it that had one
    datagram echoed."""

    async def keep(session: aio.ServerSession) -> None:
        sessions.append(session)
        await echo(session)

    server = await aio.serve(keep, "127.0.0.1", 0, server_config())
    conn = await aio.connect(*server.address, client_config())
    conn.send(b"hello")
    assert await conn.recv() == b"hello"
    return server, conn


def test_closing_again_what_the_loop_end_closed_does_nothing_whatever_the_loop() -> None:
    """`finally: await conn.close()` in another asyncio.run, after the loop's end closed the
    connection (and the server, and so its sessions): nothing to do, no ForeignEventLoop."""
    sessions: list[aio.ServerSession] = []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # each still open at the loop's end
        server, conn = asyncio.run(asyncio.wait_for(serve_and_echo_once(sessions), LIMIT))

    async def close_all() -> None:
        await conn.close()
        await server.close()
        sessions[0].close()

    asyncio.run(asyncio.wait_for(close_all(), LIMIT))
    close_all_again = close_all()
    with pytest.raises(StopIteration):  # outside any loop: returns at once, nothing awaited
        close_all_again.send(None)
    with pytest.raises(ForeignEventLoop, match=CLOSED):  # still unusable
        conn.send(b"late")


def test_a_connection_used_from_another_loop_raises_and_still_works_on_its_own() -> None:
    with ServerThread(server_config()) as server, asyncio.Runner() as own:
        conn = own.run(asyncio.wait_for(aio.connect(*server.address, client_config()), LIMIT))
        refused_in_another_loop(conn, ANOTHER_LOOP, closed=False)

        async def echo_then_close() -> None:
            conn.send(b"still mine")
            assert await conn.recv() == b"still mine"
            await conn.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            own.run(asyncio.wait_for(echo_then_close(), LIMIT))
        assert [w for w in caught if w.category is RuntimeWarning] == []


def test_outside_any_loop_a_connection_of_an_open_loop_sends() -> None:
    """Between two `run_until_complete` calls no loop runs: the transport sends at once."""
    with ServerThread(server_config()) as server, asyncio.Runner() as own:
        conn = own.run(asyncio.wait_for(aio.connect(*server.address, client_config()), LIMIT))
        conn.send(b"between runs")
        assert own.run(asyncio.wait_for(conn.recv(), LIMIT)) == b"between runs"
        own.run(conn.close())


def test_from_another_thread_while_the_loop_runs_a_send_raises_and_a_handed_one_goes() -> None:
    """asyncio's loops and transports are not thread-safe: a thread where no loop runs may not
    send over a connection (or a server's session) while its loop runs in its own thread; it
    hands the call to that loop (`call_soon_threadsafe`), which sends it."""
    sessions: list[aio.ServerSession] = []

    async def keep(session: aio.ServerSession) -> None:
        sessions.append(session)
        await echo(session)

    def from_a_thread(conn: aio.ClientConnection) -> None:
        with pytest.raises(ForeignEventLoop, match=ANOTHER_THREAD):
            conn.send(b"unsafe")
        (session,) = sessions
        with pytest.raises(ForeignEventLoop, match=ANOTHER_THREAD.replace("connection", "session")):
            session.send(b"unsafe")
        with pytest.raises(ForeignEventLoop, match=ANOTHER_THREAD.replace("connection", "session")):
            session.close()

    async def main() -> None:
        async with (
            await aio.serve(keep, "127.0.0.1", 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as conn,
        ):
            conn.send(b"hello")
            assert await conn.recv() == b"hello"
            await asyncio.to_thread(from_a_thread, conn)
            running = asyncio.get_running_loop()
            await asyncio.to_thread(running.call_soon_threadsafe, conn.send, b"handed over")
            assert await conn.recv() == b"handed over"
            assert not sessions[0].ended

    asyncio.run(asyncio.wait_for(main(), LIMIT))


def test_a_server_and_its_session_used_from_another_loop_raise() -> None:
    sessions: list[aio.ServerSession] = []

    async def use_session(server: aio.DtlsServer) -> None:
        (session,) = sessions
        foreign_session = ANOTHER_LOOP.replace("connection", "session")
        with pytest.raises(ForeignEventLoop, match=foreign_session):
            session.send(b"late")
        with pytest.raises(ForeignEventLoop, match=foreign_session):
            await session.recv()
        with pytest.raises(ForeignEventLoop, match=foreign_session):
            await session.heartbeat(1.0)
        with pytest.raises(ForeignEventLoop, match=foreign_session):
            session.close()
        with pytest.raises(ForeignEventLoop, match=ANOTHER_LOOP.replace("connection", "server")):
            await server.close()

    async def close(server: aio.DtlsServer, conn: aio.ClientConnection) -> None:
        await conn.close()
        await server.close()

    with asyncio.Runner() as own:
        server, conn = own.run(asyncio.wait_for(serve_and_echo_once(sessions), LIMIT))
        asyncio.run(asyncio.wait_for(use_session(server), LIMIT))
        own.run(asyncio.wait_for(close(server, conn), LIMIT))


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_asyncio_run_of_serve_warns_closes_with_close_notify_and_frees_the_port(
    loop_choice: str,
) -> None:
    """A server still open as `asyncio.run` ends its loop is closed then, like a connection:
    its peers get close_notify, its port is free again, one RuntimeWarning says why (on
    either loop)."""

    async def start() -> tuple[aio.DtlsServer, sync.DtlsClient]:
        server = await aio.serve(echo, "127.0.0.1", 0, server_config())
        client = await asyncio.to_thread(sync.connect, *server.address, client_config())
        return server, client

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server, client = loop.run(asyncio.wait_for(start(), LIMIT), loop_choice)
    host, port = server.address
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
        f"iotdtls: the server on 127.0.0.1:{port} was still open when its event loop ended"
        " (asyncio.run(serve(...))?): closed it; serve and close it inside one asyncio.run"]
    with client:
        assert client.recv(LIMIT) is None  # the server's close_notify: a clean end
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((host, port))
    asyncio.run(server.close())  # closed already: nothing to do, whatever the loop


def test_a_server_closed_in_its_loop_gives_no_warning_and_a_dropped_one_serves_on() -> None:
    async def main() -> None:
        server = await aio.serve(echo, "127.0.0.1", 0, server_config())
        address = server.address
        del server  # the loop keeps it serving until it ends
        async with aio.connect(*address, client_config()) as conn:
            conn.send(b"still served")
            assert await conn.recv() == b"still served"
        second = await aio.serve(echo, "127.0.0.1", 0, server_config())
        await second.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(asyncio.wait_for(main(), LIMIT))
    assert [str(w.message)[:26] for w in caught if w.category is RuntimeWarning] == [
        "iotdtls: the server on 127"]


async def close_after_one(session: aio.ServerSession) -> None:
    """The server ends each association with close_notify at its first datagram."""
    async for _ in session:
        session.close()
        break


def iotdtls_warnings(caught: list[warnings.WarningMessage]) -> list[tuple[type, str]]:
    return [(w.category, str(w.message)) for w in caught if "iotdtls" in str(w.message)]


def assert_port_free(address: tuple[object, ...]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(address[:2])


def test_a_connection_the_peer_closed_is_released_quietly_as_the_loop_ends() -> None:
    """recv() gave None (the peer's close_notify), send raised AssociationEnded: the
    application ending without close() is told nothing misleading; the socket is freed."""
    kept: list[aio.ClientConnection] = []

    async def main() -> None:
        server = await aio.serve(close_after_one, "127.0.0.1", 0, server_config())
        conn = await aio.connect(*server.address, client_config())
        kept.append(conn)
        conn.send(b"bye")
        assert await conn.recv() is None
        with pytest.raises(AssociationEnded):
            conn.send(b"too late")
        await server.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(asyncio.wait_for(main(), LIMIT))
    assert iotdtls_warnings(caught) == []
    assert_port_free(kept[0].local_address)


def test_a_dropped_open_connection_is_closed_when_collected_with_a_resource_warning() -> None:
    async def main(port: int) -> tuple[object, ...]:
        conn = await aio.connect("127.0.0.1", port, client_config())
        local = conn.local_address
        del conn
        gc.collect()
        assert await eventually(lambda: len(server.ended) == 1, LIMIT)
        return local

    with ServerThread(server_config()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            local = asyncio.run(asyncio.wait_for(main(server.port), LIMIT))
        assert server.ended[0][1] is None  # close_notify: a clean end
    assert iotdtls_warnings(caught) == [
        (ResourceWarning, f"iotdtls: unclosed connection to 127.0.0.1:{server.port}")]
    assert_port_free(local)


def test_a_dropped_connection_the_peer_closed_is_released_quietly() -> None:
    async def main() -> tuple[object, ...]:
        server = await aio.serve(close_after_one, "127.0.0.1", 0, server_config())
        conn = await aio.connect(*server.address, client_config())
        conn.send(b"bye")
        assert await conn.recv() is None
        local = conn.local_address
        del conn
        gc.collect()
        await asyncio.sleep(0.05)  # the release runs on the loop
        await server.close()
        return local

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        local = asyncio.run(asyncio.wait_for(main(), LIMIT))
    assert iotdtls_warnings(caught) == []
    assert_port_free(local)


def test_a_dropped_connection_is_released_before_its_warning_which_may_be_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under `-W error` the warning raised before the release was scheduled: no close_notify
    and the socket left to the transport's own finalizer. It is given after."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda what: raised.append(what.exc_value))

    async def main(port: int) -> tuple[object, ...]:
        conn = await aio.connect("127.0.0.1", port, client_config())
        local = conn.local_address
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            del conn
            gc.collect()
        assert await eventually(lambda: len(server.ended) == 1, LIMIT)
        return local

    with ServerThread(server_config()) as server:
        local = asyncio.run(asyncio.wait_for(main(server.port), LIMIT))
        assert server.ended[0][1] is None  # close_notify: a clean end
    assert [str(error) for error in raised] == [
        f"iotdtls: unclosed connection to 127.0.0.1:{server.port}"]
    assert_port_free(local)



def test_a_forked_child_is_told_whose_the_association_is_even_where_its_loop_copy_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a child forked while the loop ran, the loop's copy may look running elsewhere: the
    refusal names the process (LocalProtocolError, "belongs to the process"), not another
    thread's loop (ForeignEventLoop, whose advice to hand the call over is wrong there). The
    child is played by a thread of this process whose process id reads as another one's."""
    sessions: list[aio.ServerSession] = []

    async def keep(session: aio.ServerSession) -> None:
        sessions.append(session)
        await echo(session)

    def as_a_forked_child(conn: aio.ClientConnection) -> None:
        (session,) = sessions
        for use in (lambda: conn.send(b"x"), lambda: session.send(b"x")):
            with pytest.raises(LocalProtocolError, match="belongs to the process") as refused:
                use()
            assert not isinstance(refused.value, ForeignEventLoop)

    async def main() -> None:
        async with (
            await aio.serve(keep, "127.0.0.1", 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as conn,
        ):
            conn.send(b"hello")
            assert await conn.recv() == b"hello"
            monkeypatch.setattr(_process, "pid", os.getpid() + 1)
            try:
                await asyncio.to_thread(as_a_forked_child, conn)
            finally:
                monkeypatch.undo()
            conn.send(b"again")
            assert await conn.recv() == b"again"

    asyncio.run(asyncio.wait_for(main(), LIMIT))


@pytest.mark.parametrize("how", ["dropped", "closed", "sent", "heartbeat"])
def test_a_forked_child_never_sends_under_the_parent_s_keys(how: str) -> None:
    """A child forked while the parent's loop runs nowhere (between two
    `run_until_complete`) sent from outside any loop under the parent's keys, with the record
    sequence number the parent used next (one nonce twice under one AES-CCM key, RFC 5116
    §3: the server then dropped the parent's next record as a replay). Now `send` (and
    `heartbeat`) raises saying whose the connection is; `close()` in the child's own
    `asyncio.run` does nothing (it raised `ForeignEventLoop`), and one dropped there is
    released without a warning and without scheduling close_notify on the parent's loop."""
    parent = os.getpid()

    def in_child(conn: aio.ClientConnection) -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if how == "dropped":
                    del conn
                    gc.collect()
                elif how == "closed":
                    asyncio.run(conn.close())
                elif how == "heartbeat":
                    asyncio.run(conn.heartbeat(0.1))
                else:
                    conn.send(b"from the child")
            except LocalProtocolError as exc:
                return str(exc)
        return f"nothing raised {iotdtls_warnings(caught)}"

    with ServerThread(server_config()) as server:
        loop = asyncio.new_event_loop()
        try:
            conn = loop.run_until_complete(aio.connect("127.0.0.1", server.port, client_config()))
            conn.send(b"before")
            assert loop.run_until_complete(asyncio.wait_for(conn.recv(), LIMIT)) == b"before"
            reader, writer = os.pipe()
            child = os.fork()
            if child == 0:
                try:
                    os.write(writer, in_child(conn).encode())
                finally:
                    os._exit(0)
            os.close(writer)
            assert os.waitpid(child, 0)[1] == 0
            with os.fdopen(reader, "rb") as answers:
                answer = answers.read().decode()
            time.sleep(0.3)
            assert server.ended == []
            conn.send(b"after")
            assert loop.run_until_complete(asyncio.wait_for(conn.recv(), LIMIT)) == b"after"
            loop.run_until_complete(conn.close())
        finally:
            loop.close()
        assert server.wait_until(lambda: [error for _, error in server.ended] == [None])
    if how in ("sent", "heartbeat"):
        assert answer == (
            "this connection belongs to the process that made it (pid"
            f" {parent}): sending from a forked process would reuse that process's record"
            " sequence numbers under its keys (one nonce twice, RFC 5116 §3)")
    else:
        assert answer == "nothing raised []"


def test_under_warnings_as_errors_the_loop_end_closes_a_connection_before_it_warns() -> None:
    """`_loop_ending` warned, then closed: under `-W error` the warning raised first, so no
    close_notify went out and the socket stayed open past the loop. Now it closes first."""
    kept: list[aio.ClientConnection] = []

    async def main(port: int) -> None:
        kept.append(await aio.connect("127.0.0.1", port, client_config()))

    with ServerThread(server_config()) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            asyncio.run(main(server.port))
        assert server.wait_until(lambda: [error for _, error in server.ended] == [None])
    assert_port_free(kept[0].local_address)


def test_under_warnings_as_errors_the_loop_end_closes_a_server_before_it_warns() -> None:
    """The same for a server still open as its loop ends: its port stayed bound and its
    peers got no close_notify."""
    addresses: list[tuple[object, ...]] = []
    seen: list[bytes | None] = []
    waited: list[float] = []
    established = threading.Event()

    def client(address: tuple[str, int]) -> None:
        with sync.connect(*address, client_config()) as conn:
            established.set()
            start = time.monotonic()
            seen.append(conn.recv(timeout=LIMIT))
            waited.append(time.monotonic() - start)

    async def main() -> threading.Thread:
        server = await aio.serve(echo, "127.0.0.1", 0, server_config())
        addresses.append(server.sockname)
        thread = threading.Thread(target=client, args=(server.address,))
        thread.start()
        await eventually(lambda: server.stats.handshakes_completed == 1, LIMIT)
        return thread

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thread = asyncio.run(main())
    thread.join(LIMIT)
    assert established.is_set()
    assert seen == [None]
    assert waited[0] < LIMIT / 2  # the server's close_notify, not the timeout
    assert_port_free(addresses[0])


@pytest.mark.parametrize("how", ["sent", "heartbeat", "closed", "server-closed", "loop-ended"])
def test_a_forked_child_never_sends_under_a_server_session_s_keys(how: str) -> None:
    """The server side of the test above: a child forked while the server's loop runs
    nowhere sent a session's datagram (or heartbeat request) from outside any loop, or in its
    copy of the loop, under the server's keys, with the record sequence number the server
    used next (the client took the child's record and dropped the server's next as a
    replay); its close() and its server's sent close_notify, ending the parent's
    association. Now `send` and `heartbeat` raise saying whose the session is, and the
    session's `close()` and the server's send nothing. The child's copy of the loop ending
    warned that the server "was still open ...: closed it", which it had not (a child closes
    nothing of the parent's): it is quiet, closed there or not. (The client is a `sync` one,
    whose socket no loop of the child's reads.)"""
    parent = os.getpid()
    sessions: list[aio.ServerSession] = []

    async def handler(session: aio.ServerSession) -> None:
        sessions.append(session)
        async for data in session:
            session.send(data)

    loop = asyncio.new_event_loop()

    def beside_the_server(call: Any) -> Any:
        """`call()` in a thread while the server's loop runs here (bounded)."""
        done: list[Any] = []
        worker = threading.Thread(target=lambda: done.append(call()), daemon=True)
        worker.start()
        deadline = time.monotonic() + LIMIT
        while worker.is_alive() and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert done, "no answer in time"
        return done[0]

    def in_child(server: aio.DtlsServer, session: aio.ServerSession) -> str:
        try:
            if how == "sent":
                session.send(b"from the child")
            elif how == "heartbeat":  # in the child's copy of the server's loop
                loop.run_until_complete(session.heartbeat(0.1))
            elif how == "closed":
                session.close()
            else:
                if how == "server-closed":
                    loop.run_until_complete(server.close())
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")  # its copy's loop end closes nothing
                    loop.run_until_complete(loop.shutdown_asyncgens())
                return f"nothing raised {iotdtls_warnings(caught)}"
        except LocalProtocolError as exc:
            return str(exc)
        return "nothing raised"

    try:
        server = loop.run_until_complete(
            aio.serve(handler, "127.0.0.1", 0, server_config(heartbeat=True)))
        client = beside_the_server(lambda: sync.connect(
            "127.0.0.1", server.address[1], client_config(heartbeat=True)))
        client.send(b"before")
        assert beside_the_server(lambda: client.recv(LIMIT)) == b"before"
        [session] = sessions
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.write(writer, in_child(server, session).encode())
            finally:
                os._exit(0)
        os.close(writer)
        assert os.waitpid(child, 0)[1] == 0
        with os.fdopen(reader, "rb") as answers:
            answer = answers.read().decode()
        session.send(b"after")  # the client takes it: no record of the child's came first
        assert beside_the_server(lambda: client.recv(LIMIT)) == b"after"
        assert not session.ended
        beside_the_server(client.close)
        loop.run_until_complete(server.close())
    finally:
        loop.close()
    if how in ("sent", "heartbeat"):
        assert answer == (
            "this session belongs to the process that made it (pid"
            f" {parent}): sending from a forked process would reuse that process's record"
            " sequence numbers under its keys (one nonce twice, RFC 5116 §3)")
    elif how in ("server-closed", "loop-ended"):
        assert answer == "nothing raised []"
    else:
        assert answer == "nothing raised"


def test_a_connection_dropped_once_its_loop_is_closed_only_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop closed without being ended (no `shutdown_asyncgens`, which `asyncio.run` does)
    cannot take a dropped connection's release: the finalizer gives its ResourceWarning all
    the same and raises nothing; the transport's own finalizer closes the socket."""
    raised: list[BaseException | None] = []
    with ServerThread(server_config()) as server:
        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(aio.connect("127.0.0.1", server.port, client_config()))
        loop.close()
        monkeypatch.setattr(sys, "unraisablehook", lambda what: raised.append(what.exc_value))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del conn
            gc.collect()
    assert raised == []
    assert iotdtls_warnings(caught) == [
        (ResourceWarning, f"iotdtls: unclosed connection to 127.0.0.1:{server.port}")]
    assert [type(w.source) for w in caught if "iotdtls" in str(w.message)] == [
        aio.ClientConnection]  # tracemalloc shows where it was made


def test_close_after_the_loop_was_closed_by_hand_frees_a_bound_socket_served_where_it_is() -> None:
    """As above for a server on the caller's socket, bound already (served where it is, not
    bound by `_bind`): its `close()` from another loop closes that socket too, rather than
    raising ForeignEventLoop with the port held (M21: `_Serve._open` 14, `sock` not kept)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    manual = asyncio.new_event_loop()
    try:
        server = manual.run_until_complete(
            asyncio.wait_for(aio.serve(echo, None, 0, server_config(), sock=sock), LIMIT)
        )
    finally:
        manual.close()
    asyncio.run(asyncio.wait_for(server.close(), LIMIT))
    assert sock.fileno() == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(server.address)
    assert repr(server).endswith(" closed>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's transport, at collection
        del server
        gc.collect()


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_loop_ended_by_hand_with_shutdown_asyncgens_closes_all_without_an_asyncio_error(
    loop_choice: str,
) -> None:
    """Python's pattern for ending a loop without `asyncio.run`: `shutdown_asyncgens`, then
    `close()`, the handlers still running. The server and the connection are closed (the
    RuntimeWarnings of `asyncio.run`'s end), and asyncio reports no error: the handler's
    `async for datagram in session` was an async generator that `shutdown_asyncgens` closed
    too, while it waited ("aclose(): asynchronous generator is already running", probe CE F4)."""
    errors: list[dict[str, Any]] = []
    sessions: list[aio.ServerSession] = []
    manual = (loop.loop_factory(loop_choice) or asyncio.new_event_loop)()
    manual.set_exception_handler(lambda _, context: errors.append(context))
    try:
        server, conn = manual.run_until_complete(
            asyncio.wait_for(serve_and_echo_once(sessions), LIMIT)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # each still open at the loop's end
            manual.run_until_complete(manual.shutdown_asyncgens())
    finally:
        manual.close()
    assert errors == []
    assert conn.ended and sessions[0].ended
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(server.address)


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_close_after_the_loop_was_closed_by_hand_frees_the_port_whatever_the_loop(
    loop_choice: str,
) -> None:
    """`loop.close()` alone (no `shutdown_asyncgens`) leaves a server's port bound; its
    `close()` then, from another loop or from none, frees it rather than raising
    ForeignEventLoop (closing a socket needs no loop), and the connection's releases its
    socket so; nothing is sent, and later use still raises (probe CE F4)."""
    sessions: list[aio.ServerSession] = []
    manual = (loop.loop_factory(loop_choice) or asyncio.new_event_loop)()
    try:
        server, conn = manual.run_until_complete(
            asyncio.wait_for(serve_and_echo_once(sessions), LIMIT)
        )
    finally:
        manual.close()
    client_socket = conn._protocol.sock
    assert client_socket is not None
    asyncio.run(asyncio.wait_for(server.close(), LIMIT))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(server.address)
    with pytest.raises(StopIteration):  # outside any loop: done at once, nothing awaited
        conn.close().send(None)
    assert client_socket.fileno() == -1
    assert conn.ended and sessions[0].ended
    assert repr(server).endswith(" closed>")
    asyncio.run(asyncio.wait_for(server.close(), LIMIT))  # again: nothing to do
    with pytest.raises(ForeignEventLoop, match=CLOSED):
        conn.send(b"late")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's transport, at collection
        del server, conn, sessions
        gc.collect()
