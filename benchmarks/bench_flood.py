"""Floods against a DTLS server on loopback, with real sockets: iotdtls (`iotdtls server`) next
to OpenSSL (`openssl s_server -listen`, stateless cookies through DTLSv1_listen).

Run with ``make bench-flood`` (or ``.venv/bin/python benchmarks/bench_flood.py [--seconds S]``).
Each scenario floods the server for S seconds while real clients handshake one after the other,
and reports:

* spoofed ClientHellos: first ClientHellos (no cookie) from thousands of source addresses and
  ports (sockets bound to 127.x.y.z, the whole of 127/8 being loopback), sent as fast as one
  Python process can (HS-2). Reported: datagrams and bytes sent, the answers (count, bytes,
  the largest answer next to the request size: a server must never amplify), the server's
  resident memory before, at its peak and after, and the real clients' handshakes (completed,
  median and 95th percentile time).
* half-open handshakes (iotdtls only): sources that answer the HelloVerifyRequest with a valid
  cookie and then stay silent, so the server holds a handshake for each until `max_handshakes`
  makes the oldest leave. Same figures (the largest answer here is the server's flight 4 to a
  source whose cookie proved its address: no longer bound by the request's size).

The server's memory is its VmRSS from /proc, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from iotdtls import sync
from iotdtls.config import ClientConfig, RetransmitPolicy
from iotdtls.connection import DtlsConnection

IDENTITY = "Client_identity"
PSK_HEX = "0102030405060708090a0b0c0d0e0f10"
HOST = "127.0.0.1"
#: Source addresses of the flood: 127.1.a.b, one socket each (the kernel picks the port).
SOURCES = 4000
#: Real clients: quick retransmission, a bounded handshake.
REAL_CLIENT = ClientConfig(
    psk_identity=IDENTITY,
    psk=bytes.fromhex(PSK_HEX),
    retransmit=RetransmitPolicy(0.2, 1.0),
    handshake_timeout=10.0,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Figures:
    name: str
    sent: int = 0
    sent_bytes: int = 0
    request_size: int = 0
    answers: int = 0
    answer_bytes: int = 0
    largest_answer: int = 0
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    handshakes: list[float] = field(default_factory=list)
    failed_handshakes: int = 0

    def request(self, data: bytes) -> None:
        self.sent += 1
        self.sent_bytes += len(data)
        self.request_size = max(self.request_size, len(data))

    def answer(self, data: bytes) -> None:
        self.answers += 1
        self.answer_bytes += len(data)
        self.largest_answer = max(self.largest_answer, len(data))

    def lines(self) -> list[str]:
        done = sorted(self.handshakes)
        p50 = statistics.median(done) * 1000 if done else float("nan")
        p95 = done[int(len(done) * 0.95) - 1] * 1000 if len(done) >= 2 else float("nan")
        ratio = self.answer_bytes / self.sent_bytes if self.sent_bytes else 0.0
        return [
            f"{self.name}",
            f"  flood: {self.sent} datagrams ({self.sent_bytes} B), largest request "
            f"{self.request_size} B",
            f"  answers: {self.answers} ({self.answer_bytes} B, {ratio:.2f} of the flood's "
            f"bytes), largest {self.largest_answer} B",
            f"  server RSS: {self.rss_before} KiB before, {self.rss_peak} KiB peak, "
            f"{self.rss_after} KiB after",
            f"  real clients: {len(done)} handshakes completed, {self.failed_handshakes} failed, "
            f"median {p50:.0f} ms, 95th percentile {p95:.0f} ms",
        ]


# -- servers --------------------------------------------------------------------------------------


@contextmanager
def iotdtls_server(port: int) -> Iterator[int]:
    argv = [
        sys.executable, "-m", "iotdtls", "server", "--listen", f"{HOST}:{port}",
        "--psk-identity", IDENTITY, "--psk", PSK_HEX,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "... listening on ..."
        if "listening" not in line:
            raise RuntimeError(f"iotdtls server did not start: {line}")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain its log
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextmanager
def openssl_server(port: int) -> Iterator[int]:
    argv = [
        "openssl", "s_server", "-dtls1_2", "-accept", f"{HOST}:{port}", "-nocert",
        "-psk", PSK_HEX, "-psk_identity", IDENTITY, "-cipher", "PSK-AES128-CCM8", "-listen",
        "-naccept", "100000", "-quiet",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


# -- flooders -------------------------------------------------------------------------------------


def first_hello() -> bytes:
    client = DtlsConnection(REAL_CLIENT)
    client.connect(0.0)
    (hello,) = client.datagrams_to_send(0.0)
    return hello


def flood_sockets() -> list[socket.socket]:
    socks = []
    for i in range(SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.1.{i // 250}.{i % 250 + 1}", 0))
        s.setblocking(False)
        socks.append(s)
    return socks


def drain(socks: list[socket.socket], figures: Figures) -> None:
    for s in socks:
        while True:
            try:
                data = s.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            figures.answer(data)


def spoofed_hellos(port: int, seconds: float, figures: Figures) -> None:
    """First ClientHellos from every source, round after round, as fast as possible."""
    hello = first_hello()
    socks = flood_sockets()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for s in socks:
                try:
                    s.sendto(hello, (HOST, port))
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                figures.request(hello)
            drain(socks, figures)
        time.sleep(0.5)
        drain(socks, figures)
    finally:
        for s in socks:
            s.close()


def half_open(port: int, seconds: float, figures: Figures) -> None:
    """Every source completes the cookie exchange (a valid cookie), then falls silent."""
    socks = flood_sockets()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            clients = []
            for s in socks:
                client = DtlsConnection(REAL_CLIENT)
                client.connect(0.0)
                (hello,) = client.datagrams_to_send(0.0)
                s.sendto(hello, (HOST, port))
                figures.request(hello)
                clients.append(client)
            time.sleep(0.05)
            for s, client in zip(socks, clients, strict=True):
                try:
                    answer = s.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                figures.answer(answer)
                client.receive_datagram(answer, 0.0)
                for data in client.datagrams_to_send(0.0):  # the ClientHello with its cookie
                    s.sendto(data, (HOST, port))
                    figures.request(data)
                if time.monotonic() >= deadline:
                    break
            drain(socks, figures)
    finally:
        for s in socks:
            s.close()


# -- the scenario ---------------------------------------------------------------------------------


def real_clients(port: int, stop: threading.Event, figures: Figures) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            with sync.connect(HOST, port, REAL_CLIENT) as conn:
                conn.send(b"ping")
                if conn.recv(timeout=5.0) != b"ping":
                    raise RuntimeError("no echo")
        except Exception:
            figures.failed_handshakes += 1
        else:
            figures.handshakes.append(time.monotonic() - started)


def run(
    name: str,
    server: Callable[[int], AbstractContextManager[int]],
    flood: Callable[[int, float, Figures], None],
    seconds: float,
    with_clients: bool,
) -> Figures:
    figures = Figures(name)
    port = free_port()
    with server(port) as pid:
        time.sleep(0.3)
        figures.rss_before = rss_kib(pid)
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, figures), daemon=True)
        sampler.start()
        clients = threading.Thread(target=real_clients, args=(port, stop, figures), daemon=True)
        if with_clients:
            clients.start()
        flood(port, seconds, figures)
        stop.set()
        if with_clients:
            clients.join(15)
        sampler.join(2)
        time.sleep(1.0)
        figures.rss_after = rss_kib(pid)
    return figures


def sample_rss(pid: int, stop: threading.Event, figures: Figures) -> None:
    while not stop.is_set():
        figures.rss_peak = max(figures.rss_peak, rss_kib(pid))
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each flood")
    args = parser.parse_args()
    print(f"{SOURCES} source addresses, {args.seconds:g} s per flood, pid {os.getpid()}")
    results = [
        run("iotdtls: spoofed ClientHellos", iotdtls_server, spoofed_hellos,
            args.seconds, True),
        run("OpenSSL s_server -listen: spoofed ClientHellos", openssl_server,
            spoofed_hellos, args.seconds, False),
        run("iotdtls: half-open handshakes (valid cookie, then silence)",
            iotdtls_server, half_open, args.seconds, True),
    ]
    for figures in results:
        print("\n".join(figures.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
