"""Instructions the server process spends per full PSK handshake, counted by callgrind.

Run with ``make bench-server-instructions`` (needs ``valgrind``; about two minutes). The
timed figure of ``make bench-load`` (server CPU per handshake) moves by more than a small change
from one run to the next on a shared machine; this one is deterministic to a few thousand
instructions, so it tells whether a change to the server path paid:

``iotdtls server -q`` runs under ``valgrind --tool=callgrind`` with a fixed hash seed, ``iotdtls
perf`` drives SMALL, then in a second server LARGE, full handshakes one at a time over UDP
loopback (cookie exchange and close_notify included), and the difference of the two servers'
instruction totals divided by LARGE - SMALL is the figure: start-up and shutdown cancel out.
User-space instructions only (the kernel's UDP work is not counted); SHA-256 is overstated,
since valgrind hides the SHA extensions of the CPU from OpenSSL.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_load import CLI, CREDENTIALS, HOST, free_port, wait_for_line


def server_instructions(handshakes: int, loop: str, tmp: Path) -> int:
    """Total instructions of a server process that served `handshakes` full handshakes."""
    port = free_port()
    out = tmp / f"callgrind.{handshakes}.out"
    log = tmp / f"server.{handshakes}.log"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *CLI, "server",
            "--listen", f"{HOST}:{port}", *CREDENTIALS, "-q", "--loop", loop]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with log.open("wb") as sink:
        server = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_line(log, r"listening on", 120.0)
        if handshakes:
            subprocess.run(
                [*CLI, "perf", f"{HOST}:{port}", *CREDENTIALS, "-q", "--json", "-c", "1",
                 "--handshakes", str(handshakes), "--timeout", "30"],
                capture_output=True, check=True, timeout=600,
            )
        server.send_signal(signal.SIGINT)
        server.wait(120.0)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10.0)
    stopped = re.search(r"handshakes (\d+) completed", log.read_text(errors="replace"))
    if stopped is None or int(stopped.group(1)) != handshakes:
        raise RuntimeError(f"the server did not report {handshakes} handshakes:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
    summary = re.search(r"^summary: (\d+)", out.read_text(errors="replace"), re.MULTILINE)
    if summary is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(summary.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20, help="handshakes of the first server")
    parser.add_argument("--large", type=int, default=120, help="handshakes of the second")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if not 0 <= args.small < args.large:
        print("--small must be at least 0 and below --large", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="iotdtls-cg-") as name:
        tmp = Path(name)
        small = server_instructions(args.small, args.loop, tmp)
        large = server_instructions(args.large, args.loop, tmp)
    per_handshake = (large - small) / (args.large - args.small)
    print(f"iotdtls server ({args.loop}), Python {sys.version.split()[0]}, callgrind, "
          f"fixed hash seed")
    print(f"    {args.small} handshakes: {small:,} instructions; {args.large}: {large:,}")
    print(f"    per full PSK handshake (cookie exchange, close_notify): {per_handshake:,.0f} "
          f"user-space instructions   ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
