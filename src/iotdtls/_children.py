"""Child processes of the server workers and of the load generator: started with ``spawn`` (a
fresh interpreter, never a fork of a process that may run threads), SIGINT ignored (a Ctrl-C
reaches the whole process group; the parent decides what happens), one pipe to the parent,
and reaped by pid with a bounded wait. Signals are held (blocked) while they start, SIGINT
always, so that one sent before a child is ready for it waits in the child instead of killing
it, and in the parent instead of being lost."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import signal
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["Child", "hold_signals", "how_it_ended", "ignore_held_sigint", "reap", "spawn"]

#: The parent's end of a child's pipe (`multiprocessing.connection.Connection`).
Child = tuple[BaseProcess, Any]


def ignore_held_sigint() -> None:
    """A child's first thing: ignore SIGINT, then unblock it (`hold_signals` held it while the
    child started). A Ctrl-C that reached the child meanwhile (it goes to the whole process
    group) is dropped here: the parent, which holds it too, decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def hold_signals(signals: frozenset[signal.Signals] = frozenset()) -> Iterator[None]:
    """Block SIGINT and `signals` in this thread while children start. A child inherits the
    blocked set through fork and exec, so such a signal that comes while it starts
    (importing, unpickling) stays pending until the child unblocks it, once it has a handler
    for it (SIGINT: `ignore_held_sigint`): a stop, not a death. Here the signals stay pending
    too, and are delivered when the block ends: a Ctrl-C while children start reaches the
    parent's handler then (asyncio.run's cancels the start). Ignoring it here instead
    (SIG_IGN, which the children would inherit) would lose one that came meanwhile: the
    server would start and run on.

    multiprocessing's resource tracker, started with the first child, unblocks SIGINT and
    SIGTERM once it is started: it is started before the block, not inside it."""
    multiprocessing.resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals | {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def spawn(target: Callable[..., None], args: tuple[Any, ...], name: str) -> Child:
    """Start `target(*args, conn)` in a new interpreter; return it and the parent's pipe end.
    Call inside `hold_signals()`; `target` calls `ignore_held_sigint()` first thing."""
    parent_end, child_end = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(*args, child_end), name=name, daemon=True
    )
    try:
        process.start()
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return process, parent_end


def reap(process: BaseProcess, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the child to end, then SIGKILL it; True if it ended
    by itself."""
    process.join(timeout)
    if not process.is_alive():
        return True
    process.kill()
    process.join(5.0)
    return False


#: How long `how_it_ended` waits for a child whose end was just seen (its pipe or sentinel
#: closed as it exited) to be reapable: the kernel closes its files a moment before.
_REAP_WAIT = 1.0


def how_it_ended(process: BaseProcess) -> str | None:
    """How a child that has ended did: "killed by SIGKILL" (a negative exit code is the
    signal, as multiprocessing reports it: the OOM killer, a kill -9) or "exited with status
    3"; None when it cannot tell (still not reapable after `_REAP_WAIT` seconds)."""
    process.join(_REAP_WAIT)
    code = process.exitcode
    if code is None:
        return None
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
