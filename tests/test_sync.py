"""`iotdtls.sync`: the blocking client against our asyncio server (in a thread) on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import tracemalloc
import warnings
import weakref
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from iotdtls import sync
from iotdtls._unreachable import LOST
from iotdtls.chaincache import ChainCache
from iotdtls.config import RetryPolicy
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    AssociationEnded,
    ConfigError,
    DatagramTooLarge,
    DtlsError,
    HandshakeTimeout,
    LocalProtocolError,
    PathMtuExceeded,
    PeerUnresponsive,
    PortUnreachable,
)
from iotdtls.proxy import LossyProxy
from tests import pki
from tests.aio_support import (
    EMPTY_HOST,
    FAMILY_MISMATCHES,
    NEEDS_INTERFACE,
    NOT_BYTES,
    NOT_CONTIGUOUS,
    RELEASED,
    UNRESOLVED,
    VIEWS,
    WRONG_CLIENT_ARGUMENTS,
    WRONG_SOCKETS,
    udp_sockets_made,
    wrong_socket,
)
from tests.interop_support import (
    FAST,
    WRONG_PSK,
    ServerThread,
    client_config,
    server_config,
)
from tests.peers import LOCALHOST, answers_once_then_goes, free_udp_port
from tests.pubkey_support import x509_configs, x509_pki


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(server_config(retransmit=FAST)) as running:
        yield running


@pytest.mark.req("PSK-1", "HS-1")
def test_connect_echo_close(server: ServerThread) -> None:
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    client.send(b"blocking hello")
    assert client.recv(timeout=5.0) == b"blocking hello"
    started = time.monotonic()
    assert client.recv(timeout=0.3) is None  # nothing more: None after the timeout
    assert 0.25 <= time.monotonic() - started < 0.8
    client.send(b"again")
    assert client.recv() == b"again"  # no timeout: waits for it
    client.close()
    assert client.recv(timeout=1.0) is None  # after close: None, at once
    assert client.recv() is None
    with pytest.raises(LocalProtocolError):
        client.send(b"too late")
    client.close()  # idempotent
    assert server.wait_until(lambda: server.ended == [(server.received[0][0], None)])


def test_recv_with_timeout_0_polls(server: ServerThread) -> None:
    """`recv(timeout=0)` returns a datagram that has already arrived (one at a time, in order)
    and None at once when none is waiting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sync.connect(*server.address, client_config(retransmit=FAST), sock=sock) as client:
        started = time.monotonic()
        assert client.recv(timeout=0) is None
        assert time.monotonic() - started < 0.2
        client.send(b"one")
        client.send(b"two")
        for expected in (b"one", b"two"):
            assert select.select([sock], [], [], 5.0)[0] == [sock]  # the echo is waiting
            assert client.recv(timeout=0) == expected
        assert client.recv(timeout=0) is None


