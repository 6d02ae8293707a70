"""`iotdtls.aio`: connect() and serve() in one event loop over loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from iotdtls import aio
from iotdtls.connection import DtlsConnection
from iotdtls.endpoint import GateOutcome
from iotdtls.errors import AlertDescription, AlertReceived, HandshakeTimeout, LocalProtocolError
from tests import interop_support
from tests.aio_support import client_config, echo, run, server_config
from tests.interop_support import WRONG_PSK
from tests.peers import CLIENT_IDENTITY, LOCALHOST, PSK, PSK_HEX


async def echo_server(**kw: Any) -> aio.DtlsServer:
    return await aio.serve(echo, LOCALHOST, 0, server_config(**kw))


@pytest.mark.req("PSK-1", "HS-1", "HS-2")
def test_connect_echo_close_and_recv_after_close() -> None:
    ends: list[bytes | None] = []
    ended = asyncio.Event()

    async def recorder(session: aio.ServerSession) -> None:
        assert session.psk_identity == CLIENT_IDENTITY.encode()
        while (data := await session.recv()) is not None:
            session.send(data[::-1])
        ends.append(None)
        ended.set()

    async def main() -> None:
        async with await aio.serve(recorder, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as client:
                client.send(b"abc")
                assert await client.recv() == b"cba"
                client.send(b"")  # an empty datagram is a datagram too
                assert await client.recv() == b""
            assert await client.recv() is None  # after close: None, every time
            assert await client.recv() is None
            await asyncio.wait_for(ended.wait(), 5.0)
            assert ends == [None]  # the server saw our close_notify
            # The cookie gate was used: one HelloVerifyRequest, one cookie accepted.
            assert server.endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 1
            assert server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main())


def test_server_close_ends_clients_cleanly() -> None:
    async def main() -> None:
        server = await echo_server()
        async with aio.connect(*server.address, client_config()) as client:
            client.send(b"x")
            assert await client.recv() == b"x"
            await server.close()  # close_notify to every peer
            assert await asyncio.wait_for(client.recv(), 5.0) is None

    run(main())


def test_handshake_timeout_against_silent_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        silent.settimeout(1.0)
        port = silent.getsockname()[1]

        async def main() -> None:
            started = time.monotonic()
            with pytest.raises(HandshakeTimeout):
                await aio.connect(LOCALHOST, port, client_config(handshake_timeout=1.0))
            assert 0.9 <= time.monotonic() - started < 3.0
            assert silent.recv(65535)  # it did try

        run(main())


class _ClosingPeer(asyncio.DatagramProtocol):
    """Answers every datagram with a plaintext close_notify (epoch 0)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        close_notify = bytes.fromhex("15 fefd 0000 000000000007 0002 0100")
        self.transport.sendto(close_notify, addr)


