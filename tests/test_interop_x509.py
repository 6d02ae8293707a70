"""Certificates (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, mutual) against OpenSSL 3.0, GnuTLS 3.7 and
Mbed TLS 2.28, both roles, data both ways and close_notify; the fragmented Certificate at MTU
256 against OpenSSL in both roles; refusals on the wire; and peers that know neither
cached_info nor client certificate URLs nor trusted_ca_keys completing a normal handshake.

The test PKI (`tests.peers.make_test_pki`, fixture `pki`): a P-256 CA, a server certificate
for localhost and 127.0.0.1, a client certificate whose CN is an EUI-64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.credentials import CertifiedKey, load_certificate_file
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertSent
from iotdtls.events import DataReceived, Event, HandshakeComplete
from iotdtls.identity import CertificateIdentity
from iotdtls.messages import CertificateVerify, HandshakeType, ServerKeyExchangeEcdhe
from iotdtls.proxy import LossyProxy
from tests import peers
from tests.interop_support import (
    ServerThread,
    alerts_through,
    assert_cookie_exchange,
    assert_datagrams_fit,
    assert_encrypted,
    fragmented,
    plaintext_alerts,
    proxied,
    records,
)
from tests.peers import (
    CLIENT_EUI64,
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_SERVER_HANDSHAKE_DONE,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    NetNamespace,
    PeerProcess,
    Pki,
    free_udp_port,
    gnutls_cert_client,
    gnutls_cert_server,
    make_test_pki,
    openssl_cert_client,
    openssl_cert_server,
    require_peer,
)
from tests.test_interop_mbedtls import MbedServer, mbed_outgoing, pending_events

pytestmark = pytest.mark.interop
netns = peers.netns
BAD_CERTIFICATE = 42
HANDSHAKE_FAILURE = 40


def our_client(pki: Pki, **overrides: Any) -> ClientConfig:
    settings: dict[str, Any] = {
        "trust_anchors": load_certificate_file(str(pki.ca_crt)),
        "certificate": CertifiedKey.load(str(pki.client_crt), str(pki.client_key)),
        "server_name": "localhost",
        "handshake_timeout": 10.0,
        **overrides,
    }
    return ClientConfig(**settings)


def our_server(pki: Pki, **overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {
        "certificates": [CertifiedKey.load(str(pki.server_crt), str(pki.server_key))],
        "client_trust_anchors": load_certificate_file(str(pki.ca_crt)),
        "handshake_timeout": 10.0,
        **overrides,
    }
    return ServerConfig(**settings)


# -- OpenSSL ----------------------------------------------------------------------------------


@contextmanager
def _s_server(pki: Pki, *extra: str) -> Iterator[tuple[PeerProcess, int]]:
    require_peer("openssl")
    port = free_udp_port()
    with openssl_cert_server(port, pki, extra=extra, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        yield peer, port


@pytest.mark.req("CRT-1", "CRT-3", "RPK-2")
@pytest.mark.parametrize("mtu", [1232, 256])
def test_our_client_against_openssl_server(pki: Pki, mtu: int) -> None:
    extra = ("-mtu", "256") if mtu == 256 else ()
    with _s_server(pki, *extra) as (peer, port), proxied(port) as proxy:
        client = sync.connect(*proxy.address, our_client(pki, mtu=mtu))
        assert client.connection.peer == CertificateIdentity("localhost")
        peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"hello openssl, certificates")
        peer.wait_for_output("hello openssl, certificates", 5.0)
        peer.write_line("hello iotdtls")
        assert client.recv(timeout=5.0) == b"hello iotdtls\n"
        client.close()
        peer.wait_for_output("DONE", 5.0)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"hello openssl, certificates", b"hello iotdtls")
    if mtu == 256:
        assert_datagrams_fit(log, "client", 256)
        assert fragmented(log, "client") and fragmented(log, "server")


@pytest.mark.req("CRT-1", "CRT-4", "RPK-2")
@pytest.mark.parametrize("mtu", [1232, 256])
def test_openssl_client_against_our_server(pki: Pki, mtu: int) -> None:
    require_peer("openssl")
    extra = ["-mtu", "256"] if mtu == 256 else []
    with ServerThread(our_server(pki, mtu=mtu)) as server, proxied(server.port) as proxy, \
            openssl_cert_client(proxy.address[1], pki, extra=extra, time_limit=30.0) as peer:
        peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 10.0)
        peer.write_line("ping with a certificate")
        assert server.wait_until(lambda: b"ping with a certificate\n" in server.data())
        peer.wait_for_output("ping with a certificate", 5.0)  # our echo
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    assert server.identities == [CertificateIdentity(CLIENT_EUI64)]
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"ping with a certificate")
    if mtu == 256:
        assert_datagrams_fit(log, "server", 256)
        assert fragmented(log, "server") and fragmented(log, "client")


def signature_schemes(log: list[Any], direction: str, msg_type: HandshakeType) -> list[int]:
    """The signature scheme of each whole plaintext ServerKeyExchange or CertificateVerify
    `direction` sent."""
    codec = ServerKeyExchangeEcdhe if msg_type == HandshakeType.server_key_exchange else (
        CertificateVerify
    )
    return [
        codec.decode(frag[12:]).signature_scheme
        for d in log if d.direction == direction
        for ctype, epoch, frag in records(d.data)
        if ctype == 22 and epoch == 0 and frag[0] == msg_type
        and frag[1:4] == frag[9:12]  # fragment_length == length: the whole message
    ]


@pytest.mark.req("CRT-1")
def test_openssl_signs_with_ecdsa_sha384_both_ways(pki: Pki) -> None:
    """RFC 5246 §7.4.1.4.1, §7.4.8, RFC 8422 §5.4: a peer may sign with any ECDSA pair we
    list, so an OpenSSL server restricted to ECDSA+SHA384 signs its ServerKeyExchange with it,
    and an OpenSSL client restricted to it its CertificateVerify; both are verified."""
    with _s_server(pki, "-sigalgs", "ECDSA+SHA384", "-client_sigalgs", "ECDSA+SHA256") as (
        peer, port
    ), proxied(port) as proxy:
        client = sync.connect(*proxy.address, our_client(pki))
        assert client.connection.peer == CertificateIdentity("localhost")
        peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
        client.close()
    assert signature_schemes(proxy.snapshot(), "server", HandshakeType.server_key_exchange) == [
        0x0503
    ]
    require_peer("openssl")
    with ServerThread(our_server(pki)) as server, proxied(server.port) as proxy, \
            openssl_cert_client(proxy.address[1], pki, extra=["-client_sigalgs", "ECDSA+SHA384"],
                                time_limit=30.0) as client_peer:
        client_peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 10.0)
        client_peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    assert server.identities == [CertificateIdentity(CLIENT_EUI64)]
    assert signature_schemes(proxy.snapshot(), "client", HandshakeType.certificate_verify) == [
        0x0503
    ]


@pytest.mark.req("CRT-3", "ERR-1")
def test_our_client_refuses_openssl_server_with_another_name(pki: Pki) -> None:
    with _s_server(pki) as (_, port), proxied(port) as proxy:
        with pytest.raises(AlertSent) as info:
            sync.connect(*proxy.address, our_client(pki, server_name="sensor.example"))
        assert alerts_through(proxy, "client") == [(2, BAD_CERTIFICATE)]
    assert info.value.alert is AlertDescription.bad_certificate


@pytest.mark.req("CRT-1", "ERR-1")
def test_our_server_refuses_an_openssl_client_under_a_forged_issuer(
    pki: Pki, tmp_path: Any
) -> None:
    """A client certificate that names our CA as its issuer but was signed by another key
    (another `make_test_pki` CA of the same name): bad_certificate on the wire."""
    require_peer("openssl")
    stranger = make_test_pki(tmp_path / "stranger")
    # The stranger's client certificate, but our server's CA for checking the server.
    mixed = peers.Pki(**{**pki.__dict__, "client_crt": stranger.client_crt,
                         "client_key": stranger.client_key})
    with ServerThread(our_server(pki)) as server, proxied(server.port) as proxy, \
            openssl_cert_client(proxy.address[1], mixed, time_limit=30.0) as peer:
        assert server.wait_until(
            lambda: any("handshake failed" in line for line in server.log_lines), 10.0)
        peer.wait_for_output(r"alert number 42", 10.0)
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, BAD_CERTIFICATE)]
    assert not server.data()


@pytest.mark.req("ERR-1")
@pytest.mark.parametrize(
    ("extra", "lacking"),
    [
        (["-groups", "X25519:P-384"], "not the P-256 group (supported_groups"),
        (["-sigalgs", "ECDSA+SHA384:ECDSA+SHA512"], "not ecdsa_secp256r1_sha256"),
    ],
    ids=["groups", "sigalgs"],
)
def test_our_server_names_what_an_openssl_client_of_the_ecdhe_suite_lacks(
    pki: Pki, extra: list[str], lacking: str
) -> None:
    """An s_client offering our ECDHE suite without P-256 or without ecdsa_secp256r1_sha256
    gets handshake_failure, and our log says which, not "no cipher suite in common" (probe BU
    F2)."""
    require_peer("openssl")
    with ServerThread(our_server(pki)) as server, proxied(server.port) as proxy, \
            openssl_cert_client(proxy.address[1], pki, extra=extra, time_limit=30.0):
        assert server.wait_until(
            lambda: any("handshake failed" in line for line in server.log_lines), 10.0)
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, HANDSHAKE_FAILURE)]
    failed = [line for line in server.log_lines if "handshake failed" in line]
    assert len(failed) == 1 and "the client offers the ECDHE suite but " + lacking in failed[0]


@pytest.mark.req("CRT-2", "CRT-7", "CRT-8")
def test_openssl_server_ignores_our_certificate_extensions(pki: Pki) -> None:
    """cached_info (with a stale chain), trusted_ca_keys and client_certificate_url offered to
    a server that knows none of them: a normal handshake with the full chain."""
    config = our_client(
        pki,
        cached_server_chain=load_certificate_file(str(pki.client_crt)),
        indicate_trusted_cas=True,
        certificate_urls=["http://127.0.0.1:9/client.der"],
    )
    with _s_server(pki) as (peer, port), proxied(port):
        client = sync.connect(LOCALHOST, port, config)
        peer.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"extensions ignored")
        peer.wait_for_output("extensions ignored", 5.0)
        client.close()


# -- GnuTLS -----------------------------------------------------------------------------------


@contextmanager
def _proxy_in(ns: NetNamespace, port: int) -> Iterator[LossyProxy]:
    with LossyProxy((LOCALHOST, port), seed=0, lifetime=60.0,
                    socket_factory=lambda family: ns.socket(family)) as proxy:
        yield proxy


@pytest.mark.req("CRT-1", "CRT-3", "CRT-2")
def test_our_client_against_gnutls_server(netns: NetNamespace, pki: Pki) -> None:
    require_peer("gnutls-serv")
    port = free_udp_port()
    config = our_client(pki, cached_server_chain=load_certificate_file(str(pki.server_crt)))
    with gnutls_cert_server(port, pki, netns=netns, time_limit=30.0) as peer, \
            _proxy_in(netns, port) as proxy:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        client = sync.connect(*proxy.address, config, sock=netns.socket())
        peer.wait_for_output(GNUTLS_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"hello gnutls, certificates")
        assert client.recv(timeout=5.0) == b"hello gnutls, certificates"
        client.close()
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"hello gnutls, certificates")


@pytest.mark.req("CRT-1", "CRT-4", "CRT-7")
def test_gnutls_client_against_our_server(netns: NetNamespace, pki: Pki) -> None:
    require_peer("gnutls-cli")
    config = our_server(pki, certificate_fetcher=lambda url, limit, timeout: b"")
    with ServerThread(config, sock=netns.socket()) as server, \
            _proxy_in(netns, server.port) as proxy, \
            gnutls_cert_client(proxy.address[1], pki, netns=netns, time_limit=30.0) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 10.0)
        peer.write_line("ping gnutls certificates")
        assert server.wait_until(lambda: b"ping gnutls certificates\n" in server.data())
        peer.wait_for_output("ping gnutls certificates", 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
        assert peer.wait(5.0) == 0
    assert server.identities == [CertificateIdentity(CLIENT_EUI64)]
    assert server.ended[0][1] is None
    assert_encrypted(proxy.snapshot(), b"ping gnutls certificates")


# -- Mbed TLS (in process) ----------------------------------------------------------------------

MBED_SUITE = "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8"
ADDRESS = ("127.0.0.1", 40001)
MAX_ROUNDS = 60


def _mbed(pki: Pki) -> tuple[Any, Any]:
    """python-mbedtls's tls module and a configuration with our test PKI (mutual)."""
    require_peer("mbedtls")
    import mbedtls.pk
    import mbedtls.tls
    import mbedtls.x509

    def config(crt: Any, key: Any) -> Any:
        chain = ([mbedtls.x509.CRT.from_file(str(crt))], mbedtls.pk.ECC.from_file(str(key)))
        trust = mbedtls.tls.TrustStore([mbedtls.x509.CRT.from_file(str(pki.ca_crt))])
        return mbedtls.tls.DTLSConfiguration(ciphers=[MBED_SUITE], certificate_chain=chain,
                                             trust_store=trust, validate_certificates=True)

    return mbedtls.tls, config


