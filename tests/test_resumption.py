"""Session resumption (profile "Session Resumption"; RFC 5246 §7.3, §7.4.1.2; RFC 7627 §5.3), in
memory: the abbreviated handshake in every mode and from a new address (RES-1, RES-2), the
cookie exchange on resumption (HS-1), fallback to a full handshake for unknown, expired,
evicted or no longer acceptable sessions, sessions only with the extended master secret
(RES-3), sessions as bytes, and resumption through loss."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iotdtls.connection
import iotdtls.handshake.client
import iotdtls.handshake.server
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.connection import ConnectionState, DropReason, DtlsConnection
from iotdtls.credentials import own_credential_digest, psk_digest
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    HandshakeTimeout,
)
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.identity import (
    CertificateIdentity,
    PeerIdentity,
    PskIdentity,
    RawPublicKeyIdentity,
    UnauthenticatedPeer,
)
from iotdtls.messages import (
    ClientHello,
    ExtendedMasterSecret,
    Extension,
    ExtensionType,
    HandshakeType,
    ServerHello,
)
from iotdtls.messages.extensions import UnknownExtension
from iotdtls.record import ContentType, DiscardReason, split_datagram
from iotdtls.sessions import MemorySessionStore, SessionState
from tests import pki
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    MOVED_ADDR,
    Direction,
    FateFn,
    LegacyClient,
    MemoryLink,
    deliver_all,
    drain,
    drop_exactly,
    established,
    events_of,
    handshake_record,
    legacy_server,
    make_link,
    message_types,
    next_link,
    plain_handshake,
    record_layer,
    records,
    seeded,
    wire_from,
)
from tests.pubkey_support import (
    client_key,
    failure,
    rpk_link,
    server_key,
    stranger_key,
    x509_configs,
    x509_link,
    x509_pki,
)
from tests.test_negotiation import assert_link_failed

H = HandshakeType
LINKS: dict[str, Callable[..., MemoryLink]] = {"psk": make_link, "rpk": rpk_link, "x509": x509_link}


def full_handshake(make: Callable[..., MemoryLink] = make_link, **kwargs: Any) -> MemoryLink:
    link = make(**kwargs)
    link.handshake()
    assert established(link)
    return link


def client_hellos(link: MemoryLink) -> list[ClientHello]:
    return [
        ClientHello.decode(body)
        for d in wire_from(link, "client")
        for h, body in plain_handshake(d)
        if h.msg_type == H.client_hello
    ]


def server_hello(link: MemoryLink) -> ServerHello:
    (hello,) = [
        ServerHello.decode(body)
        for d in wire_from(link, "server")
        for h, body in plain_handshake(d)
        if h.msg_type == H.server_hello
    ]
    return hello


def completed(link: MemoryLink) -> tuple[HandshakeComplete, HandshakeComplete]:
    (client,) = events_of(link, "client", HandshakeComplete)
    (server,) = events_of(link, "server", HandshakeComplete)
    return client, server


def assert_resumed(link: MemoryLink, resumed: bool = True) -> None:
    assert established(link)
    client, server = completed(link)
    assert client.resumed is server.resumed is resumed
    assert link.client.resumed is resumed


# -- the abbreviated handshake -------------------------------------------------------------------


@pytest.mark.req("RES-1", "RES-2", "HS-1")
@pytest.mark.parametrize("mode", LINKS)
def test_abbreviated_handshake_from_a_new_address(mode: str) -> None:
    first = full_handshake(LINKS[mode])
    saved = first.client.session
    assert saved is not None and saved.mode is Mode(mode)
    # A device that restarted: the session comes back from its bytes.
    second = next_link(first, session=SessionState.from_bytes(saved.to_bytes()))
    second.handshake()
    assert_resumed(second)
    # The cookie exchange still runs (HS-1): both ClientHellos offer the session.
    assert message_types(wire_from(second, "client")) == [H.client_hello, H.client_hello]
    assert [h.session_id for h in client_hellos(second)] == [saved.session_id] * 2
    assert client_hellos(second)[1].cookie
    # One server flight: ServerHello (epoch 0), ChangeCipherSpec, Finished (epoch 1).
    _, flight = wire_from(second, "server")[:2]
    assert [(h.content_type, h.epoch) for h, _ in records(flight)] == [
        (ContentType.handshake, 0),
        (ContentType.change_cipher_spec, 0),
        (ContentType.handshake, 1),
    ]
    assert server_hello(second).session_id == saved.session_id
    # The peers are those the full handshake authenticated.
    assert [e.peer for e in completed(second)] == [e.peer for e in completed(first)]
    assert second.client.session is not None
    assert second.client.session.session_id == saved.session_id
    # One datagram fewer than the full handshake (half a round trip less) in every mode, and
    # no public-key operation: in the certificate modes, far fewer bytes too.
    resumed, full = (
        wire_from(link, "client") + wire_from(link, "server") for link in (second, first)
    )
    assert len(resumed) < len(full)
    if mode != "psk":
        assert sum(map(len, resumed)) < sum(map(len, full)) / 2
    second.client.send(b"resumed data")
    second.server.send(MOVED_ADDR, b"and back")
    second.step()
    assert events_of(second, "server", DataReceived) == [DataReceived(b"resumed data")]
    assert events_of(second, "client", DataReceived) == [DataReceived(b"and back")]
    # The first association, at the old address, is untouched.
    old = second.server.connections[CLIENT_ADDR]
    assert old.state is ConnectionState.ESTABLISHED and not old.resumed


@pytest.mark.req("RES-1", "HS-4")
@pytest.mark.parametrize("seed", range(1, 9))
def test_resumption_through_loss_duplication_and_reordering(seed: int) -> None:
    first = full_handshake()
    second = next_link(first, fate=seeded(seed, loss=0.25, dup=0.1, reorder=0.1))
    second.handshake()
    assert_resumed(second)
    assert second.client.session is not None


@pytest.mark.req("RES-1", "HS-4")
@pytest.mark.parametrize("lost", ["flight", "final"])
def test_lost_abbreviated_flights_are_retransmitted(lost: str) -> None:
    """The server's flight (ServerHello, CCS, Finished) lost: the client repeats its
    ClientHello; the client's last flight lost: the server's timer repeats its flight and the
    established client answers with its last flight again (RFC 6347 §4.2.4)."""
    first = full_handshake()
    direction: Direction = "server" if lost == "flight" else "client"
    second = next_link(first, fate=drop_exactly(direction, 2 if lost == "flight" else 3))
    second.handshake()
    assert_resumed(second)
    assert second.sent["client"] >= 4  # a ClientHello or the last flight went twice


def client_done_first(
    fate: FateFn, client_config: ClientConfig | None = None
) -> tuple[MemoryLink, DtlsConnection]:
    """A resumed handshake whose client completed (it has the server's Finished, RFC 5246
    §7.4) while its own ChangeCipherSpec and Finished (client datagram 3) were lost: the link
    and the server's association, still waiting for them."""
    first = full_handshake()
    second = next_link(first, fate=fate, client_config=client_config)
    second.client.connect(second.now)
    second.run(stop=lambda lk: lk.client.state is ConnectionState.ESTABLISHED)
    server = second.server_conn
    assert server is not None and server.state is ConnectionState.HANDSHAKING
    return second, server