def test_peer_close_notify_during_the_handshake_is_the_peers_doing() -> None:
    """RFC 5246 §7.2.1: the peer's close_notify before the handshake completed ends connect()
    with AlertReceived(close_notify) saying the peer closed, not LocalProtocolError (the
    user's own misuse)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            _ClosingPeer, local_addr=(LOCALHOST, 0)
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            with pytest.raises(AlertReceived) as info:
                await asyncio.wait_for(
                    aio.connect(LOCALHOST, port, client_config(handshake_timeout=5.0)), 3.0
                )
        finally:
            transport.close()
        assert info.value.alert is AlertDescription.close_notify
        assert str(info.value) == "the peer closed the association (close_notify)"

    run(main())


@pytest.mark.req("ERR-1", "PSK-4")
@pytest.mark.parametrize("credentials", [
    {"psk": WRONG_PSK}, {"psk_identity": "nobody"}])
def test_wrong_credentials_raise_typed_error(credentials: dict[str, Any]) -> None:
    async def main() -> None:
        async with await echo_server() as server:
            with pytest.raises(AlertReceived) as info:
                await aio.connect(*server.address, client_config(**credentials))
            assert info.value.alert is AlertDescription.decrypt_error
            assert not server.endpoint.connections

    run(main())


def test_several_concurrent_clients_on_one_server_socket() -> None:
    async def one(server: aio.DtlsServer, number: int) -> bytes | None:
        async with aio.connect(*server.address, client_config()) as client:
            for _ in range(3):
                client.send(b"client %d" % number)
            replies = [await client.recv() for _ in range(3)]
            assert set(replies) == {b"client %d" % number}
            return replies[0]

    async def main() -> None:
        async with await echo_server() as server:
            replies = await asyncio.gather(*(one(server, n) for n in range(6)))
            assert replies == [b"client %d" % n for n in range(6)]

    run(main())


def test_connect_and_serve_on_given_sockets() -> None:
    async def main() -> None:
        server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        async with await aio.serve(echo, LOCALHOST, 0, server_config(),
                                   sock=server_sock) as server:
            assert server.address == server_sock.getsockname()
            async with aio.connect(*server.address, client_config(), sock=client_sock) as c:
                c.send(b"given")
                assert await c.recv() == b"given"
        assert client_sock.fileno() == -1 and server_sock.fileno() == -1  # closed with them

    run(main())


def test_handler_exception_closes_only_that_peer(caplog: pytest.LogCaptureFixture) -> None:
    async def picky(session: aio.ServerSession) -> None:
        data = await session.recv()
        if data == b"boom":
            raise RuntimeError("handler bug")
        session.send(b"ok")

    async def main() -> None:
        server = await aio.serve(picky, LOCALHOST, 0, server_config())
        async with server, aio.connect(*server.address, client_config()) as bad, \
                aio.connect(*server.address, client_config()) as good:
            ports.append(bad.local_address[1])
            bad.send(b"boom")
            assert await asyncio.wait_for(bad.recv(), 5.0) is None  # close_notify
            good.send(b"fine")
            assert await good.recv() == b"ok"

    ports: list[int] = []
    with caplog.at_level(logging.ERROR, logger="iotdtls"):
        run(main())
    failed = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [f"handler failed for peer 127.0.0.1:{ports[0]}"]
    assert failed[0].exc_info is not None and str(failed[0].exc_info[1]) == "handler bug"


@pytest.mark.req("SEC-1")
def test_no_secret_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    keylog: list[str] = []
    texts: list[str] = []

    async def main() -> None:
        config = client_config(keylog=keylog.append)
        async with await echo_server() as server:
            async with aio.connect(*server.address, config) as client:
                client.send(b"payload")
                assert await client.recv() == b"payload"
                texts.extend([repr(config), str(config), repr(client.connection),
                              repr(client.connection._handshake), repr(server.endpoint),
                              repr(server_config()), repr(server.endpoint.config),
                              repr(client), repr(server)])
            with pytest.raises(AlertReceived) as info:
                await aio.connect(*server.address, client_config(psk=WRONG_PSK))
            texts.extend([str(info.value), repr(info.value)])

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert len(keylog) == 1
    master = keylog[0].split()[2]
    texts += [r.getMessage() for r in caplog.records]
    assert len(caplog.records) > 10  # DEBUG traces every datagram
    forbidden = [PSK_HEX, PSK.hex().upper(), repr(PSK), str(PSK), master, master.upper(),
                 WRONG_PSK.hex(), repr(WRONG_PSK)]
    for text in texts:
        for secret in forbidden:
            assert secret not in text, (secret, text)
    assert list(tmp_path.iterdir()) == []  # no key log file unless one was asked for


def test_session_of_a_replaced_association_sends_nothing() -> None:
    """A client that restarts from the same address makes a new association (RFC 6347 §4.2.8):
    the old session ends, and what its handler sends or closes afterwards must not reach the
    new one."""
    sessions: list[aio.ServerSession] = []
    two = asyncio.Event()

    async def keep(session: aio.ServerSession) -> None:
        sessions.append(session)
        if len(sessions) == 2:
            two.set()
        async for datagram in session:
            session.send(datagram)

    async def main() -> None:
        config = server_config(heartbeat=True)
        async with await aio.serve(keep, LOCALHOST, 0, config) as server:
            client = await interop_support.SameAddressClient.open(server.address)
            try:
                await client.handshake(client_config(heartbeat=True))
                client.send(b"first")
                assert await client.recv(5.0) == b"first"
                # A restart: same port, new random.
                await client.handshake(client_config(heartbeat=True))
                await asyncio.wait_for(two.wait(), 5.0)
                old, new = sessions
                assert old.ended and not new.ended and old.address == new.address
                old.send(b"meant for the old association")  # dropped, not an error
                with pytest.raises(LocalProtocolError):  # a heartbeat (both negotiated them)
                    await old.heartbeat(1.0)
                old.close()  # not the new association's close_notify
                client.send(b"second")
                assert await client.recv(5.0) == b"second"
                assert await client.recv(0.3) is None
            finally:
                client.close()

    run(main())


@pytest.mark.req("HS-3")
def test_a_new_handshake_is_retransmitted_on_time_behind_a_far_server_timer() -> None:
    """The server keeps one loop timer and moves it only earlier (`flush`): after a first
    handshake its earliest deadline is the final flight's hold, minutes away; a second
    client's flight 4 that gets no answer must still come again after the initial 0.2 s of
    the retransmission policy (RFC 6347 §4.2.4.1), not when the hold ends."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await echo_server()
        async with server, aio.connect(*server.address, client_config()) as first:
            first.send(b"x")
            assert await first.recv() == b"x"
            await asyncio.sleep(0.4)  # the first handshake's timers have fired and gone
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect(server.address)
                silent = DtlsConnection(client_config())
                silent.connect(loop.time())
                for _ in range(2):  # ClientHello, HelloVerifyRequest; ClientHello, flight 4
                    for datagram in silent.datagrams_to_send(loop.time()):
                        sock.send(datagram)
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)
                    flight_4_at = loop.time()
                    silent.receive_datagram(reply, loop.time())
                # Our flight 5 is never sent: the server must send its flight 4 again.
                await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)
                assert 0.15 <= loop.time() - flight_4_at < 1.5

    run(main())


