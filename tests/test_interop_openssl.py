"""Interoperability with OpenSSL 3.0 (``openssl s_server`` / ``s_client``), both roles.

Our client is the blocking `iotdtls.sync` client; our server is `iotdtls.aio.serve` running in
a background thread (`ServerThread`, also used by the GnuTLS and CLI tests). Datagrams go
through `LossyProxy` without impairment where the test asserts on the wire (cookie exchange,
MTU, alerts). peers.md lists the OpenSSL pitfalls these tests work around.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iotdtls import aio, sync
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.errors import AlertReceived, AlertSent, DtlsError, HandshakeTimeout
from iotdtls.proxy import LoggedDatagram, LossyProxy
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK,
    PSK_HEX,
    PeerProcess,
    free_udp_port,
    openssl_psk_client,
    openssl_psk_server,
    require_peer,
)

pytestmark = pytest.mark.interop

WRONG_PSK_HEX = "0102030405060708090a0b0c0d0e0f11"
HANDSHAKE, ALERT, APPLICATION_DATA = 22, 21, 23
CLIENT_HELLO, HELLO_VERIFY_REQUEST = 1, 3
DECRYPT_ERROR = 51


# -- helpers shared with the GnuTLS and CLI tests ---------------------------------------------


class ServerThread:
    """`aio.serve` with an echo handler on its own event loop in a daemon thread.

    Records every datagram received (`received`: (address, data)), every session end
    (`ended`: (address, error or None)) and the `iotdtls` log lines (`log_lines`), and lets
    a test wait for a condition on them (`wait_until`).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        port: int | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """Prepare the server; `start()` binds it (on `port`, or on `sock`)."""
        self.config = config
        self.port = port if port is not None else (0 if sock is not None else free_udp_port())
        self.sock = sock
        self.received: list[tuple[object, bytes]] = []
        self.ended: list[tuple[object, DtlsError | None]] = []
        self.log_lines: list[str] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="iotdtls-server", daemon=True)
        self._handler = _ListHandler(self)

    @property
    def address(self) -> tuple[str, int]:
        """Where clients send to."""
        return LOCALHOST, self.port

    def start(self) -> None:
        """Start the loop and wait (bounded) until the socket is bound."""
        logging.getLogger("iotdtls").addHandler(self._handler)
        logging.getLogger("iotdtls").setLevel(logging.DEBUG)
        self._thread.start()
        if not self._ready.wait(5.0) or self._failure is not None:
            raise RuntimeError(f"server did not start: {self._failure!r}")

    def stop(self) -> None:
        """Close the server (close_notify to every peer) and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)
        logging.getLogger("iotdtls").removeHandler(self._handler)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def note(self, update: Callable[[], None]) -> None:
        """Apply `update` under the lock and wake waiters."""
        with self._cond:
            update()
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait up to `timeout` seconds for `predicate()` (checked under the lock)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def data(self) -> list[bytes]:
        """Every datagram received so far, in order."""
        with self._cond:
            return [d for _, d in self.received]

    async def _echo(self, session: aio.ServerSession) -> None:
        error: DtlsError | None = None
        try:
            while (data := await session.recv()) is not None:
                self.note(lambda d=data: self.received.append((session.address, d)))
                session.send(data)
        except DtlsError as exc:
            error = exc
        self.note(lambda: self.ended.append((session.address, error)))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await aio.serve(self._echo, LOCALHOST, self.port, self.config,
                                     sock=self.sock)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            raise
        self.port = server.address[1]
        self._ready.set()
        await self._stop.wait()
        await server.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()


class _ListHandler(logging.Handler):
    def __init__(self, server: ServerThread) -> None:
        super().__init__(logging.DEBUG)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.server.note(lambda: self.server.log_lines.append(line))


def server_config(**overrides: Any) -> ServerConfig:
    """The test PSK store (`Client_identity` -> the test key), a few overrides."""
    settings: dict[str, Any] = {"psk_store": {CLIENT_IDENTITY.encode(): PSK},
                                   "handshake_timeout": 10.0}
    settings.update(overrides)
    return ServerConfig(**settings)


def client_config(**overrides: Any) -> ClientConfig:
    """The test credentials, a bounded handshake, a few overrides."""
    settings: dict[str, Any] = {"psk_identity": CLIENT_IDENTITY, "psk": PSK,
                                   "handshake_timeout": 10.0}
    settings.update(overrides)
    return ClientConfig(**settings)


def records(datagram: bytes) -> list[tuple[int, int, bytes]]:
    """(content type, epoch, fragment) of each record of a datagram (RFC 6347 §4.1)."""
    out = []
    offset = 0
    while offset + 13 <= len(datagram):
        length = int.from_bytes(datagram[offset + 11 : offset + 13], "big")
        epoch = int.from_bytes(datagram[offset + 3 : offset + 5], "big")
        out.append((datagram[offset], epoch, datagram[offset + 13 : offset + 13 + length]))
        offset += 13 + length
    return out


def handshake_types(log: list[LoggedDatagram], direction: str) -> list[int]:
    """Handshake message types of the plaintext handshake records one side sent."""
    return [frag[0] for d in log if d.direction == direction
            for ctype, epoch, frag in records(d.data) if ctype == HANDSHAKE and epoch == 0]


def plaintext_alerts(log: list[LoggedDatagram], direction: str) -> list[tuple[int, int]]:
    """(level, description) of the unprotected alerts one side sent."""
    return [(frag[0], frag[1]) for d in log if d.direction == direction
            for ctype, epoch, frag in records(d.data) if ctype == ALERT and epoch == 0]


def assert_cookie_exchange(log: list[LoggedDatagram]) -> None:
    """The server answered the first ClientHello with a HelloVerifyRequest and the client
    retried its ClientHello (RFC 6347 §4.2.1)."""
    server_types = handshake_types(log, "server")
    client_types = handshake_types(log, "client")
    assert server_types[0] == HELLO_VERIFY_REQUEST, server_types
    assert client_types[:2] == [CLIENT_HELLO, CLIENT_HELLO], client_types


def assert_encrypted(log: list[LoggedDatagram], *plaintexts: bytes) -> None:
    """Application data went in protected records only (REC-1)."""
    app = [frag for d in log for ctype, epoch, frag in records(d.data)
           if ctype == APPLICATION_DATA]
    assert app, "no application data records on the wire"
    assert all(epoch >= 1 for d in log for ctype, epoch, _ in records(d.data)
               if ctype == APPLICATION_DATA)
    for text in plaintexts:
        assert all(text not in d.data for d in log)


@contextmanager
def proxied(port: int, **kwargs: Any) -> Iterator[LossyProxy]:
    """A LossyProxy without impairment in front of 127.0.0.1:`port`, logging datagrams."""
    with LossyProxy((LOCALHOST, port), seed=0, lifetime=60.0, **kwargs) as proxy:
        yield proxy


def assert_datagrams_fit(log: list[LoggedDatagram], direction: str, mtu: int) -> None:
    """Every datagram `direction` sent is at most `mtu` bytes (HS-3)."""
    sizes = [len(d.data) for d in log if d.direction == direction]
    assert sizes and max(sizes) <= mtu, sizes


def fragmented(log: list[LoggedDatagram], direction: str) -> bool:
    """Whether `direction` sent a plaintext handshake fragment shorter than its message."""
    for d in log:
        if d.direction != direction:
            continue
        for ctype, epoch, frag in records(d.data):
            if ctype == HANDSHAKE and epoch == 0 and len(frag) >= 12:
                length = int.from_bytes(frag[1:4], "big")
                if int.from_bytes(frag[9:12], "big") < length:
                    return True
    return False


# -- our client, OpenSSL server -----------------------------------------------------------------


@contextmanager
def _start_s_server(port: int, **kwargs: Any) -> Iterator[PeerProcess]:
    """s_server on `port`, listening when this yields, stopped by pid afterwards."""
    require_peer("openssl")
    with openssl_psk_server(port, time_limit=30.0, **kwargs) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        yield peer


@pytest.mark.req("HS-1", "PSK-1", "REC-1", "CFG-1")
def test_our_client_against_openssl_server() -> None:
    port = free_udp_port()
    with _start_s_server(port) as peer, proxied(port) as proxy:
        client = sync.connect(*proxy.address, client_config())
        peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"hello from iotdtls")
        peer.wait_for_output("hello from iotdtls", 5.0)
        peer.write_line("hello from openssl")
        assert client.recv(timeout=5.0) == b"hello from openssl\n"
        client.close()
        peer.wait_for_output("DONE", 5.0)  # s_server saw our close_notify
        assert peer.wait(5.0) == 0
        assert client.recv(timeout=0.1) is None
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"hello from iotdtls", b"hello from openssl")


@pytest.mark.req("HS-3")
def test_our_client_mtu_256_against_openssl_server() -> None:
    identity = "i" * 255  # OpenSSL's limit; ClientKeyExchange then needs fragmenting
    port = free_udp_port()
    with _start_s_server(port, extra=["-mtu", "256"]) as peer, proxied(port) as proxy:
        config = client_config(psk_identity=identity, mtu=256)
        with sync.connect(*proxy.address, config) as client:
            client.send(b"x" * 200)
            peer.wait_for_output("x" * 200, 5.0)
            peer.write_line("y" * 200)
            assert client.recv(timeout=5.0) == b"y" * 200 + b"\n"
    log = proxy.snapshot()
    assert_datagrams_fit(log, "client", 256)
    assert fragmented(log, "client")


@pytest.mark.req("ERR-1")
def test_our_client_wrong_key_fails_within_deadline() -> None:
    port = free_udp_port()
    with _start_s_server(port, psk_hex=WRONG_PSK_HEX):
        config = client_config(handshake_timeout=3.0)
        started = time.monotonic()
        with pytest.raises(DtlsError) as info:
            sync.connect(LOCALHOST, port, config)
        elapsed = time.monotonic() - started
    assert isinstance(info.value, HandshakeTimeout | AlertReceived | AlertSent)
    assert elapsed < 3.0 + 1.5
    assert PSK_HEX not in str(info.value)


# -- OpenSSL client, our server -----------------------------------------------------------------


@contextmanager
def _s_client(port: int, **kwargs: Any) -> Iterator[PeerProcess]:
    require_peer("openssl")
    with openssl_psk_client(port, time_limit=30.0, **kwargs) as peer:
        yield peer


@pytest.mark.req("HS-2", "PSK-1", "REC-1")
def test_openssl_client_against_our_server() -> None:
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1]) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        assert server.wait_until(lambda: any("handshake complete" in s
                                             for s in server.log_lines))
        peer.write_line("ping from openssl")
        assert server.wait_until(lambda: b"ping from openssl\n" in server.data())
        peer.wait_for_output("ping from openssl", 5.0)  # our echo, printed by s_client
        peer.close_stdin()  # s_client sends close_notify and exits
        assert server.wait_until(lambda: bool(server.ended))
        assert peer.wait(5.0) == 0
    assert server.ended[0][1] is None  # a clean close, not an error
    assert server.data() == [b"ping from openssl\n"]
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"ping from openssl")


@pytest.mark.req("HS-3")
def test_openssl_client_mtu_256_against_our_server() -> None:
    identity = "i" * 255
    config = server_config(psk_store={identity.encode(): PSK}, mtu=256)
    with ServerThread(config) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1], identity=identity, extra=["-mtu", "256"]) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("z" * 200)
        peer.wait_for_output("z" * 200, 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    assert server.data() == [b"z" * 200 + b"\n"]
    log = proxy.snapshot()
    assert_datagrams_fit(log, "server", 256)
    assert fragmented(log, "client")  # OpenSSL's ClientKeyExchange, reassembled by us


def _failed_attempt(identity: str, psk_hex: str) -> tuple[list[LoggedDatagram], ServerThread]:
    """An s_client with wrong credentials against our server; bounded, then killed."""
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1], identity=identity, psk_hex=psk_hex) as peer:
        assert server.wait_until(lambda: any("handshake failed" in s
                                             for s in server.log_lines))
        peer.wait(3.0)  # it may exit on the alert; otherwise it is killed on exit
        assert peer.returncode in (None, 1)
    assert not server.data()
    return proxy.snapshot(), server


@pytest.mark.req("PSK-4", "ERR-1")
def test_openssl_client_wrong_key_and_unknown_identity() -> None:
    wrong_key, server = _failed_attempt(CLIENT_IDENTITY, WRONG_PSK_HEX)
    assert any("decrypt_error" in line for line in server.log_lines)
    unknown, server = _failed_attempt("Unknown_identity", PSK_HEX)
    assert any("decrypt_error" in line for line in server.log_lines)
    # On the wire: a fatal decrypt_error (2, 51), never unknown_psk_identity, and the same
    # datagram sizes from our server in both cases (indistinguishable, RFC 7925 §4.2).
    assert plaintext_alerts(wrong_key, "server") == [(2, DECRYPT_ERROR)]
    assert plaintext_alerts(unknown, "server") == [(2, DECRYPT_ERROR)]
    sizes = [[len(d.data) for d in log if d.direction == "server"]
             for log in (wrong_key, unknown)]
    assert sizes[0] == sizes[1]


def test_our_server_serves_concurrent_openssl_clients() -> None:
    require_peer("openssl")
    with ServerThread(server_config()) as server:
        peers = [openssl_psk_client(server.port, time_limit=30.0) for _ in range(4)]
        try:
            for peer in peers:
                peer.start()
            for peer in peers:
                peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 10.0)
            for number, peer in enumerate(peers):
                peer.write_line(f"client number {number}")
            for number, peer in enumerate(peers):
                peer.wait_for_output(f"client number {number}", 5.0)
                others = [f"client number {n}" for n in range(len(peers)) if n != number]
                assert not any(text in peer.output for text in others)
            for peer in peers:
                peer.close_stdin()
            assert server.wait_until(lambda: len(server.ended) == len(peers), 10.0)
        finally:
            for peer in peers:
                peer.stop()
    assert sorted(server.data()) == [f"client number {n}\n".encode() for n in range(4)]
    assert len({address for address, _ in server.received}) == 4
    assert all(error is None for _, error in server.ended)
