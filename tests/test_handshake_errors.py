"""The handshake state machines refuse what does not belong (RFC 5246 §7.2, RFC 6347 §4.2).

Unexpected messages end the association with a fatal unexpected_message alert (HS-5) that the
peer receives as a typed error (ERR-1); application data before completion is dropped and
counted; no handshake completes without ChangeCipherSpec or with a bad Finished (RFC 5246
§7.4.9: decrypt_error); an unknown PSK identity looks like a wrong key (PSK-4, RFC 4279 §2 as
amended by the profile); renegotiation is refused (RFC 5746, EXT-4) and DTLS 1.0 is refused
(REC-5).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

import pytest

import iotdtls.connection
import iotdtls.errors
import iotdtls.handshake.keyexchange
import iotdtls.handshake.keyschedule
import iotdtls.handshake.server
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.connection import ConnectionState, DropReason, DtlsConnection
from iotdtls.crypto import BadTag, Ccm8Protector, NullProtector
from iotdtls.endpoint import GateOutcome, ServerEndpoint
from iotdtls.errors import AlertDescription, AlertLevel, AlertReceived, AlertSent
from iotdtls.events import AlertReceived as AlertEvent
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.handshake.alerts import PSK_MODE_ALERTS
from iotdtls.handshake.client import ClientHandshake, ClientState
from iotdtls.handshake.flight import Flight, OutgoingCcs, OutgoingMessage
from iotdtls.handshake.machine import Outcome
from iotdtls.handshake.reassembly import HandshakeMessage
from iotdtls.handshake.server import ServerHandshake
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    Alert,
    CipherSuite,
    ClientHello,
    ClientKeyExchangePsk,
    ExtendedMasterSecret,
    Extension,
    HandshakeType,
    HelloVerifyRequest,
    RenegotiationInfo,
    ServerKeyExchangePsk,
)
from iotdtls.record import ContentType, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    FateFn,
    LegacyClient,
    MemoryLink,
    established,
    events_of,
    handshake_record,
    injecting_server,
    make_link,
    next_send_seq,
    plain_alert,
    plain_handshake,
    record_layer,
    records,
    wire_from,
)

UNEXPECTED = AlertDescription.unexpected_message


def assert_failed_with(conn: DtlsConnection, alert: AlertDescription) -> None:
    """`conn` sent the fatal `alert` and reported it as a typed error (ERR-1)."""
    assert conn.state is ConnectionState.CLOSED
    assert isinstance(conn.error, AlertSent)
    assert conn.error.alert is alert


def assert_link_failed(link: MemoryLink, sender: Direction, alert: AlertDescription) -> None:
    """One side sent the fatal alert; the other received it as ConnectionClosed(AlertReceived)."""
    receiver: Direction = "server" if sender == "client" else "client"
    sent = events_of(link, sender, ConnectionClosed)
    got = events_of(link, receiver, ConnectionClosed)
    assert len(sent) == 1 and isinstance(sent[0].error, AlertSent), link.client_events
    assert sent[0].error.alert is alert
    assert len(got) == 1 and isinstance(got[0].error, AlertReceived), got
    assert got[0].error.alert is alert


def client_hello(
    version: int = DTLS_1_2, extensions: tuple[Extension, ...] | None = None
) -> ClientHello:
    return ClientHello(
        client_version=version,
        random=bytes(range(32)),
        session_id=b"",
        cookie=b"",
        cipher_suites=(CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,),
        compression_methods=(0,),
        extensions=(RenegotiationInfo(b""), ExtendedMasterSecret())
        if extensions is None
        else extensions,
    )


def alert_of(datagram: bytes) -> tuple[int, int]:
    alert = plain_alert(datagram)
    assert alert is not None, datagram.hex()
    return alert.level, alert.description


# -- unexpected messages (HS-5, ERR-1) ------------------------------------------------------------


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize(
    ("msg_type", "body"),
    [
        (HandshakeType.finished, bytes(12)),
        (HandshakeType.server_hello_done, b""),
        (HandshakeType.client_hello, client_hello().encode()),
    ],
)
def test_client_refuses_message_in_place_of_server_hello(msg_type: int, body: bytes) -> None:
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(0.0)
    client.datagrams_to_send(0.0)
    client.receive_datagram(handshake_record(RecordLayer(), msg_type, 0, body), 0.0)
    assert_failed_with(client, UNEXPECTED)
    (out,) = client.datagrams_to_send(0.0)
    assert alert_of(out) == (AlertLevel.FATAL, UNEXPECTED)
    event = client.next_event()
    assert isinstance(event, ConnectionClosed) and event.error is client.error


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize(
    "extra",
    [
        # A second ServerKeyExchange: one is tolerated (an identity hint, PSK-3), two are not.
        [(HandshakeType.server_key_exchange, ServerKeyExchangePsk(b"").encode())] * 2,
        # A HelloVerifyRequest after the ServerHello.
        [(HandshakeType.hello_verify_request, HelloVerifyRequest(DTLS_1_0, b"c" * 16).encode())],
        # A ClientKeyExchange sent by the server.
        [(HandshakeType.client_key_exchange, ClientKeyExchangePsk(b"x").encode())],
    ],
    ids=["second-server-key-exchange", "hello-verify-after-server-hello", "client-key-exchange"],
)
def test_client_refuses_unexpected_message_in_server_flight(
    monkeypatch: pytest.MonkeyPatch, extra: list[tuple[int, bytes]]
) -> None:
    monkeypatch.setattr(iotdtls.connection, "ServerHandshake", injecting_server(extra))
    link = make_link()
    link.handshake()
    assert_link_failed(link, "client", UNEXPECTED)
    assert alert_of(wire_from(link, "client")[-1]) == (AlertLevel.FATAL, UNEXPECTED)
    assert link.server.connections == {}


def extra_before_change_cipher_spec(outcome: Outcome, extra: tuple[int, bytes]) -> Outcome:
    """`outcome`'s flight with the message `extra` (type, body), in epoch 0, numbered where
    the Finished was, between the last message and the ChangeCipherSpec; the Finished moves
    one message_seq on."""
    assert outcome.flight is not None
    *before, ccs, finished = outcome.flight.items
    assert isinstance(ccs, OutgoingCcs) and isinstance(finished, OutgoingMessage)
    seq = finished.message_seq
    moved = OutgoingMessage(finished.msg_type, seq + 1, finished.body, finished.epoch)
    added = OutgoingMessage(extra[0], seq, extra[1], 0)
    flight = Flight((*before, added, ccs, moved), final=outcome.flight.final)
    return Outcome(flight, outcome.keys)


class ClientWithExtraMessage(ClientHandshake):
    """Flight 5 with a second ClientKeyExchange before the ChangeCipherSpec."""

    def _on_server_hello_done(self, msg: HandshakeMessage) -> Outcome:
        outcome = super()._on_server_hello_done(msg)
        self.send_seq += 1
        cke = ClientKeyExchangePsk(IDENTITY).encode()
        return extra_before_change_cipher_spec(outcome, (HandshakeType.client_key_exchange, cke))


class ServerWithExtraMessage(ServerHandshake):
    """Flight 6 with a ServerHelloDone before the ChangeCipherSpec."""

    def _on_finished_then_ours(self, msg: HandshakeMessage) -> Outcome:
        outcome = super()._on_finished_then_ours(msg)
        self.send_seq += 1
        return extra_before_change_cipher_spec(outcome, (HandshakeType.server_hello_done, b""))


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize("sender", ["client", "server"])
def test_a_message_numbered_where_the_change_cipher_spec_is_due_is_unexpected(
    monkeypatch: pytest.MonkeyPatch, sender: Direction
) -> None:
    """RFC 5246 §7.4: messages out of order are fatal. A plaintext message where the peer's
    ChangeCipherSpec is due is dropped as a possible forgery; the Finished, authenticated one
    message_seq later, shows the peer really numbered a message there: unexpected_message at
    once, not a wait for that message_seq until the handshake times out."""
    if sender == "client":
        monkeypatch.setattr(iotdtls.connection, "ClientHandshake", ClientWithExtraMessage)
    else:
        monkeypatch.setattr(iotdtls.connection, "ServerHandshake", ServerWithExtraMessage)
    link = make_link()
    link.handshake(until=5.0)
    receiver: Direction = "server" if sender == "client" else "client"
    assert_link_failed(link, receiver, UNEXPECTED)
    (closed,) = events_of(link, receiver, ConnectionClosed)
    assert "out of turn" in str(closed.error)
    assert link.now < 1.0  # at once, not after retransmissions or the handshake timeout


def link_waiting_for_key_exchange() -> MemoryLink:
    """A link whose server flow has answered the ClientHello (flight 4 held back)."""
    link = make_link(fate=lambda d, i, data: "drop" if d == "server" and i >= 2 else "deliver")
    link.client.connect(0.0)
    link.run(stop=lambda lk: lk.server_conn is not None)
    assert link.server_conn is not None
    assert link.server_conn.handshake_state.name == "WAIT_CLIENT_FLIGHT"
    link.fate = lambda d, i, data: "deliver"
    return link


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize(
    ("msg_type", "body"),
    [
        (HandshakeType.finished, bytes(12)),
        (HandshakeType.client_hello, client_hello().encode()),
        (HandshakeType.server_hello_done, b""),
    ],
)
def test_server_refuses_message_in_place_of_key_exchange(msg_type: int, body: bytes) -> None:
    link = link_waiting_for_key_exchange()
    server_conn = link.server_conn
    assert server_conn is not None
    if msg_type == HandshakeType.client_hello:
        # Same random as the flow's own ClientHello: not a restarted client (RFC 6347
        # §4.2.8, which goes through the cookie gate instead) but a message out of place.
        body = replace(client_hello(), random=server_conn.client_random).encode()
    forged = handshake_record(record_layer(link.client), msg_type, 2, body)
    link.server.receive_datagram(forged, CLIENT_ADDR, link.now)
    assert_failed_with(server_conn, UNEXPECTED)
    assert link.server.connections == {}
    out = link.server.datagrams_to_send(link.now)
    assert alert_of(out[-1][0]) == (AlertLevel.FATAL, UNEXPECTED)
    for data, _ in out:  # the client reads the alert (behind the late flight 4)
        link.client.receive_datagram(data, link.now)
    link.step()
    assert link.client.state is ConnectionState.CLOSED
    assert isinstance(link.client.error, AlertReceived)
    assert link.client.error.alert is UNEXPECTED


@pytest.mark.req("HS-5", "ERR-1")
def test_server_refuses_key_exchange_before_client_hello() -> None:
    server = DtlsConnection(ServerConfig(psk_store={IDENTITY: KEY}))
    server.accept(0.0)
    cke = ClientKeyExchangePsk(IDENTITY).encode()
    server.receive_datagram(
        handshake_record(RecordLayer(), HandshakeType.client_key_exchange, 0, cke), 0.0
    )
    assert_failed_with(server, UNEXPECTED)
    (out,) = server.datagrams_to_send(0.0)
    assert alert_of(out) == (AlertLevel.FATAL, UNEXPECTED)


# -- application data and ChangeCipherSpec (HS-5) -----------------------------------------------


def client_given_early_record(
    content_type: ContentType, payload: bytes
) -> tuple[MemoryLink, RecordLayer]:
    """A link whose client, just after connect, got a forged plaintext epoch-0 record.

    Returns the link and the forger's record layer (to seal more records in sequence).
    """
    link = make_link()
    link.client.connect(0.0)
    plain = RecordLayer()
    # A sequence number near the server's own (the epoch-0 replay window is unauthenticated).
    plain.install_write_epoch(0, NullProtector(), next_sequence_number=5)
    link.client.receive_datagram(plain.seal(content_type, payload, 0), 0.0)
    return link, plain


@pytest.mark.req("HS-5")
def test_plaintext_application_data_is_never_delivered() -> None:
    link, plain = client_given_early_record(ContentType.application_data, b"early")
    assert link.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1
    link.run(stop=established)
    assert established(link)
    link.client.receive_datagram(plain.seal(ContentType.application_data, b"clear", 0), 0.0)
    forged = plain.seal(ContentType.application_data, b"clear", 0)
    link.server.receive_datagram(forged, CLIENT_ADDR, link.now)
    link.step()
    # Once established, epoch-0 records are unauthenticated leftovers: dropped unread.
    assert link.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 1
    assert link.client.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
    assert link.server_conn is not None
    assert link.server_conn.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 1
    assert events_of(link, "client", DataReceived) == []
    assert events_of(link, "server", DataReceived) == []


@pytest.mark.req("HS-5")
def test_protected_data_before_client_completes_waits_for_its_finished() -> None:
    # The server's final flight (server datagram 3) is lost; the server, already done, sends
    # data in epoch 1 that the client can decrypt but must not deliver before its Finished:
    # held, it comes right after the handshake completes (RFC 6347 §4.1).
    link = make_link(fate=lambda d, i, data: "drop" if (d, i) == ("server", 3) else "deliver")
    link.client.connect(0.0)
    link.run(
        stop=lambda lk: (
            lk.server_conn is not None and lk.server_conn.state is ConnectionState.ESTABLISHED
        )
    )
    final_flight = wire_from(link, "server")[2]
    link.server.send(CLIENT_ADDR, b"too early")
    link.step()
    assert link.client.state is ConnectionState.HANDSHAKING
    assert events_of(link, "client", DataReceived) == []
    link.client.receive_datagram(final_flight, link.now)
    link.step()
    assert link.client.state is ConnectionState.ESTABLISHED
    assert [type(e) for e in link.client_events][-2:] == [HandshakeComplete, DataReceived]
    assert events_of(link, "client", DataReceived) == [DataReceived(b"too early")]
    assert link.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


def strip_ccs(sender: Direction) -> FateFn:
    """A fate that removes every ChangeCipherSpec record from what `sender` sends."""

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction != sender:
            return "deliver"
        kept = b"".join(
            header.encode() + fragment
            for header, fragment in records(data)
            if header.content_type != ContentType.change_cipher_spec
        )
        return kept if kept else "drop"

    return fate


@pytest.mark.req("HS-5", "HS-4")
def test_no_completion_without_change_cipher_spec() -> None:
    link = make_link(fate=strip_ccs("server"), client={"handshake_timeout": 30.0})
    link.handshake(until=100)
    assert link.client.state is ConnectionState.CLOSED
    assert events_of(link, "client", ConnectionClosed)[0].error is link.client.error
    assert type(link.client.error).__name__ == "HandshakeTimeout"
    assert events_of(link, "client", DataReceived) == []
    assert link.client.handshake_state.name == "WAIT_CCS"
    # The server did send its Finished (epoch 1) more than once; the client kept waiting.
    finished_records = [h for d in wire_from(link, "server") for h, _ in records(d) if h.epoch == 1]
    assert len(finished_records) >= 2


@pytest.mark.req("HS-5")
def test_server_never_completes_without_client_change_cipher_spec() -> None:
    """The mirror case: the client's flight 5 loses its ChangeCipherSpec. The server can decrypt
    the client's epoch-1 Finished but must not take it before the ChangeCipherSpec (RFC 5246
    §7.4.9): it never sends flight 6 and its handshake times out."""
    link = make_link(fate=strip_ccs("client"), server={"handshake_timeout": 20.0})
    link.client.connect(0.0)
    link.run(until=5.0, stop=lambda lk: lk.server_conn is not None)
    server_conn = link.server_conn
    assert server_conn is not None
    link.run(until=100.0, stop=lambda lk: server_conn.state is ConnectionState.CLOSED)
    assert server_conn.state is ConnectionState.CLOSED
    assert isinstance(server_conn.error, iotdtls.errors.HandshakeTimeout)
    assert server_conn.handshake_state.name == "WAIT_CCS"
    assert events_of(link, "server", ConnectionClosed) == [
        ConnectionClosed(server_conn.error, IDENTITY)
    ]
    assert events_of(link, "server", HandshakeComplete) == []
    assert events_of(link, "client", HandshakeComplete) == []
    # The client's Finished (epoch 1) reached the server several times, never with a CCS.
    client_finished = [h for d in wire_from(link, "client") for h, _ in records(d) if h.epoch == 1]
    assert len(client_finished) >= 2
    stripped = [h for d in wire_from(link, "client") for h, _ in records(d)]
    assert ContentType.change_cipher_spec in [h.content_type for h in stripped]  # it was sent
    # The server never answered with its ChangeCipherSpec and Finished (flight 6).
    server_records = [h for d in wire_from(link, "server") for h, _ in records(d)]
    assert all(h.epoch == 0 for h in server_records)
    assert ContentType.change_cipher_spec not in [h.content_type for h in server_records]


@pytest.mark.req("HS-5")
def test_early_change_cipher_spec_is_ignored() -> None:
    link, _ = client_given_early_record(ContentType.change_cipher_spec, b"\x01")
    assert link.client.dropped[DropReason.UNEXPECTED_CCS] == 1
    link.run(stop=established)
    assert established(link)


class BadFinishedServer(ServerHandshake):
    """Sends a Finished whose verify_data is wrong (the transcript keeps the right one)."""

    def finished(self, epoch: int) -> OutgoingMessage:
        msg = super().finished(epoch)
        return replace(msg, body=bytes(b ^ 0x55 for b in msg.body))


class BadFinishedClient(ClientHandshake):
    def finished(self, epoch: int) -> OutgoingMessage:
        msg = super().finished(epoch)
        return replace(msg, body=bytes(b ^ 0x55 for b in msg.body))


@pytest.mark.req("HS-5", "SEC-2", "ERR-1")
@pytest.mark.parametrize("liar", ["server", "client"])
def test_wrong_verify_data_is_decrypt_error(monkeypatch: pytest.MonkeyPatch, liar: str) -> None:
    if liar == "server":
        monkeypatch.setattr(iotdtls.connection, "ServerHandshake", BadFinishedServer)
    else:
        monkeypatch.setattr(iotdtls.connection, "ClientHandshake", BadFinishedClient)
    compared: list[tuple[bytes, bytes]] = []
    real = iotdtls.handshake.keyschedule.constant_time_equal

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(iotdtls.handshake.keyschedule, "constant_time_equal", spy)
    link = make_link()
    link.handshake()
    honest: Direction = "client" if liar == "server" else "server"
    assert_link_failed(link, honest, AlertDescription.decrypt_error)
    assert compared and len(compared[-1][0]) == 12  # SEC-2: the constant-time comparison
    assert events_of(link, honest, DataReceived) == []


# -- PSK-4: unknown identity and wrong key look the same ------------------------------------------


def server_wire_shape(link: MemoryLink) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """Per server datagram: its size and (content type, epoch, length) of each record."""
    return [
        (len(d), [(h.content_type, h.epoch, h.length) for h, _ in records(d)])
        for d in wire_from(link, "server")
    ]


#: Where the server finds its keys: a psk_store, or a psk_lookup that returns None or raises a
#: LookupError for an unknown identity (`keys.get`, `keys.__getitem__`), all answered alike.
KEY_SOURCES: dict[str, dict[str, Any]] = {
    "psk_store": {},
    "lookup-get": {"psk_store": None, "psk_lookup": {IDENTITY: KEY}.get},
    "lookup-getitem": {"psk_store": None, "psk_lookup": {IDENTITY: KEY}.__getitem__},
}


@pytest.mark.req("PSK-4", "ERR-1")
@pytest.mark.parametrize("source", list(KEY_SOURCES))
def test_unknown_identity_and_wrong_key_look_alike(source: str) -> None:
    unknown = make_link(client={"psk_identity": b"Client_identitx"}, server=KEY_SOURCES[source])
    unknown.handshake()
    wrong = make_link(client={"psk": bytes(16)}, server=KEY_SOURCES[source])
    wrong.handshake()
    for link in (unknown, wrong):
        assert_link_failed(link, "server", AlertDescription.decrypt_error)
        assert alert_of(wire_from(link, "server")[-1]) == (
            AlertLevel.FATAL,
            AlertDescription.decrypt_error,
        )
        assert link.server.connections == {}
    assert server_wire_shape(unknown) == server_wire_shape(wrong)
    u_err = events_of(unknown, "server", ConnectionClosed)[0].error
    w_err = events_of(wrong, "server", ConnectionClosed)[0].error
    assert str(u_err) == str(w_err)
    # Never the alert RFC 4279 §2 would have used.
    alerts = [a for d in wire_from(unknown, "server") if (a := plain_alert(d)) is not None]
    assert AlertDescription.unknown_psk_identity not in [a.description for a in alerts]


#: What a PSK client is told when the server cannot verify its Finished (RFC 5246 §7.4.9).
PSK_REFUSED = (
    "received fatal alert decrypt_error (the server could not verify our Finished: the PSK "
    "does not match the server's, or the PSK identity is unknown to it)"
)


@pytest.mark.req("PSK-4", "ERR-1")
@pytest.mark.parametrize(
    "client", [{"psk_identity": b"Client_identitx"}, {"psk": bytes(16)}], ids=["identity", "key"]
)
def test_a_psk_client_refused_at_its_finished_is_told_why(client: dict[str, Any]) -> None:
    """The server's decrypt_error answers our Finished: the client's AlertReceived says that
    the PSK or the identity is wrong (no key in the text), its alert unchanged."""
    link = make_link(client=client)
    link.handshake()
    (closed,) = events_of(link, "client", ConnectionClosed)
    assert isinstance(closed.error, AlertReceived)
    assert closed.error.alert is AlertDescription.decrypt_error
    assert str(closed.error) == PSK_REFUSED


@pytest.mark.req("PSK-4")
@pytest.mark.parametrize(
    ("alert", "context"),
    [
        (AlertDescription.unknown_psk_identity, "the server does not know our PSK identity"),
        (AlertDescription.handshake_failure, "the server refused our PSK: it does not match "
         "the server's, or the PSK identity is unknown to it"),
        (AlertDescription.internal_error, ""),
    ],
)
def test_a_psk_client_names_what_other_refusals_mean(
    alert: AlertDescription, context: str
) -> None:
    """RFC 4279 §2: other servers refuse with unknown_psk_identity or handshake_failure; only
    after our Finished, and only these alerts, get a reason."""
    client = ClientHandshake(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    assert client.alert_context(alert) == ""  # before any flight: nothing known
    client.state = ClientState.WAIT_CCS
    client.mode = Mode.PSK
    assert client.alert_context(alert) == context
    client.resumed = True  # an abbreviated handshake's keys come from the session
    assert client.alert_context(alert) == ""


@pytest.mark.req("RPK-3")
def test_a_raw_key_clients_refusal_names_its_key_only_once_it_sent_it() -> None:
    """handshake_failure after our Finished names our raw public key only when the server
    asked for one and got it: with no CertificateRequest, or after an empty Certificate, the
    alert says nothing more (and the text is no error of its own)."""
    from iotdtls.crypto.signature import PrivateKey
    from iotdtls.handshake.peerauth import NO_CERTIFICATE
    from iotdtls.messages import CertificateType

    config = ClientConfig(
        server_public_keys=[PrivateKey.generate().spki], raw_public_key=PrivateKey.generate()
    )
    client = ClientHandshake(config)
    client.state = ClientState.WAIT_CCS
    client.mode = Mode.RAW_PUBLIC_KEY
    client._client_type = CertificateType.RawPublicKey
    failure = AlertDescription.handshake_failure
    assert client.alert_context(failure) == ""  # no CertificateRequest: nothing sent
    client._requested = NO_CERTIFICATE
    assert client.alert_context(failure) == ""  # an empty Certificate: no key sent


@pytest.mark.req("PSK-4")
@pytest.mark.parametrize("source", list(KEY_SOURCES))
def test_an_empty_identity_on_the_wire_is_an_unknown_identity(source: str) -> None:
    """No configuration makes an empty identity (it names no one), but a peer may send one
    (psk_identity<0..2^16-1>, RFC 4279 §2): it fails as any unknown identity does."""
    client = ClientConfig(psk_identity=IDENTITY, psk=KEY)
    object.__setattr__(client, "psk_identity", b"")  # what another implementation may send
    server = ServerConfig(**{"psk_store": {IDENTITY: KEY}, **KEY_SOURCES[source]})
    link = MemoryLink(client, server)
    link.handshake()
    assert_link_failed(link, "server", AlertDescription.decrypt_error)
    assert link.server.connections == {}


@pytest.mark.req("PSK-4")
def test_an_empty_identity_on_the_wire_is_never_looked_up() -> None:
    """A plain `psk_lookup` was handed b"" from the wire and, when it returned a key for it,
    the handshake completed with PskIdentity(b""), an identity no configuration can make
    (RFC 4279 §5). It is unknown before any lookup: the same alert and wire as an unknown
    identity (PSK-4), however the application answers for it."""
    asked: list[bytes] = []

    def lookup(identity: bytes) -> bytes | None:
        asked.append(identity)
        return KEY  # a key for anything, b"" included

    empty = ClientConfig(psk_identity=IDENTITY, psk=KEY)
    object.__setattr__(empty, "psk_identity", b"")  # what another implementation may send
    link = MemoryLink(empty, ServerConfig(psk_store=None, psk_lookup=lookup))
    link.handshake()
    assert asked == []
    assert_link_failed(link, "server", AlertDescription.decrypt_error)
    assert link.server.connections == {}
    unknown = make_link(client={"psk_identity": b"Client_identitx"})
    unknown.handshake()
    assert server_wire_shape(link) == server_wire_shape(unknown)
    assert str(events_of(link, "server", ConnectionClosed)[0].error) == str(
        events_of(unknown, "server", ConnectionClosed)[0].error)


def handshake_role() -> str:
    """The class name of the handshake machine up the call stack ("ServerHandshake", ...)."""
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ServerHandshake | ClientHandshake):
            return type(owner).__name__
        frame = frame.f_back
    return "unknown"


def spy_on_key_schedule(
    monkeypatch: pytest.MonkeyPatch, psk_lengths: list[tuple[str, int]] | None = None
) -> list[tuple[str, str]]:
    """Record (role, step) for each key-schedule function the handshakes call and for each
    record decryption (`Ccm8Protector.open`, with its outcome); and (role, PSK length) of each
    premaster secret built, in `psk_lengths`."""
    calls: list[tuple[str, str]] = []
    modules = {
        "psk_premaster_secret": iotdtls.handshake.keyexchange,
        "extended_master_secret": iotdtls.handshake.keyschedule,
        "master_secret": iotdtls.handshake.keyschedule,
        "derive_key_block": iotdtls.handshake.keyschedule,
        "finished_verify_data": iotdtls.handshake.keyschedule,
    }
    for name, module in modules.items():
        real = getattr(module, name)

        def counting(*args: Any, _real: Any = real, _name: str = name) -> object:
            role = handshake_role()
            calls.append((role, _name))
            if _name == "psk_premaster_secret" and psk_lengths is not None:
                psk_lengths.append((role, len(args[0])))
            return _real(*args)

        monkeypatch.setattr(module, name, counting)
    real_open = Ccm8Protector.open

    def counting_open(self: Ccm8Protector, *args: Any) -> bytes:
        try:
            plain: bytes = real_open(self, *args)
        except BadTag:
            calls.append(("record", "open failed"))
            raise
        calls.append(("record", "open"))
        return plain

    monkeypatch.setattr(Ccm8Protector, "open", counting_open)
    return calls


@pytest.mark.req("PSK-4")
@pytest.mark.parametrize("source", list(KEY_SOURCES))
def test_unknown_identity_runs_the_same_key_schedule_as_a_wrong_key(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """No early exit for an unknown identity: the server derives keys from a stand-in key and
    fails on the client's Finished record exactly as it does for a wrong key (timing side)."""
    psk_lengths: list[tuple[str, int]] = []
    calls = spy_on_key_schedule(monkeypatch, psk_lengths)
    traces = []
    for client in ({"psk_identity": b"Client_identitx"}, {"psk": bytes(16)}):
        calls.clear()
        make_link(client=client, server=KEY_SOURCES[source]).handshake()
        traces.append(list(calls))
    unknown, wrong = traces
    assert unknown == wrong
    server_steps = [step for role, step in unknown if role == "ServerHandshake"]
    assert server_steps == ["psk_premaster_secret", "extended_master_secret", "derive_key_block"]
    assert [step for role, step in unknown if role == "record"] == ["open failed"]
    # A 16-byte random stand-in, like the provisioned key.
    assert [n for role, n in psk_lengths if role == "ServerHandshake"] == [16, 16]


