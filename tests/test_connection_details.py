"""Details of `DtlsConnection` that mutation testing (`make mutation`, docs/mutation.md) found no
test for once `connection.py` joined the mutated set: the public state of a new connection,
the guards of `connect` and `accept`, a server connection used without an endpoint, every
record of a datagram after the handshake, exact drop counters, a Finished that overtakes its
ChangeCipherSpec, the close_notify answer, the retransmission trigger's rate limit at its
boundary, a new handshake message after the handshake, heartbeats one side refused, the
debug log of a failed association, and arguments of the wrong type given to the core.

The two sides here are bare `DtlsConnection`s (no endpoint, so no cookie exchange): the
client's messages are ClientHello 0, ClientKeyExchange 1 and Finished 2."""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from iotdtls.config import MAX_MTU, ClientConfig, ServerConfig
from iotdtls.connection import (
    ADOPTABLE_SEQUENCE_LIMIT,
    FINAL_FLIGHT_HOLD,
    ConnectionState,
    DropReason,
    DtlsConnection,
)
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.crypto import psk_premaster_secret
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import (
    AlertDescription,
    AlertLevel,
    AlertSent,
    AssociationEnded,
    DatagramTooLarge,
    DtlsError,
    HandshakeTimeout,
    LocalProtocolError,
    SequenceNumbersExhausted,
)
from iotdtls.errors import AlertReceived as AlertReceivedError
from iotdtls.events import (
    AlertReceived,
    CertificateUrlsReceived,
    ConnectionClosed,
    DataReceived,
    HandshakeComplete,
)
from iotdtls.handshake.transcript import handshake_header
from iotdtls.heartbeat import HeartbeatDrop
from iotdtls.identity import PskIdentity
from iotdtls.messages import Alert, HandshakeType, HeartbeatMessage, HeartbeatMessageType
from iotdtls.record import (
    MAX_PLAINTEXT_LENGTH,
    MAX_SEQUENCE_NUMBER,
    RECORD_HEADER_LEN,
    ContentType,
    RecordLayer,
)
from iotdtls.sessions import MemorySessionStore, SessionState
from tests import pki
from tests.aio_support import RELEASED
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    MemoryLink,
    drain,
    established,
    events_of,
    handshake_record,
    make_link,
    next_link,
    record_layer,
    records,
)
from tests.pubkey_support import x509_link
from tests.test_x509_handshake import url_setup

#: message_seq of the client's Finished in a handshake without cookie exchange.
CLIENT_FINISHED_SEQ = 2


def configs(
    client: dict[str, Any] | None = None, server: dict[str, Any] | None = None
) -> tuple[ClientConfig, ServerConfig]:
    """PSK configurations of the test identity, with `client` and `server` options."""
    return (
        ClientConfig(psk_identity=IDENTITY, psk=KEY, **(client or {})),
        ServerConfig(psk_store={IDENTITY: KEY}, **(server or {})),
    )


def pair(
    client: dict[str, Any] | None = None, server: dict[str, Any] | None = None
) -> tuple[DtlsConnection, DtlsConnection]:
    client_config, server_config = configs(client, server)
    return DtlsConnection(client_config), DtlsConnection(server_config)


def started(
    client_config: ClientConfig, server_config: ServerConfig
) -> tuple[DtlsConnection, DtlsConnection]:
    """A client that has sent its ClientHello (not yet delivered) and a server accepting."""
    client, server = DtlsConnection(client_config), DtlsConnection(server_config)
    client.connect(0.0)
    server.accept(0.0)
    return client, server


def started_pair(
    client: dict[str, Any] | None = None, server: dict[str, Any] | None = None
) -> tuple[DtlsConnection, DtlsConnection]:
    return started(*configs(client, server))


def deliver(sender: DtlsConnection, receiver: DtlsConnection, now: float = 0.0) -> None:
    for datagram in sender.datagrams_to_send(now):
        receiver.receive_datagram(datagram, now)


def exchange(a: DtlsConnection, b: DtlsConnection, now: float = 0.0) -> None:
    """Pass datagrams both ways until neither side has anything to send."""
    for _ in range(20):
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            for datagram in sender.datagrams_to_send(now):
                receiver.receive_datagram(datagram, now)
                moved = True
        if not moved:
            return
    raise AssertionError("the two sides kept talking")


def established_pair(
    client: dict[str, Any] | None = None, server: dict[str, Any] | None = None
) -> tuple[DtlsConnection, DtlsConnection]:
    c, s = started_pair(client, server)
    exchange(c, s)
    assert c.state is s.state is ConnectionState.ESTABLISHED
    drain(c)
    drain(s)
    return c, s


def single_records(datagram: bytes) -> list[bytes]:
    """Each record of `datagram` as a datagram of its own (records are independent units,
    RFC 6347 §4.1.1)."""
    return [header.encode() + payload for header, payload in records(datagram)]


def up_to_client_flight(
    client_options: dict[str, Any] | None = None,
) -> tuple[DtlsConnection, DtlsConnection, list[bytes]]:
    """A handshake up to the client's flight 5, not yet delivered: its records (the
    ClientKeyExchange, the ChangeCipherSpec, the Finished) one per datagram."""
    client, server = started_pair(client_options)
    deliver(client, server)
    deliver(server, client)
    (flight,) = client.datagrams_to_send(0.0)
    singles = single_records(flight)
    assert [r[0] for r in singles] == [
        ContentType.handshake, ContentType.change_cipher_spec, ContentType.handshake
    ]
    return client, server, singles


def plaintext_finished(record_seq: int) -> bytes:
    """A forged Finished in epoch 0, where the real one comes under the new keys."""
    layer = RecordLayer()
    layer.set_next_sequence_number(0, record_seq)
    return handshake_record(layer, HandshakeType.finished, CLIENT_FINISHED_SEQ, bytes(12))