def test_recv_reads_a_bounded_number_of_datagrams_after_its_timeout(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that never stops sending what is not application data (retransmissions,
    heartbeats) cannot hold `recv` past its timeout for ever."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        reads = 0

        def read_one_not_data(deadline: float | None) -> bool:
            nonlocal reads
            reads += 1
            assert reads <= 10 * sync.MAX_LATE_READS, "recv() goes on reading"
            return True

        monkeypatch.setattr(client, "_pump", read_one_not_data)
        assert client.recv(timeout=0) is None
        assert reads == sync.MAX_LATE_READS + 1

def test_recv_returns_none_after_server_close() -> None:
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
        client.send(b"x")
        assert client.recv(timeout=5.0) == b"x"
    # the server sent close_notify when it stopped
    assert client.recv(timeout=5.0) is None
    client.close()


def test_ended_tells_a_timeout_from_the_end_of_the_association() -> None:
    """`recv(timeout)` returns None after its timeout and, at once, for ever after the peer's
    close_notify: a loop taking None for "nothing yet" spun at 100 % CPU (probe CA). `ended`
    tells the two apart, as `aio.ServerSession.ended` does."""
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
        assert client.recv(timeout=0.05) is None  # nothing came: a timeout
        assert not client.ended
    assert client.recv(timeout=5.0) is None  # the server's close_notify, as it stopped
    assert client.ended
    client.close()
    assert client.ended
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
        client.close()
        assert client.ended


def test_the_repr_names_the_addresses_and_the_state() -> None:
    """It was `<iotdtls.sync.DtlsClient object at 0x...>` (probe CA)."""
    with ServerThread(server_config()) as running:
        client = sync.DtlsClient(*running.address, client_config())
        port, local = running.address[1], client._sock.getsockname()[1]
        ends = f"to 127.0.0.1:{port} from 127.0.0.1:{local}"
        assert repr(client) == f"<DtlsClient {ends} not started>"
        client.handshake()
        assert repr(client) == f"<DtlsClient {ends} open>"
    assert client.recv(timeout=5.0) is None  # the server's close_notify
    assert repr(client) == f"<DtlsClient {ends} ended>"
    client.close()
    assert repr(client) == f"<DtlsClient {ends} closed>"


def test_handshake_timeout_against_silent_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            sync.connect(*silent.getsockname(),
                         client_config(retransmit=FAST, handshake_timeout=1.0))
        assert 0.9 <= time.monotonic() - started < 3.0


def test_a_closed_port_ends_the_handshake_at_the_second_refusal() -> None:
    address = (LOCALHOST, free_udp_port())
    # ICMP port unreachable for the ClientHello and its retransmission: a typed failure then,
    # not at the handshake deadline.
    started = time.monotonic()
    with pytest.raises(PortUnreachable, match=r"^nothing listens on .* 2 times"):
        sync.connect(*address, client_config(retransmit=FAST, handshake_timeout=30.0))
    assert time.monotonic() - started < 10.0


def test_a_handshake_deadline_before_the_second_refusal_says_the_port_was_refused() -> None:
    """Before the second report (`PortUnreachable`), the deadline: the timeout says the
    network reported the port unreachable, as `aio.connect`'s does (probe BG, F5)."""
    address = (LOCALHOST, free_udp_port())
    with pytest.raises(HandshakeTimeout) as timed_out:
        sync.connect(*address, client_config(handshake_timeout=0.5))
    assert timed_out.value.unreachable_reports == 1
    assert str(timed_out.value) == (
        "handshake timed out after 0.5 s; the network reported the port unreachable 1 time "
        "(ICMP): nothing may listen there"
    )


def test_refusals_after_a_datagram_from_the_server_do_not_end_the_handshake() -> None:
    """Once any datagram came from the server, its port's ICMP unreachable reports may be stale
    (`RefusedHandshake.heard`): the handshake goes on to its deadline, not `PortUnreachable`
    at the second (M18: `_read_one` leaving `heard` False). Its `HandshakeTimeout` counts the
    reports that came after the answer: the server may have gone (probe CE F8: it named
    none)."""
    config = client_config(retransmit=FAST, handshake_timeout=2.0)
    with answers_once_then_goes() as address, pytest.raises(HandshakeTimeout) as timed_out:
        sync.connect(*address, config)
    assert timed_out.value.unreachable_reports == 0
    reports = timed_out.value.unreachable_after_answer
    assert reports >= 1
    assert str(timed_out.value) == (
        f"handshake timed out after 2 s; the network reported the port unreachable {reports} "
        f"{'time' if reports == 1 else 'times'} (ICMP) after the server had answered: it may "
        "have gone away"
    )


def test_each_address_of_a_name_is_tried_while_the_one_before_is_unreachable(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `aio.connect`: a name with an IPv6 and an IPv4 address, the server on IPv4 only:
    the handshake to [::1] ends with `PortUnreachable` and the next address is tried, where
    `connect` raised PortUnreachable for the first. With none reachable, the last one's error
    is raised. The name is resolved once: each address's socket is made as `aio` makes it
    and handed to the client (which resolved the address again), the unreachable one's
    closed."""
    real = socket.getaddrinfo
    resolved: list[str] = []

    def dual(host: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(host)
        if host == "dual.test":
            return real("::1", *args, **kwargs) + real(LOCALHOST, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dual)
    made = udp_sockets_made(monkeypatch)
    port = server.address[1]
    with sync.connect("dual.test", port, client_config(retransmit=FAST)) as client:
        assert client.connection.peer is not None
        client.send(b"over IPv4")
        assert client.recv(timeout=5.0) == b"over IPv4"
        assert resolved == ["dual.test"]
        assert [sock.family for sock in made] == [socket.AF_INET6, socket.AF_INET]
        assert made[0].fileno() == -1 and made[1] is client._sock
    closed = free_udp_port()
    with pytest.raises(PortUnreachable, match=rf"^nothing listens on {LOCALHOST}:{closed}: "):
        sync.connect("dual.test", closed, client_config(retransmit=FAST))


def test_peer_close_notify_during_the_handshake_raises_alert_received() -> None:
    """RFC 5246 §7.2.1: a close_notify answering the ClientHello ends connect() with
    AlertReceived(close_notify), as in `aio`, not LocalProtocolError (the user's misuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((LOCALHOST, 0))
        peer.settimeout(5.0)

        def answer() -> None:
            _, address = peer.recvfrom(65535)
            peer.sendto(bytes.fromhex("15 fefd 0000 000000000007 0002 0100"), address)

        answering = threading.Thread(target=answer)
        answering.start()
        try:
            with pytest.raises(AlertReceived) as info:
                sync.connect(*peer.getsockname(), client_config(handshake_timeout=5.0))
        finally:
            answering.join(6.0)
    assert info.value.alert is AlertDescription.close_notify
    assert str(info.value) == "the peer closed the association (close_notify)"


@pytest.mark.req("ERR-1", "PSK-4")
def test_wrong_key_raises_alert_received(server: ServerThread) -> None:
    with pytest.raises(AlertReceived) as info:
        sync.connect(*server.address, client_config(psk=WRONG_PSK))
    assert info.value.alert is AlertDescription.decrypt_error
    assert info.value.resuming is False  # a full handshake: no saved session to drop
    assert "(the server could not verify our Finished: the PSK does not match" in str(info.value)


def test_several_concurrent_clients(server: ServerThread) -> None:
    results: dict[int, list[bytes | None]] = {}

    def one(number: int) -> None:
        with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
            replies = []
            for round_ in range(3):
                client.send(b"%d/%d" % (number, round_))
                replies.append(client.recv(timeout=5.0))
            results[number] = replies

    threads = [threading.Thread(target=one, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15.0)
    assert results == {n: [b"%d/%d" % (n, r) for r in range(3)] for n in range(5)}
    assert len({address for address, _ in server.received}) == 5


def test_given_socket_is_used(server: ServerThread) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    source = sock.getsockname()
    with sync.connect(*server.address, client_config(), sock=sock) as client:
        client.send(b"mine")
        assert client.recv(timeout=5.0) == b"mine"
    assert [address for address, _ in server.received] == [source]
    assert sock.fileno() == -1  # closed with the client


def test_each_datagram_read_is_handed_to_the_core_as_its_own_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Datagrams are read into one reused buffer: each reaches the core as bytes of its own
    size, still whole after the next read filled the buffer again; no read allocates the
    64 KiB that `recv(65535)` did (then shrank: holes in a long-lived client's heap)."""

    class Recorder:
        """The core, as far as `_pump` uses it before a handshake: it keeps what it gets."""

        def __init__(self) -> None:
            self.got: list[Any] = []

        def get_timer(self) -> None:
            return None

        def receive_datagram(self, data: Any, now: float) -> None:
            self.got.append(data)

        def datagrams_to_send(self, now: float) -> list[bytes]:
            return []

        def next_event(self) -> None:
            return None

    core = Recorder()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((LOCALHOST, 0))
        with sync.DtlsClient(*peer.getsockname(), client_config()) as client:
            monkeypatch.setattr(client, "connection", core)
            sent = [b"the first datagram", b"second"]
            for data in sent:
                peer.sendto(data, client._sock.getsockname())
            tracemalloc.start()
            try:
                for _ in sent:
                    assert client._pump(time.monotonic() + 5.0)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            monkeypatch.undo()  # the real core again, for close()
    assert core.got == sent
    assert all(type(data) is bytes for data in core.got)
    assert peak < 16384


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("peer", ["answering", "silent"])
def test_close_from_another_thread_wakes_a_waiting_recv_with_none(
    server: ServerThread, peer: str, timeout: float | None
) -> None:
    """A reader thread and a closer: recv raised a bare "OSError: Bad file descriptor" (the
    socket closed under it, at once when the server answered the close_notify, at the timeout
    otherwise), and without a timeout, behind a peer that does not answer, waited for ever.
    Now it returns None (a clean close by us) at once, and the socket is closed after it."""
    with contextlib.ExitStack() as stack:
        address = server.address
        if peer == "silent":  # the server's datagrams after the handshake's three are dropped
            drop = {("server", index) for index in range(4, 40)}
            proxy = LossyProxy(server.address, seed=1, drop=drop, lifetime=20)
            address = stack.enter_context(proxy).address
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = sync.connect(*address, client_config(), sock=sock)
        result: list[object] = []

        def read() -> None:
            try:
                result.append(client.recv(timeout=timeout))
            except Exception as exc:  # what the test reports
                result.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.2)  # the reader waits for the socket
        started = time.monotonic()
        client.close()
        reader.join(3.0)
        assert not reader.is_alive(), "recv() still waits after close()"
        assert result == [None]
        assert time.monotonic() - started < 2.0
        assert sock.fileno() == -1


def test_close_waits_for_a_thread_that_does_not_leave_the_socket_at_most_close_wait(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that never leaves the socket (stood in for by its reading call) holds
    `close()` back `CLOSE_WAIT` seconds at most, then the sockets are closed all the same."""
    monkeypatch.setattr(sync, "CLOSE_WAIT", 0.2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(), sock=sock)
    client._reader = sync._Reading()  # made in this thread: not the closer
    closer = threading.Thread(target=client.close, daemon=True)
    started = time.monotonic()
    closer.start()
    closer.join(3.0)
    assert not closer.is_alive(), "close() waits for ever"
    assert 0.2 <= time.monotonic() - started < 2.0
    assert sock.fileno() == -1


@pytest.mark.parametrize("when", ["mid-handshake", "retry back-off"])
def test_close_from_another_thread_during_the_handshake_raises_from_it(when: str) -> None:
    """close() from another thread while handshake() runs against a server that never
    answers: mid-handshake, handshake() returned as if it had succeeded, a closed client;
    during a retry's back-off, it woke later, made a new association and sent on the closed
    socket (a bare OSError, EBADF). Now it raises `LocalProtocolError` at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))  # bound: no ICMP port unreachable, no answer either
        if when == "mid-handshake":
            config = client_config(handshake_timeout=30.0)
        else:  # the first attempt times out after 0.5 s, then 2.5 to 5 s of back-off
            retry = RetryPolicy(attempts=2, initial=5.0, maximum=5.0)
            config = client_config(handshake_timeout=0.5, retry=retry)
        client = sync.DtlsClient(*silent.getsockname(), config)
        result: list[BaseException | None] = []

        def handshake() -> None:
            try:
                client.handshake()
                result.append(None)
            except Exception as exc:  # what the test reports
                result.append(exc)

        shaker = threading.Thread(target=handshake)
        shaker.start()
        time.sleep(0.3 if when == "mid-handshake" else 1.2)
        started = time.monotonic()
        client.close()
        shaker.join(5.0)
        assert not shaker.is_alive(), "handshake() still runs after close()"
        assert time.monotonic() - started < 1.0
        [error] = result
        assert type(error) is LocalProtocolError, repr(error)
        assert str(error) == "close() was called during the handshake"


#: Linux's IPV6_MTU socket option (not in the socket module): the path MTU a connected socket
#: uses; with IPV6_DONTFRAG the kernel refuses a larger datagram with EMSGSIZE.
IPV6_MTU = 24


def test_a_datagram_the_path_refuses_as_too_large_raises_datagram_too_large() -> None:
    """config.mtu above the path's MTU: send() raised a bare "OSError: [Errno 90] Message too
    long". Now a `DatagramTooLarge` (`PathMtuExceeded`) says to lower mtu (RFC 6347 §4.1.1),
    and the association stays open for smaller datagrams."""
    server_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server_sock.bind(("::1", 0))
    address = server_sock.getsockname()[:2]
    with ServerThread(server_config(retransmit=FAST), sock=server_sock):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU, 1280)  # the path, below config.mtu
        config = client_config(retransmit=FAST, mtu=1500)
        with sync.connect(*address, config, sock=sock) as client:
            with pytest.raises(DatagramTooLarge) as refused:
                client.send(bytes(1400))
            assert isinstance(refused.value, PathMtuExceeded)
            assert str(refused.value) == (
                "the network path refused a datagram of 1429 bytes (1400 bytes of application "
                "data) as too large (EMSGSIZE): lower mtu (now 1500) to the path's MTU"
            )
            # the parent's units: a resend in chunks of `limit` bytes gets through
            assert (refused.value.size, refused.value.limit) == (1400, 1399)
            assert refused.value.datagram_size == 1429
            client.send(b"smaller")
            assert client.recv(timeout=5.0) == b"smaller"


def test_a_refused_datagram_that_recv_sends_is_logged_not_raised(
    server: ServerThread, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A datagram the path refuses (EMSGSIZE) while `recv` reads, say our answer to a peer's
    heartbeat request larger than the path (RFC 6520 §4): recv() raised `PathMtuExceeded`
    for data the application never sent, and the datagram read stayed undelivered. Now it is
    logged as lost (as in `aio`) and recv() returns the datagram; `send` still raises."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        client.send(b"echoed")
        ours = client.connection
        answer = DtlsConnection.datagrams_to_send

        def with_a_refused_one(core: DtlsConnection, now: float) -> list[bytes]:
            if core is not ours:  # the server's
                return answer(core, now)
            monkeypatch.setattr(DtlsConnection, "datagrams_to_send", answer)
            return [bytes(70000), *answer(core, now)]  # over UDP's limit: EMSGSIZE

        monkeypatch.setattr(DtlsConnection, "datagrams_to_send", with_a_refused_one)
        with caplog.at_level(logging.DEBUG, logger="iotdtls.sync"):
            assert client.recv(timeout=5.0) == b"echoed"
        refused = f"socket error: [Errno {errno.EMSGSIZE}] {os.strerror(errno.EMSGSIZE)} ("
        assert any(r.getMessage().startswith(refused) and r.getMessage().endswith(
            "(a datagram was lost: handshake flights are retransmitted, application data is "
            "not)") for r in caplog.records)

        def with_its_record_refused(core: DtlsConnection, now: float) -> list[bytes]:
            datagrams = answer(core, now)
            if core is not ours or not datagrams:  # the server's, or nothing came to answer
                return datagrams
            monkeypatch.setattr(DtlsConnection, "datagrams_to_send", answer)
            return [bytes(70000), *datagrams]

        monkeypatch.setattr(DtlsConnection, "datagrams_to_send", with_its_record_refused)
        with pytest.raises(PathMtuExceeded):  # send's own datagram refused: raised there
            client.send(b"too large for the path")


# -- heartbeats (RFC 6520, EXT-5) ------------------------------------------------------------


@pytest.fixture
def heartbeat_server() -> Iterator[ServerThread]:
    with ServerThread(server_config(retransmit=FAST, heartbeat=True)) as running:
        yield running


@pytest.mark.req("EXT-5")
def test_heartbeat_is_answered_and_data_arriving_meanwhile_is_kept(
    heartbeat_server: ServerThread,
) -> None:
    with sync.connect(*heartbeat_server.address, client_config(heartbeat=True)) as client:
        client.send(b"before the heartbeat")  # its echo arrives while the heartbeat waits
        assert client.heartbeat(5.0) is True
        assert not client.connection.heartbeat_in_flight
        assert client.recv(timeout=5.0) == b"before the heartbeat"
        assert client.heartbeat(5.0) is True  # and again: one answer each


@pytest.mark.req("EXT-5")
def test_heartbeat_to_a_peer_without_them_is_refused(server: ServerThread) -> None:
    with (
        sync.connect(*server.address, client_config(heartbeat=True)) as client,
        pytest.raises(LocalProtocolError),
    ):
        client.heartbeat(1.0)


@pytest.mark.req("EXT-5")
def test_an_unanswered_heartbeat_gives_false_after_its_timeout(
    heartbeat_server: ServerThread,
) -> None:
    """Through the lossy proxy every server datagram after the handshake's three (the
    HelloVerifyRequest and two flights) is dropped: no answer comes, heartbeat() waits its
    timeout and says False; a second call while the request is in flight sends no other."""
    drop = {("server", index) for index in range(4, 40)}
    with LossyProxy(heartbeat_server.address, seed=1, drop=drop, lifetime=20) as proxy:
        with sync.connect(*proxy.address, client_config(heartbeat=True)) as client:
            started = time.monotonic()
            assert client.heartbeat(0.4) is False
            assert 0.4 <= time.monotonic() - started < 2.0
            assert client.connection.heartbeat_in_flight
            sent = len(proxy.datagrams("client"))
            assert client.heartbeat(0.05) is False
            assert len(proxy.datagrams("client")) == sent  # no second request in flight
        assert proxy.counts[("server", "sent")] == 3


def test_heartbeat_after_the_server_closed_gives_false() -> None:
    with ServerThread(server_config(heartbeat=True)) as running:
        client = sync.connect(*running.address, client_config(heartbeat=True))
    # The server sent close_notify when it stopped: the heartbeat's wait reads it and ends
    # at once with False (a clean close, no error); the next one is refused outright.
    started = time.monotonic()
    assert client.heartbeat(5.0) is False
    assert time.monotonic() - started < 2.0
    with pytest.raises(LocalProtocolError):
        client.heartbeat(5.0)
    client.close()


def test_send_after_the_peer_closed_says_so_and_is_a_dtls_error() -> None:
    """It said "cannot send application data in state CLOSED", a `LocalProtocolError` only: a
    sensor catching `DtlsError` to connect again crashed instead (as with aio)."""
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
    with client:
        assert client.recv(timeout=5.0) is None  # the server's close_notify
        with pytest.raises(DtlsError) as late:
            client.send(b"reading")
        assert isinstance(late.value, AssociationEnded)
        assert str(late.value) == (
            "cannot send application data: the peer closed the association (close_notify)"
        )


@pytest.mark.req("EXT-5")
def test_send_after_peer_unresponsive_says_so_as_aio_does(
    heartbeat_server: ServerThread,
) -> None:
    """sync re-raised the PeerUnresponsive where aio said "cannot send application data in
    state CLOSED": both raise `AssociationEnded` naming the error, its `__cause__`."""
    drop = {("server", index) for index in range(4, 60)}
    with LossyProxy(heartbeat_server.address, seed=1, drop=drop, lifetime=20) as proxy:
        config = client_config(heartbeat=True, handshake_timeout=1.0)
        with sync.connect(*proxy.address, config) as client:
            with pytest.raises(PeerUnresponsive) as ended:
                client.heartbeat(10.0)
            with pytest.raises(AssociationEnded) as late:
                client.send(b"reading")
    assert late.value.__cause__ is ended.value
    assert str(late.value) == (
        "cannot send application data: the association ended with PeerUnresponsive: the peer "
        "did not answer heartbeats for 1 s"
    )


# -- a client that only sends ----------------------------------------------------------------


def _until_a_datagram_waits(client: sync.DtlsClient) -> None:
    """Wait (5 s at most) until a datagram waits unread at the client's socket."""
    readable, _, _ = select.select([client._sock], [], [], 5.0)
    assert readable


def test_a_client_that_only_sends_learns_of_the_peers_close_notify_at_its_next_send() -> None:
    """Only `recv` and `heartbeat` read the socket: a client that only sent went on sending
    into the association the server had closed, with no error, its data lost."""
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
    with client:
        _until_a_datagram_waits(client)  # the close_notify of the server's stop
        with pytest.raises(AssociationEnded) as late:
            client.send(b"reading")
    assert str(late.value) == (
        "cannot send application data: the peer closed the association (close_notify)"
    )


@pytest.mark.req("EXT-5")
def test_a_client_that_only_sends_answers_the_servers_keep_alive_heartbeats() -> None:
    """A server that only receives asks for a heartbeat after each second of its own silence
    (RFC 6520 §3: the peer MUST answer): the requests waited unread and the server,
    unanswered for 1 s, ended the live association, the readings after it lost."""
    config = server_config(heartbeat=True, keepalive_interval=1.0, handshake_timeout=1.0)
    with ServerThread(config, echo=False) as running:
        with sync.connect(*running.address, client_config(heartbeat=True)) as client:
            for index in range(30):
                client.send(b"%d" % index)
                time.sleep(0.1)
            assert running.wait_until(lambda: len(running.received) == 30)
        assert running.wait_until(lambda: len(running.ended) == 1)
    assert running.ended[0][1] is None  # our close_notify ended it, no PeerUnresponsive


@pytest.mark.req("HS-4", "RES-1")
def test_a_client_that_only_sends_repeats_the_lost_last_flight_of_a_resumed_handshake(
    server: ServerThread,
) -> None:
    """The client sends the last flight of an abbreviated handshake (RFC 5246 §7.3) and must
    answer the server's retransmitted flight with it again (RFC 6347 §4.2.4): a client that
    only sent never read those, and every reading went to a handshake that timed out."""
    with sync.connect(*server.address, client_config()) as first:
        session = first.session
    with (
        LossyProxy(server.address, seed=1, drop={("client", 3)}, lifetime=20) as proxy,
        sync.connect(*proxy.address, client_config(), session=session) as client,
    ):
        assert client.resumed
        for index in range(20):
            client.send(b"%d" % index)
            time.sleep(0.1)
        assert server.wait_until(lambda: b"19" in server.data())
    assert proxy.counts[("client", "dropped")] == 1
    assert len(server.started) == 2


def test_send_reads_a_bounded_number_of_waiting_datagrams_first(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that never stops sending cannot hold a `send` for ever."""
    with sync.connect(*server.address, client_config()) as client:
        reads = 0

        def read_one(readable: bool) -> bool:
            nonlocal reads
            reads += 1
            assert reads <= 10 * sync.MAX_LATE_READS, "send() goes on reading"
            return True

        monkeypatch.setattr(client, "_read_one", read_one)
        client.send(b"reading")
        assert reads == sync.MAX_LATE_READS
        monkeypatch.undo()
        assert client.recv(timeout=5.0) == b"reading"


def test_send_and_a_polling_recv_look_at_an_empty_socket_once(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing waiting, `send` reads the socket once (no datagram read ends its reading)
    and `recv(timeout=0)` pumps once: neither polls it `MAX_LATE_READS` times over (M18:
    `_read_one` answering True with nothing read)."""
    with sync.connect(*server.address, client_config()) as client:
        real = client._read_one
        reads: list[bool] = []

        def read_one(readable: bool) -> bool:
            read = real(readable)
            reads.append(read)
            return read

        monkeypatch.setattr(client, "_read_one", read_one)
        client.send(b"reading")
        assert reads == [False]
        assert client.recv(timeout=5.0) == b"reading"
        reads.clear()
        assert client.recv(timeout=0) is None
        assert reads == [False]


def test_a_send_while_another_thread_waits_in_recv_leaves_the_socket_to_it(
    server: ServerThread,
) -> None:
    """The waiting `recv` reads the socket and answers the peer: `send` reads nothing then (two
    threads polling one socket at once is an error, and the recv would miss what send read)."""
    with sync.connect(*server.address, client_config()) as client:
        received: list[bytes | None] = []
        reader = threading.Thread(target=lambda: received.append(client.recv(timeout=5.0)))
        reader.start()
        try:
            deadline = time.monotonic() + 5.0
            while client._reader is None and time.monotonic() < deadline:
                time.sleep(0.01)
            client.send(b"reading")
        finally:
            reader.join(10.0)
        assert received == [b"reading"]


# -- what connect() passes on ----------------------------------------------------------------


@pytest.mark.req("RES-1")
def test_a_saved_session_is_resumed(server: ServerThread) -> None:
    with sync.connect(*server.address, client_config()) as first:
        assert not first.resumed
        saved = first.session
    assert saved is not None
    with sync.connect(*server.address, client_config(), session=saved) as second:
        assert second.resumed
        second.send(b"resumed")
        assert second.recv(timeout=5.0) == b"resumed"


@pytest.mark.req("RES-1")
def test_a_retry_after_a_failed_resumption_still_says_the_session_was_resumed() -> None:
    """As with aio: the first attempt resumes a session whose secret is damaged and fails (at
    once: the server's Finished does not authenticate, decrypt_error), the retry (a full
    handshake) finds the server gone; its error says `resuming`."""
    server = ServerThread(server_config())
    server.start()
    with sync.connect(*server.address, client_config()) as first:
        saved = first.session
    assert saved is not None
    damaged = dataclasses.replace(saved, master_secret=bytes(48))
    retry = RetryPolicy(attempts=2, initial=1.0, maximum=1.0)
    config = client_config(handshake_timeout=0.5, retry=retry)
    stopper = threading.Timer(0.25, server.stop)  # after the first attempt, before the retry
    stopper.start()
    started = time.monotonic()
    try:
        with pytest.raises(DtlsError) as failed:
            sync.connect(*server.address, config, session=damaged)
    finally:
        stopper.join(5.0)
        server.stop()
    # The error is the retry's (back-off of 0.5 s at least, 0.5 s attempt, its server gone),
    # not the first attempt's, which says `resuming` on its own.
    assert isinstance(failed.value, HandshakeTimeout)
    assert time.monotonic() - started >= 0.95
    assert failed.value.resuming is True


@pytest.mark.req("CRT-2")
@pytest.mark.parametrize("server_name", ["localhost", None])
def test_the_chain_cache_is_filled_then_offered(tmp_path: Path, server_name: str | None) -> None:
    """The first handshake keeps the server's chain under "NAME:PORT" (the name checked, or
    else the host connected to); the next one offers it in cached_info (RFC 7924) and
    completes with it."""
    p = x509_pki()
    # Without a server_name the host connected to is the name checked: a certificate for it.
    leaf = pki.server_leaf(p.ca, san=pki.ip(LOCALHOST)) if server_name is None else p.server
    client, config = x509_configs(
        client={"server_name": server_name, "handshake_timeout": 10.0},
        server={"certificates": [p.certified(leaf)]},
    )
    cache = ChainCache(tmp_path)
    name = server_name or LOCALHOST
    with ServerThread(config) as running:
        port = running.address[1]
        with sync.connect(LOCALHOST, port, client, chain_cache=cache) as first:
            assert tuple(first.connection.config.cached_server_chain) == ()
        chain = cache.load(f"{name}:{port}")
        assert chain == pki.chain_der(leaf, p.ca)
        with sync.connect(LOCALHOST, port, client, chain_cache=cache) as second:
            assert tuple(second.connection.config.cached_server_chain) == chain
            second.send(b"cached")
            assert second.recv(timeout=5.0) == b"cached"
    saved = [entry.name for entry in tmp_path.iterdir()]
    assert saved == [cache.path_for(f"{name}:{port}").name]


@pytest.mark.req("CRT-3")
def test_without_a_server_name_the_certificate_must_name_the_host() -> None:
    """As with `aio.connect`: no `server_name`, and the certificate must carry the host given
    (RFC 7925 §4.4.1); one for "localhost" alone is refused for 127.0.0.1."""
    client, config = x509_configs(client={"server_name": None, "handshake_timeout": 10.0})
    with ServerThread(config) as running, pytest.raises(AlertSent, match="bad_certificate"):
        sync.connect(LOCALHOST, running.address[1], client)


def test_a_send_refused_by_the_network_is_not_an_error() -> None:
    """The server's port closed: the kernel reports the ICMP port unreachable on the next
    send or read of the connected socket, and the client treats it as one more lost
    datagram."""
    with (
        ServerThread(server_config()) as running,
        LossyProxy(running.address, seed=1, lifetime=20) as proxy,
    ):
        client = sync.connect(*proxy.address, client_config())
    with client:  # the proxy, the client's server, went without a close_notify
        client.send(b"into the void")
        time.sleep(0.2)  # the ICMP error arrives and waits on the socket
        client.send(b"refused")  # raises ConnectionRefusedError underneath, suppressed
        client.send(b"and again")


class _RouteOutage(socket.socket):
    """A UDP socket whose sends fail with EHOSTUNREACH while `down` is set, as the kernel's do
    while the route to the server is gone (`ip route add unreachable`, probe BF #2);
    `failed` counts the sends it refused."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.down = False
        self.failed = 0

    def send(self, data: Any, flags: int = 0) -> int:
        if self.down:
            self.failed += 1
            raise OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
        return super().send(data, flags)


def test_a_handshake_across_a_route_outage_completes_once_sends_work_again(
    server: ServerThread, caplog: pytest.LogCaptureFixture,
) -> None:
    """The route to the server gone for 0.5 s as the handshake starts: handshake() raised the
    bare "OSError: [Errno 113] No route to host" of the first send (`_flush` re-raised every
    OSError but EMSGSIZE), `config.retry` never retried, while `aio` logs the failed send and
    lets the timer resend (probe BF #2). Now the flight is lost as UDP loses one (RFC 6347
    §4.2.4): logged, retransmitted, and the handshake completes once the route is back."""
    sock = _RouteOutage()
    sock.down = True
    back = threading.Timer(0.5, lambda: setattr(sock, "down", False))
    back.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="iotdtls.sync"):
            client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    finally:
        back.cancel()
    with client:
        assert sock.failed >= 2  # the ClientHello and at least one retransmission
        client.send(b"after the outage")
        assert client.recv(timeout=5.0) == b"after the outage"
    lost = f"socket error: [Errno {errno.EHOSTUNREACH}] {os.strerror(errno.EHOSTUNREACH)} ({LOST})"
    assert lost in [r.getMessage() for r in caplog.records]


@pytest.mark.req("EXT-5")
def test_recv_heartbeat_send_and_close_ride_out_a_route_outage(
    heartbeat_server: ServerThread,
) -> None:
    """An established client while its sends fail with EHOSTUNREACH: heartbeat(), and recv()
    while the lost request is retransmitted, raised the bare OSError, and so did close()
    (its close_notify) and with it a `with` block's exit (probe BF #2). Now they behave as
    over a network that loses the datagrams: heartbeat() says False, recv() returns None at
    its timeout, send()'s datagram is lost, close() returns; once the route is back the same
    association answers again."""
    sock = _RouteOutage()
    config = client_config(retransmit=FAST, heartbeat=True)
    client = sync.connect(*heartbeat_server.address, config, sock=sock)
    sock.down = True
    assert client.heartbeat(0.3) is False  # its request lost
    assert client.recv(timeout=0.6) is None  # the request retransmitted meanwhile, lost too
    failed = sock.failed
    assert failed >= 2
    client.send(b"lost")  # lost as UDP loses one: no error (as in aio)
    assert sock.failed == failed + 1
    sock.down = False
    assert client.heartbeat(5.0) is True
    client.send(b"after the outage")
    assert client.recv(timeout=5.0) == b"after the outage"
    sock.down = True
    client.close()  # close_notify is best effort
    assert sock.failed > failed + 1
    assert sock.fileno() == -1
    assert client._wake_reader.fileno() == client._wake_writer.fileno() == -1
    with pytest.raises(AssociationEnded):
        client.send(b"after close")


def test_an_icmp_error_reported_on_a_read_is_logged_not_raised(
    server: ServerThread, caplog: pytest.LogCaptureFixture,
) -> None:
    """An ICMP host unreachable from a router on the way is reported by the connected
    socket's next read (Linux: `recv` raises EHOSTUNREACH once): recv() raised it as a
    bare OSError, where `aio` (asyncio's and our transports pass every read error to
    `error_received`) logs it. Now it is logged and recv() reads on, and a handshake goes
    on with its timer (M14: the timer handled at the time of the error); a read that says the
    socket is closed under us (EBADF: a caller's `sock=` closed by its owner) still raises."""

    class Reported(_RouteOutage):
        pending = 0  # the errno the next read reports

        def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
            if self.pending:
                reported, self.pending = self.pending, 0
                raise OSError(reported, os.strerror(reported))
            return super().recv_into(buffer, nbytes, flags)

    sock = Reported()
    sock.pending = errno.EHOSTUNREACH  # reported by the handshake's first read
    with caplog.at_level(logging.DEBUG, logger="iotdtls.sync"):
        client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    assert not sock.pending
    with client:
        client.send(b"echoed")
        time.sleep(0.1)  # the echo waits on the socket: the read that reports comes first
        sock.pending = errno.EHOSTUNREACH
        with caplog.at_level(logging.DEBUG, logger="iotdtls.sync"):
            assert client.recv(timeout=5.0) == b"echoed"
        assert not sock.pending
        client.send(b"again")
        time.sleep(0.1)
        sock.pending = errno.EBADF
        with pytest.raises(OSError) as closed:
            client.recv(timeout=5.0)
        assert closed.value.errno == errno.EBADF
    lost = f"socket error: [Errno {errno.EHOSTUNREACH}] {os.strerror(errno.EHOSTUNREACH)} ({LOST})"
    assert lost in [r.getMessage() for r in caplog.records]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
@pytest.mark.parametrize("when", ["before", "while-waiting"])
@pytest.mark.parametrize("call", ["recv-no-timeout", "recv-timeout", "handshake"])
def test_a_callers_socket_closed_by_the_caller_raises_ebadf_at_once(
    server: ServerThread, call: str, when: str
) -> None:
    """A caller's `sock=` closed by the caller (not `close()` of the client): recv() spun
    on poll's POLLNVAL for the closed descriptor until its timeout (2.2 s of CPU in 3 s)
    and returned None, without one for ever, and a handshake spun until its next
    retransmission (probe BH #1), where the README says the call raises its OSError
    (EBADF). Now the call raises EBADF at once, closed before it or while it waits (by a
    signal handler of the waiting thread here). A watchdog closes the client at 3 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOCALHOST, 0))
    if call == "handshake":  # a server that never answers: the handshake waits
        client = sync.DtlsClient(*silent.getsockname(), client_config(), sock=sock)
    else:
        client = sync.connect(*server.address, client_config(), sock=sock)

    def run() -> object:
        if call == "handshake":
            return client.handshake()
        return client.recv(timeout=None if call == "recv-no-timeout" else 5.0)

    def watch() -> None:
        with contextlib.suppress(OSError):  # its close_notify meets the closed socket
            client.close()

    previous = signal.signal(signal.SIGUSR1, lambda number, frame: sock.close())
    watchdog = threading.Timer(3.0, watch)
    watchdog.start()
    try:
        if when == "before":
            sock.close()
        else:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started, cpu = time.monotonic(), time.thread_time()
        with pytest.raises(OSError) as closed:
            run()
        assert closed.value.errno == errno.EBADF
        assert time.monotonic() - started < (1.0 if when == "before" else 1.2)
        assert time.thread_time() - cpu < 0.3
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGUSR1, previous)
        with contextlib.suppress(OSError):
            client.close()
        silent.close()


def test_a_callers_socket_closed_by_another_thread_raises_ebadf_as_the_wait_ends(
    server: ServerThread,
) -> None:
    """A caller's `sock=` closed by another thread while recv() waits: the OS does not wake
    the wait, which ends at the timeout; the socket, closed by then (fileno -1), is read and
    raises EBADF, not the timeout's None (M14: `_wait`'s look at fileno after the wait)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(), sock=sock)
    closer = threading.Timer(0.2, sock.close)
    closer.start()
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as closed:
            client.recv(timeout=0.8)
        assert closed.value.errno == errno.EBADF
        assert time.monotonic() - started < 3.0
    finally:
        closer.cancel()
        client.close()


def test_a_callers_socket_closed_raises_ebadf_at_once_though_its_number_is_reused(
    server: ServerThread,
) -> None:
    """A caller's `sock=` closed by the caller, and its descriptor number taken at once by
    another file (any open of this process may get it): recv() raises EBADF at once, from
    the socket object's fileno of -1, and does not wait on the other file's readiness until
    its timeout (M14: `_wait`'s look at fileno before the wait)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(), sock=sock)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        number = sock.fileno()
        sock.close()
        os.dup2(other.fileno(), number)  # the number now names a quiet socket of another's
        try:
            started = time.monotonic()
            with pytest.raises(OSError) as closed:
                client.recv(timeout=3.0)
            assert closed.value.errno == errno.EBADF
            assert time.monotonic() - started < 1.0
        finally:
            os.close(number)
            client.close()


@pytest.mark.parametrize("port", [0, 65536, 70000])
def test_a_port_out_of_range_is_refused_before_making_a_socket(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getaddrinfo would take 70000 for 4464: a handshake timeout against the wrong port."""

    def no_socket(*args: object) -> socket.socket:
        raise AssertionError("a socket was made for a port that was refused")

    monkeypatch.setattr(socket, "socket", no_socket)
    with pytest.raises(ValueError, match=rf"^port must be from 1 to 65535, got {port}$"):
        sync.connect(LOCALHOST, port, client_config())
    with pytest.raises(ValueError, match=rf"^port must be from 1 to 65535, got {port}$"):
        sync.DtlsClient(LOCALHOST, port, client_config())


@pytest.mark.parametrize(("wrong", "message"), WRONG_CLIENT_ARGUMENTS)
def test_an_argument_of_the_wrong_type_is_refused_before_making_a_socket(
    wrong: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = udp_sockets_made(monkeypatch)
    arguments = {"host": LOCALHOST, "port": 5684, "config": client_config(), **wrong}
    with pytest.raises(TypeError) as refused:
        sync.connect(**arguments)
    assert str(refused.value) == message
    assert made == []


@pytest.mark.parametrize(("kind", "error", "message"), WRONG_SOCKETS)
def test_a_socket_that_is_not_an_open_udp_one_is_refused(
    kind: str, error: type[Exception], message: str
) -> None:
    """A TCP socket failed with a raw ConnectionRefusedError, a closed one with "Bad file
    descriptor"."""
    with wrong_socket(kind) as sock:
        for make in (sync.connect, sync.DtlsClient):
            with pytest.raises(error) as refused:
                make(LOCALHOST, 5684, client_config(), sock=sock)
            assert str(refused.value) == message


@pytest.mark.parametrize(("family", "host", "message"), FAMILY_MISMATCHES)
def test_a_socket_of_the_other_family_than_the_address_is_refused_in_one_line(
    family: socket.AddressFamily, host: str, message: str
) -> None:
    """An IPv4 socket and ::1 failed with a raw "TypeError: AF_INET address must be a pair",
    an IPv6 one and 127.0.0.1 with "cannot resolve 127.0.0.1: Address family for hostname
    not supported"; the caller's socket stays open."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for make in (sync.connect, sync.DtlsClient):
            with pytest.raises(ConfigError) as refused:
                make(host, 5684, client_config(), sock=sock)
            assert str(refused.value) == message
        assert sock.fileno() != -1


def test_a_name_is_reached_at_its_address_of_the_socket_s_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name with an IPv6 address first: an IPv4 socket given connects to its IPv4 one (it
    failed with "AF_INET address must be a pair"); a name with no address of the socket's
    family is refused naming both."""
    port = free_udp_port()
    resolved = [
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", port, 0, 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", (LOCALHOST, port)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: resolved)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        client = sync.DtlsClient("dual.example", port, client_config(), sock=sock)
        assert sock.getpeername() == (LOCALHOST, port)
        client.close()
    del resolved[1]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(ConfigError) as refused,
    ):
        sync.DtlsClient("dual.example", port, client_config(), sock=sock)
    assert str(refused.value) == (
        "sock is an AF_INET (IPv4) socket but dual.example has no address of that family: "
        "pass an AF_INET6 socket, or an IPv4 address"
    )


def test_a_client_before_its_handshake_refuses_send_recv_and_heartbeat() -> None:
    """recv() returned None (and recv(timeout=None) blocked for ever) where send and heartbeat
    said what was missing."""
    with sync.DtlsClient(LOCALHOST, free_udp_port(), client_config()) as client:
        for call in (lambda: client.send(b"x"), lambda: client.recv(0.1), client.recv,
                     lambda: client.heartbeat(0.1)):
            with pytest.raises(LocalProtocolError, match=r"^handshake\(\) has not been called$"):
                call()


def test_an_empty_host_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    made = udp_sockets_made(monkeypatch)
    for make in (sync.connect, sync.DtlsClient):
        with pytest.raises(ConfigError) as refused:
            make("", 5684, client_config())
        assert str(refused.value) == EMPTY_HOST
    assert made == []


def test_a_host_in_brackets_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect("[::1]", ...) said "server name '[::1]' is neither a DNS name nor an IP
    address": brackets are for [V6]:PORT and URIs, the host goes without them."""
    made = udp_sockets_made(monkeypatch)
    for make in (sync.connect, sync.DtlsClient):
        with pytest.raises(ConfigError) as refused:
            make("[::1]", 5684, client_config())
        assert str(refused.value) == (
            "host '[::1]' is in brackets: give it without them, '::1' (brackets are for "
            "[V6]:PORT and URIs)"
        )
    assert made == []


class _Unreachable(socket.socket):
    """A socket whose connect fails as on a host without a route."""

    def connect(self, address: Any) -> None:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


def test_a_given_socket_is_connected_to_the_host_asked_for_and_failures_name_it() -> None:
    """`sync.connect(sock=)` connects the socket to `host`'s own address (127.0.0.2 here, not
    the loopback address a resolver gives for no host at all), and a host that does not
    resolve, or an address the socket cannot reach, is named in the error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sync._connect_to(sock, "127.0.0.2", 5684)
        assert sock.getpeername() == ("127.0.0.2", 5684)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(socket.gaierror) as unresolved:
            sync._connect_to(sock, "nonexistent.invalid", 5684)
        assert str(unresolved.value.strerror).startswith(UNRESOLVED)
    with _Unreachable(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as unreachable:
            sync._connect_to(sock, "127.0.0.2", 5684)
        assert unreachable.value.strerror == (
            "cannot reach 127.0.0.2:5684: Network is unreachable"
        )


def test_a_host_that_does_not_resolve_is_named() -> None:
    """As in aio: a socket.gaierror naming the host, not only "Name or service not known"."""
    for make in (sync.connect, sync.DtlsClient):
        with pytest.raises(socket.gaierror) as failed:
            make("nonexistent.invalid", 5684, client_config())
        assert str(failed.value.strerror).startswith(UNRESOLVED)


def test_a_link_local_address_without_its_interface_is_named() -> None:
    """As in aio: "Invalid argument" alone did not say to add %interface."""
    for make in (sync.connect, sync.DtlsClient):
        with pytest.raises(OSError) as failed:
            make("fe80::1", 5684, client_config())
        assert (failed.value.errno, failed.value.strerror) == (errno.EINVAL, NEEDS_INTERFACE)


class Broken(Exception):
    """What a test makes part of the set-up raise."""


def broken(*args: object, **kwargs: object) -> Any:
    raise Broken


@pytest.mark.parametrize("where", ["DtlsConnection", "socket.connect", "remember_chain"])
def test_a_failed_connect_closes_the_socket_whatever_failed(
    server: ServerThread, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = udp_sockets_made(monkeypatch)
    if where == "DtlsConnection":
        monkeypatch.setattr(sync, "DtlsConnection", broken)
    elif where == "socket.connect":
        monkeypatch.setattr(socket.socket, "connect", broken)  # the recording class's
    else:
        monkeypatch.setattr(sync, "remember_chain", broken)
    with pytest.raises(Broken):
        sync.connect(*server.address, client_config(retransmit=FAST))
    assert [sock.fileno() for sock in made] in ([], [-1])


@pytest.mark.parametrize("whose", ["ours", "the caller's"])
def test_a_client_that_cannot_be_made_closes_our_socket_never_the_caller_s(
    whose: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket `connect` made (now handed to the client as `sock`) is closed when the
    client cannot be made; a socket the caller gave stays theirs."""
    given = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if whose != "ours" else None
    port = free_udp_port()
    made = udp_sockets_made(monkeypatch)
    monkeypatch.setattr(socket, "socketpair", broken)
    with pytest.raises(Broken):
        sync.connect(LOCALHOST, port, client_config(), sock=given)
    if given is None:
        assert [sock.fileno() for sock in made] == [-1]
    else:
        assert made == [] and given.fileno() != -1
        given.close()


def test_close_closes_the_sockets_whatever_sending_close_notify_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.DtlsClient(LOCALHOST, free_udp_port(), client_config(), sock=sock)
    monkeypatch.setattr(sync.DtlsConnection, "close", broken)
    with pytest.raises(Broken):
        client.close()
    assert sock.fileno() == -1
    assert client._wake_reader.fileno() == client._wake_writer.fileno() == -1


def test_send_refuses_data_that_is_not_bytes_like_in_one_line(server: ServerThread) -> None:
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        for data, message in NOT_BYTES:
            with pytest.raises(TypeError) as refused:
                client.send(data)
            assert str(refused.value) == message
            assert refused.value.__suppress_context__ or refused.value.__context__ is None
        client.send(bytearray(b"still here"))
        assert client.recv(timeout=5.0) == b"still here"


def test_send_takes_a_memoryview_of_any_format_as_its_bytes(server: ServerThread) -> None:
    """A view of 2- or 4-byte items goes out whole (the cipher refused it), a multi-dimensional
    one too; one that is not contiguous is refused in one line (probe CE F1), and so is one
    released already (Python's ValueError, probe CF F4)."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        for view, message in (NOT_CONTIGUOUS, RELEASED):
            with pytest.raises(TypeError) as refused:
                client.send(view)
            assert str(refused.value) == message
        for view, sent in VIEWS:
            client.send(view)
            assert client.recv(timeout=5.0) == sent


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (float("nan"), ValueError, "timeout must be a number of seconds, got nan"),
        (-1, ValueError, "timeout must not be negative, got -1"),
        (-0.5, ValueError, "timeout must not be negative, got -0.5"),
        ("1", TypeError, "timeout must be a number of seconds or None, got str"),
        (True, TypeError, "timeout must be a number of seconds or None, got bool"),
        (-(10**400), ValueError, "timeout must not be negative, got a number of 402 characters"),
        (-(10**38), ValueError, f"timeout must not be negative, got {-(10**38)}"),  # 40 shown
        (-(10**39), ValueError, "timeout must not be negative, got a number of 41 characters"),
    ],
    ids=["nan", "negative", "negative-float", "str", "bool", "negative-beyond-float",
         "negative-of-40-characters", "negative-of-41-characters"],
)
def test_a_nan_negative_or_non_number_timeout_is_refused_in_one_line(
    server: ServerThread, timeout: Any, error: type[Exception], message: str
) -> None:
    """recv(timeout=nan) spun a core until data came (a NaN deadline never passes, and each
    wait computed from it returned at once); a negative one returned None, a str failed
    deep inside with "unsupported operand type(s)". A datagram waits meanwhile (so a recv
    that took the timeout returns at once), and is still there after the refusals."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sync.connect(*server.address, client_config(retransmit=FAST), sock=sock) as client:
        client.send(b"still here")
        assert select.select([sock], [], [], 5.0)[0] == [sock]  # the echo is waiting
        with pytest.raises(error) as refused:
            client.recv(timeout=timeout)
        assert str(refused.value) == message
        heartbeat_message = message.replace(" or None", "")
        with pytest.raises(error) as refused:
            client.heartbeat(timeout)
        assert str(refused.value) == heartbeat_message
        assert client.recv(timeout=5.0) == b"still here"


@pytest.mark.parametrize("timeout", [float("inf"), 1e20, 10**400, Fraction(10**400, 3)],
                         ids=["inf", "1e20", "int-beyond-float", "fraction-beyond-float"])
def test_an_infinite_or_huge_timeout_waits_like_none(server: ServerThread, timeout: float) -> None:
    """The first two failed with OverflowError ("timestamp out of range for platform time_t");
    an int beyond any float (probe AV) with a bare "OverflowError: int too large to convert
    to float" from the NaN check, a Fraction as "timeout must be a number of seconds"."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        client.send(b"forever")
        assert client.recv(timeout=timeout) == b"forever"
        client.send(b"again")
        fraction: Any = Fraction(5, 2)  # any numbers.Real, as wall_clock's answer
        assert client.recv(timeout=fraction) == b"again"


def test_a_decimal_timeout_is_refused_as_a_wall_clock_s_decimal_is(server: ServerThread) -> None:
    """`numbers.Real` is what a timeout may be (as what `wall_clock` answers): not a Decimal."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        decimal: Any = Decimal("1")
        with pytest.raises(TypeError) as refused:
            client.recv(timeout=decimal)
        assert str(refused.value) == "timeout must be a number of seconds or None, got Decimal"


def test_a_dropped_client_is_closed_when_collected_with_one_resource_warning(
    server: ServerThread,
) -> None:
    """As `aio` does for a dropped connection: close_notify is sent and the three sockets
    (the UDP one and the wake-up pair) are released, with one ResourceWarning naming the
    server, not three raw ones for the sockets."""
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    sockets = [client._sock, client._wake_reader, client._wake_writer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert [(w.category, str(w.message)) for w in caught] == [
        (ResourceWarning, f"iotdtls: unclosed client to {LOCALHOST}:{server.port}")]
    assert [sock.fileno() for sock in sockets] == [-1, -1, -1]
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])


def test_a_dropped_client_the_peer_closed_is_released_quietly_one_never_used_warns() -> None:
    """Nothing to warn of when the association had ended (as `aio`); a client that never
    started its handshake holds its sockets all the same: one warning, nothing sent."""
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
    assert client.recv(timeout=5.0) is None  # the server's close_notify as it stopped
    sockets = [client._sock, client._wake_reader, client._wake_writer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert caught == []
    assert [sock.fileno() for sock in sockets] == [-1, -1, -1]
    port = free_udp_port()
    idle = sync.DtlsClient(LOCALHOST, port, client_config())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del idle
        gc.collect()
    assert [str(w.message) for w in caught] == [f"iotdtls: unclosed client to {LOCALHOST}:{port}"]


def test_handshake_again_returns_at_once_and_says_why_it_cannot_once_ended() -> None:
    """An established client's `handshake()` has nothing left to do (it said "connect() is
    for a new client connection", a call the user never made); after `close()` it said
    "close() was called during the handshake", which it was not."""
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
        client.handshake()  # established: returns, the association untouched
        client.send(b"still here")
        assert client.recv(timeout=5.0) == b"still here"
    assert client.recv(timeout=5.0) is None  # the server's close_notify as it stopped
    with pytest.raises(LocalProtocolError) as ended:
        client.handshake()
    assert str(ended.value) == (
        "the association has ended: a new handshake needs a new DtlsClient")
    client.close()
    with pytest.raises(LocalProtocolError) as closed:
        client.handshake()
    assert str(closed.value) == "the client is closed: a new handshake needs a new DtlsClient"


def test_a_client_dropped_in_a_cycle_leaves_the_caller_s_socket_to_a_second_client(
    server: ServerThread,
) -> None:
    """The application's socket (`sock=`) is theirs: a client the application dropped, kept
    by a reference cycle (as a failed one is: connection -> error -> traceback -> client) and
    collected at a later garbage collection, closed it under a second, working client on the
    same socket (only an explicit `close()` closes the socket given)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dropped = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    vars(dropped)["cycle"] = dropped  # a reference cycle: only the collector finds it
    wake_pair = [dropped._wake_reader, dropped._wake_writer]
    del dropped
    with sync.DtlsClient(*server.address, client_config(), sock=sock) as working:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        assert [str(w.message) for w in caught] == [
            f"iotdtls: unclosed client to {LOCALHOST}:{server.port}"]
        assert [s.fileno() for s in wake_pair] == [-1, -1]  # its own sockets released
        working.handshake()
        working.send(b"still mine")
        assert working.recv(timeout=5.0) == b"still mine"
    assert sock.fileno() == -1  # close() closes the socket it was given


def test_a_dropped_open_client_sends_close_notify_on_the_caller_s_socket_and_leaves_it_open(
    server: ServerThread,
) -> None:
    """As `close()` would, the association is ended with close_notify (sent on the caller's
    socket) and the wake-up pair released, with one ResourceWarning; the socket given with
    `sock=` is left open, the caller's to close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    wake_pair = [client._wake_reader, client._wake_writer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert [str(w.message) for w in caught] == [
        f"iotdtls: unclosed client to {LOCALHOST}:{server.port}"]
    assert [s.fileno() for s in wake_pair] == [-1, -1]
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])
    assert sock.fileno() != -1
    sock.close()


