"""LossyProxy (iotdtls.proxy), the project's own lossy UDP proxy, against a loopback echo."""

from __future__ import annotations

import itertools
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotdtls.proxy import Direction, Impairment, LossyProxy

LOCAL = "127.0.0.1"


class UdpEcho:
    """A tiny UDP echo server on loopback, in a thread, recording what it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received: list[bytes] = []
        self.sources: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(0.05):
                    continue
                while True:
                    try:
                        data, source = self.sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    self.received.append(data)
                    self.sources.append(source)
                    self.sock.sendto(data, source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[UdpEcho]:
    server = UdpEcho()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    sock.settimeout(0.3)
    try:
        yield sock
    finally:
        sock.close()


def recv_or_none(sock: socket.socket, timeout: float = 0.3) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(65535)
    except TimeoutError:
        return None


def drain(sock: socket.socket, quiet: float = 0.15) -> list[bytes]:
    """Everything that arrives until `quiet` seconds pass without a datagram."""
    out = []
    while (data := recv_or_none(sock, quiet)) is not None:
        out.append(data)
    return out


def fates(proxy: LossyProxy, direction: str) -> list[str]:
    return [d.fate for d in proxy.snapshot() if d.direction == direction]


def test_exact_drop_list_drops_exactly_those(echo: UdpEcho, client: socket.socket) -> None:
    drop: set[tuple[Direction, int]] = {("client", 2), ("server", 3)}
    with LossyProxy(echo.address, seed=7, drop=drop, lifetime=10) as proxy:
        replies = []
        for i in range(1, 6):
            client.sendto(b"ping %d" % i, proxy.address)
            replies.append(recv_or_none(client))
    # Client datagram 2 never reaches the echo; the echo's 3rd reply (to ping 4) is dropped.
    assert echo.received == [b"ping 1", b"ping 3", b"ping 4", b"ping 5"]
    assert replies == [b"ping 1", None, b"ping 3", None, b"ping 5"]
    assert fates(proxy, "client") == ["sent", "dropped", "sent", "sent", "sent"]
    assert fates(proxy, "server") == ["sent", "sent", "dropped", "sent"]
    assert [d.index for d in proxy.log if d.direction == "server"] == [1, 2, 3, 4]
    assert [d.data for d in proxy.log if d.fate == "dropped"] == [b"ping 2", b"ping 4"]
    assert proxy.counts == Counter(
        {("client", "sent"): 4, ("client", "dropped"): 1, ("server", "sent"): 3,
         ("server", "dropped"): 1}
    )
    assert proxy.client_address == client.getsockname()


def run_sequence(echo: UdpEcho, client: socket.socket, seed: int, count: int) -> list[str]:
    with LossyProxy(echo.address, seed=seed, loss=0.3, duplicate=0.2, reorder=0.2,
                    reorder_timeout=0.02, lifetime=10) as proxy:
        for i in range(count):
            client.sendto(b"%d" % i, proxy.address)
            time.sleep(0.002)
        drain(client)
    return fates(proxy, "client")


def test_fates_are_reproducible_with_a_fixed_seed(echo: UdpEcho, client: socket.socket) -> None:
    first = run_sequence(echo, client, seed=42, count=40)
    second = run_sequence(echo, client, seed=42, count=40)
    other = run_sequence(echo, client, seed=43, count=40)
    assert len(first) == 40
    assert first == second
    assert first != other
    assert {"sent", "dropped", "duplicated", "reordered"} <= set(first)


def test_rates_roughly_match(echo: UdpEcho, client: socket.socket) -> None:
    n = 400
    with LossyProxy(echo.address, seed=1, reorder_timeout=0.02, lifetime=10,
                    client_to_server=Impairment(loss=0.2, duplicate=0.1, reorder=0.1),
                    server_to_client=Impairment()) as proxy:
        replies: list[bytes] = []
        for i in range(n):
            client.sendto(b"%d" % i, proxy.address)
            if i % 25 == 24:  # read as we go: the receive buffer holds ~256 small datagrams
                time.sleep(0.005)
                replies += drain(client, quiet=0.001)
        replies += drain(client, quiet=0.3)
    counts = Counter(fates(proxy, "client"))
    assert sum(counts.values()) == n
    # Expected: dropped 0.2, reordered ~0.8*0.1 (less while one is held),
    # duplicated ~0.8*0.9*0.1.
    assert 0.14 * n <= counts["dropped"] <= 0.26 * n
    assert 0.04 * n <= counts["reordered"] <= 0.12 * n
    assert 0.04 * n <= counts["duplicated"] <= 0.11 * n
    forwarded = n - counts["dropped"] + counts["duplicated"]
    assert len(echo.received) == forwarded
    assert len(replies) == forwarded
    assert Counter(fates(proxy, "server")) == Counter({"sent": forwarded})
    # Reordering really happened: the echo saw some datagram before an earlier one.
    numbers = [int(d) for d in echo.received]
    assert any(b < a for a, b in itertools.pairwise(numbers))


def test_reordered_datagram_follows_the_next_one(echo: UdpEcho, client: socket.socket) -> None:
    # Find a seed whose first client datagram is reordered and whose second one is sent.
    with LossyProxy(echo.address, seed=3, reorder=1.0, reorder_timeout=2.0,
                    server_to_client=Impairment(), lifetime=10) as proxy:
        client.sendto(b"first", proxy.address)
        assert recv_or_none(client, 0.2) is None  # held
        client.sendto(b"second", proxy.address)
        assert drain(client) == [b"second", b"first"]
    assert fates(proxy, "client") == ["reordered", "sent"]


def test_reordered_datagram_released_by_timer(echo: UdpEcho, client: socket.socket) -> None:
    with LossyProxy(echo.address, seed=3, reorder=1.0, reorder_timeout=0.1,
                    server_to_client=Impairment(), lifetime=10) as proxy:
        start = time.monotonic()
        client.sendto(b"alone", proxy.address)
        assert recv_or_none(client, 1.0) == b"alone"
        assert time.monotonic() - start >= 0.09


def test_delay_and_per_direction_override(echo: UdpEcho, client: socket.socket) -> None:
    with LossyProxy(echo.address, seed=5, delay=(0.05, 0.05),
                    server_to_client=Impairment(loss=1.0), lifetime=10) as proxy:
        start = time.monotonic()
        client.sendto(b"x", proxy.address)
        assert recv_or_none(client, 0.4) is None
        assert echo.received == [b"x"]
        assert time.monotonic() - start >= 0.05
    assert fates(proxy, "client") == ["sent"]
    assert fates(proxy, "server") == ["dropped"]


def test_lifetime_stops_the_proxy(echo: UdpEcho, client: socket.socket) -> None:
    proxy = LossyProxy(echo.address, seed=1, lifetime=0.2)
    try:
        assert proxy.running
        assert proxy.wait_stopped(2.0)
        assert not proxy.running
        client.sendto(b"late", proxy.address)
        assert recv_or_none(client, 0.1) is None
        assert echo.received == []
    finally:
        proxy.stop()


def test_stop_joins_quickly(echo: UdpEcho, client: socket.socket) -> None:
    proxy = LossyProxy(echo.address, seed=1, lifetime=60)
    client.sendto(b"a", proxy.address)
    assert recv_or_none(client) == b"a"
    start = time.monotonic()
    proxy.stop()
    assert time.monotonic() - start < 1.0
    assert not proxy.running
    proxy.stop()  # idempotent


def test_other_sources_ignored_and_rebind(echo: UdpEcho, client: socket.socket) -> None:
    with LossyProxy(echo.address, seed=1, lifetime=10) as proxy, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        client.sendto(b"one", proxy.address)
        assert recv_or_none(client) == b"one"
        intruder.sendto(b"intruder", proxy.address)
        proxy.rebind()
        time.sleep(0.1)
        client.sendto(b"two", proxy.address)
        assert recv_or_none(client) == b"two"
    assert echo.received == [b"one", b"two"]
    assert proxy.ignored == 1
    assert echo.sources[0] != echo.sources[1]  # the target saw a new source port


def test_socket_factory_is_used(echo: UdpEcho, client: socket.socket) -> None:
    made: list[socket.socket] = []

    def factory(family: socket.AddressFamily) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        made.append(sock)
        return sock

    with LossyProxy(echo.address, seed=1, lifetime=10, socket_factory=factory) as proxy:
        client.sendto(b"f", proxy.address)
        assert recv_or_none(client) == b"f"
    assert len(made) == 2


def test_bad_parameters_rejected(echo: UdpEcho) -> None:
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(delay=(0.2, 0.1))
    with pytest.raises(ValueError):
        LossyProxy(echo.address, seed=1, drop={("server", 0)})


def test_command_line(echo: UdpEcho, client: socket.socket, tmp_path: Path) -> None:
    log_path = tmp_path / "log.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iotdtls.proxy", "--target", f"{LOCAL}:{echo.address[1]}",
         "--seed", "1", "--drop", "client:1", "--lifetime", "5", "--log-json", str(log_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by --lifetime
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.split()[2].rsplit(":", 1)[1])
        client.sendto(b"dropped", (LOCAL, port))
        client.sendto(b"kept", (LOCAL, port))
        assert recv_or_none(client, 1.0) == b"kept"
        proc.terminate()
        out, _ = proc.communicate(timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(2)
    assert proc.returncode == 0
    assert "client dropped: 1" in out
    log = json.loads(log_path.read_text())
    assert [(d["from"], d["fate"], d["hex"]) for d in log["datagrams"]] == [
        ("client", "dropped", b"dropped".hex()),
        ("client", "sent", b"kept".hex()),
        ("server", "sent", b"kept".hex()),
    ]