def send_early(link: MemoryLink, messages: list[bytes]) -> list[bytes]:
    """The client's datagrams carrying `messages`, delivered to the server at once (what the
    server sends back is routed too, but not the client's answer)."""
    for message in messages:
        link.client.send(message)
    sent_before = len(link.wire)
    link.step()
    return [data for direction, _, data in link.wire[sent_before:] if direction == "client"]


def server_established(link: MemoryLink) -> bool:
    return link.server_conn is not None and link.server_conn.state is ConnectionState.ESTABLISHED


@pytest.mark.req("RES-1", "HS-5")
def test_data_that_overtakes_the_clients_lost_finished_is_delivered_once_in_order() -> None:
    """The resumed client sends at once; the server holds that data until the retransmitted
    Finished is verified (RFC 6347 §4.1), then delivers it in order; repeats are replays."""
    link, server = client_done_first(drop_exactly("client", 3))
    messages = [b"msg-%d" % n for n in range(5)]
    early = send_early(link, messages)
    assert len(early) == 5
    for datagram in early:  # duplicated on the way
        link.server.receive_datagram(datagram, link.address, link.now)
    assert server.state is ConnectionState.HANDSHAKING
    assert events_of(link, "server", DataReceived) == []
    link.run(stop=server_established)
    assert server.state is ConnectionState.ESTABLISHED
    assert [type(e) for e in link.server_events][-6:] == [HandshakeComplete] + [DataReceived] * 5
    for datagram in early:
        link.server.receive_datagram(datagram, link.address, link.now)
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(m) for m in messages]
    assert server.discards[DiscardReason.REPLAYED] == 10
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


@pytest.mark.req("RES-1", "HS-5")
def test_a_forged_record_among_held_data_is_dropped_as_any_bad_record() -> None:
    link, server = client_done_first(drop_exactly("client", 3))
    (genuine,) = send_early(link, [b"genuine"])
    header, body = split_datagram(genuine)[0][0]
    forged = header._replace(sequence_number=header.sequence_number + 1).encode()
    link.server.receive_datagram(forged + bytes(len(body)), link.address, link.now)
    link.run(stop=server_established)
    assert server.state is ConnectionState.ESTABLISHED
    assert events_of(link, "server", DataReceived) == [DataReceived(b"genuine")]
    assert server.discards[DiscardReason.BAD_TAG] == 1
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


@pytest.mark.req("RES-1", "HS-5")
@pytest.mark.parametrize("mtu", [None, 9000])
def test_data_held_before_the_finished_is_bounded(mtu: int | None) -> None:
    """At most EARLY_DATA_RECORDS records and EARLY_DATA_BYTES bytes are held; the rest are
    dropped and counted as before."""
    config = None if mtu is None else ClientConfig(psk_identity=IDENTITY, psk=KEY, mtu=mtu)
    link, server = client_done_first(drop_exactly("client", 3), client_config=config)
    size = link.client.max_send_size
    fits = min(
        iotdtls.connection.EARLY_DATA_RECORDS, iotdtls.connection.EARLY_DATA_BYTES // size
    )
    messages = [bytes([n]) * size for n in range(fits + 2)]
    send_early(link, messages)
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 2
    link.run(stop=server_established)
    assert events_of(link, "server", DataReceived) == [DataReceived(m) for m in messages[:fits]]


@pytest.mark.req("RES-1", "HS-5")
def test_held_data_may_fill_the_byte_bound_exactly() -> None:
    """EARLY_DATA_BYTES bytes are held, not one more."""
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, mtu=9000)
    link, server = client_done_first(drop_exactly("client", 3), client_config=config)
    half = iotdtls.connection.EARLY_DATA_BYTES // 2
    assert link.client.max_send_size >= half
    messages = [b"a" * half, b"b" * half, b"c"]
    send_early(link, messages)
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1
    link.run(stop=server_established)
    assert events_of(link, "server", DataReceived) == [DataReceived(m) for m in messages[:2]]


