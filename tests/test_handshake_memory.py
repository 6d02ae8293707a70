"""Whole PSK handshakes between a client `DtlsConnection` and a `ServerEndpoint`, in memory.

Covers the handshake flights of RFC 6347 §4.2 (with and without the cookie exchange of
§4.2.1), application data and close_notify (RFC 5246 §7.2.1), the PSK suite of RFC 6655 with
RFC 4279 keys (opaque identities, PSK-2; no identity hint, PSK-3), the extended master secret
(RFC 7627), the hello extensions we offer (RFC 5746, no truncated_hmac of RFC 6066 §7), several
peers on one endpoint, and silent discard of bad records on a live association (RFC 6347
§4.1.2.7).
"""

from __future__ import annotations

import pytest

import iotdtls.connection
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import LocalProtocolError
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.identity import PskIdentity
from iotdtls.messages import (
    CipherSuite,
    ClientHello,
    ExtendedMasterSecret,
    ExtensionType,
    HandshakeType,
    RenegotiationInfo,
    ServerHello,
    ServerKeyExchangePsk,
    UnknownExtension,
    find_extension,
)
from iotdtls.record import ContentType, DiscardReason
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    MemoryLink,
    drain,
    established,
    events_of,
    injecting_server,
    make_link,
    message_types,
    plain_handshake,
    record_layer,
    wire_from,
)
from tests.pubkey_support import rpk_link, x509_link


def exchange_data(link: MemoryLink) -> None:
    """Application data both ways over an established link."""
    link.client.send(b"ping \x00\xff")
    link.step()
    link.server.send(CLIENT_ADDR, b"pong")
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(b"ping \x00\xff")]
    assert events_of(link, "client", DataReceived) == [DataReceived(b"pong")]


@pytest.mark.req("HS-5", "HS-1", "PSK-1", "RES-3")
@pytest.mark.parametrize("cookie", [True, False])
def test_full_handshake_and_data(cookie: bool) -> None:
    link = make_link(cookie=cookie)
    link.handshake()
    assert established(link)
    done = HandshakeComplete(CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, PskIdentity(IDENTITY), True)
    assert events_of(link, "client", HandshakeComplete) == [done]
    assert events_of(link, "server", HandshakeComplete) == [done]
    server_types = message_types(wire_from(link, "server"))
    expected = [HandshakeType.server_hello, HandshakeType.server_hello_done]
    if cookie:
        expected.insert(0, HandshakeType.hello_verify_request)
    assert server_types == expected
    # RFC 6347 §4.1.2.1 ff.: the Finished messages travel encrypted in epoch 1, after a CCS.
    client_types = message_types(wire_from(link, "client"))
    assert client_types == [HandshakeType.client_hello] * (1 + cookie) + [
        HandshakeType.client_key_exchange
    ]
    exchange_data(link)
    assert link.client.retransmissions == 0


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_notify_both_ways(closer: str) -> None:
    link = make_link()
    link.handshake()
    exchange_data(link)
    # Valid records sealed before the close and held back: they arrive after it.
    server_conn = link.server_conn
    assert server_conn is not None
    server_conn.send(b"late pong")
    late_to_client = server_conn.datagrams_to_send(link.now)
    link.client.send(b"late ping")
    late_to_server = link.client.datagrams_to_send(link.now)
    assert late_to_client and late_to_server
    if closer == "client":
        link.client.close()
    else:
        link.server.close(CLIENT_ADDR)
    link.run(until=link.now + 5, stop=lambda lk: lk.client.closed and not lk.server.connections)
    assert link.client.closed and link.client.error is None
    assert link.client_events[-1] == ConnectionClosed(None)
    assert link.server_events[-1] == ConnectionClosed(None)
    assert link.server.connections == {}
    # A closed association refuses to send, and delivers nothing more.
    with pytest.raises(LocalProtocolError):
        link.client.send(b"too late")
    with pytest.raises(LocalProtocolError):
        link.server.send(CLIENT_ADDR, b"too late")
    for data in late_to_client:
        link.client.receive_datagram(data, link.now)
    for data in late_to_server:
        link.server.receive_datagram(data, CLIENT_ADDR, link.now)
    assert link.client.next_event() is None
    assert link.server.next_event() is None
    assert link.client.datagrams_to_send(link.now) == []
    assert link.server.datagrams_to_send(link.now) == []
    assert link.server.connections == {}


