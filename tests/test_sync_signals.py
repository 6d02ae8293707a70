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
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.errors import AssociationEnded, LocalProtocolError
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


def test_close_in_a_signal_handler_during_recv_returns_none_at_once(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() in a signal handler while the main thread waited in recv(): close() waited
    CLOSE_WAIT (5 s) for the waiting thread to leave the socket, the very thread the handler
    had interrupted, then recv returned None (probe AV, p18). Now close() returns at once,
    recv returns None at once, and the sockets are closed as recv leaves."""
    monkeypatch.setattr(sync, "CLOSE_WAIT", 3.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    waited = client._wait
    took: list[float] = []

    def signalled_wait(timeout: float | None) -> bool:
        raise_signal()  # as the wait starts
        return waited(timeout)

    def close() -> None:
        started = time.monotonic()
        client.close()
        took.append(time.monotonic() - started)

    monkeypatch.setattr(client, "_wait", signalled_wait)
    with on_signal(close):
        started = time.monotonic()
        assert client.recv(timeout=10.0) is None
    assert time.monotonic() - started < 1.0
    assert len(took) == 1 and took[0] < 1.0
    assert sock.fileno() == -1
    assert client._wake_reader.fileno() == client._wake_writer.fileno() == -1
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])


class _InterruptedCondition(threading.Condition):
    """The client's lock, whose `countdown`-th release by the main thread is followed by a
    KeyboardInterrupt: where a SIGINT lands as the lock's (Python) `__exit__` returns."""

    countdown = 0

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        if threading.current_thread() is threading.main_thread() and self.countdown > 0:
            self.countdown -= 1
            if self.countdown == 0:
                raise KeyboardInterrupt


@pytest.mark.parametrize("release", range(1, 6))
def test_an_interrupt_in_recv_leaves_close_prompt_and_reading_possible(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, release: int
) -> None:
    """A KeyboardInterrupt landing as recv() released its lock right after counting itself
    among the threads waiting for the socket left the count one too high for good: close()
    then waited CLOSE_WAIT (5 s) for a thread that was not there (probe AV, p8: about one
    interrupt in 1,500). Interrupted after any of its first lock releases, recv() now leaves
    nothing behind: the client reads on, and close() is prompt."""
    monkeypatch.setattr(sync, "CLOSE_WAIT", 3.0)
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    lock = _InterruptedCondition()
    monkeypatch.setattr(client, "_mutex", lock)  # a Condition is a lock too: `with` it
    monkeypatch.setattr(client, "_lock", lock)
    lock.countdown = release
    with contextlib.suppress(KeyboardInterrupt):
        client.recv(timeout=0.1)
    lock.countdown = 0
    client.send(b"still there")
    assert client.recv(timeout=5.0) == b"still there"
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 1.0


def test_an_interrupt_as_the_lock_is_taken_leaves_it_free(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt landing in `Condition.__enter__`'s Python frame once it had taken
    the lock, before the `with` block began, left the lock held for good: every other thread
    (a keep-alive heartbeat, a send, close) then blocked for ever (probe AW: 72 of 24,478
    interrupts). The client takes its lock with the C-level RLock's own `with`, where no
    interrupt lands between the taking and the block; another thread sends at once after."""
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    enter = threading.Condition.__enter__
    armed = [True]

    def interrupted_enter(condition: threading.Condition) -> bool:
        taken = enter(condition)
        if armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            raise KeyboardInterrupt
        return taken

    monkeypatch.setattr(threading.Condition, "__enter__", interrupted_enter)
    with contextlib.suppress(KeyboardInterrupt):
        client.recv(timeout=0.1)
    monkeypatch.undo()
    sender = threading.Thread(target=client.send, args=(b"from another thread",), daemon=True)
    sender.start()
    sender.join(3.0)
    assert not sender.is_alive(), "the lock was left held"
    assert client.recv(timeout=5.0) == b"from another thread"
    client.close()


def _interrupt() -> None:
    raise KeyboardInterrupt


def signal_in_first_wait(client: sync.DtlsClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's next wait for the server raises the test's signal first (once)."""
    waited = client._wait

    def signalled_wait(timeout: float | None) -> bool:
        monkeypatch.setattr(client, "_wait", waited)  # once
        raise_signal()
        return waited(timeout)

    monkeypatch.setattr(client, "_wait", signalled_wait)


@pytest.mark.parametrize("where", ["waiting", "starting"])
def test_handshake_again_after_an_interrupted_one_completes_it(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A KeyboardInterrupt (SIGINT) in handshake(), then handshake() again: it said "connect()
    is for a new client connection", a call the user never made, and the client could do
    nothing more (probe AV, p9: 8 random interrupts in 40). Now the second call starts the
    handshake afresh, whether the interrupt came as it waited for the server or as the
    core made its first flight, and the client works."""
    client = sync.DtlsClient(*server.address, client_config(retransmit=FAST))
    if where == "waiting":
        signal_in_first_wait(client, monkeypatch)
    else:
        made = sync.DtlsConnection._send_flight

        def interrupted_flight(self: Any, *args: Any) -> None:
            monkeypatch.setattr(sync.DtlsConnection, "_send_flight", made)  # once
            _interrupt()

        monkeypatch.setattr(sync.DtlsConnection, "_send_flight", interrupted_flight)
    with client, on_signal(_interrupt):
        with pytest.raises(KeyboardInterrupt):
            client.handshake()
        client.handshake()
        client.send(b"after the interrupt")
        assert client.recv(timeout=5.0) == b"after the interrupt"


def test_handshake_again_after_an_interrupt_offers_the_session_again(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake started afresh after a KeyboardInterrupt cut one short offers the
    session the client was given, as the first attempt did: the association resumes it."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as first:
        saved = first.session
    assert saved is not None
    client = sync.DtlsClient(*server.address, client_config(retransmit=FAST), session=saved)
    signal_in_first_wait(client, monkeypatch)
    with client, on_signal(_interrupt):
        with pytest.raises(KeyboardInterrupt):
            client.handshake()
        client.handshake()
        assert client.resumed


@pytest.fixture
def heartbeat_server() -> Iterator[ServerThread]:
    with ServerThread(server_config(retransmit=FAST, heartbeat=True)) as running:
        yield running


@pytest.mark.parametrize("call", ["handshake", "heartbeat"])
def test_close_in_a_signal_handler_leaves_the_sockets_to_the_call_it_interrupted(
    heartbeat_server: ServerThread, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """close() in a signal handler while the main thread waited in handshake() or heartbeat()
    (as in recv): it returns at once, leaving the sockets open under the call, which may be
    waiting on them; the call ends (the handshake with `LocalProtocolError`, the heartbeat
    with False) and closes them as it leaves."""
    monkeypatch.setattr(sync, "CLOSE_WAIT", 3.0)
    config = client_config(retransmit=FAST, heartbeat=True)
    if call == "handshake":
        client = sync.DtlsClient(*heartbeat_server.address, config)
    else:
        client = sync.connect(*heartbeat_server.address, config)
    waited = client._wait
    in_handler: list[int] = []

    def signalled_wait(timeout: float | None) -> bool:
        monkeypatch.setattr(client, "_wait", waited)  # once
        raise_signal()
        return waited(timeout)

    def close() -> None:
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 1.0
        in_handler.append(client._sock.fileno())

    monkeypatch.setattr(client, "_wait", signalled_wait)
    with on_signal(close):
        if call == "handshake":
            with pytest.raises(LocalProtocolError, match="close\\(\\) was called"):
                client.handshake()
        else:
            assert client.heartbeat(5.0) is False
    assert len(in_handler) == 1 and in_handler[0] != -1
    assert client._sock.fileno() == -1
    assert client._wake_reader.fileno() == client._wake_writer.fileno() == -1