# -- EXT-4: no renegotiation -----------------------------------------------------------------------


@pytest.mark.req("EXT-4")
def test_client_answers_hello_request_with_no_renegotiation() -> None:
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    forged = handshake_record(
        record_layer(server_conn), HandshakeType.hello_request, next_send_seq(server_conn), b"", 1
    )
    before = len(wire_from(link, "client"))
    link.client.receive_datagram(forged, link.now)
    link.step()
    assert link.client.state is ConnectionState.ESTABLISHED
    assert events_of(link, "server", AlertEvent) == [AlertEvent(AlertDescription.no_renegotiation)]
    (answer,) = wire_from(link, "client")[before:]  # one datagram, and only one, answers
    assert [(h.content_type, h.epoch) for h, _ in records(answer)] == [(ContentType.alert, 1)]
    link.client.send(b"still up")
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(b"still up")]


@pytest.mark.req("EXT-4", "ERR-1")
def test_a_hello_request_with_a_body_after_the_handshake_is_decode_error() -> None:
    """RFC 5246 §7.4.1.1: a HelloRequest is empty. One with a body, authenticated after the
    handshake, was answered with no_renegotiation as a well-formed one; now it is the malformed
    message it is, decode_error, as during the handshake (`_hello_request_during_handshake`)."""
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    request = handshake_record(
        record_layer(server_conn), HandshakeType.hello_request, next_send_seq(server_conn),
        b"abcd", 1,
    )
    link.client.receive_datagram(request, link.now)
    link.step()
    (closed,) = events_of(link, "client", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.decode_error
    assert str(closed.error) == (
        "sent fatal alert decode_error: HelloRequest with a 4-byte body (it is empty)"
    )
    (heard,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(heard.error, AlertReceived)
    assert heard.error.alert is AlertDescription.decode_error
    assert events_of(link, "server", AlertEvent) == []  # no no_renegotiation warning


@pytest.mark.req("EXT-4")
def test_server_answers_renegotiating_client_hello_with_no_renegotiation() -> None:
    link = make_link()
    link.handshake()
    hello = client_hello(extensions=(RenegotiationInfo(bytes(12)), ExtendedMasterSecret()))
    forged = handshake_record(
        record_layer(link.client),
        HandshakeType.client_hello,
        next_send_seq(link.client),
        hello.encode(),
        1,
    )
    server_conn = link.server_conn
    link.server.receive_datagram(forged, CLIENT_ADDR, link.now)
    link.step()
    assert link.server_conn is server_conn
    assert events_of(link, "client", AlertEvent) == [AlertEvent(AlertDescription.no_renegotiation)]
    link.server.send(CLIENT_ADDR, b"still up")
    link.step()
    assert events_of(link, "client", DataReceived) == [DataReceived(b"still up")]


REFUSED = "(after we refused the peer's renegotiation with no_renegotiation, RFC 5746)"


@pytest.mark.req("EXT-4")
@pytest.mark.parametrize("refused", [True, False], ids=["after-the-refusal", "without"])
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_fatal_alert_after_our_no_renegotiation_says_we_refused(
    side: Direction, refused: bool
) -> None:
    """OpenSSL answers our no_renegotiation with a fatal handshake_failure: the error (and the
    server's log line, which prints it) says the peer had asked to renegotiate."""
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    ours, peer = (link.client, server_conn) if side == "client" else (server_conn, link.client)
    if refused:
        request = HandshakeType.hello_request if side == "client" else HandshakeType.client_hello
        body = b"" if side == "client" else client_hello().encode()
        forged = handshake_record(record_layer(peer), request, next_send_seq(peer), body, 1)
        ours.receive_datagram(forged, link.now)
        assert ours.state is ConnectionState.ESTABLISHED
    fatal = Alert(AlertLevel.FATAL, AlertDescription.handshake_failure).encode()
    ours.receive_datagram(record_layer(peer).seal(ContentType.alert, fatal, 1), link.now)
    assert isinstance(ours.error, AlertReceived)
    expected = "received fatal alert handshake_failure"
    assert str(ours.error) == (f"{expected} {REFUSED}" if refused else expected)


@pytest.mark.req("EXT-4", "ERR-1")
def test_non_empty_renegotiation_info_in_initial_hello_fails() -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=False))
    hello = client_hello(extensions=(RenegotiationInfo(bytes(12)), ExtendedMasterSecret()))
    datagram = handshake_record(RecordLayer(), HandshakeType.client_hello, 0, hello.encode())
    endpoint.receive_datagram(datagram, CLIENT_ADDR, 0.0)
    ((out, _),) = endpoint.datagrams_to_send(0.0)
    assert alert_of(out) == (AlertLevel.FATAL, AlertDescription.handshake_failure)
    item = endpoint.next_event()
    assert item is not None and isinstance(item[1], ConnectionClosed)
    assert isinstance(item[1].error, AlertSent)
    assert endpoint.connections == {}


