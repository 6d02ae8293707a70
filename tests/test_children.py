"""The child processes of the server workers and the load generator (`iotdtls._children`):
a fresh interpreter with the given name and a pipe to the parent, SIGINT ignored while
children start (and others held), a child that does not end killed after a bounded wait."""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from typing import Any

import pytest

import iotdtls._children
from iotdtls._children import hold_signals, how_it_ended, ignore_sigint, reap, spawn


def answer(question: str, conn: Any) -> None:
    """A child: answers through its pipe what it was given, and how it was started."""
    conn.send((question, multiprocessing.current_process().name,
               multiprocessing.get_start_method(allow_none=True),
               signal.getsignal(signal.SIGINT) == signal.SIG_IGN))
    conn.close()


def blocked(conn: Any) -> None:
    """A child: answers the signals it was started with blocked."""
    conn.send(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    conn.close()


def linger(conn: Any) -> None:
    """A child that outlives any reasonable wait."""
    time.sleep(60)


def leave(status: int, conn: Any) -> None:
    """A child that exits with `status` at once."""
    raise SystemExit(status)


def test_a_child_is_a_named_spawned_daemon_with_a_pipe() -> None:
    with ignore_sigint():
        process, conn = spawn(answer, ("ping",), "iotdtls-test-child")
    try:
        assert (process.name, process.daemon) == ("iotdtls-test-child", True)
        assert conn.poll(30.0)
        question, name, method, sigint_ignored = conn.recv()
        assert (question, name, method) == ("ping", "iotdtls-test-child", "spawn")
        assert sigint_ignored  # inherited from the parent's ignore_sigint()
    finally:
        conn.close()
        assert reap(process, 10.0) is True
    assert process.exitcode == 0


def test_a_child_that_does_not_end_is_killed() -> None:
    process, conn = spawn(linger, (), "iotdtls-test-linger")
    conn.close()
    started = time.monotonic()
    assert reap(process, 0.2) is False
    assert time.monotonic() - started < 10.0
    assert not process.is_alive() and process.exitcode == -signal.SIGKILL


def test_ignore_sigint_restores_the_handler() -> None:
    def handler(number: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with ignore_sigint():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ignore_sigint_outside_the_main_thread_changes_nothing() -> None:
    seen: list[object] = []

    def elsewhere() -> None:
        with ignore_sigint():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(5.0)
    assert seen == [before] and signal.getsignal(signal.SIGINT) == before


def test_a_child_started_holding_signals_starts_with_them_blocked() -> None:
    """A signal held while children start waits in each child until it unblocks it (it cannot
    end a child before the child handles it); the parent's own mask comes back unchanged."""
    held = frozenset({signal.SIGTERM, signal.SIGHUP})
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with hold_signals(held):
        assert held <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
        process, conn = spawn(blocked, (), "iotdtls-test-held")
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    try:
        assert conn.poll(30.0)
        assert held <= conn.recv()
    finally:
        conn.close()
        assert reap(process, 10.0) is True


@pytest.mark.parametrize(("status", "said"), [
    (0, "exited with status 0"), (3, "exited with status 3"), (None, "killed by SIGKILL"),
])
def test_how_a_child_ended_is_its_exit_status_or_its_signal(
    status: int | None, said: str
) -> None:
    """A status of 0 is an exit too (an unexpected one for a worker), not "signal 0"."""
    if status is None:
        process, conn = spawn(linger, (), "iotdtls-test-killed")
        process.kill()
    else:
        process, conn = spawn(leave, (status,), "iotdtls-test-leaving")
    conn.close()
    process.join(30.0)
    assert how_it_ended(process) == said


def test_how_a_child_ended_waits_a_bounded_time_for_its_status() -> None:
    """A child not reapable yet is waited for `_REAP_WAIT` seconds at most, then untold."""

    class NotReapable:
        exitcode = None

        def __init__(self) -> None:
            self.waited: list[float | None] = []

        def join(self, timeout: float | None = None) -> None:
            self.waited.append(timeout)

    process: Any = NotReapable()
    assert how_it_ended(process) is None
    assert process.waited == [iotdtls._children._REAP_WAIT]
