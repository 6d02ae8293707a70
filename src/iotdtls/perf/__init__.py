"""A DTLS load generator (like ``openssl s_time``, for DTLS): `iotdtls perf HOST:PORT`.

    spec = LoadSpec("127.0.0.1", 5684, ClientConfig(psk_identity=..., psk=...),
                    concurrency=100, duration=10.0, messages=1)
    result = run_load(spec, processes=1)
    print(result.report("127.0.0.1:5684", lanes(spec)))  # associations in flight at most

Many sans-I/O clients run on one event loop per process (`iotdtls.perf.engine`), each on its
own UDP socket; `processes` > 1 splits the concurrency (and a handshake count) over several
processes, started with ``spawn``, and merges what they measured. Works against any DTLS 1.2
server the client configuration fits: iotdtls, ``openssl s_server``, ``gnutls-serv`` (the last
two serve one peer at a time: use concurrency 1). Ctrl-C (SIGINT) or SIGTERM ends a run early
with the figures so far. ``resume=True`` (``--resume``) measures session resumption (RFC 5246
§7.3): each lane runs one full handshake, then offers every new association the session of the
one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import numbers
import operator
import os
import resource
import signal
from collections.abc import Callable, Iterator
from typing import Any, SupportsIndex

from iotdtls import loop
from iotdtls._addresses import format_address
from iotdtls._arguments import check_host, check_port, check_type
from iotdtls._children import Child, hold_signals, how_it_ended, ignore_held_sigint, reap, spawn
from iotdtls.chaincache import ChainCache
from iotdtls.config import ClientConfig, type_name
from iotdtls.crypto.aead import CCM8_OVERHEAD
from iotdtls.errors import ConfigError
from iotdtls.perf.engine import (
    PROGRESS_INTERVAL,
    LoadSpec,
    ProgressCallback,
    lanes,
    pick_target,
    report_progress,
    run_engine,
)
from iotdtls.perf.result import LoadProgress, LoadResult
from iotdtls.record import RECORD_HEADER_LEN

__all__ = [
    "MIN_MESSAGE_SIZE", "GeneratorProcessFailed", "LoadProgress", "LoadResult", "LoadSpec",
    "check_spec",
    "lanes", "largest_message", "run_load",
]

#: File descriptors a generator process needs beside one socket per association.
SPARE_FILES = 64
#: A message carries its number in its first 4 bytes.
MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE = 4, 16384
#: Seconds the generator processes have to send their figures once told to stop.
STOP_GRACE = 10.0
#: Seconds a generator process that has reported may then send nothing before it is taken
#: for hung (stopped by SIGSTOP, deadlocked): it reports its progress every `PROGRESS_INTERVAL`.
SILENCE_LIMIT = STOP_GRACE
#: Seconds a generator process has from its spawn to its first report: its interpreter's
#: imports and the initializer come first, which many processes starting at once on a small
#: or loaded machine can take longer than `SILENCE_LIMIT` over.
START_LIMIT = 60.0
#: What a record adds to the message it carries under the profile's suites (both
#: AES-128-CCM-8, RFC 6655 §3): the record header, the explicit nonce and the tag.
RECORD_OVERHEAD = RECORD_HEADER_LEN + CCM8_OVERHEAD
_PROGRESS, _RESULT, _FAILED, _STOP = "progress", "result", "failed", "stop"


def largest_message(mtu: int) -> int:
    """The largest message one record in one datagram of `mtu` bytes carries (a record never
    spans datagrams, RFC 6347 §4.1.1), and at most `MAX_MESSAGE_SIZE` (2^14)."""
    return min(mtu - RECORD_OVERHEAD, MAX_MESSAGE_SIZE)


def check_spec(spec: LoadSpec, processes: int = 1) -> LoadSpec:
    """Raise `ConfigError` (one line) for a run that cannot be done, and `TypeError` (one line,
    as the adapters do, `iotdtls._arguments`) for a setting of the wrong type, before any
    socket is made; a message size is checked against the MTU when `spec.config` is a
    configuration, not a function building one (whose result the engine checks). Returns
    `spec` with its numbers as Python's own, which `run_load` runs: each count and the port a
    plain int (an `IntEnum`'s member, or an integer with `__index__` only, as numpy's), each
    number of seconds a float (a `Fraction`, which the report could not format)."""
    spec, processes = _plain_numbers(spec, processes)
    if spec.concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {spec.concurrency}")
    if (spec.duration is None) == (spec.handshakes is None):
        raise ConfigError("give either a duration or a number of handshakes")
    if spec.duration is not None and not _finite_and_positive(spec.duration):
        raise ConfigError(f"duration must be a finite number of seconds > 0, got {spec.duration}")
    if spec.handshakes is not None and spec.handshakes < 1:
        raise ConfigError(f"handshakes must be at least 1, got {spec.handshakes}")
    if spec.messages < 0:
        raise ConfigError(f"messages must be 0 or more, got {spec.messages}")
    if not MIN_MESSAGE_SIZE <= spec.message_size <= MAX_MESSAGE_SIZE:
        raise ConfigError(
            f"message size must be from {MIN_MESSAGE_SIZE} to {MAX_MESSAGE_SIZE} bytes"
        )
    if isinstance(spec.config, ClientConfig):
        largest = largest_message(spec.config.mtu)
        if spec.message_size > largest:
            raise ConfigError(
                f"a message of {spec.message_size} bytes does not fit one datagram of "
                f"{spec.config.mtu} bytes (the MTU): at most {largest}"
            )
    if not _finite_and_positive(spec.echo_timeout):
        raise ConfigError(
            f"echo timeout must be a finite number of seconds > 0, got {spec.echo_timeout}"
        )
    if not 1 <= processes <= spec.concurrency:
        raise ConfigError(f"processes must be from 1 to the concurrency ({spec.concurrency})")
    if spec.handshakes is not None and processes > spec.handshakes:
        raise ConfigError("processes must not exceed the number of handshakes")
    return spec


def _plain_numbers(spec: LoadSpec, processes: object) -> tuple[LoadSpec, int]:
    """`spec` with each count and the port a plain int, each number of seconds a float, and
    `processes` a plain int; a
    `TypeError` for the first setting of `spec` (or `processes`) of the wrong type: what
    otherwise failed deep in the run (an AttributeError for a `ServerConfig`, a TypeError from
    `range` for 1.5 handshakes, from the resolver for an `IntEnum` port, from the report for a
    `Fraction` duration) or ran (a bool or a float concurrency, a host of None, which the
    resolver takes for loopback). The host and port are checked as `connect` checks them
    (a port of 0 too: a client's "any port" is no server to load)."""
    check_host(spec.host)
    port = check_port(spec.port)
    if not (isinstance(spec.config, ClientConfig) or callable(spec.config)):
        raise TypeError(
            "config must be a ClientConfig or a function returning one, got "
            f"{type_name(spec.config)}"
        )
    concurrency = _count("concurrency", spec.concurrency)
    messages = _count("messages", spec.messages)
    message_size = _count("message_size", spec.message_size)
    process_count = _count("processes", processes)
    handshakes = None if spec.handshakes is None else _count("handshakes", spec.handshakes)
    duration = None if spec.duration is None else _seconds("duration", spec.duration)
    echo_timeout = _seconds("echo_timeout", spec.echo_timeout)
    check_type("resume", spec.resume, bool)
    check_type(
        "chain_cache", spec.chain_cache, ChainCache, " (ChainCache(directory))", optional=True
    )
    if spec.target is not None and not (isinstance(spec.target, tuple) and len(spec.target) == 5):
        raise TypeError(
            "target must be None or one of getaddrinfo's answers (family, type, proto, "
            f"canonname, sockaddr), got {type_name(spec.target)}"
        )
    plain = dataclasses.replace(
        spec,
        port=port,
        concurrency=concurrency,
        duration=duration,
        handshakes=handshakes,
        messages=messages,
        message_size=message_size,
        echo_timeout=echo_timeout,
    )
    return plain, process_count


def _count(name: str, value: object) -> int:
    """`value` as a plain int: an int, or an integer that has `__index__` (numpy's), but not a
    bool, which Python takes for one, nor a float."""
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f"{name} must be an int, got {type_name(value)}")
    return operator.index(value)


