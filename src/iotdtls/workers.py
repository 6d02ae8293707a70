"""A server on every core: N worker processes on one UDP port (SO_REUSEPORT).

    server = await iotdtls.workers.serve(echo, "0.0.0.0", 5684, config, workers=4)
    ...
    totals = await server.close()      # ServerStats summed over the workers

or `async with iotdtls.workers.serve(...) as server:`, closed at the end of the block.

The parent binds N UDP sockets to the same address with SO_REUSEPORT and hands one to each
worker, a process of its own running `iotdtls.aio.serve` on it. Linux picks the socket of a
datagram by a hash of its 4-tuple (source and destination address and port), so every datagram
of one client reaches the same worker for as long as the set of sockets does not change: each
worker holds its associations alone, nothing is shared at run time. The stateless cookies of
RFC 6347 §4.2.1 are the one thing the workers agree on: they get one master secret
(`ServerConfig.cookie_secret`, drawn here when the configuration has none), so a cookie made by
one worker verifies at any other and all rotate in step.

A worker that dies is not replaced, and the others go on: the parent logs how it ended and sets
`WorkerServer.worker_exited`. With one socket fewer the kernel hashes most clients to another
socket, where no association knows them (their records are dropped), so most associations of
the surviving workers are lost too; new handshakes succeed at any worker. The CLI stops every
worker then and exits with status 1; an application should watch `worker_exited` and
`close()` the pool (then start a new one, or exit for a supervisor to restart it).

Sessions (RFC 5246 §7.3) are not shared by default: each worker's session cache is its own
memory, so a client that resumes from another source port may reach another worker and gets a
full handshake there. `session_store=FACTORY`, a function returning an
`iotdtls.sessions.SessionStore` (called once in each worker, never in the parent), lets
the workers resume each other's sessions, provided the store keeps its data outside the
process, as `functools.partial(iotdtls.sessions.DirectorySessionStore, DIRECTORY)` (files in a
directory, what ``iotdtls server --session-dir`` uses, closed as the worker ends) or a
database: a `MemorySessionStore` made by the factory would still be one per worker. A store
that raises is
logged and counts as a miss (get: a full handshake; put, remove: the session is not kept or not
forgotten), never the end of a handshake; a factory returning None fails the worker's start.
The store is called on the worker's event loop (see `iotdtls.sessions.SessionStore`): a slow
one stalls every association of that worker.

Workers are started with the ``spawn`` method (a fresh interpreter, never a fork of a process
that may run threads), so `handler`, `config`, `initializer` and `session_store` must be
picklable: module-level functions, a `psk_store` or a module-level `psk_lookup`, no lambdas or
closures, defined in a module or a script file (a worker re-imports the script as
``__mp_main__``: it needs the ``if __name__ == "__main__":`` guard). Workers ignore
SIGINT and SIGHUP (a Ctrl-C or a closing terminal reaches the whole process group; the parent
decides) and stop cleanly when the parent asks, when their parent goes away, or on SIGTERM,
even one that comes while they start (it waits until the worker can stop). `serve` cancelled
while they start (a timeout around it, Ctrl-C: one while they are being spawned is held in the
parent and comes once they are) stops them in a thread, the event loop running
on: one already serving is asked to stop, one still starting (it would hear the request only
once serving, after its initializer) is killed, and the CancelledError comes once all are
reaped. They ignore SIGUSR1
too: `log_counters()` asks each, through its pipe, for its counters (it goes on serving) and
logs them and their sum (a SIGUSR1 handler that calls it should be signalled alone, not with its
process group, where a `multiprocessing.Manager` or the resource tracker would die of the
signal's default action). `close()` reaps every worker and returns and logs the counters of each
and their sum (``stopped: all 2 workers: ...``, as a single CLI server's ``stopped:`` line).
What a worker logs, but for its own lines of `iotdtls.workers`, starts with its label
("worker 1: handshake complete: ..."), so that a line can be tied to a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import logging
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import time
import types
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from iotdtls import aio, loop
from iotdtls._addresses import format_address, listening_on, resolve
from iotdtls._arguments import check_host, check_port, check_type
from iotdtls._children import hold_signals, how_it_ended, ignore_held_sigint, reap, spawn
from iotdtls._opening import Opening
from iotdtls.config import ServerConfig, type_name
from iotdtls.crypto import random_bytes
from iotdtls.datagram import dual_stack
from iotdtls.errors import ConfigError
from iotdtls.sessions import DirectorySessionStore, SessionStore
from iotdtls.stats import ServerStats

__all__ = ["WorkerServer", "serve"]

logger = logging.getLogger("iotdtls.workers")
#: Seconds a worker may take to start (a fresh interpreter importing iotdtls on a busy host).
READY_TIMEOUT = 60.0
#: Seconds a worker may take to close its associations and report after being asked to stop.
STOP_TIMEOUT = 10.0
#: Seconds `log_counters` waits for the workers' counters before it logs those it has.
COUNTERS_TIMEOUT = 5.0
COOKIE_SECRET_LENGTH = 32
MAX_WORKERS = 256
_STOP, _READY, _FAILED, _STOPPED = "stop", "ready", "failed", "stopped"
#: The parent's request for the counters now (`WorkerServer.log_counters`), and the answer's kind:
#: the request is (_COUNTERS, round), the answer (_COUNTERS, (round, stats)).
_COUNTERS = "counters"
#: Held (blocked) from the spawn of a worker until it has its own handling of them (and SIGINT,
#: which `hold_signals` always holds): the worker ignores SIGHUP and SIGUSR1 as it ignores
#: SIGINT (the parent decides), SIGTERM stops it cleanly.
_HELD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1})
#: A `ServerConfig`, or a picklable function that builds one (called in each worker, so that
#: credentials that do not pickle, such as private keys, are loaded there).
ConfigSource = ServerConfig | Callable[[], ServerConfig]
#: A picklable function that makes a worker's `SessionStore` (called in each worker).
SessionStoreFactory = Callable[[], SessionStore]


@dataclass(frozen=True)
class _WorkerSpec:
    """Everything a worker process needs, pickled to it at start."""

    index: int
    handler: aio.Handler | aio.DatagramHandler
    #: The configuration, or a function the worker calls to build it.
    config: ConfigSource
    #: The cookie master secret every worker uses.
    cookie_secret: bytes
    loop: str
    initializer: Callable[[], None] | None
    #: The function each worker calls to make its session store; None: its own in memory.
    session_store: SessionStoreFactory | None = None

    def server_config(self) -> ServerConfig:
        config = self.config() if callable(self.config) else self.config
        return dataclasses.replace(config, cookie_secret=self.cookie_secret)


# -- in the worker process ----------------------------------------------------------------------


def _worker_main(spec: _WorkerSpec, sock: socket.socket, conn: Any) -> None:
    """Entry point of a worker: serve on `sock` until told to stop, then report the counters."""
    ignore_held_sigint()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # drops one held while starting
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the parent asks through the pipe
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGUSR1})
    try:
        if spec.initializer is not None:
            spec.initializer()
        _label_records(spec.index)
        stats = loop.run(_serve_worker(spec, sock, conn), spec.loop)
    except Exception as exc:  # reported to the parent as one line, no traceback
        with contextlib.suppress(OSError):
            conn.send((_FAILED, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    with contextlib.suppress(OSError):
        conn.send((_STOPPED, stats))
    conn.close()


def _label_records(index: int) -> None:
    """Every line this worker logs starts with "worker INDEX: " (whatever the logging set-up
    the initializer made), but for those of `iotdtls.workers`, which name the worker and its
    pid themselves."""
    make = logging.getLogRecordFactory()
    label = f"worker {index}: "

    def labelled(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.name != logger.name:
            record.msg = label + str(record.msg)  # no % in the label: args format as before
        return record

    logging.setLogRecordFactory(labelled)


async def _serve_worker(spec: _WorkerSpec, sock: socket.socket, conn: Any) -> ServerStats:
    running = asyncio.get_running_loop()
    stop = asyncio.Event()
    running.add_signal_handler(signal.SIGTERM, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # one held stops it now
    server: aio.DtlsServer | None = None

    def on_parent() -> None:
        """The parent's "counters" of a round (send them with its number, go on), its "stop",
        or the end of the pipe when the parent has gone away (stop)."""
        try:
            asked = conn.recv()
        except (EOFError, OSError):
            asked = _STOP
        if not (isinstance(asked, tuple) and asked[0] == _COUNTERS):
            stop.set()
        elif server is not None:
            with contextlib.suppress(OSError):
                conn.send((_COUNTERS, (asked[1], server.stats)))

    running.add_reader(conn.fileno(), on_parent)
    host, port = sock.getsockname()[:2]
    store = None if spec.session_store is None else spec.session_store()
    if spec.session_store is not None and store is None:  # not a fallback to a store per worker
        raise TypeError(
            "session_store must be a function returning a SessionStore, and it returned None"
        )
    try:
        server = await aio.serve(spec.handler, host, port, spec.server_config(), sock=sock,
                                 session_store=store)
        logger.info(
            "worker %d (pid %d, %s) serving", spec.index, os.getpid(), loop.loop_name(running)
        )
        conn.send((_READY, os.getpid()))
        await stop.wait()
        running.remove_reader(conn.fileno())
        await server.close()
    finally:
        if isinstance(store, DirectorySessionStore):
            store.close()  # its directory's descriptor; a store of the application's is its own
    return server.stats


# -- in the parent ------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Any
    pid: int = 0
    stats: ServerStats | None = None
    #: The process has ended (`WorkerServer._on_exit`): no more answers from it.
    exited: bool = False
    #: The one line a worker that failed while serving sent before it ended ("Type: text").
    failure: str | None = None


class WorkerServer:
    """Running worker processes (see `serve`); `close()` stops them."""

    def __init__(self, address: tuple[Any, ...], workers: list[_Worker]) -> None:
        self._address = address
        self._workers = workers
        #: The stop of every worker, once `close()` has begun (shared by later calls).
        self._closing: asyncio.Task[ServerStats] | None = None
        #: Set when a worker process ends without having been asked to (it died, or a SIGTERM
        #: was sent to it alone): the pool goes on with one worker fewer, but most associations
        #: at the others are lost too (see the module docstring); `close()` it.
        self.worker_exited = asyncio.Event()
        #: The counters each worker sent since `log_counters` asked (by worker index), and the
        #: time limit of that wait.
        self._answers: dict[int, ServerStats] = {}
        self._answers_due: asyncio.TimerHandle | None = None
        #: The number of `log_counters`' latest request, which the answers carry back: one to
        #: an earlier request, come after its time limit, is not taken for this one's.
        self._round = 0
        running = asyncio.get_running_loop()
        for worker in workers:
            running.add_reader(worker.process.sentinel, self._on_exit, worker)
            running.add_reader(worker.conn.fileno(), self._on_message, worker)

    def __repr__(self) -> str:
        """`<WorkerServer on ADDRESS serving, N workers>` (those still running), or "closed"
        once `close()` has begun, as `aio.DtlsServer`'s."""
        where = format_address(self._address)
        if self._closing is not None:
            return f"<WorkerServer on {where} closed>"
        count = sum(not worker.exited for worker in self._workers)
        return f"<WorkerServer on {where} serving, {count} worker{'s' * (count != 1)}>"

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), shared by every worker."""
        return self._address[0], self._address[1]

    @property
    def sockname(self) -> tuple[Any, ...]:
        """The shared socket's whole name: for IPv6 (host, port, flowinfo, scope_id), whose
        scope id names the interface of a link-local address (RFC 4007 §11)."""
        return self._address

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, in worker order."""
        return [w.pid for w in self._workers]

    def _on_exit(self, worker: _Worker) -> None:
        worker.exited = True
        running = asyncio.get_running_loop()
        running.remove_reader(worker.process.sentinel)
        running.remove_reader(worker.conn.fileno())
        if self._closing is not None:
            return
        _collect_stats(worker, 0.0)  # a worker stopped by SIGTERM has reported them
        if worker.stats is None:
            how = how_it_ended(worker.process)
            logger.error(
                "worker %d (pid %d) ended unexpectedly%s%s",
                worker.index, worker.pid, f": {how}" if how else "",
                f" ({worker.failure})" if worker.failure else "",
            )
        else:  # SIGTERM sent to it, or to the whole group (the parent then stops too)
            logger.warning("worker %d (pid %d) stopped on SIGTERM", worker.index, worker.pid)
        self.worker_exited.set()
        if self._answers_due is not None and self._all_answered():  # it was the one awaited
            self._log_answers()

    def _on_message(self, worker: _Worker) -> None:
        """What a worker sent while serving: its counters that `log_counters` asked for, or
        those it sends as it stops (SIGTERM sent to it)."""
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            return
        if kind == _STOPPED:
            worker.stats = value
        elif kind == _FAILED:
            worker.failure = value
        elif kind == _COUNTERS and self._answers_due is not None:
            answered, stats = value
            if answered != self._round:  # late, to an earlier request
                return
            self._answers[worker.index] = stats
            if self._all_answered():
                self._log_answers()

    def _all_answered(self) -> bool:
        """Every worker still running has answered `log_counters`' latest request."""
        return all(w.index in self._answers for w in self._workers if not w.exited)

    def log_counters(self) -> None:
        """Ask every worker for its counters now (they go on serving), then log them as
        `close()` does, each line starting with "counters: " (``counters: worker 0 (pid 1234):
        handshakes ...``, ``counters: all 2 workers: ...``), once every worker still running has
        answered or after `COUNTERS_TIMEOUT` seconds (those that answered)."""
        if self._closing is not None:
            return
        if self._answers_due is not None:  # a request still waits: this one joins it
            return
        self._answers = {}
        self._round += 1
        self._answers_due = asyncio.get_running_loop().call_later(
            COUNTERS_TIMEOUT, self._log_answers
        )
        for worker in self._workers:
            if not worker.exited:
                with contextlib.suppress(OSError):
                    worker.conn.send((_COUNTERS, self._round))
        if self._all_answered():  # no worker left to ask
            self._log_answers()

    def _log_answers(self) -> None:
        if self._answers_due is not None:
            self._answers_due.cancel()
            self._answers_due = None
        answers = [(w, self._answers.get(w.index)) for w in self._workers]
        _log_sum("counters: ", answers, "answered", "counters: ")

    async def close(self) -> ServerStats:
        """Stop every worker (each closes its associations with close_notify), reap them, log
        each one's counters and their sum, and return the sum. Idempotent: a second call,
        even while the first is under way, waits for the same sum."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._stop())
        return await asyncio.shield(self._closing)

    async def _stop(self) -> ServerStats:
        running = asyncio.get_running_loop()
        if self._answers_due is not None:  # counters asked for: the stop's come instead
            self._answers_due.cancel()
            self._answers_due = None
        for worker in self._workers:
            running.remove_reader(worker.process.sentinel)
            running.remove_reader(worker.conn.fileno())
        await asyncio.to_thread(_stop_workers, self._workers)
        return _log_sum("", [(w, w.stats) for w in self._workers], "reported", "stopped: ")

    async def __aenter__(self) -> WorkerServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _log_sum(
    prefix: str, counted: list[tuple[_Worker, ServerStats | None]], verb: str, sum_prefix: str
) -> ServerStats:
    """Log each worker's counters (or that it sent none), each line starting with `prefix`,
    and their sum, starting with `sum_prefix` ("stopped: " at the stop, as a single server's
    line, "counters: " on request); return the sum."""
    total = ServerStats()
    reported = 0
    for worker, stats in counted:
        if stats is None:
            logger.info("%sworker %d (pid %d): no counters (it did not %s)", prefix,
                        worker.index, worker.pid, verb.removesuffix("ed"))
            continue
        logger.info("%sworker %d (pid %d): %s", prefix, worker.index, worker.pid,
                    stats.describe())
        total = total + stats
        reported += 1
    if reported == len(counted):
        logger.info("%sall %d workers: %s", sum_prefix, reported, total.describe())
    else:
        logger.info("%sthe %d of %d workers that %s: %s", sum_prefix, reported, len(counted),
                    verb, total.describe())
    return total


def _bind_reuseport(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` UDP sockets bound to one address with SO_REUSEPORT (the first resolves port 0).

    A port somebody already holds raises `OSError` (EADDRINUSE) as a single-process server's
    bind does, even when the holder is another reuseport group of ours (a second server
    started by mistake): the kernel would let us join it and share its clients out between
    two servers that know nothing of each other's associations. The first socket is the
    check: it binds without SO_REUSEPORT, which fails if any socket holds the port and, once
    bound, makes every other bind of the port fail; only then is SO_REUSEPORT set on it, and
    the others join it (the kernel reads the bound socket's flag at each later bind). No
    moment passes between the check and the binds in which a server started at the same
    time could pass the same check (probe BY: a separate check socket, closed before the
    binds, let 3 of 150 simultaneous starts share the port)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("workers need SO_REUSEPORT, which this system does not have")
    family, _, _, _, address = resolve(host, port)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            aio.enlarge_receive_buffer(sock)
            dual_stack(sock, address)  # the IPv4 port too, on an IPv6 wildcard
            if len(sockets) > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            if len(sockets) == 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                address = sock.getsockname()
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _MainFinder(pickle.Pickler):
    """Pickles to nowhere, noting the first function or class of `__main__` it meets (pickled
    by name, found in a worker only if the worker can rebuild `__main__`)."""

    found: str | None = None

    def reducer_override(self, obj: object) -> Any:
        if (self.found is None and isinstance(obj, type | types.FunctionType)
                and obj.__module__ == "__main__"):
            self.found = obj.__qualname__
        return NotImplemented  # pickled as usual


def _main_rebuilt_in_workers() -> bool:
    """Whether a spawned worker rebuilds the parent's `__main__`, as multiprocessing's spawn
    does: from the module name of ``python -m NAME`` (not a package's ``__main__``) or by
    running the script file again; never for ``python -c``, an interactive session or a
    notebook. A `__main__` file that cannot be run again (stdin's ``<stdin>``) would fail
    every worker: `ConfigError`."""
    main = sys.modules["__main__"]
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return False
    if not os.path.isfile(path):
        raise ConfigError(
            f"with workers, run a script file or a module: a worker (a fresh interpreter) "
            f"runs the main module again and cannot run {path}"
        )
    return True


def _check_picklable(spec: _WorkerSpec) -> None:
    finder = _MainFinder(io.BytesIO())
    try:
        finder.dump(spec)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(
            "with workers, the handler, the configuration (or the function that builds it), the "
            "initializer and the session store function must be picklable: module-level "
            "functions, no lambdas or closures; "
            f"pass a function building the ServerConfig for private keys ({exc})"
        ) from None
    if not _main_rebuilt_in_workers() and finder.found is not None:
        raise ConfigError(
            f"with workers, {finder.found} must be defined in a module or a script file: it is "
            "in the __main__ of python -c or a notebook, which a worker (a fresh interpreter) "
            "cannot import"
        )


def _start_workers(specs: list[_WorkerSpec], sockets: list[socket.socket]) -> list[_Worker]:
    workers: list[_Worker] = []
    try:
        with hold_signals(_HELD_SIGNALS):  # a Ctrl-C meanwhile comes when they are spawned
            for spec, sock in zip(specs, sockets, strict=True):
                process, conn = spawn(_worker_main, (spec, sock), f"iotdtls-worker-{spec.index}")
                sock.close()  # the worker holds the socket now; the parent must not read it
                workers.append(_Worker(spec.index, process, conn))
    except BaseException:
        _stop_workers(workers)
        raise
    finally:
        for sock in sockets:
            sock.close()
    return workers


def _wait_ready(workers: list[_Worker], timeout: float, cancelled: int) -> str | None:
    """Wait for every worker's "ready" (its pid), or until the file descriptor `cancelled` is
    readable (`serve` cancelled: no more reading, the stop reads the pipes from then on); the
    first failure as one line, or None."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        remaining = deadline - time.monotonic()
        try:
            readable = multiprocessing.connection.wait(
                [worker.conn, cancelled], max(0.0, remaining)
            )
            if cancelled in readable:
                return None
            if not readable:
                return f"worker {worker.index} did not start within {timeout:g} s"
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            return f"worker {worker.index} ended while starting"
        if kind != _READY:
            return f"worker {worker.index} failed: {value}"
        worker.pid = value
    return None


def _stop_workers(workers: list[_Worker], *, kill_starting: bool = False) -> None:
    """Ask every worker to stop, collect its counters, reap it (SIGKILL after STOP_TIMEOUT).

    With `kill_starting` (`serve` cancelled), a worker that has not said it is ready, nor
    anything else, is killed at once: it still holds SIGTERM and hears "stop" only once it
    serves, which a slow initializer may put off for long, and it has no association yet."""
    timeout = STOP_TIMEOUT
    for worker in workers:
        with contextlib.suppress(OSError):
            worker.conn.send(_STOP)
    for worker in workers:
        if kill_starting and worker.pid == 0 and not _has_spoken(worker):
            worker.process.kill()
            logger.info("worker %d (pid %d) killed while starting", worker.index,
                        worker.process.pid or 0)
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.stats is None:
            _collect_stats(worker, deadline - time.monotonic())
        if not reap(worker.process, max(0.1, deadline - time.monotonic())):
            logger.warning("worker %d (pid %d) did not stop; killed", worker.index, worker.pid)
        worker.conn.close()


def _has_spoken(worker: _Worker) -> bool:
    """Whether the worker's pipe holds something to read (its "ready", a failure) or has
    ended."""
    try:
        return bool(worker.conn.poll(0))
    except OSError:
        return True


def _collect_stats(worker: _Worker, timeout: float) -> None:
    """Wait up to `timeout` seconds for the worker's counters (sent as it stops), or the line
    saying why it failed."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(EOFError, OSError):
        while worker.conn.poll(max(0.0, deadline - time.monotonic())):
            kind, value = worker.conn.recv()
            if kind == _READY:  # its pid, unread when `serve` was cancelled
                worker.pid = value
            if kind == _STOPPED:
                worker.stats = value
                return
            if kind == _FAILED:
                worker.failure = value
                return


class _Serve(Opening[WorkerServer]):
    """What `serve` returns (see `iotdtls._opening.Opening`): `await` it, or `async with` it
    to close the workers at its end."""

    #: How a task running it names it (`Task.__repr__`).
    __name__ = "serve"

    def __init__(self, start: Callable[[], Coroutine[Any, Any, WorkerServer]]) -> None:
        super().__init__()
        self._start = start

    async def _open(self) -> WorkerServer:
        return await self._start()


def serve(
    handler: aio.Handler | aio.DatagramHandler,
    host: str,
    port: int,
    config: ConfigSource,
    *,
    workers: int,
    loop_choice: str = "auto",
    initializer: Callable[[], None] | None = None,
    session_store: SessionStoreFactory | None = None,
) -> _Serve:
    """Start `workers` processes serving `handler` on `host:port` (see the module docstring).
    Like `aio.serve`, what it returns is both a coroutine returning the `WorkerServer`
    (`server = await serve(...)`) and an async context manager that closes it at its end
    (`async with serve(...) as server:`).

    `config` is a `ServerConfig` or a function building one in each worker (needed for private
    keys, which do not pickle; it is also called once here, so mistakes show before any worker
    starts). `loop_choice` picks each worker's event loop (`iotdtls.loop`); `initializer` runs
    first in every worker (e.g. to set up logging, which a fresh interpreter does not inherit).
    `session_store` is a function each worker calls once to make its `SessionStore` (RES-1):
    to let the workers resume each other's sessions, one whose data lives outside the process
    (see the module docstring); without it each worker has its own cache in memory.
    Returns once every worker is serving; raises `ChildProcessError` if a worker does not
    start (the others stopped); cancelled
    while they start, its CancelledError comes once every worker is stopped (those still
    starting killed) and reaped, without holding up the event loop; an address that cannot be
    bound, the `OSError` naming it (as `aio.serve`). A wrong argument (`TypeError` for one of
    the wrong type, `ConfigError` for a wrong value or what cannot be passed to a worker)
    raises here, at the call, as with `aio.serve`: before any coroutine, socket or worker."""
    specs = _worker_specs(
        handler,
        host,
        port,
        config,
        workers=workers,
        loop_choice=loop_choice,
        initializer=initializer,
        session_store=session_store,
    )
    # The port checked (`_worker_specs`), as a plain int: the resolver refuses an IntEnum's.
    return _Serve(functools.partial(_start, specs, host, int(port)))


def _worker_specs(
    handler: aio.Handler | aio.DatagramHandler,
    host: str,
    port: int,
    config: ConfigSource,
    *,
    workers: int,
    loop_choice: str,
    initializer: Callable[[], None] | None,
    session_store: SessionStoreFactory | None,
) -> list[_WorkerSpec]:
    """`serve`'s arguments checked at the call, as `aio.serve` checks its own (a wrong one
    raises before any coroutine or socket exists), and what each worker is given."""
    aio.check_handler(handler)
    check_host(host, server=True)
    check_port(port, any_port=True)
    check_type("workers", workers, int)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"workers must be from 1 to {MAX_WORKERS}, got {workers}")
    loop.loop_factory(loop_choice)  # a missing uvloop is a ConfigError here, not in a worker
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be a function or None, got {type_name(initializer)}")
    if session_store is not None and not callable(session_store):
        raise TypeError(
            "session_store must be a function returning a SessionStore, or None, "
            f"got {type_name(session_store)}"
        )
    checked = config() if callable(config) else config
    check_type("config", checked, ServerConfig, " or a function returning one")
    secret = checked.cookie_secret or random_bytes(COOKIE_SECRET_LENGTH)
    specs = [
        _WorkerSpec(i, handler, config, secret, loop_choice, initializer, session_store)
        for i in range(workers)
    ]
    _check_picklable(specs[0])
    return specs


async def _start(specs: list[_WorkerSpec], host: str, port: int) -> WorkerServer:
    """What `serve` does, when its result is awaited or entered: bind, start the workers and
    wait for each to serve."""
    with listening_on(host, port):
        sockets = _bind_reuseport(host, port, len(specs))
    address = sockets[0].getsockname()
    started = _start_workers(specs, sockets)
    cancelled, cancel = os.pipe()  # written to when serve is cancelled: `_wait_ready` ends
    waiting = asyncio.ensure_future(
        asyncio.to_thread(_wait_ready, started, READY_TIMEOUT, cancelled)
    )
    try:
        failure = await asyncio.shield(waiting)
    except BaseException:  # cancelled while they start: no worker outlives the call
        os.write(cancel, b"x")  # the wait for "ready" ends; the stop reads the pipes
        await _run_to_its_end(_stop_cancelled_start(waiting, started))
        raise
    finally:  # `waiting` has ended either way (the stop awaits it): nobody reads the pipe
        os.close(cancelled)
        os.close(cancel)
    if failure is not None:
        await _run_to_its_end(asyncio.to_thread(_stop_workers, started))
        raise ChildProcessError(failure)
    return WorkerServer(tuple(address), started)


async def _stop_cancelled_start(waiting: asyncio.Future[str | None],
                                workers: list[_Worker]) -> None:
    """Once the wait for "ready" has ended, stop the workers in a thread, killing those still
    starting."""
    with contextlib.suppress(Exception):
        await waiting
    await asyncio.to_thread(functools.partial(_stop_workers, workers, kill_starting=True))


async def _run_to_its_end(stopping: Coroutine[Any, Any, None]) -> None:
    """Run `stopping` to its end even if the caller is cancelled meanwhile (again): the event
    loop runs on, and the caller's CancelledError comes once it has ended, no worker left."""
    task = asyncio.ensure_future(stopping)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
