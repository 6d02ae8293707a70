"""Every benchmark still runs (a few iterations each): they import the library's internals,
so a change there must not leave `make bench*` broken until someone measures again."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    "command",
    [
        ["bench_psk.py", "--runs", "3", "--records", "5"],
        ["bench_pubkey.py", "--runs", "2"],
        ["bench_x509.py", "--runs", "2"],
        ["bench_resumption.py", "--runs", "2"],
        ["bench_memory.py", "--heap", "50", "--resident", "0"],
        ["bench_coap_memory.py", "--associations", "3", "--requests", "2"],
        ["bench_coap.py", "--requests", "3", "--runs", "1"],
        ["bench_load.py", "--duration", "0.3", "--levels", "1", "--messages", "1",
         "--only", "curve"],
        ["bench_flood.py", "--seconds", "0.2"],
        ["bench_session_store.py", "--runs", "20", "--disk", tempfile.gettempdir()],
    ],
    ids=lambda command: command[0].removesuffix(".py"),
)
def test_benchmark_runs(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / command[0]), *command[1:]],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    if command[0] == "bench_psk.py":
        check_handshake_ways(result.stdout)
        check_interpreted_work(result.stdout)


def check_handshake_ways(report: str) -> None:
    """`make bench` (a) times both stacks both ways (new associations, contexts reset) and
    gives each way its ratio. A time of a millisecond or more is shown in ms (a loaded machine
    makes one of three runs that slow)."""
    for way in ("new associations", "contexts reset"):
        for stack in ("iotdtls", "Mbed TLS 2.28"):
            found = re.search(rf"{stack}, {way} +[\d.]+ [um]s +[\d.]+ [um]s", report)
            assert found, (way, stack)
    assert len(re.findall(r"ratio iotdtls/Mbed TLS +[\d.]+x +[\d.]+x", report)) == 2, report


def check_interpreted_work(report: str) -> None:
    """The counted work of `make bench` (d) splits the whole handshake between the sides, and
    each side does a handshake's worth (a PSK handshake side runs about 10,000 bytecodes)."""
    found = re.search(
        r"([\d,]+) bytecodes in (\d+) Python-level calls: "
        r"client ([\d,]+) in (\d+) calls, server ([\d,]+) in (\d+) calls",
        report,
    )
    assert found is not None, report[-3000:]
    total, calls, client, client_calls, server, server_calls = (
        int(group.replace(",", "")) for group in found.groups()
    )
    assert total == client + server and calls == client_calls + server_calls
    assert client > 3000 and server > 3000, found.group(0)