def test_a_client_dropped_in_a_reference_cycle_is_closed_as_one_dropped_outright(
    server: ServerThread,
) -> None:
    """The collector finalized a cycle's UDP socket and wake-up pair before the client (PEP
    442: in no particular order): three raw socket warnings, then ours with "an unknown
    address", and no close_notify. The client's sockets are now kept until its finalizer
    ran; each time one warning naming the server, and the server sees close_notify."""
    for round_ in range(5):
        client = sync.connect(*server.address, client_config(retransmit=FAST))
        vars(client)["cycle"] = client  # only the collector finds it
        del client
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        assert [str(w.message) for w in caught] == [
            f"iotdtls: unclosed client to {LOCALHOST}:{server.port}"]
        assert server.wait_until(
            lambda ended=round_ + 1: [error for _, error in server.ended] == [None] * ended)


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_a_client_closed_or_dropped_holds_its_sockets_no_longer(
    server: ServerThread, how: str
) -> None:
    """What keeps a client's sockets for its finalizer lets them go once it is closed (or
    finalized): nothing else holds them."""
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    sockets = [weakref.ref(s) for s in (client._sock, client._wake_reader, client._wake_writer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "closed":
            client.close()
        del client
        gc.collect()
    assert [ref() for ref in sockets] == [None, None, None]


def test_a_dropped_client_is_closed_before_its_warning_which_may_be_an_error(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `-W error` (warnings made errors) the warning raised before anything was closed:
    the three sockets stayed open (to the interpreter's exit) and no close_notify went out.
    It is given once the client is closed."""
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    sockets = [client._sock, client._wake_reader, client._wake_writer]
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda what: raised.append(what.exc_value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del client
        gc.collect()
    assert [str(error) for error in raised] == [
        f"iotdtls: unclosed client to {LOCALHOST}:{server.port}"]
    assert [sock.fileno() for sock in sockets] == [-1, -1, -1]
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])


def test_a_second_thread_s_handshake_during_one_says_so() -> None:
    """Concurrent use is not supported, but the second `handshake()` said "connect() is for a
    new client connection", a call the user never made."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOCALHOST, 0))
    client = sync.DtlsClient(*silent.getsockname(), client_config())
    first: list[BaseException] = []

    def handshake() -> None:
        try:
            client.handshake()
        except LocalProtocolError as exc:
            first.append(exc)

    running = threading.Thread(target=handshake, daemon=True)
    running.start()
    try:
        deadline = time.monotonic() + 5.0
        while client.connection.state is not ConnectionState.HANDSHAKING:
            assert time.monotonic() < deadline, "the first handshake never started"
            time.sleep(0.01)
        with pytest.raises(LocalProtocolError) as second:
            client.handshake()
        assert str(second.value) == (
            "a handshake is already running in another thread (a DtlsClient is not for"
            " concurrent handshakes)")
    finally:
        client.close()
        running.join(5.0)
        silent.close()
    assert [str(exc) for exc in first] == ["close() was called during the handshake"]


def _reading_in_a_thread(client: sync.DtlsClient) -> tuple[threading.Thread, list[object]]:
    """A thread waiting in `client.recv(timeout=5.0)`, and where its outcome goes."""
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(client.recv(timeout=5.0))
        except Exception as exc:  # what the test reports
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)  # the reader waits for the socket
    return reader, outcome


@pytest.mark.req("EXT-5")
def test_a_heartbeat_from_a_keep_alive_thread_during_a_recv_is_answered(
    heartbeat_server: ServerThread,
) -> None:
    """heartbeat() from a keep-alive thread while another thread waited in recv() raised a raw
    "RuntimeError: concurrent poll() invocation" (probe AV, p7). Now the recv reads the
    socket, the heartbeat is handed its answer, and the recv still gets its datagram."""
    with sync.connect(*heartbeat_server.address, client_config(heartbeat=True)) as client:
        reader, first = _reading_in_a_thread(client)
        started = time.monotonic()
        assert client.heartbeat(3.0) is True
        # handed over as it came, not found at the request's retransmission (1 s)
        assert time.monotonic() - started < 0.8
        client.send(b"to the reader")
        reader.join(5.0)
        assert first == [b"to the reader"]


def test_two_threads_in_recv_each_get_a_datagram(server: ServerThread) -> None:
    """A second recv() while one waited raised a raw "RuntimeError: concurrent poll()
    invocation" (probe AV, p7). Now one reads the socket and hands over what it reads: two
    datagrams, one to each (which gets which is anyone's guess), none lost."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        reader, first = _reading_in_a_thread(client)
        client.send(b"one")
        client.send(b"two")
        second = client.recv(timeout=5.0)
        reader.join(5.0)
        assert len(first) == 1
        assert {first[0], second} == {b"one", b"two"}


def _another_call_reads_first(
    client: sync.DtlsClient, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """The client's next call to read finds the turn taken: another call (as in another
    thread) takes it and reads the datagram that came (waking the followers) between that
    call's look at what had come and its wait. The list it returns holds that read's
    outcome once it has happened."""
    other = sync._Reading()
    take_turn = client._take_turn
    pumped: list[bool] = []

    def the_other_reads_first(reading: Any) -> bool:
        if not pumped:
            assert select.select([client._sock], [], [], 5.0)[0]  # what came is there
            client._reader = other
            pumped.append(client._pump(None))
            return False
        return take_turn(reading)

    monkeypatch.setattr(client, "_take_turn", the_other_reads_first)
    return pumped


def test_a_follower_wakes_for_what_came_between_its_look_and_its_wait(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recv() found nothing, then another call took the turn and read a datagram (waking the
    followers) before this one began to wait: it slept to its deadline with the datagram
    there (probe AW: a heartbeat answered in 1 ms returned after its whole 2 s). It sees that
    a read happened since it looked, and takes the datagram at once."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        client.send(b"came meanwhile")
        pumped = _another_call_reads_first(client, monkeypatch)
        started = time.monotonic()
        try:
            assert client.recv(timeout=3.0) == b"came meanwhile"
            assert time.monotonic() - started < 1.0
        finally:
            client._reader = None
        assert pumped == [True]


@pytest.mark.req("EXT-5")
def test_a_following_heartbeat_wakes_for_an_answer_read_before_its_wait(
    heartbeat_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for recv: the answer read by another call between the heartbeat's look and its wait
    is seen at once, not at the request's retransmission (probe AW: True after 2.00 s)."""
    with sync.connect(*heartbeat_server.address, client_config(heartbeat=True)) as client:
        pumped = _another_call_reads_first(client, monkeypatch)
        started = time.monotonic()
        try:
            assert client.heartbeat(3.0) is True
            assert time.monotonic() - started < 0.5
        finally:
            client._reader = None
        assert pumped == [True]


