"""Session resumption (RES-1, RES-2) with real peers, both roles: OpenSSL 3.0 (`s_client
-sess_out/-sess_in -no_ticket`, `-reconnect`, `s_server`) in PSK and certificate mode, GnuTLS
3.7 (`gnutls-cli -r --noticket`, `gnutls-serv`) in PSK and raw-public-key mode. Every second
association comes from a new socket, so a new port: the session is found by its id alone
(RES-2). The lossy proxy sits in front of a resumption too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iotdtls import sync
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.sessions import SessionState
from tests import peers
from tests.extensions_support import (
    GNUTLS_RESUMED,
    OPENSSL_NEW,
    OPENSSL_REUSED,
    gnutls_client,
    gnutls_server,
    our_client,
    our_server,
    proxy_in,
    s_client,
    s_server,
)
from tests.interop_support import ServerThread, handshake_types
from tests.peers import (
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    OPENSSL_SERVER_READY,
    NetNamespace,
    Pki,
    free_udp_port,
    require_peer,
)
from tests.test_interop_mbedtls import MbedServer

pytestmark = pytest.mark.interop
netns = peers.netns
RESUMED_LINE = re.compile(r"handshake complete: peer 127\.0\.0\.1:(\d+) .*\(resumed\)")
FULL_LINE = re.compile(r"handshake complete: peer 127\.0\.0\.1:(\d+) [^(]*$")


def _ports(lines: list[str], pattern: re.Pattern[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := pattern.search(line))]


@pytest.mark.req("RES-1", "RES-2")
@pytest.mark.parametrize("mode", ["psk", "x509"])
def test_openssl_client_resumes_with_our_server(mode: str, pki: Pki, tmp_path: Path) -> None:
    require_peer("openssl")
    saved = tmp_path / "session.pem"
    with ServerThread(our_server(mode, pki)) as server:
        for flags, expected in ((["-sess_out", str(saved)], OPENSSL_NEW),
                                (["-sess_in", str(saved)], OPENSSL_REUSED)):
            with s_client(mode, server.port, pki, *flags, "-no_ticket") as peer:
                peer.wait_for_output(expected, 5.0)
                peer.write_line("over the session")
                peer.wait_for_output("over the session", 5.0)  # our echo
        assert server.wait_until(lambda: len(server.data()) == 2)
        lines = list(server.log_lines)
    (full,), (resumed,) = _ports(lines, FULL_LINE), _ports(lines, RESUMED_LINE)
    assert full != resumed  # a new port: found by session_id (RES-2)


@pytest.mark.req("RES-1", "RES-2")
def test_openssl_reconnect_with_tickets_resumes_by_session_id(pki: Pki) -> None:
    """`-reconnect`: one full handshake and five abbreviated ones. s_client offers session
    tickets too; we ignore the extension (no RFC 5077) and resume by session_id."""
    require_peer("openssl")
    with ServerThread(our_server("psk", pki)) as server:
        with s_client("psk", server.port, pki, "-reconnect") as peer:
            peer.wait_for_output(OPENSSL_NEW, 5.0)
            for _ in range(5):
                peer.wait_for_output(OPENSSL_REUSED, 5.0)
        assert server.wait_until(lambda: len(_ports(server.log_lines, RESUMED_LINE)) == 5)


@pytest.mark.req("RES-1", "RES-2")
@pytest.mark.parametrize("mode", ["psk", "x509"])
def test_our_client_resumes_with_openssl_server(mode: str, pki: Pki) -> None:
    require_peer("openssl")
    port = free_udp_port()
    with s_server(mode, port, pki, naccept=2) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        with sync.connect(LOCALHOST, port, our_client(mode, pki)) as first:
            first.send(b"full")
            assert not first.connection.resumed
            session = first.session
        assert session is not None
        with sync.connect(LOCALHOST, port, our_client(mode, pki), session=session) as second:
            second.send(b"abbreviated")
            assert second.connection.resumed
            assert second.session is not None
            assert second.session.session_id == session.session_id
        peer.wait_for_output("Reused session-id", 5.0)
        peer.wait_for_output("abbreviated", 5.0)


@pytest.mark.req("RES-1", "HS-4")
def test_resumption_through_the_lossy_proxy(pki: Pki) -> None:
    """A full handshake first, then the resumed one through 20 % loss, duplication and
    reordering, against OpenSSL."""
    require_peer("openssl")
    port = free_udp_port()
    with s_server("psk", port, pki, naccept=2) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        with sync.connect(LOCALHOST, port, our_client("psk", pki)) as first:
            session = first.session
        with proxy_in(None, port, seed=3, loss=0.2, duplicate=0.1, reorder=0.1) as proxy, \
                sync.connect(*proxy.address, our_client("psk", pki), session=session) as second:
            assert second.connection.resumed
            second.send(b"through loss")
            peer.wait_for_output("Reused session-id", 5.0)
            peer.wait_for_output("through loss", 10.0)
    # The abbreviated handshake on the wire: no ClientKeyExchange, the cookie exchange kept.
    client_types = handshake_types(proxy.snapshot(), "client")
    assert 16 not in client_types and client_types[:2] == [1, 1]


@pytest.mark.req("RES-1", "RES-2")
@pytest.mark.parametrize("mode", ["psk", "rpk"])
def test_gnutls_client_resumes_with_our_server(mode: str, pki: Pki, netns: NetNamespace) -> None:
    require_peer("gnutls-cli")
    with ServerThread(our_server(mode, pki), sock=netns.socket()) as server, \
            gnutls_client(mode, server.port, pki, netns, "-r", "--noticket") as peer:
        peer.wait_for_output(GNUTLS_RESUMED, 10.0)
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(_ports(server.log_lines, RESUMED_LINE)))
        (full,), (resumed,) = (_ports(server.log_lines, FULL_LINE),
                               _ports(server.log_lines, RESUMED_LINE))
    assert full != resumed


@pytest.mark.req("RES-1", "RES-2")
@pytest.mark.parametrize("mode", ["psk", "rpk"])
def test_our_client_resumes_with_gnutls_server(
    mode: str, pki: Pki, netns: NetNamespace, tmp_path: Path
) -> None:
    require_peer("gnutls-serv")
    port = free_udp_port()
    with gnutls_server(mode, port, pki, netns, tmp_path) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        config = our_client(mode, pki)
        with sync.connect(LOCALHOST, port, config, sock=netns.socket()) as first:
            first.send(b"full")
            assert first.recv(timeout=5.0) == b"full"  # gnutls-serv echoes
            session = first.session
        assert session is not None
        with sync.connect(LOCALHOST, port, config, sock=netns.socket(),
                          session=session) as second:
            assert second.connection.resumed
            second.send(b"abbreviated")
            assert second.recv(timeout=5.0) == b"abbreviated"


@pytest.mark.req("RES-1")
def test_a_session_mbedtls_does_not_keep_gets_a_full_handshake() -> None:
    """python-mbedtls's server issues session_ids but keeps no cache: offered one, it answers
    with a full handshake, which our client follows."""
    require_peer("mbedtls")
    import mbedtls.tls

    server = MbedServer(mbedtls.tls)
    sessions: list[SessionState | None] = []
    for offered in (None, "first"):
        server.buffer = server._fresh()
        client = DtlsConnection(our_client("psk", None),
                                session=sessions[0] if offered else None)
        client.connect(0.0)
        for _ in range(20):
            for data in client.datagrams_to_send(0.0):
                server.buffer.receive_from_network(data)
            if client.state is not ConnectionState.HANDSHAKING and server.done:
                break
            for data in server.step():
                client.receive_datagram(data, 0.0)
        assert client.state is ConnectionState.ESTABLISHED and not client.resumed
        sessions.append(client.session)
    first, second = sessions
    assert first is not None and second is not None
    assert first.session_id != second.session_id