@pytest.mark.req("PSK-3")
def test_server_sends_no_key_exchange_and_no_hint() -> None:
    link = make_link(cookie=False)
    link.handshake()
    server = wire_from(link, "server")
    assert HandshakeType.server_key_exchange not in message_types(server)
    hello = next(body for d in server for hs, body in plain_handshake(d) if hs.msg_type == 2)
    # A fresh 32-byte session_id: the session can be resumed later (RES-1).
    assert len(ServerHello.decode(hello).session_id) == 32


@pytest.mark.req("PSK-3")
def test_client_ignores_identity_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    hint = ServerKeyExchangePsk(b"use identity #7").encode()
    server_cls = injecting_server([(HandshakeType.server_key_exchange, hint)])
    monkeypatch.setattr(iotdtls.connection, "ServerHandshake", server_cls)
    link = make_link()
    link.handshake()
    assert HandshakeType.server_key_exchange in message_types(wire_from(link, "server"))
    assert established(link)
    # The client still names its provisioned identity, not the hint.
    assert events_of(link, "server", HandshakeComplete)[0].psk_identity == IDENTITY
    exchange_data(link)


@pytest.mark.req("EXT-3", "EXT-4", "RES-3")
def test_our_client_hello_extensions() -> None:
    link = make_link(cookie=False)
    link.handshake()
    first = wire_from(link, "client")[0]
    ((hs, body),) = plain_handshake(first)
    assert hs.msg_type == HandshakeType.client_hello
    hello = ClientHello.decode(body)
    types = {
        e.ext_type if isinstance(e, UnknownExtension) else e.TYPE for e in hello.extensions
    }
    assert 4 not in types  # truncated_hmac (RFC 6066 §7)
    assert ExtensionType.renegotiation_info in types
    assert find_extension(hello.extensions, RenegotiationInfo) == RenegotiationInfo(b"")
    assert find_extension(hello.extensions, ExtendedMasterSecret) is not None
    assert hello.cipher_suites == (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,)
    assert hello.compression_methods == (0,)
    server_hello = next(
        b for d in wire_from(link, "server") for h, b in plain_handshake(d) if h.msg_type == 2
    )
    # The server answers renegotiation_info (RFC 5746 §3.6) and EMS (RFC 7627 §5.2).
    sh = ServerHello.decode(server_hello)
    assert find_extension(sh.extensions, RenegotiationInfo) == RenegotiationInfo(b"")
    assert find_extension(sh.extensions, ExtendedMasterSecret) is not None


@pytest.mark.req("EXT-3")
@pytest.mark.parametrize("mode", ["psk", "rpk", "x509"])
def test_no_client_hello_of_any_mode_offers_truncated_hmac(mode: str) -> None:
    """EXT-3 (RFC 6066 §7): truncated_hmac is never offered with an AEAD suite; the
    public-key modes build their offer on a branch of their own, and a server ignores an
    unknown extension, so only the ClientHellos themselves show it (both, with the cookie's)."""
    link = {"psk": make_link, "rpk": rpk_link, "x509": x509_link}[mode]()
    link.handshake()
    assert established(link)
    hellos = [
        ClientHello.decode(body)
        for datagram in wire_from(link, "client")
        for header, body in plain_handshake(datagram)
        if header.msg_type == HandshakeType.client_hello
    ]
    assert len(hellos) == 2  # without and with the cookie (RFC 6347 §4.2.1)
    for hello in hellos:
        types = {
            e.ext_type if isinstance(e, UnknownExtension) else e.TYPE for e in hello.extensions
        }
        assert 4 not in types


@pytest.mark.req("PSK-2")
@pytest.mark.parametrize(
    ("identity", "key"),
    [
        (b"\xff\xfe\x00\x80 not utf-8 \x00", KEY),
        (bytes(range(256)) * 4 + b"tail", bytes(range(100))),  # 1028-byte identity
        (b"\x00", b"\x01"),
    ],
)
def test_opaque_identities_and_long_keys(identity: bytes, key: bytes) -> None:
    link = make_link(
        client={"psk_identity": identity, "psk": key},
        server={"psk_store": {identity: key, IDENTITY: KEY}},
    )
    link.handshake()
    assert established(link)
    assert events_of(link, "server", HandshakeComplete)[0].psk_identity == identity
    assert link.server_conn is not None and link.server_conn.psk_identity == identity
    exchange_data(link)


