"""Handshake reliability over a lossy in-memory link with a fake clock (RFC 6347 §4.2.4).

Every datagram of a clean run is dropped in turn, duplicated, or held back; seeded mixes of
loss, duplication and reordering all complete; the retransmission timer doubles from its
initial value up to its cap (RFC 6347 §4.2.4.1; RFC 7925 §11 for the constrained 9 s start);
the handshake deadline ends in a timeout; a peer's repeated flight makes us resend ours.
"""

from __future__ import annotations

import itertools

import pytest

from iotdtls.config import CONSTRAINED_RETRANSMIT, RFC6347_RETRANSMIT, RetransmitPolicy
from iotdtls.connection import ConnectionState
from iotdtls.errors import HandshakeTimeout
from iotdtls.events import ConnectionClosed, DataReceived
from tests.memory_link import (
    CLIENT_ADDR,
    Direction,
    Fate,
    MemoryLink,
    deliver_all,
    drop_exactly,
    established,
    events_of,
    make_link,
    only_idle_timer,
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