@pytest.mark.req("EXT-5")
def test_a_heartbeat_with_no_timeout_sends_its_request_and_waits_for_nothing(
    heartbeat_server: ServerThread,
) -> None:
    """heartbeat(0) sends the request and returns False at once, without waiting for the
    answer (which the next call, its request in flight, is handed)."""
    with sync.connect(*heartbeat_server.address, client_config(heartbeat=True)) as client:
        assert client.heartbeat(0) is False
        assert client.connection.heartbeat_in_flight
        assert client.heartbeat(3.0) is True


@pytest.mark.parametrize("call", ["recv", "heartbeat"])
def test_a_following_call_waits_rather_than_spins(
    heartbeat_server: ServerThread, call: str
) -> None:
    """A recv() or heartbeat() while another thread's recv() reads the socket waits on the
    lock for what that call reads, or its own deadline (not the reader's, 5 s): it does not
    look again and again, a core's worth of CPU for its whole timeout. Nothing comes (the
    proxy drops the answer)."""
    drop = {("server", index) for index in range(4, 40)}
    with LossyProxy(heartbeat_server.address, seed=1, drop=drop, lifetime=20) as proxy:
        with sync.connect(*proxy.address, client_config(heartbeat=True)) as client:
            reader, first = _reading_in_a_thread(client)
            cpu, started = time.thread_time(), time.monotonic()
            if call == "recv":
                assert client.recv(timeout=1.0) is None
            else:
                assert client.heartbeat(1.0) is False
            assert time.thread_time() - cpu < 0.2
            assert time.monotonic() - started < 2.5  # its own deadline, not the reader's
            started = time.monotonic()  # a short one as short
            if call == "recv":
                assert client.recv(timeout=0.2) is None
            else:
                assert client.heartbeat(0.2) is False
            assert time.monotonic() - started < 0.8
        reader.join(5.0)
        assert first == [None]


