"""Record real DTLS 1.2 sessions between real peers as record-layer test vectors.

Each session runs through `iotdtls.proxy.LossyProxy` with no impairment, only logging, and is
written to ``tests/vectors/<name>.json``::

    {"note": how it was made (peer versions, exact commands),
     "cipher_suite": "TLS_..._CCM_8", "cipher_suite_id": 49320,
     "keylog": NSS key log text (CLIENT_RANDOM lines),
     "datagrams": [{"from": "client" | "server", "hex": "..."}, ...]   (in arrival order),
     "application_data": {"client": [...], "server": [...]},            (as sent, in order)
     "summary": per side: datagram count and record counts by content type and epoch,
     "ca_crt_pem": only for the certificate session}

Sessions:

- ``openssl_psk``: OpenSSL s_client <-> s_server, TLS_PSK_WITH_AES_128_CCM_8.
- ``openssl_ecdhe_mtu256``: OpenSSL, TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, mutual certificates,
  P-256, ``-mtu 256`` on both sides (the Certificate messages are fragmented).
- ``gnutls_psk``: gnutls-cli <-> gnutls-serv (an echo server), PSK CCM_8, both peers and the
  proxy inside a private network namespace (gnutls-serv binds every address).

After recording, every vector is checked independently of the iotdtls stack: both sides sent
ChangeCipherSpec (content type 20) and an epoch-1 handshake record (Finished) and application
data (type 23); the key log has a CLIENT_RANDOM line; and the application data records, opened
with keys derived from the key log (RFC 5246 PRF, RFC 6655 CCM_8 nonce and additional data),
give back exactly the recorded strings. ``--check`` re-runs only the checks.

Usage: ``.venv/bin/python tools/record_vectors.py [--only NAME] [--out DIR] [--check]``
(root is needed for the GnuTLS session's network namespace).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "src"))
import peers

from iotdtls.proxy import LossyProxy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "vectors"
STEP_TIMEOUT = 10.0
CLIENT_LINES = ["hello from the client", "second line from the client"]
SERVER_LINES = ["hello from the server", "second line from the server"]
SUITES = {
    "TLS_PSK_WITH_AES_128_CCM_8": 0xC0A8,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8": 0xC0AE,
}


def tool_version(argv: list[str]) -> str:
    """First line of a peer's version output."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


@dataclass
class Recording:
    """What one session produced."""

    datagrams: list[dict[str, str]]
    keylog: str
    commands: list[str]
    application_data: dict[str, list[str]]
    extra: dict[str, Any] = field(default_factory=dict)