@pytest.mark.req("RES-1", "HS-5")
def test_held_data_is_dropped_and_counted_when_the_handshake_fails() -> None:
    """The client's Finished never arrives (its final flight and every repeat lost): the
    server's handshake times out and the held data goes, never delivered."""
    link, server = client_done_first(
        lambda d, i, data: "drop" if d == "client" and (i == 3 or i > 5) else "deliver"
    )
    held = iotdtls.connection.EARLY_DATA_RECORDS
    for datagram in send_early(link, [b"%d" % n for n in range(held + 1)]):
        link.server.receive_datagram(datagram, link.address, link.now)  # past the link's fate
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1  # the others held
    link.run(stop=lambda lk: server.closed)
    assert isinstance(server.error, HandshakeTimeout)
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1 + held
    assert events_of(link, "server", DataReceived) == []


def server_datagrams(link: MemoryLink) -> int:
    return len(wire_from(link, "server"))


def lost_last_flights(d: Direction, i: int, data: bytes) -> str:
    """The client's ChangeCipherSpec and Finished lost each time they are sent (each flight
    datagram from the third on that opens with its ChangeCipherSpec record)."""
    return "drop" if d == "client" and i >= 3 and data[0] == ContentType.change_cipher_spec else (
        "deliver"
    )


@pytest.mark.req("RES-1", "HS-4")
def test_data_past_a_lost_finished_brings_it_again_before_the_servers_timer() -> None:
    """RFC 6347 §4.2.4: the server's timer is the least it must do; the resumed client's data
    under the new keys shows that its ChangeCipherSpec and Finished were lost, so the server
    resends its flight at once, the client answers with its last flight, and the held data is
    delivered with no timer fired."""
    link, server = client_done_first(drop_exactly("client", 3))
    started, timer = link.now, link.server.get_timer()
    assert timer is not None and timer > started
    send_early(link, [b"reading 42"])
    link.run(stop=server_established)
    assert server.state is ConnectionState.ESTABLISHED
    assert link.now == started
    assert events_of(link, "server", DataReceived) == [DataReceived(b"reading 42")]
    assert server.retransmissions == 1
    assert link.client.retransmissions == 1


@pytest.mark.req("RES-1", "HS-4")
def test_data_past_a_lost_finished_resends_at_most_once_per_quarter_timer() -> None:
    """Many records of the client's data (its last flight lost every time) get one early resend
    of the server's flight, and another only a quarter of the initial timer later."""
    link, server = client_done_first(lost_last_flights)
    before = server_datagrams(link)
    flight = server_datagrams(link) - 1  # the cookie exchange's HelloVerifyRequest
    send_early(link, [b"%d" % n for n in range(6)])
    link.step()
    assert server_datagrams(link) == before + flight
    assert server.retransmissions == 1
    quarter = link.server_config.retransmit.initial / 4
    link.now += quarter * 0.99
    send_early(link, [b"too soon"])
    assert server_datagrams(link) == before + flight
    link.now += quarter * 0.01
    send_early(link, [b"in time"])
    assert server_datagrams(link) == before + 2 * flight
    assert server.retransmissions == 2
    assert server.state is ConnectionState.HANDSHAKING


@pytest.mark.req("HS-4")
def test_data_past_the_servers_lost_final_flight_brings_it_again_at_once() -> None:
    """The same in a full handshake, roles swapped: the server completes first (its last
    flight, RFC 5246 §7.3) and sends; its ChangeCipherSpec and Finished lost, the client holds
    the data, resends its flight at once and the server answers with its final flight."""
    link = make_link(drop_exactly("server", 3))
    link.client.connect(link.now)
    link.run(stop=server_established)
    assert link.client.state is ConnectionState.HANDSHAKING
    started = link.now
    link.server.send(link.address, b"pushed")
    link.run(stop=lambda lk: lk.client.state is ConnectionState.ESTABLISHED)
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.now == started
    assert events_of(link, "client", DataReceived) == [DataReceived(b"pushed")]
    assert link.client.retransmissions == 1


@pytest.mark.req("RES-1", "HS-5")
def test_a_client_that_closes_before_its_lost_finished_arrives_says_what_was_dropped() -> None:
    """Inherent to DTLS (nothing acknowledges the client's last flight): the resumed client
    sends and closes at once, its ChangeCipherSpec and Finished lost. The server cannot verify
    the data, drops it, and says so: the handshake failed on the peer's close_notify before its
    Finished arrived, with the held records dropped (and counted); the session stays."""
    link, server = client_done_first(drop_exactly("client", 3))
    link.client.send(b"reading 42")
    link.client.close()
    link.run(stop=lambda lk: server.closed)
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertReceived)
    assert closed.error.alert is AlertDescription.close_notify
    assert str(closed.error) == (
        "the peer closed the association (close_notify) (before its Finished arrived; "
        "1 held record of its data dropped)"
    )
    assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1
    assert events_of(link, "server", DataReceived) == []
    again = next_link(link, address=("203.0.113.9", 40001))
    again.handshake()
    assert_resumed(again)


@pytest.mark.req("HS-5")
def test_a_server_that_closes_before_its_lost_final_flight_arrives_is_named_so() -> None:
    """The same for a full handshake, roles swapped: the server sends the last flight, so data
    it sends before closing at once is dropped by a client that never got its Finished."""
    link = make_link(drop_exactly("server", 3))
    link.client.connect(link.now)
    link.run(stop=server_established)
    link.server.send(link.address, b"pushed")
    link.server.close(link.address)
    link.run(stop=lambda lk: lk.client.closed)
    error = link.client.error
    assert isinstance(error, AlertReceived)
    assert error.context == "before its Finished arrived; 1 held record of its data dropped"
    assert link.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1


def test_a_server_that_closes_before_its_lost_final_flight_sending_nothing_is_named_so() -> None:
    """No data held: the context says only that the Finished never arrived."""
    link = make_link(drop_exactly("server", 3))
    link.client.connect(link.now)
    link.run(stop=server_established)
    link.server.close(link.address)
    link.run(stop=lambda lk: lk.client.closed)
    error = link.client.error
    assert isinstance(error, AlertReceived)
    assert error.context == "before its Finished arrived"


