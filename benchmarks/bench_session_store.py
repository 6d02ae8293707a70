"""The server's session stores (RES-1): what a `get` and a `put` cost on the event loop.

Run with ``make bench-session-store`` (or ``.venv/bin/python benchmarks/bench_session_store.py
[--runs N] [--disk DIR] [--tmpfs DIR]``). For `MemorySessionStore` and for
`DirectorySessionStore` on a disk directory (default: a new one under the current directory)
and on a tmpfs one (default: under /dev/shm), it prints the median and 99th percentile, in
microseconds, of

* put: a new session (a PSK session of 32-byte id, as our server makes),
* get hit: a session that is there,
* get miss: an id that is not (a client offering a session the server forgot),
* remove.

Each directory holds `--runs` sessions at the end (below the default bound of 1024 unless
asked otherwise: the trims a larger count triggers are timed with the puts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from iotdtls.config import Mode
from iotdtls.identity import PskIdentity
from iotdtls.messages.constants import CipherSuite
from iotdtls.sessions import DirectorySessionStore, MemorySessionStore, SessionState, SessionStore


def sessions(count: int) -> list[SessionState]:
    return [
        SessionState(
            os.urandom(32),
            CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
            Mode.PSK,
            os.urandom(48),
            PskIdentity(b"Client_identity"),
        )
        for _ in range(count)
    ]


def timed(step: Callable[[SessionState], object], states: list[SessionState]) -> list[float]:
    """Microseconds of `step` on each state."""
    spent = []
    for state in states:
        start = time.perf_counter()
        step(state)
        spent.append((time.perf_counter() - start) * 1e6)
    return spent


def describe(name: str, spent: list[float]) -> str:
    ordered = sorted(spent)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<9} median {statistics.median(ordered):8.1f} us   p99 {p99:8.1f} us"


def measure(title: str, store: SessionStore, runs: int) -> None:
    saved = sessions(runs)
    absent = sessions(runs)
    print(title)
    print("  " + describe("put", timed(lambda s: store.put(s, 0.0), saved)))
    print("  " + describe("get hit", timed(lambda s: store.get(s.session_id, 0.0), saved)))
    print("  " + describe("get miss", timed(lambda s: store.get(s.session_id, 0.0), absent)))
    print("  " + describe("remove", timed(lambda s: store.remove(s.session_id), saved)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="sessions per store")
    parser.add_argument("--disk", default=".", help="parent of the disk directory")
    parser.add_argument("--tmpfs", default="/dev/shm", help="parent of the tmpfs directory")
    args = parser.parse_args()
    measure("MemorySessionStore", MemorySessionStore(max(args.runs, 1)), args.runs)
    for kind, parent in (("disk", args.disk), ("tmpfs", args.tmpfs)):
        if not os.path.isdir(parent):
            print(f"DirectorySessionStore on {kind}: {parent} is not a directory, skipped")
            continue
        top = tempfile.mkdtemp(prefix="bench-sessions-", dir=parent)
        try:
            store = DirectorySessionStore(Path(top) / "sessions")
            measure(f"DirectorySessionStore on {kind} ({parent})", store, args.runs)
        finally:
            shutil.rmtree(top)


if __name__ == "__main__":
    main()
