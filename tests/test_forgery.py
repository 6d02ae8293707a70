"""Forged records against a handshake in progress and against an established association.

RFC 6347 §4.1.2.7: a record that fails authentication is silently discarded, whatever the
state, in both roles (REC-3), and plaintext that arrives where only protected records belong is
dropped unread. PSK-4 still holds: a client with a wrong key (or an unknown identity) gets a
decrypt_error, because the server concludes it only from a record that fails authentication
*with the peer's own flight* (a resuming client so concludes that the session's master secrets
differ, from the server's Finished) (in the datagram whose messages moved the handshake, or alone
right after the peer's ChangeCipherSpec a second time: peers that send one record per datagram
repeat their flight). REC-6: records that fail authentication are counted per epoch, and at
`integrity_limit` (default 2^7, RFC 9147 §4.5.3 and Appendix B.3 for AES-128-CCM-8) the
association ends with a fatal bad_record_mac alert and an `IntegrityLimitReached` error.
"""

from __future__ import annotations

import random

import pytest

from iotdtls.config import DEFAULT_INTEGRITY_LIMIT, ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DropReason
from iotdtls.crypto import NullProtector
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    IntegrityLimitReached,
)
from iotdtls.events import ConnectionClosed, DataReceived
from iotdtls.messages import Finished, HandshakeType
from iotdtls.record import ContentType, DiscardReason, RecordHeader, RecordLayer
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
    next_link,
    records,
)

RNG = random.Random(6347)


def forged(epoch: int, size: int = 40, content_type: int = ContentType.handshake) -> bytes:
    """A record of `epoch` whose protected body is random: it cannot authenticate."""
    body = RNG.randbytes(size)
    header = RecordHeader(content_type, 0xFEFD, epoch, RNG.randrange(1 << 40), len(body))
    return header.encode() + body


def junk_datagrams() -> list[bytes]:
    """What an attacker who cannot see the traffic can send: records that fail authentication
    in the handshake epoch and the next, unknown epochs, truncated records, garbage."""
    return [
        forged(1),
        forged(1, content_type=ContentType.application_data) + forged(1),
        forged(2),
        forged(7, content_type=ContentType.alert),
        forged(1)[:20],
        b"\x16\xfe\xfd" + RNG.randbytes(30),
    ]


@pytest.mark.req("REC-3", "HS-5")
@pytest.mark.parametrize("victim", ["client", "server"])
def test_junk_before_every_record_never_aborts_the_handshake(victim: Direction) -> None:
    """Every datagram to the victim is cut into its records, one per datagram, and every kind
    of junk arrives before each: the victim spends every handshake state, keys installed or
    not, among forgeries."""
    link = make_link()

    def deliver(receiver: Direction, datagram: bytes) -> None:
        if receiver == "server":
            link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)
        else:
            link.client.receive_datagram(datagram, link.now)

    def fate(direction: Direction, index: int, data: bytes) -> Fate:
        receiver: Direction = "server" if direction == "client" else "client"
        if receiver != victim:
            return "deliver"
        for header, fragment in records(data):
            for junk in junk_datagrams():
                deliver(receiver, junk)
            deliver(receiver, header.encode() + fragment)
        return "drop"

    link.fate = fate
    link.handshake()
    assert established(link)
    conn = link.client if victim == "client" else link.server_conn
    assert conn is not None
    assert conn.discards[DiscardReason.BAD_TAG] > 0  # forged epoch-1 records met the keys
    assert conn.discards[DiscardReason.UNKNOWN_EPOCH] > 0
    assert link.now == 0.0  # no retransmission was needed either


def flight_five_records(link: MemoryLink) -> list[bytes]:
    """The client's flight 5 (its third datagram) cut into its records."""
    (_, _, flight5) = [w for w in link.wire if w[0] == "client"][2]
    return [header.encode() + fragment for header, fragment in records(flight5)]