def test_a_follower_without_a_timeout_waits_for_what_the_reader_reads(
    server: ServerThread,
) -> None:
    """A recv() without a timeout while another thread's recv() reads the socket (no
    retransmission timer either: nothing bounds its wait) waits on the lock for that call's
    reads: two datagrams sent meanwhile, one to each."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        reader, first = _reading_in_a_thread(client)
        sender = threading.Timer(0.3, lambda: (client.send(b"one"), client.send(b"two")))
        sender.start()
        second = client.recv()
        reader.join(5.0)
        sender.join(5.0)
        assert len(first) == 1
        assert {first[0], second} == {b"one", b"two"}


def test_a_follower_whose_reader_just_left_reads_at_once(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recv() found the turn taken, and the call that had it left before this one began to
    wait: it takes the turn and reads what came at once, rather than wait to its deadline
    for a wake-up from a reader that has gone."""
    with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
        client.send(b"came meanwhile")
        take_turn = client._take_turn
        refused: list[bool] = []

        def taken_then_left(reading: Any) -> bool:
            if not refused:  # another call had it; it has just left (`_reader` is None)
                refused.append(True)
                return False
            return take_turn(reading)

        monkeypatch.setattr(client, "_take_turn", taken_then_left)
        started = time.monotonic()
        assert client.recv(timeout=3.0) == b"came meanwhile"
        assert time.monotonic() - started < 1.0
        assert refused == [True]