def _seconds(name: str, value: object) -> float:
    """`value` as a float: a number of seconds, any real number but a bool (an int beyond any
    float, or such a `Fraction`, is infinity of its sign, which `check_spec` then refuses)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {type_name(value)}")
    try:
        return float(value)
    except OverflowError:
        return -math.inf if value < 0 else math.inf


def _finite_and_positive(seconds: float) -> bool:
    """Above 0 and finite: NaN never passes a deadline, and the CLI refuses infinity, which
    made a run (a duration) or an echo's wait unbounded."""
    return math.isfinite(seconds) and seconds > 0


def run_load(
    spec: LoadSpec,
    *,
    processes: int = 1,
    progress: ProgressCallback | None = None,
    loop_choice: str = "auto",
    initializer: Callable[[], None] | None = None,
) -> LoadResult:
    """Run `spec` (blocking) and return what was measured; `progress` is called about once a
    second with the running totals (one that raises is logged once, with its traceback, on the
    logger `iotdtls.perf.engine`, and called no more: the run goes on). `initializer` runs
    first in every generator process of a run over several (e.g. to set up logging, which a
    fresh interpreter does not inherit; it must pickle). Raises `ConfigError` for an
    impossible run, `TypeError` for a setting of the wrong type (`check_spec`)."""
    spec = check_spec(spec, processes)
    processes = operator.index(processes)
    loop.loop_factory(loop_choice)  # a missing uvloop is a ConfigError before anything starts
    if processes == 1:
        _raise_open_files_limit(lanes(spec))
        return loop.run(_run_here(spec, progress), loop_choice)
    return loop.run(
        _run_processes(spec, processes, progress, loop_choice, initializer), loop_choice
    )


