"""max_fragment_length (RFC 6066 §4, EXT-1), in memory: negotiation, every record both sides
send within the limit (handshake fragments included) and every datagram within one record,
the application's datagrams, records over the limit on receipt, and the limit over resumption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import iotdtls.connection
from iotdtls.config import ClientConfig, RetransmitPolicy
from iotdtls.connection import ConnectionState
from iotdtls.crypto import NullProtector
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    LocalProtocolError,
)
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.handshake.client import ClientHandshake
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import (
    HandshakeType,
    MaxFragmentLength,
    ServerHello,
    UnknownExtension,
    find_extension,
)
from iotdtls.record import RECORD_HEADER_LEN, ContentType, DiscardReason, RecordLayer
from iotdtls.sessions import SessionState
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    MemoryLink,
    drop_exactly,
    established,
    events_of,
    make_link,
    message_types,
    next_link,
    plain_handshake,
    record_layer,
    records,
    wire_from,
)
from tests.pubkey_support import rewrite, rpk_link, x509_link

LINKS: dict[str, Callable[..., MemoryLink]] = {"psk": make_link, "rpk": rpk_link, "x509": x509_link}
#: CCM_8: 8-byte explicit nonce and 8-byte tag per protected record.
PROTECTION = 16


def plaintext_lengths(datagram: bytes) -> list[int]:
    return [len(f) - (PROTECTION if h.epoch else 0) for h, f in records(datagram)]


def mfl_link(mode: str, limit: int, **kwargs: Any) -> MemoryLink:
    link = LINKS[mode](client={"max_fragment_length": limit}, **kwargs)
    link.handshake()
    assert established(link)
    return link


@pytest.mark.req("EXT-1", "HS-3")
@pytest.mark.parametrize("limit", [512, 1024])
@pytest.mark.parametrize("mode", LINKS)
def test_every_record_and_datagram_within_the_limit(mode: str, limit: int) -> None:
    link = mfl_link(mode, limit)
    for side in ("client", "server"):
        (done,) = events_of(link, side, HandshakeComplete)
        assert done.max_fragment_length == limit
    assert link.client.max_fragment_length == limit
    link.client.send(bytes(limit))  # the largest datagram the limit allows, both ways
    link.server.send(CLIENT_ADDR, b"\xff" * limit)
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(bytes(limit))]
    assert events_of(link, "client", DataReceived) == [DataReceived(b"\xff" * limit)]
    for side in ("client", "server"):
        datagrams = wire_from(link, side)  # type: ignore[arg-type]
        assert max(x for d in datagrams for x in plaintext_lengths(d)) <= limit
        assert max(map(len, datagrams)) <= limit + RECORD_HEADER_LEN + PROTECTION
    if mode == "x509" and limit == 512:
        # The certificate chain did not fit: the handshake was fragmented to the limit.
        fragments = [h for d in wire_from(link, "server") for h, _ in plain_handshake(d)]
        assert any(h.fragment_length < h.length for h in fragments)
        # And to the brim: the server's unprotected flight has a datagram of one whole record
        # of `limit` bytes, no more and no less (RFC 6066 §4, RFC 6347 §4.2.3).
        flight = [d for d in wire_from(link, "server") if plain_handshake(d)]
        assert max(map(len, flight)) == limit + RECORD_HEADER_LEN


@pytest.mark.req("EXT-1")
def test_a_datagram_over_the_limit_is_refused_locally() -> None:
    link = mfl_link("psk", 512)
    for send in (link.client.send, lambda data: link.server.send(CLIENT_ADDR, data)):
        with pytest.raises(LocalProtocolError, match=r"max_fragment_length .* 512 bytes"):
            send(bytes(513))
    assert link.client.datagrams_to_send(link.now) == []
    assert link.server.datagrams_to_send(link.now) == []


@pytest.mark.req("EXT-1", "REC-3")
def test_an_authentic_record_over_the_limit_ends_with_record_overflow() -> None:
    """RFC 6066 §4: a record over the negotiated length is a record_overflow; in DTLS only
    once it authenticated, which a record sealed under the client's keys does."""
    link = mfl_link("psk", 512)
    oversized = record_layer(link.client).seal(ContentType.application_data, bytes(513), 1)
    link.server.receive_datagram(oversized, CLIENT_ADDR, link.now)
    link.step()
    (mine,) = events_of(link, "server", ConnectionClosed)
    (theirs,) = events_of(link, "client", ConnectionClosed)
    assert isinstance(mine.error, AlertSent)
    assert mine.error.alert is AlertDescription.record_overflow
    assert mine.error.reason == (
        "a 513-byte record exceeds the negotiated max_fragment_length of 512 bytes"
    )
    assert isinstance(theirs.error, AlertReceived)
    assert events_of(link, "server", DataReceived) == []