def link_before_flight_five() -> tuple[MemoryLink, list[bytes]]:
    link = make_link(fate=lambda d, i, data: "drop" if d == "client" and i >= 3 else "deliver")
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent["client"] >= 3)
    parts = flight_five_records(link)
    assert [p[0] for p in parts] == [ContentType.handshake, ContentType.change_cipher_spec,
                                     ContentType.handshake]  # CKE, CCS, Finished (epoch 1)
    return link, parts


def to_server(link: MemoryLink, datagram: bytes) -> None:
    link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)


@pytest.mark.req("REC-3", "PSK-4")
def test_a_forged_record_while_the_server_awaits_the_finished_is_dropped() -> None:
    """The server has the client's key exchange and ChangeCipherSpec and waits for the
    Finished. A record failing authentication that does not come with the client's flight (a
    datagram later) is dropped; the genuine Finished then completes the handshake."""
    link, (cke, ccs, finished) = link_before_flight_five()
    to_server(link, cke + ccs)
    server_conn = link.server_conn
    assert server_conn is not None
    assert server_conn.handshake_state.name == "WAIT_FINISHED"
    to_server(link, b"not dtls at all")  # some datagram in between
    for _ in range(20):
        to_server(link, forged(1))
    assert server_conn.state is ConnectionState.HANDSHAKING
    assert server_conn.discards[DiscardReason.BAD_TAG] == 20
    to_server(link, finished)
    link.fate = lambda d, i, data: "deliver"
    link.run(until=5.0, stop=established)
    assert established(link)


@pytest.mark.req("REC-3", "PSK-4")
def test_a_forged_record_in_a_resumed_handshake_is_only_dropped() -> None:
    """An abbreviated handshake takes its keys from the session, so a record that fails
    authentication says nothing about the client's key: one forged right behind the client's
    ChangeCipherSpec, in the same datagram, is dropped (in a full handshake that datagram
    would be evidence of a wrong key, PSK-4), and the Finished after it completes."""
    first = make_link()
    first.handshake()
    assert established(first)
    second = next_link(
        first, fate=lambda d, i, data: "drop" if d == "client" and i >= 3 else "deliver"
    )
    second.client.connect(second.now)
    second.run(until=second.now + 0.5, stop=lambda lk: lk.sent["client"] >= 3)
    (_, _, final) = [w for w in second.wire if w[0] == "client"][2]
    ccs, finished = [header.encode() + fragment for header, fragment in records(final)]
    assert ccs[0] == ContentType.change_cipher_spec
    server_conn = second.server_conn
    assert server_conn is not None and server_conn.resumed
    second.server.receive_datagram(ccs + forged(1), second.address, second.now)
    assert server_conn.state is ConnectionState.HANDSHAKING
    assert server_conn.discards[DiscardReason.BAD_TAG] == 1
    second.server.receive_datagram(finished, second.address, second.now)
    assert server_conn.state is ConnectionState.ESTABLISHED


def server_flight_records(link: MemoryLink, index: int) -> list[bytes]:
    """The server's datagram `index` (from 1) of `link`, cut into its records."""
    flight = [data for d, _, data in link.wire if d == "server"][index - 1]
    return [header.encode() + fragment for header, fragment in records(flight)]


@pytest.mark.req("REC-3", "RES-1")
def test_a_forged_record_while_a_resuming_client_awaits_the_finished_is_dropped() -> None:
    """A resuming client concludes that the two sides hold the session with different master
    secrets only from the server's Finished failing with the server's flight (RFC 5246 §7.3):
    a record that fails alone in a datagram, after the ServerHello, right after the
    ChangeCipherSpec once (taken, then repeated), or after anything else, is dropped. The
    genuine Finished then completes the handshake."""
    first = make_link()
    first.handshake()
    second = next_link(
        first, fate=lambda d, i, data: "drop" if d == "server" and i >= 2 else "deliver"
    )
    second.client.connect(second.now)
    second.run(until=second.now + 0.5, stop=lambda lk: lk.sent["server"] >= 2)
    hello, ccs, finished = server_flight_records(second, 2)
    client = second.client
    sent = second.sent["client"]
    for datagram in (hello, forged(1), ccs, forged(1), b"not dtls at all", forged(1), ccs):
        client.receive_datagram(datagram, second.now)
    assert client.resumed and client.state is ConnectionState.HANDSHAKING
    assert client.discards[DiscardReason.BAD_TAG] == 3
    assert client.datagrams_to_send(second.now) == []  # no alert, nothing at all
    assert second.sent["client"] == sent
    client.receive_datagram(finished, second.now)
    assert client.state is ConnectionState.ESTABLISHED