@pytest.mark.req("CRT-1", "CRT-3")
def test_our_client_against_mbedtls_server(pki: Pki) -> None:
    tls, config = _mbed(pki)
    server = MbedServer(tls, config(pki.server_crt, pki.server_key))
    client = DtlsConnection(our_client(pki))
    client.connect(0.0)
    events: list[Event] = []
    for _ in range(MAX_ROUNDS):
        for data in client.datagrams_to_send(0.0):
            server.buffer.receive_from_network(data)
        events += pending_events(client)
        if client.state is not ConnectionState.HANDSHAKING:
            break
        for data in server.step():
            client.receive_datagram(data, 0.0)
    assert client.state is ConnectionState.ESTABLISHED, events
    assert client.peer == CertificateIdentity("localhost")
    server.step()
    client.send(b"hello mbed, certificates")
    for data in client.datagrams_to_send(0.0):
        server.buffer.receive_from_network(data)
    assert server.buffer.read(1024) == b"hello mbed, certificates"
    server.buffer.write(b"hello iotdtls")
    for data in mbed_outgoing(server.buffer):
        client.receive_datagram(data, 0.0)
    assert DataReceived(b"hello iotdtls") in pending_events(client)
    client.close()
    for data in client.datagrams_to_send(0.0):
        server.buffer.receive_from_network(data)
    with pytest.raises(Exception, match="0x7880"):  # MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
        server.buffer.read(1024)


