"""asyncio adapters: `connect()` for clients and `serve()` for servers (no protocol decisions).

    async with iotdtls.aio.connect("127.0.0.1", 5684, client_config) as conn:
        conn.send(b"hello")
        reply = await conn.recv()

    async def echo(session: ServerSession) -> None:
        async for datagram in session:
            session.send(datagram)

    server = await iotdtls.aio.serve(echo, "127.0.0.1", 5684, server_config)

One UDP socket serves every peer; the sans-I/O `ServerEndpoint` demultiplexes by address and
runs the stateless cookie exchange before any per-peer state exists.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import inspect
import logging
import socket
import sys
import threading
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from types import FrameType, TracebackType
from typing import Any, cast

from iotdtls import _process
from iotdtls._addresses import (
    format_address,
    listening_on,
    reaching,
    socket_to,
    sockets_in_turn,
)
from iotdtls._arguments import (
    attach_socket,
    byte_size,
    check_client_arguments,
    check_server_arguments,
    check_timeout,
    is_bound,
    sealable,
)
from iotdtls._failures import SummedFailures
from iotdtls._opening import Opening
from iotdtls._unreachable import LOST, RefusedHandshake
from iotdtls.certurl import fetch_client_chain
from iotdtls.chaincache import ChainCache, for_server, remember_chain
from iotdtls.config import ClientConfig, ServerConfig, type_name
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.datagram import bind_udp, open_server_transport, resolve_udp
from iotdtls.endpoint import ServerEndpoint, host_of
from iotdtls.errors import (
    AlertDescription,
    DtlsError,
    ForeignEventLoop,
    IdleTimeout,
    LocalProtocolError,
    PathMtuExceeded,
    PortUnreachable,
    ProtocolError,
    after_attempts,
    carry_resuming,
)
from iotdtls.events import (
    CertificateUrlsReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    HeartbeatAnswered,
)
from iotdtls.identity import (
    CertificateIdentity,
    PeerIdentity,
    PskIdentity,
    RawPublicKeyIdentity,
)
from iotdtls.sessions import SessionState, SessionStore
from iotdtls.stats import ServerStats
from iotdtls.trace import log_datagram

__all__ = ["ClientConnection", "DatagramHandler", "DtlsServer", "ServerSession", "connect", "serve"]

#: Adapter events (peers, handshakes) and, at DEBUG, every datagram (`trace`, no secrets).
logger = logging.getLogger("iotdtls.aio")
#: Client certificate URL fetches a server runs at once (RFC 6066 §5; the rest wait).
MAX_CONCURRENT_FETCHES = 4
#: Fetches that may wait for one of those; a handshake past them fails at once with
#: certificate_unobtainable rather than waiting behind fetches of up to
#: `certificate_url_timeout` each.
MAX_WAITING_FETCHES = 4 * MAX_CONCURRENT_FETCHES
#: Those fetches (running or waiting) one host (`endpoint.host_of`, as
#: `ServerConfig.max_handshakes_per_host` counts hosts) may have at once; past them its
#: handshake fails at once with certificate_unobtainable. Half the running slots: a host whose
#: URLs never answer holds at most that many for `certificate_url_timeout` each, and the other
#: half still runs every other host's fetches at once (without it, one host could take all 4
#: running and 16 waiting, and other clients' URL handshakes failed at once).
MAX_FETCHES_PER_HOST = MAX_CONCURRENT_FETCHES // 2
#: Receive buffer a server asks for on the sockets it makes: room for thousands of handshake
#: datagrams arriving at once (a fleet reconnecting after a power cut); Linux's default of
#: about 200 KiB holds a few hundred, and the rest would wait for a retransmission (>= 1 s).
SERVER_RECEIVE_BUFFER = 4 * 1024 * 1024
#: "handshake failed: ..." lines a server logs per `SUMMARY_INTERVAL`: a peer without
#: credentials can make handshakes fail as fast as it likes (one host made 2,000 lines, 380 KB,
#: a second); those beyond are counted and summed up in one line at the interval's end and at
#: the server's stop ("15 more handshakes failed (the latest: peer ...: ...)").
FAILED_HANDSHAKE_LINES = 10
#: A socket address as asyncio gives it: (host, port) or (host, port, flow, scope).
Address = tuple[Any, ...]


class _Inbox:
    """Received datagrams of one association, ended by its close.

    A server keeps one per established peer, so it is small: the datagrams sit in a deque only
    while some are unread, and a reader waits on a future of its own (an `asyncio.Queue` with
    its three deques and event costs about 3 KiB per peer, more than the association)."""

    __slots__ = ("_items", "_limit", "_limit_bytes", "_readers", "closed", "dropped", "error",
                 "size")

    def __init__(self, limit: int, limit_bytes: int) -> None:
        self._items: collections.deque[bytes] | None = None
        self._readers: list[asyncio.Future[None]] | None = None
        self._limit = limit
        self._limit_bytes = limit_bytes
        self.error: DtlsError | None = None
        self.closed = False
        #: Datagrams dropped because the application did not read fast enough.
        self.dropped = 0
        #: Bytes waiting to be read.
        self.size = 0

    def __len__(self) -> int:
        """Datagrams waiting to be read."""
        return 0 if self._items is None else len(self._items)

    def put(self, data: bytes) -> None:
        """Queue `data`, or drop (and count) it: past `limit` datagrams or `limit_bytes`
        bytes (`config.receive_queue`, `receive_queue_bytes`; an empty inbox takes any one)."""
        if self._items is None:
            self._items = collections.deque()
        elif len(self._items) >= self._limit or self.size + len(data) > self._limit_bytes:
            self.dropped += 1
            return
        self._items.append(data)
        self.size += len(data)
        self._wake()

    def end(self, error: DtlsError | None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error
            self._wake()

    def _wake(self) -> None:
        """Every waiting reader looks again (one of them takes the datagram; waking them all
        keeps a reader cancelled after its wake-up from stranding it)."""
        for reader in self._readers or ():
            if not reader.done():
                reader.set_result(None)

    async def get(self) -> bytes | None:
        """The next datagram; None after a clean end, the error after a failure (for every
        later call too)."""
        while True:
            if self._items:
                data = self._items.popleft()
                self.size -= len(data)
                if not self._items:
                    self._items = None
                return data
            if self.closed:
                if self.error is not None:
                    raise self.error
                return None
            await self._wait()

    async def _wait(self) -> None:
        reader: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._readers is None:
            self._readers = []
        self._readers.append(reader)
        try:
            await reader
        finally:
            self._readers.remove(reader)
            if not self._readers:
                self._readers = None


class _HeartbeatWaiters:
    """Callers of `heartbeat()` waiting for the answer to the request in flight (RFC 6520 §3:
    one at a time, so they all wait for the same one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[asyncio.Future[bool]] = []

    def add(self) -> asyncio.Future[bool]:
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiting.append(waiter)
        return waiter

    def answered(self) -> None:
        self._end(lambda w: w.set_result(True))

    def closed(self, error: DtlsError | None) -> None:
        """The association ended: a clean end is no answer, an error is raised."""
        if error is None:
            self._end(lambda w: w.set_result(False))
        else:
            self._end(lambda w: w.set_exception(error))

    def _end(self, settle: Callable[[asyncio.Future[bool]], None]) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                settle(waiter)


async def _wait_heartbeat(
    conn: DtlsConnection, waiters: _HeartbeatWaiters, send: Callable[[], None], timeout: float
) -> bool:
    """Send a heartbeat request (`send`) unless one is in flight, and wait up to `timeout`
    seconds for its answer (EXT-5); a NaN or negative `timeout` is refused first
    (`check_timeout`), as `iotdtls.sync`'s is."""
    seconds = check_timeout(timeout)
    if conn.state is not ConnectionState.ESTABLISHED:
        raise conn.error or LocalProtocolError("the association has ended")
    if not conn.heartbeat_in_flight:
        send()
    waiter = waiters.add()
    try:
        return await asyncio.wait_for(waiter, seconds)
    except TimeoutError:
        return False


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, config: ClientConfig, session: SessionState | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.connection = DtlsConnection(config, session=session)
        self.heartbeats = _HeartbeatWaiters(self.loop)
        #: Failed handshakes so far (retried per `config.retry`, RPK-4).
        self.failures = 0
        #: A failed handshake so far had resumed the session offered (`DtlsError.resuming`).
        self._resumed_before = False
        self._retry: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox = _Inbox(config.receive_queue, config.receive_queue_bytes)
        self.handshake_done: asyncio.Future[None] = self.loop.create_future()
        #: Done once the transport has closed its socket.
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        #: ICMP port-unreachable reports of the handshake (`PortUnreachable`).
        self._refused = RefusedHandshake()
        #: The kernel refused a datagram as too large (EMSGSIZE) since `send` cleared it.
        self.oversized = False
        #: `connect` gave up (cancelled) before its socket was made: nothing is to be sent.
        self.abandoned = False
        #: The socket given to the loop: closed directly once the loop is closed without
        #: having closed it (`_release_after_loop`).
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self.abandoned:
            # Made after `connect` gave up (a loop that calls this once the cancelled
            # create_datagram_endpoint has returned): a ClientHello would start a handshake
            # nobody awaits, on a socket nobody closes.
            transport.close()
            return
        try:
            self.connection.connect(self.loop.time())
            self.flush()
        except Exception as exc:  # to `connect`'s caller (which closes the socket), not the loop
            if not self.handshake_done.done():
                self.handshake_done.set_exception(exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        log_datagram(logger, "<-", addr, data)
        self._refused.heard = True
        self.connection.receive_datagram(data, self.loop.time())
        self.flush()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            assert self.transport is not None
            if self._refused.refused(self.connection, self.transport.get_extra_info("peername")):
                self.flush()
                return
        if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
            self.oversized = True  # asyncio and uvloop report it from within `sendto`
        logger.debug("socket error: %s (%s)", exc, LOST)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._retry is not None:
            self._retry.cancel()
        self.inbox.end(self.connection.error)
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.handshake_done.done():
            self.handshake_done.set_exception(
                LocalProtocolError("socket closed during the handshake")
            )

    def flush(self) -> None:
        conn = self.connection
        if self.transport is not None:
            for datagram in conn.datagrams_to_send(self.loop.time()):
                log_datagram(logger, "->", self.transport.get_extra_info("peername"), datagram)
                self.transport.sendto(datagram)
        while (event := conn.next_event()) is not None:
            self._on_event(event)
        self._cancel_timer()
        when = conn.get_timer()
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, HandshakeComplete) and not self.handshake_done.done():
            if not event.extended_master_secret:
                logger.warning("handshake complete%s", _ems_note(event))
            self.handshake_done.set_result(None)
        elif isinstance(event, DataReceived):
            self.inbox.put(event.data)
        elif isinstance(event, HeartbeatAnswered):
            self.heartbeats.answered()
        elif isinstance(event, ConnectionClosed):
            error = event.error
            if not self.handshake_done.done() and error is not None:
                self._resumed_before = carry_resuming(error, self._resumed_before)
                if self._retry_later(error):
                    return
                error = after_attempts(error, self.failures + 1)
            self.heartbeats.closed(error)
            self.inbox.end(error)
            if not self.handshake_done.done():
                # The core names why every handshake ends (the peer's close_notify too).
                assert error is not None
                self.handshake_done.set_exception(error)

    def _retry_later(self, error: DtlsError | None) -> bool:
        """After a failed handshake, schedule a fresh one if `config.retry` allows (RPK-4)."""
        policy = self.config.retry
        if policy is None or self.failures + 1 >= policy.attempts:
            return False
        self.failures += 1
        delay = policy.delay(self.failures)
        logger.info("handshake failed (%s); new handshake in %.1f s", error, delay)
        self._retry = self.loop.call_later(delay, self._restart)
        return True

    def _restart(self) -> None:
        # A retry is a full handshake: whatever failed may have been the session we offered.
        self._retry = None
        self._refused.refusals = 0
        self.connection = DtlsConnection(self.config)
        self.connection.connect(self.loop.time())
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.connection.handle_timer(self.loop.time())
        self.flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


#: The loop running in the calling thread, or None: asyncio's own helper, bound once. In a
#: loop it costs what `asyncio.get_running_loop` does (about 0.2 us on CPython 3.11, a getpid
#: call); outside any loop it answers None where the public one raises, six times dearer.
_running_loop = asyncio._get_running_loop


def _require_own_loop(loop: asyncio.AbstractEventLoop, what: str = "connection") -> None:
    """Refuse (`ForeignEventLoop`, saying why) to use an association outside the loop that
    opened it: once that loop is closed, from another running loop, where nothing would ever
    read its socket nor run its timers, or from another thread while that loop runs in its
    own (asyncio's loops and transports are not thread-safe: the thread must hand the call to
    the loop). A caller outside any loop may still send while that loop is open and runs
    nowhere (between two `run_until_complete` calls): its transport sends at once."""
    running = _running_loop()
    if running is loop:  # the usual case, first: one call
        return
    if loop.is_closed():
        raise ForeignEventLoop(what, "closed")
    if running is not None:
        raise ForeignEventLoop(what, "another loop")
    if loop.is_running():
        raise ForeignEventLoop(what, "another thread")


#: Packages whose frames stand between the application's line and a warning given as a loop
#: ends (`_application_stacklevel`): the event loops' and ours.
_LOOP_PACKAGES = frozenset({"asyncio", "iotdtls", "uvloop"})


def _application_stacklevel() -> int:
    """The `stacklevel` that has `warnings.warn`, called by the caller of this, name the
    application's line: the first frame outside asyncio, uvloop and iotdtls, say the
    `asyncio.run(main())` whose end closed what was left open; 1 (the caller) without one."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package not in _LOOP_PACKAGES:
            return level
        frame = frame.f_back
        level += 1
    return 1


async def _until_loop_end(on_end: Callable[[], Awaitable[None]]) -> AsyncGenerator[None, None]:
    """Once started, the running loop keeps this among its async generators, and
    `asyncio.run` closes those as it ends the loop (`loop.shutdown_asyncgens`, the loop still
    running): `on_end` is awaited then (or when the generator is closed before)."""
    try:
        yield
    finally:
        await on_end()


def _release(protocol: _ClientProtocol, transport: asyncio.DatagramTransport) -> None:
    """Send close_notify if the association is still open (RFC 5246 §7.2.1) and close the
    socket (done once `protocol.lost` is)."""
    if protocol.connection.state is not ConnectionState.CLOSED:
        protocol.connection.close()
        protocol.flush()
    transport.close()


def _release_after_loop(transport: asyncio.DatagramTransport, sock: socket.socket) -> None:
    """Close the socket of a transport whose event loop was closed without closing it
    (`loop.close()` written by hand, without `shutdown_asyncgens` or a close first): no loop
    will read it or run the transport's callbacks again, and closing a socket needs none. The
    transport is marked closing first (it cannot schedule its own end on the closed loop).
    Nothing is sent: a peer ends its side at its own timeout."""
    with contextlib.suppress(RuntimeError):  # the closed loop refuses the transport's callback
        transport.close()
    sock.close()


class ClientConnection:
    """An established client association (see `connect`). It belongs to the event loop that
    opened it: used once that loop is closed, from another loop, or from another thread while
    that loop runs, it raises `ForeignEventLoop`; still open when `asyncio.run` ends that
    loop, it is closed then, with a RuntimeWarning; one the application drops without
    `close()` is closed when collected, with a ResourceWarning (as asyncio's transports).
    Neither warns of an association the peer or an error had already ended: its socket is
    released quietly.

    Forking: a connection belongs to the process that made it. In a forked child (which must
    never send under the parent's keys: its records would reuse the record sequence numbers
    the parent uses next, one nonce twice under one AEAD key, RFC 5116 §3, RFC 6655 §3),
    `send` and `heartbeat` raise `LocalProtocolError` saying so, and `close()` and the
    collector send nothing and schedule nothing on the parent's loop: the child's copy of
    the socket is left to its exit (closing it through the transport would change the
    event-loop registrations the child shares with the parent)."""

    def __init__(self, protocol: _ClientProtocol, transport: asyncio.DatagramTransport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._closed = False
        self._loop_end: AsyncGenerator[None, None] | None = None
        #: Both ends' addresses for `__repr__`, named while the socket is open.
        self._ends = (self._server_name(), format_address(self.local_address))
        #: The process that made the connection: the only one that may send under its keys.
        self._pid = _process.pid

    async def _watch_loop_end(self) -> None:
        """Have the loop close this connection, if still open, as `asyncio.run` ends it."""
        self._loop_end = _until_loop_end(self._loop_ending)
        await anext(self._loop_end)

    async def _loop_ending(self) -> None:
        """The loop is ending (or `close()` stops the watch): a connection still open then
        (`asyncio.run(connect(...))` returns one with its loop about to close, or one never
        closed) is closed, with a RuntimeWarning, rather than left with a socket that no loop
        reads; later calls raise `ForeignEventLoop`. The warning comes once it is closed (a
        warning made an error, `-W error`, raises after the close)."""
        self._loop_end = None
        if self._closed:
            return
        if _process.forked_from(self._pid):  # a child's copy: nothing to send (see the class)
            self._closed = True
            return
        still_open = self._still_open()
        name = self._server_name()  # named while the transport is open
        await self.close()
        if still_open:
            warnings.warn(
                f"iotdtls: the connection to {name} was still open when its"
                " event loop ended (asyncio.run(connect(...))?): closed it; open, use and close"
                " it inside one asyncio.run",
                RuntimeWarning,
                stacklevel=_application_stacklevel(),
            )

    def __del__(self) -> None:
        """Collected without `close()` (the application dropped it; a cycle with the loop-end
        watch may keep it until a garbage collection): send close_notify and release the
        socket on its loop, with a ResourceWarning if the association was still open, given
        once the release is scheduled (a warning made an error raises after it). A
        loop already closed cannot: the transport's own finalizer closes the socket then."""
        if self._closed:
            return
        self._closed = True  # the watch, finalized with it, has nothing left to do
        if _process.forked_from(self._pid):  # a child's copy: nothing to send (see the class)
            return
        still_open = self._still_open()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._protocol.loop.call_soon_threadsafe(_release, self._protocol, self._transport)
        if still_open:  # last: a warning made an error (`-W error`) raises here
            warnings.warn(
                f"iotdtls: unclosed connection to {self._server_name()}",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def _still_open(self) -> bool:
        """The association was still usable: neither the peer (close_notify) nor an error
        had ended it."""
        return self._protocol.connection.state is not ConnectionState.CLOSED

    def _server_name(self) -> str:
        return format_address(self._transport.get_extra_info("peername"))

    @property
    def connection(self) -> DtlsConnection:
        """The sans-I/O connection underneath (statistics, state)."""
        return self._protocol.connection

    @property
    def ended(self) -> bool:
        """True once the association has ended: the peer's close_notify, a fatal alert or
        another error (which `recv` raises), or `close()` (as `ServerSession.ended`)."""
        return self._closed or not self._still_open()

    @property
    def dropped_datagrams(self) -> int:
        """Received datagrams dropped because `config.receive_queue` datagrams, or
        `config.receive_queue_bytes` bytes, were unread."""
        return self._protocol.inbox.dropped

    @property
    def peer(self) -> PeerIdentity:
        """Who the handshake authenticated (`iotdtls.identity`): the server's raw public key
        (`RawPublicKeyIdentity`) or certificate (`CertificateIdentity`); in PSK mode the
        `PskIdentity` whose key both sides proved. For a resumed session, who the full
        handshake of that session authenticated."""
        peer = self._protocol.connection.peer
        assert peer is not None  # established: the handshake named the server
        return peer

    @property
    def max_send_size(self) -> int:
        """The largest datagram `send()` accepts: what one record in one datagram of
        `config.mtu` bytes carries (RFC 6347 §4.1.1; see `DtlsConnection.max_send_size`)."""
        return self._protocol.connection.max_send_size

    @property
    def local_address(self) -> Address:
        """The socket address of our end, as asyncio gives it."""
        return tuple(self._transport.get_extra_info("sockname"))

    @property
    def session(self) -> SessionState | None:
        """The session to save for a later resumption (`connect(..., session=)`, RES-1): its
        `to_bytes()` hold the master secret (keep them mode 0600). None when the server gave
        no resumable session (or after a fatal alert)."""
        return self._protocol.connection.session

    @property
    def resumed(self) -> bool:
        """True when this association resumed the session given to `connect`."""
        return self._protocol.connection.resumed

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram of application data (bytes-like; see `DtlsConnection.send`).
        Raises `PathMtuExceeded` (a `DatagramTooLarge`) when the kernel refuses the datagram as
        larger than the path allows (EMSGSIZE: `config.mtu` is above the path MTU; RFC 6347
        §4.1.1). Raises `ForeignEventLoop` outside the loop that opened the connection."""
        protocol = self._protocol
        _process.require_owner(self._pid, "connection")  # before the loop: a child's copy runs
        _require_own_loop(protocol.loop)
        protocol.oversized = False
        try:
            protocol.connection.send(data)
        finally:
            # A send that ended the association (`SequenceNumbersExhausted`) ends recv too.
            protocol.flush()
        if protocol.oversized:
            connection = protocol.connection
            overhead = connection.record_overhead
            raise PathMtuExceeded(byte_size(data), overhead, connection.config.mtu)

    async def heartbeat(self, timeout: float) -> bool:
        """Send a heartbeat request (RFC 6520, EXT-5; needs `config.heartbeat` and a peer that
        accepts requests) and wait up to `timeout` seconds: True when the peer answered. A
        request already in flight is waited for instead. Raises the error that ended the
        association meanwhile (`PeerUnresponsive` after `config.handshake_timeout` seconds
        without an answer)."""
        proto = self._protocol
        _process.require_owner(self._pid, "connection")  # before the loop: a child's copy runs
        _require_own_loop(proto.loop)

        def send() -> None:
            proto.connection.send_heartbeat(proto.loop.time())
            proto.flush()

        return await _wait_heartbeat(proto.connection, proto.heartbeats, send, timeout)

    async def recv(self) -> bytes | None:
        """The next datagram; None after a clean close; raises the error that ended it
        (`ForeignEventLoop` outside the loop that opened the connection)."""
        _require_own_loop(self._protocol.loop)
        return await self._protocol.inbox.get()

    async def close(self) -> None:
        """Send close_notify and release the socket (`ForeignEventLoop` outside the loop that
        opened the connection: only that loop can). Once closed (by `close()`, or as its loop
        ended), a call does nothing, from whatever loop: `finally: await conn.close()` is
        safe. Once its loop is closed without having closed it (`loop.close()` by hand), it
        releases the socket, from whatever loop or none, with no close_notify. In a process
        forked from the one that made it, it sends nothing (see the class)."""
        if self._closed and self._protocol.lost.done():
            return
        if _process.forked_from(self._pid):
            self._closed = True
            return
        if self._protocol.loop.is_closed() and self._protocol.sock is not None:
            self._closed = True  # its loop closed without closing it: the socket, at least
            _release_after_loop(self._transport, self._protocol.sock)
            return
        _require_own_loop(self._protocol.loop)
        self._closed = True
        _release(self._protocol, self._transport)
        await self._protocol.lost  # the socket is closed when close() returns
        if self._loop_end is not None:
            await self._loop_end.aclose()

    def __repr__(self) -> str:
        """`<ClientConnection to SERVER from LOCAL open>`, "ended" once the peer or an error
        ended the association, "closed" after `close()`."""
        state = "closed" if self._closed else "ended" if not self._still_open() else "open"
        server, local = self._ends
        return f"<ClientConnection to {server} from {local} {state}>"

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The datagrams received, until the association ends, as a `ServerSession`'s:
        `async for datagram in conn`. An error that ended it ends the loop too; `recv()`
        raises it then (`ended` says the association has ended)."""
        return _Datagrams(self.recv)

    async def __aenter__(self) -> ClientConnection:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Connect(Opening[ClientConnection]):
    """What `connect` returns (see `iotdtls._opening.Opening`)."""

    #: How a task running it names it (`Task.__repr__`).
    __name__ = "connect"

    def __init__(
        self,
        host: str,
        port: int,
        config: ClientConfig,
        sock: socket.socket | None,
        chain_cache: ChainCache | None,
        session: SessionState | None,
    ) -> None:
        super().__init__()
        self._args = (host, port, config)
        self._sock = sock
        self._cache = chain_cache
        self._session = session

    async def _open(self) -> ClientConnection:
        """Without `sock`, each address `host` resolves to in turn (IPv6 and IPv4 of one name)
        while the one before fails before any answer: its socket cannot connect, or the
        network reports its port unreachable (`PortUnreachable`, RFC 8085 §5.2). The last
        one's error is raised; a handshake that times out is not tried again elsewhere."""
        host, port, config = self._args
        config, key = for_server(config, self._cache, host, port)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            await _connect_socket(loop, self._sock, host, port)
            return await self._open_on(loop, config, key, self._sock)
        with reaching(host, port):
            *firsts, last = await resolve_udp(loop, host, port)
        for sock in sockets_in_turn(firsts, host, port):
            try:
                return await self._open_on(loop, config, key, sock)
            except PortUnreachable as exc:
                logger.info("%s; trying the next address of %s", exc, host)
        return await self._open_on(loop, config, key, socket_to(last, host, port))

    async def _open_on(
        self, loop: asyncio.AbstractEventLoop, config: ClientConfig, key: str,
        sock: socket.socket,
    ) -> ClientConnection:
        """The handshake over `sock`, connected to one address of the server."""
        try:
            protocol = _ClientProtocol(config, self._session)
        except BaseException:
            if sock is not self._sock:
                sock.close()  # ours: a caller's socket stays theirs when connecting fails
            raise
        protocol.sock = sock
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        except BaseException:
            # Cancelled (or failed) while the loop makes the socket. asyncio's loop closes the
            # transport it made; uvloop's (0.23) does not, though `connection_made` has sent
            # the ClientHello already: close it here, or the handshake completes in the
            # background on a socket nobody closes, and the server keeps the association.
            # One made later closes itself, abandoned, before sending anything.
            # The handshake's end then has nobody to await it (no "Future exception was
            # never retrieved" line for a caller who gave up).
            protocol.abandoned = True
            protocol.handshake_done.cancel()
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        try:
            await protocol.handshake_done
            remember_chain(self._cache, key, config, protocol.connection.peer)
        except BaseException:
            # Cancelled (or failed) with the association still open, say in the instant
            # between the handshake's end and this task's resuming: close_notify, or the
            # server would keep it until its idle_timeout (RFC 5246 §7.2.1).
            _release(protocol, transport)
            await protocol.lost  # the socket is closed when the error reaches the caller
            raise
        conn = ClientConnection(protocol, transport)
        await conn._watch_loop_end()
        return conn


async def _connect_socket(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int
) -> None:
    """Connect a caller-supplied UDP socket to `host:port` unless it is connected already: to
    its first address of the socket's family (`sock_address`, a link-local zone kept), as
    `sync.connect` does."""
    try:
        sock.getpeername()
        return
    except OSError:
        pass
    with reaching(host, port):
        infos = await resolve_udp(loop, host, port)
    attach_socket(sock, infos, host, port)


def connect(
    host: str,
    port: int,
    config: ClientConfig,
    *,
    sock: socket.socket | None = None,
    chain_cache: ChainCache | None = None,
    session: SessionState | None = None,
) -> _Connect:
    """Open a UDP socket to `host:port` and complete the handshake: a coroutine returning the
    `ClientConnection` (await it, or hand it to `asyncio.create_task`), and an async context
    manager that closes the connection at its end. The connection works only on the event
    loop that opened it, so not `asyncio.run(connect(...))`: that loop is closed when it
    returns, and the loop's end closes the connection with a RuntimeWarning; its methods raise
    `ForeignEventLoop` then (and from another loop). Open it inside the `main()` given to
    `asyncio.run`. Of a name with several addresses (IPv6
    and IPv4), each is tried in turn while the one before fails before any answer (its socket
    cannot connect, or `PortUnreachable`); a handshake that times out is not tried elsewhere.

    `sock` is an optional UDP socket to use instead of a new one (e.g. one made in another
    network namespace); it is connected to `host:port` if it is not connected yet, and closed
    with the association. `chain_cache` keeps the server's certificate chain between runs, so
    the next handshake offers it in cached_info (RFC 7924) and the server may leave it out.
    `session` (from an earlier association's `session`) asks the server to resume it: the short
    handshake if the server still has it, a full one otherwise (RES-1). Raises the `DtlsError`
    that ended the handshake: `AlertSent`, `AlertReceived`, `HandshakeTimeout` (after
    `config.handshake_timeout`; with `config.retry`, of the last attempt, naming them) or
    `PortUnreachable` (the network refused the ClientHello and its retransmission with ICMP port
    unreachable: nothing listens there, RFC 8085 §5.2). A wrong argument raises `TypeError` (or
    `ConfigError` for the port, a closed `sock` or one with IP_RECVERR set, see the README)
    here, before any socket is made; a host that does not resolve, `socket.gaierror` naming it
    ("cannot resolve HOST: ..."). In certificate mode, the server's certificate must carry
    `config.server_name` or, without one, `host` (RFC 7925 §4.4.1). Cancelled, it closes the
    socket, with close_notify unless the handshake had failed (RFC 5246 §7.2.1), even in the
    instant the handshake completed."""
    port = check_client_arguments(host, port, config, sock=sock, chain_cache=chain_cache,
                                  session=session)
    return _Connect(host, port, config, sock, chain_cache, session)


class ServerSession:
    """One established peer of a server, handed to the handler.

    Forking: as a `ClientConnection`, a session belongs to the process whose server made it.
    In a forked child `send` and `heartbeat` raise `LocalProtocolError` saying so (its
    records would reuse the record sequence numbers the server uses next, one nonce twice
    under one AEAD key, RFC 5116 §3), and `close()` sends nothing, as the server's does."""

    # Slots: a server keeps one per established peer (memory per association, issue 9).
    __slots__ = ("_ended", "_heartbeats", "_server", "address", "inbox", "peer", "resumed",
                 "server_name")

    def __init__(
        self, server: _ServerProtocol, address: Address, done: HandshakeComplete, *, queue: bool
    ) -> None:
        """`queue`: received datagrams wait in an inbox for `recv` (a task-per-peer handler);
        without one they go straight to a `DatagramHandler`."""
        self._server = server
        self.address = address
        #: Who the handshake authenticated (`iotdtls.identity`); for a resumed session, who
        #: the full handshake of that session authenticated.
        self.peer = done.peer
        #: The server_name the client asked for (RFC 6066 §3), "" for none.
        self.server_name = done.server_name
        #: The client resumed an earlier session (RES-1).
        self.resumed = done.resumed
        config = server.endpoint.config
        self.inbox = _Inbox(config.receive_queue, config.receive_queue_bytes) if queue else None
        self._heartbeats: _HeartbeatWaiters | None = None
        self._ended = False

    def _end(self, error: DtlsError | None) -> None:
        """The association ended (closed, failed, replaced, or the server stopped)."""
        self._ended = True
        if self.inbox is not None:
            self.inbox.end(error)
        if self._heartbeats is not None:
            self._heartbeats.closed(error)

    def _heartbeat_answered(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.answered()

    @property
    def psk_identity(self) -> bytes:
        """The client's PSK identity (empty outside PSK mode)."""
        return self.peer.identity if isinstance(self.peer, PskIdentity) else b""

    def __repr__(self) -> str:
        return f"<ServerSession {self.address!r}>"

    @property
    def dropped_datagrams(self) -> int:
        """Received datagrams dropped because `config.receive_queue` datagrams, or
        `config.receive_queue_bytes` bytes, were unread."""
        return 0 if self.inbox is None else self.inbox.dropped

    @property
    def ended(self) -> bool:
        """True once this association has ended (closed, failed, or replaced by a newer one
        from the same address)."""
        return self._ended

    @property
    def max_send_size(self) -> int:
        """The largest datagram `send()` accepts: what one record in one datagram of
        `config.mtu` bytes carries, at most a negotiated max_fragment_length (RFC 6347 §4.1.1,
        RFC 6066 §4); 0 once the association has ended."""
        conn = self._server.endpoint.connections.get(self.address)
        return 0 if self._ended or conn is None else conn.max_send_size

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram over this session's association; once it has ended, the datagram
        is dropped (a DEBUG line says so), as UDP drops one for a peer that has gone. A peer
        may close right behind its last datagram, so a handler's answer can always come too
        late: that is no error of the handler's. A newer association of the same address never
        gets what was meant for this one (RFC 6347 §4.2.8 makes it a new connection; RFC 7252
        §9.1 relies on that). Raises `DatagramTooLarge` for data that does not fit one
        datagram (`max_send_size` of the association, or the path: the kernel refused it with
        EMSGSIZE), `TypeError` for data that is not bytes-like, `ForeignEventLoop` outside the
        server's event loop, `LocalProtocolError` in a forked child (see the class)."""
        _process.require_owner(self._server.pid, "session")  # before the loop: a child's copy runs
        _require_own_loop(self._server.loop, "session")
        if self._ended or not self._server.send(self.address, data):
            sealable(data)  # a mistake shows even when the datagram would be dropped
            logger.debug(
                "datagram to %s not sent: the association has ended", format_address(self.address)
            )

    async def recv(self) -> bytes | None:
        """The next datagram; None after a clean close. (A `DatagramHandler` gets them in
        `datagram_received` instead.)"""
        _require_own_loop(self._server.loop, "session")
        if self.inbox is None:
            raise LocalProtocolError("this server hands datagrams to its DatagramHandler")
        return await self.inbox.get()

    async def heartbeat(self, timeout: float) -> bool:
        """Send this client a heartbeat request (RFC 6520, EXT-5) and wait up to `timeout`
        seconds: True when it answered (see `ClientConnection.heartbeat`)."""
        _process.require_owner(self._server.pid, "session")  # before the loop: a child's copy runs
        _require_own_loop(self._server.loop, "session")
        conn = self._server.endpoint.connections.get(self.address)
        if self.ended or conn is None:
            raise LocalProtocolError("the association with this peer has ended")
        server = self._server

        def send() -> None:
            server.endpoint.send_heartbeat(self.address, server.loop.time())
            server.flush()

        if self._heartbeats is None:
            self._heartbeats = _HeartbeatWaiters(server.loop)
        return await _wait_heartbeat(conn, self._heartbeats, send, timeout)

    def close(self) -> Awaitable[None]:
        """Send the peer close_notify and end the association (RFC 5246 §7.2.1); nothing once
        it has ended. The address may have a newer association by then (a device that
        restarted, RFC 6347 §4.2.8): that one is not this session's to close. Nothing, from
        whatever loop, either, once the association has ended (its server closed), nor in a
        process forked from the server's (see the class). All is done when it returns (the
        socket is the server's and stays open): `session.close()` is enough, and as it
        returns an awaitable that is already done, `await session.close()` works too, as it
        does for `ClientConnection.close()` and `DtlsServer.close()`."""
        if self._ended or _process.forked_from(self._server.pid):
            return _DONE
        _require_own_loop(self._server.loop, "session")
        self._server.close_peer(self.address)
        return _DONE

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Datagrams(self.recv)


class _Datagrams:
    """What `recv` returns until the association ends: cleanly (None), or with an error. A
    class, not an async generator: the loop keeps every async generator started on it and
    `loop.shutdown_asyncgens` closes them all at once, so one suspended in `recv` inside a
    handler still running (a loop ended by hand, `shutdown_asyncgens` before the tasks are
    cancelled) made asyncio log "aclose(): asynchronous generator is already running". The
    handler's task ends it instead, as the server's close cancels it."""

    __slots__ = ("_recv",)

    def __init__(self, recv: Callable[[], Awaitable[bytes | None]]) -> None:
        self._recv = recv

    def __aiter__(self) -> _Datagrams:
        return self

    async def __anext__(self) -> bytes:
        try:
            data = await self._recv()
        except DtlsError:
            data = None
        if data is None:
            raise StopAsyncIteration
        return data


class _Done:
    """An awaitable that is already done: what `ServerSession.close()` returns, which has
    nothing to wait for, so that it may be awaited as the other `close()` methods are."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_DONE = _Done()

Handler = Callable[[ServerSession], Awaitable[None]]


class DatagramHandler:
    """A server handler without a task per peer, for servers of many mostly idle peers: the
    server calls these methods from the event loop as things happen (keep them short; start a
    task for slow work), and a peer costs only its association and its `ServerSession`.
    Subclass it and override what you need; an exception ends that peer's association and is
    logged, as from a task handler. One method runs at a time: a `send` or `close()` in one
    returns before the next record (of the same datagram, too) is handed on, and once a method
    has raised or closed the session, nothing more of its peer reaches `datagram_received`."""

    def session_started(self, session: ServerSession) -> None:
        """A peer completed its handshake."""

    def datagram_received(self, session: ServerSession, data: bytes) -> None:
        """One datagram from `session`'s peer (`session.send` answers it)."""

    def session_ended(self, session: ServerSession, error: DtlsError | None) -> None:
        """The association ended: cleanly (None), or with the error that ended it."""


def check_handler(handler: object) -> None:
    """A server's handler is a `DatagramHandler` instance with plain (not async) methods, or a
    coroutine function taking a `ServerSession` (also a `functools.partial` of one, or an object
    whose `__call__` is one); `TypeError` for anything else, at `serve` time rather than from
    every peer's handler after its handshake. A plain function is refused even when it returns
    a coroutine (`lambda s: echo(s)`): serve cannot tell it from one that returns None."""
    if isinstance(handler, DatagramHandler):
        for method in ("session_started", "datagram_received", "session_ended"):
            if inspect.iscoroutinefunction(getattr(handler, method)):
                raise TypeError(
                    f"handler method {type(handler).__name__}.{method} is async def: the server "
                    "calls DatagramHandler methods without awaiting them: make it a plain def "
                    "(and start a task for async work)"
                )
        return
    if isinstance(handler, type) and issubclass(handler, DatagramHandler):
        name = handler.__name__
        raise TypeError(f"handler {name} is a DatagramHandler class: pass an instance: {name}()")
    if not callable(handler):
        raise TypeError(
            "handler must be a coroutine function taking a ServerSession or a DatagramHandler "
            f"instance, got {type_name(handler)}"
        )
    called: object = handler
    while isinstance(called, functools.partial):
        called = called.func
    if not inspect.iscoroutinefunction(called) and not inspect.iscoroutinefunction(
        type(called).__call__  # an object whose __call__ is async def
    ):
        name = getattr(called, "__name__", type_name(called))
        raise TypeError(
            f"handler {name} is not a coroutine function: the server awaits handler(session) "
            "for every peer: write it as async def (or pass a DatagramHandler instance)"
        )


class _ServerProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        handler: Handler | DatagramHandler,
        config: ServerConfig,
        session_store: SessionStore | None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        #: The process that made the server: the only one that may send under its keys.
        self.pid = _process.pid
        self.endpoint = ServerEndpoint(config, session_store=session_store)
        self.endpoint.log_failures = False  # `_on_closed` logs each end, naming the peer
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Address, ServerSession] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        #: The loop's wake-up for the endpoint's timers, and the time it is set for (kept here:
        #: uvloop hands back a plain `Handle`, without `when()`, for a time under 1 ms away).
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        #: A `flush` is handing events on: a flush called meanwhile (a handler's `send` or
        #: `close`, `close_peer` after a handler raised) only sends what is ready, and the
        #: running one hands on the events it left (`flush`).
        self._flushing = False
        #: Done once the transport has closed its socket.
        self.lost: asyncio.Future[None] = self.loop.create_future()
        #: Certificate URL fetches running at once (each holds an executor thread).
        self._fetches = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        #: The fetch of each address whose handshake waits for its chain (one at most).
        self._fetching: dict[Address, _Fetch] = {}
        self._max_fetching = MAX_CONCURRENT_FETCHES + MAX_WAITING_FETCHES
        self._max_fetching_per_host = MAX_FETCHES_PER_HOST
        self.stats = ServerStats()
        #: The lines of failed handshakes and of certificate fetchers that raised, bounded
        #: (`FAILED_HANDSHAKE_LINES`; a fetcher's, by kind), and the timer that sums up those
        #: held back at the end of their interval.
        self.failed_handshakes = SummedFailures(
            "handshake failed:", FAILED_HANDSHAKE_LINES,
            "{count} more handshake{s} failed (the latest: {latest})",
        )
        self.failed_fetchers = SummedFailures("certificate fetcher raised")
        self._summary_timer: asyncio.TimerHandle | None = None
        #: The kernel refused a datagram as too large (EMSGSIZE) since `send` cleared it.
        self.oversized = False
        #: The watch that closes the server as `asyncio.run` ends the loop (`DtlsServer`).
        self.loop_end: AsyncGenerator[None, None] | None = None
        #: The socket served: closed directly once the loop is closed without having closed
        #: it (`release_after_loop`).
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        log_datagram(logger, "<-", addr, data)
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        self.endpoint.receive_datagram(data, addr, self.loop.time())
        self.flush()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
            self.oversized = True  # reported from within `sendto`
        logger.debug("socket error: %s (%s)", exc, LOST)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.stop_fetches()
        for session in self.sessions.values():
            session._end(None)
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        # What is still held back, at the stop (after the handshakes it ended, unfinished).
        if (line := self.failed_handshakes.unlogged()) is not None:
            logger.info("%s", line)
        if (line := self.failed_fetchers.unlogged()) is not None:
            logger.warning("%s", line)
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, address: Address, data: bytes | bytearray | memoryview) -> bool:
        """Send `data` over the association of `address`; False (nothing sent) when it has
        gone before its session heard so: it ended with a record that came in the same
        datagram as the data being answered, and its `ConnectionClosed` waits behind the
        data's event. (A newer association of the address is never there yet: only a datagram
        that starts with a ClientHello begins one, RFC 6347 §4.2.8.)"""
        if address not in self.endpoint.connections:
            return False
        self.endpoint.send(address, data, self.loop.time())
        self.oversized = False
        self.flush()
        if self.oversized:
            overhead = self.endpoint.connections[address].record_overhead
            raise PathMtuExceeded(byte_size(data), overhead, self.endpoint.config.mtu)
        return True

    def close_peer(self, address: Address) -> None:
        """Close the association of `address` with close_notify (RFC 5246 §7.2.1). Its
        session has ended from here on: what its peer sent before the close, still waiting in
        the endpoint's events (the rest of the datagram being handled), is not handed on."""
        session = self.sessions.get(address)
        if session is not None:
            session._ended = True
        self.endpoint.close(address)
        self.flush()

    def release_after_loop(self) -> None:
        """The loop was closed without closing the server: free the port and mark the sessions
        ended (their readers and handlers went with the loop, which can wake none of them)."""
        assert self.transport is not None and self.sock is not None
        _release_after_loop(self.transport, self.sock)
        self.loop_end = None
        for session in self.sessions.values():
            session._ended = True

    def flush(self) -> None:
        """Send what the endpoint has ready, hand its events on, and set the loop's timer.
        A flush called while one hands events on (from a handler: `send`, `close_peer`) only
        sends: the running one takes the events that call left, in order, so a datagram of
        many records costs no stack per record (each handler's send recursed into the next
        record's handler, a RecursionError at a few hundred records)."""
        if self.transport is not None:
            for datagram, address in self.endpoint.datagrams_to_send(self.loop.time()):
                log_datagram(logger, "->", address, datagram)
                self.transport.sendto(datagram, address)
                self.stats.datagrams_sent += 1
                self.stats.bytes_sent += len(datagram)
        if self._flushing:
            return
        self._flushing = True
        try:
            while (item := self.endpoint.next_event()) is not None:
                self._on_event(*item)
        finally:
            self._flushing = False
        # The loop's timer only ever moves earlier. One set for a deadline that has since gone
        # later or away (a handshake's retransmission timer, after each flight) fires early
        # and is set again by `_on_timer`: one wake-up per armed deadline, where moving it
        # would cost a cancel and a new handle for nearly every datagram of a busy server.
        when = self.endpoint.get_timer()
        armed = self._timer
        if when is None or (armed is not None and self._timer_at <= when):
            return
        if armed is not None:
            armed.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_event(self, address: Address, event: Event) -> None:
        if isinstance(event, HandshakeComplete):
            self.stats.handshakes_completed += 1
            if event.resumed:
                self.stats.handshakes_resumed += 1
            if logger.isEnabledFor(logging.INFO):  # a server under load logs nothing here
                who = f"{format_address(address)} {event.peer}"
                logger.info(
                    "handshake complete: peer %s%s%s", who, _notes(event), _ems_note(event)
                )
            # An earlier association of this address has had its ConnectionClosed already
            # (the endpoint ends it before a new one begins, RFC 6347 §4.2.8).
            handler = self.handler
            session = ServerSession(
                self, address, event, queue=not isinstance(handler, DatagramHandler)
            )
            self.sessions[address] = session
            if isinstance(handler, DatagramHandler):
                self._call(session, handler.session_started, session)
                return
            task = self.loop.create_task(self._run(handler, session))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, DataReceived):
            s = self.sessions.get(address)
            if s is None or s._ended:  # closed by us (`close_peer`) before this record's turn
                return
            if s.inbox is not None:
                s.inbox.put(event.data)
            elif isinstance(self.handler, DatagramHandler):
                self._call(s, self.handler.datagram_received, s, event.data)
        elif isinstance(event, HeartbeatAnswered):
            s = self.sessions.get(address)
            if s is not None:
                s._heartbeat_answered()
        elif isinstance(event, ConnectionClosed):
            self._stop_fetch(address)
            self._on_closed(address, event)
        elif isinstance(event, CertificateUrlsReceived):
            self._start_fetch(address, event)

    def _start_fetch(self, address: Address, request: CertificateUrlsReceived) -> None:
        """RFC 6066 §5 (CRT-7): fetch `address`'s chain in a task (one fetch per address). Past
        `MAX_WAITING_FETCHES` waiting for a slot, the handshake fails at once with
        certificate_unobtainable: a line without end would let clients pointing at slow URLs
        keep every other client's chain waiting. A host (`host_of`) with
        `MAX_FETCHES_PER_HOST` fetches running or waiting is refused so too: one host cannot
        take every slot."""
        self._stop_fetch(address)  # of an association this one replaced (RFC 6347 §4.2.8)
        host = host_of(address)
        own = sum(1 for other in self._fetching if host_of(other) == host)
        busy: ProtocolError | None = None
        if own >= self._max_fetching_per_host:
            busy = ProtocolError(
                f"too many certificate URL fetches from this host ({own} running or waiting, "
                f"{self._max_fetching_per_host} allowed): try again later",
                AlertDescription.certificate_unobtainable,
            )
        elif len(self._fetching) >= self._max_fetching:
            busy = ProtocolError(
                f"too many certificate URL fetches ({len(self._fetching)} running or "
                "waiting): try again later",
                AlertDescription.certificate_unobtainable,
            )
        if busy is not None:
            self.loop.call_soon(self._supply, address, request, busy)
            return
        job = _Fetch()
        task = self.loop.create_task(self._fetch_chain(address, request, job))
        job.task = task
        self._fetching[address] = job
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _stop_fetch(self, address: Address) -> None:
        """The association of `address` has ended (closed, failed, timed out, evicted or
        replaced): its fetch is of no more use and must not hold a slot (RFC 6066 §5)."""
        job = self._fetching.pop(address, None)
        if job is not None:
            job.stop()

    def stop_fetches(self) -> None:
        """The server closes: stop every fetch."""
        for address in list(self._fetching):
            self._stop_fetch(address)

    async def _fetch_chain(
        self, address: Address, request: CertificateUrlsReceived, job: _Fetch
    ) -> None:
        """RFC 6066 §5 (CRT-7): fetch a client's certificates off the event loop (a bounded
        number at once), then let its handshake go on (only the association that asked)."""
        config = self.endpoint.config
        assert config.certificate_fetcher is not None, "URLs are accepted only with a fetcher"
        fetch = functools.partial(
            fetch_client_chain,
            request.urls_and_hashes,
            config.certificate_fetcher,
            config.certificate_url_size_limit,
            config.certificate_url_timeout,
            cancel=job.cancel,
        )
        result: tuple[bytes, ...] | ProtocolError
        try:
            async with self._fetches:
                job.running = True
                try:
                    result = await self.loop.run_in_executor(None, fetch)
                except ProtocolError as exc:
                    result = exc
                except Exception as exc:  # a fetcher of the application's that broke
                    # Every handshake sending a URL may make it raise: bounded, by kind.
                    line = self.failed_fetchers.failed(type(exc).__name__, self.loop.time())
                    if line is not None:
                        logger.warning("%s", line)
                    result = ProtocolError(
                        "certificate fetch failed", AlertDescription.internal_error
                    )
        finally:
            if self._fetching.get(address) is job:
                del self._fetching[address]
        if not job.cancel.is_set():
            self._supply(address, request, result)

    def _supply(
        self,
        address: Address,
        request: CertificateUrlsReceived,
        result: tuple[bytes, ...] | ProtocolError,
    ) -> None:
        self.endpoint.supply_certificate_chain(address, result, self.loop.time(), request=request)
        self.flush()

    def _on_closed(self, address: Address, event: ConnectionClosed) -> None:
        """Log the end of an association (one line naming peer and identity; of failed
        handshakes, `FAILED_HANDSHAKE_LINES` a `SUMMARY_INTERVAL`, the rest summed up) and end
        its session. Only the identity and the alert are logged, never key material (SEC-1)."""
        error = event.error
        who = _PeerLabel(address, event.peer)
        ended = self.sessions.pop(address, None)
        if ended is not None:
            self._ended(ended, error)
            if isinstance(error, IdleTimeout):
                logger.info("association closed: %s: %s", who, error)
            elif error is not None:
                self.stats.associations_failed += 1
                logger.info("association failed: %s: %s", who, error)
            else:
                logger.debug("association closed: %s", who)
        elif error is not None:
            self.stats.handshakes_failed += 1
            # Bounded (`FAILED_HANDSHAKE_LINES`): a peer without credentials can fail them at will.
            failure = f"{_PeerLabel(address, event.peer, True)}: {error}"
            self._handshake_failed(failure)
        else:  # closed by us before it completed: the server stops
            self.stats.handshakes_unfinished += 1
            logger.debug("handshake unfinished: %s", _PeerLabel(address, event.peer, True))

    def _handshake_failed(self, failure: str) -> None:
        """Log the line for a failed handshake ("PEER: ERROR"), if it is among the first
        `FAILED_HANDSHAKE_LINES` of its interval; else count it (a debug line, for -v), to be
        summed up at the interval's end (`_sum_up`)."""
        failures = self.failed_handshakes
        line = failures.failed(failure, self.loop.time())
        if line is not None:
            logger.info("%s", line)
            return
        logger.debug("handshake failed: %s (held back, counted in the next summary)", failure)
        if self._summary_timer is None:
            self._summary_timer = self.loop.call_at(failures.summary_due, self._sum_up)

    def _sum_up(self) -> None:
        """The line summing up the failed handshakes held back in the interval just ended; when
        a failure at its end began the next one first (`SummedFailures.sum_up`), the timer
        waits for that one's end if it holds some back already."""
        self._summary_timer = None
        failures = self.failed_handshakes
        line = failures.sum_up(self.loop.time())
        if line is not None:
            logger.info("%s", line)
        elif failures.held_back:
            self._summary_timer = self.loop.call_at(failures.summary_due, self._sum_up)

    def _ended(self, session: ServerSession, error: DtlsError | None) -> None:
        session._end(error)
        if isinstance(self.handler, DatagramHandler):
            self._call(session, self.handler.session_ended, session, error)

    def _call(self, session: ServerSession, method: Callable[..., None], *args: Any) -> None:
        """Run a `DatagramHandler` method; what it raises ends the peer's association. That
        includes CancelledError (a BaseException), which a plain method can only have raised
        itself, as nothing here is awaited: escaping, it would abandon the flush that called
        the method (the events after it, the timer's re-arming) for asyncio's error log.
        KeyboardInterrupt and SystemExit still stop the loop."""
        try:
            method(*args)
        except (Exception, asyncio.CancelledError):
            logger.exception("handler failed for peer %s", format_address(session.address))
            if self.sessions.get(session.address) is session:
                self.close_peer(session.address)

    async def _run(self, handler: Handler, session: ServerSession) -> None:
        try:
            await handler(session)
        except Exception:
            logger.exception("handler failed for peer %s", format_address(session.address))
        finally:
            if self.sessions.get(session.address) is session:
                self.close_peer(session.address)

    def _on_timer(self) -> None:
        self._timer = None
        self.endpoint.handle_timer(self.loop.time())
        self.flush()


class _Fetch:
    """A client's certificate URL fetch (RFC 6066 §5) and how to stop it."""

    __slots__ = ("cancel", "running", "task")

    def __init__(self) -> None:
        #: Set when the association has ended (`fetch_client_chain` gives up early).
        self.cancel = threading.Event()
        #: Holds one of the `MAX_CONCURRENT_FETCHES` slots.
        self.running = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """A waiting fetch leaves the line; a running one stops early (the default fetcher
        shuts its connections) and frees its slot when its thread returns."""
        self.cancel.set()
        if not self.running and self.task is not None:
            self.task.cancel()


def enlarge_receive_buffer(sock: Any) -> None:
    """Give a server socket `SERVER_RECEIVE_BUFFER` bytes of receive buffer (the kernel caps it
    at net.core.rmem_max), so that a burst of ClientHellos waits instead of being dropped."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SERVER_RECEIVE_BUFFER)


def _notes(done: HandshakeComplete) -> str:
    """What the handshake log line adds: the server_name asked for, resumption, MFL."""
    notes = [f"server_name {done.server_name}"] if done.server_name else []
    if done.resumed:
        notes.append("resumed")
    if done.max_fragment_length is not None:
        notes.append(f"max_fragment_length {done.max_fragment_length}")
    return f" ({', '.join(notes)})" if notes else ""
def _ems_note(event: HandshakeComplete) -> str:
    """What a session without the extended master secret (allowed by
    `require_extended_master_secret=False`) means: RFC 7627 §5.3, it is never resumed (RES-3)."""
    if event.extended_master_secret:
        return ""
    return " without the extended master secret (RFC 7627): this session will never be resumed"


class _PeerLabel:
    """"peer ADDRESS IDENTITY" for a log line, formatted only if the line is emitted. Of a
    handshake that failed (`claimed`), a key or certificate is "claimed": the peer sent it but
    may not have proved it holds its private key (CertificateVerify, RFC 5246 §7.4.8). A PSK
    identity names itself as what the client said (RFC 4279 §2)."""

    __slots__ = ("address", "claimed", "peer")

    def __init__(self, address: Address, peer: object, claimed: bool = False) -> None:
        self.address = address
        self.peer = peer
        self.claimed = claimed

    def __str__(self) -> str:
        peer = self.peer
        address = format_address(self.address)
        if self.claimed and isinstance(peer, CertificateIdentity | RawPublicKeyIdentity):
            return f"peer {address} claimed {peer}"
        return f"peer {address} {peer or 'before any identity'}"


class DtlsServer:
    """A running server (see `serve`); `close()` stops it. It belongs to the event loop that
    runs it: `close()` from another loop raises `ForeignEventLoop`; still open when
    `asyncio.run` ends that loop, it is closed then (close_notify to its peers, socket
    released), with a RuntimeWarning."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _ServerProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        #: `close()` was called (the loop's end then only finishes what it left undone).
        self._closed = False
        #: The address served, for `__repr__`, named while the socket is open.
        self._name = format_address(self.sockname)

    def __repr__(self) -> str:
        """`<DtlsServer on ADDRESS serving, N sessions>` (established peers), or "closed"."""
        if self._closed or self._protocol.lost.done():
            return f"<DtlsServer on {self._name} closed>"
        count = len(self._protocol.sessions)
        return f"<DtlsServer on {self._name} serving, {count} session{'s' * (count != 1)}>"

    async def _watch_loop_end(self) -> None:
        """Have the loop close this server, if still open, as `asyncio.run` ends it. The watch
        is kept by the protocol, which the loop keeps while the socket is open: a server the
        application holds no reference to goes on serving until then."""
        watch = _until_loop_end(self._loop_ending)
        self._protocol.loop_end = watch
        await anext(watch)

    async def _loop_ending(self) -> None:
        """The loop is ending (or `close()` stops the watch): a server still open then
        (`asyncio.run(serve(...))` returns one with its loop about to close, or one never
        closed) is closed, with a RuntimeWarning, rather than holding its port for good. The
        warning comes once it is closed (a warning made an error, `-W error`, raises after
        the close). In a forked child's copy of the loop it only marks the copy closed: the
        child closes nothing of the parent's server (see `close`), so there is nothing to say."""
        self._protocol.loop_end = None
        if _process.forked_from(self._protocol.pid):
            self._closed = True
            return
        unclosed = not self._closed
        where = format_address(self.sockname) if unclosed else ""  # named while it is open
        if not self._protocol.lost.done():  # also a close() cut short (a timeout)
            await self.close()
        if unclosed:
            warnings.warn(
                f"iotdtls: the server on {where} was still open when its event loop ended"
                " (asyncio.run(serve(...))?): closed it; serve and close it inside one"
                " asyncio.run",
                RuntimeWarning,
                stacklevel=_application_stacklevel(),
            )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        sockname = self.sockname
        return sockname[0], sockname[1]

    @property
    def sockname(self) -> tuple[Any, ...]:
        """The socket's whole name: for IPv6 (host, port, flowinfo, scope_id), whose scope id
        names the interface of a link-local address (RFC 4007 §11)."""
        return tuple(self._transport.get_extra_info("sockname"))

    @property
    def endpoint(self) -> ServerEndpoint:
        """The sans-I/O endpoint this server drives (its associations, gate counters)."""
        return self._protocol.endpoint

    @property
    def stats(self) -> ServerStats:
        """A snapshot of this server's counters (handshakes, datagrams, idle timeouts, gate
        outcomes, records its associations discarded, RFC 6347 §4.1.2.7)."""
        snapshot = ServerStats() + self._protocol.stats
        snapshot.handshakes_in_progress = self.endpoint.handshakes_in_progress
        snapshot.idle_expired = self.endpoint.idle_expired
        snapshot.session_store_errors = self.endpoint.session_store_errors
        store = self.endpoint.config.client_trust_store
        if store is not None:
            snapshot.validated_chain_hits = store.validated_chain_hits
            snapshot.validated_chain_misses = store.validated_chain_misses
        snapshot.gate.update({o.name: n for o, n in self.endpoint.gate.items()})
        snapshot.discards.update({r.name: n for r, n in self.endpoint.discards().items()})
        return snapshot

    async def close(self) -> None:
        """Send close_notify to every peer, close the socket (the port is free first), cancel
        the handlers and wait for them to end (`ForeignEventLoop` outside the event loop that
        runs the server: only that one can). It has no bound of its own: a handler's cleanup
        (`finally: await ...`) holds it that long, one that swallows CancelledError for ever;
        `asyncio.wait_for(server.close(), T)` bounds it (the port is free by then, and such a
        handler is left to end on its own). Once closed (by `close()`, or as its loop ended),
        a call does nothing, from whatever loop. Once its loop is closed without having
        closed it (`loop.close()` by hand), it frees the port, from whatever loop or none, and
        ends the sessions, with no close_notify (its handlers' tasks went with the loop). In a
        process forked from the one that made the server, it sends nothing and touches nothing
        the parent shares (the loop's registrations): the child's copy of the socket is left
        to its exit."""
        if self._closed and self._protocol.lost.done():
            return
        if _process.forked_from(self._protocol.pid):
            self._closed = True
            return
        if self._protocol.loop.is_closed() and self._protocol.sock is not None:
            self._closed = True  # its loop closed without closing it: the port, at least
            self._protocol.release_after_loop()
            return
        _require_own_loop(self._protocol.loop, "server")
        self._closed = True
        for address in list(self._protocol.endpoint.connections):
            self._protocol.close_peer(address)
        self._protocol.stop_fetches()
        tasks = list(self._protocol.tasks)
        for task in tasks:
            task.cancel()
        # The port first: their peers are closed, so the handlers have nothing left to send,
        # and a close() cut short (wait_for, a handler slow to end) leaves it free.
        self._transport.close()
        await self._protocol.lost
        if tasks:  # `wait`, not `gather`: cancelling close() does not wait for them
            await asyncio.wait(tasks)
        watch = self._protocol.loop_end
        if watch is not None:
            self._protocol.loop_end = None
            await watch.aclose()

    async def __aenter__(self) -> DtlsServer:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Serve(Opening[DtlsServer]):
    """What `serve` returns (see `iotdtls._opening.Opening`)."""

    #: How a task running it names it (`Task.__repr__`).
    __name__ = "serve"

    def __init__(
        self,
        handler: Handler | DatagramHandler,
        host: str | None,
        port: int,
        config: ServerConfig,
        sock: socket.socket | None,
        session_store: SessionStore | None,
    ) -> None:
        super().__init__()
        self._handler = handler
        self._args = (host, port, config)
        self._sock = sock
        self._store = session_store

    async def _open(self) -> DtlsServer:
        host, port, config = self._args
        sock = self._sock
        loop = asyncio.get_running_loop()
        protocol = _ServerProtocol(self._handler, config, self._store)
        if sock is not None and is_bound(sock):  # served where it is (host and port agree)
            protocol.sock = sock
            transport = await open_server_transport(loop, protocol, sock)
        else:
            assert host is not None, "None only with a bound sock (check_server_arguments)"
            transport = await self._bind(loop, protocol, host, port, sock)
        server = DtlsServer(transport, protocol)
        await server._watch_loop_end()
        return server

    @staticmethod
    async def _bind(
        loop: asyncio.AbstractEventLoop,
        protocol: _ServerProtocol,
        host: str,
        port: int,
        sock: socket.socket | None,
    ) -> asyncio.DatagramTransport:
        """A transport on a socket bound to `host:port`: a new one, or the caller's `sock`."""
        if sock is None:
            with listening_on(host, port):
                sock = await bind_udp(loop, host, port)
            enlarge_receive_buffer(sock)
            protocol.sock = sock
            try:
                return await open_server_transport(loop, protocol, sock)
            except BaseException:
                sock.close()  # ours: a caller's socket stays theirs when serving it fails
                raise
        with listening_on(host, port):
            infos = await resolve_udp(loop, host, port, socket.AI_PASSIVE)
        attach_socket(sock, infos, host, port, bind=True)
        protocol.sock = sock
        return await open_server_transport(loop, protocol, sock)


def serve(
    handler: Handler | DatagramHandler,
    host: str | None,
    port: int,
    config: ServerConfig,
    *,
    sock: socket.socket | None = None,
    session_store: SessionStore | None = None,
) -> _Serve:
    """Bind `host:port` and run `handler(session)` for every peer that completes a handshake
    (a task per peer), or call the methods of a `DatagramHandler` (no task: for many peers).
    Like `connect`, what it returns is both a coroutine returning the `DtlsServer` (`server =
    await serve(...)`) and an async context manager that closes the server at its end
    (`async with serve(...) as server:`).

    When a handler (a coroutine) returns, its association is closed with close_notify (RFC
    5246 §7.2.1), unless it has ended already: a handler that answers once and returns ends
    it, so one that serves a peer for long loops (`async for datagram in session`). When it
    raises, the traceback is logged (ERROR, "handler failed for peer ADDRESS", logger
    `iotdtls.aio`) and the association is closed the same way: the peer sees a close_notify,
    not an alert, and the server goes on serving the others. A `DatagramHandler` method that
    raises does the same.

    `sock` is an optional UDP socket to serve on instead of a new one; it is bound to
    `host:port` if it is not bound yet, and closed with the server. One bound already is served
    where it is: host may then be None, and a host or port that disagrees with its address is a
    `ConfigError` naming both (an IP address equal to the bound one and port 0 or the bound one
    agree; a name is not resolved to compare, so it is refused). `session_store` replaces the
    in-memory session cache (`iotdtls.sessions.SessionStore`, RES-1). Port 0 binds any free port
    (`DtlsServer.address` says which); host "0.0.0.0" every IPv4 address, "::" every address,
    IPv4 too (IPV6_V6ONLY turned off, whatever the host's default; not on a `sock` given); "" is
    refused, and so is None without a bound `sock` (a `TypeError`: an unset variable must not
    expose the server on every interface). A wrong argument raises `TypeError` (or `ConfigError`
    for the port, an empty host, a closed `sock`, one with IP_RECVERR set or one bound
    elsewhere) here, before any socket is made; an address that cannot be bound, the `OSError`
    naming it, same type and errno ("cannot listen on 127.0.0.1:5684: Address already in use"; a
    host that does not resolve, a `socket.gaierror`)."""
    check_handler(handler)
    port = check_server_arguments(host, port, config, sock=sock, session_store=session_store)
    return _Serve(handler, host, port, config, sock, session_store)