def test_a_close_notify_in_the_clear_during_the_handshake_claims_no_lost_finished() -> None:
    """Only a close_notify under the new keys shows that the peer completed: one in epoch 0
    (anyone's) fails the handshake as before, with nothing added."""
    link = make_link()
    link.client.connect(link.now)
    link.step()
    link.client.close()
    link.run(stop=lambda lk: lk.server_conn is None or lk.server_conn.closed)
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert str(closed.error) == "the peer closed the association (close_notify)"
    # nor one in epoch 0 once we are under the new keys: the client's last flight lost, the
    # server (still in epoch 0) closes
    link = make_link(drop_exactly("client", 3))
    link.client.connect(link.now)
    link.run(stop=lambda lk: lk.sent["client"] >= 3)
    link.server.close(link.address)
    link.run(stop=lambda lk: lk.client.closed)
    assert isinstance(link.client.error, AlertReceived)
    assert link.client.error.context == ""


@pytest.mark.req("RES-1")
def test_the_session_ticket_extension_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that also offers an empty SessionTicket extension (RFC 5077 §3.2, as OpenSSL
    does): the profile leaves RFC 5077 out, so no ticket answer and no NewSessionTicket; the
    session_id resumes."""
    offer = iotdtls.handshake.client.client_offer

    def offer_with_ticket(config: ClientConfig) -> tuple[tuple[int, ...], tuple[Any, ...]]:
        suites, extensions = offer(config)
        return suites, (*extensions, UnknownExtension(ExtensionType.session_ticket))

    monkeypatch.setattr(iotdtls.handshake.client, "client_offer", offer_with_ticket)
    first = full_handshake()
    assert ExtensionType.session_ticket in {e.ext_type for e in client_hellos(first)[0].extensions}
    assert ExtensionType.session_ticket not in {e.ext_type for e in server_hello(first).extensions}
    assert H.new_session_ticket not in message_types(wire_from(first, "server"))
    second = next_link(first)
    second.handshake()
    assert_resumed(second)


# -- fallback to a full handshake ----------------------------------------------------------------


@pytest.mark.req("RES-1")
def test_unknown_session_gets_a_full_handshake() -> None:
    stranger = full_handshake().client.session  # a session of another server
    first = full_handshake()
    second = next_link(first, session=stranger)
    second.handshake()
    assert_resumed(second, False)
    assert stranger is not None
    assert client_hellos(second)[0].session_id == stranger.session_id
    new_id = server_hello(second).session_id
    assert len(new_id) == 32 and new_id != stranger.session_id
    assert H.server_hello_done in message_types(wire_from(second, "server"))
    assert second.client.session is not None and second.client.session.session_id == new_id


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(("later", "resumed"), [(59.0, True), (61.0, False)])
def test_sessions_live_for_the_configured_lifetime(later: float, resumed: bool) -> None:
    first = full_handshake(server={"session_lifetime": 60.0})
    second = next_link(first, later=later)
    second.handshake()
    assert_resumed(second, resumed)


@pytest.mark.req("RES-1")
def test_the_cache_is_bounded_least_recently_used_first() -> None:
    a = full_handshake(server={"session_cache_size": 2})
    b = next_link(a, session=None, address=("192.0.2.2", 1))
    b.handshake()
    resumed_a = next_link(a, address=("192.0.2.3", 1), later=20)  # a becomes most recent
    resumed_a.handshake()
    assert_resumed(resumed_a)
    c = next_link(a, session=None, address=("192.0.2.4", 1), later=30)
    c.handshake()  # a third session: b, the least recently used, makes room
    store = a.server.sessions
    assert isinstance(store, MemorySessionStore) and len(store) == 2
    again_a = next_link(a, address=("192.0.2.5", 1), later=40)
    again_a.handshake()
    assert_resumed(again_a)
    again_b = next_link(b, address=("192.0.2.6", 1), later=50)
    again_b.handshake()
    assert_resumed(again_b, False)


@pytest.mark.req("RES-1")
def test_memory_store_rules() -> None:
    store = MemorySessionStore(max_entries=2, lifetime=10.0)
    states = [
        SessionState(bytes([i]) * 32, 0xC0A8, Mode.PSK, bytes(48), PskIdentity(b"x"))
        for i in range(3)
    ]
    store.put(states[0], 0.0)
    store.put(states[1], 1.0)
    assert store.get(states[0].session_id, 5.0) is states[0]  # now the most recent
    store.put(states[2], 6.0)
    assert store.get(states[1].session_id, 6.0) is None  # evicted
    assert store.get(states[0].session_id, 9.9) is states[0]
    assert store.get(states[0].session_id, 10.0) is None  # expired: 10 s after its creation
    store.remove(states[2].session_id)
    assert len(store) == 0
    store.remove(states[2].session_id)  # an id the store does not hold: nothing to do
    store.put(states[1], 1000.0)  # the lifetime counts from the creation time given
    assert store.get(states[1].session_id, 1009.9) is states[1]
    assert store.get(states[1].session_id, 1010.0) is None
    for bad in ({"max_entries": 0}, {"lifetime": 0.0}):
        with pytest.raises(ConfigError):
            MemorySessionStore(**bad)
    assert MemorySessionStore(max_entries=1, lifetime=0.5).lifetime == 0.5  # any positive time


@pytest.mark.req("RES-1")
def test_no_cache_no_session() -> None:
    first = full_handshake(server={"session_cache_size": 0})
    assert server_hello(first).session_id == b""
    assert first.client.session is None and first.server.sessions is None


# -- RES-3: only sessions with the extended master secret ----------------------------------------


@pytest.mark.req("RES-3")
def test_sessions_without_extended_master_secret_are_never_resumable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_ems = {"require_extended_master_secret": False}
    legacy_server(monkeypatch)  # a server from before RFC 7627: no extension in its answer
    first = full_handshake(client=no_ems, server=no_ems)
    (done, _) = completed(first)
    assert done.extended_master_secret is False
    assert server_hello(first).session_id == b""  # RFC 5246 §7.4.1.3: not cached
    assert first.client.session is None
    assert first.server.sessions is not None and len(first.server.sessions) == 0  # type: ignore[arg-type]


@pytest.mark.req("RES-3")
@pytest.mark.parametrize("require", [True, False])
def test_server_aborts_a_resumption_without_extended_master_secret(
    monkeypatch: pytest.MonkeyPatch, require: bool
) -> None:
    """RFC 7627 §5.3: the session used the extension, the new ClientHello lacks it; whatever
    `require_extended_master_secret` says."""
    first = full_handshake(server={"require_extended_master_secret": require})
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    second = next_link(first)
    second.handshake()
    (closed,) = events_of(second, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.handshake_failure
    assert "extended master secret" in closed.error.reason


@pytest.mark.req("RES-3", "ERR-1")
@pytest.mark.parametrize("require", [True, False])
def test_client_aborts_a_resumption_without_extended_master_secret(
    monkeypatch: pytest.MonkeyPatch, require: bool
) -> None:
    """RFC 7627 §5.3: the session used the extension, the abbreviated ServerHello lacks it;
    the client aborts also when it accepts legacy servers in a full handshake."""
    first = full_handshake()
    real = iotdtls.handshake.server.session_answers

    def without_ems(*args: Any) -> tuple[Extension, ...]:
        return tuple(e for e in real(*args) if not isinstance(e, ExtendedMasterSecret))

    # Only the abbreviated handshake's ServerHello: the full one is built in negotiation.
    monkeypatch.setattr(iotdtls.handshake.server, "session_answers", without_ems)
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, require_extended_master_secret=require)
    second = next_link(first, client_config=config)
    second.handshake()
    assert server_hello(second).session_id == first.client.session.session_id
    assert_link_failed(second, "client", AlertDescription.handshake_failure)
    (closed,) = events_of(second, "client", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert "RFC 7627 §5.3" in closed.error.reason


@pytest.mark.req("RES-3")
def test_a_client_that_accepts_legacy_servers_still_offers_ems_and_resumes() -> None:
    """`require_extended_master_secret=False` only stops the refusal of a server without it:
    the client offers the extension all the same (RFC 7627 §5.3), so its sessions resume."""
    first = full_handshake()
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, require_extended_master_secret=False)
    second = next_link(first, client_config=config)
    second.handshake()
    assert client_hellos(second)[-1].session_id == first.client.session.session_id
    (done, _) = completed(second)
    assert done.resumed and done.extended_master_secret


# -- what a client offers, what a server accepts ------------------------------------------------


@pytest.mark.req("RES-1", "EXT-1", "EXT-2")
@pytest.mark.parametrize(
    "change",
    [
        {"psk_identity": b"another device"},
        {"max_fragment_length": 512},
        {"server_name": "other.example"},
        {"psk_identity": None, "psk": None, "server_public_keys": [server_key().spki]},
        {"psk": bytes(range(16))},
    ],
    ids=["identity", "mfl", "server_name", "mode", "new-psk"],
)
def test_client_does_not_offer_a_session_that_does_not_fit(change: dict[str, Any]) -> None:
    first = full_handshake(client={"server_name": "iot.example"})
    settings: dict[str, Any] = {"psk_identity": IDENTITY, "psk": KEY, "server_name": "iot.example"}
    settings.update(change)
    config = ClientConfig(**{k: v for k, v in settings.items() if v is not None})
    second = next_link(first, client_config=config)
    second.client.connect(second.now)
    second.step()
    assert client_hellos(second)[0].session_id == b""


@pytest.mark.req("RES-1", "CRT-1")
@pytest.mark.parametrize(
    ("change", "alert"),
    [
        ({"trust_anchors": [pki.root("another root").der]}, AlertDescription.unknown_ca),
        ({"wall_clock": (pki.NOW + 2 * pki.YEAR).timestamp}, AlertDescription.certificate_expired),
    ],
    ids=["other-anchors", "expired-now"],
)
def test_a_client_does_not_resume_a_server_chain_it_no_longer_accepts(
    change: dict[str, Any], alert: AlertDescription
) -> None:
    """The full handshake instead, which refuses the server as it would without a session."""
    first = full_handshake(x509_link)
    config, _ = x509_configs(client=change)
    second = next_link(first, client_config=config)
    second.handshake()
    assert client_hellos(second)[0].session_id == b""
    assert failure(second, "client").alert is alert


@pytest.mark.req("RES-1", "EXT-1", "EXT-2")
@pytest.mark.parametrize(
    "change", [{"server_name": "other.example"}, {"max_fragment_length": 512}], ids=str
)
def test_server_refuses_a_session_for_another_name_or_fragment_length(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, Any]
) -> None:
    """RFC 6066 §3: another server_name, a full handshake; §4: the fragment length binds the
    whole session. (The client is made to offer anyway.)"""
    first = full_handshake(client={"server_name": "iot.example"})
    monkeypatch.setattr(iotdtls.handshake.client, "offerable_session", lambda *a: None)
    settings: dict[str, Any] = {"server_name": "iot.example", **change}
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, **settings)
    second = next_link(first, client_config=config)
    second.handshake()
    assert_resumed(second, False)


def reconfigured(first: MemoryLink, **server: Any) -> MemoryLink:
    """`first`'s client resumes with a server whose configuration changed, keeping the
    session store."""
    config = ServerConfig(**{"cookie_exchange": True, **server})
    endpoint = ServerEndpoint(config, session_store=first.server.sessions)
    link = MemoryLink(
        first.client_config,
        config,
        now=first.now + 10,
        session=first.client.session,
        endpoint=endpoint,
        allowed_alerts=first.allowed_alerts,
    )
    link.handshake()
    return link


@pytest.mark.req("RES-1")
def test_a_forgotten_psk_identity_is_not_resumed() -> None:
    first = full_handshake()
    second = reconfigured(first, psk_store={b"someone else": KEY})
    # A full handshake with an unknown identity: the client's Finished fails (PSK-4).
    assert H.server_hello_done in message_types(wire_from(second, "server"))
    (closed,) = events_of(second, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.decrypt_error


NEW_KEY = bytes(range(0xF0, 0x100))


@pytest.mark.req("RES-1", "PSK-4")
@pytest.mark.parametrize(
    ("client_key_now", "works"), [(KEY, False), (NEW_KEY, True)], ids=["old-key", "new-key"]
)
def test_a_rotated_psk_ends_the_session(
    monkeypatch: pytest.MonkeyPatch, client_key_now: bytes, works: bool
) -> None:
    """The operator gives the identity a new key (the old one leaked: PSK has no forward
    secrecy, so whoever recorded the full handshake knows the master secret). The session made
    with the old key is not resumed: the full handshake instead, which fails with the old key
    (decrypt_error, PSK-4) and succeeds with the new one. (The client is made to offer the
    session with either key.)"""
    first = full_handshake(server={"psk_store": None, "psk_lookup": lambda identity: KEY})
    saved = first.client.session
    assert saved is not None
    monkeypatch.setattr(iotdtls.handshake.client, "offerable_session", lambda *a: None)
    client = ClientConfig(psk_identity=IDENTITY, psk=client_key_now)
    config = ServerConfig(psk_lookup=lambda identity: NEW_KEY, cookie_exchange=True)
    endpoint = ServerEndpoint(config, session_store=first.server.sessions)
    second = MemoryLink(client, config, now=first.now + 10, session=saved, endpoint=endpoint)
    second.handshake()
    assert client_hellos(second)[0].session_id == saved.session_id
    assert H.server_hello_done in message_types(wire_from(second, "server"))
    if works:
        assert_resumed(second, False)
        assert second.client.session is not None
        assert second.client.session.credential_digest == psk_digest(NEW_KEY)
    else:
        assert events_of(second, "server", HandshakeComplete) == []
        (closed,) = events_of(second, "server", ConnectionClosed)
        assert isinstance(closed.error, AlertSent)
        assert closed.error.alert is AlertDescription.decrypt_error


@pytest.mark.req("RES-1")
def test_the_same_psk_from_a_new_lookup_still_resumes() -> None:
    """Only the key counts, not where it comes from: a store replaced by a lookup giving the
    same key resumes the session."""
    first = full_handshake()
    second = reconfigured(first, psk_lookup={IDENTITY: bytes(KEY)}.get)
    assert_resumed(second)


@pytest.mark.req("RES-1")
@pytest.mark.parametrize("mode", LINKS)
def test_a_session_keeps_a_digest_of_our_credential_never_the_credential(mode: str) -> None:
    """The PSK's digest on both sides; a client's own raw key or certificate digest (the
    server keeps none: the client checks the server's key or chain itself); resumed sessions
    carry it forward."""
    first = full_handshake(LINKS[mode])
    saved = first.client.session
    store = first.server.sessions
    assert saved is not None and store is not None
    kept = store.get(saved.session_id, first.now)
    assert kept is not None
    config = first.client_config
    if mode == "psk":
        assert saved.credential_digest == kept.credential_digest == psk_digest(KEY)
        assert KEY not in saved.to_bytes()
    else:
        if mode == "rpk":
            assert config.raw_public_key is not None
            own = config.raw_public_key.spki
        else:
            assert config.certificate is not None
            own = config.certificate.chain[0]
        assert saved.credential_digest == own_credential_digest(own)
        assert kept.credential_digest == b""
    second = next_link(first)
    second.handshake()
    assert_resumed(second)
    assert second.client.session is not None
    assert second.client.session.credential_digest == saved.credential_digest


@pytest.mark.req("RES-1", "RPK-3", "CRT-1")
@pytest.mark.parametrize("mode", ["rpk", "x509"])
def test_a_client_with_a_new_own_key_does_not_offer_its_session(mode: str) -> None:
    """A client now provisioned with another key (or certificate) runs a full handshake: the
    server learns the new credential instead of resuming as the old one."""
    if mode == "rpk":
        both = [client_key().spki_sha256, stranger_key().spki_sha256]
        first = full_handshake(rpk_link, server={"client_public_keys": both})
        config = ClientConfig(server_public_keys=[server_key().spki], raw_public_key=stranger_key())
        expected: PeerIdentity = RawPublicKeyIdentity(stranger_key().spki)
    else:
        first = full_handshake(x509_link)
        p = x509_pki()
        leaf = pki.client_leaf(p.ca, "FE-DC-BA-98-76-54-32-10")
        config, _ = x509_configs(client={"certificate": p.certified(leaf)})
        expected = CertificateIdentity("FE-DC-BA-98-76-54-32-10", ())
    second = next_link(first, client_config=config)
    second.handshake()
    assert client_hellos(second)[0].session_id == b""
    assert_resumed(second, False)
    peer = completed(second)[1].peer
    if isinstance(expected, CertificateIdentity):
        assert isinstance(peer, CertificateIdentity) and peer.name == expected.name
    else:
        assert peer == expected


@pytest.mark.req("RES-1")
def test_a_session_made_without_our_key_is_offered_with_a_new_key() -> None:
    """A server that did not ask for our key bound nothing to it: a new key does not matter."""
    first = full_handshake(rpk_link, server={"client_public_keys": ()})
    assert first.client.session is not None and first.client.session.credential_digest == b""
    config = ClientConfig(server_public_keys=[server_key().spki], raw_public_key=stranger_key())
    second = next_link(first, client_config=config)
    second.handshake()
    assert_resumed(second)


@pytest.mark.req("RES-1", "RPK-3")
def test_a_server_that_now_requires_client_keys_runs_a_full_handshake() -> None:
    first = full_handshake(rpk_link, server={"client_public_keys": ()})
    assert isinstance(completed(first)[1].peer, UnauthenticatedPeer)
    second = reconfigured(
        first, raw_public_key=server_key(), client_public_keys=[client_key().spki_sha256]
    )
    assert_resumed(second, False)
    assert isinstance(completed(second)[1].peer, RawPublicKeyIdentity)


@pytest.mark.req("RES-1", "RPK-3")
def test_a_client_key_no_longer_provisioned_is_not_resumed() -> None:
    first = full_handshake(rpk_link)
    second = reconfigured(
        first, raw_public_key=server_key(), client_public_keys=[stranger_key().spki_sha256]
    )
    assert events_of(second, "server", HandshakeComplete) == []
    (closed,) = events_of(second, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)  # the full handshake refuses the key


@pytest.mark.req("RES-1")
def test_a_fatal_alert_ends_the_session() -> None:
    """RFC 5246 §7.2.2: a connection that ended with a fatal alert must not be resumed."""
    first = full_handshake()
    saved = first.client.session
    assert saved is not None and first.server_conn is not None
    # An authenticated handshake message after the handshake: unexpected_message (HS-5).
    late = handshake_record(record_layer(first.client), H.certificate, 9, b"", epoch=1)
    first.server.receive_datagram(late, CLIENT_ADDR, first.now)
    first.step()
    (closed,) = events_of(first, "client", ConnectionClosed)
    assert isinstance(closed.error, AlertReceived)
    assert first.client.session is None
    store = first.server.sessions
    assert store is not None and store.get(saved.session_id, first.now) is None
    second = next_link(first, session=saved)
    second.handshake()
    assert_resumed(second, False)


def damaged(session: SessionState) -> SessionState:
    """`session` with one bit of its master secret flipped: a session file edited by hand or
    damaged, or such an entry in a server's session directory."""
    secret = bytearray(session.master_secret)
    secret[0] ^= 1
    return dataclasses.replace(session, master_secret=bytes(secret))


def resuming_damaged(
    mode: str, side: Direction, fate: FateFn = deliver_all
) -> tuple[MemoryLink, SessionState]:
    """A resumption where `side` holds the session with another master secret, and the
    session as the full handshake made it."""
    first = full_handshake(LINKS[mode])
    saved = first.client.session
    store = first.server.sessions
    assert saved is not None and store is not None
    session = saved
    if side == "client":
        session = damaged(saved)
    else:
        kept = store.get(saved.session_id, first.now)
        assert kept is not None
        store.put(damaged(kept), first.now)
    return next_link(first, session=session, fate=fate), saved


@pytest.mark.req("RES-1", "ERR-1")
@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("mode", LINKS)
def test_a_session_held_with_another_master_secret_fails_at_once(
    mode: str, side: Direction
) -> None:
    """The two sides resume one session_id with different master secrets (one side's copy was
    edited or damaged): the server's Finished, in the datagram of the ServerHello that resumed
    the session, fails to authenticate. The client ends the handshake there with
    decrypt_error (RFC 5246 §7.3, §7.4.9), its error naming the Finished and marked as a
    resumption's (so the session is to blame: `DtlsError.resuming`), before any timer; the
    server hears the alert. The server keeps its copy: the alert is plaintext, which anyone who
    saw the session_id could forge (`DtlsConnection._close`); the client's good copy still
    resumes with it."""
    second, good = resuming_damaged(mode, side)
    started = second.now
    second.handshake()
    assert second.now == started  # no retransmission, no timeout
    assert_link_failed(second, "client", AlertDescription.decrypt_error)
    (closed,) = events_of(second, "client", ConnectionClosed)
    assert "Finished record does not authenticate" in str(closed.error)
    assert closed.error.resuming
    (heard,) = events_of(second, "server", ConnectionClosed)
    assert heard.error.resuming
    assert second.client.discards[DiscardReason.BAD_TAG] == 1
    assert second.client.session is None
    store = second.server.sessions
    assert store is not None and store.get(good.session_id, second.now) is not None
    if side == "client":
        third = next_link(second, session=good)
        third.handshake()
        assert_resumed(third)


@pytest.mark.req("RES-1", "ERR-1", "REC-3")
@pytest.mark.parametrize("layout", ["one-record-each", "without-ccs"])
def test_a_session_held_with_another_master_secret_fails_in_any_layout(layout: str) -> None:
    """A server that sends one record per datagram: its Finished fails alone right after its
    ChangeCipherSpec, and again in its repeated flight: decrypt_error (a single lone failure
    could be a forgery). A Finished that fails in the datagram of the ServerHello, with no
    ChangeCipherSpec between (the client waits for it), is the peer's too."""
    second, _ = resuming_damaged(
        "psk", "client", fate=lambda d, i, data: "drop" if d == "server" and i >= 2 else "deliver"
    )
    second.client.connect(second.now)
    second.run(until=second.now + 0.5, stop=lambda lk: lk.sent["server"] >= 2)
    flight = wire_from(second, "server")[1]
    hello, ccs, finished = [header.encode() + fragment for header, fragment in records(flight)]
    datagrams = {
        "one-record-each": [hello, ccs, finished, ccs, finished],
        "without-ccs": [hello + finished],
    }
    for datagram in datagrams[layout][:-1]:
        second.client.receive_datagram(datagram, second.now)
        assert second.client.state is ConnectionState.HANDSHAKING
    second.client.receive_datagram(datagrams[layout][-1], second.now)
    (closed,) = [e for e in drain(second.client) if isinstance(e, ConnectionClosed)]
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.decrypt_error


# -- sessions as bytes ---------------------------------------------------------------------------

PEERS: list[PeerIdentity] = [
    PskIdentity(b"device-17"),
    RawPublicKeyIdentity(client_key().spki),
    CertificateIdentity("localhost", (b"\x30\x03leaf", b"\x30\x02ca")),
    UnauthenticatedPeer(),
]


@pytest.mark.req("RES-1", "SEC-1")
@pytest.mark.parametrize("peer", PEERS, ids=lambda p: type(p).__name__)
def test_session_state_round_trip_and_redacted_repr(peer: PeerIdentity) -> None:
    master = bytes(range(100, 148))
    digest = psk_digest(KEY)
    state = SessionState(
        bytes(range(32)), 0xC0AE, Mode.X509, master, peer, 2, "iot.example", digest
    )
    again = SessionState.from_bytes(state.to_bytes())
    assert again == state and again.master_secret == master
    assert again.credential_digest == digest
    if isinstance(peer, CertificateIdentity):
        assert again.peer == peer and isinstance(again.peer, CertificateIdentity)
        assert again.peer.chain == peer.chain
    for text in (repr(state), str(state)):
        assert master.hex() not in text and repr(master) not in text
        assert digest.hex()[:8] not in text and repr(digest)[:8] not in text
        assert "redacted" in text


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"",
        lambda b: b"garbage",
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b[:15] + b"\x01" + b[16:],  # another format version (1: no credential_digest)
        lambda b: b.replace(b"\xc0\xa8", b"\x00\x2f", 1),  # a suite we do not implement
    ],
    ids=["empty", "garbage", "truncated", "trailing", "version", "suite"],
)
def test_damaged_session_bytes_are_refused_in_one_line(damage: Callable[[bytes], bytes]) -> None:
    good = SessionState(b"\x01" * 32, 0xC0A8, Mode.PSK, bytes(48), PskIdentity(b"d")).to_bytes()
    with pytest.raises(ValueError, match="not a session saved by this version") as refused:
        SessionState.from_bytes(damage(good))
    assert "\n" not in str(refused.value)