@pytest.mark.req("EXT-1")
def test_a_record_of_the_limit_behind_the_finished_is_taken() -> None:
    """A record of exactly the limit is within it: the client's data of 512 bytes riding in
    the datagram of its Finished is read by the server still in its handshake (from the
    Finished on, established), not refused with record_overflow."""
    holder: list[MemoryLink] = []

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction == "client" and any(h.epoch for h, _ in records(data)):
            layer = record_layer(holder[0].client)
            return data + layer.seal(ContentType.application_data, b"\x07" * 512, 1)
        return "deliver"

    link = make_link(fate, client={"max_fragment_length": 512})
    holder.append(link)
    link.handshake()
    assert established(link)
    assert events_of(link, "server", DataReceived) == [DataReceived(b"\x07" * 512)]


@pytest.mark.req("EXT-1", "REC-3")
def test_an_unprotected_record_over_the_limit_is_dropped() -> None:
    """RFC 6347 §4.1.2.7 and RFC 6066 §4: no alert for what did not authenticate."""
    link = mfl_link("psk", 512)
    server = link.server_conn
    assert server is not None
    plain = RecordLayer().seal(ContentType.handshake, bytes(513), 0)
    link.server.receive_datagram(plain, CLIENT_ADDR, link.now)
    assert server.discards[DiscardReason.OVER_FRAGMENT_LIMIT] == 1
    link.client.send(b"still fine")
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(b"still fine")]


class PaddedClient(ClientHandshake):
    """A client whose ClientHello carries 450 bytes of RFC 7685 padding (extension 21): larger
    than a max_fragment_length of 512 (to install with monkeypatch on
    `iotdtls.connection.ClientHandshake`)."""

    def __init__(self, config: ClientConfig, session: SessionState | None = None) -> None:
        super().__init__(config, session)
        self._offered_extensions = (*self._offered_extensions, UnknownExtension(21, bytes(450)))


@pytest.mark.req("EXT-1", "HS-4")
def test_a_repeated_client_hello_over_the_limit_is_answered_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6347 §4.2.4: a peer's repeated flight says ours was lost, and ours goes again. The
    client cannot know the limit before the ServerHello (RFC 6066 §4), so it repeats the same
    ClientHello, larger than the 512 bytes the server took from it; the server dropped that
    record (over_fragment_limit) and the handshake waited for the server's own timer (5 s
    here). The limit applies to what the client sends once it could have the ServerHello:
    the repeat is answered at the client's first retransmission (1 s)."""
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", PaddedClient)
    link = make_link(
        drop_exactly("server", 2),  # flight 4 (1 is the HelloVerifyRequest)
        client={"max_fragment_length": 512, "retransmit": RetransmitPolicy(1.0, 60.0)},
        server={"retransmit": RetransmitPolicy(5.0, 60.0)},
    )
    link.handshake()
    assert established(link)
    server = link.server_conn
    assert server is not None
    assert (server.retransmissions, server.discards[DiscardReason.OVER_FRAGMENT_LIMIT]) == (1, 0)
    assert link.now == 1.0
    client_hello = [HandshakeType.client_hello]
    hellos = [d for d in wire_from(link, "client") if message_types([d]) == client_hello]
    assert len(hellos) == 3 and min(map(len, hellos)) - RECORD_HEADER_LEN > 512  # records


