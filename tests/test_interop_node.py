"""Interoperability with node-dtls-client 1.1.1, the Node.js DTLS client of home automation
(IKEA TRÅDFRI gateways), against our server.

node-dtls-client is a client only, with PSK suites only; ``tests/node_peer/client.js`` drives it
with TLS_PSK_WITH_AES_128_CCM_8 alone (RFC 6655) and echoes a few lines through our server
(`ServerThread`, `iotdtls.aio.serve` in a thread), every datagram through `LossyProxy` so the
wire can be checked. `sh scripts/install-node-peer.sh` installs it (pinned by
``tests/node_peer/package-lock.json``) into ``tests/node_peer/node_modules``.

What this peer does not do, and the tests therefore allow for:

- It offers no extensions at all, so no extended master secret (RFC 7627): our server refuses
  it by default (RES-3, handshake_failure) and serves it with
  ``require_extended_master_secret=False`` (``--allow-no-ems``).
- It never retransmits a flight (its README: "packet retransmission" missing; RFC 6347 §4.2.4
  asks for it). Through the lossy proxy only losses that our side repairs can be survived: a
  lost server flight 4 (our server resends it on its timer, HS-4) and a lost application
  datagram (client.js sends a line again until its echo comes back). A lost ClientHello,
  ClientKeyExchange flight or server Finished flight leaves it waiting until its timeout.
- It parses a PSK identity hint in a ServerKeyExchange and ignores it; our server sends none
  (PSK-3), which the first test checks on the wire.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from iotdtls.config import ServerConfig
from iotdtls.identity import PskIdentity
from iotdtls.messages import HandshakeType, ServerHello
from iotdtls.proxy import LoggedDatagram, LossyProxy
from tests.interop_support import (
    DECRYPT_ERROR,
    FAST,
    HANDSHAKE,
    WRONG_PSK_HEX,
    ServerThread,
    assert_cookie_exchange,
    assert_encrypted,
    handshake_types,
    plaintext_alerts,
    proxied,
    records,
    server_config,
)
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK_HEX,
    PeerProcess,
    require_peer,
)

pytestmark = pytest.mark.interop

NODE_PEER = Path(__file__).parent / "node_peer"
CLIENT_SCRIPT = NODE_PEER / "client.js"
HANDSHAKE_FAILURE = 40
TLS_PSK_WITH_AES_128_CCM_8 = 0xC0A8
#: The lines client.js sends, in order.
MESSAGES = [f"message {n} from node".encode() for n in range(3)]


def node_client(
    port: int,
    *,
    identity: str = CLIENT_IDENTITY,
    psk_hex: str = PSK_HEX,
    count: int = len(MESSAGES),
    resend_ms: int = 1000,
) -> PeerProcess:
    """client.js against 127.0.0.1:`port` (unstarted); skips unless node and the package are
    installed (a failure under CI=true). The key goes in the environment, not in argv."""
    node = require_peer("node")
    if not (NODE_PEER / "node_modules" / "node-dtls-client" / "package.json").is_file():
        pytest.skip("node-dtls-client is not installed (run `make peers` or "
                    "`sh scripts/install-node-peer.sh`)")
    argv = [node, CLIENT_SCRIPT, LOCALHOST, str(port), "--identity", identity,
            "--count", str(count), "--resend", str(resend_ms),
            "--handshake-timeout", "5000", "--deadline", "12000"]
    return PeerProcess(argv, name="node-dtls-client", time_limit=15.0,
                       env={"NODE_DTLS_PSK_HEX": psk_hex})


def server_hello(log: list[LoggedDatagram]) -> ServerHello:
    """The first ServerHello our server sent."""
    for d in log:
        if d.direction == "server":
            for ctype, epoch, frag in records(d.data):
                if ctype == HANDSHAKE and epoch == 0 and frag[0] == HandshakeType.server_hello:
                    return ServerHello.decode(frag[12:])
    raise AssertionError("no ServerHello from the server")


def assert_echoed(peer: PeerProcess) -> None:
    """client.js connected, got every line back in order, closed and exited 0."""
    assert peer.wait(12.0) == 0, peer.output
    expected = ["connected", *(f"received: {m.decode()}" for m in MESSAGES), "done"]
    assert peer.output.splitlines() == expected


@pytest.mark.req("PSK-1", "PSK-3", "REC-1", "HS-2")
def test_node_client_echo_psk_ccm8() -> None:
    """Handshake with TLS_PSK_WITH_AES_128_CCM_8 after our cookie exchange, three lines echoed,
    close_notify from node ending the association cleanly on our side; no ServerKeyExchange
    (so no identity hint) from our server."""
    config = server_config(require_extended_master_secret=False)
    with ServerThread(config) as server, proxied(server.port) as proxy, \
            node_client(proxy.address[1]) as peer:
        assert_echoed(peer)
        assert server.wait_until(lambda: len(server.ended) == 1)
    assert server.data() == MESSAGES
    assert server.identities == [PskIdentity(CLIENT_IDENTITY.encode())]
    assert [error for _, error in server.ended] == [None]  # close_notify, not a failure
    assert any("without the extended master secret" in line for line in server.log_lines)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert server_hello(log).cipher_suite == TLS_PSK_WITH_AES_128_CCM_8
    assert HandshakeType.server_key_exchange not in handshake_types(log, "server")
    assert_encrypted(log, *MESSAGES)


def refused_run(config: ServerConfig, alert: int, name: str, **node: str) -> ServerThread:
    """node-dtls-client against our server with `config`, which refuses it: node reports the
    fatal `alert` (`name`) within 3 s and exits 1, our server logs the failure, starts no
    session, receives no data and sends that one plaintext alert. Returns the stopped server
    (its log lines) for the caller's own checks."""
    with ServerThread(config) as server, proxied(server.port) as proxy, \
            node_client(proxy.address[1], **node) as peer:
        started = time.monotonic()
        assert peer.wait(10.0) == 1, peer.output
        elapsed = time.monotonic() - started
        assert server.wait_until(lambda: any("handshake failed" in s for s in server.log_lines))
    assert peer.output == f"error: received fatal alert: {name}\n"
    assert elapsed < 3.0
    assert not server.started and not server.data()
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, alert)]
    return server


