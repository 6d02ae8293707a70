"""Helpers shared by the interop, CLI, tshark, adapter and proxy tests: an in-process server
thread, configurations with the test credentials, wire-log readers, UDP socket helpers, the
CLI subprocess runners, and successive client associations from one address."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self, cast

import pytest

from iotdtls import aio
from iotdtls.config import ClientConfig, RetransmitPolicy, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertLevel, DtlsError
from iotdtls.events import DataReceived, HandshakeComplete
from iotdtls.proxy import LoggedDatagram, LossyProxy
from iotdtls.record import ContentType
from tests import memory_link
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK,
    PSK_HEX,
    PeerProcess,
    free_udp_port,
)

WRONG_PSK_HEX = "0102030405060708090a0b0c0d0e0f11"
WRONG_PSK = bytes.fromhex(WRONG_PSK_HEX)
#: A quick retransmission timer for loopback tests (200 ms initial, 1 s at most).
FAST = RetransmitPolicy(0.2, 1.0)
HANDSHAKE, ALERT, APPLICATION_DATA = 22, 21, 23
CLIENT_HELLO, HELLO_VERIFY_REQUEST = 1, 3
DECRYPT_ERROR = 51
#: Attempts at binding a server to a fresh port (a parallel test process may take one first).
STARTUP_ATTEMPTS = 3

_log_lock = threading.Lock()
_log_users = 0
_log_saved_level = logging.NOTSET


def _debug_logging_on() -> None:
    """Set the ``iotdtls`` logger to DEBUG for the first user; remember the old level."""
    global _log_users, _log_saved_level
    with _log_lock:
        if _log_users == 0:
            _log_saved_level = logging.getLogger("iotdtls").level
            logging.getLogger("iotdtls").setLevel(logging.DEBUG)
        _log_users += 1


def _debug_logging_off() -> None:
    """Restore the ``iotdtls`` logger's level when its last user is done."""
    global _log_users
    with _log_lock:
        _log_users -= 1
        if _log_users == 0:
            logging.getLogger("iotdtls").setLevel(_log_saved_level)


class ServerThread:
    """`aio.serve` with an echo handler on its own event loop in a daemon thread.

    Records every session start (`started`: address, once its handshake completed), every
    datagram received (`received`: (address, data)), every session end (`ended`: (address,
    error or None)) and, with `capture_log`, the `iotdtls` log lines (`log_lines`; the logger
    is at DEBUG while any such server runs, and back at its old level after), and lets a test
    wait for a condition on them (`wait_until`).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        port: int | None = None,
        sock: socket.socket | None = None,
        capture_log: bool = True,
        echo: bool = True,
    ) -> None:
        """Prepare the server; `start()` binds it (on `port`, on `sock`, or on a fresh port,
        trying another one if a parallel process took it first). Without `echo`, its sessions
        only receive (they send nothing of their own)."""
        self.config = config
        self.echo = echo
        self._fresh_port = port is None and sock is None
        self.port = port if port is not None else (0 if sock is not None else free_udp_port())
        self.sock = sock
        self.started: list[object] = []
        #: The authenticated identity of each session, in order of `started`.
        self.identities: list[object] = []
        self.received: list[tuple[object, bytes]] = []
        self.ended: list[tuple[object, DtlsError | None]] = []
        self.log_lines: list[str] = []
        self.handshake_done = threading.Event()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = self._new_thread()
        self._handler = _ListHandler(self) if capture_log else None

    @property
    def address(self) -> tuple[str, int]:
        """Where clients send to."""
        return LOCALHOST, self.port

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="iotdtls-server", daemon=True)

    def start(self) -> None:
        """Start the loop and wait (bounded) until the socket is bound."""
        if self._handler is not None:
            logging.getLogger("iotdtls").addHandler(self._handler)
            _debug_logging_on()
        try:
            for attempt in range(STARTUP_ATTEMPTS):
                if attempt:
                    self.port = free_udp_port()
                    self._ready.clear()
                    self._failure = None
                    self._thread = self._new_thread()
                self._thread.start()
                if self._ready.wait(5.0) and self._failure is None:
                    return
                self._thread.join(5.0)
                if not (self._fresh_port and isinstance(self._failure, OSError)):
                    break
            raise RuntimeError(f"server did not start: {self._failure!r}")
        except BaseException:
            self._detach_log()
            raise

    def stop(self) -> None:
        """Close the server (close_notify to every peer) and join the thread."""
        loop, stopping = self._loop, self._stop
        if loop is not None and stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just finished
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(5.0)
        self._detach_log()

    def _detach_log(self) -> None:
        if self._handler is not None and self._handler in logging.getLogger("iotdtls").handlers:
            logging.getLogger("iotdtls").removeHandler(self._handler)
            _debug_logging_off()

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
        self.note(lambda: (self.started.append(session.address),
                           self.identities.append(session.peer)))
        self.handshake_done.set()
        error: DtlsError | None = None
        try:
            while (data := await session.recv()) is not None:
                self.note(lambda d=data: self.received.append((session.address, d)))
                if self.echo:
                    session.send(data)
        except DtlsError as exc:
            error = exc
        self.note(lambda: self.ended.append((session.address, error)))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            # A socket bound already is served where it is: no host to agree with it.
            bound = self.sock is not None and self.sock.getsockname()[1] != 0
            host = None if bound else LOCALHOST
            server = await aio.serve(self._echo, host, self.port, self.config, sock=self.sock)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            raise
        self.port = server.address[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
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
    settings: dict[str, Any] = {
        "psk_store": {CLIENT_IDENTITY.encode(): PSK},
        "handshake_timeout": 10.0,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


def client_config(**overrides: Any) -> ClientConfig:
    """The test credentials, a bounded handshake, a few overrides."""
    settings: dict[str, Any] = {
        "psk_identity": CLIENT_IDENTITY,
        "psk": PSK,
        "handshake_timeout": 10.0,
    }
    settings.update(overrides)
    return ClientConfig(**settings)


def records(datagram: bytes) -> list[tuple[int, int, bytes]]:
    """(content type, epoch, fragment) of each record of a datagram (RFC 6347 §4.1); the
    framing is `memory_link.records`'s (which asserts that the datagram is well framed)."""
    return [(h.content_type, h.epoch, frag) for h, frag in memory_link.records(datagram)]


