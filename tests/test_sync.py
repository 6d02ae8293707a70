"""`iotdtls.sync`: the blocking client against our asyncio server (in a thread) on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from iotdtls import sync
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    HandshakeTimeout,
    LocalProtocolError,
)
from tests.interop_support import (
    FAST,
    WRONG_PSK,
    ServerThread,
    client_config,
    server_config,
)
from tests.peers import LOCALHOST


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
    assert 0.25 <= time.monotonic() - started < 2.0
    client.close()
    assert client.recv(timeout=1.0) is None  # after close: None, at once
    assert client.recv() is None
    with pytest.raises(LocalProtocolError):
        client.send(b"too late")
    client.close()  # idempotent
    assert server.wait_until(lambda: server.ended == [(server.received[0][0], None)])


def test_recv_returns_none_after_server_close() -> None:
    with ServerThread(server_config()) as running:
        client = sync.connect(*running.address, client_config())
        client.send(b"x")
        assert client.recv(timeout=5.0) == b"x"
    # the server sent close_notify when it stopped
    assert client.recv(timeout=5.0) is None
    client.close()


def test_handshake_timeout_against_silent_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            sync.connect(*silent.getsockname(),
                         client_config(retransmit=FAST, handshake_timeout=1.0))
        assert 0.9 <= time.monotonic() - started < 3.0


def test_handshake_timeout_against_closed_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind((LOCALHOST, 0))
        address = gone.getsockname()
    # ICMP port unreachable on every send: still a bounded, typed failure
    with pytest.raises(HandshakeTimeout):
        sync.connect(*address, client_config(retransmit=FAST, handshake_timeout=1.0))


@pytest.mark.req("ERR-1", "PSK-4")
def test_wrong_key_raises_alert_received(server: ServerThread) -> None:
    with pytest.raises(AlertReceived) as info:
        sync.connect(*server.address, client_config(psk=WRONG_PSK))
    assert info.value.alert is AlertDescription.decrypt_error


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
