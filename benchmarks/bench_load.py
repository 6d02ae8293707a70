"""Load over UDP loopback: `iotdtls server` under `iotdtls perf`, next to OpenSSL and GnuTLS.

Run with ``make bench-load`` (or ``.venv/bin/python benchmarks/bench_load.py [--duration S]``).
Every figure comes from real processes on this machine:

(a) the curve: full PSK handshakes (TLS_PSK_WITH_AES_128_CCM_8, cookie exchange, close_notify)
    per second, p50 and p99 latency, with 1, 10, 100 and 1000 in flight, against the server
    with 1 and with 2 workers; each worker's CPU use from its own process CPU time
    (/proc/PID/stat), the server CPU time per handshake (all workers' CPU / handshakes), and the
    generator's CPU use (it runs on the same 2 cores: where the generator is near 100 %, it,
    not the server, is the limit); and a reading of the machine's speed taken just before the
    point, the speed probe: one full PSK handshake, both sides in this process in memory
    (`bench_psk.iotdtls_handshake`, a fixed amount of work, about 2.3M instructions under
    callgrind), with the server CPU per handshake in units of it. This shared VM's speed moves by
    3x between hours, even when a plain Python loop runs as fast as ever; the probe shows which
    kind of hour a run had;
(b) echo of 64-byte datagrams over established associations (100 associations in flight, 200
    datagrams each, one at a time): datagrams/s, per worker, and server CPU per datagram;
(c) the same load generator, one handshake at a time, against ``openssl s_server`` and
    ``gnutls-serv`` (both serve one peer at a time) and against our server, in the same run:
    handshakes/s, latency and server CPU per handshake.

The servers run with their per-handshake log lines off (``iotdtls server -q``) and limits
raised above the highest concurrency (``--max-handshakes``, ``--max-connections``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_psk import iotdtls_handshake, time_each

IDENTITY = "Client_identity"
PSK_HEX = "0102030405060708090a0b0c0d0e0f10"
CREDENTIALS = ["--psk-identity", IDENTITY, "--psk", PSK_HEX]
CLI = [sys.executable, "-m", "iotdtls"]
HOST = "127.0.0.1"
LEVELS = (1, 10, 100, 1000)
WORKERS = (1, 2)
TICKS = os.sysconf("SC_CLK_TCK")
#: Handshakes timed for the speed probe (each about a millisecond).
PROBE_RUNS = 100
GNUTLS_PRIORITY = (
    "NONE:+VERS-DTLS1.2:+PSK:+AES-128-CCM-8:+AEAD:+COMP-NULL:+SIGN-ALL:+GROUP-SECP256R1"
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process (and its workers) whose CPU time we read."""

    process: subprocess.Popen[bytes]
    pids: list[int]
    port: int
    log: Path
    netns: str | None = None
    cpu_before: list[float] = field(default_factory=list)

    def mark(self) -> None:
        self.cpu_before = [cpu_seconds(pid) for pid in self.pids]

    def cpu_since_mark(self) -> list[float]:
        return [cpu_seconds(pid) - before for pid, before in zip(self.pids, self.cpu_before,
                                                                    strict=True)]