@pytest.mark.req("EXT-5")
def test_a_following_heartbeat_retransmits_its_lost_request(
    heartbeat_server: ServerThread,
) -> None:
    """A heartbeat() while another thread's recv() reads the socket, that call waiting since
    before the request set the retransmission timer: the heartbeat handles the timer, so its
    lost request is sent again at once (0.2 s), not when the reader's wait ends (5 s)."""
    with LossyProxy(heartbeat_server.address, seed=1, lifetime=20) as proxy:
        config = client_config(retransmit=FAST, heartbeat=True)
        with sync.connect(*proxy.address, config) as client:
            reader, _ = _reading_in_a_thread(client)
            request = len(proxy.datagrams("client")) + 1
            proxy.drop = frozenset({("client", request)})
            started = time.monotonic()
            assert client.heartbeat(3.0) is True
            assert time.monotonic() - started < 2.0
            assert len(proxy.datagrams("client")) == request + 1  # sent again once
        reader.join(5.0)


@pytest.mark.req("EXT-5")
def test_a_heartbeat_closed_just_after_its_look_gives_false(
    heartbeat_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() from another thread right after a waiting heartbeat() found the association
    open: the heartbeat sees the client closing and returns False (no answer came), not
    True."""
    with sync.connect(*heartbeat_server.address, client_config(heartbeat=True)) as client:
        ended = client._ended
        looks: list[bool] = []

        def closed_after_its_second_look() -> bool:
            answer = ended()
            looks.append(answer)
            if len(looks) == 2:  # the heartbeat's first look in its loop
                client.close()  # as another thread would, in that instant
            return answer

        monkeypatch.setattr(client, "_ended", closed_after_its_second_look)
        assert client.heartbeat(3.0) is False
        assert looks[:2] == [False, False]


def test_a_handshake_while_another_thread_reads_says_so() -> None:
    """handshake() needs the socket to itself: while another thread's recv reads it (after an
    interrupted handshake, say), it raises `LocalProtocolError` saying so."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        client = sync.DtlsClient(*silent.getsockname(), client_config())
        with client:
            client.connection.connect(time.monotonic())  # as an interrupted handshake left it
            reader, _ = _reading_in_a_thread(client)
            with pytest.raises(LocalProtocolError) as refused:
                client.handshake()
            assert str(refused.value) == (
                "recv() or heartbeat() is reading the socket: handshake() needs it to itself")
        reader.join(5.0)