def test_serve_is_an_async_context_manager_as_connect_is() -> None:
    """`async with serve(...) as server` raised "'coroutine' object does not support the
    asynchronous context manager protocol" (probe CA): serve's result is both, as connect's."""

    async def main() -> None:
        async with (
            aio.serve(echo, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as client,
        ):
            client.send(b"served")
            assert await asyncio.wait_for(client.recv(), 5.0) == b"served"
        assert repr(server).endswith(" closed>")  # closed at the end of the block
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(server.address)  # the port is free again
        server = await aio.serve(echo, LOCALHOST, 0, server_config())  # awaited, as before
        await server.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no coroutine left never awaited
        run(main())


def test_a_handler_may_await_session_close(caplog: pytest.LogCaptureFixture) -> None:
    """ServerSession.close() was a plain function: `await session.close()`, as one writes for
    the connection's and the server's, raised TypeError in the handler (probe CA). It returns
    an awaitable already done; the plain call works as before."""

    async def bye(session: aio.ServerSession) -> None:
        async for datagram in session:
            if datagram == b"bye":
                await session.close()
                assert session.ended
                return
            session.close()  # not awaited: closes all the same, no warning

    async def main() -> None:
        async with aio.serve(bye, LOCALHOST, 0, server_config()) as server:
            for word in (b"bye", b"hello"):
                async with aio.connect(*server.address, client_config()) as client:
                    client.send(word)
                    assert await asyncio.wait_for(client.recv(), 5.0) is None  # close_notify
                    assert client.ended

    with caplog.at_level(logging.ERROR, logger="iotdtls"), warnings.catch_warnings():
        warnings.simplefilter("error")
        run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_client_connection_iterates_until_the_association_ends() -> None:
    """`async for datagram in conn`, as in a ServerSession: it ends at the peer's close_notify,
    and `ended` says the association has ended (a None from recv() alone could not)."""

    async def twice(session: aio.ServerSession) -> None:
        session.send(b"one")
        session.send(b"two")  # returning closes the association with close_notify

    async def main() -> None:
        async with aio.serve(twice, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as client:
                assert not client.ended
                received = [datagram async for datagram in client]
                assert received == [b"one", b"two"]
                assert client.ended
            assert client.ended

    run(main())


def test_reprs_name_the_addresses_and_the_state() -> None:
    """A server's and a connection's repr was `<iotdtls.aio.DtlsServer object at 0x...>`
    (probe CA); they name the addresses and the state, as ServerSession's does."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        port = server.address[1]
        assert repr(server) == f"<DtlsServer on 127.0.0.1:{port} serving, 0 sessions>"
        async with aio.connect(LOCALHOST, port, client_config()) as client:
            local = client.local_address[1]
            ends = f"to 127.0.0.1:{port} from 127.0.0.1:{local}"
            assert repr(client) == f"<ClientConnection {ends} open>"
            client.send(b"x")
            assert await asyncio.wait_for(client.recv(), 5.0) == b"x"
            assert repr(server) == f"<DtlsServer on 127.0.0.1:{port} serving, 1 session>"
            await server.close()
            assert await asyncio.wait_for(client.recv(), 5.0) is None
            assert repr(client) == f"<ClientConnection {ends} ended>"
        assert repr(client) == f"<ClientConnection {ends} closed>"
        assert repr(server) == f"<DtlsServer on 127.0.0.1:{port} closed>"

    run(main())


def test_a_warning_at_the_loops_end_names_the_applications_line() -> None:
    """The RuntimeWarning for a connection or server still open as asyncio.run ended its loop
    pointed at a line of aio.py (probe CA); it names the application's `asyncio.run` line."""

    async def serve_and_leave() -> None:
        await aio.serve(echo, LOCALHOST, 0, server_config())

    async def connect_and_leave() -> None:
        await aio.connect(*running.address, client_config())

    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines.append(sys._getframe().f_lineno + 1)
        asyncio.run(asyncio.wait_for(serve_and_leave(), 20.0))
        with interop_support.ServerThread(server_config()) as running:
            lines.append(sys._getframe().f_lineno + 1)
            asyncio.run(asyncio.wait_for(connect_and_leave(), 20.0))
    ended = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert [str(w.message).split(" ")[2] for w in ended] == ["server", "connection"]
    assert [(w.filename, w.lineno) for w in ended] == [(__file__, line) for line in lines]