def wait_for_line(log: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        time.sleep(0.1)
    raise RuntimeError(f"no {pattern!r} in {log}:\n{log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def our_server(workers: int, tmp: Path, max_flight: int, loop: str = "auto") -> Iterator[Server]:
    port = free_port()
    log = tmp / f"iotdtls-{workers}.log"
    # The caps set beyond the load, so that the server's work is measured, not its limits: the
    # generator is one host, and --max-handshakes-per-host binds only in a full table of
    # --max-handshakes, which the load never fills.
    argv = [*CLI, "server", "--listen", f"{HOST}:{port}", *CREDENTIALS, "-q", "--loop", loop,
            "--workers", str(workers), "--max-handshakes", str(4 * max_flight),
            "--max-connections", str(16 * max_flight)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, r"listening on", 60.0)
        found = re.findall(r"worker \d+ \(pid (\d+)", log.read_text())
        pids = [int(p) for p in found] if workers > 1 else [process.pid]
        yield Server(process, pids, port, log)
    finally:
        process.terminate()
        process.wait(30.0)


@contextlib.contextmanager
def peer_server(argv: Sequence[str], port: int, tmp: Path, name: str, ready: str,
                netns: str | None = None) -> Iterator[Server]:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_line(log, ready, 10.0)
        # `ip netns exec` execs the server in place: the pid is the server's.
        yield Server(process, [process.pid], port, log, netns)
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


def run_perf(server: Server, concurrency: int, duration: float, *extra: str) -> dict[str, Any]:
    """`iotdtls perf` against `server`; its JSON summary plus the CPU times of both sides."""
    argv = [*CLI, "perf", f"{HOST}:{server.port}", *CREDENTIALS, "--json", "-q",
            "-c", str(concurrency), "-d", str(duration), "--timeout", "10", *extra]
    if server.netns is not None:
        argv = ["ip", "netns", "exec", server.netns, *argv]
    generator_before = children_cpu()
    server.mark()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120,
                          check=False)
    server_cpu = server.cpu_since_mark()
    generator_cpu = children_cpu() - generator_before
    if done.returncode not in (0, 1):
        raise RuntimeError(f"perf failed: {done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout)
    summary["server_cpu_s"] = server_cpu
    summary["generator_cpu_s"] = generator_cpu
    return summary


def speed_probe() -> float:
    """Microseconds of one in-memory full PSK handshake, both sides in this process (median):
    a fixed amount of work, timed to tell how fast this machine runs right now."""
    return 1e6 * time_each(iotdtls_handshake, PROBE_RUNS).median


def curve_row(workers: int, level: int, s: dict[str, Any], probe_us: float) -> str:
    hs = s["handshakes"]
    window = s["window_s"]
    cpu = s["server_cpu_s"]
    per_worker = " ".join(f"{100 * c / s['elapsed_s']:3.0f}" for c in cpu)
    per_handshake = 1e6 * sum(cpu) / hs["completed"] if hs["completed"] else 0.0
    return (
        f"{workers:>7} {level:>9} {hs['per_second']:>12.0f} {s['latency_ms']['median']:>8.1f}"
        f" {s['latency_ms']['p99']:>8.1f} {hs['failed']:>6} {per_worker:>11}"
        f" {per_handshake:>14.0f} {100 * s['generator_cpu_s'] / s['elapsed_s']:>10.0f}"
        f" {probe_us:>9.0f} {per_handshake / probe_us:>12.2f}   (window {window:.1f} s)"
    )


def bench_curve(tmp: Path, duration: float, levels: Sequence[int]) -> None:
    print("(a) full PSK handshakes with cookie exchange over UDP loopback; the load generator "
          "(one process) shares the machine's 2 cores with the server")
    print(f"{'workers':>7} {'in flight':>9} {'handshakes/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'failed':>6} {'worker CPU%':>11} {'server us/hs':>14} {'gen CPU%':>10}"
          f" {'probe us':>9} {'server/probe':>12}")
    for workers in WORKERS:
        with our_server(workers, tmp, max(levels)) as server:
            for level in levels:
                probe_us = speed_probe()
                summary = run_perf(server, level, duration)
                print(curve_row(workers, level, summary, probe_us), flush=True)


def bench_echo(tmp: Path, duration: float, messages: int) -> None:
    print(f"\n(b) echo of 64-byte datagrams: 100 associations in flight, {messages} datagrams "
          "each, one at a time")
    print(f"{'workers':>7} {'datagrams/s':>12} {'per worker':>11} {'rtt p50 ms':>11}"
          f" {'worker CPU%':>11} {'server us/datagram':>19} {'gen CPU%':>9}")
    for workers in WORKERS:
        with our_server(workers, tmp, 100) as server:
            s = run_perf(server, 100, duration, "-m", str(messages), "--size", "64")
        msg = s["messages"]
        cpu = s["server_cpu_s"]
        per_worker = " ".join(f"{100 * c / s['elapsed_s']:3.0f}" for c in cpu)
        # Each echoed datagram is one received and one sent by the server; the handshakes
        # (one per `messages` datagrams) are included in the CPU time.
        print(f"{workers:>7} {msg['per_second']:>12.0f} {msg['per_second'] / workers:>11.0f}"
              f" {msg['rtt_ms']['median']:>11.2f} {per_worker:>11}"
              f" {1e6 * sum(cpu) / max(1, msg['echoed']):>19.1f}"
              f" {100 * s['generator_cpu_s'] / s['elapsed_s']:>9.0f}", flush=True)


def openssl_server(port: int, tmp: Path) -> contextlib.AbstractContextManager[Server]:
    argv = ["openssl", "s_server", "-dtls1_2", "-accept", f"{HOST}:{port}", "-nocert",
            "-psk", PSK_HEX, "-psk_identity", IDENTITY, "-cipher", "PSK-AES128-CCM8"]
    return peer_server(argv, port, tmp, "openssl", r"ACCEPT")


@contextlib.contextmanager
def gnutls_server(port: int, tmp: Path) -> Iterator[Server]:
    """gnutls-serv binds every address: it runs in a private network namespace."""
    name = f"iotdtls-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        passwd = tmp / "psk.passwd"
        passwd.write_text(f"{IDENTITY}:{PSK_HEX}\n")
        argv = ["ip", "netns", "exec", name, "gnutls-serv", "--udp", "-p", str(port),
                "--pskpasswd", str(passwd), "--priority", GNUTLS_PRIORITY]
        with peer_server(argv, port, tmp, "gnutls", r"listening on IPv6", name) as s:
            yield s
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def peer_row(name: str, s: dict[str, Any]) -> str:
    hs = s["handshakes"]
    cpu = sum(s["server_cpu_s"])
    per_handshake = 1e6 * cpu / hs["completed"] if hs["completed"] else 0.0
    return (f"{name:<22} {hs['per_second']:>12.0f} {s['latency_ms']['median']:>8.2f}"
            f" {s['latency_ms']['p99']:>8.2f} {hs['failed']:>6} {per_handshake:>14.0f}")


def bench_peers(tmp: Path, duration: float) -> None:
    print("\n(c) one handshake at a time (the peers serve one peer at a time), same generator")
    print(f"{'server':<22} {'handshakes/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}"
          f" {'server us/hs':>14}")
    with our_server(1, tmp, 10) as server:
        print(peer_row("iotdtls (1 process)", run_perf(server, 1, duration)), flush=True)
    if shutil.which("openssl"):
        port = free_port()
        with openssl_server(port, tmp) as server:
            print(peer_row("openssl s_server 3.0", run_perf(server, 1, duration)), flush=True)
    else:
        print("openssl: not installed")
    if shutil.which("gnutls-serv") and os.geteuid() == 0:
        port = free_port()
        with gnutls_server(port, tmp) as server:
            print(peer_row("gnutls-serv 3.7", run_perf(server, 1, duration)), flush=True)
            print("   gnutls-serv answers each flight after about 50 ms (its own loop), so its "
                  "rate is bounded by that wait, not by CPU")
    else:
        print("gnutls-serv: not installed, or not root (it runs in a network namespace)")


def bench_loops(tmp: Path, duration: float, messages: int) -> None:
    print("\n(d) event loops, server (1 process) and generator on the same loop: 100 handshakes"
          f" in flight, then echo ({messages} datagrams per association)")
    print(f"{'loop':<8} {'handshakes/s':>12} {'server us/hs':>13} {'gen CPU%':>9}"
          f" {'echo datagrams/s':>17} {'server us/datagram':>19}")
    for loop in ("asyncio", "uvloop"):
        if loop == "uvloop" and not _has_uvloop():
            print("uvloop: not installed (pip install 'uvloop>=0.19')")
            continue
        with our_server(1, tmp, 100, loop) as server:
            hs = run_perf(server, 100, duration, "--loop", loop)
            echo = run_perf(server, 100, duration, "--loop", loop, "-m", str(messages))
        completed = hs["handshakes"]["completed"]
        echoed = echo["messages"]["echoed"]
        print(f"{loop:<8} {hs['handshakes']['per_second']:>12.0f}"
              f" {1e6 * sum(hs['server_cpu_s']) / max(1, completed):>13.0f}"
              f" {100 * hs['generator_cpu_s'] / hs['elapsed_s']:>9.0f}"
              f" {echo['messages']['per_second']:>17.0f}"
              f" {1e6 * sum(echo['server_cpu_s']) / max(1, echoed):>19.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="handshakes in flight, comma-separated")
    parser.add_argument("--messages", type=int, default=200, help="echoes per association")
    parser.add_argument("--only", choices=["curve", "echo", "peers", "loops"],
                        help="one part only")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    loop = "uvloop" if _has_uvloop() else "asyncio"
    print(f"bench_load: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"event loop {loop}, {args.duration:g} s per point")
    with tempfile.TemporaryDirectory(prefix="iotdtls-bench-") as directory:
        tmp = Path(directory)
        if args.only in (None, "curve"):
            bench_curve(tmp, args.duration, levels)
        if args.only in (None, "echo"):
            bench_echo(tmp, args.duration, args.messages)
        if args.only in (None, "peers"):
            bench_peers(tmp, args.duration)
        if args.only in (None, "loops"):
            bench_loops(tmp, args.duration, args.messages)


def _has_uvloop() -> bool:
    from iotdtls.loop import uvloop_available

    return uvloop_available()


if __name__ == "__main__":
    main()
