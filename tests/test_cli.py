"""The command line (`python -m iotdtls`), run as subprocesses: echo server and client, their
options, their exit statuses and messages, and both against OpenSSL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from iotdtls import aio
from iotdtls.proxy import LossyProxy
from iotdtls.sessions import SessionState
from tests.aio_support import client_config
from tests.interop_support import (
    CLI,
    CREDENTIALS,
    HELLO_VERIFY_REQUEST,
    KEYLOG_LINE,
    SERVER_MODES,
    WRONG_PSK_HEX,
    AlertingServer,
    cli_server,
    handshake_types,
    run_client,
)
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK_HEX,
    PeerProcess,
    free_udp_port,
    openssl_psk_client,
    openssl_psk_server,
    require_peer,
)

T = TypeVar("T")


def stop_with(server: PeerProcess, sig: signal.Signals) -> int | None:
    os.kill(server.pid, sig)
    return server.wait(10.0)


def worker_pids(server: PeerProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+ \(pid (\d+), \w+\) serving",
                                           server.output)]


def assert_stopped_cleanly(server: PeerProcess, mode: list[str], sig: signal.Signals,
                           handshakes: int) -> None:
    """Exit status 0, no traceback, the counters logged (summed over the workers, which are
    all gone)."""
    pids = worker_pids(server)
    assert stop_with(server, sig) == 0, server.output
    assert "Traceback" not in server.output
    assert "did not stop" not in server.output
    assert f"handshakes {handshakes} completed" in server.output
    if mode:
        assert len(pids) == 2, server.output
        assert re.search(rf"all 2 workers: handshakes {handshakes} completed", server.output)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


@SERVER_MODES
def test_cli_echo_logs_handshakes_and_exits_0_on_sigterm(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        done = run_client(port, ["first line", "second line"], *CREDENTIALS)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["first line", "second line"]
        assert done.stderr == ""
        line = server.wait_for_output(r"handshake complete: peer 127\.0\.0\.1:\d+ psk "
                                      r"identity b'Client_identity'", 5.0)
        assert line
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)
    assert server.output.count("handshake complete") == 1


@SERVER_MODES
def test_cli_server_exits_0_on_sigint(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        assert_stopped_cleanly(server, mode, signal.SIGINT, handshakes=0)


@SERVER_MODES
def test_cli_server_logs_its_counters_on_sigusr1_and_goes_on(mode: list[str]) -> None:
    """SIGUSR1, sent to the server's whole process group (so to its workers too), logs the
    counters without stopping anything: one line, or one per worker labelled as at the stop
    (the parent asks each) and their sum, each line saying "counters:"; the server still
    completes a handshake, and SIGTERM stops it."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        os.killpg(server.pid, signal.SIGUSR1)
        workers = [r"worker 0 \(pid \d+\): ", r"worker 1 \(pid \d+\): ", "all 2 workers: "]
        labels = workers if mode else [""]
        for label in labels:
            server.wait_for_output(
                rf"counters: {label}handshakes 0 completed \(0 resumed\), .*; dropped: nothing",
                10.0,
            )
        done = run_client(port, ["still serving"], *CREDENTIALS)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "still serving\n"
        assert len(re.findall("counters: .*handshakes 0 completed", server.output)) == len(labels)
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)


#: `iotdtls server` (argv after the program) signalling itself with SIGUSR1 as soon as it runs:
#: when it reads its --listen (and, with workers, again as it starts them).
SIGNALLED_AT_ONCE = (
    "import os, signal, sys\n"
    "import iotdtls.cli, iotdtls.cli.echo as echo, iotdtls.workers as workers\n"
    "def signalled(original):\n"
    "    def call(*args):\n"
    "        os.kill(os.getpid(), signal.SIGUSR1)\n"
    "        return original(*args)\n"
    "    return call\n"
    "echo.parse_hostport = signalled(echo.parse_hostport)\n"
    "workers._start_workers = signalled(workers._start_workers)\n"
    "raise SystemExit(iotdtls.cli.main(sys.argv[1:]))\n"
)


