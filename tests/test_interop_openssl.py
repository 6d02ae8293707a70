"""Interoperability with OpenSSL 3.0 (``openssl s_server`` / ``s_client``), both roles.

Our client is the blocking `iotdtls.sync` client; our server is `iotdtls.aio.serve` running in
a background thread (`ServerThread`, also used by the GnuTLS and CLI tests). Datagrams go
through `LossyProxy` without impairment where the test asserts on the wire (cookie exchange,
MTU, alerts). peers.md lists the OpenSSL pitfalls these tests work around.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.errors import AlertDescription, AlertReceived, DtlsError, HandshakeTimeout
from iotdtls.proxy import LoggedDatagram
from tests.interop_support import (
    ALERT,
    APPLICATION_DATA,
    DECRYPT_ERROR,
    HANDSHAKE,
    WRONG_PSK_HEX,
    ServerThread,
    assert_cookie_exchange,
    assert_datagrams_fit,
    assert_encrypted,
    client_config,
    fragmented,
    plaintext_alerts,
    proxied,
    records,
    server_config,
)
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK,
    PSK_HEX,
    PeerProcess,
    free_udp_port,
    openssl_psk_client,
    openssl_psk_server,
    require_peer,
)

pytestmark = pytest.mark.interop
CHANGE_CIPHER_SPEC = 20

@contextmanager
def _start_s_server(port: int, **kwargs: Any) -> Iterator[PeerProcess]:
    """s_server on `port`, listening when this yields, stopped by pid afterwards."""
    require_peer("openssl")
    with openssl_psk_server(port, time_limit=30.0, **kwargs) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        yield peer


@pytest.mark.req("HS-1", "PSK-1", "REC-1", "CFG-1")
def test_our_client_against_openssl_server() -> None:
    port = free_udp_port()
    with _start_s_server(port) as peer, proxied(port) as proxy:
        client = sync.connect(*proxy.address, client_config())
        peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"hello from iotdtls")
        peer.wait_for_output("hello from iotdtls", 5.0)
        peer.write_line("hello from openssl")
        assert client.recv(timeout=5.0) == b"hello from openssl\n"
        client.close()
        peer.wait_for_output("DONE", 5.0)  # s_server saw our close_notify
        assert peer.wait(5.0) == 0
        assert client.recv(timeout=0.1) is None
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"hello from iotdtls", b"hello from openssl")


@pytest.mark.req("HS-3")
def test_our_client_mtu_256_against_openssl_server() -> None:
    identity = "i" * 255  # OpenSSL's limit; ClientKeyExchange then needs fragmenting
    port = free_udp_port()
    with _start_s_server(port, extra=["-mtu", "256"]) as peer, proxied(port) as proxy:
        config = client_config(psk_identity=identity, mtu=256)
        with sync.connect(*proxy.address, config) as client:
            client.send(b"x" * 200)
            peer.wait_for_output("x" * 200, 5.0)
            peer.write_line("y" * 200)
            assert client.recv(timeout=5.0) == b"y" * 200 + b"\n"
    log = proxy.snapshot()
    assert_datagrams_fit(log, "client", 256)
    assert fragmented(log, "client")


def test_our_client_wrong_key_fails_within_deadline() -> None:
    """Our client with a key s_server does not share: OpenSSL 3.0 drops a Finished that does
    not authenticate without an alert, so our client gives up at its deadline
    (HandshakeTimeout, no alert to report) after sending its whole flight 5, and sends no
    application data."""
    port = free_udp_port()
    with _start_s_server(port, psk_hex=WRONG_PSK_HEX) as peer, proxied(port) as proxy:
        config = client_config(handshake_timeout=3.0)
        started = time.monotonic()
        with pytest.raises(DtlsError) as info:
            sync.connect(*proxy.address, config)
        elapsed = time.monotonic() - started
        assert peer.returncode is None  # s_server is still waiting: it never failed loudly
        assert OPENSSL_SERVER_HANDSHAKE_DONE not in peer.output
    assert type(info.value) is HandshakeTimeout
    assert 3.0 <= elapsed < 3.0 + 1.5
    assert PSK_HEX not in str(info.value)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    client = [records(d.data) for d in log if d.direction == "client"]
    # Flight 5 went out whole: ClientKeyExchange, ChangeCipherSpec, Finished under epoch 1.
    flight5 = [[(t, e) for t, e, _ in recs] for recs in client if any(e == 1 for _, e, _ in recs)]
    assert flight5 and flight5[0] == [(HANDSHAKE, 0), (CHANGE_CIPHER_SPEC, 0), (HANDSHAKE, 1)]
    assert all(t != APPLICATION_DATA for recs in client for t, _, _ in recs)
    # s_server sent neither an alert nor anything protected: it stayed silent.
    server = [r for d in log if d.direction == "server" for r in records(d.data)]
    assert plaintext_alerts(log, "server") == []
    assert all(e == 0 and t == HANDSHAKE for t, e, _ in server)


def test_our_client_hears_a_dtls10_server_refuse() -> None:
    """s_server speaking DTLS 1.0 only refuses our DTLS 1.2 ClientHello (no suite in common)
    with a fatal alert in a record of its own version, 0xFEFF (RFC 6347 §4.1, RFC 5246
    Appendix E): our client reports that alert at once instead of retransmitting until its
    deadline."""
    require_peer("openssl")
    port = free_udp_port()
    # DTLS 1.0 works at security level 0 only; its suites (CBC) are not ours: no suite in common
    argv = ["openssl", "s_server", "-dtls1", "-accept", f"{LOCALHOST}:{port}", "-nocert",
            "-psk", PSK_HEX, "-cipher", "PSK-AES128-CBC-SHA:@SECLEVEL=0", "-naccept", "1"]
    with PeerProcess(argv, name="s_server", time_limit=30.0) as peer, proxied(port) as proxy:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        config = client_config(handshake_timeout=10.0)
        started = time.monotonic()
        with pytest.raises(AlertReceived) as info:
            sync.connect(*proxy.address, config)
        elapsed = time.monotonic() - started
    assert info.value.alert is AlertDescription.handshake_failure
    assert "handshake_failure" in str(info.value)
    assert elapsed < 3.0
    log = proxy.snapshot()
    refusals = [d.data for d in log if d.direction == "server" and d.data[0] == ALERT]
    assert refusals and all(data[1:3] == b"\xfe\xff" for data in refusals)


# -- OpenSSL client, our server -----------------------------------------------------------------


@contextmanager
def _s_client(port: int, **kwargs: Any) -> Iterator[PeerProcess]:
    require_peer("openssl")
    with openssl_psk_client(port, time_limit=30.0, **kwargs) as peer:
        yield peer


@pytest.mark.req("HS-2", "PSK-1", "REC-1")
def test_openssl_client_against_our_server() -> None:
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1]) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        assert server.wait_until(lambda: any("handshake complete" in s
                                             for s in server.log_lines))
        peer.write_line("ping from openssl")
        assert server.wait_until(lambda: b"ping from openssl\n" in server.data())
        peer.wait_for_output("ping from openssl", 5.0)  # our echo, printed by s_client
        peer.close_stdin()  # s_client sends close_notify and exits
        assert server.wait_until(lambda: bool(server.ended))
        assert peer.wait(5.0) == 0
    assert server.ended[0][1] is None  # a clean close, not an error
    assert server.data() == [b"ping from openssl\n"]
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"ping from openssl")


@pytest.mark.req("HS-3")
def test_openssl_client_mtu_256_against_our_server() -> None:
    identity = "i" * 255
    config = server_config(psk_store={identity.encode(): PSK}, mtu=256)
    with ServerThread(config) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1], identity=identity, extra=["-mtu", "256"]) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("z" * 200)
        peer.wait_for_output("z" * 200, 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    assert server.data() == [b"z" * 200 + b"\n"]
    log = proxy.snapshot()
    assert_datagrams_fit(log, "server", 256)
    assert fragmented(log, "client")  # OpenSSL's ClientKeyExchange, reassembled by us


def _failed_attempt(identity: str, psk_hex: str) -> tuple[list[LoggedDatagram], ServerThread]:
    """An s_client with wrong credentials against our server; bounded, then killed."""
    with ServerThread(server_config()) as server, proxied(server.port) as proxy, \
            _s_client(proxy.address[1], identity=identity, psk_hex=psk_hex) as peer:
        assert server.wait_until(lambda: any("handshake failed" in s
                                             for s in server.log_lines))
        # OpenSSL 3.0 reports our alert: "...:tlsv1 alert decrypt error:...:SSL alert number 51"
        peer.wait_for_output(r"alert decrypt error.*SSL alert number 51", 5.0)
        assert peer.wait(5.0) == 1  # and gives up
    assert not server.data()
    return proxy.snapshot(), server


@pytest.mark.req("PSK-4", "ERR-1")
def test_openssl_client_wrong_key_and_unknown_identity() -> None:
    wrong_key, server = _failed_attempt(CLIENT_IDENTITY, WRONG_PSK_HEX)
    assert any("decrypt_error" in line for line in server.log_lines)
    unknown, server = _failed_attempt("Unknown_identity", PSK_HEX)
    assert any("decrypt_error" in line for line in server.log_lines)
    # On the wire: a fatal decrypt_error (2, 51), never unknown_psk_identity, and the same
    # datagram sizes from our server in both cases (indistinguishable, RFC 7925 §4.2).
    assert plaintext_alerts(wrong_key, "server") == [(2, DECRYPT_ERROR)]
    assert plaintext_alerts(unknown, "server") == [(2, DECRYPT_ERROR)]
    sizes = [[len(d.data) for d in log if d.direction == "server"]
             for log in (wrong_key, unknown)]
    assert sizes[0] == sizes[1]


@pytest.mark.req("PSK-4", "HS-4")
def test_openssl_client_gets_our_lost_alert_again_when_it_repeats_its_flight() -> None:
    """A wrong key, and our decrypt_error lost on the way (the server's third datagram, after
    the HelloVerifyRequest and flight 4): s_client repeats its flight 5 at its timer, and our
    server, which no longer holds the association, answers it with the alert again in a new
    record (RFC 6347 §4.2.7), so s_client reports it and gives up within seconds instead of
    retransmitting until its own limit."""
    with ServerThread(server_config()) as server, \
            proxied(server.port, drop={("server", 3)}) as proxy, \
            _s_client(proxy.address[1], psk_hex=WRONG_PSK_HEX) as peer:
        peer.wait_for_output(r"alert decrypt error.*SSL alert number 51", 10.0)
        assert peer.wait(5.0) == 1
        log = proxy.snapshot()
    dropped = [d for d in log if d.direction == "server" and d.fate == "dropped"]
    assert [plaintext_alerts([d], "server") for d in dropped] == [[(2, DECRYPT_ERROR)]]
    assert plaintext_alerts(log, "server") == [(2, DECRYPT_ERROR)] * 2
    assert not server.data()


def test_our_server_serves_concurrent_openssl_clients() -> None:
    require_peer("openssl")
    with ServerThread(server_config()) as server:
        peers = [openssl_psk_client(server.port, time_limit=30.0) for _ in range(4)]
        try:
            for peer in peers:
                peer.start()
            for peer in peers:
                peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 10.0)
            for number, peer in enumerate(peers):
                peer.write_line(f"client number {number}")
            for number, peer in enumerate(peers):
                peer.wait_for_output(f"client number {number}", 5.0)
                others = [f"client number {n}" for n in range(len(peers)) if n != number]
                assert not any(text in peer.output for text in others)
            for peer in peers:
                peer.close_stdin()
            assert server.wait_until(lambda: len(server.ended) == len(peers), 10.0)
        finally:
            for peer in peers:
                peer.stop()
    assert sorted(server.data()) == [f"client number {n}\n".encode() for n in range(4)]
    assert len({address for address, _ in server.received}) == 4
    assert all(error is None for _, error in server.ended)
