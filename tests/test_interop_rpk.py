"""Raw public keys (RFC 7250) against GnuTLS 3.7, both roles, mutual and server-only
authentication, with data both ways and close_notify; and the refusals (RPK-3).

GnuTLS runs in a private network namespace (see tests/test_interop_gnutls.py); OpenSSL 3.0
and Mbed TLS 2.28 have no raw public keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import PrivateKey
from iotdtls.errors import AlertDescription, AlertSent
from iotdtls.identity import RawPublicKeyIdentity, UnauthenticatedPeer
from iotdtls.proxy import LossyProxy
from tests import peers
from tests.interop_support import (
    ServerThread,
    alerts_through,
    assert_cookie_exchange,
    assert_encrypted,
    plaintext_alerts,
)
from tests.peers import (
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_SERVER_HANDSHAKE_DONE,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    NetNamespace,
    PeerProcess,
    Pki,
    free_udp_port,
    gnutls_rpk_client,
    gnutls_rpk_server,
    require_peer,
)

pytestmark = pytest.mark.interop
netns = peers.netns
HANDSHAKE_FAILURE = 40


def our_client_config(pki: Pki, *, own_key: bool = True, **overrides: Any) -> ClientConfig:
    settings: dict[str, Any] = {
        "server_public_keys": [pki.server_pub.read_bytes()],
        "raw_public_key": PrivateKey.load(pki.client_key) if own_key else None,
        "handshake_timeout": 10.0,
        **overrides,
    }
    return ClientConfig(**settings)


def our_server_config(pki: Pki, *, client_keys: bool = True) -> ServerConfig:
    return ServerConfig(
        raw_public_key=PrivateKey.load(pki.server_key),
        client_public_keys=[pki.client_pub.read_bytes()] if client_keys else (),
        handshake_timeout=10.0,
    )


@contextmanager
def _proxy_in(ns: NetNamespace, port: int) -> Iterator[LossyProxy]:
    with LossyProxy((LOCALHOST, port), seed=0, lifetime=60.0,
                    socket_factory=lambda family: ns.socket(family)) as proxy:
        yield proxy


@contextmanager
def _gnutls_server(
    ns: NetNamespace, pki: Pki, *, mutual: bool
) -> Iterator[tuple[PeerProcess, int]]:
    require_peer("gnutls-serv")
    port = free_udp_port()
    with gnutls_rpk_server(port, pki, require_client_key=mutual, netns=ns,
                           time_limit=30.0) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        yield peer, port


@pytest.mark.req("RPK-1", "RPK-2", "RPK-3")
@pytest.mark.parametrize("mutual", [True, False], ids=["mutual", "server-only"])
def test_our_client_against_gnutls_server(netns: NetNamespace, pki: Pki, mutual: bool) -> None:
    with _gnutls_server(netns, pki, mutual=mutual) as (peer, port), \
            _proxy_in(netns, port) as proxy:
        client = sync.connect(*proxy.address, our_client_config(pki, own_key=mutual),
                              sock=netns.socket())
        assert client.connection.peer == RawPublicKeyIdentity(
            PrivateKey.load(pki.server_key).spki)
        peer.wait_for_output(GNUTLS_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"raw key hello")
        assert client.recv(timeout=5.0) == b"raw key hello"  # gnutls-serv echoes
        client.close()
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"raw key hello")


@pytest.mark.req("RPK-3", "ERR-1")
def test_our_client_refuses_a_gnutls_server_with_another_key(
    netns: NetNamespace, pki: Pki
) -> None:
    stranger = PrivateKey.generate()
    with _gnutls_server(netns, pki, mutual=True) as (_, port), _proxy_in(netns, port) as proxy:
        config = our_client_config(pki, server_public_keys=[stranger.spki_sha256])
        with pytest.raises(AlertSent) as info:
            sync.connect(*proxy.address, config, sock=netns.socket())
        assert alerts_through(proxy, "client") == [(2, HANDSHAKE_FAILURE)]
    assert info.value.alert is AlertDescription.handshake_failure


@contextmanager
def _gnutls_client(
    ns: NetNamespace, port: int, pki: Pki, *, own_key: bool
) -> Iterator[PeerProcess]:
    require_peer("gnutls-cli")
    with gnutls_rpk_client(port, pki, client_key=own_key, netns=ns, time_limit=30.0) as peer:
        yield peer


@pytest.mark.req("RPK-1", "RPK-2", "RPK-3")
@pytest.mark.parametrize("mutual", [True, False], ids=["mutual", "server-only"])
def test_gnutls_client_against_our_server(netns: NetNamespace, pki: Pki, mutual: bool) -> None:
    config = our_server_config(pki, client_keys=mutual)
    with ServerThread(config, sock=netns.socket()) as server, \
            _proxy_in(netns, server.port) as proxy, \
            _gnutls_client(netns, proxy.address[1], pki, own_key=mutual) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("ping over raw keys")
        assert server.wait_until(lambda: b"ping over raw keys\n" in server.data())
        peer.wait_for_output("ping over raw keys", 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
        assert peer.wait(5.0) == 0
    expected = (RawPublicKeyIdentity(PrivateKey.load(pki.client_key).spki) if mutual
                else UnauthenticatedPeer())
    assert server.identities == [expected]
    assert server.ended[0][1] is None
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"ping over raw keys")


@pytest.mark.req("RPK-3", "ERR-1")
def test_our_server_refuses_a_gnutls_client_key_it_does_not_know(
    netns: NetNamespace, pki: Pki
) -> None:
    config = ServerConfig(raw_public_key=PrivateKey.load(pki.server_key),
                          client_public_keys=[PrivateKey.generate().spki],
                          handshake_timeout=10.0)
    with ServerThread(config, sock=netns.socket()) as server, \
            _proxy_in(netns, server.port) as proxy, \
            _gnutls_client(netns, proxy.address[1], pki, own_key=True) as peer:
        peer.wait_for_output(r"Received alert \[40\]: Handshake failed", 10.0)
        assert peer.wait(5.0) == 1
        assert GNUTLS_CLIENT_HANDSHAKE_DONE not in peer.output
    assert any("not provisioned" in line for line in server.log_lines)
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, HANDSHAKE_FAILURE)]
    assert not server.data()