@pytest.mark.req("REC-3")
def test_a_forged_record_behind_the_servers_change_cipher_spec_in_a_full_handshake() -> None:
    """In a full handshake the server sends its Finished only once ours has verified, so both
    sides hold the same keys: a record that fails behind the server's ChangeCipherSpec, in the
    same datagram, is no evidence of anything and is dropped; the Finished completes."""
    link = make_link(fate=lambda d, i, data: "drop" if d == "server" and i >= 3 else "deliver")
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent["server"] >= 3)
    ccs, finished = server_flight_records(link, 3)
    assert ccs[0] == ContentType.change_cipher_spec
    link.client.receive_datagram(ccs + forged(1), link.now)
    assert link.client.state is ConnectionState.HANDSHAKING
    assert link.client.discards[DiscardReason.BAD_TAG] == 1
    link.client.receive_datagram(finished, link.now)
    assert link.client.state is ConnectionState.ESTABLISHED


def wrong_key_flight_five() -> tuple[MemoryLink, list[bytes]]:
    link = make_link(
        fate=lambda d, i, data: "drop" if d == "client" and i >= 3 else "deliver",
        client={"psk": bytes(range(200, 216))},
    )
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent["client"] >= 3)
    return link, flight_five_records(link)


def repeated_flight_five(link: MemoryLink) -> list[bytes]:
    """The client's flight 5 once more, as its retransmission timer sends it (new record
    sequence numbers), cut into its records."""
    link.run(until=link.now + 5.0, stop=lambda lk: lk.sent["client"] >= 4)
    (_, _, _, again) = [data for d, _, data in link.wire if d == "client"][:4]
    return [header.encode() + fragment for header, fragment in records(again)]


@pytest.mark.req("PSK-4", "ERR-1")
@pytest.mark.parametrize("layout", ["one-datagram", "ccs-with-finished", "one-record-each"])
def test_a_wrong_key_still_ends_with_decrypt_error(layout: str) -> None:
    """PSK-4: the Finished fails in the datagram whose records moved the server's handshake
    (our own client always cuts its ChangeCipherSpec and Finished together), or, from a peer
    that sends one record per datagram (GnuTLS), alone right after the ChangeCipherSpec of
    its flight and of its repeated flight."""
    link, (cke, ccs, finished) = wrong_key_flight_five()
    datagrams = {
        "one-datagram": [cke + ccs + finished],
        "ccs-with-finished": [cke, ccs + finished],
        "one-record-each": [cke, ccs, finished, *repeated_flight_five(link)],
    }
    for datagram in datagrams[layout]:
        to_server(link, datagram)
    (closed,) = [e for e in _server_events(link) if isinstance(e, ConnectionClosed)]
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.decrypt_error


@pytest.mark.req("PSK-4", "REC-3")
def test_a_finished_alone_in_its_datagram_is_not_evidence_the_first_time() -> None:
    """A record that fails authentication alone in a datagram is what an attacker off the path
    can send: the server drops it even right after the peer's ChangeCipherSpec, and one that
    does not come right after one (taken or repeated) never counts. The genuine Finished
    then completes the handshake."""
    link, (cke, ccs, finished) = link_before_flight_five()
    for datagram in (cke, forged(1), ccs, forged(1), b"not dtls at all", forged(1), ccs):
        to_server(link, datagram)
    server_conn = link.server_conn
    assert server_conn is not None
    assert server_conn.state is ConnectionState.HANDSHAKING
    assert server_conn.discards[DiscardReason.BAD_TAG] == 3
    assert link.server.datagrams_to_send(link.now) == []  # no alert, nothing at all
    to_server(link, finished)
    assert server_conn.state is ConnectionState.ESTABLISHED