def renegotiated_server_hello(*args: object) -> tuple[Extension, ...]:
    """Claims a previous connection in renegotiation_info (RFC 5746 §3.4 says: abort)."""
    return (RenegotiationInfo(bytes(24)), ExtendedMasterSecret())


@pytest.mark.req("EXT-4", "ERR-1")
def test_client_checks_server_renegotiation_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        iotdtls.handshake.server, "server_hello_extensions", renegotiated_server_hello
    )
    link = make_link()
    link.handshake()
    assert_link_failed(link, "client", AlertDescription.handshake_failure)


# -- REC-5: DTLS 1.2 only ------------------------------------------------------------------------


@pytest.mark.req("REC-5")
@pytest.mark.parametrize("cookie", [True, False])
def test_dtls10_client_hello_is_refused_statelessly(cookie: bool) -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=cookie))
    hello = client_hello(version=DTLS_1_0).encode()
    datagram = handshake_record(RecordLayer(), HandshakeType.client_hello, 0, hello)
    endpoint.receive_datagram(datagram, CLIENT_ADDR, 0.0)
    ((out, addr),) = endpoint.datagrams_to_send(0.0)
    assert addr == CLIENT_ADDR
    assert alert_of(out) == (AlertLevel.FATAL, AlertDescription.protocol_version)
    assert endpoint.connections == {}
    assert endpoint.gate[GateOutcome.VERSION_REFUSED] == 1


