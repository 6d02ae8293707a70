"""The command line in the public-key modes: raw-key flags on both commands, the one-line
errors for mixes that make no sense, the handshake log line naming mode and identity, and
`--retries` (RPK-4)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop_support import CLI, CREDENTIALS, SERVER_MODES, cli_server, run_client
from tests.peers import LOCALHOST, Pki, free_udp_port


def rpk_server_args(pki: Pki) -> list[str]:
    return ["--rpk-key", str(pki.server_key), "--rpk-allow", str(pki.client_pub)]


def rpk_client_args(pki: Pki) -> list[str]:
    return ["--rpk-key", str(pki.client_key), "--peer-rpk", str(pki.server_pub)]


def spki_sha256_hex(pki: Pki, which: str) -> str:
    from iotdtls.credentials import PrivateKey

    key = pki.client_key if which == "client" else pki.server_key
    return PrivateKey.load(key).spki_sha256.hex()


@pytest.mark.req("RPK-1", "RPK-3", "CFG-1")
@SERVER_MODES
def test_cli_raw_public_keys_both_commands(pki: Pki, mode: list[str]) -> None:
    port = free_udp_port()
    with cli_server(port, *rpk_server_args(pki), *CREDENTIALS, *mode) as server:
        done = run_client(port, ["sensor reading"], *rpk_client_args(pki))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["sensor reading"]
        server.wait_for_output(
            r"handshake complete: peer 127\.0\.0\.1:\d+ raw public key sha256:"
            + spki_sha256_hex(pki, "client"), 5.0)
        # The same server still serves PSK clients (CFG-1: credentials of several modes).
        psk = run_client(port, ["psk reading"], *CREDENTIALS)
        assert psk.returncode == 0, psk.stderr
        server.wait_for_output(r"psk identity b'Client_identity'", 5.0)


@pytest.mark.req("RPK-3")
def test_cli_takes_a_hash_in_the_sha256_form_the_logs_and_demo_print(pki: Pki) -> None:
    """"sha256:<hex>", as the handshake line and `iotdtls demo` print a raw key, is taken by
    --peer-rpk-sha256 and --rpk-allow-sha256 as it is, prefix in any case (probe CK: refused
    with a hint sized for a PSK)."""
    port = free_udp_port()
    client_pin = "SHA256:" + spki_sha256_hex(pki, "client").upper()
    with cli_server(port, "--rpk-key", str(pki.server_key), "--rpk-allow-sha256",
                    client_pin) as server:
        done = run_client(port, ["x"], "--rpk-key", str(pki.client_key),
                          "--peer-rpk-sha256", "sha256:" + spki_sha256_hex(pki, "server"))
        assert done.returncode == 0, done.stderr
        assert done.stdout == "x\n"
        server.wait_for_output(
            "raw public key sha256:" + spki_sha256_hex(pki, "client"), 5.0)


@pytest.mark.req("RPK-3")
def test_cli_client_pins_the_server_by_hash(pki: Pki) -> None:
    port = free_udp_port()
    with cli_server(port, "--rpk-key", str(pki.server_key)):
        good = run_client(port, ["x"], "--peer-rpk-sha256", spki_sha256_hex(pki, "server"))
        assert good.returncode == 0, good.stderr
        bad = run_client(port, ["x"], "--peer-rpk-sha256", spki_sha256_hex(pki, "client"),
                         "--timeout", "5")
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "iotdtls: sent fatal alert handshake_failure: raw public key with SHA-256 "
        f"{spki_sha256_hex(pki, 'server')} is not provisioned"
    ], bad.stderr


@pytest.mark.req("CFG-1")
@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("client", ["--psk-identity", "a", "--psk", "01", "--peer-rpk-sha256", "00" * 32],
         "choose one mode"),
        ("client", [], "choose one mode"),
        ("client", ["--rpk-key", "k.pem", "--psk-identity", "a", "--psk", "01"],
         "--rpk-key needs the server's key"),
        ("client", ["--peer-rpk-sha256", "abcd"], "64 hex digits"),
        ("client", ["--peer-rpk", "/nonexistent.pem"], "cannot read --peer-rpk"),
        ("client", ["--cafile", "/nonexistent.pem"], "cannot read --cafile"),
        ("client", ["--cert", "c.pem", "--key", "k.pem", "--peer-rpk-sha256", "00" * 32],
         "--cert/--key need trust anchors"),
        ("server", ["--rpk-allow-sha256", "00" * 32], "--rpk-allow needs"),
        ("server", [], "give credentials"),
        ("server", ["--client-cafile", "ca.pem", "--psk-identity", "a", "--psk", "01"],
         "--client-cafile needs"),
        ("server", ["--rpk-key", "/nonexistent.pem"], "cannot read --rpk-key"),
    ],
)
def test_cli_credential_mistakes_are_one_line(command: str, args: list[str],
                                              message: str) -> None:
    target = ["127.0.0.1:9"] if command == "client" else ["--listen", "127.0.0.1:0"]
    done = subprocess.run([*CLI, command, *target, *args], capture_output=True, text=True,
                          timeout=20, check=False, input="")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


@pytest.mark.req("RPK-4")
def test_cli_client_retries_until_the_server_is_up(pki: Pki) -> None:
    """A device started before its server: the first handshakes time out, a later one works."""
    port = free_udp_port()
    client = subprocess.Popen(
        [*CLI, "client", f"{LOCALHOST}:{port}", *rpk_client_args(pki), "--timeout", "1",
         "--retries", "5", "-v"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.5)
        with cli_server(port, *rpk_server_args(pki)):
            out, err = client.communicate("late hello\n", timeout=30)
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert out.splitlines() == ["late hello"]
    assert "new handshake in" in err  # at least one failed attempt was retried


def x509_server_args(pki: Pki) -> list[str]:
    return ["--cert", str(pki.server_crt), "--key", str(pki.server_key),
            "--client-cafile", str(pki.ca_crt)]


def x509_client_args(pki: Pki) -> list[str]:
    return ["--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt),
            "--key", str(pki.client_key), "--server-name", "localhost"]


@pytest.mark.req("CRT-1", "ERR-1")
def test_cli_client_without_a_certificate_is_told_why_it_was_refused(pki: Pki) -> None:
    """The server's handshake_failure says nothing more; the client's line says what it sent
    (RFC 5246 §7.4.6), as the server's log does."""
    port = free_udp_port()
    with cli_server(port, *x509_server_args(pki)) as server:
        done = run_client(port, ["never"], "--cafile", str(pki.ca_crt),
                          "--server-name", "localhost", "--timeout", "5")
        server.wait_for_output(r"the client sent no certificate", 5.0)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "iotdtls: received fatal alert handshake_failure (the server asked for a client "
        "certificate; none was sent: no client credential configured)"
    ], done.stderr


