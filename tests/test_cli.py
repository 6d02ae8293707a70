"""The command line (`python -m iotdtls`), run as subprocesses: echo server and client, their
options, their exit statuses and messages, and both against OpenSSL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from iotdtls.proxy import LossyProxy
from tests.interop_support import (
    CLI,
    CREDENTIALS,
    HELLO_VERIFY_REQUEST,
    KEYLOG_LINE,
    SERVER_MODES,
    WRONG_PSK_HEX,
    cli_server,
    handshake_types,
    run_client,
)
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK_HEX,
    PeerProcess,
    free_udp_port,
    openssl_psk_client,
    openssl_psk_server,
    require_peer,
)


def stop_with(server: PeerProcess, sig: signal.Signals) -> int | None:
    os.kill(server.pid, sig)
    return server.wait(10.0)


def worker_pids(server: PeerProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+ \(pid (\d+), \w+\) serving",
                                           server.output)]


def assert_stopped_cleanly(server: PeerProcess, mode: list[str], sig: signal.Signals,
                           handshakes: int) -> None:
    """Exit status 0, no traceback, the counters logged (summed over the workers, which are
    all gone)."""
    pids = worker_pids(server)
    assert stop_with(server, sig) == 0, server.output
    assert "Traceback" not in server.output
    assert "did not stop" not in server.output
    assert f"handshakes {handshakes} completed" in server.output
    if mode:
        assert len(pids) == 2, server.output
        assert re.search(rf"all 2 workers: handshakes {handshakes} completed", server.output)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


@SERVER_MODES
def test_cli_echo_logs_handshakes_and_exits_0_on_sigterm(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        done = run_client(port, ["first line", "second line"], *CREDENTIALS)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["first line", "second line"]
        assert done.stderr == ""
        line = server.wait_for_output(r"handshake complete: peer 127\.0\.0\.1:\d+ psk "
                                      r"identity b'Client_identity'", 5.0)
        assert line
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)
    assert server.output.count("handshake complete") == 1


@SERVER_MODES
def test_cli_server_exits_0_on_sigint(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        assert_stopped_cleanly(server, mode, signal.SIGINT, handshakes=0)


def test_cli_workers_stop_when_one_dies() -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--workers", "2") as server:
        first, second = worker_pids(server)
        os.kill(first, signal.SIGKILL)
        assert server.wait(10.0) == 1
        server.wait_for_output(r"worker \d \(pid \d+\) ended unexpectedly", 1.0)
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    assert "Traceback" not in server.output


@pytest.mark.req("CFG-1")
def test_cli_psk_file_and_no_cookie(tmp_path: Path) -> None:
    psk_file = tmp_path / "psk.txt"
    psk_file.write_text(f"# test keys\n{CLIENT_IDENTITY}:{PSK_HEX}\n"
                        "sensor-17:a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n")
    port = free_udp_port()
    with cli_server(port, "--psk-file", str(psk_file), "--no-cookie") as server, \
            LossyProxy((LOCALHOST, port), seed=0) as proxy:
        done = run_client(proxy.address[1], ["via file"], "--psk-identity", "sensor-17",
                          "--psk", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "via file\n"
        server.wait_for_output("identity b'sensor-17'", 5.0)
    assert HELLO_VERIFY_REQUEST not in handshake_types(proxy.snapshot(), "server")


@SERVER_MODES
def test_cli_cookie_exchange_is_on_by_default(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode), LossyProxy((LOCALHOST, port), seed=0) as proxy:
        assert run_client(proxy.address[1], ["x"], *CREDENTIALS).returncode == 0
    assert handshake_types(proxy.snapshot(), "server")[0] == HELLO_VERIFY_REQUEST


@pytest.mark.req("SEC-1")
def test_cli_keylog_and_verbose_logs_without_secrets(tmp_path: Path) -> None:
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, "--keylog", str(server_log), "-v") as server:
        done = run_client(port, ["logged"], *CREDENTIALS, "--keylog", str(client_log), "-v")
        assert done.returncode == 0, done.stderr
        server.wait_for_output("handshake complete: peer", 5.0)
        assert stop_with(server, signal.SIGTERM) == 0
    lines = client_log.read_text().splitlines()
    assert len(lines) == 1 and KEYLOG_LINE.match(lines[0]), lines
    assert server_log.read_text().splitlines() == lines
    master = lines[0].split()[2]
    for text in (server.output, done.stderr, done.stdout):
        assert PSK_HEX not in text.lower()
        assert master not in text.lower()
    assert "client_hello" in done.stderr  # -v traces the datagrams


@pytest.mark.req("ERR-1")
@SERVER_MODES
def test_cli_wrong_key_one_line_and_nonzero(mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server:
        done = run_client(port, ["never"], "--psk-identity", CLIENT_IDENTITY,
                          "--psk", WRONG_PSK_HEX, "--timeout", "3")
        server.wait_for_output(r"handshake failed: peer 127\.0\.0\.1:\d+ psk "
                               r"identity b'Client_identity': .*decrypt_error", 5.0)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "decrypt_error" in lines[0], lines[0]


@pytest.mark.parametrize("argv", [
    ["client", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "zz01"],
    ["client", "127.0.0.1", "--psk-identity", "a", "--psk", "01"],
    ["client", "127.0.0.1:99999", "--psk-identity", "a", "--psk", "01"],
    ["client", "127.0.0.1:{port}", "--psk-identity", "a"],
    ["server", "--listen", "127.0.0.1:x"],
    ["server", "--listen", "127.0.0.1:{port}"],
    ["server", "--psk-identity", "a", "--psk", "0g"],
    ["server", "--psk-file", "/nonexistent/psk.txt"],
    ["server", "--listen", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01",
     "--workers", "0"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "--concurrency", "0"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "-c", "2", "-p", "3"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a"],
    ["perf", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "-d", "1", "-n", "5"],
    ["client", "127.0.0.1:{port}", "--psk-identity", "a", "--psk", "01", "--mtu", "5"],
    ["frobnicate"],
])
def test_cli_bad_arguments(argv: list[str]) -> None:
    port = free_udp_port()  # never used: every command line is refused before any socket
    argv = [arg.replace("{port}", str(port)) for arg in argv]
    done = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("iotdtls: error:")


def test_cli_demo() -> None:
    done = subprocess.run([*CLI, "demo"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    for flight in ("client_hello#0", "hello_verify_request#0", "client_hello#1",
                   "server_hello#1", "server_hello_done#2", "client_key_exchange#2",
                   "ChangeCipherSpec", "ApplicationData", "all datagrams came back"):
        assert flight in done.stdout
    # Demo 2: mutual raw public keys (RFC 7250), both Certificates and a CertificateVerify.
    mutual = done.stdout.split("demo 2/2", 1)[1]
    for flight in ("server_key_exchange#3", "certificate_request#4", "certificate_verify#4",
                   "client: handshake complete with raw public key sha256:",
                   "all datagrams came back"):
        assert flight in mutual
    assert done.stdout.count("all datagrams came back") == 2


@pytest.mark.interop
def test_cli_client_against_openssl_server() -> None:
    require_peer("openssl")
    port = free_udp_port()
    with openssl_psk_server(port, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        with PeerProcess([*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS],
                         name="iotdtls-client", time_limit=30.0) as client:
            peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
            client.write_line("to openssl")
            peer.wait_for_output("to openssl", 5.0)
            peer.write_line("to iotdtls")
            client.wait_for_output(r"(?m)^to iotdtls$", 5.0)
            client.close_stdin()
            assert client.wait(10.0) == 0, client.output
            peer.wait_for_output("DONE", 5.0)  # our close_notify
        # s_server's datagram is the line with its newline; the CLI ends each datagram with
        # one more. Nothing else, on stdout or stderr.
        assert client.output == "to iotdtls\n\n"


@pytest.mark.interop
@SERVER_MODES
def test_openssl_client_against_cli_server(mode: list[str]) -> None:
    require_peer("openssl")
    port = free_udp_port()
    with cli_server(port, *CREDENTIALS, *mode) as server, \
            openssl_psk_client(port, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("echo me")
        peer.wait_for_output("echo me", 5.0)
        peer.close_stdin()
        assert peer.wait(5.0) == 0
        server.wait_for_output("handshake complete: peer .* identity b'Client_identity'", 5.0)
        assert_stopped_cleanly(server, mode, signal.SIGTERM, handshakes=1)