@pytest.mark.req("HS-5", "ERR-1")
@pytest.mark.parametrize(("message_seq", "refused"), [(0xFFFA, False), (0xFFFB, True),
                                                      (0xFFFF, True)])
def test_a_client_hello_numbered_too_high_to_answer_is_illegal_parameter(
    message_seq: int, refused: bool
) -> None:
    """The server numbers its messages on from the ClientHello's message_seq (RFC 6347
    §4.2.2), up to six of them: a ClientHello at 65535 made the ServerHelloDone's number
    overflow 16 bits, and the ValueError escaped `receive_datagram` (found by the fuzzer).
    Now illegal_parameter, with room for a whole handshake below it."""
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=False))
    hello = client_hello().encode()
    datagram = handshake_record(RecordLayer(), HandshakeType.client_hello, message_seq, hello)
    endpoint.receive_datagram(datagram, CLIENT_ADDR, 0.0)
    ((out, _),) = endpoint.datagrams_to_send(0.0)
    if refused:
        assert alert_of(out) == (AlertLevel.FATAL, AlertDescription.illegal_parameter)
        assert endpoint.connections == {}
    else:
        assert [h.message_seq for h, _ in plain_handshake(out)] == [0xFFFA, 0xFFFB]


def downgrade_server_hello(direction: Direction, index: int, data: bytes) -> Fate | bytes:
    """Rewrite the ServerHello's server_version to DTLS 1.0 (plaintext, so it still parses)."""
    frags = plain_handshake(data) if direction == "server" else []
    if not frags or frags[0][0].msg_type != HandshakeType.server_hello:
        return "deliver"
    at = 13 + 12  # record header, handshake header
    assert data[at : at + 2] == DTLS_1_2.to_bytes(2, "big")
    return data[:at] + DTLS_1_0.to_bytes(2, "big") + data[at + 2 :]