def shown(argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> str:
    """A command line for the note, with the temporary directory elided."""
    prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
    return (prefix + shlex.join(argv)).replace(str(tmp) + "/", "")


def logged_datagrams(proxy: LossyProxy) -> list[dict[str, str]]:
    """The proxy's log as vector entries (no impairment: everything was forwarded once)."""
    entries = proxy.snapshot()
    assert all(d.fate == "sent" for d in entries), "a clean session must not lose anything"
    return [{"from": d.direction, "hex": d.data.hex()} for d in entries]


@contextmanager
def started(*processes: peers.PeerProcess) -> Iterator[None]:
    """Start processes in order and stop them all (by pid) at the end."""
    with ExitStack() as stack:
        for process in processes:
            stack.enter_context(process)
        yield


def exchange_openssl(server: peers.PeerProcess, client: peers.PeerProcess) -> dict[str, list[str]]:
    """Lines each way, alternating, each waited for on the other side; then close_notify."""
    client.wait_for_output(peers.OPENSSL_CLIENT_HANDSHAKE_DONE, STEP_TIMEOUT)
    server.wait_for_output(peers.OPENSSL_SERVER_HANDSHAKE_DONE, STEP_TIMEOUT)
    for client_line, server_line in zip(CLIENT_LINES, SERVER_LINES, strict=True):
        client.write_line(client_line)
        server.wait_for_output(client_line, STEP_TIMEOUT)
        server.write_line(server_line)
        client.wait_for_output(server_line, STEP_TIMEOUT)
    client.close_stdin()  # s_client: EOF on stdin -> close_notify, exit
    client.wait_for_output("DONE", STEP_TIMEOUT)
    server.wait_for_output("CONNECTION CLOSED", STEP_TIMEOUT)
    client.wait(STEP_TIMEOUT)
    return {
        "client": [line + "\n" for line in CLIENT_LINES],
        "server": [line + "\n" for line in SERVER_LINES],
    }


def record_openssl(tmp: Path, psk: bool) -> Recording:
    """An OpenSSL s_client <-> s_server session through the proxy."""
    server_port, keylog = peers.free_udp_port(), tmp / "keylog.txt"
    extra: dict[str, Any] = {}
    with LossyProxy((peers.LOCALHOST, server_port), seed=0, lifetime=60) as proxy:
        proxy_port = proxy.address[1]
        if psk:
            server = peers.openssl_psk_server(server_port)
            client = peers.openssl_psk_client(proxy_port, keylog=keylog)
        else:
            pki = peers.make_test_pki(tmp)
            extra["ca_crt_pem"] = pki.ca_crt.read_text()
            mtu = ["-mtu", "256"]
            server = peers.openssl_cert_server(server_port, pki, extra=mtu)
            client = peers.openssl_cert_client(proxy_port, pki, keylog=keylog, extra=mtu)
        with server:
            server.wait_for_output(peers.OPENSSL_SERVER_READY, STEP_TIMEOUT)
            with client:
                data = exchange_openssl(server, client)
            server.wait(2.0)
        time.sleep(0.3)  # let any last datagram through
    return Recording(
        datagrams=logged_datagrams(proxy),
        keylog=keylog.read_text(),
        commands=[
            "s_server stdin is a pipe held open; s_client stdin gets the lines, then EOF",
            f"{proxy.address[0]}:{proxy_port} is the proxy, {server_port} the server",
            shown(server.argv, tmp),
            shown(client.argv, tmp),
        ],
        application_data=data,
        extra=extra,
    )


def record_gnutls(tmp: Path) -> Recording:
    """A gnutls-cli <-> gnutls-serv (echo) session, all inside a private network namespace."""
    if not peers.netns_available():
        raise SystemExit("gnutls_psk needs a network namespace (run as root)")
    server_port, keylog = peers.free_udp_port(), tmp / "keylog.txt"
    psk_file = peers.write_psk_file(tmp / "psk.passwd")
    with peers.NetNamespace() as ns:
        server = peers.gnutls_psk_server(server_port, psk_file, netns=ns)
        with server:
            server.wait_for_output(peers.GNUTLS_SERVER_READY, STEP_TIMEOUT)
            with LossyProxy((peers.LOCALHOST, server_port), seed=0, lifetime=60,
                            socket_factory=ns.socket) as proxy:
                proxy_port = proxy.address[1]
                client = peers.gnutls_psk_client(proxy_port, netns=ns, keylog=keylog)
                with client:
                    client.wait_for_output(peers.GNUTLS_CLIENT_HANDSHAKE_DONE, STEP_TIMEOUT)
                    server.wait_for_output(peers.GNUTLS_SERVER_HANDSHAKE_DONE, STEP_TIMEOUT)
                    for line in CLIENT_LINES:
                        client.write_line(line)
                        server.wait_for_output(line, STEP_TIMEOUT)
                        client.wait_for_output(line, STEP_TIMEOUT)  # the echo
                    client.close_stdin()  # gnutls-cli: EOF -> close_notify, exit
                    server.wait_for_output("EOF", STEP_TIMEOUT)
                    client.wait(STEP_TIMEOUT)
                time.sleep(0.3)
    sent = [line + "\n" for line in CLIENT_LINES]
    return Recording(
        datagrams=logged_datagrams(proxy),
        keylog=keylog.read_text(),
        commands=[
            f"ip netns add T; ip netns exec T ip link set lo up (T = {ns.name}); the proxy's "
            "sockets are made inside T",
            f"proxy 127.0.0.1:{proxy_port} in T, server port {server_port}; gnutls-serv echoes",
            shown(server.argv, tmp),
            shown(client.argv, tmp, {"SSLKEYLOGFILE": "keylog.txt"}),
            "gnutls-cli stdin gets the lines, then EOF",
        ],
        application_data={"client": sent, "server": sent},
    )


@dataclass(frozen=True)
class Session:
    """One vector to record."""

    name: str
    cipher_suite: str
    peer: str
    record: Callable[[Path], Recording]


SESSIONS = [
    Session("openssl_psk", "TLS_PSK_WITH_AES_128_CCM_8", "openssl",
            lambda tmp: record_openssl(tmp, psk=True)),
    Session("openssl_ecdhe_mtu256", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "openssl",
            lambda tmp: record_openssl(tmp, psk=False)),
    Session("gnutls_psk", "TLS_PSK_WITH_AES_128_CCM_8", "gnutls", record_gnutls),
]


# -- independent checks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A DTLS record header and fragment."""

    sender: str
    content_type: int
    version: int
    epoch: int
    seq: int
    fragment: bytes


def split_records(sender: str, datagram: bytes) -> list[Record]:
    """Split a datagram into records (RFC 6347 §4.1); raise on a malformed one."""
    records, pos = [], 0
    while pos < len(datagram):
        if len(datagram) - pos < 13:
            raise ValueError("truncated record header")
        header = datagram[pos:pos + 13]
        length = int.from_bytes(header[11:13], "big")
        fragment = datagram[pos + 13:pos + 13 + length]
        if len(fragment) != length:
            raise ValueError("truncated record")
        records.append(Record(sender, header[0], int.from_bytes(header[1:3], "big"),
                              int.from_bytes(header[3:5], "big"),
                              int.from_bytes(header[5:11], "big"), fragment))
        pos += 13 + length
    return records


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2 PRF with HMAC-SHA256 (RFC 5246 §5)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:length]