@pytest.mark.req("PSK-2")
def test_psk_lookup_callback_compares_exactly() -> None:
    asked: list[bytes] = []

    def lookup(identity: bytes) -> bytes | None:
        asked.append(identity)
        return {b"abc": KEY}.get(identity)

    good = make_link(client={"psk_identity": b"abc"}, server={"psk_lookup": lookup})
    good.handshake()
    assert established(good)
    bad = make_link(client={"psk_identity": b"abc "}, server={"psk_lookup": lookup})
    bad.handshake()
    assert bad.client.state is ConnectionState.CLOSED
    assert asked == [b"abc", b"abc "]


def drive(endpoint: ServerEndpoint, clients: dict[str, DtlsConnection], now: float) -> None:
    """Deliver everything queued between several clients and one endpoint, interleaved."""
    moved = True
    while moved:
        moved = False
        for addr_name, client in clients.items():
            for data in client.datagrams_to_send(now):
                endpoint.receive_datagram(data, (addr_name, 5684), now)
                moved = True
        for data, (addr_name, _) in endpoint.datagrams_to_send(now):
            clients[addr_name].receive_datagram(data, now)
            moved = True


@pytest.mark.req("HS-2", "PSK-2")
def test_one_endpoint_serves_several_clients_interleaved() -> None:
    keys = {b"dev%d" % i: bytes([i + 1]) * 16 for i in range(5)}
    endpoint = ServerEndpoint(ServerConfig(psk_store=keys))
    clients = {
        f"10.0.0.{i}": DtlsConnection(ClientConfig(psk_identity=identity, psk=keys[identity]))
        for i, identity in enumerate(keys)
    }
    for client in clients.values():
        client.connect(0.0)  # every ClientHello is out before any answer comes back
    drive(endpoint, clients, 0.0)
    assert {a for a, _ in endpoint.connections} == set(clients)
    for name, client in clients.items():
        assert client.state is ConnectionState.ESTABLISHED
        client.send(name.encode())
    drive(endpoint, clients, 0.0)
    received: dict[str, bytes] = {}
    while (item := endpoint.next_event()) is not None:
        (addr_name, _), event = item
        if isinstance(event, DataReceived):
            received[addr_name] = event.data
            endpoint.send((addr_name, 5684), event.data.upper())
        elif isinstance(event, HandshakeComplete):
            assert event.psk_identity == b"dev" + addr_name[-1:].encode()
    assert received == {name: name.encode() for name in clients}
    drive(endpoint, clients, 0.0)
    for name, client in clients.items():
        assert drain(client)[-1] == DataReceived(name.upper().encode())


@pytest.mark.req("REC-3")
def test_bad_records_between_good_ones_are_dropped_and_counted() -> None:
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    good = record_layer(server_conn).seal(ContentType.application_data, b"good", 1)
    forged = bytearray(record_layer(server_conn).seal(ContentType.application_data, b"evil", 1))
    forged[-1] ^= 1  # bad tag
    garbage = [
        b"",
        b"\x17",
        b"\x17\xfe\xfd\x00\x01" + bytes(8),  # truncated header-and-length
        good[:-3],  # truncated record
        bytes(forged),
        b"\x63" + good[1:],  # unknown content type
        good[:3] + b"\x00\x07" + good[5:],  # unknown epoch
        b"\x17\xfe\xff" + good[3:],  # wrong version
    ]
    before = link.client.discards.total()
    for junk in garbage:
        link.client.receive_datagram(junk, link.now)
    link.client.receive_datagram(good, link.now)
    link.client.receive_datagram(good, link.now)  # replayed
    assert link.client.state is ConnectionState.ESTABLISHED
    discards = link.client.discards
    assert discards.total() - before == len(garbage) - 1 + 1  # b"" carries no record; +replay
    for reason in (
        DiscardReason.BAD_TAG,
        DiscardReason.BAD_LENGTH,
        DiscardReason.UNKNOWN_EPOCH,
        DiscardReason.BAD_VERSION,
        DiscardReason.UNKNOWN_CONTENT_TYPE,
        DiscardReason.REPLAYED,
    ):
        assert discards[reason] >= 1, reason
    link.step()
    assert events_of(link, "client", DataReceived) == [DataReceived(b"good")]
    # Same on the server side, through the endpoint; the association keeps working.
    for junk in garbage:
        link.server.receive_datagram(junk, CLIENT_ADDR, link.now)
    assert link.server_conn is server_conn
    exchange_data_after_noise(link)


def exchange_data_after_noise(link: MemoryLink) -> None:
    link.client.send(b"still here")
    link.step()
    assert events_of(link, "server", DataReceived)[-1] == DataReceived(b"still here")
    link.server.send(CLIENT_ADDR, b"me too")
    link.step()
    assert events_of(link, "client", DataReceived)[-1] == DataReceived(b"me too")
