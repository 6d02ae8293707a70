"""The child processes of the server workers and the load generator (`iotdtls._children`):
a fresh interpreter with the given name and a pipe to the parent, SIGINT (and others) held
while children start, a child that does not end killed after a bounded wait."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest

import iotdtls._children
from iotdtls._children import hold_signals, how_it_ended, ignore_held_sigint, reap, spawn


def answer(question: str, conn: Any) -> None:
    """A child: answers through its pipe what it was given, how it was started, and whether
    it started with SIGINT held."""
    conn.send((question, multiprocessing.current_process().name,
               multiprocessing.get_start_method(allow_none=True),
               signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    conn.close()


def interrupted_while_starting(conn: Any) -> None:
    """A child that was sent SIGINT while it started (the parent waits for it to be pending
    here), then does what the workers and generators do first thing, and answers."""
    deadline = time.monotonic() + 30.0
    while signal.SIGINT not in signal.sigpending() and time.monotonic() < deadline:
        time.sleep(0.01)
    pending = signal.SIGINT in signal.sigpending()
    ignore_held_sigint()
    conn.send((pending, signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
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
    with hold_signals():
        process, conn = spawn(answer, ("ping",), "iotdtls-test-child")
    try:
        assert (process.name, process.daemon) == ("iotdtls-test-child", True)
        assert conn.poll(30.0)
        question, name, method, sigint_held = conn.recv()
        assert (question, name, method) == ("ping", "iotdtls-test-child", "spawn")
        assert sigint_held  # inherited from the parent's hold_signals()
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


def test_a_sigint_while_children_start_comes_once_they_have_started() -> None:
    """Found by a probe: SIGINT was ignored (SIG_IGN) while children started, so a Ctrl-C in
    that window was lost and the server started and ran on. It is held instead: the
    handler gets it when the hold ends, and the handler is the caller's throughout."""
    got: list[int] = []

    def handler(number: int, frame: object) -> None:
        got.append(number)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with hold_signals():
            assert signal.getsignal(signal.SIGINT) is handler
            process, conn = spawn(answer, ("ping",), "iotdtls-test-child")
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C, while children start
            assert got == []  # held: raise_signal sends it to this thread, which blocks it
        assert got == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
    conn.close()
    assert reap(process, 10.0) is True


def test_a_child_drops_a_sigint_that_came_while_it_started() -> None:
    """A Ctrl-C reaches the whole process group: a child still starting holds it (a
    KeyboardInterrupt in its start-up otherwise) and drops it first thing
    (`ignore_held_sigint`), then runs on with SIGINT ignored and no longer blocked."""
    with hold_signals():
        process, conn = spawn(interrupted_while_starting, (), "iotdtls-test-interrupted")
        assert process.pid is not None
        os.kill(process.pid, signal.SIGINT)
    try:
        assert conn.poll(30.0)
        assert conn.recv() == (True, False)  # it was pending, now unblocked and dropped
    finally:
        conn.close()
        assert reap(process, 10.0) is True
    assert process.exitcode == 0


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
