"""Interoperability with GnuTLS 3.7 (``gnutls-serv --udp`` / ``gnutls-cli --udp``), both roles.

gnutls-serv binds every address, so each test runs the GnuTLS peer inside a private network
namespace (`tests.peers.NetNamespace`); our side's sockets are made in that namespace with
`NetNamespace.socket()` and handed to `iotdtls.sync` / `iotdtls.aio` through ``sock=``.
gnutls-serv stays with a peer that vanished, so every test starts its own server on a fresh
port and always ends with close_notify.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.proxy import LossyProxy
from tests import peers
from tests.interop_support import (
    DECRYPT_ERROR,
    WRONG_PSK_HEX,
    ServerThread,
    assert_cookie_exchange,
    assert_encrypted,
    client_config,
    plaintext_alerts,
    server_config,
)
from tests.peers import (
    CLIENT_IDENTITY,
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_SERVER_HANDSHAKE_DONE,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    PSK_HEX,
    NetNamespace,
    PeerProcess,
    free_udp_port,
    gnutls_psk_client,
    gnutls_psk_server,
    require_peer,
    write_psk_file,
)

pytestmark = pytest.mark.interop
netns = peers.netns


@contextmanager
def _gnutls_server(ns: NetNamespace, tmp_path: Path) -> Iterator[tuple[PeerProcess, int]]:
    require_peer("gnutls-serv")
    port = free_udp_port()
    psk_file = write_psk_file(tmp_path / "psk.passwd")
    with gnutls_psk_server(port, psk_file, netns=ns, time_limit=30.0) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        yield peer, port


@contextmanager
def _proxy_in(ns: NetNamespace, port: int) -> Iterator[LossyProxy]:
    """A logging proxy without impairment, inside the namespace, in front of `port`."""
    with LossyProxy((LOCALHOST, port), seed=0, lifetime=60.0,
                    socket_factory=lambda family: ns.socket(family)) as proxy:
        yield proxy


@pytest.mark.req("HS-1", "PSK-1", "REC-1", "CFG-1")
def test_our_client_against_gnutls_server(netns: NetNamespace, tmp_path: Path) -> None:
    with _gnutls_server(netns, tmp_path) as (peer, port), _proxy_in(netns, port) as proxy:
        client = sync.connect(*proxy.address, client_config(), sock=netns.socket())
        peer.wait_for_output(GNUTLS_SERVER_HANDSHAKE_DONE, 5.0)
        client.send(b"hello gnutls")
        assert client.recv(timeout=5.0) == b"hello gnutls"  # gnutls-serv echoes
        client.send(b"second datagram")
        assert client.recv(timeout=5.0) == b"second datagram"
        client.close()
        # gnutls-serv reports the close_notify and waits for the next peer
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"hello gnutls", b"second datagram")


@contextmanager
def _gnutls_client(ns: NetNamespace, port: int, **kwargs: Any) -> Iterator[PeerProcess]:
    require_peer("gnutls-cli")
    with gnutls_psk_client(port, netns=ns, time_limit=30.0, **kwargs) as peer:
        yield peer


@pytest.mark.req("HS-2", "PSK-1", "REC-1")
def test_gnutls_client_against_our_server(netns: NetNamespace) -> None:
    with ServerThread(server_config(), sock=netns.socket()) as server, \
            _proxy_in(netns, server.port) as proxy, \
            _gnutls_client(netns, proxy.address[1]) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("ping from gnutls")
        assert server.wait_until(lambda: b"ping from gnutls\n" in server.data())
        peer.wait_for_output("ping from gnutls", 5.0)  # our echo, printed by gnutls-cli
        peer.close_stdin()  # gnutls-cli sends close_notify and exits
        assert server.wait_until(lambda: bool(server.ended))
        assert peer.wait(5.0) == 0
    assert server.ended[0][1] is None
    assert server.data() == [b"ping from gnutls\n"]
    log = proxy.snapshot()
    assert_cookie_exchange(log)
    assert_encrypted(log, b"ping from gnutls")


@pytest.mark.req("PSK-4", "ERR-1")
@pytest.mark.parametrize(("identity", "psk_hex"), [
    (CLIENT_IDENTITY, WRONG_PSK_HEX), ("Unknown_identity", PSK_HEX)])
def test_gnutls_client_wrong_credentials(netns: NetNamespace, identity: str,
                                         psk_hex: str) -> None:
    started = time.monotonic()
    with ServerThread(server_config(), sock=netns.socket()) as server, \
            _proxy_in(netns, server.port) as proxy, \
            _gnutls_client(netns, proxy.address[1], identity=identity, psk_hex=psk_hex) as peer:
        assert server.wait_until(lambda: any("handshake failed" in s
                                             for s in server.log_lines))
        # GnuTLS 3.7 names our alert: "*** Received alert [51]: Decrypt error"
        peer.wait_for_output(r"Received alert \[51\]: Decrypt error", 5.0)
        assert peer.wait(5.0) == 1, peer.output  # gnutls-cli gives up on the fatal alert
        assert GNUTLS_CLIENT_HANDSHAKE_DONE not in peer.output
    assert time.monotonic() - started < 15.0
    assert any("decrypt_error" in line for line in server.log_lines)
    assert plaintext_alerts(proxy.snapshot(), "server") == [(2, DECRYPT_ERROR)]
    assert not server.data()
