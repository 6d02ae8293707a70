"""Heartbeats (RFC 6520, EXT-5), in memory and over asyncio: negotiation with both modes,
requests and responses, one request in flight, malformed, unsolicited, unauthenticated and
refused heartbeats dropped without reply, the keep-alive in both roles, and a dead peer
reported as `PeerUnresponsive` after the retransmissions of RFC 6347 §4.2.4.1."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iotdtls import aio
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import AlertDescription, ConfigError, LocalProtocolError, PeerUnresponsive
from iotdtls.events import AlertReceived, ConnectionClosed, HeartbeatAnswered
from iotdtls.heartbeat import HeartbeatDrop, Heartbeats, TimerOutcome
from iotdtls.messages import (
    ClientHello,
    HandshakeType,
    Heartbeat,
    HeartbeatMode,
    ServerHello,
    find_extension,
)
from iotdtls.record import MAX_PLAINTEXT_LENGTH, ContentType, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    MemoryLink,
    established,
    events_of,
    handshake_record,
    make_link,
    next_send_seq,
    plain_handshake,
    record_layer,
    records,
    wire_from,
)

ALLOWED, NOT_ALLOWED = HeartbeatMode.peer_allowed_to_send, HeartbeatMode.peer_not_allowed_to_send
PADDING = bytes(16)


def hb_link(client: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
            **kwargs: Any) -> MemoryLink:
    link = make_link(
        client={"heartbeat": True, **(client or {})},
        server={"heartbeat": True, **(server or {})},
        **kwargs,
    )
    link.handshake()
    assert established(link)
    return link


def heartbeat_records(link: MemoryLink, side: Direction) -> list[tuple[int, int]]:
    """(epoch, protected length) of every heartbeat record `side` sent."""
    return [
        (h.epoch, len(f))
        for d in wire_from(link, side)
        for h, f in records(d)
        if h.content_type == ContentType.heartbeat
    ]


def server_of(link: MemoryLink) -> DtlsConnection:
    conn = link.server_conn
    assert conn is not None
    return conn


def hello_extension(link: MemoryLink, side: Direction) -> Heartbeat | None:
    msg_type = HandshakeType.client_hello if side == "client" else HandshakeType.server_hello
    body = next(b for d in wire_from(link, side) for h, b in plain_handshake(d)
                if h.msg_type == msg_type)
    decode = ClientHello.decode if side == "client" else ServerHello.decode
    return find_extension(decode(body).extensions, Heartbeat)


# -- negotiation ----------------------------------------------------------------------------------


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("client", "server", "client_may_send", "server_may_send"),
    [
        ({}, {}, True, True),
        ({"answer_heartbeats": False}, {}, True, False),
        ({}, {"answer_heartbeats": False}, False, True),
        ({}, {"heartbeat": False}, False, False),
        ({"heartbeat": False}, {}, False, False),
    ],
    ids=["both", "client-refuses", "server-refuses", "server-off", "client-off"],
)
def test_negotiation_honours_both_modes(
    client: dict[str, Any], server: dict[str, Any], client_may_send: bool, server_may_send: bool
) -> None:
    link = hb_link(client, server)
    both = client.get("heartbeat", True) and server.get("heartbeat", True)
    assert link.client.heartbeats_negotiated is server_of(link).heartbeats_negotiated is both
    assert link.client.heartbeat_requests_accepted is client_may_send
    assert server_of(link).heartbeat_requests_accepted is server_may_send
    # The modes on the wire: "peer_allowed_to_send" says "you may send me requests".
    if client.get("heartbeat", True):
        mode = NOT_ALLOWED if client.get("answer_heartbeats") is False else ALLOWED
        assert hello_extension(link, "client") == Heartbeat(mode)
    expected = None
    if both:
        expected = Heartbeat(NOT_ALLOWED if server.get("answer_heartbeats") is False else ALLOWED)
    assert hello_extension(link, "server") == expected
    senders = (
        (lambda: link.client.send_heartbeat(link.now), client_may_send),
        (lambda: link.server.send_heartbeat(CLIENT_ADDR, link.now), server_may_send),
    )
    for send, may in senders:
        if may:
            send()
        else:
            with pytest.raises(LocalProtocolError, match="heartbeats were not negotiated"):
                send()
    while link.step():
        pass
    assert len(events_of(link, "client", HeartbeatAnswered)) == int(client_may_send)
    assert len(events_of(link, "server", HeartbeatAnswered)) == int(server_may_send)


# -- requests and responses ----------------------------------------------------------------------


@pytest.mark.req("EXT-5")
def test_request_and_response() -> None:
    link = hb_link()
    link.now += 2.0
    link.client.send_heartbeat(link.now)
    assert link.client.heartbeat_in_flight
    with pytest.raises(LocalProtocolError, match="already in flight"):
        link.client.send_heartbeat(link.now)  # RFC 6520 §3: one at a time
    link.step()
    (answered,) = events_of(link, "client", HeartbeatAnswered)
    assert answered.elapsed == 0.0  # the fake clock did not move
    assert not link.client.heartbeat_in_flight
    # 3 + 16 payload + 16 padding, protected (RFC 6520 §4), in the association's epoch.
    assert heartbeat_records(link, "client") == [(1, 35 + 16)]
    assert heartbeat_records(link, "server") == [(1, 35 + 16)]
    assert link.client.get_timer() is None  # answered: no retransmission pending


@pytest.mark.req("EXT-5")
def test_requests_are_retransmitted_on_the_handshake_timer() -> None:
    link = hb_link(client={"handshake_timeout": 100.0})
    cut = {"on": True}

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        return "drop" if cut["on"] and direction == "server" and index > 3 else "deliver"

    link.fate = fate
    start = link.now
    link.client.send_heartbeat(start)
    link.run(until=start + 6.5, stop=lambda lk: lk.now >= start + 6.5)
    # Sent at 0, then again at 1, 3 (1 + 2) and 7 s: the doubling timer of RFC 6347 §4.2.4.1.
    assert len(heartbeat_records(link, "client")) == 3
    cut["on"] = False
    link.run(until=start + 8.0, stop=lambda lk: bool(events_of(lk, "client", HeartbeatAnswered)))
    (answered,) = events_of(link, "client", HeartbeatAnswered)
    assert answered.elapsed == pytest.approx(7.0)


def forged(link: MemoryLink, message: bytes, epoch: int = 1) -> bytes:
    """A heartbeat record the server authenticates: sealed under the client's keys (epoch 0:
    a plaintext record, as anyone can make one)."""
    layer = record_layer(link.client) if epoch else RecordLayer()
    return layer.seal(ContentType.heartbeat, message, epoch)


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("message", "drop"),
    [
        # RFC 6520 §4: payload_length beyond the record (Heartbleed) ...
        (b"\x01\x40\x00" + b"abc" + PADDING, HeartbeatDrop.MALFORMED),
        (b"\x01\x00\x04" + b"abc" + PADDING, HeartbeatDrop.MALFORMED),
        # ... padding under 16 bytes, an unknown type, a response nobody asked for.
        (b"\x01\x00\x03" + b"abc" + bytes(15), HeartbeatDrop.MALFORMED),
        (b"\x07\x00\x03" + b"abc" + PADDING, HeartbeatDrop.MALFORMED),
        (b"\x02\x00\x03" + b"abc" + PADDING, HeartbeatDrop.UNEXPECTED_RESPONSE),
        (b"\x01\x00", HeartbeatDrop.MALFORMED),
    ],
    ids=["heartbleed", "one-over", "short-padding", "unknown-type", "unsolicited", "truncated"],
)
def test_bad_heartbeats_are_dropped_without_reply(message: bytes, drop: HeartbeatDrop) -> None:
    link = hb_link()
    server = server_of(link)
    before = len(wire_from(link, "server"))
    for _ in range(2):  # each one counted
        link.server.receive_datagram(forged(link, message), CLIENT_ADDR, link.now)
        link.step()
    assert len(wire_from(link, "server")) == before  # not a byte in answer
    assert server.discards[drop] == 2
    assert server.state is ConnectionState.ESTABLISHED


@pytest.mark.req("EXT-5")
def test_a_response_with_another_payload_is_dropped() -> None:
    link = hb_link()
    link.client.send_heartbeat(link.now)
    link.client.datagrams_to_send(link.now)  # the request is lost
    for _ in range(2):  # each one counted
        wrong = record_layer(server_of(link)).seal(
            ContentType.heartbeat, b"\x02\x00\x10" + bytes(16) + PADDING, 1
        )
        link.client.receive_datagram(wrong, link.now)
    assert link.client.discards[HeartbeatDrop.UNEXPECTED_RESPONSE] == 2
    assert link.client.heartbeat_in_flight
    assert link.client.next_event() is None


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("settings", "epoch", "drop"),
    [
        ({}, 0, None),  # unauthenticated: never parsed (RFC 6520 §3: only the current epoch)
        ({"answer_heartbeats": False}, 1, HeartbeatDrop.REQUEST_NOT_ALLOWED),  # RFC 6520 §2
        ({"heartbeat": False}, 1, HeartbeatDrop.NOT_NEGOTIATED),
    ],
    ids=["epoch-0", "not-allowed", "not-negotiated"],
)
def test_requests_are_answered_only_when_authentic_and_allowed(
    settings: dict[str, Any], epoch: int, drop: HeartbeatDrop | None
) -> None:
    link = hb_link(server=settings)
    server = server_of(link)
    request = b"\x01\x00\x03abc" + PADDING
    before = len(wire_from(link, "server"))
    for _ in range(2):  # each one counted
        link.server.receive_datagram(forged(link, request, epoch), CLIENT_ADDR, link.now)
        link.step()
    assert len(wire_from(link, "server")) == before
    if drop is not None:
        assert server.discards[drop] == 2
    # The same request, authentic and allowed, is answered: the drops above are the rules'.
    if not settings:
        link.server.receive_datagram(forged(link, request), CLIENT_ADDR, link.now)
        link.step()
        assert len(wire_from(link, "server")) == before + 1


def answers_to(link: MemoryLink, request_records: list[bytes]) -> list[bytes]:
    """The server's datagrams in answer to one datagram of `request_records`; the client has
    taken every record of them."""
    before = len(wire_from(link, "server"))
    taken = link.client.discards[HeartbeatDrop.UNEXPECTED_RESPONSE]
    link.server.receive_datagram(b"".join(request_records), CLIENT_ADDR, link.now)
    link.step()
    answers = wire_from(link, "server")[before:]
    count = sum(len(records(d)) for d in answers)
    # Each one authenticated by the client (past its replay window) and parsed: a response
    # to a request the client never sent.
    assert link.client.discards[HeartbeatDrop.UNEXPECTED_RESPONSE] == taken + count
    return answers


def request_record(link: MemoryLink, payload: bytes = b"") -> bytes:
    return forged(link, b"\x01" + len(payload).to_bytes(2, "big") + payload + PADDING)


@pytest.mark.req("EXT-5")
def test_the_answers_to_one_datagram_of_requests_leave_packed_to_the_mtu() -> None:
    """Probe CH: one datagram of N requests was answered by N datagrams (30 at 1440 bytes):
    no more bytes, but N times the datagrams. RFC 6520 §4 asks for a response to each; they
    now leave packed as a flight's records are, in datagrams of at most `mtu` bytes, their
    record numbers in order."""
    link = hb_link()
    mtu = server_of(link).config.mtu
    answers = answers_to(link, [request_record(link) for _ in range(30)])
    assert mtu == 1232
    assert [len(d) for d in answers] == [25 * 48, 5 * 48]  # 48 bytes each: 25 fit the mtu
    numbers = [h.sequence_number for d in answers for h, _ in records(d)]
    assert len(numbers) == 30 and numbers == sorted(numbers)
    assert {h.content_type for d in answers for h, _ in records(d)} == {ContentType.heartbeat}
    assert server_of(link).state is ConnectionState.ESTABLISHED


@pytest.mark.req("EXT-5")
def test_each_datagram_of_requests_has_answers_of_its_own() -> None:
    """Two datagrams received before the server sends: each one's answers leave in their
    own datagram (they never join what answered the one before), and a response too large
    to join the datagram before it, one probing the path MTU (§5.1), leaves alone."""
    link = hb_link()
    mtu = server_of(link).config.mtu
    # The client's connection, which (unlike a ServerEndpoint) holds its answers until asked.
    layer = record_layer(server_of(link))
    before = len(wire_from(link, "client"))
    for _ in range(2):
        requests = [layer.seal(ContentType.heartbeat, b"\x01\x00\x00" + PADDING, 1) for _ in "ab"]
        link.client.receive_datagram(b"".join(requests), link.now)
    link.step()
    assert [len(d) for d in wire_from(link, "client")[before:]] == [96, 96]
    assert server_of(link).discards[HeartbeatDrop.UNEXPECTED_RESPONSE] == 4
    beats = link.client._heartbeats
    assert beats is not None and beats.answers is None  # sent: the connection keeps none
    probe = request_record(link, bytes(mtu - 48 - 40))  # its response: 40 bytes short of mtu
    answers = answers_to(link, [request_record(link), probe, request_record(link)])
    assert [len(d) for d in answers] == [48, mtu - 40, 48]
    beyond = request_record(link, bytes(mtu))  # a response past our mtu still goes (§5.1)
    assert [len(d) for d in answers_to(link, [beyond, request_record(link)])] == [mtu + 48, 48]


@pytest.mark.req("EXT-5")
def test_answers_fill_a_datagram_to_the_mtu_exactly() -> None:
    """The room is inclusive: a response that brings the datagram to exactly `mtu` bytes
    joins it; one byte more leaves on its own."""
    link = hb_link()
    mtu = server_of(link).config.mtu
    filling = request_record(link, bytes(mtu - 2 * 48))  # its response: mtu - 48 bytes
    assert [len(d) for d in answers_to(link, [request_record(link), filling])] == [mtu]
    over = request_record(link, bytes(mtu - 2 * 48 + 1))
    assert [len(d) for d in answers_to(link, [request_record(link), over])] == [48, mtu - 47]


@pytest.mark.req("EXT-5")
def test_answers_pack_to_an_mtu_beyond_one_full_record() -> None:
    """Without max_fragment_length the room is the `mtu` alone, even one larger than a full
    record and its overhead (2^14 + 29 bytes): only a peer that asked for small records
    caps the datagram at one of them."""
    link = hb_link(server={"mtu": 20000})
    requests = [request_record(link, bytes(6000)) for _ in range(3)]
    answers = answers_to(link, requests)
    assert [len(d) for d in answers] == [3 * 6048]
    assert MAX_PLAINTEXT_LENGTH + 29 < 3 * 6048


@pytest.mark.req("EXT-5")
def test_a_response_joins_only_the_last_datagram_queued() -> None:
    """Records leave in the order of their sequence numbers: a response after another record
    queued in between (here the client's no_renegotiation to a HelloRequest between two
    requests, RFC 5746 §4.2) starts a datagram after it, never joining the one before."""
    link = hb_link()
    layer = record_layer(server_of(link))
    request = b"\x01\x00\x00" + PADDING
    hello_request = handshake_record(
        layer, HandshakeType.hello_request, next_send_seq(server_of(link)), b"", 1
    )
    datagram = b"".join(
        [layer.seal(ContentType.heartbeat, request, 1), hello_request,
         layer.seal(ContentType.heartbeat, request, 1)]
    )
    before = len(wire_from(link, "client"))
    link.client.receive_datagram(datagram, link.now)
    link.step()
    answers = wire_from(link, "client")[before:]
    kinds = [[h.content_type for h, _ in records(d)] for d in answers]
    assert kinds == [[ContentType.heartbeat], [ContentType.alert], [ContentType.heartbeat]]
    numbers = [h.sequence_number for d in answers for h, _ in records(d)]
    assert numbers == sorted(numbers)
    assert server_of(link).discards[HeartbeatDrop.UNEXPECTED_RESPONSE] == 2
    refused = AlertReceived(AlertDescription.no_renegotiation)
    assert events_of(link, "server", AlertReceived) == [refused]


@pytest.mark.req("EXT-5")
def test_answers_to_a_peer_that_asked_for_small_records_fit_one_of_them() -> None:
    """RFC 6066 §4: a peer that asked for 512-byte records gets datagrams of at most one full
    record of them (512 + the 29 bytes of a record's overhead), as a flight's are."""
    link = hb_link(client={"max_fragment_length": 512})
    answers = answers_to(link, [request_record(link) for _ in range(12)])
    assert [len(d) for d in answers] == [11 * 48, 48]  # 528 <= 541 < 576


@pytest.mark.req("EXT-5")
def test_heartbeats_during_the_handshake_are_dropped() -> None:
    link = make_link(client={"heartbeat": True}, server={"heartbeat": True})
    link.client.connect(link.now)
    link.step()
    link.client.datagrams_to_send(link.now)  # the ClientHello with the cookie: not sent
    plain = RecordLayer().seal(ContentType.heartbeat, b"\x01\x00\x00" + PADDING, 0)
    link.client.receive_datagram(plain, link.now)
    assert link.client.discards[HeartbeatDrop.DURING_HANDSHAKE] == 1
    assert link.client.datagrams_to_send(link.now) == []


# -- keep-alive ----------------------------------------------------------------------------------


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize("side", ["client", "server"])
def test_keepalive_after_silence(side: Direction) -> None:
    link = hb_link(**{side: {"keepalive_interval": 5.0}})  # type: ignore[arg-type]
    start = link.now
    link.run(until=start + 12.0, stop=lambda lk: lk.now >= start + 12.0)
    assert len(events_of(link, side, HeartbeatAnswered)) == 2  # at +5 and +10 s
    assert len(heartbeat_records(link, side)) == 2
    assert established(link)


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("client", "server", "why"),
    [
        ({}, {"heartbeat": False, "keepalive_interval": None},
         "the server did not agree to heartbeats (RFC 6520)"),
        ({}, {"answer_heartbeats": False},
         "the server accepts no heartbeat requests (peer_not_allowed_to_send, RFC 6520)"),
        ({"answer_heartbeats": False}, {}, None),
        ({}, {}, None),
    ],
    ids=["not-negotiated", "not-answered", "client-answers-none", "agreed"],
)
def test_a_client_whose_keepalive_cannot_work_warns_once(
    caplog: pytest.LogCaptureFixture, client: dict[str, Any], server: dict[str, Any],
    why: str | None,
) -> None:
    """keepalive_interval with a server that left heartbeats out of its hello or refused our
    requests (RFC 6520 §2) sends nothing: a warning says so once, at the handshake's end. A
    server, whose clients may well not do heartbeats, says nothing of a client that refuses
    its requests (no flood of warnings); nobody says anything when it works."""
    caplog.set_level(logging.WARNING, "iotdtls")
    link = make_link(client={"heartbeat": True, "keepalive_interval": 5.0, **client},
                     server={"heartbeat": True, "keepalive_interval": 5.0, **server})
    link.handshake()
    assert established(link)
    link.run(until=link.now + 6.0, stop=lambda lk: False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ([] if why is None else [
        f"{why}: no keep-alive heartbeat will go on this association"])


@pytest.mark.req("EXT-5")
def test_traffic_postpones_the_keepalive() -> None:
    link = hb_link(client={"keepalive_interval": 5.0})
    for _ in range(4):
        link.now += 3.0
        link.client.handle_timer(link.now)
        link.client.send(b"tick")
        link.server.send(CLIENT_ADDR, b"tock")
        link.step()
    assert heartbeat_records(link, "client") == []


@pytest.mark.req("EXT-5")
def test_data_sent_without_a_clock_does_not_bring_the_keepalive_forward() -> None:
    link = hb_link(server={"keepalive_interval": 5.0})
    link.now = start = 100.0
    link.client.send(b"up")
    link.server.send(CLIENT_ADDR, b"down", link.now)
    link.step()
    link.server.send(CLIENT_ADDR, b"no time given")  # collected with now=0
    link.run(until=start + 4.0, stop=lambda lk: lk.now >= start + 4.0)
    assert heartbeat_records(link, "server") == []


@pytest.mark.req("EXT-5")
def test_a_client_that_only_receives_still_sends_keepalives() -> None:
    """Outbound silence counts too: a NAT binding needs our datagrams (RFC 6520 §5.2)."""
    link = hb_link(client={"keepalive_interval": 5.0})
    for _ in range(3):
        link.now += 2.0
        link.client.handle_timer(link.now)
        link.server.send(CLIENT_ADDR, b"push")
        link.step()
    assert len(heartbeat_records(link, "client")) == 1  # due at +5 s although data came in


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_silent_peer_is_reported_unresponsive(side: Direction) -> None:
    settings = {"keepalive_interval": 5.0, "handshake_timeout": 20.0}
    link = hb_link(**{side: settings})  # type: ignore[arg-type]
    other = "server" if side == "client" else "client"
    done = link.sent[other]

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        return "drop" if direction == other and index > done else "deliver"

    link.fate = fate
    start = link.now
    link.run(until=start + 60.0, stop=lambda lk: bool(events_of(lk, side, ConnectionClosed)))
    (closed,) = events_of(link, side, ConnectionClosed)
    assert isinstance(closed.error, PeerUnresponsive)
    assert "did not answer heartbeats for 20 s" in str(closed.error)
    # First request at +5 s, retransmitted at +6, +8, +12, +20; given up at +25 s.
    assert link.now == pytest.approx(start + 25.0)
    assert len(heartbeat_records(link, side)) == 5
    if side == "server":
        assert link.server.connections == {}


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keepalive_interval": 5.0}, "keepalive_interval needs heartbeat=True"),
        ({"heartbeat": True, "keepalive_interval": 0.5}, "at least 1 s"),
    ],
)
def test_keepalive_configuration_errors(settings: dict[str, Any], message: str) -> None:
    for make in (
        lambda: ClientConfig(psk_identity=IDENTITY, psk=KEY, **settings),
        lambda: ServerConfig(psk_store={IDENTITY: KEY}, **settings),
    ):
        with pytest.raises(ConfigError, match=message):
            make()


# -- asyncio -------------------------------------------------------------------------------------


@pytest.mark.req("EXT-5")
def test_asyncio_heartbeats_both_ways() -> None:
    async def main() -> tuple[bool, bool]:
        results: asyncio.Queue[bool] = asyncio.Queue()

        async def handler(session: aio.ServerSession) -> None:
            await results.put(await session.heartbeat(5.0))
            async for _ in session:
                pass

        server = await aio.serve(
            handler, "127.0.0.1", 0, ServerConfig(psk_store={IDENTITY: KEY}, heartbeat=True)
        )
        config = ClientConfig(psk_identity=IDENTITY, psk=KEY, heartbeat=True)
        try:
            async with aio.connect(*server.address, config) as conn:
                ours = await conn.heartbeat(5.0)
                theirs = await asyncio.wait_for(results.get(), 5.0)
        finally:
            await server.close()
        return ours, theirs

    assert asyncio.run(main()) == (True, True)


@pytest.mark.req("EXT-5")
def test_asyncio_heartbeat_to_a_peer_without_them_is_refused() -> None:
    async def main() -> None:
        async def handler(session: aio.ServerSession) -> None:
            async for _ in session:
                pass

        server = await aio.serve(handler, "127.0.0.1", 0, ServerConfig(psk_store={IDENTITY: KEY}))
        config = ClientConfig(psk_identity=IDENTITY, psk=KEY, heartbeat=True)
        try:
            async with aio.connect(*server.address, config) as conn:
                with pytest.raises(LocalProtocolError):
                    await conn.heartbeat(1.0)
        finally:
            await server.close()

    asyncio.run(main())


@pytest.mark.req("EXT-5")
def test_heartbeat_state_before_the_handshake_and_after_giving_up() -> None:
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, heartbeat=True, handshake_timeout=20.0)
    beats = Heartbeats(config)
    assert repr(beats) == "<Heartbeats negotiated=False in_flight=False>"
    assert beats.get_timer() is None
    with pytest.raises(LocalProtocolError, match="not negotiated"):
        beats.send_request(0.0)
    beats.start(ALLOWED, 100.0)
    assert repr(beats) == "<Heartbeats negotiated=True in_flight=False>"
    beats.send_request(100.0)
    assert beats.in_flight
    assert beats.on_timer(120.0) is TimerOutcome.PEER_GONE  # unanswered for handshake_timeout
    assert not beats.in_flight
    assert repr(beats) == "<Heartbeats negotiated=True in_flight=False>"
    assert beats.get_timer() is None  # no keep-alive configured, nothing pending