@pytest.mark.req("PSK-4", "REC-3")
def test_a_record_that_failed_before_the_change_cipher_spec_never_counts_after_it() -> None:
    """What counts right after the peer's ChangeCipherSpec is a record failing in that
    datagram, not one that failed earlier: a forged record ahead of the ChangeCipherSpec, then
    a datagram without a failing record right after the ChangeCipherSpec, twice (taken, then
    repeated), end nothing. The genuine Finished then completes the handshake."""
    link, (cke, ccs, finished) = link_before_flight_five()
    for datagram in (cke, forged(1), ccs, b"not dtls at all", ccs, b"not dtls at all"):
        to_server(link, datagram)
    server_conn = link.server_conn
    assert server_conn is not None
    assert server_conn.state is ConnectionState.HANDSHAKING
    assert server_conn.discards[DiscardReason.BAD_TAG] == 1
    to_server(link, finished)
    assert server_conn.state is ConnectionState.ESTABLISHED


@pytest.mark.req("REC-3")
def test_a_plaintext_record_ahead_of_the_finished_leaves_the_rest_of_its_datagram() -> None:
    """Only the record of the epoch the peer left is dropped: the genuine Finished after it in
    the same datagram is read, and completes the handshake."""
    link, (cke, ccs, finished) = link_before_flight_five()
    to_server(link, cke + ccs)
    conn = link.server_conn
    assert conn is not None
    seq = conn._reassembler.next_seq
    plain = handshake_record(_plain(), HandshakeType.finished, seq, bytes(12))
    to_server(link, plain + finished)
    assert conn.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
    assert conn.state is ConnectionState.ESTABLISHED


def _server_events(link: MemoryLink) -> list[object]:
    out = []
    while (item := link.server.next_event()) is not None:
        out.append(item[1])
    return out


@pytest.mark.req("REC-3", "HS-5")
@pytest.mark.parametrize("victim", ["client", "server"])
def test_plaintext_where_the_finished_is_due_is_dropped(victim: Direction) -> None:
    """After the peer's ChangeCipherSpec only protected handshake records count: a plaintext
    Finished (anyone can forge one) is dropped, not an unexpected_message."""
    if victim == "server":
        link, (cke, ccs, finished) = link_before_flight_five()
        to_server(link, cke + ccs)
        conn = link.server_conn
        assert conn is not None
        seq = conn._reassembler.next_seq
        to_server(link, handshake_record(_plain(), HandshakeType.finished, seq, bytes(12)))
        assert conn.state is ConnectionState.HANDSHAKING
        assert conn.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
        to_server(link, finished)
    else:
        link = make_link(fate=lambda d, i, data: "drop" if d == "server" and i >= 3 else "deliver")
        link.client.connect(0.0)
        link.run(until=0.5, stop=lambda lk: lk.sent["server"] >= 3)
        (_, _, flight6) = [w for w in link.wire if w[0] == "server"][2]
        (ccs_h, ccs_f), (fin_h, fin_f) = records(flight6)
        link.client.receive_datagram(ccs_h.encode() + ccs_f, link.now)
        assert link.client.handshake_state.name == "WAIT_FINISHED"
        seq = link.client._reassembler.next_seq
        body = Finished(bytes(12)).encode()
        plain = handshake_record(_plain(), HandshakeType.finished, seq, body)
        link.client.receive_datagram(plain, link.now)
        assert link.client.state is ConnectionState.HANDSHAKING
        assert link.client.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
        link.client.receive_datagram(fin_h.encode() + fin_f, link.now)
    link.fate = lambda d, i, data: "deliver"
    link.run(until=5.0, stop=established)
    assert established(link)


