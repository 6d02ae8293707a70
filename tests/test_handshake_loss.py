"""Handshake reliability over a lossy in-memory link with a fake clock (RFC 6347 §4.2.4).

Every datagram of a clean run is dropped in turn, duplicated, or held back; seeded mixes of
loss, duplication and reordering all complete; the retransmission timer doubles from its
initial value up to its cap (RFC 6347 §4.2.4.1; RFC 7925 §11 for the constrained 9 s start);
the handshake deadline ends in a timeout; a peer's repeated flight makes us resend ours, and,
after our fatal alert ended the handshake, the alert again (RFC 6347 §4.2.7).
"""

from __future__ import annotations

import itertools

import pytest

import iotdtls.connection
from iotdtls.config import CONSTRAINED_RETRANSMIT, RFC6347_RETRANSMIT, RetransmitPolicy
from iotdtls.connection import ALERT_REPEATS, RECENT_HANDSHAKE_RECORDS, ConnectionState
from iotdtls.endpoint import GateOutcome
from iotdtls.errors import AlertDescription, AlertReceived, AlertSent, HandshakeTimeout
from iotdtls.events import ConnectionClosed, DataReceived
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import DTLS_1_2, Alert, ClientKeyExchangePsk, HandshakeType
from iotdtls.record import MAX_SEQUENCE_NUMBER, ContentType, RecordHeader
from tests.memory_link import (
    CLIENT_ADDR,
    Direction,
    Fate,
    FateFn,
    LegacyClient,
    MemoryLink,
    deliver_all,
    drop_exactly,
    established,
    events_of,
    handshake_record,
    injecting_server,
    make_link,
    only_idle_timer,
    plain_handshake,
    record_layer,
    records,
    seeded,
    wire_from,
)


def clean_counts(cookie: bool) -> dict[Direction, int]:
    link = make_link(cookie=cookie)
    link.handshake()
    assert established(link)
    return {"client": len(wire_from(link, "client")), "server": len(wire_from(link, "server"))}


def assert_usable(link: MemoryLink) -> None:
    """Both ends completed and carry data both ways."""
    assert established(link), (link.client_events, link.server_events)
    link.client.send(b"up")
    link.server.send(CLIENT_ADDR, b"down")
    link.fate = deliver_all
    link.step()
    link.step()
    assert events_of(link, "server", DataReceived)[-1] == DataReceived(b"up")
    assert events_of(link, "client", DataReceived)[-1] == DataReceived(b"down")


def single_fates(cookie: bool) -> list[tuple[bool, Direction, int]]:
    counts = clean_counts(cookie)
    return [(cookie, d, i) for d in ("client", "server") for i in range(1, counts[d] + 1)]


ALL_SINGLE = single_fates(True) + single_fates(False)


@pytest.mark.req("HS-4")
@pytest.mark.parametrize(("cookie", "direction", "index"), ALL_SINGLE)
def test_each_datagram_dropped_once(cookie: bool, direction: Direction, index: int) -> None:
    link = make_link(drop_exactly(direction, index), cookie=cookie)
    link.handshake()
    assert_usable(link)
    assert link.now <= 3.0  # recovered by the first retransmission


@pytest.mark.req("HS-4")
@pytest.mark.parametrize(("cookie", "direction", "index"), ALL_SINGLE)
def test_each_datagram_held_back(cookie: bool, direction: Direction, index: int) -> None:
    def fate(d: Direction, i: int, data: bytes) -> Fate | bytes:
        return "hold" if (d, i) == (direction, index) else "deliver"

    link = make_link(fate, cookie=cookie)
    link.handshake()
    assert_usable(link)