# -- public state and guards ------------------------------------------------------------------


def test_a_new_connection_is_idle_without_error_or_activity() -> None:
    client, server = pair()
    for conn, role in ((client, "client"), (server, "server")):
        assert conn.state is ConnectionState.IDLE
        assert conn.error is None
        assert conn.last_activity == 0.0
        assert conn.retransmissions == 0
        assert not conn.closed
        assert repr(conn) == f"<DtlsConnection {role} IDLE>"


def test_connect_is_for_a_new_client_and_accept_for_a_new_server() -> None:
    client, server = pair()
    with pytest.raises(LocalProtocolError, match="accept"):
        client.accept(0.0)
    with pytest.raises(LocalProtocolError, match="connect"):
        server.connect(0.0)
    client.connect(0.0)
    server.accept(0.0)
    with pytest.raises(LocalProtocolError, match="connect"):
        client.connect(0.0)
    with pytest.raises(LocalProtocolError, match="accept"):
        server.accept(0.0)


CONFIG_HINT = "config must be a ClientConfig or a ServerConfig, got "
SESSION_HINT = "session must be a SessionState (SessionState.from_bytes(saved)), got bytes"
STORE_HINT = "session_store must be a SessionStore (with get, put and remove), got int"
DATA_HINT = "data must be bytes-like (bytes, bytearray, memoryview), got "


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, s: DtlsConnection(None), CONFIG_HINT + "None"),
        (lambda c, s: DtlsConnection({}), CONFIG_HINT + "dict"),
        (lambda c, s: DtlsConnection(c, session=b"saved"), SESSION_HINT),
        (lambda c, s: DtlsConnection(s, session_store=1), STORE_HINT),
        (lambda c, s: ServerEndpoint(c), "config must be a ServerConfig, got ClientConfig"),
        (lambda c, s: ServerEndpoint(None), "config must be a ServerConfig, got None"),
        (lambda c, s: ServerEndpoint(s, session_store=1), STORE_HINT),
        (lambda c, s: DtlsConnection(c).receive_datagram("abc", 0.0), DATA_HINT + "str"),
        (lambda c, s: DtlsConnection(c).receive_datagram(None, 0.0), DATA_HINT + "None"),
        (
            lambda c, s: ServerEndpoint(s).receive_datagram("abc", CLIENT_ADDR, 0.0),
            DATA_HINT + "str",
        ),
        (
            lambda c, s: ServerEndpoint(s).receive_datagram(None, CLIENT_ADDR, 0.0),
            DATA_HINT + "None",
        ),
    ],
)
def test_wrong_types_given_to_the_core_fail_at_the_call(
    call: Callable[[ClientConfig, ServerConfig], object], message: str
) -> None:
    """A one-line TypeError naming the argument and the type it takes, not an AttributeError
    from deep inside (or, for a session store, an error logged at every handshake)."""
    with pytest.raises(TypeError) as raised:
        call(*configs())
    assert str(raised.value) == message


def test_a_datagram_of_the_wrong_type_fails_on_an_association_too() -> None:
    """From a known address (past the gate) and on an established client; bytes-like data
    other than bytes is taken."""
    link = make_link()
    link.handshake()
    with pytest.raises(TypeError) as at_server:
        link.server.receive_datagram("abc", link.address, link.now)
    with pytest.raises(TypeError) as at_client:
        link.client.receive_datagram("abc", link.now)
    assert str(at_server.value) == str(at_client.value) == DATA_HINT + "str"
    for data in (bytearray(b"\x17\xfe\xfd"), memoryview(b"\x17\xfe\xfd")):
        link.server.receive_datagram(data, link.address, link.now)
        link.client.receive_datagram(data, link.now)
    assert established(link)


def test_a_client_that_has_not_connected_ignores_datagrams() -> None:
    other, server = started_pair()
    deliver(other, server)
    (answer,) = server.datagrams_to_send(0.0)
    idle, _ = pair()
    idle.receive_datagram(answer, 0.0)
    assert idle.state is ConnectionState.IDLE
    assert idle.datagrams_to_send(0.0) == []
    assert idle.next_event() is None


def test_a_server_connection_without_accept_begins_at_its_first_datagram() -> None:
    """Without an endpoint, the first datagram starts the server's handshake and its deadline
    (`config.handshake_timeout` from then)."""
    client, server = pair()
    client.connect(5.0)
    deliver(client, server, 5.0)
    assert server.state is ConnectionState.HANDSHAKING
    timeout = server.config.handshake_timeout
    server.handle_timer(5.0 + timeout - 0.5)
    assert server.state is ConnectionState.HANDSHAKING
    server.handle_timer(5.0 + timeout)
    assert server.state is ConnectionState.CLOSED
    assert isinstance(server.error, HandshakeTimeout)


def test_later_datagrams_do_not_move_the_handshake_deadline() -> None:
    client, server = started_pair()
    timeout = server.config.handshake_timeout
    later = timeout - 1.0
    client.handle_timer(later)  # the client repeats its ClientHello near the deadline
    deliver(client, server, later)
    server.handle_timer(timeout)
    assert isinstance(server.error, HandshakeTimeout)


def test_a_server_continues_the_numbering_of_a_client_hello_only() -> None:
    """RFC 6347 §4.2.2: the server's first message_seq is the ClientHello's; a forged
    plaintext message ahead of it (here a ClientKeyExchange numbered 5) sets nothing."""
    client, server = started_pair()
    forged = handshake_record(RecordLayer(), HandshakeType.client_key_exchange, 5, bytes(20))
    server.receive_datagram(forged, 0.0)
    assert server.state is ConnectionState.HANDSHAKING
    exchange(client, server)
    assert client.state is server.state is ConnectionState.ESTABLISHED