def hello_random(records: list[Record], msg_type: int) -> bytes:
    """The random of the first ClientHello (1) or ServerHello (2) in epoch-0 records."""
    for record in records:
        body = record.fragment
        if record.content_type == 22 and record.epoch == 0 and body[0] == msg_type:
            return body[12 + 2:12 + 2 + 32]
    raise ValueError(f"no handshake message {msg_type}")


def check_vector(vector: dict[str, Any]) -> dict[str, Any]:
    """Check a vector as described in the module docstring; return its summary."""
    records = [r for d in vector["datagrams"]
               for r in split_records(d["from"], bytes.fromhex(d["hex"]))]
    seen = {(r.sender, r.content_type, r.epoch) for r in records}
    for side in ("client", "server"):
        for wanted in ((20, 0), (22, 1), (23, 1)):
            assert (side, *wanted) in seen, f"{side} sent no record {wanted} (type, epoch)"
    client_random = hello_random(records, 1)
    server_random = hello_random(records, 2)
    masters = {}
    for line in vector["keylog"].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "CLIENT_RANDOM":
            masters[bytes.fromhex(parts[1])] = bytes.fromhex(parts[2])
    assert client_random in masters, "no CLIENT_RANDOM line for this session"
    block = prf(masters[client_random], b"key expansion", server_random + client_random, 40)
    keys = {"client": (block[0:16], block[32:36]), "server": (block[16:32], block[36:40])}
    plain: dict[str, list[str]] = {"client": [], "server": []}
    opened: Counter[tuple[str, int]] = Counter()
    for r in records:
        if r.epoch != 1:
            continue
        key, iv = keys[r.sender]
        explicit, sealed = r.fragment[:8], r.fragment[8:]
        aad = (r.epoch.to_bytes(2, "big") + r.seq.to_bytes(6, "big") + bytes([r.content_type])
               + r.version.to_bytes(2, "big") + (len(sealed) - 8).to_bytes(2, "big"))
        data = AESCCM(key, tag_length=8).decrypt(iv + explicit, sealed, aad)
        opened[(r.sender, r.content_type)] += 1
        if r.content_type == 23:
            plain[r.sender].append(data.decode())
        elif r.content_type == 22:
            assert data[0] == 20, "the first epoch-1 handshake message is Finished"
        elif r.content_type == 21:
            assert data == b"\x01\x00", f"unexpected alert {data.hex()}"
    expected = vector["application_data"]
    for side in ("client", "server"):
        assert "".join(plain[side]) == "".join(expected[side]), (side, plain[side])
    summary: dict[str, Any] = {}
    for side in ("client", "server"):
        counts = Counter(f"type {r.content_type} epoch {r.epoch}"
                         for r in records if r.sender == side)
        summary[side] = {
            "datagrams": sum(1 for d in vector["datagrams"] if d["from"] == side),
            "records": dict(sorted(counts.items())),
            "close_notify": opened[(side, 21)] > 0,
        }
    return summary


def write_vector(session: Session, out_dir: Path) -> Path:
    """Record one session, check it and write its JSON file."""
    with tempfile.TemporaryDirectory(prefix=f"vector-{session.name}-") as tmp_name:
        recording = session.record(Path(tmp_name))
    versions = [tool_version(["openssl", "version"])]
    if session.peer == "gnutls":
        versions = [tool_version(["gnutls-cli", "--version"]),
                    tool_version(["gnutls-serv", "--version"])]
    vector: dict[str, Any] = {
        "note": (
            f"Recorded by tools/record_vectors.py on {time.strftime('%Y-%m-%d')} with "
            f"{'; '.join(versions)} over loopback, through iotdtls.proxy.LossyProxy (no "
            "impairment, arrival order as seen by the proxy). PSK identity "
            f"{peers.CLIENT_IDENTITY}, key {peers.PSK_HEX}; certificates (when used) freshly "
            "generated by tests/peers.make_test_pki. Commands: " + " | ".join(recording.commands)
        ),
        "cipher_suite": session.cipher_suite,
        "cipher_suite_id": SUITES[session.cipher_suite],
        "keylog": recording.keylog,
        "datagrams": recording.datagrams,
        "application_data": recording.application_data,
        **recording.extra,
    }
    vector["summary"] = check_vector(vector)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{session.name}.json"
    path.write_text(json.dumps(vector, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Record (or with --check only verify) the vectors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", choices=[s.name for s in SESSIONS], action="append")
    parser.add_argument("--check", action="store_true", help="only check existing vectors")
    args = parser.parse_args(argv)
    for session in SESSIONS:
        if args.only and session.name not in args.only:
            continue
        if args.check:
            path = args.out / f"{session.name}.json"
            summary = check_vector(json.loads(path.read_text()))
        else:
            path = write_vector(session, args.out)
            summary = json.loads(path.read_text())["summary"]
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size} bytes, {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