@pytest.mark.req("RES-1")
def test_session_text_is_refused_in_one_line_saying_to_pass_bytes() -> None:
    saved = SessionState(b"\x01" * 32, 0xC0A8, Mode.PSK, b"\x42" * 48, PskIdentity(b"d"))
    text: Any = saved.to_bytes().hex()  # as a user may keep it
    with pytest.raises(TypeError) as refused:
        SessionState.from_bytes(text)
    assert str(refused.value) == (
        "data must be the bytes of to_bytes (bytes.fromhex(text) for its hex), got str"
    )
    assert SessionState.from_bytes(bytearray(saved.to_bytes())).master_secret == b"\x42" * 48


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    "peer",
    [RawPublicKeyIdentity(b""), CertificateIdentity("n", (b"c", b""))],
    ids=["empty raw key", "empty certificate"],
)
def test_session_bytes_with_an_empty_key_or_certificate_are_refused(peer: PeerIdentity) -> None:
    # No handshake authenticates an empty key or certificate: such bytes were not made by us.
    data = SessionState(b"\x01", 0xC0AE, Mode.X509, bytes(48), peer).to_bytes()
    with pytest.raises(ValueError, match="not a session saved by this version"):
        SessionState.from_bytes(data)


@pytest.mark.req("RES-1")
def test_session_state_checks_its_fields() -> None:
    peer = PskIdentity(b"d")
    for bad in (
        {"session_id": b""},
        {"session_id": bytes(33)},
        {"master_secret": bytes(47)},
        {"cipher_suite": 0x002F},
        {"max_fragment_length": 5},
        {"server_name": "bücher.example"},
        {"credential_digest": bytes(31)},
        {"credential_digest": KEY},  # a digest, never the key itself
    ):
        fields: dict[str, Any] = {
            "session_id": b"\x01",
            "cipher_suite": 0xC0A8,
            "mode": Mode.PSK,
            "master_secret": bytes(48),
            "peer": peer,
            **bad,
        }
        with pytest.raises(ConfigError):
            SessionState(**fields)