@pytest.mark.req("CRT-1", "CRT-2", "CRT-4")
def test_cli_certificates_with_a_chain_cache(pki: Pki, tmp_path: Path) -> None:
    """Mutual certificates from the command line; with --cache-dir the first run keeps the
    server's chain and the second offers it in cached_info, so the server leaves it out (its
    datagram trace, -v, shows how many bytes went to each client)."""
    cache = tmp_path / "chains"
    port = free_udp_port()
    with cli_server(port, *x509_server_args(pki), "-v") as server:
        for run in range(2):
            done = run_client(port, [f"run {run}"], *x509_client_args(pki),
                              "--cache-dir", str(cache))
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [f"run {run}"]
            assert len(list(cache.iterdir())) == 1
        server.wait_for_output(r"handshake complete: peer 127\.0\.0\.1:\d+ certificate "
                               r"01-23-45-67-89-AB-CD-EF", 5.0)
        server.wait_for_output(r"association closed.*\n(.*\n)*.*association closed", 5.0,
                               from_start=True)
        trace = server.output
    sent: dict[str, int] = {}
    for peer, size in re.findall(r"-> 127\.0\.0\.1:(\d+) (\d+) B Handshake", trace):
        sent[peer] = sent.get(peer, 0) + int(size)
    first, second = sent.values()
    certificate = len(pki.server_der.read_bytes())
    assert first - second > certificate - 64, sent  # the chain stayed home