def _in_a_forked_child(work: Any) -> str:
    """Run `work()` in a child forked from here; what it returned (a str), or the exception it
    raised as "Type: message". The child leaves with `os._exit`, past any other finalizer."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            answer = str(work())
        except BaseException as exc:
            answer = f"{type(exc).__name__}: {exc}"
        os.write(writer, answer.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answers:
        answer = answers.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return answer


@pytest.mark.parametrize("how", ["dropped", "closed", "sent"])
def test_a_forked_child_never_sends_under_the_parent_s_keys(
    server: ServerThread, how: str
) -> None:
    """A child forked after the client was made, dropping it (at its exit too) or closing it,
    sent close_notify under the parent's keys with the record sequence number the parent
    used next: the parent's association ended and one nonce served twice under one AES-CCM
    key (RFC 5116 §3). A forked child now releases its copies of the sockets silently, and
    its `send` raises saying the client belongs to the process that made it."""
    client = sync.connect(*server.address, client_config(retransmit=FAST))
    client.send(b"before")
    assert client.recv(timeout=5.0) == b"before"
    sockets = [client._sock, client._wake_reader, client._wake_writer]

    def in_child() -> str:
        nonlocal client
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if how == "dropped":
                del client
                gc.collect()
            elif how == "closed":
                client.close()
            else:
                client.send(b"from the child")
        closed = [sock.fileno() for sock in sockets]
        return f"{[str(w.message) for w in caught]} {closed}"

    answer = _in_a_forked_child(in_child)
    if how == "sent":
        assert answer == (
            "LocalProtocolError: this client belongs to the process that made it (pid"
            f" {os.getpid()}): sending from a forked process would reuse that process's record"
            " sequence numbers under its keys (one nonce twice, RFC 5116 §3)")
    else:
        assert answer == "[] [-1, -1, -1]"
    time.sleep(0.2)
    assert server.ended == []
    client.send(b"after")
    assert client.recv(timeout=5.0) == b"after"
    client.close()
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])


def test_a_dropped_client_closes_the_socket_it_made_and_warns_from_iotdtls(
    server: ServerThread,
) -> None:
    """A `DtlsClient` made with a host and port owns its UDP socket: dropped without
    `close()`, all three of its sockets are closed (only a socket given with `sock=` is left
    open), and the one ResourceWarning comes from `iotdtls.sync` (a `-W` filter naming the
    module finds it) with the client as its source (tracemalloc shows where it was made)."""
    client = sync.DtlsClient(*server.address, client_config(retransmit=FAST))
    client.handshake()
    sockets = [client._sock, client._wake_reader, client._wake_writer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert [str(w.message) for w in caught] == [
        f"iotdtls: unclosed client to {LOCALHOST}:{server.port}"]
    assert caught[0].filename == sync.__file__
    assert type(caught[0].source) is sync.DtlsClient
    assert [sock.fileno() for sock in sockets] == [-1, -1, -1]
    assert server.wait_until(lambda: [error for _, error in server.ended] == [None])


def test_a_client_whose_construction_failed_is_collected_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `DtlsClient` whose `__init__` raised before it was whole has nothing to close: its
    finalizer returns rather than raising AttributeError ("Exception ignored in ...")."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda what: raised.append(what.exc_value))
    not_a_config: Any = "not a config"
    with pytest.raises(TypeError):
        sync.DtlsClient(LOCALHOST, 5684, not_a_config)
    gc.collect()
    assert raised == []


def test_a_dropped_client_whose_socket_the_caller_closed_still_releases_and_warns(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller closed the socket it gave (`sock=`), then dropped the client: close_notify
    cannot go out (EBADF), but the wake-up pair is still closed and the warning given,
    nothing raised from the finalizer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    wake_pair = [client._wake_reader, client._wake_writer]
    sock.close()
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda what: raised.append(what.exc_value))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert raised == []
    assert [str(w.message) for w in caught] == ["iotdtls: unclosed client to an unknown address"]
    assert [s.fileno() for s in wake_pair] == [-1, -1]


@pytest.mark.parametrize("how", ["dropped", "closed"])
def test_a_forked_child_releases_its_copies_as_the_parent_would(
    server: ServerThread, how: str
) -> None:
    """In a forked child, a client dropped leaves the caller's socket (`sock=`) open there
    too, as the collector always does, and lets its wake-up pair go (nothing keeps them for
    a finalizer that has run); one closed there closes the child's copy of the caller's
    socket, as `close()` does, and is closed for good: `handshake()` says so."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    key = id(client)

    def in_child() -> str:
        nonlocal client
        wake_pair = [weakref.ref(s) for s in (client._wake_reader, client._wake_writer)]
        if how == "dropped":
            del client
            gc.collect()
            kept = key in sync._UNCLOSED_SOCKETS
            return f"{sock.fileno() != -1} {[ref() for ref in wake_pair]} {kept}"
        client.close()
        try:
            client.handshake()
        except LocalProtocolError as exc:
            return f"{sock.fileno()} {exc}"
        return "handshake() returned"

    answer = _in_a_forked_child(in_child)
    if how == "dropped":
        assert answer == "True [None, None] False"
    else:
        assert answer == "-1 the client is closed: a new handshake needs a new DtlsClient"
    client.send(b"after")
    assert client.recv(timeout=5.0) == b"after"
    client.close()