@pytest.mark.req("REC-5", "ERR-1")
def test_client_refuses_dtls10_server_hello() -> None:
    link = make_link(fate=downgrade_server_hello)
    link.handshake()
    assert_link_failed(link, "client", AlertDescription.protocol_version)
    assert alert_of(wire_from(link, "client")[-1]) == (
        AlertLevel.FATAL,
        AlertDescription.protocol_version,
    )


# -- ERR-1 on the wire: every alert the link carries is checked by MemoryLink -------------------

#: Alerts no PSK association may send: certificate alerts, unknown_psk_identity (PSK-4),
#: and the RESERVED ones of RFC 5246 §7.2 (decryption_failed, decompression_failure,
#: no_certificate, export_restriction).
FOREIGN_ALERTS = {42, 43, 44, 45, 46, 48, 115, 21, 30, 41, 60}


def _unexpected_in_flight(monkeypatch: pytest.MonkeyPatch) -> MemoryLink:
    extra = [(HandshakeType.client_key_exchange, ClientKeyExchangePsk(b"x").encode())]
    monkeypatch.setattr(iotdtls.connection, "ServerHandshake", injecting_server(extra))
    return make_link()


FAILURES: dict[str, tuple[Any, Direction, AlertDescription]] = {
    "wrong-key": (
        lambda mp: make_link(client={"psk": bytes(16)}),
        "server",
        AlertDescription.decrypt_error,
    ),
    "unknown-identity": (
        lambda mp: make_link(client={"psk_identity": b"nobody"}),
        "server",
        AlertDescription.decrypt_error,
    ),
    "no-ems": (
        lambda mp: (mp.setattr(iotdtls.connection, "ClientHandshake", LegacyClient), make_link())[
            1
        ],
        "server",
        AlertDescription.handshake_failure,
    ),
    "downgrade": (
        lambda mp: make_link(fate=downgrade_server_hello),
        "client",
        AlertDescription.protocol_version,
    ),
    "unexpected": (_unexpected_in_flight, "client", UNEXPECTED),
    "bad-finished": (
        lambda mp: (
            mp.setattr(iotdtls.connection, "ClientHandshake", BadFinishedClient),
            make_link(),
        )[1],
        "server",
        AlertDescription.decrypt_error,
    ),
}