@pytest.mark.req("CRT-1", "CRT-4")
def test_mbedtls_client_against_our_server(pki: Pki) -> None:
    tls, config = _mbed(pki)
    client = tls.ClientContext(config(pki.client_crt, pki.client_key)).wrap_buffers("localhost")
    endpoint = ServerEndpoint(our_server(pki))
    events: list[Event] = []

    def exchange() -> None:
        for data in mbed_outgoing(client):
            endpoint.receive_datagram(data, ADDRESS, 0.0)
        for data, _ in endpoint.datagrams_to_send(0.0):
            client.receive_from_network(data)
        while (item := endpoint.next_event()) is not None:
            events.append(item[1])

    for _ in range(MAX_ROUNDS):
        if client._handshake_state is tls.HandshakeStep.HANDSHAKE_OVER:
            break
        with contextlib.suppress(tls.WantReadError, tls.WantWriteError):
            client.do_handshake()
        exchange()
    assert client._handshake_state is tls.HandshakeStep.HANDSHAKE_OVER
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    assert done.peer == CertificateIdentity(CLIENT_EUI64)
    client.write(b"ping from mbed")
    exchange()
    assert events[-1] == DataReceived(b"ping from mbed")
    endpoint.send(ADDRESS, b"pong")
    exchange()
    assert client.read(1024) == b"pong"
    client.shutdown()
    exchange()
    assert ADDRESS not in endpoint.connections