def test_a_client_made_in_a_forked_child_is_that_child_s(server: ServerThread) -> None:
    """Each fork notes its own process id: a client a forked child makes is the child's to
    send under, and a process forked from that child is refused it."""

    def in_child() -> str:
        with sync.connect(*server.address, client_config(retransmit=FAST)) as client:
            client.send(b"from the child")
            echoed = client.recv(timeout=5.0)
            refused = _in_a_forked_child(lambda: client.send(b"from the grandchild"))
        return f"{echoed!r} {refused}"

    answer = _in_a_forked_child(in_child)
    assert answer.startswith(
        "b'from the child' LocalProtocolError: this client belongs to the process that made"
        " it (pid ")
    assert f"(pid {os.getpid()})" not in answer


def test_close_after_the_caller_closed_its_socket_does_not_raise(server: ServerThread) -> None:
    """Found by a probe: close() raised EBADF (from sending close_notify) once the caller
    had closed the socket it gave (`sock=`), where close() is best effort; in `with
    sync.connect(..., sock=s)` the EBADF a recv raises was followed by a second one from
    `__exit__`. Now close() closes what is ours (the wake-up pair) and marks the client
    closed, without raising; the recv's EBADF is the one that comes out of the `with`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = sync.connect(*server.address, client_config(retransmit=FAST), sock=sock)
    wake_pair = [client._wake_reader, client._wake_writer]
    sock.close()
    client.close()
    assert [s.fileno() for s in wake_pair] == [-1, -1]
    with pytest.raises(LocalProtocolError, match="closed"):
        client.handshake()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError) as raised, \
            sync.connect(*server.address, client_config(retransmit=FAST), sock=sock):
        sock.close()
        raise OSError(errno.EBADF, "the recv's")
    assert raised.value.args == (errno.EBADF, "the recv's")
    assert raised.value.__context__ is None