@pytest.mark.parametrize(
    ("hello_seq", "first_reply_seq"),
    [(ADOPTABLE_SEQUENCE_LIMIT - 1, ADOPTABLE_SEQUENCE_LIMIT - 1), (ADOPTABLE_SEQUENCE_LIMIT, 0)],
)
def test_a_client_hello_record_number_is_continued_only_below_2_to_the_40(
    hello_seq: int, first_reply_seq: int
) -> None:
    """RFC 6347 §4.2.1: the server's epoch-0 records continue from the ClientHello's record,
    unless its number is so high that continuing would near the end of the sequence space."""
    client, server = started_pair()
    (hello,) = client.datagrams_to_send(0.0)
    ((header, payload),) = records(hello)
    server.receive_datagram(header._replace(sequence_number=hello_seq).encode() + payload, 0.0)
    (reply, *_) = server.datagrams_to_send(0.0)
    ((first, _), *_) = records(reply)
    assert first.sequence_number == first_reply_seq


def test_a_chain_supplied_to_a_connection_not_waiting_for_one_is_ignored() -> None:
    client, server = started_pair()
    deliver(client, server)
    server.supply_certificate_chain((b"not asked for",), 0.0)
    assert server.state is ConnectionState.HANDSHAKING
    exchange(client, server)
    assert client.state is server.state is ConnectionState.ESTABLISHED


# -- handshake details ------------------------------------------------------------------------


def test_handshake_complete_says_extended_master_secret_and_whether_resumed() -> None:
    client, server = started_pair()
    exchange(client, server)
    for conn in (client, server):
        (done,) = [e for e in drain(conn) if isinstance(e, HandshakeComplete)]
        assert done.extended_master_secret is True
        assert done.resumed is False
    first = make_link()
    first.handshake()
    second = next_link(first)
    second.handshake()
    for side in ("client", "server"):
        (done,) = events_of(second, side, HandshakeComplete)
        assert done.resumed is True
        assert done.extended_master_secret is True


def test_a_finished_that_overtakes_its_change_cipher_spec_completes_at_the_right_time() -> None:
    _client, server, (key_exchange, ccs, finished) = up_to_client_flight()
    for record in (key_exchange, finished, ccs):
        server.receive_datagram(record, 7.0)
    assert server.state is ConnectionState.ESTABLISHED
    assert server.last_activity == 7.0
    assert server.get_timer() == 7.0 + FINAL_FLIGHT_HOLD  # its final flight is held


def test_plaintext_where_the_finished_belongs_is_dropped_and_counted_each_time() -> None:
    """RFC 6347 §4.1.2.7: a plaintext Finished is a forgery, before the ChangeCipherSpec
    (while it is awaited) and after it alike; the handshake goes on."""
    _client, server, (key_exchange, ccs, finished) = up_to_client_flight()
    server.receive_datagram(key_exchange, 0.0)
    for n in (1, 2):
        server.receive_datagram(plaintext_finished(100 + n), 0.0)
        assert server.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == n
    server.receive_datagram(ccs, 0.0)
    for n in (3, 4):
        server.receive_datagram(plaintext_finished(100 + n), 0.0)
        assert server.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == n
    assert server.state is ConnectionState.HANDSHAKING
    server.receive_datagram(finished, 0.0)
    assert server.state is ConnectionState.ESTABLISHED


#: Handshake record payloads that do not parse (RFC 6347 §4.2.2): a header cut short, and a
#: fragment of 12 bytes with 4 in the record.
MALFORMED_HANDSHAKE = (
    bytes([HandshakeType.finished, 0, 0, 12, 0]),
    handshake_header(HandshakeType.finished, CLIENT_FINISHED_SEQ, 12, 0, 12) + bytes(4),
)


PLAINTEXT_FORGERIES = [
    *((ContentType.handshake, payload) for payload in MALFORMED_HANDSHAKE),
    (ContentType.alert, b"\x02\x28"),
    (ContentType.alert, b"\x01\x00"),
    (ContentType.alert, b"\x02"),
]


@pytest.mark.req("REC-3")
@pytest.mark.parametrize(
    ("content_type", "payload"),
    PLAINTEXT_FORGERIES,
    ids=["short-header", "short-fragment", "fatal-alert", "close-notify", "malformed-alert"],
)
def test_plaintext_after_the_change_cipher_spec_is_dropped_and_counted(
    content_type: ContentType, payload: bytes
) -> None:
    """RFC 6347 §4.1.2.7: after its ChangeCipherSpec the peer sends under its new keys, so an
    epoch-0 record (a malformed handshake message; an alert, fatal, close_notify or one that
    does not parse) is a forgery or a stale copy: dropped and counted, the handshake goes on.
    Before it, the peer's plaintext ends the association (a malformed message: decode_error)."""
    _client, server, (key_exchange, ccs, finished) = up_to_client_flight()
    forger = RecordLayer()
    forger.set_next_sequence_number(0, 100)
    server.receive_datagram(key_exchange, 0.0)
    server.receive_datagram(ccs, 0.0)
    for n in (1, 2):
        server.receive_datagram(forger.seal(content_type, payload, 0), 0.0)
        assert server.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == n
        assert server.state is ConnectionState.HANDSHAKING
    assert server.datagrams_to_send(0.0) == []
    server.receive_datagram(finished, 0.0)
    assert server.state is ConnectionState.ESTABLISHED

    _client, server, (key_exchange, _ccs, _finished) = up_to_client_flight()
    server.receive_datagram(key_exchange, 0.0)
    server.receive_datagram(forger.seal(content_type, payload, 0), 0.0)
    assert server.state is ConnectionState.CLOSED
    if content_type is ContentType.handshake:
        assert isinstance(server.error, AlertSent)
        assert server.error.alert is AlertDescription.decode_error


