"""Interoperability with Eclipse tinydtls (the stack of Contiki, RIOT and libcoap devices), both
roles, PSK (TLS_PSK_WITH_AES_128_CCM_8).

tinydtls comes from PyPI's ``DTLSSocket`` 0.2.3, a Cython wrapper that bundles it (`make
peers` builds it). It runs in a subprocess, `tests.tinydtls_peer` (an echo server, or a client
that echoes a few messages), under `PeerProcess`: a crash or a hang of the C library cannot
take the test process with it. Our client is the blocking `iotdtls.sync` client, our server
`iotdtls.aio.serve` in a thread (`ServerThread`). Datagrams go through `LossyProxy`, without
impairment where the test looks at the wire, and with dropped datagrams in both directions
where both sides must retransmit (RFC 6347 §4.2.4; tinydtls's timer starts at 2 s).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from iotdtls import sync
from iotdtls.errors import DtlsError, HandshakeTimeout
from iotdtls.proxy import LoggedDatagram, LossyProxy
from tests import tinydtls_peer
from tests.interop_support import (
    DECRYPT_ERROR,
    HANDSHAKE,
    WRONG_PSK_HEX,
    ServerThread,
    assert_cookie_exchange,
    assert_encrypted,
    client_config,
    plaintext_alerts,
    proxied,
    records,
    server_config,
)
from tests.peers import (
    LOCALHOST,
    PSK_HEX,
    PeerExited,
    PeerProcess,
    free_udp_port,
    holds_within,
    require_peer,
)

pytestmark = pytest.mark.interop

PEER = [sys.executable, "-m", "tests.tinydtls_peer"]
STARTUP_ATTEMPTS = 3
#: Datagrams the proxy drops: the second of each direction (the ClientHello with the cookie,
#: then the server's ServerHello flight) and the fourth.
DROPS = [("client", 2), ("server", 2), ("client", 4), ("server", 4)]


@contextmanager
def tinydtls_server(*args: str, host: str = LOCALHOST) -> Iterator[tuple[int, PeerProcess]]:
    """The tinydtls echo server on a fresh port, listening when this yields."""
    require_peer("DTLSSocket")
    for attempt in range(STARTUP_ATTEMPTS):
        port = free_udp_port()
        argv = [*PEER, "server", "--host", host, "--port", str(port), "--timeout", "30", *args]
        with PeerProcess(argv, name="tinydtls-server", time_limit=40.0) as peer:
            try:
                peer.wait_for_output(r"listening on ", 10.0)
            except PeerExited:
                if attempt + 1 == STARTUP_ATTEMPTS:
                    raise
                continue  # the port was taken meanwhile
            yield port, peer
            return


def tinydtls_client(port: int, *args: str, host: str = LOCALHOST) -> PeerProcess:
    """The tinydtls client (unstarted): handshakes with `host`:`port`, echoes 3 messages."""
    require_peer("DTLSSocket")
    argv = [*PEER, "client", "--host", host, "--port", str(port), "--timeout", "15", *args]
    return PeerProcess(argv, name="tinydtls-client", time_limit=20.0)


def retransmitted(log: list[LoggedDatagram], direction: str) -> bool:
    """Whether `direction` sent one plaintext handshake message (by message_seq) twice."""
    seen = Counter(
        int.from_bytes(frag[4:6], "big")
        for d in log if d.direction == direction
        for ctype, epoch, frag in records(d.data) if ctype == HANDSHAKE and epoch == 0
    )
    return any(n > 1 for n in seen.values())


def messages(count: int) -> list[bytes]:
    return [f"tinydtls message {n}".encode() for n in range(1, count + 1)]


# -- our client, tinydtls server ----------------------------------------------------------------


def _echo_through(client: sync.DtlsClient, peer: PeerProcess, count: int = 3) -> None:
    for n in range(1, count + 1):
        data = f"iotdtls message {n}".encode()
        client.send(data)
        assert client.recv(timeout=5.0) == data
        peer.wait_for_output(f"received {len(data)} bytes from .*: {data.hex()}", 5.0)


@pytest.mark.req("HS-1", "PSK-1", "REC-1", "CFG-1")
def test_our_client_against_tinydtls_server() -> None:
    with tinydtls_server() as (port, peer), proxied(port) as proxy, \
            sync.connect(*proxy.address, client_config()) as client:
        peer.wait_for_output("handshake complete", 5.0)
        _echo_through(client, peer)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"iotdtls message")


def test_our_client_against_tinydtls_server_over_ipv6() -> None:
    with tinydtls_server(host="::1") as (port, peer), \
            sync.connect("::1", port, client_config()) as client:
        peer.wait_for_output("handshake complete", 5.0)
        _echo_through(client, peer, 1)


# -- tinydtls client, our server ----------------------------------------------------------------


@pytest.mark.req("HS-2", "PSK-1", "REC-1")
def test_tinydtls_client_against_our_server() -> None:
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            tinydtls_client(proxy.address[1]) as peer:
        assert peer.wait(20.0) == 0, peer.output
        assert server.wait_until(lambda: bool(server.ended))  # its close_notify
    assert "handshake complete" in peer.output
    assert "ok: 3 echoes" in peer.output
    assert server.started and server.ended[0][1] is None
    assert server.data() == messages(3)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"tinydtls message")


# -- both directions with loss -------------------------------------------------------------------


@pytest.mark.req("HS-4", "PSK-1")
def test_our_client_against_tinydtls_server_with_loss() -> None:
    with tinydtls_server() as (port, peer), \
            LossyProxy((LOCALHOST, port), seed=0, drop=DROPS, lifetime=30.0) as proxy:
        started = time.monotonic()
        with sync.connect(*proxy.address, client_config(handshake_timeout=15.0)) as client:
            peer.wait_for_output("handshake complete", 5.0)
            _echo_through(client, peer, 2)
        elapsed = time.monotonic() - started
    log = proxy.snapshot()
    assert proxy.counts["client", "dropped"] and proxy.counts["server", "dropped"]
    assert retransmitted(log, "client") and retransmitted(log, "server")
    # The lost ClientHello (the client's second datagram; tinydtls resends nothing before it
    # answers) is resent on our 1 s timer (RFC 6347 §4.2.4.1), and with three of our flights
    # lost (resent after 1, 2 and 4 s) the association is up after about 7 s: a retransmission
    # missing or late runs on towards handshake_timeout (15 s).
    sent = {d.index: d.time for d in log if d.direction == "client"}
    assert 0.9 <= sent[3] - sent[2] < 1.5, sent
    assert elapsed < 10.0, elapsed


@pytest.mark.req("HS-4", "PSK-1")
def test_tinydtls_client_against_our_server_with_loss() -> None:
    with ServerThread(server_config()) as server, \
            LossyProxy(server.address, seed=0, drop=DROPS, lifetime=30.0) as proxy, \
            tinydtls_client(proxy.address[1]) as peer:
        assert peer.wait(20.0) == 0, peer.output
        assert server.wait_until(lambda: bool(server.ended))  # its close_notify
    assert "ok: 3 echoes" in peer.output
    assert server.started and server.ended[0][1] is None
    # What our server received, not only what the peer says: each message (a resent one may
    # arrive twice when its echo was lost).
    assert list(dict.fromkeys(server.data())) == messages(3)
    log = proxy.snapshot()
    assert proxy.counts["client", "dropped"] and proxy.counts["server", "dropped"]
    assert retransmitted(log, "client") and retransmitted(log, "server")


# -- the tinydtls client's resend interval --------------------------------------------------------


class StalePeer(tinydtls_peer.Peer):
    """`tests.tinydtls_peer.Peer` without a socket, its own tinydtls context: connected at
    once; every wait sees a late duplicate of an earlier echo, never the echo it waits for."""

    def __init__(self) -> None:  # no socket, no tinydtls: the client loop alone is tested
        self.v6 = False
        self.events = [(0, tinydtls_peer.EVENT_CONNECTED)]
        self.received: list[tuple[tuple[str, int], bytes]] = []
        self.sent: list[float] = []
        self.dtls = self

    def tiny_address(self, address: tuple[str, int]) -> tuple[str, int]:
        return address

    def connect(self, host: str, port: int) -> object:
        return (host, port)

    def write(self, connection: object, data: bytes) -> None:
        self.sent.append(time.monotonic())

    def close(self, connection: object) -> None:
        pass

    def fatal_alert(self) -> int | None:
        return None

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        self.received.append(((LOCALHOST, 9), b"tinydtls message 0"))
        return holds_within(done, timeout)


def test_the_tinydtls_client_resends_no_faster_than_its_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A datagram that was not the echo waited for (a late duplicate of the one before) ended
    the wait at once, so the client resent back to back until its deadline."""
    peer = StalePeer()
    started = time.monotonic()
    assert tinydtls_peer.client(peer, LOCALHOST, 9, 1, 1.0, 0.25) == 1
    assert capsys.readouterr().out.endswith("failed: no echo of message 1 within 1.0 s\n")
    assert 3 <= len(peer.sent) <= 5, len(peer.sent)  # at 0, 0.25, 0.5, 0.75 s
    gaps = [b - a for a, b in zip([started, *peer.sent], peer.sent, strict=False)][1:]
    assert min(gaps) >= 0.2, gaps


