"""Interoperability with Mbed TLS 2.28 (python-mbedtls, in process), both roles.

Mbed TLS's socket-free endpoints (``wrap_buffers()``) are driven in memory against our
sans-I/O `DtlsConnection` (client) and `ServerEndpoint` (server): every datagram one side
emits is handed to the other, and logged so the tests can look at the wire. The Mbed TLS
server raises ``HelloVerifyRequest`` once it has sent its cookie request; as peers.md says, it
then continues on a fresh endpoint with the same cookie parameter (RFC 6347 §4.2.1).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.events import ConnectionClosed, DataReceived, Event, HandshakeComplete
from tests.interop_support import CLIENT_HELLO, HELLO_VERIFY_REQUEST, records
from tests.peers import CLIENT_IDENTITY, PSK, require_peer

pytestmark = pytest.mark.interop

MBED_SUITE = "TLS-PSK-WITH-AES-128-CCM-8"
ADDRESS = ("127.0.0.1", 40000)
#: A bound on the number of exchanges: a handshake needs about ten.
MAX_ROUNDS = 50


def _tls() -> Any:
    require_peer("mbedtls")
    import mbedtls.tls

    return mbedtls.tls


def mbed_outgoing(buffer: Any) -> list[bytes]:
    """Every datagram an Mbed TLS endpoint has queued (one per peek in DTLS mode)."""
    out = []
    while data := buffer.peek_outgoing(65535):
        buffer.consume_outgoing(len(data))
        out.append(bytes(data))
    return out


def _handshake_types(datagrams: list[bytes]) -> list[int]:
    return [frag[0] for d in datagrams for ctype, epoch, frag in records(d)
            if ctype == 22 and epoch == 0]


class MbedServer:
    """An Mbed TLS DTLS server endpoint with the cookie-restart dance of peers.md."""

    def __init__(self, tls: Any, conf: Any = None, **settings: Any) -> None:
        """`conf`: Mbed TLS's DTLSConfiguration; by default the test PSK with `settings`
        (max_fragmentation_length, ...)."""
        if conf is None:
            conf = tls.DTLSConfiguration(ciphers=[MBED_SUITE], validate_certificates=False,
                                         pre_shared_key_store={CLIENT_IDENTITY: PSK},
                                         **settings)
        self.tls = tls
        self.context = tls.ServerContext(conf)
        self.buffer = self._fresh()
        self.cookie_requests = 0

    def _fresh(self) -> Any:
        buffer = self.context.wrap_buffers()
        buffer.setcookieparam(f"{ADDRESS[0]}:{ADDRESS[1]}".encode())
        return buffer

    @property
    def done(self) -> bool:
        return bool(self.buffer._handshake_state is self.tls.HandshakeStep.HANDSHAKE_OVER)

    def step(self) -> list[bytes]:
        """Run the handshake as far as the input allows; return what it sends."""
        out: list[bytes] = []
        for _ in range(MAX_ROUNDS):
            if self.done:
                return out
            try:
                self.buffer.do_handshake()
            except self.tls.WantReadError:
                return out + mbed_outgoing(self.buffer)
            except self.tls.WantWriteError:
                pass
            except self.tls.HelloVerifyRequest:
                self.cookie_requests += 1
                out += mbed_outgoing(self.buffer)
                self.buffer = self._fresh()
                return out
            out += mbed_outgoing(self.buffer)
            if self.done:
                return out
        return out


def pending_events(conn: DtlsConnection) -> list[Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


@pytest.mark.req("HS-1", "PSK-1", "REC-1", "CFG-1")
def test_our_client_against_mbedtls_server() -> None:
    server = MbedServer(_tls())
    client = DtlsConnection(ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK))
    wire: list[tuple[str, bytes]] = []
    client.connect(0.0)
    events: list[Event] = []
    for _ in range(MAX_ROUNDS):
        for data in client.datagrams_to_send(0.0):
            wire.append(("client", data))
            server.buffer.receive_from_network(data)
        events += pending_events(client)
        if client.state is not ConnectionState.HANDSHAKING and server.done:
            break
        for data in server.step():
            wire.append(("server", data))
            client.receive_datagram(data, 0.0)
    assert client.state is ConnectionState.ESTABLISHED and server.done
    assert any(isinstance(e, HandshakeComplete) for e in events)
    assert server.cookie_requests == 1
    assert _handshake_types([d for s, d in wire if s == "server"])[0] == HELLO_VERIFY_REQUEST
    assert _handshake_types([d for s, d in wire if s == "client"])[:2] == [CLIENT_HELLO] * 2

    client.send(b"hello mbed")
    for data in client.datagrams_to_send(0.0):
        assert b"hello mbed" not in data
        server.buffer.receive_from_network(data)
    assert server.buffer.read(1024) == b"hello mbed"
    server.buffer.write(b"hello iotdtls")
    for data in mbed_outgoing(server.buffer):
        client.receive_datagram(data, 0.0)
    assert pending_events(client) == [DataReceived(b"hello iotdtls")]

    client.close()  # close_notify: Mbed TLS reports MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
    for data in client.datagrams_to_send(0.0):
        server.buffer.receive_from_network(data)
    with pytest.raises(Exception, match="0x7880"):
        server.buffer.read(1024)
    assert pending_events(client) == [ConnectionClosed(None)]


@pytest.mark.req("HS-2", "PSK-1", "REC-1")
def test_mbedtls_client_against_our_server() -> None:
    tls = _tls()
    conf = tls.DTLSConfiguration(ciphers=[MBED_SUITE], validate_certificates=False,
                                 pre_shared_key=(CLIENT_IDENTITY, PSK))
    client = tls.ClientContext(conf).wrap_buffers(None)
    endpoint = ServerEndpoint(ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK}))
    events: list[Event] = []
    sent_by_server: list[bytes] = []

    def exchange() -> None:
        for data in mbed_outgoing(client):
            endpoint.receive_datagram(data, ADDRESS, 0.0)
        for data, address in endpoint.datagrams_to_send(0.0):
            assert address == ADDRESS
            sent_by_server.append(data)
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
    assert HandshakeComplete in [type(e) for e in events]
    assert _handshake_types(sent_by_server)[0] == HELLO_VERIFY_REQUEST

    client.write(b"ping from mbed")
    exchange()
    assert events[-1] == DataReceived(b"ping from mbed")
    endpoint.send(ADDRESS, b"pong from iotdtls")
    exchange()
    assert client.read(1024) == b"pong from iotdtls"

    client.shutdown()  # close_notify
    exchange()
    assert events[-1] == ConnectionClosed(None)
    assert ADDRESS not in endpoint.connections