def test_every_record_of_an_epoch_the_peer_left_is_dropped_but_a_repeated_ccs() -> None:
    """RFC 6347 §4.1.2.7: after the peer's ChangeCipherSpec, any record of epoch 0 (data and
    heartbeats too, and a well-formed repeat of its flight, which asks for no resend: the peer
    has ours) is dropped unread, as once established; a repeated ChangeCipherSpec is counted
    as unexpected."""
    _client, server, (key_exchange, ccs, finished) = up_to_client_flight()
    server.receive_datagram(key_exchange, 0.0)
    server.receive_datagram(ccs, 0.0)
    forger = RecordLayer()
    forger.set_next_sequence_number(0, 100)
    for content_type, payload in [
        (ContentType.application_data, b"late"),
        (ContentType.heartbeat, b"\x01\x00\x00"),
    ]:
        server.receive_datagram(forger.seal(content_type, payload, 0), 0.0)
    server.receive_datagram(key_exchange, 1.0)
    server.receive_datagram(ccs, 1.0)
    assert server.dropped == {
        DropReason.PLAINTEXT_AFTER_HANDSHAKE: 3, DropReason.UNEXPECTED_CCS: 1
    }
    assert server.discards[HeartbeatDrop.DURING_HANDSHAKE] == 0
    assert server.datagrams_to_send(1.0) == []
    server.receive_datagram(finished, 1.0)
    assert server.state is ConnectionState.ESTABLISHED


def test_records_the_handshake_does_not_take_are_counted_each_time() -> None:
    client, server = started_pair()
    deliver(client, server)
    forger = RecordLayer()
    for n in (1, 2):
        server.receive_datagram(forger.seal(ContentType.application_data, b"early", 0), 0.0)
        server.receive_datagram(forger.seal(ContentType.change_cipher_spec, b"\x01", 0), 0.0)
        server.receive_datagram(forger.seal(ContentType.heartbeat, b"\x01\x00\x00", 0), 0.0)
        assert server.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == n
        assert server.dropped[DropReason.UNEXPECTED_CCS] == n
        assert server.discards[HeartbeatDrop.DURING_HANDSHAKE] == n
    assert server.state is ConnectionState.HANDSHAKING


def test_a_repeated_flight_triggers_a_retransmission_again_exactly_a_quarter_timer_later() -> None:
    """RFC 6347 §4.2.4: a repeat of the peer's flight means ours was lost; answered at most once
    per quarter of the initial timer (here 1 s: 0.25 s)."""
    client, server = started_pair()
    deliver(client, server)
    server.datagrams_to_send(0.0)  # flight 4, lost
    quarter = server.config.retransmit.initial / 4
    for when, client_time in ((1.0, 1.0), (1.0 + quarter, 3.0)):
        client.handle_timer(client_time)  # the client repeats its ClientHello
        repeats = client.datagrams_to_send(client_time)
        assert repeats
        for datagram in repeats:
            server.receive_datagram(datagram, when)
        assert server.datagrams_to_send(when), f"no retransmission at {when}"
    assert server.retransmissions == 2


def test_retransmissions_counts_the_resends_the_peer_asked_for_not_the_timer_ones() -> None:
    """`retransmissions` counts the flights resent because the peer repeated its own (RFC 6347
    §4.2.4), not the resends of our timer (§4.2.4.1)."""
    client, server = started_pair()
    deliver(client, server)
    server.datagrams_to_send(0.0)  # flight 4, lost
    for when in (1.0, 3.0, 7.0, 15.0):
        server.handle_timer(when)
        assert server.datagrams_to_send(when)  # resent by the timer (lost too)
    assert server.retransmissions == 0
    client.handle_timer(1.0)  # the client repeats its ClientHello
    deliver(client, server, 16.0)
    assert server.datagrams_to_send(16.0)
    assert server.retransmissions == 1


@pytest.mark.req("HS-4")
def test_a_resend_for_a_repeated_flight_restarts_the_timer_with_its_interval() -> None:
    """RFC 6347 §4.2.4: on the peer's repeated flight we resend ours and reset the retransmit
    timer: the next timer resend comes a whole interval later (not at the old deadline), and
    the interval stays what it was (2 s after one back-off: neither doubled nor reset)."""
    client, server = started_pair()
    deliver(client, server)
    server.datagrams_to_send(0.0)  # flight 4, lost
    server.handle_timer(1.0)
    assert server.datagrams_to_send(1.0)  # resent by the timer (lost too), which is now 2 s
    assert server.get_timer() == 3.0
    client.handle_timer(1.0)  # the client repeats its ClientHello
    for datagram in client.datagrams_to_send(1.0):
        server.receive_datagram(datagram, 1.5)
    assert server.datagrams_to_send(1.5)
    assert server.get_timer() == 3.5
    server.handle_timer(3.0)
    assert server.datagrams_to_send(3.0) == []
    server.handle_timer(3.5)
    assert server.datagrams_to_send(3.5)
    assert server.get_timer() == 3.5 + 4.0


def test_a_new_handshake_message_after_the_handshake_is_unexpected() -> None:
    """HS-5: after the handshake, a repeat of the peer's last message is dropped, a new
    message (other than a renegotiation request) ends the association."""
    client, server = established_pair()
    layer = record_layer(client)
    repeat = handshake_record(layer, HandshakeType.finished, CLIENT_FINISHED_SEQ, bytes(12), 1)
    server.receive_datagram(repeat, 1.0)
    assert server.state is ConnectionState.ESTABLISHED
    new = handshake_record(layer, HandshakeType.finished, CLIENT_FINISHED_SEQ + 1, bytes(12), 1)
    server.receive_datagram(new, 1.0)
    assert isinstance(server.error, AlertSent)
    assert server.error.alert is AlertDescription.unexpected_message