# -- a wrong key ----------------------------------------------------------------------------------


def test_our_client_with_a_wrong_key_against_tinydtls_server() -> None:
    """tinydtls discards a Finished that does not authenticate without an alert (as OpenSSL
    does, RFC 6347 §4.1.2.7), so our client gives up at its deadline with HandshakeTimeout
    after retransmitting its last flight; tinydtls never reports a handshake."""
    with tinydtls_server("--psk", WRONG_PSK_HEX) as (port, peer), proxied(port) as proxy:
        started = time.monotonic()
        with pytest.raises(DtlsError) as info:
            sync.connect(*proxy.address, client_config(handshake_timeout=3.0))
        elapsed = time.monotonic() - started
        assert peer.returncode is None  # still serving: the failure cost it nothing
    assert type(info.value) is HandshakeTimeout
    assert 3.0 <= elapsed < 3.0 + 1.5
    assert WRONG_PSK_HEX not in str(info.value) and PSK_HEX not in str(info.value)
    assert "handshake complete" not in peer.output and "received" not in peer.output
    log = proxy.snapshot()
    # tinydtls sent nothing protected and no alert: only its plaintext handshake messages.
    assert all(t == HANDSHAKE and e == 0
               for d in log if d.direction == "server" for t, e, _ in records(d.data))
    assert retransmitted(log, "client")  # our flight 5, resent on our timer


@pytest.mark.req("PSK-4", "ERR-1")
def test_tinydtls_client_with_a_wrong_key_against_our_server() -> None:
    """Our server refuses with decrypt_error, which tinydtls reports. tinydtls sends its
    ClientKeyExchange, ChangeCipherSpec and Finished one per datagram: our server concludes
    from a lone Finished that fails to authenticate only when it comes again (connection.py,
    `_check_finished_authenticates`), after tinydtls's 2 s retransmission timer."""
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            tinydtls_client(proxy.address[1], "--psk", WRONG_PSK_HEX) as peer:
        started = time.monotonic()
        assert peer.wait(20.0) == 1, peer.output
        elapsed = time.monotonic() - started
        assert server.wait_until(lambda: any("handshake failed" in s for s in server.log_lines))
    assert f"failed: fatal alert {DECRYPT_ERROR}" in peer.output
    assert elapsed < 5.0
    assert not server.started and not server.data()
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, DECRYPT_ERROR)]