def handshake_types(log: list[LoggedDatagram], direction: str) -> list[int]:
    """Handshake message types of the plaintext handshake records one side sent."""
    return [
        frag[0]
        for d in log
        if d.direction == direction
        for ctype, epoch, frag in records(d.data)
        if ctype == HANDSHAKE and epoch == 0
    ]


def plaintext_alerts(log: list[LoggedDatagram], direction: str) -> list[tuple[int, int]]:
    """(level, description) of the unprotected alerts one side sent."""
    return [
        (frag[0], frag[1])
        for d in log
        if d.direction == direction
        for ctype, epoch, frag in records(d.data)
        if ctype == ALERT and epoch == 0
    ]


def alerts_through(
    proxy: LossyProxy, direction: str, timeout: float = 5.0
) -> list[tuple[int, int]]:
    """`plaintext_alerts` of the running proxy's log, once it holds one from `direction`:
    our side raises as soon as it has sent its alert, which the proxy logs a moment later."""
    deadline = time.monotonic() + timeout
    while not (alerts := plaintext_alerts(proxy.snapshot(), direction)):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return alerts


def assert_cookie_exchange(log: list[LoggedDatagram]) -> None:
    """The server answered the first ClientHello with a HelloVerifyRequest and the client
    retried its ClientHello (RFC 6347 §4.2.1)."""
    server_types = handshake_types(log, "server")
    client_types = handshake_types(log, "client")
    assert server_types[0] == HELLO_VERIFY_REQUEST, server_types
    assert client_types[:2] == [CLIENT_HELLO, CLIENT_HELLO], client_types


def assert_encrypted(log: list[LoggedDatagram], *plaintexts: bytes) -> None:
    """Application data went in protected records only (REC-1)."""
    app = [frag for d in log for ctype, epoch, frag in records(d.data) if ctype == APPLICATION_DATA]
    assert app, "no application data records on the wire"
    assert all(
        epoch >= 1 for d in log for ctype, epoch, _ in records(d.data) if ctype == APPLICATION_DATA
    )
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


# -- UDP sockets ---------------------------------------------------------------------------------


