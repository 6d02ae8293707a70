"""tshark, the independent dissector: our sessions on the wire are well-formed DTLS 1.2 and our
NSS key log (SEC-1: written only when asked) lets it decrypt the application data."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iotdtls import sync
from tests.interop_support import (
    CREDENTIALS,
    KEYLOG_LINE,
    ServerThread,
    cli_server,
    client_config,
    run_client,
    server_config,
)
from tests.peers import LOCALHOST, PeerExited, PeerProcess, free_udp_port, require_peer

pytestmark = pytest.mark.interop


@contextmanager
def capture(port: int, pcap: Path) -> Iterator[None]:
    """tshark capturing UDP `port` on lo into `pcap`; running when this yields, stopped by
    pid (SIGINT, so it finishes the file) once everything sent before has been captured.

    Both waits are conditions, not sleeps: probe datagrams go to a second, otherwise unused
    port inside the capture filter until tshark prints one of them (it captures), and at the
    end a marker datagram from a fresh source port must be printed (everything before it is
    in the file).
    """
    require_peer("tshark")
    probe_port = free_udp_port()
    argv = ["tshark", "-i", "lo", "-f", f"udp port {port} or udp port {probe_port}",
            "-w", str(pcap), "-P", "-l"]
    with PeerProcess(argv, name="tshark", time_limit=60.0) as tshark:
        _probe_until_seen(tshark, probe_port)
        yield
        _probe_until_seen(tshark, probe_port)
        os.kill(tshark.pid, signal.SIGINT)
        assert tshark.wait(10.0) is not None, "tshark did not stop on SIGINT"


def _probe_until_seen(tshark: PeerProcess, probe_port: int) -> None:
    """Send datagrams to `probe_port` from a fresh socket until tshark prints one (<= 15 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCALHOST, 0))
        source = probe.getsockname()[1]
        seen = re.compile(rf"\b{source}\b\D+\b{probe_port}\b")
        deadline = time.monotonic() + 15.0
        while not seen.search(tshark.output):
            assert time.monotonic() < deadline, f"tshark shows no capture:\n{tshark.output}"
            probe.sendto(b"probe", (LOCALHOST, probe_port))
            with contextlib.suppress(TimeoutError, PeerExited):
                tshark.wait_for_output(seen, 0.2, from_start=True)


def tshark_read(pcap: Path, port: int, *args: str) -> str:
    """`tshark -r pcap` decoding `port` as DTLS; its stdout."""
    done = subprocess.run(["tshark", "-r", str(pcap), "-d", f"udp.port=={port},dtls", *args],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def assert_clean(pcap: Path, port: int) -> None:
    """Every frame of the session is DTLS, nothing malformed, no expert warning."""
    flagged = tshark_read(pcap, port, "-Y",
                          '_ws.malformed || _ws.expert.severity >= "warning"')
    assert flagged.strip() == ""
    summary = tshark_read(pcap, port, "-Y", f"udp.port == {port}")
    assert "Client Hello" in summary and "Application Data" in summary, summary


def decrypted(pcap: Path, port: int, keylog: Path) -> list[bytes]:
    """The application data tshark decrypts with `keylog`, in frame order."""
    out = tshark_read(pcap, port, "-o", f"tls.keylog_file:{keylog}", "-Y", "dtls.app_data",
                      "-T", "fields", "-e", "data.data")
    return [bytes.fromhex(line.strip()) for line in out.splitlines()]


def handshake_fragments(pcap: Path, port: int) -> list[tuple[int, int, int]]:
    """(type, message length, fragment length) of every plaintext handshake fragment, in
    frame order, as tshark dissects them (one frame per line, a column per field, several
    values of a field comma-separated)."""
    out = tshark_read(pcap, port, "-T", "fields", "-e", "dtls.handshake.type",
                      "-e", "dtls.handshake.length", "-e", "dtls.handshake.fragment_length")
    fragments = []
    for line in out.splitlines():
        columns = [column.split(",") for column in line.split("\t")]
        if len(columns) != 3 or columns[0] == [""]:
            continue  # not a plaintext handshake frame
        assert len({len(values) for values in columns}) == 1, line
        fragments += [(int(t), int(n), int(f)) for t, n, f in zip(*columns, strict=True)]
    return fragments


@pytest.mark.req("SEC-1", "REC-1", "PSK-1")
def test_tshark_decrypts_cli_session_with_our_key_log(tmp_path: Path) -> None:
    port = free_udp_port()
    pcap, client_keys, server_keys = (tmp_path / "s.pcap", tmp_path / "client.keys",
                                      tmp_path / "server.keys")
    lines = ["secret payload one", "the second datagram"]
    with capture(port, pcap), cli_server(port, *CREDENTIALS, "--keylog", str(server_keys)):
        done = run_client(port, lines, *CREDENTIALS, "--keylog", str(client_keys))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == lines
    assert_clean(pcap, port)
    sent = [line.encode() for line in lines]
    # each line once from the client and once echoed by the server
    assert sorted(decrypted(pcap, port, client_keys)) == sorted(sent * 2)
    assert sorted(decrypted(pcap, port, server_keys)) == sorted(sent * 2)
    assert all(KEYLOG_LINE.match(line) for line in client_keys.read_text().splitlines())
    # The four application data records are there, but without the key log no plaintext.
    assert decrypted(pcap, port, tmp_path / "no.keys") == [b""] * 4


@pytest.mark.req("HS-3")
def test_tshark_reassembles_our_fragmented_handshake(tmp_path: Path) -> None:
    identity = b"device-" + b"x" * 293  # 300 bytes: ClientKeyExchange spans datagrams
    keys = tmp_path / "k.log"
    pcap = tmp_path / "f.pcap"
    config = server_config(psk_store={identity: bytes(range(16))}, mtu=256)
    with ServerThread(config) as server, capture(server.port, pcap):
        client_cfg = client_config(psk_identity=identity, psk=bytes(range(16)), mtu=256,
                                   keylog_file=str(keys))
        with sync.connect(LOCALHOST, server.port, client_cfg) as client:
            client.send(b"a" * 200)
            assert client.recv(timeout=5.0) == b"a" * 200
    assert_clean(pcap, server.port)
    messages = handshake_fragments(pcap, server.port)
    # The plaintext handshake, in order: ClientHello, HelloVerifyRequest, ClientHello,
    # ServerHello + ServerHelloDone, then ClientKeyExchange (16) in fragments.
    assert {1, 2, 3, 14, 16} <= {msg_type for msg_type, _, _ in messages}, messages
    cke = [(length, fragment) for msg_type, length, fragment in messages if msg_type == 16]
    assert len(cke) >= 2 and all(fragment < length for length, fragment in cke), cke
    assert sum(fragment for _, fragment in cke) == cke[0][0]  # the pieces make the message
    assert decrypted(pcap, server.port, keys) == [b"a" * 200, b"a" * 200]
    # Both application data records are there, undecryptable without the key log.
    assert decrypted(pcap, server.port, tmp_path / "no.keys") == [b"", b""]
