"""A blocking-socket DTLS client for scripts (wraps the sans-I/O `DtlsConnection`).

with iotdtls.sync.connect("127.0.0.1", 5684, config) as conn:
    conn.send(b"hello")
    print(conn.recv(timeout=5))
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import select
import socket
import threading
import time
import warnings
from collections import deque
from types import TracebackType

from iotdtls import _process
from iotdtls._addresses import format_address, reaching, resolve, socket_to, sockets_in_turn
from iotdtls._arguments import attach_socket, byte_size, check_client_arguments, check_timeout
from iotdtls._unreachable import LOST, RefusedHandshake
from iotdtls.chaincache import ChainCache, for_server, remember_chain
from iotdtls.config import ClientConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import (
    AssociationEnded,
    DtlsError,
    LocalProtocolError,
    PathMtuExceeded,
    PortUnreachable,
    after_attempts,
    carry_resuming,
)
from iotdtls.events import DataReceived, Event, HeartbeatAnswered
from iotdtls.identity import PeerIdentity
from iotdtls.sessions import SessionState

__all__ = ["DtlsClient", "connect"]

logger = logging.getLogger(__name__)

#: Largest datagram we read from the socket.
RECEIVE_SIZE = 65535
#: Datagrams `recv` still reads after its timeout has passed (those already waiting, which
#: may be handshake retransmissions or heartbeats before the data): a bound for a peer that
#: never stops sending.
MAX_LATE_READS = 64
#: Longest single wait for the socket (seconds): a longer timeout, infinity included, is waited
#: in steps of it (the socket layer refuses waits beyond what its clock can hold).
MAX_WAIT = 86400.0

#: How long `close()` waits for a thread it woke to leave its reading (seconds).
CLOSE_WAIT = 5.0
#: Read without waiting: the wait is `_wait`'s, on the socket and the wake-up together (0
#: where the platform has no such flag: there a read follows only a wait that saw a datagram).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

#: The sockets of each client not yet closed, by the client's id: reachable from here, they
#: stay out of a garbage cycle that holds the client, so the collector cannot finalize them
#: before the client's own finalizer closes them (PEP 442 runs a cycle's finalizers in no
#: particular order: the sockets' came first, with their raw ResourceWarnings and no
#: close_notify). `close()` (the finalizer's too) removes the entry.
_UNCLOSED_SOCKETS: dict[int, tuple[socket.socket, ...]] = {}


class DtlsClient:
    """A connected UDP socket and one DTLS association, driven synchronously.

    Threads: one thread may read (`recv`, `heartbeat`, `handshake`) while another sends
    (`send`), and any thread may `close()`: a `recv` (or `heartbeat`) waiting meanwhile is
    woken and returns None (False) at once, as after a clean close. Several threads may wait
    in `recv` and `heartbeat` at once (a keep-alive thread's heartbeats while another thread
    waits for data): one of them reads the socket and the others are handed what it reads
    (which `recv` gets a datagram is anyone's guess); `handshake()` needs the socket to
    itself and raises `LocalProtocolError` while another thread reads. `close()` in a
    signal handler (SIGTERM's, say) works the same in the thread it interrupted: it returns
    at once, the interrupted `recv` returns None, and the sockets are closed as that call
    leaves; a `send` it interrupted raises `AssociationEnded` unless its datagram had gone
    out.

    The protocol runs only inside these calls (no thread of its own): each reads what has come
    and handles the timers. A client that only sends (a sensor) answers its peer at each
    `send`; between calls it answers nothing, and a server with keep-alive waits its
    `handshake_timeout` for a heartbeat's answer, then ends the association without a word:
    calls further apart than that need a thread waiting in `recv`.

    A network that is down for a while (no route: EHOSTUNREACH or ENETUNREACH from the
    kernel; ENOBUFS; a firewall's EPERM) loses datagrams, as `aio` does: each one the OS
    refuses to send is logged at debug and lost, the handshake and heartbeats retransmit
    (RFC 6347 §4.2.4), so no call raises `OSError` for it (see `_flush`); one that outlasts
    `config.handshake_timeout` ends the handshake with `HandshakeTimeout`.

    Forking: a client belongs to the process that made it. A forked child holds copies of
    its sockets and keys but must never send under them: its records would carry the
    sequence numbers the parent uses next, one nonce twice under one AES-CCM or AES-GCM key
    (RFC 5116 §3, RFC 6655 §3), and its close_notify would end the parent's association. In
    any other process, `close()` and the collector only release that process's copies of the
    sockets (nothing sent, no warning, a socket given with `sock=` left open by the
    collector as always), and `send`, `recv`, `heartbeat` and `handshake` raise
    `LocalProtocolError` saying whose the client is."""

    def __init__(
        self,
        host: str,
        port: int,
        config: ClientConfig,
        *,
        sock: socket.socket | None = None,
        session: SessionState | None = None,
    ) -> None:
        """Prepare the socket (`sock` if given, e.g. one made in another network namespace,
        connected to `host:port` unless it is connected already, as in `aio.connect`);
        `handshake()` starts the association, offering `session` for resumption (RES-1)."""
        port = check_client_arguments(
            host, port, config, sock=sock, chain_cache=None, session=session
        )
        self._config = config
        self._session = session  # offered again by a handshake started afresh
        self.connection = DtlsConnection(config, session=session)
        if sock is None:
            with reaching(host, port):
                infos = resolve(host, port)
            sock = self._sock = socket_to(infos[0], host, port)
            mine = True
        else:
            self._sock = sock
            mine = False
            if not _connected(sock):
                _connect_to(sock, host, port)
        #: The UDP socket is ours (made here or by `connect`), not the caller's `sock`: only
        #: then does a client dropped without `close()` close it (`__del__`).
        self._owns_socket = mine
        try:
            # `close()` from another thread writes to it to wake a thread waiting for the
            # socket: the socket is closed only once no thread waits for it any more.
            self._wake_reader, self._wake_writer = socket.socketpair()
        except BaseException:
            if mine:
                sock.close()  # ours; a caller's socket stays theirs when this fails
            raise
        self._received: deque[bytes] = deque()
        self._received_bytes = 0  # of `_received`; both changed only under `_mutex`
        self._dropped_datagrams = 0
        self._answers = 0  # heartbeat answers so far (`heartbeat` waits for the next one)
        #: ICMP port-unreachable reports of the handshake (`PortUnreachable`).
        self._refused = RefusedHandshake()
        #: The size of a datagram the kernel refused as too large (EMSGSIZE) since `send` or
        #: the handshake cleared it; 0 when none was.
        self._oversized = 0
        #: One buffer every datagram is read into, then copied out at its own size (as
        #: `DrainingTransport` reads): `recv(RECEIVE_SIZE)` allocated 64 KiB per datagram and
        #: shrank it, leaving the heap holes no later read could reuse.
        self._buffer = memoryview(bytearray(RECEIVE_SIZE))
        self._sock.setblocking(True)  # `_wait` waits; reads never do (`_DONTWAIT`)
        self._wake_reader.setblocking(False)
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            for waited in (self._sock, self._wake_reader):
                self._poll.register(waited, select.POLLIN)
        #: Held while the core or the socket is used (`with self._mutex`: a C-level lock, so
        #: that a KeyboardInterrupt cannot land between its acquiring and the `with` block, as
        #: it could inside `Condition.__enter__`'s Python frame and leave it held for ever).
        self._mutex = threading.RLock()
        #: Waits under `_mutex` (`close()` for `_reader`, followers for a `_pump`).
        self._lock = threading.Condition(self._mutex)
        #: The call reading the socket (`recv`, `heartbeat`, `handshake`): one at a time.
        self._reader: _Reading | None = None
        #: How many times `_pump` has taken what came: a `_follow`ing call waits only while it
        #: is what the call saw before it looked at what had come (no wake-up lost between).
        self._pumps = 0
        #: The sockets `close()`, run in a signal handler of the reading thread, left to the
        #: call it interrupted to close as it leaves (it may be waiting on them).
        self._left_to_reader: list[socket.socket] = []
        self._closing = False
        self._handshake_running = False  # a thread is in `handshake()`
        #: The process that made the client: the only one that may send under its keys.
        self._pid = _process.pid
        _UNCLOSED_SOCKETS[id(self)] = (self._sock, self._wake_reader, self._wake_writer)
        #: Both ends' addresses for `__repr__`, named while the socket is open.
        self._ends = (self._server_name(), _local_name(self._sock))

    def __repr__(self) -> str:
        """`<DtlsClient to SERVER from LOCAL STATE>`: "not started" (before `handshake()`),
        "handshaking", "open", "ended" (by the peer or an error) or "closed" (`close()`)."""
        server, local = self._ends
        state = "closed" if self._closing else _STATE_NAMES[self.connection.state]
        return f"<DtlsClient to {server} from {local} {state}>"

    def __del__(self) -> None:
        """Collected without `close()` (the application dropped it): closed as `close()` does,
        close_notify included, with one ResourceWarning if the association was still open or
        never started (as `aio.ClientConnection` warns of a dropped connection), instead of
        the three sockets' own, given once all is closed (a warning made an error raises
        after the close). One the peer or an error had ended is released quietly. A
        socket the caller gave (`sock=`) is left open: close_notify goes out on it, but it is
        theirs, maybe already under another client (a failed client, kept by the cycle
        connection -> error -> traceback -> client, is collected at any later collection).
        In a reference cycle too: its sockets, kept in `_UNCLOSED_SOCKETS` until this ran,
        are not the collector's to finalize first."""
        if getattr(self, "_closing", True):  # closed, or `__init__` did not get that far
            return
        if self._forked():
            self._release_forked_copies(keep_callers_socket=True)
            return
        unclosed = None if self._ended() else self._server_name()  # named while it is open
        with contextlib.suppress(OSError):  # the sockets are closed whatever sending raised
            self._close(keep_callers_socket=True)
        if unclosed is not None:  # last: a warning made an error (`-W error`) raises here
            warnings.warn(
                f"iotdtls: unclosed client to {unclosed}",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def _forked(self) -> bool:
        """Running in a process forked from the one that made the client (see `DtlsClient`)."""
        return _process.forked_from(self._pid)

    def _release_forked_copies(self, *, keep_callers_socket: bool) -> None:
        """Close, in a forked process, its copies of the sockets and nothing more: no
        close_notify (under the parent's keys), no byte to the wake-up pair (it would wake the
        parent's reader), no lock (a thread of the parent may have held it as it forked)."""
        self._closing = True
        _UNCLOSED_SOCKETS.pop(id(self), None)
        for sock in self._sockets_to_close(keep_callers_socket):
            sock.close()

    def _raise_if_forked(self) -> None:
        """Refuse to use the client in a process forked from the one that made it."""
        _process.require_owner(self._pid)

    def _server_name(self) -> str:
        try:
            return format_address(self._sock.getpeername())
        except OSError:  # a caller's socket, closed under us
            return "an unknown address"

    def __enter__(self) -> DtlsClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def handshake(self) -> None:
        """Run the handshake; raises the `DtlsError` that ended it (alert or timeout). With
        `config.retry`, failed handshakes are repeated after a back-off first (RPK-4). A
        flight the OS refuses to send (no route for a while) is lost and retransmitted: the
        handshake completes once sends work again, or times out (see `DtlsClient`).
        `close()` from another thread meanwhile (during the back-off too) makes it raise
        `LocalProtocolError` at once. A client handshakes once: on an established one it
        returns at once (as `sync.connect` did it already); after `close()`, or once the
        association has ended, it raises `LocalProtocolError` saying which (a new handshake
        needs a new `DtlsClient`). Called from a second thread while one runs, it raises
        `LocalProtocolError` saying so (concurrent handshakes are not supported). Called again
        after an interrupt (KeyboardInterrupt) cut one short, it starts the handshake afresh."""
        if self._closing:
            raise LocalProtocolError("the client is closed: a new handshake needs a new DtlsClient")
        self._raise_if_forked()
        if self.connection.state is ConnectionState.ESTABLISHED:
            return
        with self._mutex:  # before `_ended`: between retries, the failed attempt has ended
            if self._handshake_running:
                raise LocalProtocolError(
                    "a handshake is already running in another thread (a DtlsClient is not"
                    " for concurrent handshakes)"
                )
            if self._ended():
                raise LocalProtocolError(
                    "the association has ended: a new handshake needs a new DtlsClient"
                )
            self._handshake_running = True
        reading = _Reading()
        try:
            self._begin_reading(reading)
            self._handshake_with_retries()
        finally:
            if self._reader is reading:  # first: no call before it for an interrupt to hit
                self._reader = None
            self._handshake_running = False
            self._end_reading()

    def _handshake_with_retries(self) -> None:
        """`handshake()`'s attempts: repeated after a back-off as `config.retry` says."""
        policy = self._config.retry
        failures = 0
        resumed_before = False  # an earlier attempt resumed the session (DtlsError.resuming)
        while True:
            try:
                self._handshake_once()
                return
            except DtlsError as exc:
                failures += 1
                resumed_before = carry_resuming(exc, resumed_before)
                if policy is None or failures >= policy.attempts:
                    error = after_attempts(exc, failures)
                    if error is exc:
                        raise
                    raise error from None
            with self._mutex:  # the back-off, which `close()` ends
                if self._lock.wait_for(lambda: self._closing, policy.delay(failures)):
                    raise _closed_during_handshake()
                self.connection = DtlsConnection(self._config)  # a retry is a full handshake

    def _handshake_once(self) -> None:
        """One handshake. A flight the network path refuses as too large (EMSGSIZE: its MTU is
        below `config.mtu`) could never get through: `PathMtuExceeded` (RFC 6347 §4.1.1).
        One that an interrupt (KeyboardInterrupt) cut short left the core part way through,
        anywhere: it starts afresh on a new core (a new ClientHello, which replaces the half
        made association at the server, RFC 6347 §4.2.8)."""
        self._refused.refusals = 0
        with self._mutex:
            if self._closing:
                raise _closed_during_handshake()
            self._oversized = 0
            if self.connection.state is not ConnectionState.IDLE:  # an interrupted handshake
                self.connection = DtlsConnection(self._config, session=self._session)
            self.connection.connect(time.monotonic())
            self._flush()
        while True:
            if self._closing:  # the core ended with close_notify: no handshake to speak of
                raise _closed_during_handshake()
            if self._oversized:
                mtu = self.connection.config.mtu
                raise PathMtuExceeded(self._oversized, 0, mtu, handshake=True)
            if self.connection.state is not ConnectionState.HANDSHAKING:
                break
            self._pump(None)
        self._raise_if_failed()  # the core names why a handshake ended (close_notify too)

    @property
    def session(self) -> SessionState | None:
        """The session to save for a later resumption (see `aio.ClientConnection.session`)."""
        return self.connection.session

    @property
    def resumed(self) -> bool:
        """True when this association resumed the session given to `connect` (RFC 5246 §7.3)."""
        return self.connection.resumed

    @property
    def peer(self) -> PeerIdentity | None:
        """Who the handshake authenticated (see `aio.ClientConnection.peer`) once `handshake()`
        returned; None before the handshake got that far."""
        return self.connection.peer

    @property
    def max_send_size(self) -> int:
        """The largest datagram `send()` accepts: what one record in one datagram of
        `config.mtu` bytes carries (RFC 6347 §4.1.1; see `DtlsConnection.max_send_size`)."""
        return self.connection.max_send_size

    @property
    def ended(self) -> bool:
        """True once the association has ended: the peer's close_notify, a fatal alert or
        another error (which `recv` raises), or `close()` (as `aio.ServerSession.ended`). From
        then on `recv` returns None (or raises) at once: a loop that takes None for "nothing
        yet" checks it, `while not client.ended: data = client.recv(5)`, or spins."""
        return self._closing or self._ended()

    @property
    def dropped_datagrams(self) -> int:
        """Received datagrams dropped because `config.receive_queue` datagrams, or
        `config.receive_queue_bytes` bytes, were waiting unread (as
        `aio.ClientConnection.dropped_datagrams`)."""
        return self._dropped_datagrams

    @property
    def dropped(self) -> int:
        """The same counter as `dropped_datagrams`, by its earlier name (kept working)."""
        return self._dropped_datagrams

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram of application data (see `DtlsConnection.send`). Once the
        association has ended, raises `AssociationEnded` saying how (a `DtlsError`). Raises
        `PathMtuExceeded` (a `DatagramTooLarge`) when the kernel refuses the datagram as larger
        than the path allows (EMSGSIZE: `config.mtu` is above the path MTU; RFC 6347
        §4.1.1). In a process forked from the one that made the client, raises
        `LocalProtocolError` (see `DtlsClient`). `close()` in a signal handler that
        interrupted it (SIGTERM's, say: the same thread, which the lock does not keep out)
        makes it raise `AssociationEnded` too when its datagram had not gone out yet. A
        datagram the OS refuses to send for another reason (no route: EHOSTUNREACH,
        ENETUNREACH; ENOBUFS; a firewall's EPERM) is lost as the network loses one, logged
        at debug and not raised, as in `aio` (application data is not resent). While no
        other call reads the socket, it first takes what has come, without waiting
        (`_take_waiting`): a client that only sends still answers its peer, and the peer's
        close_notify, or an error that ended the association, makes it raise
        `AssociationEnded` instead of sending into an association that is gone."""
        self._raise_if_forked()  # before the lock, which a thread of the parent may hold
        with self._mutex:
            self._raise_if_idle()
            try:
                if self._reader is None and not self._closing:
                    self._take_waiting()  # else the reading call answers the peer
                self._oversized = 0  # this datagram's, not an answer's `_take_waiting` sent
                self.connection.send(data)
                self._flush()
            except OSError:
                if self._closing:  # closed under us: the socket is gone (EBADF), not sent
                    raise AssociationEnded(None) from None
                raise
            if self._oversized:
                overhead = self.connection.record_overhead
                raise PathMtuExceeded(byte_size(data), overhead, self.connection.config.mtu)

    def heartbeat(self, timeout: float) -> bool:
        """Send a heartbeat request (RFC 6520, EXT-5) unless one is in flight and wait up to
        `timeout` seconds for the answer; True when it came. Datagrams that arrive meanwhile
        are kept for `recv`; a `recv` waiting in another thread meanwhile reads on and hands
        the answer over. Raises the error that ended the association, or
        `LocalProtocolError` once it has ended cleanly (as `aio.ClientConnection.heartbeat`).
        A `timeout` that is NaN or negative is a `ValueError`."""
        seconds = check_timeout(timeout)
        self._raise_if_forked()  # an answer sent meanwhile would reuse the parent's numbers
        self._raise_if_failed()
        if self._ended():
            raise LocalProtocolError("the association has ended")
        reading = _Reading()
        try:
            with self._mutex:
                answers = self._answers
                if not self.connection.heartbeat_in_flight:
                    self.connection.send_heartbeat(time.monotonic())
                    self._flush()
            deadline = time.monotonic() + (seconds or 0.0)
            while True:
                seen = self._pumps
                if self._answers != answers or time.monotonic() >= deadline:
                    break
                if self._ended():
                    self._raise_if_failed()
                    return False
                if self._closing:
                    return False
                self._step(reading, deadline, seen)
            return self._answers != answers
        finally:
            if self._reader is reading:  # first: no call before it for an interrupt to hit
                self._reader = None
            self._end_reading()

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next application datagram, or None after `timeout` seconds, or at once once the
        association has ended cleanly (the peer's close_notify, `close()`; an error that ended
        it is raised): `ended` tells the two Nones apart. What has already arrived is read
        even once the timeout has passed, so `timeout=0` polls: it returns a datagram that is
        waiting and None at once when there is none.
        Before `handshake()`, raises `LocalProtocolError` (as `send` and `heartbeat`). A
        `timeout` that is NaN or negative is a `ValueError` (infinity waits as None does)."""
        seconds = check_timeout(timeout, optional=True)
        self._raise_if_forked()  # reading answers heartbeats and takes the parent's datagrams
        self._raise_if_idle()
        deadline = None if seconds is None else time.monotonic() + seconds
        late_reads = 0
        reading = _Reading()
        try:
            while True:
                seen = self._pumps
                if self._received:
                    with self._mutex:
                        if self._received:  # else a recv of another thread took it
                            data = self._received.popleft()
                            self._received_bytes -= len(data)
                            return data
                if self._ended():
                    self._raise_if_failed()
                    return None
                if self._closing:
                    return None
                read = self._step(reading, deadline, seen)
                if deadline is not None and time.monotonic() >= deadline:
                    if not read or late_reads >= MAX_LATE_READS:
                        return None
                    late_reads += 1
        finally:
            if self._reader is reading:  # first: no call before it for an interrupt to hit
                self._reader = None
            self._end_reading()

    def close(self) -> None:
        """Send close_notify (if still open: best effort, one the OS refuses to send, with no
        route to the server, say, is lost) and close the socket. From another thread, it
        wakes a `recv` waiting there (which returns None), and closes the socket once that
        thread has left it; in a signal handler that interrupted a `recv` (`heartbeat`,
        `handshake`), it returns at once and that call closes the sockets as it leaves. A
        client dropped without it is closed so when collected, with a ResourceWarning
        ("iotdtls: unclosed client to HOST:PORT") unless its association had already ended,
        as `aio` does for a dropped connection; a socket given with `sock=` is closed here,
        but never by the collector (see `DtlsClient`). In a process forked from the one that
        made the client, it sends nothing: it closes that process's copies of the sockets
        only (see `DtlsClient`). A caller's `sock=` the caller closed already is no error
        here (nothing is sent): the client is closed all the same."""
        if not self._closing and self._forked():
            self._release_forked_copies(keep_callers_socket=False)
            return
        self._close(keep_callers_socket=False)

    def _close(self, *, keep_callers_socket: bool) -> None:
        """`close()`; with `keep_callers_socket`, a socket the caller gave stays open."""
        with self._mutex:
            if self._closing:
                return
            self._closing = True
            self._lock.notify_all()  # a handshake's back-off ends (`handshake`)
            try:
                if not self._ended():
                    self.connection.close()
                    self._flush()
            except OSError as exc:  # best effort: close_notify cannot go on a closed socket
                if not _closed_under_us(self._sock, exc):
                    raise
            finally:  # the sockets are closed whatever sending close_notify raised
                with contextlib.suppress(OSError):
                    self._wake_writer.send(b"\0")
                _UNCLOSED_SOCKETS.pop(id(self), None)
                reader = self._reader
                if reader is not None and reader.thread == threading.get_ident():
                    # In a signal handler that interrupted this thread's reading, which
                    # waiting for would wait for ourselves: the reader closes the sockets.
                    self._left_to_reader = self._sockets_to_close(keep_callers_socket)
                else:
                    self._lock.wait_for(lambda: self._reader is None, CLOSE_WAIT)
                    for sock in self._sockets_to_close(keep_callers_socket):
                        sock.close()

    def _sockets_to_close(self, keep_callers_socket: bool) -> list[socket.socket]:
        """The wake-up pair, and the UDP socket unless it is the caller's to keep."""
        sockets = [self._wake_reader, self._wake_writer]
        if self._owns_socket or not keep_callers_socket:
            sockets.append(self._sock)
        return sockets

    # -- plumbing -----------------------------------------------------------------------------
    def _begin_reading(self, reading: _Reading) -> None:
        """Make `reading` the one call reading the socket, or refuse it while another is (the
        socket has one reader: `poll` refuses a second one). A call that was given this
        turn gives it back in a `finally:`, first thing, with no call before it (an
        interrupt lands at calls): `if self._reader is reading: self._reader = None`, then
        `_end_reading()`."""
        with self._mutex:
            if self._reader is not None:
                raise LocalProtocolError(
                    "recv() or heartbeat() is reading the socket: handshake() needs it to"
                    " itself"
                )
            self._reader = reading

    def _step(self, reading: _Reading, deadline: float | None, seen: int) -> bool:
        """One step of a waiting `recv` or `heartbeat`, which saw `_pumps` at `seen` before it
        looked at what had come: `_pump` when it is its turn to read the socket (True when
        it read a datagram), else `_follow` the call that reads."""
        if self._take_turn(reading):
            return self._pump(deadline)
        return self._follow(deadline, seen)

    def _take_turn(self, reading: _Reading) -> bool:
        """True when `reading` reads the socket now: its turn, or free to take (see
        `_begin_reading`); False while another call has it (then `_follow`)."""
        with self._mutex:
            if self._reader is None:
                self._reader = reading
            return self._reader is reading

    def _follow(self, deadline: float | None, seen: int) -> bool:
        """While another call reads the socket: wait for what it reads (each `_pump` wakes the
        followers), for it to leave, or until `deadline` or the retransmission timer, which
        is handled here (the reader may have begun its wait before it was set, say by this
        heartbeat's request). No wait when a `_pump` has run since the caller saw `seen`: its
        wake-up came before this wait began. False: it read nothing itself."""
        with self._mutex:
            if self._reader is None or self._closing or self._pumps != seen:
                return False
            now = time.monotonic()
            timer = self.connection.get_timer()
            waits = [t - now for t in (timer, deadline) if t is not None]
            self._lock.wait(min(max(0.0, min(waits)), MAX_WAIT) if waits else None)
            if timer is not None and not self._closing and time.monotonic() >= timer:
                self.connection.handle_timer(time.monotonic())
                self._flush()
            return False

    def _end_reading(self) -> None:
        """A reading call has left: `close()` waiting for it goes on; the sockets `close()`
        left to it (run in a signal handler that interrupted it) are closed."""
        with self._mutex:
            self._lock.notify_all()
            if self._reader is not None:  # a refused second reader: the first reads on
                return
            left, self._left_to_reader = self._left_to_reader, []
        for sock in left:
            sock.close()

    def _pump(self, deadline: float | None) -> bool:
        """Read one datagram, waiting until the retransmission timer or `deadline` at most (not
        at all once either has passed), or handle the timer; True when one was read. False
        at once when `close()` was called (from another thread), the socket untouched. Only
        the reading call (`_begin_reading`, `_take_turn`) pumps."""
        with self._mutex:
            if self._closing:
                return False
            now = time.monotonic()
            timer = self.connection.get_timer()
        waits = [t - now for t in (timer, deadline) if t is not None]
        readable = self._wait(min(max(0.0, min(waits)), MAX_WAIT) if waits else None)
        with self._mutex:
            if self._closing:
                return False
            read = self._read_one(readable)
            self._flush()
            self._pumps += 1
            self._lock.notify_all()  # a `_follow`ing call looks at what came
            return read

    def _take_waiting(self) -> None:
        """`send`'s share of the protocol while no call reads the socket (under `_mutex`, with
        `_reader` None): the datagrams already waiting are read, `MAX_LATE_READS` at most,
        without waiting, and a timer that is due is handled, so that a client that only
        sends still answers its peer: the server's retransmitted last flight of a resumed
        handshake with our final flight again (RFC 6347 §4.2.4), a heartbeat request (RFC
        6520 §3: it MUST be answered), and a close_notify or failure makes the `send` raise
        `AssociationEnded`. The data that came is kept for `recv`, within the same bounds."""
        for _ in range(MAX_LATE_READS):
            read = self._read_one(self._wait(0))
            self._flush()
            if not read:
                break

    def _read_one(self, readable: bool) -> bool:
        """Under `_mutex`: hand the datagram waiting at the socket (when `readable`) to the core,
        or, with none there, run the timer; True when one was read. An ICMP error the socket
        reports instead is handled here (see the comments); a socket closed under us
        raises."""
        try:
            if not readable:
                raise BlockingIOError
            size = self._sock.recv_into(self._buffer, 0, _DONTWAIT)
        except BlockingIOError:
            self.connection.handle_timer(time.monotonic())
        except ConnectionRefusedError:
            # ICMP port unreachable: the server is not there (yet); the timer retries, up to
            # `PortUnreachable` while the handshake has heard nothing from it.
            self._refused.refused(self.connection, self._sock.getpeername())
        except OSError as exc:
            # Another ICMP error the connected socket reports on a read (host or network
            # unreachable from a router on the way): logged, as `aio` does (asyncio hands
            # read errors to `error_received`); what it was about is lost, the timer
            # resends. A socket closed under us (a caller's `sock=`) still raises.
            if _closed_under_us(self._sock, exc):
                raise
            logger.debug("socket error: %s (%s)", exc, LOST)
            self.connection.handle_timer(time.monotonic())
        else:
            self._refused.heard = True
            self.connection.receive_datagram(bytes(self._buffer[:size]), time.monotonic())
            return True
        return False

    def _wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for a datagram (or an ICMP error) on
        the socket, or for `close()` to wake us; True when the socket has one, or is closed:
        a caller's `sock=` closed by its owner (fileno -1), whose read then raises EBADF.
        Without that, poll's POLLNVAL for the closed descriptor ended every wait at once
        and `recv` spun until its timeout. Not holding the lock: another thread sends
        meanwhile. A socket closed by another thread while we wait does not end the wait
        (the OS wakes no one): the wait ends at its timeout or the retransmission timer, as
        `close()` of the client ends it at once."""
        if self._sock.fileno() == -1:
            return True
        if self._poll is None:  # no poll(): select(), fine for the few descriptors of Windows
            readable, _, _ = select.select([self._sock, self._wake_reader], [], [], timeout)
            return self._sock in readable
        milliseconds = None if timeout is None else math.ceil(timeout * 1000)
        ready = self._poll.poll(milliseconds)
        fileno = self._sock.fileno()
        return fileno == -1 or any(fd == fileno for fd, _ in ready)

    def _flush(self) -> None:
        """Send what the core has to send and take its events. A datagram the OS refuses to
        send (no route: EHOSTUNREACH or ENETUNREACH while a link is down, ENOBUFS, a
        firewall's EPERM; ECONNREFUSED, an earlier ICMP port unreachable) is lost, as UDP
        loses one, and logged, as `aio` (asyncio's transport hands every send error to
        `error_received`) does: the timers resend handshake flights and heartbeat requests
        (RFC 6347 §4.2.4), application data is not resent. A datagram the network path
        refuses as too large (EMSGSIZE: its MTU is below `config.mtu`) is also noted
        (`_oversized`): `send` raises it for its application data and the handshake for its
        flights (RFC 6347 §4.1.1: an error to the application); any other (say our answer to
        a peer's heartbeat request larger than the path, RFC 6520 §4) is lost, and the
        datagram being read is still delivered. A socket closed under us (EBADF: by `close()`
        in a signal handler, or a caller's `sock=` closed by the caller) raises its
        `OSError`: nothing can be sent on it any more."""
        for datagram in self.connection.datagrams_to_send(time.monotonic()):
            try:
                self._sock.send(datagram)
            except ConnectionRefusedError:
                pass
            except OSError as exc:
                if _closed_under_us(self._sock, exc):
                    raise
                if exc.errno == errno.EMSGSIZE:
                    self._oversized = len(datagram)
                logger.debug("socket error: %s (%s)", exc, LOST)
        while (event := self.connection.next_event()) is not None:
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            config = self.connection.config
            if self._received and (
                len(self._received) >= config.receive_queue
                or self._received_bytes + len(event.data) > config.receive_queue_bytes
            ):
                self._dropped_datagrams += 1  # as aio's `_Inbox.put`
            else:
                self._received.append(event.data)
                self._received_bytes += len(event.data)
        elif isinstance(event, HeartbeatAnswered):
            self._answers += 1

    def _ended(self) -> bool:
        return self.connection.state is ConnectionState.CLOSED

    def _raise_if_failed(self) -> None:
        """Raise the error that ended the association (its `ConnectionClosed` event's)."""
        if self.connection.error is not None:
            raise self.connection.error
        self._raise_if_idle()

    def _raise_if_idle(self) -> None:
        if self.connection.state is ConnectionState.IDLE:
            raise LocalProtocolError("handshake() has not been called")


class _Reading:
    """One call reading the socket (`DtlsClient._reader`), made in the thread it runs in."""

    __slots__ = ("thread",)

    def __init__(self) -> None:
        self.thread = threading.get_ident()


def _closed_under_us(sock: socket.socket, exc: OSError) -> bool:
    """`exc`, of a send or a read, says the socket is closed (by `close()` in a signal handler
    that interrupted the call, or a caller's `sock=` closed by its owner), not that one
    datagram could not go: the call ends with it. EBADF on POSIX; a socket object closed
    also shows it by its fileno of -1 (Windows reports WSAENOTSOCK instead)."""
    return exc.errno == errno.EBADF or sock.fileno() == -1


#: How `DtlsClient.__repr__` names the association's states (before `close()`).
_STATE_NAMES = {
    ConnectionState.IDLE: "not started",
    ConnectionState.HANDSHAKING: "handshaking",
    ConnectionState.ESTABLISHED: "open",
    ConnectionState.CLOSED: "ended",
}


def _local_name(sock: socket.socket) -> str:
    try:
        return format_address(sock.getsockname())
    except OSError:  # a caller's socket, closed under us
        return "an unknown address"


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _connect_to(sock: socket.socket, host: str, port: int) -> None:
    """Connect a caller's `sock` to `host:port`: to its first address of the socket's family,
    in the resolver's order (RFC 6724)."""
    with reaching(host, port):
        infos = resolve(host, port)
    attach_socket(sock, infos, host, port)


def _closed_during_handshake() -> LocalProtocolError:
    return LocalProtocolError("close() was called during the handshake")


def connect(
    host: str,
    port: int,
    config: ClientConfig,
    *,
    sock: socket.socket | None = None,
    chain_cache: ChainCache | None = None,
    session: SessionState | None = None,
) -> DtlsClient:
    """Connect and complete the handshake (resuming `session` if the server still has it);
    raises the `DtlsError` that ended it, as `iotdtls.aio.connect` does: `AlertSent`,
    `AlertReceived`, `HandshakeTimeout` (after `config.handshake_timeout`; with `config.retry`,
    of the last attempt, naming them) or `PortUnreachable` (the network refused the ClientHello
    and its retransmission with ICMP port unreachable). Without `sock`, each address of `host`
    (IPv6 and IPv4 of one name) is tried in turn while the one before fails before any answer
    (its socket cannot connect, or `PortUnreachable`, RFC 8085 §5.2), as `iotdtls.aio.connect`
    does; a handshake that times out is not tried elsewhere. `chain_cache` keeps the server's
    certificate chain between runs for cached_info (RFC 7924). A wrong argument raises
    `TypeError` (or `ConfigError` for the port, a closed `sock` or one with IP_RECVERR set)
    before any socket is made.
    In certificate mode, the server's certificate must carry `config.server_name` or, without
    one, `host` (RFC 7925 §4.4.1)."""
    port = check_client_arguments(host, port, config, sock=sock, chain_cache=chain_cache,
                                  session=session)
    config, key = for_server(config, chain_cache, host, port)
    if sock is not None:
        return _handshake(DtlsClient(host, port, config, sock=sock, session=session),
                          chain_cache, key, config)
    with reaching(host, port):
        *firsts, last = resolve(host, port)
    for sock in sockets_in_turn(firsts, host, port):
        try:
            return _handshake(_client_on(sock, host, port, config, session),
                              chain_cache, key, config)
        except PortUnreachable as exc:
            logger.info("%s; trying the next address of %s", exc, host)
    client = _client_on(socket_to(last, host, port), host, port, config, session)
    return _handshake(client, chain_cache, key, config)


def _client_on(
    sock: socket.socket, host: str, port: int, config: ClientConfig,
    session: SessionState | None,
) -> DtlsClient:
    """A client over `sock`, ours (made by `connect`): closed when the client cannot be made,
    and by the client's finalizer when it is dropped without `close()`."""
    try:
        client = DtlsClient(host, port, config, sock=sock, session=session)
    except BaseException:
        sock.close()
        raise
    client._owns_socket = True
    return client


def _handshake(
    client: DtlsClient, chain_cache: ChainCache | None, key: str, config: ClientConfig
) -> DtlsClient:
    """`client`'s handshake; closed when it fails."""
    try:
        client.handshake()
        remember_chain(chain_cache, key, config, client.connection.peer)
    except BaseException:
        client.close()
        raise
    return client