@pytest.mark.req("EXT-1", "REC-3")
def test_only_a_client_hello_passes_the_limit_unprotected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the limit is set, the records of epoch 0 over it are still dropped (RFC 6066 §4),
    but for a server's record that holds a ClientHello fragment and nothing else (it answers
    that repeat with its flight): any other message, the ClientHello with another message
    behind it in its record, and a ClientHello sent to a client (which never takes one)."""
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", PaddedClient)
    link = make_link(
        lambda d, i, data: "drop" if i > 2 else "deliver",  # from flight 5 on, both ways
        client={"max_fragment_length": 512},
    )
    link.handshake(until=0.5)  # each side has the other's hello; the server waits for flight 5
    server = link.server_conn
    assert server is not None and server.state is ConnectionState.HANDSHAKING
    assert server.max_fragment_length == link.client.max_fragment_length == 512
    ((header, hello),) = records(wire_from(link, "client")[1])  # the hello with the cookie
    assert header.epoch == 0 and len(hello) > 512
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=100)

    def message(msg_type: int, seq: int, size: int) -> bytes:
        return handshake_header(msg_type, seq, size, 0, size) + bytes(size)

    for receiver, payload, dropped, resent in [
        (server, hello, 0, 1),
        (server, message(HandshakeType.client_key_exchange, 2, 600), 1, 0),
        (server, hello + message(HandshakeType.client_key_exchange, 2, 10), 1, 0),
        (link.client, hello, 1, 0),
    ]:
        before = (receiver.discards[DiscardReason.OVER_FRAGMENT_LIMIT], receiver.retransmissions)
        datagram = forger.seal(ContentType.handshake, payload, 0)
        link.now += 1.0  # past the rate limit of early resends
        if receiver is server:
            link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)
        else:
            receiver.receive_datagram(datagram, link.now)
        after = (receiver.discards[DiscardReason.OVER_FRAGMENT_LIMIT], receiver.retransmissions)
        assert (after[0] - before[0], after[1] - before[1]) == (dropped, resent)
        assert receiver.state is ConnectionState.HANDSHAKING


def other_mfl(body: bytes) -> bytes:
    hello = ServerHello.decode(body)
    exts = tuple(
        MaxFragmentLength(2) if isinstance(e, MaxFragmentLength) else e for e in hello.extensions
    )
    return ServerHello(
        hello.server_version,
        hello.random,
        hello.session_id,
        hello.cipher_suite,
        hello.compression_method,
        exts,
    ).encode()


@pytest.mark.req("EXT-1", "ERR-1")
def test_client_refuses_another_length_than_it_asked_for() -> None:
    link = make_link(
        rewrite("server", HandshakeType.server_hello, other_mfl),
        client={"max_fragment_length": 512},
    )
    link.handshake()
    (closed,) = events_of(link, "client", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.illegal_parameter


@pytest.mark.req("EXT-1")
def test_server_answers_the_requested_length_and_nothing_unasked() -> None:
    asked = mfl_link("psk", 2048)
    not_asked = make_link()
    not_asked.handshake()
    for link, expected in ((asked, MaxFragmentLength(3)), (not_asked, None)):
        (hello,) = [
            ServerHello.decode(b)
            for d in wire_from(link, "server")
            for h, b in plain_handshake(d)
            if h.msg_type == HandshakeType.server_hello
        ]
        assert find_extension(hello.extensions, MaxFragmentLength) == expected


@pytest.mark.req("EXT-1", "RES-1")
def test_the_limit_binds_the_resumed_session() -> None:
    """RFC 6066 §4: "The negotiated length applies for the duration of the session including
    session resumptions"."""
    first = mfl_link("x509", 512)
    assert first.client.session is not None and first.client.session.max_fragment_length == 1
    second = next_link(first)
    second.handshake()
    assert established(second) and second.client.resumed
    (done,) = events_of(second, "server", HandshakeComplete)
    assert done.max_fragment_length == 512
    with pytest.raises(LocalProtocolError):
        second.client.send(bytes(513))


@pytest.mark.req("EXT-1")
@pytest.mark.parametrize("bad", [0, 256, 1000, 8192, "512"])
def test_only_the_four_lengths_are_configurable(bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_fragment_length must be 512, 1024, 2048 or 4096"):
        ClientConfig(psk_identity=IDENTITY, psk=KEY, max_fragment_length=bad)
