"""The command line's extension flags, run as subprocesses: `--session-file` (RES-1, RES-2),
`--max-fragment-length` (EXT-1), `--server-name` as SNI (EXT-2) and `--heartbeat` on both
sides (EXT-5)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from iotdtls.sessions import SessionState
from tests.interop_support import (
    CLI,
    CREDENTIALS,
    cli_server,
    proxied,
    records,
    run_client,
)
from tests.peers import LOCALHOST, PeerProcess, free_udp_port


@pytest.mark.req("RES-1", "RES-2")
def test_session_file_resumes_from_a_new_process(tmp_path: Path) -> None:
    session_file = tmp_path / "device.session"
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server:
        first = run_client(port, ["one"], *CREDENTIALS, "--session-file", str(session_file))
        assert first.returncode == 0, first.stderr
        server.wait_for_output(r"handshake complete: peer 127\.0\.0\.1:\d+ psk identity "
                               r"b'Client_identity'\n", 5.0)
        assert stat.S_IMODE(session_file.stat().st_mode) == 0o600  # it holds a secret
        saved = SessionState.from_bytes(session_file.read_bytes())
        # A new process, so a new source port (RES-2): the session resumes.
        second = run_client(port, ["two"], *CREDENTIALS, "--session-file", str(session_file))
        assert second.returncode == 0, second.stderr
        assert second.stdout == "two\n"
        server.wait_for_output(r"psk identity b'Client_identity' \(resumed\)", 5.0)
    assert SessionState.from_bytes(session_file.read_bytes()).session_id == saved.session_id


@pytest.mark.req("RES-1")
def test_a_damaged_session_file_means_a_full_handshake(tmp_path: Path) -> None:
    session_file = tmp_path / "device.session"
    session_file.write_bytes(b"iotdtls-session\x01 of another version")  # not refused: replaced
    session_file.chmod(0o600)  # as the client writes it: one others can read is refused
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server:
        done = run_client(port, ["hello"], *CREDENTIALS, "--session-file", str(session_file))
        assert done.returncode == 0, done.stderr
        assert "ignoring --session-file: not a session saved by this version" in done.stderr
        server.wait_for_output("handshake complete", 5.0)
    SessionState.from_bytes(session_file.read_bytes())  # replaced by the new session
    assert "(resumed)" not in server.output


@pytest.mark.req("EXT-1")
def test_max_fragment_length_keeps_records_small_on_the_wire() -> None:
    port = free_udp_port()
    line = "x" * 500  # with the 512-byte limit, the largest line that fits is 512 bytes
    with cli_server(port, *CREDENTIALS) as server, proxied(port) as proxy:
        done = run_client(proxy.address[1], [line], *CREDENTIALS, "--max-fragment-length", "512")
        assert done.returncode == 0, done.stderr
        assert done.stdout == line + "\n"
        server.wait_for_output(r"\(max_fragment_length 512\)", 5.0)
        too_long = run_client(port, ["y" * 513, "fits"], *CREDENTIALS,
                              "--max-fragment-length", "512")
    assert too_long.returncode == 0, too_long.stderr  # the line is refused, the rest goes on
    assert too_long.stdout == "fits\n"
    assert too_long.stderr.strip().endswith("line not sent: 513 bytes of application data do "
                                            "not fit one datagram: the max_fragment_length "
                                            "negotiated with the peer is 512 bytes (RFC 6066 §4)")
    log = proxy.snapshot()
    assert max(len(frag) - 16 * (epoch > 0) for d in log for _, epoch, frag in records(d.data)) \
        <= 512


def test_max_fragment_length_takes_only_the_four_values() -> None:
    done = run_client(free_udp_port(), [], *CREDENTIALS, "--max-fragment-length", "1000")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


@pytest.mark.req("EXT-2")
def test_server_name_is_sent_and_logged() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS) as server:
        named = run_client(port, ["a"], *CREDENTIALS, "--server-name", "iot.example")
        assert named.returncode == 0, named.stderr
        server.wait_for_output(r"psk identity b'Client_identity' \(server_name iot\.example\)",
                               5.0)
        by_address = run_client(port, ["b"], *CREDENTIALS)  # 127.0.0.1: no SNI
        assert by_address.returncode == 0, by_address.stderr
        server.wait_for_output(r"psk identity b'Client_identity'\n", 5.0)


@pytest.mark.req("EXT-5")
def test_heartbeat_keeps_alive_and_reports_a_dead_server() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--heartbeat", "1") as server:
        argv = [*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS, "--heartbeat", "1",
                "--timeout", "3", "-v"]
        with PeerProcess(argv, name="iotdtls-client", time_limit=30.0) as client:
            client.write_line("ping")
            client.wait_for_output("ping", 5.0)
            # Silence both ways: heartbeats from both sides, each answered.
            client.wait_for_output(r"-> .* Heartbeat\(e1", 5.0)
            client.wait_for_output(r"<- .* Heartbeat\(e1", 5.0)
            os.kill(server.pid, signal.SIGKILL)  # gone without a word
            client.wait_for_output("the peer did not answer heartbeats for 3 s", 15.0)
            assert client.wait(5.0) == 1