@pytest.mark.req("HS-4")
@pytest.mark.parametrize("cookie", [True, False])
def test_every_datagram_duplicated(cookie: bool) -> None:
    link = make_link(lambda d, i, data: "duplicate", cookie=cookie)
    link.handshake()
    assert established(link)
    # Each datagram is sent at most twice: a duplicate is either a replay (dropped by the
    # record layer) or answered once, and the chain of answers ends at the final flight.
    assert len(link.wire) <= 2 * sum(clean_counts(cookie).values())
    assert only_idle_timer(link)
    assert_usable(link)


@pytest.mark.req("HS-4")
@pytest.mark.parametrize("seed", range(1, 31))
def test_seeded_loss_duplication_reordering(seed: int) -> None:
    link = make_link(seeded(seed, 0.2, 0.2, 0.2))
    link.handshake(until=120)
    assert_usable(link)


def client_send_times(policy: RetransmitPolicy, deadline: float) -> tuple[list[float], MemoryLink]:
    silent_server = make_link(
        lambda d, i, data: "drop" if d == "server" else "deliver",
        client={"retransmit": policy, "handshake_timeout": deadline},
    )
    silent_server.handshake(until=deadline + 100)
    return [t for d, t, _ in silent_server.wire if d == "client"], silent_server


@pytest.mark.req("HS-4")
def test_retransmission_doubles_up_to_the_cap() -> None:
    times, link = client_send_times(RFC6347_RETRANSMIT, 300.0)
    assert times == [0, 1, 3, 7, 15, 31, 63, 123, 183, 243]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    assert intervals == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert link.client.state is ConnectionState.CLOSED
    assert isinstance(link.client.error, HandshakeTimeout)
    assert events_of(link, "client", ConnectionClosed) == [ConnectionClosed(link.client.error)]
    assert link.now == 300.0
    assert link.server.connections == {}  # stateless: the server kept nothing


@pytest.mark.req("HS-4")
def test_constrained_retransmission_starts_at_nine_seconds() -> None:
    times, _ = client_send_times(CONSTRAINED_RETRANSMIT, 300.0)
    assert times == [0, 9, 27, 63, 123, 183, 243]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    assert intervals == [9, 18, 36, 60, 60, 60]


@pytest.mark.req("HS-4")
def test_configured_timer_is_used() -> None:
    times, _ = client_send_times(RetransmitPolicy(0.5, 2.0), 10.0)
    assert times == [0, 0.5, 1.5, 3.5, 5.5, 7.5, 9.5]


@pytest.mark.req("HS-4")
def test_handshake_deadline_times_out_both_sides() -> None:
    # The client goes silent after its ClientHello with cookie: the server flow retransmits
    # flight 4 and gives up at its own deadline.
    link = make_link(
        lambda d, i, data: "drop" if d == "client" and i >= 3 else "deliver",
        client={"handshake_timeout": 20.0},
        server={"handshake_timeout": 30.0},
    )
    link.handshake(until=100)
    assert isinstance(link.client.error, HandshakeTimeout)
    closed = events_of(link, "server", ConnectionClosed)
    assert len(closed) == 1 and isinstance(closed[0].error, HandshakeTimeout)
    assert link.server.connections == {}
    server_times = [t for d, t, _ in link.wire if d == "server"]
    assert server_times[1:] == [0, 1, 3, 7, 15]  # flight 4 and its retransmissions
    assert link.now == 30.0


@pytest.mark.req("HS-4")
def test_lost_final_flight_is_resent_when_the_finished_flight_comes_again() -> None:
    link = make_link(drop_exactly("server", 3))
    link.handshake()
    assert_usable(link)
    server = [(t, len(data)) for d, t, data in link.wire if d == "server"]
    # HelloVerifyRequest, flight 4, final flight (lost), final flight again at t=1: resent
    # because the client's Finished flight (its timer at 1 s) came again, not by a timer.
    assert [t for t, _ in server] == [0, 0, 0, 1, 1]  # the last one: application data
    assert server[2][1] == server[3][1]
    server_conn = link.server_conn
    assert server_conn is not None and server_conn.retransmissions == 1
    assert link.client.retransmissions == 0