@SERVER_MODES
def test_cli_server_signalled_with_sigusr1_while_it_starts_goes_on(mode: list[str]) -> None:
    """SIGUSR1 before the server handles it (loading its keys, spawning its workers) killed it
    (status 138): its default action. It is ignored until the counters handler is installed:
    the server starts, serves, and stops cleanly."""
    port = free_udp_port()
    argv = [sys.executable, "-c", SIGNALLED_AT_ONCE, "server", "--listen",
            f"{LOCALHOST}:{port}", *CREDENTIALS, *mode]
    with PeerProcess(argv, name="iotdtls-server", time_limit=60.0) as server:
        server.wait_for_output(r"listening on 127\.0\.0\.1:\d+", 20.0)
        done = run_client(port, ["still serving"], *CREDENTIALS)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "still serving\n"
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)


def test_cli_workers_stop_when_one_dies() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--workers", "2") as server:
        first, second = worker_pids(server)
        os.kill(first, signal.SIGKILL)
        assert server.wait(10.0) == 1
        server.wait_for_output(r"worker \d \(pid \d+\) ended unexpectedly", 1.0)
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
#: Comebacks of a client from new source ports in the tests of --session-dir: all reach one
#: and the same worker (the kernel hashes each new 4-tuple to either) by a chance of 2 in
#: 2**24, one in 2**23 (see the test).
COMEBACKS = 24


async def comebacks(port: int, count: int) -> list[bool]:
    """A full handshake, then `count` associations offering its session, each from a socket of
    its own (a new source port), each echoing a line: whether each one resumed."""

    async def associate(session: SessionState | None) -> tuple[bool, SessionState | None]:
        async with aio.connect(LOCALHOST, port, client_config(), session=session) as conn:
            conn.send(b"ping")
            assert await asyncio.wait_for(conn.recv(), 5.0) == b"ping"
            return conn.resumed, conn.session

    resumed, session = await associate(None)
    assert not resumed and session is not None
    return [(await associate(session))[0] for _ in range(count)]


def resumed_per_worker(output: str) -> dict[int, int]:
    """The resumed handshakes of each worker, from the counters it logged at the stop."""
    found = re.findall(r"worker (\d+) \(pid \d+\): handshakes \d+ completed \((\d+) resumed",
                       output)
    return {int(worker): int(resumed) for worker, resumed in found}


@pytest.mark.parametrize("shared", [True, False], ids=["session-dir", "own-caches"])
def test_cli_workers_resume_each_others_sessions_with_a_session_dir(
    tmp_path: Path, shared: bool
) -> None:
    """`--workers 2 --session-dir DIR`: a client coming back from a new source port reaches
    either worker (SO_REUSEPORT hashes the 4-tuple) and resumes there all the same, and both
    workers' counters show resumptions. Without --session-dir each worker keeps its own
    sessions: about half the comebacks are full handshakes.

    Both cases rest on chance: each fails when all `COMEBACKS` (24) comebacks reach one and the
    same worker (own-caches: all resumed, or none; session-dir: one worker's counters show no
    resumption), which happens with a probability of 2 * 2**-24 = 2**-23, about once in 8.4
    million runs, if the kernel's hash spreads the new source ports evenly over the two."""
    port = free_udp_port()
    shared_flags = ["--session-dir", str(tmp_path / "sessions")] if shared else []
    with cli_server(port, *CREDENTIALS, "--workers", "2", *shared_flags) as server:
        resumed = run_bounded(comebacks(port, COMEBACKS), 60.0)
        assert stop_with(server, signal.SIGTERM) == 0, server.output
    per_worker = resumed_per_worker(server.output)
    if shared:
        assert all(resumed), resumed
        assert sorted(per_worker) == [0, 1] and all(per_worker.values()), per_worker
        assert len(os.listdir(tmp_path / "sessions")) == 1  # the one session, as one file
    else:
        assert not all(resumed) and any(resumed), resumed


