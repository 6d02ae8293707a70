"""The multi-process server (`iotdtls.workers`) in this process: the cookie secret its workers
share, the sockets it binds, and what it does when a worker cannot start or dies.

`tests/test_cli.py` and `tests/test_scale.py` run `iotdtls server --workers N` and measure it;
these tests reach the parent's own code and the failures a command line rarely shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import functools
import gc
import itertools
import logging
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

from iotdtls import aio, workers
from iotdtls.cli.echo import echo
from iotdtls.errors import ConfigError
from iotdtls.sessions import DirectorySessionStore, MemorySessionStore, SessionState
from iotdtls.stats import ServerStats
from tests.aio_support import (
    WRONG_HANDLERS,
    client_config,
    eventually,
    log_to_file,
    run,
    server_config,
)
from tests.peers import LOCALHOST, V6OnlyByDefault, free_udp_port, v6only

GIVEN_SECRET = bytes(range(32))


def test_every_worker_gets_the_one_cookie_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6347 §4.2.1: a cookie made by one worker must verify at any other, so all get the
    configuration's secret, or one drawn for them all (a new one for each server)."""
    started: list[list[Any]] = []

    def capture(specs: list[Any], sockets: list[socket.socket]) -> list[Any]:
        started.append(specs)
        for sock in sockets:
            sock.close()
        raise RuntimeError("not started")

    monkeypatch.setattr(workers, "_start_workers", capture)
    for config in (server_config(), server_config(), server_config(cookie_secret=GIVEN_SECRET)):
        with pytest.raises(RuntimeError, match="not started"):
            asyncio.run(workers.serve(echo, LOCALHOST, 0, config, workers=3))
    drawn, drawn_again, given = started
    for specs in started:
        assert [spec.index for spec in specs] == [0, 1, 2]
        assert len({spec.cookie_secret for spec in specs}) == 1
        assert all(spec.server_config().cookie_secret == spec.cookie_secret for spec in specs)
    assert len(drawn[0].cookie_secret) == workers.COOKIE_SECRET_LENGTH
    assert drawn[0].cookie_secret != drawn_again[0].cookie_secret
    assert given[0].cookie_secret == GIVEN_SECRET


def failing_initializer() -> None:
    raise RuntimeError("no set-up here")


def slow_initializer() -> None:
    time.sleep(1.5)


@pytest.mark.parametrize(
    ("initializer", "ready_timeout", "message"),
    [
        (failing_initializer, 60.0, "worker 0 failed: RuntimeError: no set-up here"),
        (slow_initializer, 0.3, "worker 0 did not start within 0.3 s"),
    ],
    ids=["failed", "too-slow"],
)
def test_a_worker_that_does_not_start_stops_them_all(
    monkeypatch: pytest.MonkeyPatch, initializer: Any, ready_timeout: float, message: str
) -> None:
    monkeypatch.setattr(workers, "READY_TIMEOUT", ready_timeout)
    started = time.monotonic()
    with pytest.raises(ChildProcessError) as failed:
        asyncio.run(workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                  loop_choice="asyncio", initializer=initializer))
    assert str(failed.value) == message
    assert multiprocessing.active_children() == []
    assert time.monotonic() - started < 8.0


