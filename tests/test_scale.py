"""Scale: the multi-worker server (`iotdtls server --workers N`, `iotdtls.workers`) and the load
generator (`iotdtls perf`, `iotdtls.perf`) against our server and against OpenSSL.

Short runs (about two seconds each) whose figures are checked for consistency, never for
speed: the handshakes the generator counts are the handshakes the server counts, every echo
comes back, the datagrams one side sent are the ones the other received.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from iotdtls import aio, workers
from iotdtls.cli.echo import echo
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import PrivateKey
from iotdtls.stats import ServerStats
from tests.interop_support import CLI, CREDENTIALS, WRONG_PSK_HEX, cli_server
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_SERVER_READY,
    PeerProcess,
    free_udp_port,
    openssl_psk_server,
    require_peer,
)

#: A bound on every generator run here (its own duration is about two seconds).
PERF_TIME_LIMIT = 60.0


def perf(port: int, *args: str, credentials: tuple[str, ...] = tuple(CREDENTIALS)
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "perf", f"{LOCALHOST}:{port}", *credentials, *args],
        capture_output=True, text=True, timeout=PERF_TIME_LIMIT, check=False,
    )


def perf_json(port: int, *args: str) -> dict[str, Any]:
    done = perf(port, "--json", "-q", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def stop_and_log(server: PeerProcess) -> str:
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(10.0) == 0, server.output
    assert "Traceback" not in server.output
    return server.output


def server_counts(log: str, who: str = "stopped") -> dict[str, int]:
    """The counters a server logged at exit (`who`: "stopped", "all 2 workers", "worker 0")."""
    match = re.search(
        rf"{who}(?: \(pid \d+\))?: handshakes (\d+) completed \(\d+ resumed\), (\d+) failed, "
        r"\d+ in progress, \d+ unfinished; .*?"
        r"datagrams (\d+) in \((\d+) B\), (\d+) out", log)
    assert match, log
    names = ("completed", "failed", "datagrams_in", "bytes_in", "datagrams_out")
    return dict(zip(names, map(int, match.groups()), strict=True))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_perf_against_our_server_counts_agree(loop: str) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--loop", loop) as server:
        summary = perf_json(port, "-d", "2", "-c", "10", "-m", "2", "--loop", loop)
        log = stop_and_log(server)
    hs, messages, datagrams = summary["handshakes"], summary["messages"], summary["datagrams"]
    assert summary["loop"] == loop
    assert hs["completed"] > 0 and hs["failed"] == 0 and hs["unfinished"] == 0
    assert hs["completed"] == hs["started"]
    assert hs["per_second"] > 0 and summary["latency_ms"]["median"] > 0
    assert messages["sent"] == messages["echoed"] == 2 * hs["completed"]
    assert messages["lost"] == 0
    counted = server_counts(log)
    assert counted["completed"] == hs["completed"] and counted["failed"] == 0
    assert counted["datagrams_in"] == datagrams["sent"]
    assert counted["bytes_in"] == datagrams["bytes_sent"]
    # The server also answers every close_notify, to a socket the generator has closed. Rarely
    # the kernel hands that closed socket's port to the generator's next client, which then
    # receives (and drops) the stray answer: a handful more received than the server sent.
    surplus = datagrams["received"] + hs["completed"] - counted["datagrams_out"]
    assert 0 <= surplus <= 3, (counted, datagrams, hs)


def test_hundred_clients_spread_over_two_workers() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--workers", "2") as server:
        summary = perf_json(port, "-n", "100", "-c", "50", "-p", "2", "-m", "1")
        log = stop_and_log(server)
    assert summary["processes"] == 2
    assert summary["handshakes"]["completed"] == 100
    assert summary["handshakes"]["failed"] == 0
    assert summary["messages"]["echoed"] == 100
    per_worker = [server_counts(log, f"worker {i}")["completed"] for i in range(2)]
    assert all(n > 0 for n in per_worker), per_worker  # both workers served
    assert sum(per_worker) == 100
    assert server_counts(log, "all 2 workers")["completed"] == 100


@pytest.mark.req("ERR-1")
def test_perf_reports_failures_by_cause() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server:
        done = perf(port, "-n", "3", "-c", "1", "--timeout", "5",
                    credentials=("--psk-identity", CLIENT_IDENTITY, "--psk", WRONG_PSK_HEX))
        log = stop_and_log(server)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "handshakes: 0 completed, 3 failed" in done.stdout
    assert "failures: received alert decrypt_error 3" in done.stdout
    assert server_counts(log)["failed"] == 3


@pytest.mark.interop
def test_perf_against_openssl_server_counts_agree() -> None:
    require_peer("openssl")
    port = free_udp_port()
    with openssl_psk_server(port, naccept=100000, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        summary = perf_json(port, "-d", "2", "-c", "1")
        hs = summary["handshakes"]
        assert hs["completed"] > 0 and hs["failed"] == 0
        # s_server prints its cipher once per handshake and "DONE" at each close_notify (and
        # once more when it stops: counted before that). A handshake the generator abandons when
        # the run ends (`unfinished`, at most one at -c 1) may end on s_server's side too, with
        # a "DONE" and no cipher: its retransmission meets the generator's closed port.
        deadline = time.monotonic() + 5.0
        while peer.output.count("DONE") < hs["completed"] and time.monotonic() < deadline:
            time.sleep(0.05)
        output = peer.output
    assert hs["unfinished"] <= 1
    assert output.count("CIPHER is PSK-AES128-CCM8") == hs["completed"]
    # One "DONE" more than that was seen once in a CI run (4,942 for 4,941 handshakes, none
    # unfinished, on a machine doing about 2,500 a second): as with our server above, the
    # kernel can give a closed client socket's port straight to the next client, and s_server
    # then ends a connection of that address twice. Every handshake is still counted once.
    surplus = output.count("DONE") - hs["completed"] - hs["unfinished"]
    assert hs["completed"] <= output.count("DONE") and surplus <= 3


@pytest.mark.interop
@pytest.mark.req("RES-1")
def test_perf_resumes_sessions_with_openssl_server() -> None:
    """`--resume` against s_server: one full handshake, then four abbreviated ones, which
    s_server reports as reused sessions (RFC 5246 §7.3)."""
    require_peer("openssl")
    port = free_udp_port()
    with openssl_psk_server(port, naccept=100000, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        summary = perf_json(port, "-n", "5", "-c", "1", "--resume")
        deadline = time.monotonic() + 5.0
        while peer.output.count("DONE") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        output = peer.output
    hs = summary["handshakes"]
    assert (hs["completed"], hs["failed"]) == (5, 0)
    assert (hs["sessions_offered"], hs["resumed"]) == (4, 4)
    assert summary["resumed_latency_ms"]["median"] > 0
    assert output.count("Reused session-id") == 4
    assert output.count("CIPHER is PSK-AES128-CCM8") == 5


def rpk_server_config(key_file: str, client_pin: bytes) -> ServerConfig:
    """Built in each worker: a private key does not pickle, so it is read there."""
    return ServerConfig(raw_public_key=PrivateKey.load(key_file), client_public_keys=[client_pin],
                        handshake_timeout=10.0)


def test_workers_build_a_raw_public_key_configuration_each(tmp_path: Path) -> None:
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    key_file = tmp_path / "server.pem"
    key_file.write_bytes(server_key.to_pem())
    source = functools.partial(rpk_server_config, str(key_file), client_key.spki_sha256)
    client = ClientConfig(server_public_keys=[server_key.spki], raw_public_key=client_key,
                          handshake_timeout=10.0)

    async def run() -> ServerStats:
        pool = await workers.serve(echo, LOCALHOST, 0, source, workers=2, loop_choice="asyncio")
        try:
            for n in range(4):
                async with aio.connect(*pool.address, client) as conn:
                    conn.send(b"raw key %d" % n)
                    assert await asyncio.wait_for(conn.recv(), 10.0) == b"raw key %d" % n
        finally:
            totals = await pool.close()
        return totals

    totals = asyncio.run(run())
    assert totals.handshakes_completed == 4
    assert totals.handshakes_failed == 0