_PEER_STRATEGY = st.one_of(
    st.builds(PskIdentity, st.binary(max_size=64)),
    st.builds(RawPublicKeyIdentity, st.binary(min_size=1, max_size=91)),
    st.builds(
        CertificateIdentity,
        st.text(max_size=40),
        st.lists(st.binary(min_size=1, max_size=300), max_size=3).map(tuple),
    ),
    st.just(UnauthenticatedPeer()),
)
_STATES = st.builds(
    SessionState,
    session_id=st.binary(min_size=1, max_size=32),
    cipher_suite=st.sampled_from([0xC0A8, 0xC0AE]),
    mode=st.sampled_from(list(Mode)),
    master_secret=st.binary(min_size=48, max_size=48),
    peer=_PEER_STRATEGY,
    max_fragment_length=st.integers(0, 4),
    server_name=st.from_regex(r"[a-z0-9.-]{0,40}", fullmatch=True),
    credential_digest=st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)),
)
_PROPS = settings(max_examples=150, deadline=None)


@pytest.mark.req("RES-1")
@_PROPS
@given(_STATES)
def test_session_bytes_round_trip_property(state: SessionState) -> None:
    again = SessionState.from_bytes(state.to_bytes())
    assert again == state and again.master_secret == state.master_secret
    assert again.credential_digest == state.credential_digest


@pytest.mark.req("RES-1")
@_PROPS
@given(st.binary(max_size=300), _STATES)
def test_session_bytes_parser_raises_only_value_error(noise: bytes, state: SessionState) -> None:
    good = state.to_bytes()
    for data in (noise, good[: len(noise) % (len(good) + 1)], good[:16] + noise):
        with contextlib.suppress(ValueError):  # anything else escapes and fails the test
            SessionState.from_bytes(data)
