"""The load generator's engine: `concurrency` lanes on one asyncio loop, each running one
association after another, each association a sans-I/O `DtlsConnection` on its own UDP socket
(so the server tells them apart by address, as it would real devices) with its own timer.

An association: a fresh socket connected to the server, the full handshake (with whatever
cookie exchange the server asks for, RFC 6347 §4.2.1), `messages` echoed datagrams one after
the other, then close_notify (RFC 5246 §7.2.1; serial servers such as gnutls-serv wait for it
before taking the next peer) and the socket closed. With `resume`, a lane offers each new
association the session of its previous one (RFC 5246 §7.3): one full handshake, then
abbreviated ones for as long as the server resumes. With a `chain_cache` (certificate mode),
every association offers the server's chain in cached_info (RFC 7924), as `aio.connect` does:
the one the cache held when the run began, or the one a handshake of the run brought.

Of a name with several addresses (IPv6 and IPv4), the run uses the one `aio.connect` would:
the first whose handshake does not fail before any answer (`pick_target`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from iotdtls._addresses import format_address, reaching, sockets_in_turn
from iotdtls._unreachable import RefusedHandshake
from iotdtls.chaincache import ChainCache, for_server, remember_chain
from iotdtls.config import ClientConfig, type_name
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.datagram import resolve_udp
from iotdtls.errors import (
    AlertReceived,
    AlertSent,
    DtlsError,
    HandshakeTimeout,
    PortUnreachable,
)
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.loop import loop_name
from iotdtls.perf.result import LoadProgress, LoadResult
from iotdtls.sessions import SessionState
from iotdtls.trace import log_datagram

__all__ = ["LoadSpec", "lanes", "pick_target", "report_progress", "run_engine"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[LoadProgress], None]
#: Seconds between progress reports.
PROGRESS_INTERVAL = 1.0


@dataclass(frozen=True)
class LoadSpec:
    """One load run (see `iotdtls.perf.run_load`; validated by `check_spec`)."""

    host: str
    port: int
    #: The clients' configuration, or a picklable function building it (called once in each
    #: generator process, so private keys, which do not pickle, are loaded there). In
    #: certificate mode the server's certificate must carry its server_name or, without one,
    #: `host` (RFC 7925 §4.4.1), as for `aio.connect` (`chaincache.for_server`).
    config: ClientConfig | Callable[[], ClientConfig]
    #: Associations in progress at once.
    concurrency: int = 10
    #: Seconds during which new associations start (a time run) ...
    duration: float | None = None
    #: ... or the number of associations to run (a count run). One of the two.
    handshakes: int | None = None
    #: Datagrams echoed over each association, one after the other.
    messages: int = 0
    message_size: int = 64
    #: Seconds to wait for each echo before counting the message lost.
    echo_timeout: float = 2.0
    #: Offer each association the session of the lane's previous one (RFC 5246 §7.3).
    resume: bool = False
    #: Server chains kept between runs: each association offers the server's in cached_info
    #: (RFC 7924; certificate mode).
    chain_cache: ChainCache | None = None
    #: The server's address: one of getaddrinfo's answers for `host:port` (family, type,
    #: proto, canonname, sockaddr), or None to let `pick_target` choose it.
    target: tuple[Any, ...] | None = None


def lanes(spec: LoadSpec) -> int:
    """Associations that may be in progress at once: the concurrency, or fewer handshakes."""
    if spec.handshakes is None:
        return spec.concurrency
    return min(spec.concurrency, spec.handshakes)


class _Association(asyncio.DatagramProtocol):
    """One client association driven on the loop; results land in the engine's counters."""

    def __init__(self, engine: _Engine, session: SessionState | None) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.conn = DtlsConnection(engine.config, session=session)
        self.transport: asyncio.DatagramTransport | None = None
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.echo: asyncio.Future[bytes | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: When the first ClientHello left (the start of the handshake latency).
        self.begun = 0.0
        #: Whether the completed handshake used the extended master secret (RFC 7627).
        self.extended_master_secret = False
        #: ICMP port-unreachable reports of the handshake: it gives up on the second, as the
        #: adapters' clients do (`iotdtls._unreachable`), instead of waiting for its deadline.
        self._refused = RefusedHandshake()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.begun = time.perf_counter()
        self.conn.connect(self.loop.time())
        self.flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        result = self.engine.result
        result.datagrams_received += 1
        result.bytes_received += len(data)
        if self.engine.tracing:
            log_datagram(logger, "<-", addr, data)
        self._refused.heard = True
        self.conn.receive_datagram(data, self.loop.time())
        self.flush()

    def error_received(self, exc: Exception) -> None:
        self.engine.result.icmp_errors += 1  # otherwise the retransmission timer retries
        if isinstance(exc, ConnectionRefusedError) and self._refused.refused(
            self.conn, self.engine.address
        ):
            self.flush()  # the handshake ends with PortUnreachable

    def flush(self) -> None:
        result = self.engine.result
        if self.transport is not None:
            for datagram in self.conn.datagrams_to_send(self.loop.time()):
                self.transport.sendto(datagram)
                result.datagrams_sent += 1
                result.bytes_sent += len(datagram)
                if self.engine.tracing:
                    log_datagram(logger, "->", self.engine.address, datagram)
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self.extended_master_secret = event.extended_master_secret
                _settle(self.handshake, None)
            elif isinstance(event, DataReceived):
                if self.echo is not None:
                    _settle(self.echo, event.data)
            elif isinstance(event, ConnectionClosed):
                if not self.handshake.done():
                    # The core names why every handshake ends (the server's close_notify too).
                    assert event.error is not None
                    self.handshake.set_exception(event.error)
                if self.echo is not None:
                    _settle(self.echo, None)
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.conn.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.conn.handle_timer(self.loop.time())
        self.flush()

    def finish(self) -> None:
        """close_notify if established, then release the timer and the socket."""
        if self.conn.state is ConnectionState.ESTABLISHED:
            self.conn.close()
            self.flush()
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
        if not self.handshake.done():
            self.handshake.cancel()
        elif not self.handshake.cancelled():
            self.handshake.exception()  # retrieved: no "never retrieved" warning


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def failure_cause(error: BaseException) -> str:
    """A short, stable name for why an association failed (the report groups by it)."""
    if isinstance(error, HandshakeTimeout):
        return "handshake timeout"
    if isinstance(error, PortUnreachable):
        return "port unreachable"
    if isinstance(error, AlertReceived | AlertSent):
        alert = error.alert
        name = alert.name if hasattr(alert, "name") else str(alert)
        return f"{'received' if isinstance(error, AlertReceived) else 'sent'} alert {name}"
    if isinstance(error, OSError):
        return f"socket error: {error.strerror or error}"
    return str(error) or type(error).__name__


class _Engine:
    """Runs the lanes of one generator process and keeps its counters."""

    def __init__(self, spec: LoadSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        config = spec.config() if callable(spec.config) else spec.config
        if not isinstance(config, ClientConfig):  # a function's answer (`check_spec`)
            raise TypeError(f"config() must return a ClientConfig, got {type_name(config)}")
        self.config, self._cache_key = for_server(
            config, spec.chain_cache, spec.host, spec.port
        )
        self.loop = loop
        self.result = LoadResult(loop=loop_name(loop), resume=spec.resume)
        self.in_flight = 0
        self._stopping = False
        self._start = time.perf_counter()
        self._deadline = (
            self._start + spec.duration if spec.duration is not None else float("inf")
        )
        assert spec.target is not None, "pick_target chose it"
        family, _, _, _, address = spec.target
        self._family, self.address = family, address
        self.result.address = format_address(address)
        self._payload = bytes(spec.message_size)
        #: `-v`: every datagram logged, as `iotdtls client -v` does (asked once, not per one).
        self.tracing = logger.isEnabledFor(logging.DEBUG)

    def stop(self) -> None:
        """Start no new association (those in progress are cancelled by `run`'s caller)."""
        self._stopping = True

    def _take(self) -> bool:
        """Whether a lane may start another association."""
        if self._stopping or time.perf_counter() >= self._deadline:
            return False
        if self.spec.handshakes is not None and self.result.started >= self.spec.handshakes:
            return False
        self.result.started += 1
        return True

    async def lane(self) -> None:
        session: SessionState | None = None
        while self._take():
            session = await self._one(session)

    async def _one(self, session: SessionState | None) -> SessionState | None:
        """One association, offering `session`; returns the session its lane offers next."""
        self.in_flight += 1
        assoc: _Association | None = None
        shaken = False
        if session is not None:
            self.result.sessions_offered += 1
        try:
            assoc = await self._open(session)
            await assoc.handshake
            self._record_handshake(time.perf_counter(), assoc.begun, assoc.conn.resumed)
            shaken = True
            self._note_no_session(assoc)
            # Later associations offer a chain new to the cache (the file is read only once,
            # when the run begins).
            self.config = remember_chain(
                self.spec.chain_cache, self._cache_key, self.config, assoc.conn.peer
            )
            for number in range(self.spec.messages):
                await self._echo(assoc, number)
        except (DtlsError, OSError) as exc:
            failures = self.result.association_failures if shaken else self.result.failures
            failures[failure_cause(exc)] += 1
        except asyncio.CancelledError:
            if not shaken:  # a handshake cut short; one that completed is counted already
                self.result.unfinished += 1
            raise
        finally:
            self.in_flight -= 1
            if assoc is not None:
                assoc.finish()
        if not self.spec.resume or not shaken or assoc is None:
            return None
        # None after a fatal alert (RFC 5246 §7.2.2) or when the server gave no session_id.
        return assoc.conn.session

    async def answers(self, sock: socket.socket) -> bool:
        """Whether a handshake over `sock` (connected to `address`) gets past its first
        flight: False when the network reports the port unreachable (RFC 8085 §5.2) before
        any answer, True otherwise (completed, or ended by an alert or a timeout, as
        `aio.connect` then tries no other address). Counted in this engine's figures only."""
        assoc = await self._open(None, sock)
        try:
            await assoc.handshake
        except PortUnreachable as exc:
            logger.info("%s; trying the next address of %s", exc, self.spec.host)
            return False
        except DtlsError:
            pass
        finally:
            assoc.finish()
        return True

    async def _open(
        self, session: SessionState | None, sock: socket.socket | None = None
    ) -> _Association:
        """The association on `sock`, by default a fresh UDP socket connected to the server
        (closed if the association cannot be made)."""
        if sock is None:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
        try:
            sock.setblocking(False)
            _, assoc = await self.loop.create_datagram_endpoint(
                lambda: _Association(self, session), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return assoc

    def _record_handshake(self, now: float, begun: float, resumed: bool) -> None:
        result = self.result
        result.completed += 1
        if now <= self._deadline:
            result.completed_in_window += 1
        (result.resumed_latencies if resumed else result.latencies).append(now - begun)

    def _note_no_session(self, assoc: _Association) -> None:
        """With `resume`, count a completed handshake that leaves no session to offer next, by
        why (the report says it when no session was ever offered)."""
        if not self.spec.resume or assoc.conn.session is not None:
            return
        if assoc.extended_master_secret:
            self.result.no_session_id += 1
        else:
            self.result.no_extended_master_secret += 1

    async def _echo(self, assoc: _Association, number: int) -> None:
        """Send one datagram (its number in the first 4 bytes) and wait for it to come back,
        at most `echo_timeout` seconds from the send whatever else arrives meanwhile. A
        message whose wait saw data other than its echo (or a late echo of an earlier
        message) is counted as mismatched, not lost. An association the server has closed
        (its close_notify may come right behind an echo, RFC 5246 §7.2.1) sends nothing
        more: it failed after its handshake."""
        if assoc.conn.closed:
            raise assoc.conn.error or DtlsError("closed by the server")
        payload = number.to_bytes(4, "big") + self._payload[4:]
        assoc.echo = self.loop.create_future()
        deadline = self.loop.time() + self.spec.echo_timeout
        sent = time.perf_counter()
        assoc.conn.send(payload)
        assoc.flush()
        self.result.messages_sent += 1
        answered = False  # something came back that is not an echo of ours
        try:
            async with asyncio.timeout_at(deadline):  # one timer for the whole wait
                while (data := await assoc.echo) is not None and data != payload:
                    answered = answered or not self._late_echo(data, number)
                    assoc.echo = self.loop.create_future()
        except TimeoutError:
            data = None
        except asyncio.CancelledError:  # the run was stopped
            self.result.messages_unanswered += 1
            raise
        finally:
            assoc.echo = None
        if data is None:
            if answered:
                self.result.messages_mismatched += 1
            else:
                self.result.messages_lost += 1
            if assoc.conn.closed:
                raise assoc.conn.error or DtlsError("closed by the server")
            return
        self.result.messages_echoed += 1
        self.result.echo_latencies.append(time.perf_counter() - sent)

    def _late_echo(self, data: bytes, number: int) -> bool:
        """Whether `data` is the echo of a message sent before message `number`."""
        return (
            len(data) == len(self._payload)
            and data[4:] == self._payload[4:]
            and int.from_bytes(data[:4], "big") < number
        )

    def progress(self) -> LoadProgress:
        return LoadProgress(self.result.completed, self.result.failed, self.in_flight)

    def close_result(self) -> LoadResult:
        result = self.result
        result.elapsed = time.perf_counter() - self._start
        result.window = self.spec.duration if self.spec.duration is not None else result.elapsed
        result.window = min(result.window, result.elapsed)
        return result


async def pick_target(spec: LoadSpec) -> LoadSpec:
    """`spec` with its `target` chosen as `aio.connect` chooses an address: of those `host`
    resolves to (IPv6 and IPv4 of one name), the first whose handshake does not fail before
    any answer (`_Engine.answers`), else the last. Each but the last is tried with a handshake
    of its own, before the run and not counted in its figures (ended with close_notify)."""
    if spec.target is not None:
        return spec
    loop = asyncio.get_running_loop()
    with reaching(spec.host, spec.port):
        *firsts, last = await resolve_udp(loop, spec.host, spec.port)
    for sock in sockets_in_turn(firsts, spec.host, spec.port):
        target = (sock.family, sock.type, sock.proto, "", sock.getpeername())
        chosen = dataclasses.replace(spec, target=target)
        try:
            engine = _Engine(chosen, loop)
        except BaseException:
            sock.close()
            raise
        if await engine.answers(sock):
            return chosen
    return dataclasses.replace(spec, target=last)


async def run_engine(
    spec: LoadSpec,
    progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """Run `spec` on the running loop until done or until `stop` is set (then associations
    still in progress are abandoned and counted as unfinished); its target, if it names
    none, is the one `pick_target` chooses."""
    engine = _Engine(await pick_target(spec), asyncio.get_running_loop())
    if stop is not None and stop.is_set():  # stopped before it began: nothing is started
        engine.stop()
    running = [asyncio.ensure_future(engine.lane()) for _ in range(lanes(spec))]
    everything = asyncio.gather(*running)
    waiters: set[asyncio.Future[Any]] = {everything}
    if stop is not None:
        waiters.add(asyncio.ensure_future(stop.wait()))
    reporter = (
        asyncio.ensure_future(report_progress(engine.progress, progress, PROGRESS_INTERVAL))
        if progress
        else None
    )
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        engine.stop()
        for task in (*running, *waiters, *([reporter] if reporter else [])):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await everything
    return engine.close_result()


async def report_progress(
    snapshot: Callable[[], LoadProgress], progress: ProgressCallback, interval: float
) -> None:
    """Call `progress` with `snapshot()` every `interval` seconds. A callback that raises is
    logged once, with its traceback, and called no more: the run goes on without progress
    (its figures are what it is for). Before, the reporting task ended with the exception,
    which nobody retrieved: progress stopped without a word."""
    while True:
        await asyncio.sleep(interval)
        try:
            progress(snapshot())
        except Exception:
            logger.exception(
                "the progress callback raised: the run goes on without progress reports"
            )
            return