# -- after the handshake ----------------------------------------------------------------------


def test_every_application_record_of_a_datagram_is_delivered() -> None:
    client, server = established_pair()
    client.send(b"one")
    client.send(b"two")
    datagrams = client.datagrams_to_send(1.0)
    assert len(datagrams) == 2
    server.receive_datagram(b"".join(datagrams), 1.0)
    assert drain(server) == [DataReceived(b"one"), DataReceived(b"two")]


def test_records_after_a_warning_alert_in_the_same_datagram_are_delivered() -> None:
    client, server = established_pair()
    layer = record_layer(client)
    warning = Alert(AlertLevel.WARNING, AlertDescription.user_canceled).encode()
    datagram = layer.seal(ContentType.alert, warning, 1) + layer.seal(
        ContentType.application_data, b"after", 1
    )
    server.receive_datagram(datagram, 1.0)
    assert drain(server) == [
        AlertReceived(AlertDescription.user_canceled), DataReceived(b"after")
    ]
    assert server.state is ConnectionState.ESTABLISHED


def test_close_notify_is_answered_with_close_notify() -> None:
    client, server = established_pair()
    client.close()
    deliver(client, server, 1.0)
    assert server.state is ConnectionState.CLOSED
    (answer,) = server.datagrams_to_send(1.0)
    (record,) = record_layer(client).open_datagram(answer)
    alert = Alert.decode(record.payload)
    assert (alert.level, alert.description) == (
        AlertLevel.WARNING, AlertDescription.close_notify
    )


def cached_pair(
    store: MemorySessionStore, session: SessionState | None = None, now: float = 0.0
) -> tuple[DtlsConnection, DtlsConnection]:
    """A client (offering `session`, if any) and a server keeping its sessions in `store`,
    started at `now`."""
    client_config, server_config = configs()
    client = DtlsConnection(client_config, session=session)
    server = DtlsConnection(server_config, session_store=store)
    client.connect(now)
    server.accept(now)
    return client, server


def test_a_fatal_close_notify_is_a_fatal_alert_and_ends_the_session() -> None:
    """RFC 5246 §7.2: a fatal alert ends the association at once and invalidates its session,
    whatever its description: a close_notify at level fatal is no clean close, and gets no
    close_notify back."""
    store = MemorySessionStore()
    client, server = cached_pair(store)
    exchange(client, server)
    assert server.session is not None and len(store) == 1
    fatal = Alert(AlertLevel.FATAL, AlertDescription.close_notify).encode()
    server.receive_datagram(record_layer(client).seal(ContentType.alert, fatal, 1), 1.0)
    assert server.state is ConnectionState.CLOSED
    assert isinstance(server.error, AlertReceivedError)
    assert server.error.alert is AlertDescription.close_notify
    assert server.session is None and len(store) == 0
    assert server.datagrams_to_send(1.0) == []


def test_a_close_notify_during_the_handshake_ends_it_with_alert_received() -> None:
    """RFC 5246 §7.2.1: the peer's close_notify (plaintext, epoch 0) answering the ClientHello
    fails the handshake, and the core says so: AlertReceived(close_notify), not a clean close;
    it is answered with close_notify."""
    client, _server = started_pair()
    client.datagrams_to_send(0.0)
    close_notify = Alert(AlertLevel.WARNING, AlertDescription.close_notify).encode()
    client.receive_datagram(RecordLayer().seal(ContentType.alert, close_notify, 0), 1.0)
    assert client.state is ConnectionState.CLOSED
    assert isinstance(client.error, AlertReceivedError)
    assert client.error.alert is AlertDescription.close_notify
    assert drain(client) == [ConnectionClosed(client.error, client.peer)]
    (answer,) = client.datagrams_to_send(1.0)
    (record,) = RecordLayer().open_datagram(answer)
    assert Alert.decode(record.payload) == Alert(AlertLevel.WARNING, AlertDescription.close_notify)


def test_a_close_notify_during_a_resumption_leaves_the_session_resumable() -> None:
    """A warning-level close_notify is no fatal alert (RFC 5246 §7.2.1, §7.2.2): the session
    an abbreviated handshake was resuming stays in the server's cache, so a forged one cannot
    evict it."""
    store = MemorySessionStore()
    client, server = cached_pair(store)
    exchange(client, server)
    session = client.session
    assert session is not None and len(store) == 1
    client, server = cached_pair(store, session, 1.0)
    deliver(client, server, 1.0)
    assert server.resumed and server.state is ConnectionState.HANDSHAKING
    close_notify = Alert(AlertLevel.WARNING, AlertDescription.close_notify).encode()
    server.receive_datagram(RecordLayer().seal(ContentType.alert, close_notify, 0), 1.0)
    assert isinstance(server.error, AlertReceivedError)
    assert server.error.alert is AlertDescription.close_notify
    assert len(store) == 1


def exhausted(conn: DtlsConnection) -> None:
    """Use up the last record number of `conn`'s write epoch 1 (RFC 6347 §4.1)."""
    record_layer(conn).set_next_sequence_number(1, MAX_SEQUENCE_NUMBER - 1)
    conn.send(b"last")
    conn.datagrams_to_send(1.0)