@pytest.mark.req("RES-3", "ERR-1")
def test_node_client_refused_by_default_without_extended_master_secret() -> None:
    """Our default server refuses node-dtls-client, which never offers the extended master
    secret: a fatal handshake_failure that node reports at once, and a log line saying why."""
    server = refused_run(server_config(), HANDSHAKE_FAILURE, "handshake_failure")
    assert any("does not offer the extended master secret" in s for s in server.log_lines)


@pytest.mark.req("HS-4")
def test_node_client_through_lossy_proxy() -> None:
    """A lost datagram each way: our server's ServerHello flight (resent on our timer,
    RFC 6347 §4.2.4) and node's first line (sent again by client.js); the handshake and the
    echo still complete."""
    config = server_config(require_extended_master_secret=False, retransmit=FAST)
    # Server: 1 HelloVerifyRequest, 2 ServerHello+ServerHelloDone; client: 1-2 ClientHello,
    # 3 ClientKeyExchange+ChangeCipherSpec+Finished, 4 the first line.
    drop = {("server", 2), ("client", 4)}
    with ServerThread(config) as server, \
            LossyProxy((LOCALHOST, server.port), seed=0, lifetime=30.0, drop=drop) as proxy, \
            node_client(proxy.address[1], resend_ms=500) as peer:
        assert_echoed(peer)
        assert server.wait_until(lambda: len(server.ended) == 1)
    assert proxy.counts[("server", "dropped")] == 1
    assert proxy.counts[("client", "dropped")] == 1
    log = proxy.snapshot()
    hellos = [d for d in log if d.direction == "server"
              and HandshakeType.server_hello in handshake_types([d], "server")]
    assert [d.fate for d in hellos] == ["dropped", "sent"]  # our retransmission got through
    assert server.data() == MESSAGES
    assert [error for _, error in server.ended] == [None]


@pytest.mark.req("PSK-4", "ERR-1")
@pytest.mark.parametrize(("identity", "psk_hex"), [
    (CLIENT_IDENTITY, WRONG_PSK_HEX),
    ("Unknown_identity", PSK_HEX),
], ids=["wrong-key", "unknown-identity"])
def test_node_client_wrong_credentials(identity: str, psk_hex: str) -> None:
    """A wrong key and an unknown identity end alike within a second: our server sends a fatal
    decrypt_error (never unknown_psk_identity) and logs why; node reports that alert and exits 1;
    no data passes and the key is in no output."""
    config = server_config(require_extended_master_secret=False)
    server = refused_run(config, DECRYPT_ERROR, "decrypt_error", identity=identity,
                         psk_hex=psk_hex)
    assert any("sent fatal alert decrypt_error" in s for s in server.log_lines)
    assert not any(psk_hex in s for s in server.log_lines)
