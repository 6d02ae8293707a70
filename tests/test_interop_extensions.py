"""max_fragment_length (EXT-1), server_name (EXT-2) and heartbeats (EXT-5) with real peers:
OpenSSL 3.0 (`-maxfraglen 512`, `-servername`), GnuTLS 3.7 (`--recordsize 512`,
`--sni-hostname`, `-b`) and Mbed TLS 2.28 (python-mbedtls, `max_fragmentation_length`), both
roles. The MFL tests read every record on the proxy's capture."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from iotdtls import sync
from iotdtls.config import ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertReceived, HandshakeTimeout
from iotdtls.events import DataReceived
from iotdtls.identity import CertificateIdentity
from iotdtls.proxy import LoggedDatagram
from tests import peers
from tests.extensions_support import (
    our_client,
    our_server,
    proxy_in,
    s_client,
    s_server,
    second_server_certificate,
    with_large_server_certificate,
)
from tests.interop_support import ServerThread, records
from tests.peers import (
    CLIENT_IDENTITY,
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK,
    NetNamespace,
    Pki,
    free_udp_port,
    gnutls_cert_client,
    gnutls_cert_server,
    gnutls_psk_client,
    gnutls_psk_server,
    openssl_cert_server,
    require_peer,
    write_psk_file,
)
from tests.test_interop_mbedtls import MbedServer, mbed_outgoing

pytestmark = pytest.mark.interop
netns = peers.netns
LIMIT = 512
#: A record header and the CCM_8 nonce and tag around at most LIMIT bytes of plaintext.
LIMIT_DATAGRAM = LIMIT + 13 + 16
HEARTBEAT = 24


def assert_records_within(log: list[LoggedDatagram], direction: str, limit: int = LIMIT) -> None:
    """Every record `direction` sent holds at most `limit` bytes of plaintext (RFC 6066 §4)."""
    sizes = [len(frag) - (16 if epoch else 0)
             for d in log if d.direction == direction for _, epoch, frag in records(d.data)]
    assert sizes and max(sizes) <= limit, sorted(sizes)[-5:]


def assert_handshake_fragmented(log: list[LoggedDatagram], direction: str) -> None:
    """`direction` cut a handshake message into fragments (the certificate did not fit)."""
    assert any(
        ctype == 22 and epoch == 0
        and int.from_bytes(frag[9:12], "big") < int.from_bytes(frag[1:4], "big")
        for d in log if d.direction == direction for ctype, epoch, frag in records(d.data)
    )


@pytest.fixture
def large(pki: Pki, tmp_path: Path) -> Pki:
    return with_large_server_certificate(pki, tmp_path)


# -- max_fragment_length -------------------------------------------------------------------------


@pytest.mark.req("EXT-1")
def test_openssl_client_maxfraglen_512_against_our_server(large: Pki) -> None:
    require_peer("openssl")
    with ServerThread(our_server("x509", large)) as server, proxy_in(None, server.port) as proxy:
        with s_client("x509", proxy.address[1], large, "-maxfraglen", str(LIMIT)) as peer:
            peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
            peer.write_line("m" * 400)
            peer.wait_for_output("m" * 400, 5.0)  # our echo, within the limit
        assert server.wait_until(lambda: any("(max_fragment_length 512)" in line
                                             for line in server.log_lines))
    log = proxy.snapshot()
    for side in ("client", "server"):
        assert_records_within(log, side)
    assert max(len(d.data) for d in log if d.direction == "server") <= LIMIT_DATAGRAM
    assert_handshake_fragmented(log, "server")


@pytest.mark.req("EXT-1")
def test_our_client_max_fragment_length_512_against_openssl_server(large: Pki) -> None:
    require_peer("openssl")
    port = free_udp_port()
    with s_server("x509", port, large) as peer, proxy_in(None, port) as proxy:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        config = our_client("x509", large, max_fragment_length=LIMIT)
        with sync.connect(*proxy.address, config) as client:
            assert client.connection.max_fragment_length == LIMIT
            client.send(b"c" * LIMIT)
            peer.wait_for_output("c" * LIMIT, 5.0)
            peer.write_line("from openssl")
            assert client.recv(timeout=5.0) == b"from openssl\n"
    log = proxy.snapshot()
    for side in ("client", "server"):
        assert_records_within(log, side)
    assert max(len(d.data) for d in log if d.direction == "client") <= LIMIT_DATAGRAM
    assert_handshake_fragmented(log, "server")  # OpenSSL kept to the limit too


@pytest.mark.req("EXT-1")
def test_gnutls_client_recordsize_512_against_our_server(
    large: Pki, netns: NetNamespace
) -> None:
    require_peer("gnutls-cli")
    with ServerThread(our_server("x509", large), sock=netns.socket()) as server, \
            proxy_in(netns, server.port) as proxy, \
            gnutls_cert_client(proxy.address[1], large, netns=netns, time_limit=30.0,
                               extra=["--recordsize", str(LIMIT)]) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.write_line("g" * 200)  # gnutls-cli reads at most 255 bytes a line
        assert server.wait_until(lambda: server.data() == [b"g" * 200 + b"\n"])
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    log = proxy.snapshot()
    for side in ("client", "server"):
        assert_records_within(log, side)
    assert_handshake_fragmented(log, "server")


@pytest.mark.req("EXT-1")
def test_our_client_max_fragment_length_512_against_gnutls_server(
    large: Pki, netns: NetNamespace
) -> None:
    require_peer("gnutls-serv")
    port = free_udp_port()
    with gnutls_cert_server(port, large, netns=netns, time_limit=30.0) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        with proxy_in(netns, port) as proxy:
            config = our_client("x509", large, max_fragment_length=LIMIT)
            with sync.connect(*proxy.address, config, sock=netns.socket()) as client:
                assert client.connection.max_fragment_length == LIMIT
                client.send(b"n" * 200)
                assert client.recv(timeout=5.0) == b"n" * 200  # gnutls-serv echoes
    log = proxy.snapshot()
    for side in ("client", "server"):
        assert_records_within(log, side)
    assert_handshake_fragmented(log, "server")  # GnuTLS kept to the limit too


def _mbedtls() -> Any:
    require_peer("mbedtls")
    import mbedtls.tls

    return mbedtls.tls


def _mbed_pump(buffer: Any, tls: Any) -> list[bytes]:
    with contextlib.suppress(tls.WantReadError, tls.WantWriteError):
        buffer.do_handshake()
    return mbed_outgoing(buffer)


def _psk_conf(tls: Any, **settings: Any) -> Any:
    return tls.DTLSConfiguration(ciphers=["TLS-PSK-WITH-AES-128-CCM-8"],
                                 validate_certificates=False,
                                 max_fragmentation_length=tls.MaxFragmentLength.MFL_512K,
                                 **settings)


@pytest.mark.req("EXT-1")
def test_mbedtls_client_max_fragment_length_against_our_server() -> None:
    tls = _mbedtls()
    client = tls.ClientContext(_psk_conf(tls, pre_shared_key=(CLIENT_IDENTITY, PSK)))
    buffer = client.wrap_buffers(None)
    endpoint = ServerEndpoint(ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK},
                                           cookie_exchange=False))
    address = ("192.0.2.1", 1)
    wire: list[tuple[str, bytes]] = []
    for _ in range(20):
        for data in _mbed_pump(buffer, tls):
            wire.append(("client", data))
            endpoint.receive_datagram(data, address, 0.0)
        for data, _ in endpoint.datagrams_to_send(0.0):
            wire.append(("server", data))
            buffer.receive_from_network(data)
        if buffer._handshake_state is tls.HandshakeStep.HANDSHAKE_OVER:
            break
    conn = endpoint.connections[address]
    assert conn.state is ConnectionState.ESTABLISHED and conn.max_fragment_length == LIMIT
    endpoint.send(address, b"s" * LIMIT)
    for data, _ in endpoint.datagrams_to_send(0.0):
        wire.append(("server", data))
        buffer.receive_from_network(data)
    assert buffer.read(1024) == b"s" * LIMIT
    log = [LoggedDatagram(side, data, "sent", 0.0) for side, data in wire]
    assert_records_within(log, "server")


@pytest.mark.req("EXT-1")
def test_our_client_max_fragment_length_against_mbedtls_server() -> None:
    tls = _mbedtls()
    server = MbedServer(tls, max_fragmentation_length=tls.MaxFragmentLength.MFL_512K)
    client = DtlsConnection(our_client("psk", None, max_fragment_length=LIMIT))
    client.connect(0.0)
    sent: list[bytes] = []
    for _ in range(20):
        for data in client.datagrams_to_send(0.0):
            sent.append(data)
            server.buffer.receive_from_network(data)
        if client.state is ConnectionState.ESTABLISHED and server.done:
            break
        for data in server.step():
            client.receive_datagram(data, 0.0)
    assert client.state is ConnectionState.ESTABLISHED
    assert client.max_fragment_length == LIMIT  # Mbed TLS accepted it
    client.send(b"c" * LIMIT)
    for data in client.datagrams_to_send(0.0):
        sent.append(data)
        server.buffer.receive_from_network(data)
    assert server.buffer.read(1024) == b"c" * LIMIT
    server.buffer.write(b"back")
    for data in mbed_outgoing(server.buffer):
        client.receive_datagram(data, 0.0)
    assert DataReceived(b"back") in iter(client.next_event, None)
    assert_records_within([LoggedDatagram("client", data, "sent", 0.0) for data in sent],
                          "client")


# -- server_name ---------------------------------------------------------------------------------

OTHER_PSK = bytes(range(16))


def _named_psk_server(**settings: Any) -> ServerConfig:
    names = {"iot.example": ServerConfig(psk_store={CLIENT_IDENTITY.encode(): OTHER_PSK})}
    return ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK},
                        server_name_lookup=names.get, handshake_timeout=10.0, **settings)


@pytest.mark.req("EXT-2")
def test_openssl_client_servername_picks_our_credentials() -> None:
    require_peer("openssl")
    with ServerThread(_named_psk_server()) as server:
        with peers.openssl_psk_client(server.port, psk_hex=OTHER_PSK.hex(),
                                      extra=["-servername", "iot.example"]) as peer:
            peer.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, 5.0)
        with peers.openssl_psk_client(server.port,
                                      extra=["-servername", "nobody.example"]) as peer:
            peer.wait_for_output(r"SSL alert number 112", 5.0)
        assert server.wait_until(lambda: any("unrecognized_name" in line
                                             for line in server.log_lines))
    assert any("(server_name iot.example)" in line for line in server.log_lines)


@pytest.mark.req("EXT-2", "CRT-3")
@pytest.mark.parametrize("name", ["other.example", "localhost"])
def test_our_client_servername_against_openssl_server(
    name: str, pki: Pki, tmp_path: Path
) -> None:
    """s_server switches to its second certificate for the name it is told, and refuses any
    other with a fatal unrecognized_name (-servername_fatal)."""
    require_peer("openssl")
    cert2, key2 = second_server_certificate(pki, "other.example", tmp_path)
    port = free_udp_port()
    extra = ["-cert2", str(cert2), "-key2", str(key2), "-servername", "other.example",
             "-servername_fatal"]
    with openssl_cert_server(port, pki, require_client_cert=False, extra=extra) as peer:
        peer.wait_for_output(OPENSSL_SERVER_READY, 5.0)
        config = our_client("x509", pki, server_name=name, certificate=None)
        if name == "other.example":
            with sync.connect(LOCALHOST, port, config) as client:
                assert client.connection.peer == CertificateIdentity("other.example")
        else:
            with pytest.raises(AlertReceived) as refused:
                sync.connect(LOCALHOST, port, config)
            assert refused.value.alert is AlertDescription.unrecognized_name
        peer.wait_for_output(f'Hostname in TLS extension: "{name}"', 5.0)


@pytest.mark.req("EXT-2")
def test_gnutls_client_sni_hostname_picks_our_credentials(netns: NetNamespace) -> None:
    require_peer("gnutls-cli")
    with ServerThread(_named_psk_server(), sock=netns.socket()) as server, \
            gnutls_psk_client(server.port, netns=netns, psk_hex=OTHER_PSK.hex(),
                              extra=["--sni-hostname", "iot.example"]) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        peer.close_stdin()
        assert server.wait_until(lambda: bool(server.ended))
    assert any("(server_name iot.example)" in line for line in server.log_lines)


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize("name", ["iot.example", "other.example"])
def test_our_client_server_name_against_gnutls_server(
    name: str, netns: NetNamespace, tmp_path: Path
) -> None:
    """gnutls-serv --sni-hostname-fatal refuses another name (it sends no alert in its UDP
    mode, so our client times out; its log names the refusal)."""
    require_peer("gnutls-serv")
    port = free_udp_port()
    psk_file = write_psk_file(tmp_path / "psk.passwd")
    with gnutls_psk_server(port, psk_file, netns=netns, time_limit=30.0,
                           extra=["--sni-hostname", "iot.example", "--sni-hostname-fatal"]) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        config = our_client("psk", None, server_name=name, handshake_timeout=2.0)
        if name == "iot.example":
            with sync.connect(LOCALHOST, port, config, sock=netns.socket()) as client:
                client.send(b"named")
                assert client.recv(timeout=5.0) == b"named"
        else:
            with pytest.raises(HandshakeTimeout):
                sync.connect(LOCALHOST, port, config, sock=netns.socket())
            peer.wait_for_output("SNI host name not recognised", 5.0)


# -- heartbeat -----------------------------------------------------------------------------------


def heartbeats(log: list[LoggedDatagram], direction: str) -> list[int]:
    """Sizes of the heartbeat records `direction` sent (protected)."""
    return [len(frag) for d in log if d.direction == direction
            for ctype, _, frag in records(d.data) if ctype == HEARTBEAT]


@pytest.mark.req("EXT-5")
def test_heartbeats_with_gnutls_server(netns: NetNamespace, tmp_path: Path) -> None:
    """Our request answered by gnutls-serv -b; its request (a 284-byte payload, sent when a
    client writes "**HEARTBEAT**") answered by us with the same payload."""
    require_peer("gnutls-serv")
    port = free_udp_port()
    psk_file = write_psk_file(tmp_path / "psk.passwd")
    with gnutls_psk_server(port, psk_file, netns=netns, time_limit=30.0, extra=["-b"]) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        with proxy_in(netns, port) as proxy:
            config = our_client("psk", None, heartbeat=True)
            with sync.connect(*proxy.address, config, sock=netns.socket()) as client:
                assert client.connection.heartbeats_negotiated
                assert client.heartbeat(5.0)
                client.send(b"**HEARTBEAT**")
                assert client.recv(timeout=1.0) is None  # (reads, and answers, its request)
                assert proxy.wait_for_count("client", 6, 5.0)  # our answer went out
                peer.wait_for_output(r"Processing 13 bytes command: \*\*HEARTBEAT\*\*", 5.0)
                time.sleep(0.2)
    log = proxy.snapshot()
    ours, theirs = heartbeats(log, "client"), heartbeats(log, "server")
    assert len(ours) == 2 and len(theirs) == 2
    assert ours[0] == theirs[0] == 3 + 16 + 16 + 16  # our request and its answer
    assert theirs[1] == ours[1] == 3 + 284 + 16 + 16  # GnuTLS's request and our answer


@pytest.mark.req("EXT-5")
def test_heartbeats_with_gnutls_client(netns: NetNamespace) -> None:
    """Our server's keep-alive requests answered by gnutls-cli -b (it sends none itself)."""
    require_peer("gnutls-cli")
    config = our_server("psk", None, heartbeat=True, keepalive_interval=1.0)
    with ServerThread(config, sock=netns.socket()) as server, \
            proxy_in(netns, server.port) as proxy, \
            gnutls_psk_client(proxy.address[1], netns=netns, extra=["-b"]) as peer:
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 5.0)
        assert proxy.wait_for_count("client", 5, 5.0)  # flights, then the first answer
        time.sleep(1.2)
        # gnutls-cli blocks after answering a heartbeat (peers.md): stopped by its pid.
    log = proxy.snapshot()
    requests, answers = heartbeats(log, "server"), heartbeats(log, "client")
    assert len(requests) >= 2 and len(answers) >= 2
    assert answers == requests[: len(answers)] == [3 + 16 + 16 + 16] * len(answers)
    assert not any("did not answer heartbeats" in line for line in server.log_lines)