@pytest.mark.parametrize("request_kind", ["close_notify", "renegotiation"])
def test_an_answer_past_the_last_record_number_abandons_the_association(
    request_kind: str,
) -> None:
    """RFC 6347 §4.1: a sequence number never wraps. A peer's record we answer (its
    close_notify, a renegotiation request) when our numbers are used up ends the association
    with `SequenceNumbersExhausted`, sending nothing; receive_datagram does not raise."""
    client, server = established_pair()
    exhausted(server)
    layer = record_layer(client)
    if request_kind == "close_notify":
        close_notify = Alert(AlertLevel.WARNING, AlertDescription.close_notify).encode()
        datagram = layer.seal(ContentType.alert, close_notify, 1)
    else:
        datagram = handshake_record(layer, HandshakeType.client_hello, 0, bytes(40), 1)
    server.receive_datagram(datagram, 2.0)
    assert server.state is ConnectionState.CLOSED
    assert isinstance(server.error, SequenceNumbersExhausted)
    assert str(server.error) == (
        "association abandoned: sequence numbers of epoch 1 are exhausted (RFC 6347 §4.1)"
    )
    assert server.datagrams_to_send(2.0) == []
    assert drain(server) == [ConnectionClosed(server.error, server.peer)]


def test_closing_past_the_last_record_number_ends_the_association_without_its_alert() -> None:
    """close() with our numbers used up cannot send close_notify (RFC 6347 §4.1); it still ends
    the association instead of raising and leaving it open."""
    _client, server = established_pair()
    exhausted(server)
    server.close()
    assert server.state is ConnectionState.CLOSED and server.error is None
    assert server.datagrams_to_send(2.0) == []
    assert drain(server) == [ConnectionClosed(None, server.peer)]


def test_a_heartbeat_resend_past_the_last_record_number_abandons_the_association() -> None:
    """The same for a resend on our timer (RFC 6520 §3): handle_timer does not raise."""
    client, _server = established_pair(client={"heartbeat": True}, server={"heartbeat": True})
    client.send_heartbeat(1.0)
    client.datagrams_to_send(1.0)  # lost
    exhausted(client)
    when = client.get_timer()
    assert when is not None
    client.handle_timer(when)
    assert client.state is ConnectionState.CLOSED
    assert isinstance(client.error, SequenceNumbersExhausted)
    assert client.datagrams_to_send(when) == []


def test_sending_past_the_last_record_number_raises_and_abandons_the_association() -> None:
    """RFC 6347 §4.1: send() with our numbers used up raises `SequenceNumbersExhausted` (the
    one exception for it, not the record layer's) and ends the association with it: it does
    not stay established, sending nothing."""
    _client, server = established_pair()
    exhausted(server)
    with pytest.raises(SequenceNumbersExhausted) as info:
        server.send(b"one too many")
    assert info.value.epoch == 1
    assert server.state is ConnectionState.CLOSED and server.error is info.value
    assert server.datagrams_to_send(2.0) == []
    assert drain(server) == [ConnectionClosed(info.value, server.peer)]
    with pytest.raises(AssociationEnded) as late:
        server.send(b"again")
    assert late.value.error is info.value and late.value.__cause__ is info.value
    assert str(late.value) == (
        "cannot send application data: the association ended with SequenceNumbersExhausted: "
        f"{info.value}"
    )


@pytest.mark.parametrize("closer", ["ours", "peer"])
def test_send_after_a_clean_close_says_who_closed_and_is_a_dtls_error(closer: str) -> None:
    """It said "cannot send application data in state CLOSED", a `LocalProtocolError` only: a
    sensor catching `DtlsError` to connect again missed it."""
    client, server = established_pair()
    if closer == "ours":
        client.close()
        why = "the association was closed (close())"
    else:
        server.close()
        deliver(server, client)
        why = "the peer closed the association (close_notify)"
    assert client.state is ConnectionState.CLOSED and client.error is None
    with pytest.raises(AssociationEnded) as late:
        client.send(b"late")
    assert str(late.value) == f"cannot send application data: {why}"
    assert late.value.by_peer is (closer == "peer")
    assert isinstance(late.value, DtlsError) and isinstance(late.value, LocalProtocolError)


def test_a_heartbeat_request_past_the_last_record_number_raises_and_abandons() -> None:
    """The same for send_heartbeat (RFC 6520 §3)."""
    client, _server = established_pair(client={"heartbeat": True}, server={"heartbeat": True})
    exhausted(client)
    with pytest.raises(SequenceNumbersExhausted) as info:
        client.send_heartbeat(1.0)
    assert client.state is ConnectionState.CLOSED and client.error is info.value
    assert client.datagrams_to_send(1.0) == []


def test_a_heartbeat_request_larger_than_our_mtu_is_answered_whole() -> None:
    """RFC 6520 §4: the response MUST carry an exact copy of the request's payload, and
    requests probe the path MTU (§5.1): `mtu` bounds what we originate, not this answer (§4's
    "payload_length too large" is one beyond the record, dropped as malformed)."""
    client, server = established_pair(client={"heartbeat": True},
                                      server={"heartbeat": True, "mtu": MAX_MTU})
    payload = bytes(range(256)) * 16
    server._send_heartbeat_message(HeartbeatMessage(
        HeartbeatMessageType.heartbeat_request, payload, bytes(16)).encode())
    (request,) = server.datagrams_to_send(0.0)
    client.receive_datagram(request, 0.0)
    (answer,) = client.datagrams_to_send(0.0)
    [(header, _)] = records(answer)
    assert header.content_type == ContentType.heartbeat
    # The payload and the least padding, as the request: as large, beyond the client's mtu.
    assert len(answer) == len(request) > client.config.mtu == 1232


def test_heartbeats_one_side_refused_are_not_negotiated_on_either() -> None:
    """RFC 6520 §2: heartbeats run only when both hellos carry the extension; a server
    configured without them keeps no heartbeat state (memory per association, issue 9)."""
    client, server = established_pair(client={"heartbeat": True})
    assert not client.heartbeats_negotiated
    assert not server.heartbeats_negotiated
    assert server._heartbeats is None
    with pytest.raises(LocalProtocolError, match="heartbeat"):
        server.send_heartbeat(1.0)