@pytest.mark.req("ERR-1")
@pytest.mark.parametrize("case", list(FAILURES))
def test_every_alert_on_the_link_belongs_to_psk_mode(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Each failure path sends one fatal alert the link decoded from the wire and found in
    PSK_MODE_ALERTS; the sender's AlertSent names it and the peer's AlertReceived too."""
    assert not FOREIGN_ALERTS & {int(a) for a in PSK_MODE_ALERTS}
    build, sender, alert = FAILURES[case]
    link = build(monkeypatch)
    link.handshake()
    assert_link_failed(link, sender, alert)
    # Checked twice by the link: on the wire (epoch-0 record) and as the closing AlertSent.
    assert link.checked_alerts.count((sender, AlertLevel.FATAL, alert)) == 2
    assert {d for _, _, d in link.checked_alerts} == {alert}


@pytest.mark.req("ERR-1")
def test_link_catches_an_alert_of_another_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The link's ERR-1 check can fail: with the mode filter bypassed, a handler naming
    unknown_psk_identity puts it on the wire and the link refuses it."""

    def revealing(self: object, body: bytes) -> object:
        raise iotdtls.errors.ProtocolError("no such identity", AlertDescription(115))

    monkeypatch.setattr(
        iotdtls.handshake.keyexchange.PskServerExchange, "on_client_key_exchange", revealing
    )
    monkeypatch.setattr(iotdtls.connection, "permitted_alert", lambda alert, allowed: alert)
    link = make_link()
    with pytest.raises(AssertionError, match="unknown_psk_identity"):
        link.handshake()


@pytest.mark.req("ERR-1")
def test_fatal_alert_from_peer_is_a_typed_error() -> None:
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    alert = bytes([AlertLevel.FATAL, AlertDescription.internal_error])
    link.client.receive_datagram(record_layer(server_conn).seal(ContentType.alert, alert, 1), 0)
    assert isinstance(link.client.error, AlertReceived)
    assert link.client.error.alert is AlertDescription.internal_error
    event = link.client.next_event()
    assert isinstance(event, ConnectionClosed) and event.error is link.client.error
    with pytest.raises(iotdtls.errors.LocalProtocolError):
        link.client.send(b"after the end")