@pytest.mark.req("HS-4")
def test_repeated_previous_flight_triggers_immediate_resend() -> None:
    # The client's flight 5 is lost. Its own timer is slow (5 s); the server resends flight 4
    # at 1 s and the client answers that at once with flight 5 instead of waiting.
    link = make_link(
        drop_exactly("client", 3),
        client={"retransmit": RetransmitPolicy(5.0, 60.0)},
        server={"retransmit": RetransmitPolicy(1.0, 60.0)},
    )
    link.handshake()
    assert established(link)
    client_times = [t for d, t, _ in link.wire if d == "client"]
    assert client_times == [0, 0, 0, 1]
    assert link.client.retransmissions == 1
    assert link.now == 1.0


@pytest.mark.req("HS-4")
def test_old_flights_after_completion_cause_no_loop() -> None:
    link = make_link()
    link.handshake()
    old_client = wire_from(link, "client")
    old_server = wire_from(link, "server")
    before = len(link.wire)
    # Replay both sides' whole handshake at each other several times over.
    for _ in range(5):
        for data in old_client:
            link.server.receive_datagram(data, CLIENT_ADDR, link.now)
        for data in old_server:
            link.client.receive_datagram(data, link.now)
        while link.step():
            pass
    assert established(link)
    assert len(link.wire) == before  # exact copies are replays: not even an answer
    assert only_idle_timer(link)
    assert_usable(link)


@pytest.mark.req("HS-4", "HS-2")
@pytest.mark.parametrize("cookie", [True, False])
def test_late_copy_of_client_hello_keeps_the_association(cookie: bool) -> None:
    # A ClientHello retransmitted during the handshake may arrive after it completed; it must
    # not replace the association it created (RFC 6347 §4.2.8 is about a *new* handshake).
    link = make_link(cookie=cookie)
    link.handshake()
    server_conn = link.server_conn
    hello_with_cookie = wire_from(link, "client")[1 if cookie else 0]
    late = bytearray(hello_with_cookie)
    late[10] ^= 0x40  # a retransmission: same message, a later record sequence number
    link.server.receive_datagram(bytes(late), CLIENT_ADDR, link.now)
    assert link.server_conn is server_conn
    assert link.server.datagrams_to_send(link.now) == []
    assert_usable(link)
    # A new ClientHello (new random) with a valid cookie does start a new association.
    fresh = make_link(cookie=cookie)
    fresh.server = link.server
    fresh.handshake()
    assert established(fresh)
    assert link.server_conn is not server_conn


def renumbered(datagram: bytes, first: int) -> bytes:
    """`datagram` with its records renumbered from `first` on: a forged copy that no replay
    check can tell from a retransmission (epoch 0 is unauthenticated)."""
    out = b""
    for n, (header, fragment) in enumerate(records(datagram)):
        out += header._replace(sequence_number=first + n).encode() + fragment
    return out


