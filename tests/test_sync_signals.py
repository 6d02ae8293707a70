"""`iotdtls.sync` and signal handlers: `close()` called from a handler (a SIGTERM-style clean
shutdown) or an interrupt (KeyboardInterrupt) landing in the middle of a call. Each test sends
itself the signal at one exact point (a patched method), so the outcome does not depend on
timing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.errors import AssociationEnded
from tests.interop_support import FAST, ServerThread, client_config, server_config

#: The signal the tests send themselves (its handler is the test's while it runs).
SIGNAL = signal.SIGUSR1

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals"
)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(server_config(retransmit=FAST)) as running:
        yield running


@contextlib.contextmanager
def on_signal(handler: Callable[[], object]) -> Iterator[None]:
    """`handler` runs when `SIGNAL` arrives (in the main thread, where pytest runs tests)."""
    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(SIGNAL, lambda number, frame: handler())
    try:
        yield
    finally:
        signal.signal(SIGNAL, previous)


def raise_signal() -> None:
    """Send `SIGNAL` to this process: its handler runs as `os.kill` returns."""
    os.kill(os.getpid(), SIGNAL)


class _InterruptedSocket(socket.socket):
    """A UDP socket whose send, once `armed`, first sends this process `SIGNAL`."""

    armed = False

    def send(self, data: Any, flags: int = 0) -> int:
        if self.armed:
            self.armed = False
            raise_signal()
        return super().send(data, flags)


def test_close_in_a_signal_handler_during_send_ends_it_with_association_ended(
    server: ServerThread,
) -> None:
    """close() in a signal handler (SIGTERM: shut down cleanly) while the main thread was
    inside send(): the send went on to write to the socket close() had just closed, a bare
    "OSError: [Errno 9] Bad file descriptor" (probe AV, 8 trials in 40). Now it raises
    `AssociationEnded`, as a send after close() does."""
    sock = _InterruptedSocket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    with on_signal(client.close):
        sock.armed = True
        with pytest.raises(AssociationEnded) as ended:
            client.send(b"interrupted")
    assert str(ended.value) == (
        "cannot send application data: the association was closed (close())")
    assert sock.fileno() == -1
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])