def _plain() -> RecordLayer:
    layer = RecordLayer()
    layer.install_write_epoch(0, NullProtector(), next_sequence_number=RNG.randrange(1, 1 << 20))
    return layer


# -- REC-6: the integrity limit ------------------------------------------------------------------


def test_integrity_limit_default_and_validation() -> None:
    assert DEFAULT_INTEGRITY_LIMIT == 2**7 == 128
    assert ClientConfig(psk_identity=IDENTITY, psk=KEY).integrity_limit == 128
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="integrity_limit"):
            ServerConfig(psk_store={IDENTITY: KEY}, integrity_limit=bad)


def forge_at(link: MemoryLink, victim: Direction, count: int) -> None:
    for _ in range(count):
        if victim == "server":
            to_server(link, forged(1, content_type=ContentType.application_data))
        else:
            link.client.receive_datagram(forged(1, content_type=ContentType.application_data),
                                         link.now)
    link.step()


@pytest.mark.req("REC-6", "REC-3", "ERR-1")
@pytest.mark.parametrize("victim", ["client", "server"])
@pytest.mark.parametrize("limit", [None, 5])
def test_the_association_ends_at_the_integrity_limit(
    victim: Direction, limit: int | None
) -> None:
    settings = {} if limit is None else {"integrity_limit": limit}
    link = make_link(
        client=settings if victim == "client" else None,
        server=settings if victim == "server" else None,
    )
    link.handshake()
    expected = DEFAULT_INTEGRITY_LIMIT if limit is None else limit
    forge_at(link, victim, expected - 1)
    assert established(link)  # one below the limit: still up, data still flows
    link.client.send(b"still up")
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(b"still up")]
    forge_at(link, victim, 1)
    peer: Direction = "client" if victim == "server" else "server"
    (mine,) = events_of(link, victim, ConnectionClosed)
    assert isinstance(mine.error, IntegrityLimitReached)
    assert (mine.error.epoch, mine.error.count) == (1, expected)
    assert mine.error.alert is AlertDescription.bad_record_mac
    assert str(mine.error) == (
        f"sent fatal alert bad_record_mac: {expected} records failed authentication in epoch 1, "
        "the integrity limit (RFC 9147 §4.5.3)"
    )
    # The peer reads the (protected) alert and ends too.
    (theirs,) = events_of(link, peer, ConnectionClosed)
    assert isinstance(theirs.error, AlertReceived)
    assert theirs.error.alert is AlertDescription.bad_record_mac


@pytest.mark.req("REC-6")
def test_no_integrity_limit_when_turned_off() -> None:
    link = make_link(server={"integrity_limit": None})
    link.handshake()
    forge_at(link, "server", 1000)
    assert established(link)


@pytest.mark.req("REC-6")
def test_failures_are_counted_per_epoch_and_unkeyed_epochs_do_not_count() -> None:
    link = make_link(client={"integrity_limit": 3})
    link.handshake()
    for epoch in (0, 2, 3, 200):
        for _ in range(10):
            link.client.receive_datagram(forged(epoch), link.now)
    assert established(link)
    assert link.client.discards[DiscardReason.BAD_TAG] == 0
    forge_at(link, "client", 3)
    assert isinstance(link.client.error, IntegrityLimitReached)


@pytest.mark.req("REC-6")
def test_the_limit_also_guards_a_handshake_in_progress() -> None:
    """A client that sent its flight 5 holds epoch-1 keys: forgeries count there too."""
    link = make_link(
        fate=lambda d, i, data: "drop" if d == "server" and i >= 3 else "deliver",
        client={"integrity_limit": 4},
    )
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent["server"] >= 3)
    assert link.client.handshake_state.name == "WAIT_CCS"
    for _ in range(4):
        link.client.receive_datagram(forged(1), link.now)
    assert isinstance(link.client.error, IntegrityLimitReached)
    assert link.client.error.count == 4