@pytest.mark.req("HS-4")
@pytest.mark.parametrize("victim_side", ["server", "client"])
def test_forged_copies_of_the_previous_flight_trigger_rate_limited_resends(
    victim_side: Direction,
) -> None:
    """A thousand copies of the peer's previous flight with fresh record numbers, one every
    2 ms: each could mean "my last flight was lost" (RFC 6347 §4.2.4), but we resend at most
    once per quarter of the initial timer, so forgeries cannot make us an amplifier; each
    resend restarts our timer, so it adds no resend of its own while they come. The
    server waits for flight 5 (it resends flight 4 when flight 3 comes again), the client for
    flight 6 (it resends flight 5 when flight 4 comes again)."""
    peer: Direction = "client" if victim_side == "server" else "server"

    def hold_third(direction: Direction, index: int, data: bytes) -> Fate:
        return "drop" if direction == peer and index >= 3 else "deliver"

    link = make_link(hold_third)
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent[peer] >= 3)
    victim = link.server_conn if victim_side == "server" else link.client
    assert victim is not None and victim.state is ConnectionState.HANDSHAKING
    previous = wire_from(link, peer)[1]  # flight 3 (with cookie) or flight 4
    flight_size = len(wire_from(link, victim_side)[-1])
    before = len(wire_from(link, victim_side))

    def deliver(datagram: bytes) -> None:
        if victim_side == "server":
            link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)
        else:
            link.client.receive_datagram(datagram, link.now)
        link.step()

    for n in range(1000):
        link.now = 0.002 * (n + 1)
        deliver(renumbered(previous, 1000 + 10 * n))
        victim.handle_timer(link.now)
        link.step()
    resent = wire_from(link, victim_side)[before:]
    # Triggered at 0.002 s, then at most every 0.25 s: 8 times in 2 s; each restarts the 1 s
    # timer, which therefore never expires.
    assert victim.retransmissions == 8, victim.retransmissions
    assert [len(d) for d in resent] == [flight_size] * 8
    # An exact copy (same record numbers) is a replay: no answer at all.
    link.now += 0.5
    for _ in range(10):
        deliver(renumbered(previous, 1000 + 10 * 999))
    assert len(wire_from(link, victim_side)) == before + 8


# -- a lost fatal alert (RFC 6347 §4.2.7) ------------------------------------------------------


def alerts_sent(link: MemoryLink, side: Direction) -> list[tuple[float, int, int]]:
    """(time, record sequence number, description) of each epoch-0 alert record `side` sent."""
    return [
        (t, header.sequence_number, Alert.decode(fragment).description)
        for d, t, data in link.wire
        if d == side
        for header, fragment in records(data)
        if header.content_type == ContentType.alert and header.epoch == 0
    ]


def drop_alerts(side: Direction, count: int) -> FateFn:
    """Drop the first `count` datagrams of `side` that hold an alert."""
    dropped = 0

    def fate(d: Direction, i: int, data: bytes) -> Fate:
        nonlocal dropped
        holds_alert = any(h.content_type == ContentType.alert for h, _ in records(data))
        if d == side and holds_alert and dropped < count:
            dropped += 1
            return "drop"
        return "deliver"

    return fate