def recv_or_none(sock: socket.socket, timeout: float = 0.3) -> bytes | None:
    """The next datagram on `sock`, or None after `timeout` seconds without one."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65535)
    except TimeoutError:
        return None


def drain(sock: socket.socket, quiet: float = 0.15) -> list[bytes]:
    """Everything that arrives on `sock` until `quiet` seconds pass without a datagram."""
    out = []
    while (data := recv_or_none(sock, quiet)) is not None:
        out.append(data)
    return out


# -- the command line: a server that alerts, a stream that records flushes, the CLI runners -----


class AnsweringServer:
    """A PSK server on a real UDP socket (the sans-I/O endpoint in a thread) that answers each
    application datagram of a peer with the datagrams `answer` returns for it, each sent as
    application data in order (a hostile or broken peer, scripted; `AlertingServer` alerts)."""

    def __init__(self, answer: Callable[[bytes], Sequence[bytes]] = lambda data: ()) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        config = ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK})
        self.endpoint = ServerEndpoint(config)
        self.answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()

    def received(self, address: Any, data: bytes) -> None:
        """Application data `data` came from `address`: send what `answer` gives back."""
        for reply in self.answer(data):
            self.endpoint.send(address, reply)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.datagram(data, address)

    def datagram(self, data: bytes, address: Any) -> None:
        """A datagram came: through DTLS, its application data answered."""
        self.endpoint.receive_datagram(data, address, time.monotonic())
        while (item := self.endpoint.next_event()) is not None:
            if isinstance(item[1], DataReceived):
                self.received(item[0], item[1].data)
        for out, to in self.endpoint.datagrams_to_send(time.monotonic()):
            self.sock.sendto(out, to)


class PlainAnsweringServer(AnsweringServer):
    """An `AnsweringServer` without DTLS: it answers each datagram with the datagrams `answer`
    returns for it, sent as they are (a hostile or broken coap:// server, scripted)."""

    def datagram(self, data: bytes, address: Any) -> None:
        for reply in self.answer(data):
            self.sock.sendto(reply, address)


class AlertingServer(AnsweringServer):
    """An `AnsweringServer` that answers the first application datagram of a peer with a
    fatal `alert` (internal_error unless told), once its association is established."""

    def __init__(self, alert: AlertDescription = AlertDescription.internal_error) -> None:
        super().__init__()
        self.alert = alert

    def received(self, address: Any, data: bytes) -> None:
        conn = self.endpoint.connections[address]
        record = memory_link.record_layer(conn).seal(
            ContentType.alert, bytes([AlertLevel.FATAL, self.alert]), 1)
        self.sock.sendto(record, address)


class FlushedText:
    """A text stream that keeps what was flushed apart from what was only written."""

    def __init__(self) -> None:
        self.written, self.flushed = "", ""

    def write(self, text: str) -> int:
        self.written += text
        return len(text)

    def flush(self) -> None:
        self.flushed = self.written


CLI = [sys.executable, "-m", "iotdtls"]
#: The CLI server as one process, and as two worker processes on one port (SO_REUSEPORT):
#: `@SERVER_MODES` gives a test a `mode` argument to add to the server's command line.
SERVER_MODES = pytest.mark.parametrize(
    "mode", [[], ["--workers", "2"]], ids=["one-process", "two-workers"]
)
CREDENTIALS = ["--psk-identity", CLIENT_IDENTITY, "--psk", PSK_HEX]
KEYLOG_LINE = re.compile(r"^CLIENT_RANDOM [0-9a-f]{64} [0-9a-f]{96}$")


@contextmanager
def cli_server(port: int, *args: str) -> Iterator[PeerProcess]:
    """`iotdtls server` on 127.0.0.1:`port`, listening when this yields, stopped by pid."""
    argv = [*CLI, "server", "--listen", f"{LOCALHOST}:{port}", *args]
    with PeerProcess(argv, name="iotdtls-server", time_limit=60.0) as server:
        server.wait_for_output(r"listening on 127\.0\.0\.1:\d+", 10.0)
        yield server


def run_client(
    port: int, lines: Sequence[str], *args: str, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """`iotdtls client` fed `lines` on stdin; its exit status, stdout and stderr."""
    return subprocess.run(
        [*CLI, "client", f"{LOCALHOST}:{port}", *args],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- successive associations from one address ----------------------------------------------------


class SameAddressClient(asyncio.DatagramProtocol):
    """Client associations made one after another from one UDP socket (so one address), as a
    device that restarts and keeps its port does (RFC 6347 §4.2.8). Each `handshake()` starts
    a new sans-I/O `DtlsConnection` and makes it the current one: datagrams from the server go
    to the current connection only, so an older association hears nothing more."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.connection: DtlsConnection | None = None
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self._complete: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, server: tuple[str, int]) -> SameAddressClient:
        """A client with a UDP socket connected to `server`."""
        _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            cls, remote_addr=server
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass, in fact

    async def handshake(self, config: ClientConfig, timeout: float = 5.0) -> None:
        """A new association from the same socket; returns once its handshake completed."""
        self.connection = DtlsConnection(config)
        self.received = asyncio.Queue()
        self._complete = self.loop.create_future()
        self.connection.connect(self.loop.time())
        self._flush()
        await asyncio.wait_for(self._complete, timeout)

    def send(self, data: bytes) -> None:
        assert self.connection is not None
        self.connection.send(data)
        self._flush()

    async def recv(self, timeout: float) -> bytes | None:
        """The next datagram of the current association, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.received.get(), timeout)
        except TimeoutError:
            return None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.connection is not None:
            self.connection.receive_datagram(data, self.loop.time())
            self._flush()

    def _flush(self) -> None:
        conn = self.connection
        assert conn is not None and self.transport is not None
        for datagram in conn.datagrams_to_send(self.loop.time()):
            self.transport.sendto(datagram)
        while (event := conn.next_event()) is not None:
            if isinstance(event, HandshakeComplete) and self._complete is not None:
                if not self._complete.done():
                    self._complete.set_result(None)
            elif isinstance(event, DataReceived):
                self.received.put_nowait(event.data)
        if self._timer is not None:
            self._timer.cancel()
        when = conn.get_timer()
        self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        assert self.connection is not None
        self.connection.handle_timer(self.loop.time())
        self._flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