def test_a_datagram_over_the_mtu_but_within_the_fragment_limit_names_the_mtu() -> None:
    """With an MTU below the negotiated max_fragment_length, `send` of exactly that length
    fails on the MTU, and the error says so (not the max_fragment_length)."""
    client, _ = established_pair(client={"max_fragment_length": 512, "mtu": 300})
    assert client.max_fragment_length == 512
    with pytest.raises(DatagramTooLarge, match="MTU of 300") as raised:
        client.send(bytes(512))
    assert raised.value.size == 512


def test_a_memoryview_of_any_format_is_sent_as_its_bytes() -> None:
    """A view's len() counts its items: `send` sizes and seals its bytes (`nbytes`), so a view
    of 2-byte or 4-byte items goes out whole (the cipher refused it: "Cannot convert"), one too
    large names its size in bytes, and one that is not contiguous is refused in one line
    (probe CE F1), and so is one released already (Python's ValueError, probe CF F4)."""
    client, server = established_pair()
    client.send(memoryview(array("H", [0x4141, 0x4242])))
    client.send(memoryview(b"abcd").cast("I"))
    client.send(memoryview(bytes(range(6))).cast("B", [2, 3]))
    server.receive_datagram(b"".join(client.datagrams_to_send(1.0)), 1.0)
    assert drain(server) == [
        DataReceived(b"AABB"), DataReceived(b"abcd"), DataReceived(bytes(range(6)))
    ]
    fits = client.max_send_size
    with pytest.raises(DatagramTooLarge) as raised:
        client.send(memoryview(array("Q", [1] * (fits // 8 + 1))))
    assert raised.value.size == (fits // 8 + 1) * 8
    with pytest.raises(TypeError) as refused:
        client.send(memoryview(b"abcdef")[::2])
    assert str(refused.value) == (
        "data is a memoryview that is not contiguous: pass bytes(data), or a contiguous view"
    )
    with pytest.raises(TypeError) as refused:
        client.send(RELEASED[0])
    assert str(refused.value) == RELEASED[1]
    assert client.datagrams_to_send(1.0) == []


def test_an_authentic_handshake_record_over_the_fragment_limit_is_record_overflow() -> None:
    """RFC 6066 §4: during the handshake too, once the hellos agreed on the limit, a record
    over it that authenticates ends the association, and the error gives both sizes."""
    client, server, (key_exchange, _, _) = up_to_client_flight({"max_fragment_length": 512})
    server.receive_datagram(key_exchange, 0.0)
    oversized = record_layer(client).seal(ContentType.handshake, bytes(513), 1)
    server.receive_datagram(oversized, 0.0)
    assert isinstance(server.error, AlertSent)
    assert server.error.alert is AlertDescription.record_overflow
    assert server.error.reason == (
        "a 513-byte record exceeds the negotiated max_fragment_length of 512 bytes"
    )


def test_the_held_final_flight_times_out_before_a_later_keep_alive() -> None:
    """The server that sent the last flight keeps it for FINAL_FLIGHT_HOLD (RFC 6347 §4.2.4);
    its timer is the earlier of that and the heartbeat keep-alive."""
    _client, server = established_pair(
        client={"heartbeat": True},
        server={"heartbeat": True, "keepalive_interval": 10 * FINAL_FLIGHT_HOLD},
    )
    assert server.heartbeats_negotiated
    assert server.get_timer() == FINAL_FLIGHT_HOLD


@pytest.mark.parametrize("log_failures", [True, False])
def test_a_server_endpoints_associations_log_their_failures_as_it_says(
    log_failures: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`ServerEndpoint.log_failures` is handed to each association it makes: a failure
    logged at DEBUG by default, not for an adapter that logs each end itself."""
    caplog.set_level(logging.DEBUG, logger="iotdtls")
    link = make_link(client={"psk": bytes(16)})  # a wrong key: the server's Finished check fails
    link.server.log_failures = log_failures
    link.handshake()
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert closed.error is not None
    assert (f"association failed: {closed.error}" in caplog.messages) is log_failures


def test_a_failed_association_says_why_in_the_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="iotdtls")
    client, server = established_pair()
    assert caplog.messages.count(  # TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655)
        "handshake complete: suite 0xc0a8, ems=True, resumed=False"
    ) == 2
    layer = record_layer(client)
    new = handshake_record(layer, HandshakeType.finished, CLIENT_FINISHED_SEQ + 1, bytes(12), 1)
    server.receive_datagram(new, 1.0)
    assert isinstance(server.error, AlertSent)
    assert f"association failed: {server.error}" in caplog.messages
    closed = [e for e in drain(server) if isinstance(e, ConnectionClosed)]
    assert [e.error for e in closed] == [server.error]


def test_the_handshake_line_names_the_negotiated_max_fragment_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: `-v` shows what each handshake negotiated; the client's line (this one) left out
    the max_fragment_length (RFC 6066 §4) that only the server's INFO line named."""
    caplog.set_level(logging.DEBUG, logger="iotdtls")
    established_pair(client={"max_fragment_length": 512})
    assert caplog.messages.count(
        "handshake complete: suite 0xc0a8, ems=True, resumed=False, max_fragment_length 512"
    ) == 2


def test_certificate_urls_are_reported_as_soon_as_their_message_is_handled() -> None:
    """RFC 6066 §5: the server fetches the client's chain while the rest of the flight is on
    its way: `CertificateUrlsReceived` comes with the CertificateURL's record, not later."""
    client_options, server_options, _ = url_setup({})
    link = x509_link(client=client_options, server=server_options)
    client, server = started(link.client_config, link.server_config)
    deliver(client, server)
    deliver(server, client)
    flight = [r for d in client.datagrams_to_send(0.0) for r in single_records(d)]
    url_at = next(
        i for i, r in enumerate(flight)
        if r[0] == ContentType.handshake and r[13] == HandshakeType.certificate_url
    )
    for record in flight[:url_at]:
        server.receive_datagram(record, 0.0)
    drain(server)
    server.receive_datagram(flight[url_at], 0.0)
    (reported,) = drain(server)
    assert isinstance(reported, CertificateUrlsReceived)
    assert [url for url, _ in reported.urls_and_hashes] == client_options["certificate_urls"]
    for record in flight[url_at + 1 :]:
        server.receive_datagram(record, 0.0)
    assert drain(server) == []  # once, not again with each message after it


def test_a_flight_resent_after_the_new_keys_came_keeps_to_the_fragment_limit() -> None:
    """RFC 6066 §4 with RFC 6347 §4.2.4: the server resends its certificate flight (epoch 0)
    after the client's key exchange installed epoch 1's keys but its Finished was lost: each
    datagram still holds at most one whole record of the limit, with epoch 0's overhead."""
    link = x509_link(client={"max_fragment_length": 512})
    client, server = started(link.client_config, link.server_config)
    deliver(client, server)
    first = server.datagrams_to_send(0.0)
    for datagram in first:
        client.receive_datagram(datagram, 0.0)
    flight = [r for d in client.datagrams_to_send(0.0) for r in single_records(d)]
    ccs_at = next(i for i, r in enumerate(flight) if r[0] == ContentType.change_cipher_spec)
    for record in flight[:ccs_at]:  # the ChangeCipherSpec and the Finished are lost
        server.receive_datagram(record, 0.0)
    assert record_layer(server).write_epoch == 1  # the client's key exchange was taken
    server.handle_timer(server.config.retransmit.initial)
    again = server.datagrams_to_send(server.config.retransmit.initial)
    assert len(again) == len(first) > 1
    assert max(map(len, again)) == 512 + RECORD_HEADER_LEN


def test_without_a_fragment_limit_a_flight_fills_a_datagram_as_large_as_the_mtu() -> None:
    """The cap of one whole record per datagram applies under a negotiated max_fragment_length
    only (RFC 6066 §4): with an MTU of 65,507 bytes (loopback) and none, a certificate flight
    over 2^14 bytes goes in records of at most 2^14 bytes but in one datagram."""
    anchor, cas = pki.ca_chain(45)
    leaf = pki.server_leaf(cas[-1])
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    chain = pki.chain_der(leaf, *reversed(cas))
    assert sum(map(len, chain)) > MAX_PLAINTEXT_LENGTH
    client, server = started(
        ClientConfig(trust_anchors=[anchor.der], server_name="localhost", mtu=MAX_MTU),
        ServerConfig(certificates=[CertifiedKey(chain, PrivateKey(leaf.key))], mtu=MAX_MTU),
    )
    deliver(client, server)
    (flight,) = server.datagrams_to_send(0.0)
    in_flight = records(flight)
    assert len(in_flight) > 1
    assert max(len(payload) for _, payload in in_flight) <= MAX_PLAINTEXT_LENGTH


def test_plaintext_held_behind_a_fetched_chain_is_dropped_when_the_change_cipher_spec_applies(
) -> None:
    """RFC 6347 §4.1.2.7 with RFC 6066 §5: while the server fetches the client's chain it
    holds the CertificateVerify and the ChangeCipherSpec behind it; a plaintext Finished that
    came meanwhile lies in the epoch the peer then leaves: dropped and counted once, and the
    genuine Finished completes the handshake."""
    served: dict[str, bytes] = {}
    client_options, server_options, _ = url_setup(served)
    link = x509_link(client=client_options, server=server_options)
    client, server = started(link.client_config, link.server_config)
    deliver(client, server)
    deliver(server, client)
    flight = [r for d in client.datagrams_to_send(0.0) for r in single_records(d)]
    for record in flight[:-1]:  # all but the Finished: the CertificateVerify and CCS wait
        server.receive_datagram(record, 0.0)
    assert server._handshake.waiting_for_chain
    forger = RecordLayer()
    forger.set_next_sequence_number(0, 100)
    finished_seq = server._reassembler.next_seq + 1
    server.receive_datagram(
        handshake_record(forger, HandshakeType.finished, finished_seq, bytes(12)), 0.0
    )
    assert server.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 0
    chain = tuple(served[url] for url in client_options["certificate_urls"])
    server.supply_certificate_chain(chain, 0.0)
    assert server.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
    assert server.state is ConnectionState.HANDSHAKING
    server.receive_datagram(flight[-1], 0.0)
    assert server.state is ConnectionState.ESTABLISHED


def test_a_psk_client_works_out_its_identity_and_key_exchange_once_per_configuration() -> None:
    """Every handshake of one `ClientConfig` in PSK mode sends the same ClientKeyExchange and
    derives from the same premaster secret (RFC 4279 §2), and hands out the same `peer`: made
    once per configuration (`psk_key_exchange`, `psk_peer`), not per handshake."""
    client, server = configs()
    peers = []
    for _ in range(2):
        link = MemoryLink(client, server)
        link.handshake()
        (complete,) = events_of(link, "client", HandshakeComplete)
        peers.append(complete.peer)
    assert peers[0] is peers[1]
    assert peers[0] == PskIdentity(IDENTITY)
    body, premaster = client.psk_key_exchange
    assert body == len(IDENTITY).to_bytes(2, "big") + IDENTITY
    assert premaster == psk_premaster_secret(KEY)