def test_cli_sessions_in_a_session_dir_outlive_a_restart_of_the_server(tmp_path: Path) -> None:
    """The sessions of --session-dir are files: a server started again on the directory
    resumes the sessions the one before made."""
    port = free_udp_port()
    directory = str(tmp_path / "sessions")

    async def full() -> SessionState:
        async with aio.connect(LOCALHOST, port, client_config()) as conn:
            assert not conn.resumed and conn.session is not None
            return conn.session

    async def resume(session: SessionState) -> bool:
        async with aio.connect(LOCALHOST, port, client_config(), session=session) as conn:
            return conn.resumed

    with cli_server(port, *CREDENTIALS, "--session-dir", directory) as server:
        session = run_bounded(full(), 30.0)
        assert stop_with(server, signal.SIGTERM) == 0, server.output
    with cli_server(port, *CREDENTIALS, "--session-dir", directory) as server:
        assert run_bounded(resume(session), 30.0)
        assert stop_with(server, signal.SIGTERM) == 0, server.output
    assert "handshakes 1 completed (1 resumed)" in server.output, server.output


def run_bounded(coro: Coroutine[Any, Any, T], limit: float) -> T:
    """What `coro` returns, run in a fresh loop within `limit` seconds."""
    return asyncio.run(asyncio.wait_for(coro, limit))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_cli_workers_stop_cleanly_when_their_whole_group_is_signalled(sig: signal.Signals) -> None:
    """A Ctrl-C (SIGINT), a closing terminal (SIGHUP) or a stop of the whole group (SIGTERM)
    reaches the workers as well as the parent: every worker still closes its associations with
    close_notify and reports its counters, and the server exits 0."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--workers", "2") as server, \
            interactive_client(port) as client:
        client.write_line("before the stop")
        client.wait_for_output("before the stop", 5.0)
        os.killpg(server.pid, sig)
        assert server.wait(10.0) == 0, server.output
        # The sum starts "stopped:" as a single server's line does.
        assert "stopped: all 2 workers: handshakes 1 completed" in server.output, server.output
        assert_clean_exit(client, 0, 5.0)  # the close_notify of its worker ended it


def spawned_children(pid: int) -> list[int]:
    """The children of `pid` that multiprocessing's spawn started (not its resource tracker)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat_file.read_text().rpartition(")")[2].split()[1])
            if parent == pid and b"spawn_main" in (stat_file.parent / "cmdline").read_bytes():
                found.append(int(stat_file.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_cli_workers_signalled_while_they_start_are_a_clean_stop(sig: signal.Signals) -> None:
    """A stop of the whole group while the workers are still starting (their interpreter still
    importing) is a stop, not a worker that "ended while starting": they start, stop at once
    and report, and the server exits 0."""
    argv = [*CLI, "server", "--listen", f"{LOCALHOST}:{free_udp_port()}", *CREDENTIALS,
            "--workers", "2"]
    with PeerProcess(argv, name="iotdtls-server", time_limit=60.0) as server:
        deadline = time.monotonic() + 30.0
        while len(spawned_children(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "serving" not in server.output  # still starting
        os.killpg(server.pid, sig)
        assert server.wait(30.0) == 0, server.output
    assert "all 2 workers: handshakes 0 completed" in server.output, server.output
    assert "Traceback" not in server.output and "unexpectedly" not in server.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_cli_server_stops_cleanly_on_signals(sig: signal.Signals) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server:
        assert stop_with(server, sig) == 0
    assert "Traceback" not in server.output


def interactive_client(port: int, *args: str) -> PeerProcess:
    """`iotdtls client` whose stdin stays open (a terminal or a producer process) until the
    test closes it."""
    argv = [*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS, *args]
    return PeerProcess(argv, name="iotdtls-client", time_limit=30.0)


def assert_clean_exit(process: PeerProcess, status: int, within: float) -> None:
    started = time.monotonic()
    assert process.wait(within) == status, process.output
    assert time.monotonic() - started < within
    assert "Traceback" not in process.output and "Fatal Python error" not in process.output


#: The server's line for an association its peer closed with close_notify (-v): no error after
#: the identity, as an idle timeout or a fatal alert would add.
CLOSED_BY_PEER = re.compile(r"association closed: peer 127\.0\.0\.1:\d+ psk identity b'[^']*'\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_cli_client_ends_with_close_notify_on_signals(sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT), a stop (SIGTERM) or a closing terminal (SIGHUP) of an established
    client ends its association with close_notify (RFC 5246 §7.2.1), so the server frees it at
    once instead of at its idle timeout; the status is the shell's for the signal (128 + its
    number: 130, 143, 129), with no traceback (probe CK: SIGTERM and SIGHUP killed it
    silently)."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "-v") as server, interactive_client(port) as client:
        client.write_line("before the signal")
        client.wait_for_output("before the signal", 5.0)
        os.kill(client.pid, sig)
        assert_clean_exit(client, 128 + sig, within=5.0)
        server.wait_for_output(CLOSED_BY_PEER, 5.0)
        assert stop_with(server, signal.SIGTERM) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_cli_client_exits_at_once_when_the_server_stops(sig: signal.Signals) -> None:
    """The server's stop on any of its stop signals sends close_notify: the client, its stdin
    still open, exits 0 at once (no reader thread left blocked in stdin, so no abort in
    interpreter shutdown)."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server, interactive_client(port) as client:
        client.write_line("before the stop")
        client.wait_for_output("before the stop", 5.0)
        assert stop_with(server, sig) == 0
        assert_clean_exit(client, 0, within=2.0)
        assert client.output == "before the stop\n"
    assert "Traceback" not in server.output


def test_cli_client_exits_when_the_server_lets_it_idle() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--idle-timeout", "0.5") as server, \
            interactive_client(port) as client:
        client.write_line("then silence")
        client.wait_for_output("then silence", 5.0)
        assert_clean_exit(client, 0, within=3.0)
        server.wait_for_output(r"association closed: peer .*: association idle for 0.5 s", 2.0)


def test_cli_client_exits_nonzero_on_a_fatal_alert() -> None:
    """A server that ends the association with a fatal alert after the first datagram: the
    client exits 1 at once, with one line naming the alert, whatever its stdin does."""
    with AlertingServer() as server, interactive_client(server.port) as client:
        client.write_line("provoke")
        assert_clean_exit(client, 1, within=3.0)
        lines = client.output.splitlines()
        assert lines == ["iotdtls: received fatal alert internal_error"], client.output


@pytest.mark.parametrize("source", ["file", "devnull"])
def test_cli_client_stdin_from_a_file_or_devnull(tmp_path: Path, source: str) -> None:
    """Regular files and /dev/null cannot be watched by the event loop: read at once."""
    lines = ["one", "two", "three"] if source == "file" else []
    stdin_path = tmp_path / "input.txt"
    stdin_path.write_text("".join(f"{line}\n" for line in lines))
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS), \
            open(stdin_path if source == "file" else os.devnull, "rb") as stdin:
        done = subprocess.run([*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS],
                              stdin=stdin, capture_output=True, text=True, timeout=20,
                              check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lines
    assert done.stderr == ""


def test_cli_line_too_long_for_the_mtu_is_refused_and_the_rest_goes_on() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS):
        done = run_client(port, ["x" * 200, "short"], *CREDENTIALS, "--mtu", "128")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "short\n"
    (warning,) = done.stderr.splitlines()
    assert warning.endswith("line not sent: 200 bytes of application data do not fit one "
                            "datagram: at most 99 bytes fit the MTU of 128 bytes"), warning


def test_cli_client_with_stdout_closed_says_so_in_one_line() -> None:
    port = free_udp_port()
    closed_stdout = ["sh", "-c", 'exec "$@" >&-', "sh", *CLI]
    with cli_server(port, *CREDENTIALS):
        done = subprocess.run(
            [*closed_stdout, "client", f"{LOCALHOST}:{port}", *CREDENTIALS], input=b"hi\n",
            stderr=subprocess.PIPE, timeout=20, check=False,
        )
    assert done.returncode == 1
    assert done.stderr == b"iotdtls: cannot print: stdout is closed\n"


#: Redirections closing standard descriptors, as a shell's `<&-` and `>&-` (probe AS).
CLOSED_FDS = pytest.mark.parametrize("closed", ["<&-", ">&-", "<&- >&-"])


def with_closed(closed: str, *argv: str) -> list[str]:
    """`argv` run through sh with the redirections `closed` (exec: the pid stays the same)."""
    return ["sh", "-c", f'exec "$@" {closed}', "sh", *argv]


@CLOSED_FDS
@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_cli_server_started_with_standard_fds_closed_stops_cleanly(
    closed: str, loop_choice: str
) -> None:
    """A socket given fd 0 or 1 made uvloop abort the server as it closed it at the stop
    (libuv's assertion fd > STDERR_FILENO, status 134): main opens /dev/null onto them."""
    port = free_udp_port()
    argv = with_closed(closed, *CLI, "server", "--listen", f"{LOCALHOST}:{port}", *CREDENTIALS,
                       "--loop", loop_choice)
    with PeerProcess(argv, name="iotdtls-server", time_limit=60.0) as server:
        server.wait_for_output(r"listening on 127\.0\.0\.1:\d+", 10.0)
        done = run_client(port, ["served"], *CREDENTIALS)
        assert (done.returncode, done.stdout) == (0, "served\n"), done.stderr
        assert stop_with(server, signal.SIGINT) == 0, server.output
    assert "stopped: handshakes 1 completed" in server.output, server.output
    assert "Traceback" not in server.output


def test_cli_workers_started_with_stdin_closed_stop_cleanly() -> None:
    """The workers inherit the /dev/null on fd 0 (a socket of theirs never takes it)."""
    port = free_udp_port()
    argv = with_closed("<&-", *CLI, "server", "--listen", f"{LOCALHOST}:{port}", *CREDENTIALS,
                       "--workers", "2", "--loop", "uvloop")
    with PeerProcess(argv, name="iotdtls-server", time_limit=60.0) as server:
        server.wait_for_output(r"listening on 127\.0\.0\.1:\d+", 10.0)
        assert_stopped_cleanly(server, ["--workers", "2"], signal.SIGINT, handshakes=0)


def test_cli_started_with_stderr_closed_keeps_stdout_for_output() -> None:
    """With fd 2 closed, /dev/null was put on it but sys.stderr stayed None, and print(...,
    file=None) writes to stdout: the error lines (a usage error, the client's final error,
    a logged warning) landed on stdout among the payload (probe AU). They go to fd 2 now."""
    usage = subprocess.run(with_closed("2>&-", *CLI, "client"), capture_output=True,
                           timeout=20, check=False)
    assert (usage.returncode, usage.stdout) == (2, b"")
    port = free_udp_port()  # nothing listens: the handshake times out
    done = subprocess.run(
        with_closed("2>&-", *CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS, "--timeout",
                    "1"),
        input=b"hi\n", capture_output=True, timeout=20, check=False,
    )
    assert (done.returncode, done.stdout) == (1, b"")


#: Started with fds 2 and 3 closed: the stream `fill_closed_standard_fds` makes for fd 2 is
#: dropped; fd 3, no standard one, is left closed.
STDERR_DROPPED = """
import gc, io, os, sys
from iotdtls.cli.common import fill_closed_standard_fds
fill_closed_standard_fds()
try:
    os.fstat(3)
except OSError:
    print("fd 3 closed")
sys.stderr = io.StringIO()
gc.collect()
os.fstat(2)
print("fd 2 open")
"""


def test_the_devnull_put_on_a_closed_fd_2_stays_open_when_its_stream_goes() -> None:
    """The /dev/null put on a closed fd 2 is never closed, not even when the text stream made
    for it is dropped (a caller replacing sys.stderr): else the next socket took number 2.
    Only fds 0 to 2 are filled: a closed fd 3 stays closed."""
    done = subprocess.run(with_closed("2>&- 3>&-", sys.executable, "-c", STDERR_DROPPED),
                          capture_output=True, timeout=20, check=False)
    assert (done.returncode, done.stdout) == (0, b"fd 3 closed\nfd 2 open\n")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_cli_perf_started_with_stdin_closed_prints_its_json(processes: str) -> None:
    """perf on uvloop with fd 0 closed aborted as it closed a socket (no JSON at all)."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS):
        done = subprocess.run(
            with_closed("<&-", *CLI, "perf", f"{LOCALHOST}:{port}", *CREDENTIALS, "-c", "2",
                        "-n", "4", "-p", processes, "--json", "-q", "--loop", "uvloop"),
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert json.loads(done.stdout)["handshakes"]["completed"] == 4, done.stdout


@pytest.mark.parametrize("processes", ["1", "2"])
def test_cli_perf_verbose_logs_every_datagram(processes: str) -> None:
    """`perf -v` said it logged every datagram and logged only each handshake's end (probe
    AS): now each datagram, as `iotdtls client -v` does, in every generator process."""
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS):
        done = subprocess.run(
            [*CLI, "perf", f"{LOCALHOST}:{port}", *CREDENTIALS, "-c", "2", "-n", "2", "-m", "1",
             "-p", processes, "-q", "-v"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 0, done.stderr
    sent = re.findall(rf"iotdtls\.perf\.engine: -> 127\.0\.0\.1:{port} (\d+) B (.*)",
                      done.stderr)
    received = re.findall(rf"iotdtls\.perf\.engine: <- 127\.0\.0\.1:{port} \d+ B (.*)",
                          done.stderr)
    assert [text for _, text in sent].count("Handshake(e0/s0: client_hello#0)") == 2, done.stderr
    assert received.count("Handshake(e0/s0: hello_verify_request#0)") == 2, done.stderr
    protected = [text for _, text in sent if text.startswith("ApplicationData(e1/s1, ")]
    assert len(protected) == 2, done.stderr  # the echoed messages, opaque
    assert done.stderr.count("handshake complete") == 2, done.stderr


@pytest.mark.req("CFG-1")
def test_cli_psk_file_and_no_cookie(tmp_path: Path) -> None:
    psk_file = tmp_path / "psk.txt"
    psk_file.write_text(f"# test keys\n{CLIENT_IDENTITY}:{PSK_HEX}\n"
                        "sensor-17:a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n")
    psk_file.chmod(0o600)
    port = free_udp_port()
    with cli_server(port, "--psk-file", str(psk_file), "--no-cookie") as server, \
            LossyProxy((LOCALHOST, port), seed=0) as proxy:
        done = run_client(proxy.address[1], ["via file"], "--psk-identity", "sensor-17",
                          "--psk", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "via file\n"
        server.wait_for_output("identity b'sensor-17'", 5.0)
    assert HELLO_VERIFY_REQUEST not in handshake_types(proxy.snapshot(), "server")


@SERVER_MODES
def test_cli_cookie_exchange_is_on_by_default(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode), LossyProxy((LOCALHOST, port), seed=0) as proxy:
        assert run_client(proxy.address[1], ["x"], *CREDENTIALS).returncode == 0
    assert handshake_types(proxy.snapshot(), "server")[0] == HELLO_VERIFY_REQUEST


@pytest.mark.req("SEC-1")
def test_cli_keylog_and_verbose_logs_without_secrets(tmp_path: Path) -> None:
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--keylog", str(server_log), "-v") as server:
        done = run_client(port, ["logged"], *CREDENTIALS, "--keylog", str(client_log), "-v")
        assert done.returncode == 0, done.stderr
        server.wait_for_output("handshake complete: peer", 5.0)
        assert stop_with(server, signal.SIGTERM) == 0
    lines = client_log.read_text().splitlines()
    assert len(lines) == 1 and KEYLOG_LINE.match(lines[0]), lines
    for log in (client_log, server_log):  # master secrets: for our eyes only
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert server_log.read_text().splitlines() == lines
    master = lines[0].split()[2]
    for text in (server.output, done.stderr, done.stdout):
        assert PSK_HEX not in text.lower()
        assert master not in text.lower()
    assert "client_hello" in done.stderr  # -v traces the datagrams


@pytest.mark.parametrize("command", [["client", "127.0.0.1:{port}"], ["server", "--listen",
                                                                    "127.0.0.1:{port}"]])
def test_cli_keylog_fifo_is_refused_at_once(tmp_path: Path, command: list[str]) -> None:
    """--keylog naming a FIFO hung the command for ever, silently, in opening it: it is opened
    without blocking and refused in one line like the other file flags, nothing run."""
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    argv = [arg.replace("{port}", str(free_udp_port())) for arg in command]
    done = subprocess.run([*CLI, *argv, *CREDENTIALS, "--keylog", str(fifo)],
                          capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"iotdtls: error: --keylog {fifo} is a FIFO, not a regular file: name a regular "
               "file\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.req("ERR-1")
@SERVER_MODES
def test_cli_wrong_key_one_line_and_nonzero(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        done = run_client(port, ["never"], "--psk-identity", CLIENT_IDENTITY,
                          "--psk", WRONG_PSK_HEX, "--timeout", "3")
        server.wait_for_output(r"handshake failed: peer 127\.0\.0\.1:\d+ psk "
                               r"identity b'Client_identity': .*decrypt_error", 5.0)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(  # the alert, and what it means in answer to our Finished
        "received fatal alert decrypt_error (the server could not verify our Finished: the PSK "
        "does not match the server's, or the PSK identity is unknown to it)"), lines[0]


@pytest.mark.parametrize("argv", [
    ["client", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "zz01"],
    ["client", "127.0.0.1", "--psk-identity", "a", "--psk", "01"],
    ["client", "127.0.0.1:99999", "--psk-identity", "a", "--psk", "01"],
    ["client", "127.0.0.1:{port}", "--psk-identity", "a"],
    ["server", "--listen", "127.0.0.1:x"],
    ["server", "--listen", "127.0.0.1:{port}"],
    ["server", "--psk-identity", "a", "--psk", "0g"],
    ["server", "--psk-file", "/nonexistent/psk.txt"],
    ["server", "--listen", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01",
     "--workers", "0"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "--concurrency", "0"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "-c", "2", "-p", "3"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "-d", "1", "-n", "5"],
    ["client", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "--mtu", "5"],
    ["frobnicate"],
])
def test_cli_bad_arguments(argv: list[str]) -> None:
    port = free_udp_port()  # never used: every command line is refused before any socket
    argv = [arg.replace("{port}", str(port)) for arg in argv]
    done = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("iotdtls: error:")


def test_cli_demo() -> None:
    done = subprocess.run([*CLI, "demo"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    for flight in ("client_hello#0", "hello_verify_request#0", "client_hello#1",
                   "server_hello#1", "server_hello_done#2", "client_key_exchange#2",
                   "ChangeCipherSpec", "ApplicationData", "all datagrams came back"):
        assert flight in done.stdout
    # Demo 2: mutual raw public keys (RFC 7250), both Certificates and a CertificateVerify.
    mutual = done.stdout.split("demo 2/2", 1)[1]
    for flight in ("server_key_exchange#3", "certificate_request#4", "certificate_verify#4",
                   "client: handshake complete with raw public key sha256:",
                   "all datagrams came back"):
        assert flight in mutual
    assert done.stdout.count("all datagrams came back") == 2


@pytest.mark.interop
def test_cli_client_against_openssl_server() -> None:
    require_peer("openssl")
    port = free_udp_port()
    with openssl_psk_server(port, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        with PeerProcess([*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS],
                         name="iotdtls-client", time_limit=30.0) as client:
            peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
            client.write_line("to openssl")
            peer.wait_for_output("to openssl", 5.0)
            peer.write_line("to iotdtls")
            client.wait_for_output(r"(?m)^to iotdtls$", 5.0)
            client.close_stdin()
            assert client.wait(10.0) == 0, client.output
            peer.wait_for_output("DONE", 5.0)  # our close_notify
        # s_server's datagram is the line with its newline; the CLI ends each datagram with
        # one more. Nothing else, on stdout or stderr.
        assert client.output == "to iotdtls\n\n"


@pytest.mark.interop
@SERVER_MODES
def test_openssl_client_against_cli_server(mode: list[str]) -> None:
    require_peer("openssl")
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server, \
            openssl_psk_client(port, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("echo me")
        peer.wait_for_output("echo me", 5.0)
        peer.close_stdin()
        assert peer.wait(5.0) == 0
        server.wait_for_output("handshake complete: peer .* identity b'Client_identity'", 5.0)
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)


@pytest.mark.parametrize("before", ["default", "a handler"])
def test_sigusr1_stays_ignored_after_serving_unless_a_handler_was_there(before: str) -> None:
    """`counters_signal_ignored` put back SIG_DFL once serving ended: a SIGUSR1 after the
    "stopped:" line killed `iotdtls server` and `coap serve` (rc -10). The default stays
    ignored to the process's exit; a handler of the caller's is put back."""
    import signal

    from iotdtls.cli.common import COUNTERS_SIGNAL, counters_signal_ignored

    def handler(signum: int, frame: object) -> None:
        del signum, frame

    given = signal.SIG_DFL if before == "default" else handler
    previous = signal.signal(COUNTERS_SIGNAL, given)
    try:
        with counters_signal_ignored():
            assert signal.getsignal(COUNTERS_SIGNAL) is signal.SIG_IGN
        expected = signal.SIG_IGN if before == "default" else handler
        assert signal.getsignal(COUNTERS_SIGNAL) is expected
    finally:
        signal.signal(COUNTERS_SIGNAL, previous)


@pytest.mark.parametrize(("command", "ignored"), [
    (["server", "--listen", "127.0.0.1:44410"], True),
    (["coap", "serve", "--listen", "127.0.0.1:44411"], True),
    (["client", "127.0.0.1:44412"], False),
])
def test_sigusr1_is_ignored_before_a_serving_command_parses_its_flags(
    monkeypatch: pytest.MonkeyPatch, command: list[str], ignored: bool
) -> None:
    """A SIGUSR1 that came while `iotdtls server` or `coap serve` parsed its flags, loaded
    its keys or checked its session directory (before `run_server` ignored it) ended the
    process (rc -10): `main` ignores it first of all for those commands, and only those."""
    import iotdtls.cli
    from iotdtls.cli.common import COUNTERS_SIGNAL

    seen: list[object] = []

    def parser() -> Any:
        seen.append(signal.getsignal(COUNTERS_SIGNAL))
        raise SystemExit(0)  # the command goes no further

    monkeypatch.setattr(iotdtls.cli, "_parser", parser)
    previous = signal.signal(COUNTERS_SIGNAL, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit):
            iotdtls.cli.main(command)
        assert seen == [signal.SIG_IGN if ignored else signal.SIG_DFL]
        after = signal.getsignal(COUNTERS_SIGNAL)
        assert after is (signal.SIG_IGN if ignored else signal.SIG_DFL)  # as 2940aed keeps it
    finally:
        signal.signal(COUNTERS_SIGNAL, previous)