def _raise_open_files_limit(concurrency: int) -> None:
    """One socket per association in flight (`concurrency` of them, see `lanes`): lift the
    soft limit on open files if needed."""
    needed = concurrency + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(
                f"concurrency {concurrency} needs {needed} open files, the limit is {hard}: "
                "lower --concurrency, use --processes, or raise `ulimit -n`"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def _stop_on_signals(
    stop: asyncio.Event, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
    """`signals` set `stop` (where this loop may handle signals: the main thread)."""
    running = asyncio.get_running_loop()
    handled = []
    for sig in signals:
        try:
            running.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (RuntimeError, ValueError):
            break
    try:
        yield
    finally:
        for sig in handled:
            running.remove_signal_handler(sig)


async def _run_here(spec: LoadSpec, progress: ProgressCallback | None) -> LoadResult:
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        return await run_engine(spec, progress, stop)


# -- several generator processes ----------------------------------------------------------------


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _split(spec: LoadSpec, processes: int) -> list[LoadSpec]:
    concurrency = _shares(spec.concurrency, processes)
    counts = _shares(spec.handshakes, processes) if spec.handshakes is not None else None
    return [
        dataclasses.replace(
            spec,
            concurrency=concurrency[i],
            handshakes=None if counts is None else counts[i],
        )
        for i in range(processes)
    ]


def _watch(conn: Any, callback: Callable[..., None], *args: Any) -> None:
    """Call `callback(*args)` on the running loop whenever `conn` (a pipe) has something to
    read, and keep the pipe blocking: uvloop (libuv) makes a descriptor it watches
    non-blocking, and `Connection.recv` (`send`) would then fail with BlockingIOError in the
    middle of a message that has not all arrived yet (that the pipe has no room for yet)."""
    asyncio.get_running_loop().add_reader(conn.fileno(), callback, *args)
    os.set_blocking(conn.fileno(), True)


def _child_main(
    spec: LoadSpec, loop_choice: str, initializer: Callable[[], None] | None, conn: Any
) -> None:
    """A generator process: run its share, report progress and the result on `conn`.
    SIGTERM stays held (`_HELD_SIGNALS`) until `_child_run` has its handler."""
    ignore_held_sigint()  # the parent decides when to stop
    try:
        if initializer is not None:
            initializer()
        _raise_open_files_limit(lanes(spec))
        result = loop.run(_child_run(spec, conn), loop_choice)
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send((_FAILED, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    with contextlib.suppress(OSError):  # the parent has gone: nobody to tell
        conn.send((_RESULT, result))
    conn.close()


async def _child_run(spec: LoadSpec, conn: Any) -> LoadResult:
    """Run the share until done, or until the parent says "stop" (or goes away), or SIGTERM
    (sent to the whole process group, e.g. by a service manager): the figures so far."""
    running = asyncio.get_running_loop()
    stop = asyncio.Event()
    _watch(conn, stop.set)
    running.add_signal_handler(signal.SIGTERM, stop.set)
    if signal.SIGTERM in signal.sigpending():  # held while starting: stop before any handshake
        stop.set()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        return await run_engine(spec, functools.partial(_send_progress, conn), stop)
    finally:
        running.remove_signal_handler(signal.SIGTERM)
        running.remove_reader(conn.fileno())


def _send_progress(conn: Any, progress: LoadProgress) -> None:
    """A generator process's progress to the parent; none when the parent has gone (its pipe
    closed: `_child_run` stops at once), rather than an error logged for it."""
    with contextlib.suppress(OSError):
        conn.send((_PROGRESS, progress))


#: Signals held (blocked) while the generator processes start, besides SIGINT (which
#: `hold_signals` always holds): SIGTERM, sent to the whole process group (a service manager's
#: stop) as they start, waits in each until `_child_run` handles it (a clean stop, with its
#: figures, where it would kill them), and in the parent until `_run_processes` does.
_HELD_SIGNALS = frozenset({signal.SIGTERM})


def _start_children(
    spec: LoadSpec,
    processes: int,
    loop_choice: str,
    initializer: Callable[[], None] | None,
    latest: dict[int, LoadProgress],
    heard: dict[int, float],
) -> tuple[list[Child], list[asyncio.Future[LoadResult]]]:
    running = asyncio.get_running_loop()
    children: list[Child] = []
    results: list[asyncio.Future[LoadResult]] = []
    with hold_signals(_HELD_SIGNALS):  # a Ctrl-C meanwhile comes once they are spawned
        for index, share in enumerate(_split(spec, processes)):
            child = spawn(
                _child_main, (share, loop_choice, initializer), f"iotdtls-perf-{index}"
            )
            future: asyncio.Future[LoadResult] = running.create_future()
            heard[index] = running.time()
            _watch(child[1], _on_child, child, index, latest, heard, future)
            children.append(child)
            results.append(future)
    return children, results


async def _run_processes(
    spec: LoadSpec,
    processes: int,
    progress: ProgressCallback | None,
    loop_choice: str,
    initializer: Callable[[], None] | None,
) -> LoadResult:
    latest: dict[int, LoadProgress] = {}
    heard: dict[int, float] = {}  # when each generator last sent something (loop time)
    spec = await pick_target(spec)  # once, here: every generator process uses that address
    stop = asyncio.Event()
    with _stop_on_signals(stop, (signal.SIGTERM,)):  # one held while they start: once started
        children, results = _start_children(
            spec, processes, loop_choice, initializer, latest, heard
        )
        return await _wait_children(spec, children, results, latest, heard, progress, stop)


async def _wait_children(
    spec: LoadSpec,
    children: list[Child],
    results: list[asyncio.Future[LoadResult]],
    latest: dict[int, LoadProgress],
    heard: dict[int, float],
    progress: ProgressCallback | None,
    stop: asyncio.Event,
) -> LoadResult:
    reporter = asyncio.ensure_future(_report_children(latest, progress)) if progress else None
    watchdog = asyncio.ensure_future(_hung_children(children, heard, latest, results))
    try:
        with _stop_on_signals(stop, (signal.SIGINT,)):  # SIGTERM's handler is in place already
            stopper = asyncio.ensure_future(stop.wait())
            reported = asyncio.ensure_future(
                asyncio.wait(results, return_when=asyncio.FIRST_EXCEPTION)
            )
            waiters: set[asyncio.Future[Any]] = {reported, stopper}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            reported.cancel()
            watchdog.cancel()  # once stopped, STOP_GRACE bounds the wait (`_stopped`)
            if not all(future.done() and future.exception() is None for future in results):
                # Stopped by a signal, or one generator failed: the others stop at once.
                _tell_children(children, _STOP)
                await _stopped(results)
    finally:
        watchdog.cancel()
        if reporter is not None:
            reporter.cancel()
        _tell_children(children, _STOP)
        for process, conn in children:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            reap(process, 5.0)
            conn.close()
    return _merged(spec, results)


async def _hung_children(
    children: list[Child],
    heard: dict[int, float],
    reported: dict[int, LoadProgress],
    results: list[asyncio.Future[LoadResult]],
) -> None:
    """Fail the run of a generator process that has sent nothing, not even its progress,
    for `SILENCE_LIMIT` seconds (stopped by SIGSTOP, deadlocked), or `START_LIMIT` seconds
    from its spawn while it has not yet reported, as one that dies does: the others are
    stopped and their figures kept. Without it a hang during the run made the run last for
    ever (only one after the stop was bounded, by `STOP_GRACE`). It is killed, so that
    nothing waits for it."""
    running = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        for index, future in enumerate(results):
            if future.done():
                continue
            silent = running.time() - heard[index]
            if index in reported and silent >= SILENCE_LIMIT:
                failure = f"sent nothing for {SILENCE_LIMIT:g} s: stopped or hung"
            elif index not in reported and silent >= START_LIMIT:
                failure = f"sent nothing in the {START_LIMIT:g} s from its start: stopped or hung"
            else:
                continue
            future.set_exception(ChildProcessError(f"load generator process {index}: {failure}"))
            with contextlib.suppress(OSError):
                children[index][0].kill()


async def _stopped(results: list[asyncio.Future[LoadResult]]) -> None:
    """Wait for the generators' figures once they are told to stop, `STOP_GRACE` seconds at
    most: they abandon what is in flight at once, so one that has not reported by then has
    hung (`_merged` then ends the run with an error instead of waiting for ever)."""
    await asyncio.wait(results, timeout=STOP_GRACE)


def _merged(spec: LoadSpec, results: list[asyncio.Future[LoadResult]]) -> LoadResult:
    """The figures of the generator processes that reported, as one run; or, when one failed
    or did not report, `GeneratorProcessFailed` saying so (the first failure) and holding
    them (partial figures, as a stop by a signal gives)."""
    assert spec.target is not None, "pick_target chose it"
    total = LoadResult(
        processes=0,
        loop=loop.loop_name(asyncio.get_running_loop()),
        address=format_address(spec.target[4]),
    )
    failures, hung = [], []
    for future in results:
        if not future.done():
            future.cancel()
            hung.append(
                f"a load generator process did not report within {STOP_GRACE:g} s of the stop"
            )
        elif (error := future.exception()) is not None:
            failures.append(str(error))
        else:
            total = total + future.result()
    if failures or hung:
        raise GeneratorProcessFailed([*failures, *hung][0], total)
    return total


class GeneratorProcessFailed(ChildProcessError):
    """A generator process of `run_load(..., processes=P)` died, failed, sent nothing for
    `SILENCE_LIMIT` seconds or did not report once stopped: the message says which and how
    ("load generator process 0: ended unexpectedly: killed by SIGKILL"); `result` holds the
    figures of those that reported, stopped at once (`processes` counts them: 0 when none
    did)."""

    def __init__(self, message: str, result: LoadResult) -> None:
        super().__init__(message)
        self.result = result


def _tell_children(children: list[Child], message: str) -> None:
    for _, conn in children:
        with contextlib.suppress(OSError):
            conn.send(message)


def _on_child(
    child: Child,
    index: int,
    latest: dict[int, LoadProgress],
    heard: dict[int, float],
    future: asyncio.Future[LoadResult],
) -> None:
    """A message of generator process `index`: progress, its result or its failure; its pipe
    closed without a result, it died, and the failure says how ("ended unexpectedly: killed by
    SIGKILL", `how_it_ended`, as the workers of a server are told of). When it was heard is
    noted in `heard` (`_hung_children`)."""
    process, conn = child
    heard[index] = asyncio.get_running_loop().time()
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        how = how_it_ended(process)
        kind, value = _FAILED, "ended unexpectedly" + (f": {how}" if how else "")
    if kind == _PROGRESS:
        latest[index] = value
        return
    asyncio.get_running_loop().remove_reader(conn.fileno())
    if future.done():
        return
    if kind == _RESULT:
        future.set_result(value)
    else:
        future.set_exception(ChildProcessError(f"load generator process {index}: {value}"))


async def _report_children(latest: dict[int, LoadProgress], progress: ProgressCallback) -> None:
    """The generator processes' latest progress, summed, to `progress` (`report_progress`:
    a callback that raises is logged once and called no more)."""

    def summed() -> LoadProgress:
        snapshots = list(latest.values())
        return LoadProgress(
            sum(p.completed for p in snapshots),
            sum(p.failed for p in snapshots),
            sum(p.in_flight for p in snapshots),
        )

    await report_progress(summed, progress, PROGRESS_INTERVAL)