def test_a_serve_cancelled_while_it_stops_the_workers_of_a_failed_start_ends_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start that failed stops its workers before it raises ChildProcessError; the caller
    cancelled meanwhile (a `wait_for`'s timeout, say) still gets its CancelledError, once no
    worker is left, not the start's failure (M14: `_run_to_its_end`'s note of it)."""
    stopping = threading.Event()
    stop_workers = workers._stop_workers

    def slow_stop(started: list[Any], **kwargs: Any) -> None:
        stopping.set()
        time.sleep(0.5)  # the caller is cancelled during the stop
        stop_workers(started, **kwargs)

    monkeypatch.setattr(workers, "_stop_workers", slow_stop)

    async def main() -> None:
        task = asyncio.ensure_future(workers.serve(
            echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio",
            initializer=failing_initializer,
        ))
        assert await asyncio.to_thread(stopping.wait, 60.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_reported_and_the_rest_still_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        pool = await workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                   loop_choice="asyncio")
        try:
            where = f"{LOCALHOST}:{pool.address[1]}"
            assert repr(pool) == f"<WorkerServer on {where} serving, 2 workers>"
            first, second = pool.pids
            assert first != second and os.getpid() not in pool.pids
            async with aio.connect(*pool.address, client_config()) as conn:
                conn.send(b"before")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"before"
            os.kill(first, signal.SIGKILL)
            await asyncio.wait_for(pool.worker_exited.wait(), 5.0)
            # The pool goes on with the survivor (README: not replaced, the others not stopped).
            assert pool.pids == [first, second]
            assert repr(pool) == f"<WorkerServer on {where} serving, 1 worker>"
            async with aio.connect(*pool.address, client_config()) as conn:
                conn.send(b"after")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"after"
        finally:
            # Closed twice at once and once more after: the same sum each time.
            totals, again = await asyncio.gather(pool.close(), pool.close())
        assert again is totals and await pool.close() is totals
        assert repr(pool) == f"<WorkerServer on {where} closed>"
        # Only the survivor reports its counters, and the sum is its own.
        records = [r.getMessage() for r in caplog.records]
        assert f"worker 0 (pid {first}) ended unexpectedly: killed by SIGKILL" in records
        assert f"worker 1 (pid {second}): {totals.describe()}" in records
        assert f"worker 0 (pid {first}): no counters (it did not report)" in records
        assert f"stopped: the 1 of 2 workers that reported: {totals.describe()}" in records
        assert not any("all 2 workers" in m for m in records)
        assert not any(m.startswith("worker 0 (pid") and ": handshakes" in m for m in records)

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


def test_workers_serve_is_an_async_context_manager_as_aio_serve_is() -> None:
    """`async with workers.serve(...)` failed ("'coroutine' object does not support the
    asynchronous context manager protocol") though `aio.serve` supports it (probe CB): the
    workers serve inside the block and are stopped at its end. The pool's repr writes an IPv6
    address as `aio.DtlsServer`'s does, in brackets, and says closed after the block."""

    async def main() -> None:
        async with workers.serve(
            echo, "::", 0, server_config(), workers=2, loop_choice="asyncio"
        ) as pool:
            port = pool.address[1]
            assert repr(pool) == f"<WorkerServer on [::]:{port} serving, 2 workers>"
            async with aio.connect(LOCALHOST, port, client_config()) as conn:
                conn.send(b"inside")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"inside"
        assert repr(pool) == f"<WorkerServer on [::]:{port} closed>"
        assert multiprocessing.active_children() == []

    run(main(), limit=60.0)


def test_workers_serve_on_a_port_of_an_int_subclass() -> None:
    """An `IntEnum`'s member passes the check of a port, but the resolver refuses anything but
    a plain int ("Int or String expected", probe CF F3): the port is used as the int it is."""
    any_port = enum.IntEnum("Port", {"ANY": 0}).ANY

    async def main() -> None:
        async with workers.serve(
            echo, LOCALHOST, any_port, server_config(), workers=1, loop_choice="asyncio"
        ) as pool, aio.connect(LOCALHOST, pool.address[1], client_config()) as conn:
            conn.send(b"enum")
            assert await asyncio.wait_for(conn.recv(), 5.0) == b"enum"

    run(main(), limit=60.0)


async def exit_with_status_3(session: aio.ServerSession) -> None:
    """A handler that crashes its worker with an exit status (as a fatal error would)."""
    os._exit(3)


@pytest.mark.parametrize("told", [True, False])
def test_a_worker_that_exits_says_with_which_status(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, told: bool
) -> None:
    """The status is named when `how_it_ended` can tell it; when it cannot (not reapable in
    time), the line ends there rather than saying ": None"."""
    if not told:
        monkeypatch.setattr(workers, "how_it_ended", lambda process: None)

    async def main() -> None:
        pool = await workers.serve(exit_with_status_3, LOCALHOST, 0, server_config(),
                                   workers=1, loop_choice="asyncio")
        try:
            (pid,) = pool.pids
            with contextlib.suppress(Exception):  # the worker dies under the handshake
                async with aio.connect(*pool.address, client_config()) as conn:
                    conn.send(b"crash")
                    await asyncio.wait_for(conn.recv(), 1.0)
            await asyncio.wait_for(pool.worker_exited.wait(), 10.0)
        finally:
            await pool.close()
        records = [r.getMessage() for r in caplog.records]
        how = ": exited with status 3" if told else ""
        assert f"worker 0 (pid {pid}) ended unexpectedly{how}" in records

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


def close_fails() -> None:
    """A worker's initializer: its server's first `close` raises, a failure after it started
    (the loop's end closes it again, for real)."""
    patch = pytest.MonkeyPatch()

    async def failing_close(server: aio.DtlsServer) -> None:
        patch.undo()
        raise RuntimeError("no close here")

    patch.setattr(aio.DtlsServer, "close", failing_close)


def test_a_worker_stopped_by_sigterm_reports_its_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM stops a worker cleanly: it is no crash ("ended unexpectedly"), its counters
    count, and the server learns that it is one worker short."""

    async def main() -> None:
        pool = await workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                   loop_choice="asyncio")
        try:
            first = pool.pids[0]
            os.kill(first, signal.SIGTERM)
            await asyncio.wait_for(pool.worker_exited.wait(), 10.0)
        finally:
            totals = await pool.close()
        records = [r.getMessage() for r in caplog.records]
        assert f"worker 0 (pid {first}) stopped on SIGTERM" in records
        assert not any("ended unexpectedly" in m for m in records)
        # The sum's line starts "stopped: " as a single server's does.
        assert f"stopped: all 2 workers: {totals.describe()}" in records

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


def test_a_worker_that_fails_after_it_started_ends_with_status_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error out of a serving worker (its server's close, on SIGTERM) ends it with status 1,
    as one that fails to start: the parent's line says so, not "status 0", an exit on demand,
    and why (the line the worker sent, which the parent read and dropped; M9)."""

    async def main() -> None:
        pool = await workers.serve(echo, LOCALHOST, 0, server_config(), workers=1,
                                   loop_choice="asyncio", initializer=close_fails)
        try:
            (pid,) = pool.pids
            os.kill(pid, signal.SIGTERM)
            await asyncio.wait_for(pool.worker_exited.wait(), 10.0)
        finally:
            await pool.close()
        records = [r.getMessage() for r in caplog.records]
        assert (f"worker 0 (pid {pid}) ended unexpectedly: exited with status 1 "
                "(RuntimeError: no close here)") in records

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(("initializer", "ask"), [
    ("None", False), ("close_fails", False), ("None", True),
], ids=["stops", "fails", "asked-for-counters"])
def test_a_worker_whose_parent_has_gone_ends_without_a_traceback(
    initializer: str, ask: bool
) -> None:
    """The parent killed (nobody reads the pipe any more, perhaps right after asking for the
    counters: the worker, stopped, reads the request only once the parent has gone): the
    worker sees the pipe's end, stops, and cannot send the counters (or its failure); that is
    no error of its own, and nothing is written on the stderr it shares with the parent."""
    program = (
        "import asyncio, os, signal\n"
        "from iotdtls import workers\n"
        "from iotdtls.cli.echo import echo\n"
        "from tests.aio_support import server_config\n"
        "from tests.test_workers import close_fails\n"
        "async def main():\n"
        f"    pool = await workers.serve(echo, '{LOCALHOST}', 0, server_config(), workers=1,\n"
        f"                               loop_choice='asyncio', initializer={initializer})\n"
        "    print(pool.pids[0], flush=True)\n"
        f"    if {ask}:\n"
        "        os.kill(pool.pids[0], signal.SIGSTOP)\n"
        "        pool.log_counters()\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    worker = 0
    try:
        assert parent.wait(60.0) == 0
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        if ask:
            os.kill(worker, signal.SIGCONT)
        # The output ends when the worker, which holds stdout and stderr too, has ended.
        _, errors = parent.communicate(timeout=60.0)
    except BaseException:
        parent.kill()
        if worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        parent.communicate()
        raise
    assert "Traceback" not in errors, errors


def test_close_sums_every_workers_counters(caplog: pytest.LogCaptureFixture) -> None:
    """Eight clients (from eight ports, spread over the workers by the kernel's hash): the
    sum counts them all, and is the sum of what each worker logged."""

    async def main() -> None:
        async with await workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                       loop_choice="asyncio") as pool:
            for n in range(8):
                async with aio.connect(*pool.address, client_config()) as conn:
                    conn.send(b"%d" % n)
                    assert await asyncio.wait_for(conn.recv(), 5.0) == b"%d" % n
        totals = await pool.close()
        assert totals.handshakes_completed == 8
        assert totals.datagrams_received >= 8 * 4  # two flights, the datagram, close_notify

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    counted = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.match(r"worker \d \(pid \d+\): handshakes (\d+) completed", r.getMessage()))
    ]
    assert len(counted) == 2 and sum(counted) == 8


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_log_counters_logs_each_workers_counters_and_their_sum(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, loop_choice: str
) -> None:
    """`log_counters` (the CLI's SIGUSR1) has each worker send its counters and logs them as
    the stop does, each line starting "counters: ", and their sum; the workers go on serving.
    A worker's own log lines start with its label: a handshake is tied to the worker that made
    it."""
    logs = tmp_path / "workers.log"
    pids: list[int] = []

    async def main() -> None:
        async with await workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                       loop_choice=loop_choice,
                                       initializer=functools.partial(log_to_file, str(logs))
                                       ) as pool:
            async with aio.connect(*pool.address, client_config()) as conn:
                conn.send(b"one")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"one"
            pool.log_counters()
            pool.log_counters()  # while the first waits: one round of lines
            for _ in range(500):
                if any(r.getMessage().startswith("counters: all") for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # a second round, if the second call made one, is logged
            lines = [r.getMessage() for r in caplog.records]
            pids.extend(pool.pids)
        counters = [m for m in lines if m.startswith("counters: ")]
        assert [m.partition(": handshakes ")[0] for m in counters] == [
            f"counters: worker {i} (pid {pid})" for i, pid in enumerate(pids)
        ] + ["counters: all 2 workers"]
        assert counters[-1].startswith("counters: all 2 workers: handshakes 1 completed")

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    written = logs.read_text().splitlines()
    (complete,) = [line for line in written if "handshake complete" in line]
    assert re.match(r"iotdtls\.aio: worker [01]: handshake complete: peer 127\.0\.0\.1:", complete)
    # Each worker says it serves, with its pid, on the loop asked for (not the default).
    assert sorted(line for line in written if " serving" in line) == [
        f"iotdtls.workers: worker {i} (pid {pid}, {loop_choice}) serving"
        for i, pid in enumerate(pids)
    ]
    assert not any(re.match(r"iotdtls\.workers: worker \d: ", line)
                   for line in written)  # its own lines name it once, with its pid


class PlayedWorker:
    """A worker the test plays: `conn` is the pipe's worker end; writing to `exit_end` makes
    the process look ended (its sentinel readable)."""

    def __init__(self, index: int) -> None:
        parent_end, self.conn = multiprocessing.Pipe()
        sentinel, self.exit_end = socket.socketpair()
        self._ends = (parent_end, sentinel)
        process: Any = types.SimpleNamespace(
            sentinel=sentinel.fileno(), exitcode=-signal.SIGKILL, join=lambda timeout: None
        )
        self.worker = workers._Worker(index, process, parent_end, pid=1000 + index)

    def answer(self, handshakes: int) -> None:
        """Answer the parent's latest request for the counters, as a worker does."""
        kind, number = self.conn.recv()
        assert kind == "counters"
        self.conn.send(("counters", (number, ServerStats(handshakes_completed=handshakes))))

    def close(self) -> None:
        for end in (self.conn, self.exit_end, *self._ends):
            end.close()


def test_a_failure_line_still_in_the_pipe_when_the_worker_ends_is_taken() -> None:
    """The parent may see a worker's end before its failure line (both ready at once): the
    counters' wait of `_on_exit` takes that line too, where it went on past it."""
    played = PlayedWorker(0)
    try:
        played.conn.send(("failed", "RuntimeError: no close here"))
        workers._collect_stats(played.worker, 0.0)
        assert (played.worker.failure, played.worker.stats) == (
            "RuntimeError: no close here", None)
    finally:
        played.close()


def test_log_counters_takes_only_answers_to_its_own_request_from_running_workers(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that came after `COUNTERS_TIMEOUT` was taken for the next request's,
    completing it at once with old figures; a worker that had exited was still waited for, so
    every later request waited the whole timeout. Each request now has a number the answer
    carries back, and only running workers are waited for."""
    monkeypatch.setattr(workers, "COUNTERS_TIMEOUT", 0.3)

    def sums() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if re.match(r"counters: (all|the)", r.getMessage())]

    async def main() -> None:
        played = [PlayedWorker(0), PlayedWorker(1)]
        pool = workers.WorkerServer((LOCALHOST, 5), [p.worker for p in played])
        running = asyncio.get_running_loop()
        try:
            pool.log_counters()  # worker 1 answers too late
            played[0].answer(1)
            assert await eventually(lambda: len(sums()) == 1)
            assert sums()[0].startswith("counters: the 1 of 2 workers that answered: ")
            pool.log_counters()
            played[1].answer(99)  # its answer to the first request, late
            played[0].answer(2)
            await asyncio.sleep(0.1)
            assert len(sums()) == 1  # not taken for this request's
            played[1].answer(3)
            assert await eventually(lambda: len(sums()) == 2)
            assert sums()[1].startswith("counters: all 2 workers: handshakes 5 completed")
            played[1].exit_end.send(b"x")  # worker 1 ends
            await asyncio.wait_for(pool.worker_exited.wait(), 5.0)
            started = running.time()
            pool.log_counters()
            played[0].answer(4)
            assert await eventually(lambda: len(sums()) == 3, 0.2)  # before the time limit
            assert running.time() - started < 0.25
            assert sums()[2].startswith("counters: the 1 of 2 workers that answered: "
                                        "handshakes 4 completed")
        finally:
            for p in played:
                running.remove_reader(p.worker.process.sentinel)
                running.remove_reader(p.worker.conn.fileno())
                p.close()

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=20.0)


def test_a_worker_builds_its_configuration_with_the_shared_secret() -> None:
    """What each worker runs (in its own process): the configuration, or the function that
    builds it, with the cookie secret of all the workers."""
    given = workers._WorkerSpec(0, echo, server_config(), GIVEN_SECRET, "asyncio", None)
    built = workers._WorkerSpec(1, echo, server_config, GIVEN_SECRET, "asyncio", None)
    for spec in (given, built):
        config = spec.server_config()
        assert config.cookie_secret == GIVEN_SECRET
        assert config.psk_store == server_config().psk_store


def test_workers_refuse_what_cannot_be_sent_to_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    class Local(aio.DatagramHandler):  # a local class: its instances do not pickle
        pass

    async def start() -> None:
        await workers.serve(Local(), LOCALHOST, 0, server_config(), workers=1)

    with pytest.raises(ConfigError, match=r"^with workers, the handler, .* must be picklable"):
        asyncio.run(start())
    with pytest.raises(ConfigError, match=r"^port must be from 0 to 65535, got 70000$"):
        asyncio.run(workers.serve(echo, LOCALHOST, 70000, server_config(), workers=1))
    monkeypatch.setattr(workers, "MAX_WORKERS", 2)
    for count in (0, 3):
        with pytest.raises(ConfigError) as refused:
            asyncio.run(workers.serve(echo, LOCALHOST, 0, server_config(), workers=count))
        assert str(refused.value) == f"workers must be from 1 to 2, got {count}"


async def main_echo(session: aio.ServerSession) -> None:
    """Stands for a handler defined in `__main__` (see `a_main_module`)."""


class MainEcho(aio.DatagramHandler):
    """Stands for a handler class defined in `__main__`."""


def main_config() -> workers.ServerConfig:
    return server_config()


@pytest.fixture
def a_main_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A `__main__` holding `main_echo`, `MainEcho` and `main_config` (pickled by name from
    it), as `python -c` has: no file, no module name; no worker is started."""
    main = types.ModuleType("__main__")
    for thing in (main_echo, MainEcho, main_config):
        monkeypatch.setattr(thing, "__module__", "__main__")
        setattr(main, thing.__name__, thing)
    monkeypatch.setitem(sys.modules, "__main__", main)

    def not_started(specs: list[Any], sockets: list[socket.socket]) -> list[Any]:
        for sock in sockets:
            sock.close()
        raise RuntimeError("not started")

    monkeypatch.setattr(workers, "_start_workers", not_started)
    return main


@pytest.mark.parametrize(("arguments", "name"), [
    ({"handler": main_echo}, "main_echo"),
    ({"handler": MainEcho()}, "MainEcho"),
    ({"config": main_config}, "main_config"),
    ({"initializer": functools.partial(main_config)}, "main_config"),
    ({"session_store": main_config}, "main_config"),
], ids=["function", "instance", "config", "initializer", "session-store"])
def test_workers_refuse_what_a_worker_cannot_find_in_main(
    a_main_module: types.ModuleType, arguments: dict[str, Any], name: str
) -> None:
    """`python -c`, a notebook: a spawned worker does not rebuild such a `__main__`, so what is
    defined there would fail every worker ("Can't get attribute"); refused before any starts."""
    given = {"handler": echo, "config": server_config(), **arguments}
    with pytest.raises(ConfigError) as refused:
        asyncio.run(workers.serve(given.pop("handler"), LOCALHOST, 0, given.pop("config"),
                                  workers=2, **given))
    assert str(refused.value) == (
        f"with workers, {name} must be defined in a module or a script file: it is in the "
        "__main__ of python -c or a notebook, which a worker (a fresh interpreter) cannot import"
    )


def test_workers_from_a_script_file_or_stdin(a_main_module: types.ModuleType) -> None:
    """A script file is run again in each worker (its functions are found there); stdin's
    ``<stdin>`` cannot be, whatever the handler."""
    a_main_module.__file__ = __file__
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(workers.serve(main_echo, LOCALHOST, 0, server_config(), workers=2))
    a_main_module.__file__ = "<stdin>"
    with pytest.raises(ConfigError) as refused:
        asyncio.run(workers.serve(echo, LOCALHOST, 0, server_config(), workers=2))
    assert str(refused.value) == (
        "with workers, run a script file or a module: a worker (a fresh interpreter) runs the "
        "main module again and cannot run <stdin>"
    )


def test_workers_started_from_python_c_with_a_handler_of_main_are_refused() -> None:
    program = (
        "import asyncio, iotdtls, iotdtls.workers\n"
        "async def echo(session):\n"
        "    pass\n"
        "config = iotdtls.ServerConfig(psk_store={b'a': bytes(16)})\n"
        f"asyncio.run(iotdtls.workers.serve(echo, '{LOCALHOST}', 0, config, workers=2))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60.0, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "iotdtls.errors.ConfigError: with workers, echo must be defined in a module or a script "
        "file: it is in the __main__ of python -c or a notebook, which a worker (a fresh "
        "interpreter) cannot import"
    )


@pytest.mark.parametrize(("wrong", "message"), [
    ({"config": client_config()},
     "config must be a ServerConfig or a function returning one, got ClientConfig"),
    ({"config": client_config},
     "config must be a ServerConfig or a function returning one, got ClientConfig"),
    ({"initializer": "setup_logging"}, "initializer must be a function or None, got str"),
    ({"session_store": MemorySessionStore()},
     "session_store must be a function returning a SessionStore, or None, got "
     "MemorySessionStore"),
    ({"workers": "2"}, "workers must be an int, got str"),
])
def test_workers_refuse_an_argument_of_the_wrong_type_before_starting(
    wrong: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_socket(*args: object) -> socket.socket:
        raise AssertionError("a socket was made for arguments that were refused")

    async def start() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        arguments = {"config": server_config(), "workers": 1, **wrong}
        await workers.serve(echo, LOCALHOST, 0, **arguments)

    with pytest.raises(TypeError) as refused:
        asyncio.run(start())
    assert str(refused.value) == message

@pytest.mark.parametrize(("wrong", "error"), [
    ({"workers": "2"}, TypeError),
    ({"workers": 0}, ConfigError),
    ({"host": ""}, ConfigError),
    ({"port": 70000}, ValueError),
    ({"config": client_config()}, TypeError),
    ({"handler": "echo"}, TypeError),
    ({"config": lambda: server_config()}, ConfigError),  # cannot be pickled for a worker
])
def test_workers_serve_checks_its_arguments_at_the_call(
    wrong: dict[str, Any], error: type[Exception]
) -> None:
    """As `aio.serve`: a wrong argument raises from the call itself, with no event loop
    running, before any coroutine exists (none is left never awaited), rather than only
    once its result is awaited or entered."""
    arguments = {"handler": echo, "host": LOCALHOST, "port": 0, "config": server_config(),
                 "workers": 1, **wrong}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error):
            workers.serve(**arguments)
        gc.collect()
    assert [w.message for w in caught if w.category is RuntimeWarning] == []


def test_workers_refuse_an_empty_host_in_one_line() -> None:
    """"" made the resolver raise socket.gaierror; as aio.serve, the workers say what to give."""
    with pytest.raises(ConfigError) as refused:
        asyncio.run(workers.serve(echo, "", 0, server_config(), workers=1))
    assert str(refused.value).startswith('host is empty: give "0.0.0.0" (every IPv4 address)')


def test_workers_refuse_host_none_in_one_line() -> None:
    """None bound every address, as aio.serve did (probe CA): refused the same way."""
    unset: Any = None
    with pytest.raises(TypeError) as refused:
        asyncio.run(workers.serve(echo, unset, 0, server_config(), workers=1))
    assert str(refused.value).startswith('host is None: give "0.0.0.0" (every IPv4 address)')


@pytest.mark.parametrize(("handler", "message"), WRONG_HANDLERS)
def test_workers_refuse_a_handler_that_cannot_handle_a_peer(handler: Any, message: str) -> None:
    with pytest.raises(TypeError) as refused:
        asyncio.run(workers.serve(handler, LOCALHOST, 0, server_config(), workers=1))
    assert str(refused.value) == message

@pytest.mark.parametrize("count", [1, 2])
def test_workers_serve_on_the_port_asked_for(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """One worker, or as many as allowed (MAX_WORKERS lowered to 2), on a given port; the
    configuration given as a function building it."""
    monkeypatch.setattr(workers, "MAX_WORKERS", 2)
    port = free_udp_port()

    async def main() -> None:
        async with await workers.serve(echo, LOCALHOST, port, server_config, workers=count,
                                       loop_choice="asyncio") as pool:
            assert pool.address == (LOCALHOST, port) and len(pool.pids) == count
            async with aio.connect(LOCALHOST, port, client_config()) as conn:
                conn.send(b"hi")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"hi"

    run(main(), limit=60.0)


@pytest.mark.parametrize("given", [False, True], ids=["port-0", "given-port"])
def test_the_workers_sockets_share_one_port_and_a_large_receive_buffer(given: bool) -> None:
    """Every socket on the port asked for (port 0: the one the first socket got), each with
    the single-process server's receive buffer (a burst of ClientHellos waits instead of
    being dropped), up to what the kernel allows (net.core.rmem_max; Linux reports it
    doubled)."""
    allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
    port = free_udp_port() if given else 0
    sockets = workers._bind_reuseport(LOCALHOST, port, 3)
    try:
        names = {sock.getsockname() for sock in sockets}
        assert len(sockets) == 3 and len(names) == 1
        ((host, bound),) = names
        assert host == LOCALHOST and bound != 0 and (bound == port or not given)
        for sock in sockets:
            buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert buffer >= 2 * min(aio.SERVER_RECEIVE_BUFFER, allowed)
    finally:
        for sock in sockets:
            sock.close()


def test_the_workers_sockets_on_the_ipv6_unspecified_address_take_ipv4_too() -> None:
    """On a host whose IPv6 sockets take no IPv4 by default, workers on "::" heard IPv6 only
    (README calls `[::]:PORT` every address): their sockets now have IPV6_V6ONLY off, the
    port is taken for IPv4 too; a specific IPv6 address is left as it is."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workers.socket, "socket", V6OnlyByDefault)
        port = free_udp_port()
        sockets = workers._bind_reuseport("::", port, 2)
        try:
            assert [v6only(sock) for sock in sockets] == [0, 0]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ipv4, \
                    pytest.raises(OSError) as taken:
                ipv4.bind((LOCALHOST, port))
            assert taken.value.errno == errno.EADDRINUSE
        finally:
            for sock in sockets:
                sock.close()
        for sock in workers._bind_reuseport("::1", 0, 1):
            assert v6only(sock) == 1
            sock.close()


def test_a_second_server_on_a_port_in_use_is_refused() -> None:
    """A second set of workers on the port of a running one (or of anything else) fails like a
    single-process server's bind, instead of joining its SO_REUSEPORT group and taking a share
    of its clients; the failed attempt leaves no socket open."""
    port = free_udp_port()
    running = workers._bind_reuseport(LOCALHOST, port, 2)
    opened: list[socket.socket] = []
    real_socket = socket.socket

    def counting_socket(*args: Any, **kwargs: Any) -> socket.socket:
        sock = real_socket(*args, **kwargs)
        opened.append(sock)
        return sock

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(workers.socket, "socket", counting_socket)
            with pytest.raises(OSError) as refused:
                workers._bind_reuseport(LOCALHOST, port, 2)
        assert refused.value.errno == errno.EADDRINUSE
        assert opened and all(sock.fileno() == -1 for sock in opened)
    finally:
        for sock in running:
            sock.close()
    for sock in workers._bind_reuseport(LOCALHOST, port, 2):  # free again: bound as before
        sock.close()


@pytest.mark.parametrize("at", [1, 2, 3])
def test_two_servers_started_at_once_never_share_the_port(at: int) -> None:
    """A second set of workers binding while the first is between its check and its binds
    (here: just before the first's `at`-th socket binds): exactly one of the two gets the port,
    never both (probe BY: 3 of 150 simultaneous starts shared it, when the check was a socket
    closed before the binds)."""
    port = free_udp_port()
    calls = 0
    second: list[socket.socket] | OSError | None = None
    enlarge = aio.enlarge_receive_buffer

    def start_the_second(sock: socket.socket) -> None:
        nonlocal calls, second
        enlarge(sock)
        calls += 1
        if calls == at:
            try:
                second = workers._bind_reuseport(LOCALHOST, port, 2)
            except OSError as exc:
                second = exc

    first: list[socket.socket] | OSError
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aio, "enlarge_receive_buffer", start_the_second)
        try:
            first = workers._bind_reuseport(LOCALHOST, port, 3)
        except OSError as exc:
            first = exc
    bound = [group for group in (first, second) if isinstance(group, list)]
    try:
        assert len(bound) == 1
        refused = second if bound[0] is first else first
        assert isinstance(refused, OSError) and refused.errno == errno.EADDRINUSE
    finally:
        for group in bound:
            for sock in group:
                sock.close()


def test_workers_serve_names_the_address_it_cannot_listen_on() -> None:
    """As `aio.serve`: the bind's error names the address ("[Errno 98] Address already in use"
    alone before), same errno, and no worker starts."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind((LOCALHOST, 0))
            port = holder.getsockname()[1]
            with pytest.raises(OSError) as refused:
                await workers.serve(echo, LOCALHOST, port, server_config(), workers=2)
        assert refused.value.errno == errno.EADDRINUSE
        assert refused.value.strerror == (
            f"cannot listen on {LOCALHOST}:{port}: Address already in use"
        )

    run(main())


def test_a_start_cancelled_while_the_workers_start_stops_them() -> None:
    """`workers.serve` cancelled (a timeout around it, Ctrl-C) while its workers are still
    starting stops and reaps them: none outlives the call."""

    async def main() -> None:
        starting = asyncio.ensure_future(
            workers.serve(echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio")
        )
        await asyncio.sleep(0)  # the workers are spawned; serve waits for them to be ready
        assert len(multiprocessing.active_children()) == 2
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


def test_workers_killed_while_starting_are_logged_by_their_pids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A start cancelled while its workers are still in their initializer kills them and
    logs each one's line by its pid (M14: `_stop_workers` 19 wrote pid 0)."""

    pids: list[int] = []

    async def main() -> None:
        starting = asyncio.ensure_future(workers.serve(
            echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio",
            initializer=slow_initializer,
        ))
        await asyncio.sleep(0.3)
        pids.extend(child.pid or 0 for child in multiprocessing.active_children())
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    said = [
        int(found.group(1)) for record in caplog.records
        if (found := re.search(r"\(pid (\d+)\) killed while starting", record.getMessage()))
    ]
    assert len(pids) == 2 and sorted(said) == sorted(pids)


def worker_0_slow_initializer(started: str) -> None:
    """Worker 0 stays in its initializer (killed there); any other writes its pid to the
    file `started` and starts at once."""
    if multiprocessing.current_process().name.endswith("-0"):
        time.sleep(30.0)
    else:
        Path(started).write_text(str(os.getpid()))


def test_a_cancelled_start_kills_only_the_workers_that_have_not_said_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """`serve` cancelled while worker 0 is still in its initializer and worker 1 has said
    "ready" (unread: the wait for "ready" reads the workers in order) kills worker 0 alone:
    worker 1 is stopped as a running worker is, its "ready" read then (M17: `_has_spoken` 1,
    which took every worker for one still starting, killed both)."""
    started = tmp_path / "started"

    async def main() -> None:
        starting = asyncio.ensure_future(workers.serve(
            echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio",
            initializer=functools.partial(worker_0_slow_initializer, str(started)),
        ))
        assert await eventually(started.exists, timeout=30.0)
        await asyncio.sleep(2.0)  # worker 1 serves and says "ready"
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    killed = [record.getMessage() for record in caplog.records
              if "killed while starting" in record.getMessage()]
    assert len(killed) == 1 and killed[0].startswith("worker 0 (pid "), killed
    assert multiprocessing.active_children() == []


def test_a_ready_worker_that_does_not_stop_after_a_cancelled_start_is_named_by_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """As above, worker 1 stopped (SIGSTOP) once it has said "ready": the stop reads that
    "ready", its pid, and kills it after `STOP_TIMEOUT`, naming it by that pid (M17:
    `_collect_stats` 15 and 16 left it 0 and None)."""
    monkeypatch.setattr(workers, "STOP_TIMEOUT", 1.0)
    started = tmp_path / "started"
    pid: list[int] = []

    async def main() -> None:
        starting = asyncio.ensure_future(workers.serve(
            echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio",
            initializer=functools.partial(worker_0_slow_initializer, str(started)),
        ))
        assert await eventually(lambda: started.exists() and started.read_text(), timeout=30.0)
        await asyncio.sleep(2.0)  # worker 1 serves and says "ready"
        pid.append(int(started.read_text()))
        os.kill(pid[0], signal.SIGSTOP)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    said = [record.getMessage() for record in caplog.records]
    assert f"worker 1 (pid {pid[0]}) did not stop; killed" in said, said
    assert len([line for line in said if "killed while starting" in line]) == 1
    assert multiprocessing.active_children() == []


def test_a_ctrl_c_while_the_workers_spawn_ends_the_start_with_every_worker_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a probe: a Ctrl-C (SIGINT to this process) that arrived while the workers were
    being spawned was dropped (SIGINT was ignored in the parent for those milliseconds) and
    serve() returned a running pool. Now SIGINT is held (blocked) while they spawn, and
    delivered once they are: asyncio.run's handler cancels the start, which stops every
    worker, then raises KeyboardInterrupt. The workers started with it held drop it."""
    real_spawn = workers.spawn
    spawned: list[Any] = []
    served: list[workers.WorkerServer] = []

    def spawn_with_ctrl_c(*args: Any) -> Any:
        if not spawned:
            os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, in this instant
        spawned.append(real_spawn(*args))
        return spawned[-1]

    async def main() -> None:
        served.append(await workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                          loop_choice="asyncio"))
        await served[0].close()  # the Ctrl-C was lost

    monkeypatch.setattr(workers, "spawn", spawn_with_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert served == [] and len(spawned) == 2
    for process, _ in spawned:
        assert not process.is_alive() and process.exitcode is not None
        with pytest.raises(ProcessLookupError):  # reaped
            os.kill(process.pid, 0)
    assert multiprocessing.active_children() == []


def start_slowly(pids: str, seconds: float) -> None:
    """A worker's initializer: add its pid to the file `pids`, then take `seconds` to start."""
    with open(pids, "a") as file:
        file.write(f"{os.getpid()}\n")
    time.sleep(seconds)


def test_a_start_cancelled_while_the_workers_start_leaves_the_loop_running(
    tmp_path: Path,
) -> None:
    """Found by a probe: `wait_for(workers.serve(...), T)` while the workers were still in a
    slow initializer stopped them on the event loop itself, which stood still until they had
    started and heard "stop" (the whole initializer, up to STOP_TIMEOUT). The stop now runs in
    a thread, a worker still starting is killed (it holds SIGTERM until it serves, and has
    no association yet), and the TimeoutError comes once every worker is reaped."""
    pids = tmp_path / "pids"
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def main() -> None:
        ticking = asyncio.ensure_future(tick())
        starting = asyncio.ensure_future(workers.serve(
            echo, LOCALHOST, 0, server_config(), workers=2, loop_choice="asyncio",
            initializer=functools.partial(start_slowly, str(pids), 4.0)))
        assert await eventually(lambda: pids.exists() and len(pids.read_text().split()) == 2,
                                timeout=20.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(starting, 0.2)
        took = time.monotonic() - started
        for pid in map(int, pids.read_text().split()):
            with pytest.raises(ProcessLookupError):  # ended and reaped before the TimeoutError
                os.kill(pid, 0)
        await asyncio.sleep(0.1)  # a tick after the stop, if it held the loop
        ticking.cancel()
        stalls = [b - a for a, b in itertools.pairwise(ticks) if b > started]
        assert took < 2.0 and max(stalls) < 0.5, (took, max(stalls))

    run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


def test_a_failed_start_stops_the_workers_already_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_spawn = workers.spawn
    spawned: list[Any] = []

    def spawn_once(*args: Any) -> Any:
        if spawned:
            raise OSError("no more processes")
        spawned.append(real_spawn(*args))
        return spawned[-1]

    monkeypatch.setattr(workers, "spawn", spawn_once)
    with pytest.raises(OSError, match="no more processes"):
        asyncio.run(workers.serve(echo, LOCALHOST, 0, server_config(), workers=2,
                                  loop_choice="asyncio"))
    ((process, _),) = spawned
    assert not process.is_alive() and process.exitcode == 0  # asked to stop, not killed
    assert multiprocessing.active_children() == []


class Stuck(aio.DatagramHandler):
    """A handler that blocks its worker's event loop (so that it cannot hear "stop")."""

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        time.sleep(30.0)


def test_a_worker_that_does_not_stop_is_killed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "STOP_TIMEOUT", 1.0)

    async def main() -> None:
        pool = await workers.serve(Stuck(), LOCALHOST, 0, server_config(), workers=1,
                                   loop_choice="asyncio")
        (pid,) = pool.pids
        async with aio.connect(*pool.address, client_config()) as conn:
            conn.send(b"block")
            await asyncio.sleep(0.2)
        started = time.monotonic()
        totals = await pool.close()
        assert time.monotonic() - started < 5.0
        assert totals == workers.ServerStats()  # the killed worker reported nothing
        assert f"worker 0 (pid {pid}) did not stop; killed" in [
            r.getMessage() for r in caplog.records
        ]

    with caplog.at_level(logging.INFO, logger="iotdtls.workers"):
        run(main(), limit=60.0)
    assert multiprocessing.active_children() == []


class CountedDirectoryStore(DirectorySessionStore):
    """`iotdtls.sessions.DirectorySessionStore` on ``DIRECTORY/sessions``, whose sessions live
    outside the process. Each one made adds its pid to the file ``DIRECTORY/made``, to count
    the calls of the factory, and to ``DIRECTORY/closed`` as it is closed."""

    def __init__(self, directory: str) -> None:
        super().__init__(Path(directory) / "sessions")
        self.directory = Path(directory)
        with (self.directory / "made").open("a") as made:
            made.write(f"{os.getpid()}\n")

    def close(self) -> None:
        super().close()
        with (self.directory / "closed").open("a") as closed:
            closed.write(f"{os.getpid()}\n")


class WhoServes(aio.DatagramHandler):
    """Answers every datagram with the pid of the worker serving it and whether the
    association resumed a session."""

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        session.send(b"%d %d" % (os.getpid(), session.resumed))


@pytest.mark.parametrize("shared", [True, False], ids=["shared-store", "own-caches"])
def test_workers_resume_each_others_sessions_only_with_a_shared_store(
    tmp_path: Path, shared: bool
) -> None:
    """A client resuming from a new source port each time lands on either worker (the kernel
    hashes the 4-tuple). With a `session_store` factory whose data lives outside the process,
    called once in each worker, every round resumes, on both workers; without one, the worker
    that did not make the session runs a full handshake (its cache is its own)."""
    factory = functools.partial(CountedDirectoryStore, str(tmp_path)) if shared else None

    async def ask(port: int, session: SessionState | None) -> tuple[int, bool, Any]:
        async with aio.connect(LOCALHOST, port, client_config(), session=session) as conn:
            conn.send(b"who")
            pid, resumed = (await asyncio.wait_for(conn.recv(), 5.0)).split()
            assert conn.resumed == (resumed == b"1")
            return int(pid), conn.resumed, conn.session

    pids: list[int] = []

    async def main() -> None:
        async with await workers.serve(WhoServes(), LOCALHOST, 0, server_config(), workers=2,
                                       loop_choice="asyncio", session_store=factory) as pool:
            port = pool.address[1]
            maker, resumed, session = await ask(port, None)
            assert not resumed and session is not None
            seen = {maker}
            for _ in range(40):  # both workers hit: all but certain (1 in 2**39 not)
                pid, resumed, _ = await ask(port, session)
                seen.add(pid)
                assert resumed == (shared or pid == maker), (pid, maker)
                if len(seen) == 2:
                    break
            assert seen == set(pool.pids)
            if shared:
                made = (tmp_path / "made").read_text().split()
                assert sorted(map(int, made)) == sorted(pool.pids)  # once in each worker
            pids.extend(pool.pids)

    run(main(), limit=90.0)
    assert multiprocessing.active_children() == []
    if shared:  # each worker closed its store (the directory's descriptor) as it ended
        assert sorted(map(int, (tmp_path / "closed").read_text().split())) == sorted(pids)


def store_forgotten() -> None:
    """A session_store factory that forgot its `return`."""
    MemorySessionStore()


def store_class() -> type[MemorySessionStore]:
    """A session_store factory that returns the class, not a store."""
    return MemorySessionStore


@pytest.mark.parametrize(("factory", "message"), [
    (store_forgotten,
     "worker 0 failed: TypeError: session_store must be a function returning a SessionStore, "
     "and it returned None"),
    (store_class,
     "worker 0 failed: TypeError: session_store must be a SessionStore instance, got the class "
     "MemorySessionStore: pass MemorySessionStore()"),
], ids=["none", "class"])
def test_a_session_store_factory_that_makes_no_store_stops_the_workers(
    factory: Any, message: str
) -> None:
    """A factory returning None silently gave each worker its own store in memory (sessions
    not shared, nothing said); it is refused as a factory returning a dict is."""
    with pytest.raises(ChildProcessError) as failed:
        asyncio.run(workers.serve(echo, LOCALHOST, 0, server_config(), workers=1,
                                  loop_choice="asyncio", session_store=factory))
    assert str(failed.value) == message
    assert multiprocessing.active_children() == []