def failing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's flight 4 carries a ClientKeyExchange: the client ends the handshake with
    unexpected_message (RFC 5246 §7.4)."""
    extra = [(HandshakeType.client_key_exchange, ClientKeyExchangePsk(b"x").encode())]
    monkeypatch.setattr(iotdtls.connection, "ServerHandshake", injecting_server(extra))


@pytest.mark.req("HS-4", "ERR-1")
def test_the_server_sends_its_lost_alert_again_when_the_client_repeats_its_flight() -> None:
    """A wrong key: the server's decrypt_error (PSK-4) is lost. The association is gone from
    the endpoint, but the client's flight 5, repeated at 1 s, gets the alert again in a new
    record instead of being dropped as no ClientHello; the client learns of the failure then,
    not at its handshake timeout (60 s)."""
    link = make_link(drop_alerts("server", 1), client={"psk": bytes(16)})
    link.handshake(until=100)
    decrypt_error = AlertDescription.decrypt_error
    sent = alerts_sent(link, "server")
    assert [(t, a) for t, _, a in sent] == [(0.0, decrypt_error), (1.0, decrypt_error)]
    assert sent[1][1] > sent[0][1]  # a new record, not a copy a replay check would drop
    assert isinstance(link.client.error, AlertReceived)
    assert link.client.error.alert is decrypt_error
    assert link.now == 1.0
    assert link.server.gate[GateOutcome.ALERT_REPEATED] == 1
    assert link.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 0
    assert link.server.connections == {}


@pytest.mark.req("HS-4", "ERR-1", "RES-3")
def test_a_repeated_client_hello_of_a_failed_handshake_gets_the_alert_not_a_new_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client without the extended master secret is refused on its ClientHello with a
    cookie, and the alert is lost: its ClientHello, repeated at 1 s, made a new association
    that failed again, two failures counted and logged for one attempt (probe BU F4: gnutls-cli
    with %NO_SESSION_HASH). It now gets the alert again, as a repeated later flight does; a
    copy too soon after is dropped; a new ClientHello (another random) from the address still
    takes the gate and completes."""
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    link = make_link(drop_alerts("server", 1))
    link.handshake(until=100)
    failure = AlertDescription.handshake_failure
    sent = alerts_sent(link, "server")
    assert [(t, a) for t, _, a in sent] == [(0.0, failure), (1.0, failure)]
    assert sent[1][1] > sent[0][1]  # a new record
    assert isinstance(link.client.error, AlertReceived)
    assert link.now == 1.0
    closed = [e for e in link.server_events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1 and isinstance(closed[0].error, AlertSent)
    assert link.server.gate[GateOutcome.COOKIE_ACCEPTED] == 1
    assert link.server.gate[GateOutcome.ALERT_REPEATED] == 1
    assert link.server.connections == {}
    hello = wire_from(link, "client")[-1]  # the ClientHello with the cookie, repeated
    assert [h.msg_type for h, _ in plain_handshake(hello)] == [HandshakeType.client_hello]
    link.server.receive_datagram(hello, CLIENT_ADDR, 1.1)  # too soon after the last alert
    assert link.server.datagrams_to_send(1.1) == []
    assert link.server.gate[GateOutcome.FAILED_HELLO_DROPPED] == 1
    assert link.server.connections == {} and link.server.next_event() is None
    # Each copy counts (M18: `_repeats_failed_hello` 15, 18 set the counts to 1): one more
    # too soon, then one a quarter of the initial interval after the last alert gets it.
    link.server.receive_datagram(hello, CLIENT_ADDR, 1.2)
    assert link.server.datagrams_to_send(1.2) == []
    assert link.server.gate[GateOutcome.FAILED_HELLO_DROPPED] == 2
    link.server.receive_datagram(hello, CLIENT_ADDR, 1.5)
    assert len(link.server.datagrams_to_send(1.5)) == 1
    assert link.server.gate[GateOutcome.ALERT_REPEATED] == 2
    assert link.server.connections == {} and link.server.next_event() is None
    monkeypatch.undo()
    again = MemoryLink(link.client_config, link.server_config, endpoint=link.server, now=2.0)
    again.handshake()
    assert established(again)
    assert link.server.gate[GateOutcome.COOKIE_ACCEPTED] == 2


@pytest.mark.req("HS-4", "ERR-1")
def test_the_client_sends_its_lost_alert_again_when_the_server_repeats_its_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client refuses flight 4 (unexpected_message) and its alert is lost: the server's
    flight 4, repeated at 1 s, gets the alert again from the closed client, and the server
    ends then instead of at its handshake timeout."""
    failing_client(monkeypatch)
    link = make_link(drop_alerts("client", 1))
    link.handshake(until=100)
    unexpected = AlertDescription.unexpected_message
    sent = alerts_sent(link, "client")
    assert [(t, a) for t, _, a in sent] == [(0.0, unexpected), (1.0, unexpected)]
    assert sent[1][1] > sent[0][1]
    assert isinstance(link.client.error, AlertSent)
    closed = events_of(link, "server", ConnectionClosed)
    assert len(closed) == 1 and isinstance(closed[0].error, AlertReceived)
    assert closed[0].error.alert is unexpected
    assert link.now == 1.0


@pytest.mark.req("HS-4")
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_failed_handshake_sends_its_alert_again_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch, side: Direction
) -> None:
    """Every alert lost: the peer repeats its flight at 1, 3, 7, 15 and 31 s until its
    handshake timeout; the first `ALERT_REPEATS` (3) repeats get the alert again, the later
    ones nothing (the server counts them as no ClientHello)."""
    if side == "client":
        failing_client(monkeypatch)
        link = make_link(drop_alerts("client", 99))
    else:
        link = make_link(drop_alerts("server", 99), client={"psk": bytes(16)})
    link.handshake(until=100)
    sent = alerts_sent(link, side)
    assert ALERT_REPEATS == 3
    assert [t for t, _, _ in sent] == [0.0, 1.0, 3.0, 7.0]
    assert len({seq for _, seq, _ in sent}) == 4
    assert link.now == 60.0  # the peer's handshake timeout
    if side == "server":
        assert isinstance(link.client.error, HandshakeTimeout)
        assert link.server.gate[GateOutcome.ALERT_REPEATED] == 3
        assert link.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 2  # at 15 and 31 s
    else:
        closed = events_of(link, "server", ConnectionClosed)
        assert len(closed) == 1 and isinstance(closed[0].error, HandshakeTimeout)


def failed_client_with_its_alerts_lost(monkeypatch: pytest.MonkeyPatch) -> MemoryLink:
    """A link whose client failed the handshake on its own alert (`failing_client`), every
    alert of the client's lost; run until 0.5 s."""
    failing_client(monkeypatch)
    link = make_link(drop_alerts("client", 99))
    link.client.connect(0.0)
    link.run(until=0.5)
    assert isinstance(link.client.error, AlertSent)
    return link


@pytest.mark.req("HS-4")
def test_a_closed_client_repeats_its_alert_only_for_the_peers_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most one alert per datagram and one per quarter of the initial retransmission
    interval, only for a handshake or ChangeCipherSpec record at least as large as the alert:
    application data, alerts and a burst of copies get nothing more; an established
    association that fails keeps no alert to repeat."""
    link = failed_client_with_its_alerts_lost(monkeypatch)
    client = link.client
    assert len(client.alert_repeats) == ALERT_REPEATS
    flight_4 = wire_from(link, "server")[1]
    before = len(wire_from(link, "client"))
    # Too soon after the failure (the rest of a flight that failed behind its first datagram).
    client.receive_datagram(flight_4, 0.2)
    assert client.datagrams_to_send(0.2) == []
    # Anything but a handshake or ChangeCipherSpec record, or smaller than the alert: nothing.
    header, fragment = records(flight_4)[0]
    for content_type in (ContentType.application_data, ContentType.alert):
        other = header._replace(content_type=content_type).encode() + fragment
        client.receive_datagram(other, 1.0)
        assert client.datagrams_to_send(1.0) == []
    ccs = RecordHeader(ContentType.change_cipher_spec, DTLS_1_2, 0, 90, 1).encode() + b"\1"
    assert len(ccs) < len(client.alert_repeats[0])  # 14 bytes, the alert 15: no amplifier
    client.receive_datagram(ccs, 1.0)
    assert client.datagrams_to_send(1.0) == []
    # A burst of the peer's flight: one alert, then none within 0.25 s.
    for now in (1.0, 1.0, 1.1, 1.24):
        client.receive_datagram(flight_4, now)
    assert len(client.datagrams_to_send(1.24)) == 1
    client.receive_datagram(ccs + ccs, 1.25)  # two records, one datagram: one alert
    assert len(client.datagrams_to_send(1.25)) == 1
    assert len(client.alert_repeats) == ALERT_REPEATS - 2
    assert len(wire_from(link, "client")) == before


def flight_record(content_type: int, epoch: int, size: int) -> bytes:
    """A record of the peer's flight as the framing reads it: `size` bytes of fragment."""
    header = RecordHeader(content_type, DTLS_1_2, epoch, 50 + epoch, size)
    return header.encode() + bytes(size)


@pytest.mark.req("HS-4")
def test_a_datagram_as_large_as_the_alert_gets_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """No more bytes out than came in: a ChangeCipherSpec record with a 2-byte fragment (15
    bytes, the size of the epoch-0 alert) is large enough."""
    link = failed_client_with_its_alerts_lost(monkeypatch)
    client = link.client
    datagram = flight_record(ContentType.change_cipher_spec, 0, 2)
    assert len(datagram) == len(client.alert_repeats[0]) == 15
    alert = client.alert_repeats[0]
    client.receive_datagram(datagram, 1.0)
    assert client.datagrams_to_send(1.0) == [alert]


@pytest.mark.req("HS-4")
def test_the_alert_is_kept_again_only_as_often_as_record_numbers_are_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copies of the alert are sealed when the handshake fails, each in its own record:
    with two numbers left in the epoch, the alert takes one and a single copy is kept (RFC
    6347 §4.1: the numbers do not wrap); the failure is still the alert's, not the epoch's."""
    failing_client(monkeypatch)
    link = make_link(drop_alerts("client", 99), cookie=False)
    link.client.connect(0.0)  # its ClientHello, the one record before the failure
    record_layer(link.client).set_next_sequence_number(0, MAX_SEQUENCE_NUMBER - 2)
    link.run(until=0.5)
    client = link.client
    assert isinstance(client.error, AlertSent)
    assert client.error.alert is AlertDescription.unexpected_message
    (copy,) = client.alert_repeats
    assert RecordHeader.decode(copy).sequence_number == MAX_SEQUENCE_NUMBER - 1


@pytest.mark.req("HS-4")
def test_the_endpoint_repeats_its_alert_for_a_flight_record_of_epoch_0_or_1() -> None:
    """What the endpoint reads of a datagram from an address whose handshake failed on its
    alert, the keys gone: a handshake or ChangeCipherSpec record of epoch 0 or 1 (the client's
    flight 5 ends in its epoch-1 Finished; epoch 2 is no first handshake's), in a datagram as
    large as the alert (15 bytes in epoch 0) or larger, a quarter of the initial
    retransmission interval (1 s) after the failure and after the last alert."""
    link = make_link(drop_alerts("server", 99), client={"psk": bytes(16)})
    link.client.connect(0.0)
    link.run(until=0.5)
    assert link.server.connections == {}
    assert len(alerts_sent(link, "server")) == 1

    def alerts_for(datagram: bytes, now: float) -> list[int]:
        link.server.receive_datagram(datagram, CLIENT_ADDR, now)
        sent = link.server.datagrams_to_send(now)
        return [len(data) for data, address in sent if address == CLIENT_ADDR]

    assert alerts_for(flight_record(ContentType.handshake, 1, 40), 0.2) == []  # failed at 0
    assert alerts_for(flight_record(ContentType.handshake, 2, 40), 1.0) == []
    assert alerts_for(flight_record(ContentType.handshake, 1, 40), 1.0) == [15]
    # The next no sooner than a quarter of the initial retransmission interval (1 s) after.
    assert alerts_for(flight_record(ContentType.handshake, 1, 40), 1.2) == []
    assert alerts_for(flight_record(ContentType.change_cipher_spec, 0, 2), 1.25) == [15]
    assert link.server.gate[GateOutcome.ALERT_REPEATED] == 2
    assert link.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 3


@pytest.mark.req("HS-4")
def test_an_established_association_that_fails_keeps_no_alert_to_repeat() -> None:
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    # A handshake message after the handshake, authenticated: unexpected_message (HS-5).
    late = handshake_record(record_layer(server_conn), HandshakeType.server_hello_done, 9, b"", 1)
    link.client.receive_datagram(late, link.now)
    assert isinstance(link.client.error, AlertSent)
    assert len(link.client.datagrams_to_send(link.now)) == 1
    assert link.client.alert_repeats == ()
    link.client.receive_datagram(wire_from(link, "server")[1], link.now + 1)
    assert link.client.datagrams_to_send(link.now + 1) == []


def stale_record(sequence_number: int) -> bytes:
    """A forged epoch-0 handshake record (unauthenticated: anyone can send one) numbered
    `sequence_number`, holding a message both sides have long passed (message_seq 0, and not
    the last of the peer's flight): a stale copy, which answers nothing."""
    payload = handshake_header(HandshakeType.client_key_exchange, 0, 4, 0, 4) + bytes(4)
    header = RecordHeader(ContentType.handshake, DTLS_1_2, 0, sequence_number, len(payload))
    return header.encode() + payload


@pytest.mark.req("HS-4", "REC-3")
@pytest.mark.parametrize("victim_side", ["server", "client"])
def test_one_forged_record_numbered_2_48_minus_1_leaves_repeats_answered(
    victim_side: Direction,
) -> None:
    """RFC 6347 §4.2.4 (WAITING, exit 2): a repeat of the peer's flight in a record not seen
    before says ours was lost, and ours goes again at once. Whether a record was seen was a
    high-water mark of the record numbers, which one forged epoch-0 record numbered 2^48 - 1
    raised for the rest of the handshake: no genuine repeat compared higher, none was
    answered, and the handshake waited for our own timer (5 s here, against the peer's 1 s).
    The server, its flight 4 lost, answers the client's repeated ClientHello; the client, its
    flight 5 lost, answers the server's repeated flight 4. The forged record rides behind the
    peer's flight here: in a datagram of its own it would be read the same."""
    peer: Direction = "client" if victim_side == "server" else "server"
    lost = 2 if victim_side == "server" else 3  # flight 4, or flight 5

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if (direction, index) == (victim_side, lost):
            return "drop"
        if (direction, index) == (peer, 2):  # the ClientHello with the cookie, or flight 4
            return data + stale_record(2**48 - 1)
        return "deliver"

    slow, fast = RetransmitPolicy(5.0, 60.0), RetransmitPolicy(1.0, 60.0)
    link = make_link(
        fate,
        client={"retransmit": slow if victim_side == "client" else fast},
        server={"retransmit": slow if victim_side == "server" else fast},
    )
    link.handshake()
    assert established(link)
    victim = link.server_conn if victim_side == "server" else link.client
    assert victim is not None and victim.retransmissions == 1
    assert link.now == 1.0


@pytest.mark.req("HS-4", "REC-3")
def test_a_record_seen_before_is_not_answered_and_few_record_numbers_are_kept() -> None:
    """What a repeat of the peer's flight must come in to be answered (RFC 6347 §4.2.4) is a
    record not seen before, among the last `RECENT_HANDSHAKE_RECORDS` the connection keeps: a
    copy of the ClientHello's own record, or a network duplicate of its repeat (the same
    record number, however late, past the rate limit), is no sign of loss; a thousand forged
    records numbered ever higher neither grow what is kept nor hide the genuine repeat."""
    link = make_link(lambda d, i, data: "drop" if d == "server" and i >= 2 else "deliver")
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.server_conn is not None)
    server = link.server_conn
    assert server is not None and server.state is ConnectionState.HANDSHAKING
    hello = wire_from(link, "client")[1]  # the ClientHello with the cookie, its flight 4 lost

    def resends_for(datagram: bytes, now: float) -> int:
        before = server.retransmissions
        link.server.receive_datagram(datagram, CLIENT_ADDR, now)
        sent = link.server.datagrams_to_send(now)
        assert bool(sent) == (server.retransmissions > before)
        return server.retransmissions - before

    assert resends_for(hello, 0.5) == 0  # the same record again
    for n in range(1000):
        assert resends_for(stale_record(2**40 + n), 0.6) == 0
    assert len(server._recent_handshake_records) == RECENT_HANDSHAKE_RECORDS
    repeat = renumbered(hello, 7)  # the client's timer: the same hello in a new record
    assert resends_for(repeat, 1.0) == 1
    assert resends_for(repeat, 2.0) == 0  # duplicated on the way
    assert server.state is ConnectionState.HANDSHAKING
