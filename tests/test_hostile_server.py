"""A client facing a hostile or broken server (a script built from the message codecs,
`tests/fake_server.py`).

For each misbehaviour the client ends with the alert RFC 5246 / RFC 6347 prescribe where one is
due (ERR-1: always one of its mode) and a typed error, or ignores what does not authenticate and
completes (RFC 6347 §4.1.2.7, REC-3); it never hangs past its handshake deadline, never raises,
and never hands application data up before the handshake completed (HS-5).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from iotdtls import aio, sync
from iotdtls.config import ClientConfig, RetransmitPolicy
from iotdtls.connection import ConnectionState, DropReason
from iotdtls.errors import (
    AlertDescription,
    AlertLevel,
    AlertSent,
    DtlsError,
    HandshakeTimeout,
)
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.handshake.alerts import PSK_MODE_ALERTS
from iotdtls.handshake.client import MAX_HELLO_VERIFY_REQUESTS
from iotdtls.messages import (
    DTLS_1_0,
    Alert,
    ExtendedMasterSecret,
    Finished,
    HandshakeType,
    Heartbeat,
    RenegotiationInfo,
    ServerKeyExchangePsk,
    ServerName,
    UnknownExtension,
)
from iotdtls.record import ContentType, DiscardReason, RecordHeader, split_datagram
from tests.fake_server import (
    Exchange,
    FakeServer,
    Received,
    drive,
    honest_flights,
    psk_client,
)
from tests.memory_link import IDENTITY, KEY

A = AlertDescription


def assert_refused(ex: Exchange, alert: AlertDescription, reason: str = "") -> None:
    """The client sent the fatal `alert` (read off the wire by the server) and reported it as
    AlertSent naming it; nothing was ever delivered."""
    client = ex.client
    assert client.state is ConnectionState.CLOSED
    assert isinstance(client.error, AlertSent), client.error
    assert client.error.alert is alert, client.error
    assert reason in client.error.reason
    assert (AlertLevel.FATAL, alert) in ex.alerts
    assert alert in PSK_MODE_ALERTS
    assert_nothing_delivered(ex)


def assert_nothing_delivered(ex: Exchange) -> None:
    assert not [e for e in ex.events if isinstance(e, HandshakeComplete | DataReceived)]
    (closed,) = [e for e in ex.events if isinstance(e, ConnectionClosed)]
    assert closed.error is ex.client.error


def assert_completed(ex: Exchange) -> None:
    assert ex.client.state is ConnectionState.ESTABLISHED, ex.client.error
    assert ex.fake.client_finished_ok
    assert [type(e) for e in ex.events] == [HandshakeComplete]


def plain(fake: FakeServer, msg_type: int, body: bytes) -> bytes:
    return fake.record(ContentType.handshake, fake.message(msg_type, body))


# -- HelloVerifyRequest ---------------------------------------------------------------------------


@pytest.mark.req("HS-1", "ERR-1")
@pytest.mark.parametrize("changing", [False, True], ids=["same-cookie", "new-cookie-each-time"])
def test_endless_hello_verify_requests(changing: bool) -> None:
    count = [0]

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        count[0] += 1
        cookie = bytes([count[0]]) * 16 if changing else b"c" * 16
        return [fake.hello_verify_request(cookie)] if got.types() else []

    ex = drive(psk_client(), script)
    assert_refused(ex, A.handshake_failure, "too many HelloVerifyRequests")
    hellos = ex.fake.hellos
    assert len(hellos) == MAX_HELLO_VERIFY_REQUESTS + 1
    assert ex.ended_at == 0.0  # at once, not at the deadline


@pytest.mark.req("HS-1")
@pytest.mark.parametrize("length", [0, 1, 16, 32, 33, 200, 255])
def test_every_legal_cookie_length_is_echoed_and_completes(length: int) -> None:
    cookie = bytes((i * 7 + 3) % 256 for i in range(length))

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if fake.hello is not None and fake.hello.cookie == cookie and len(fake.hellos) == 2:
            return honest_flights()(fake, got)
        if got.types() == [HandshakeType.client_hello] and len(fake.hellos) == 1:
            return [fake.hello_verify_request(cookie)]
        return honest_flights()(fake, got)

    ex = drive(psk_client(), script)
    assert ex.fake.hellos[1].cookie == cookie
    assert ex.fake.hellos[1].random == ex.fake.hellos[0].random
    if length:
        assert_completed(ex)


def raw_hvr(fake: FakeServer, body: bytes) -> bytes:
    return plain(fake, HandshakeType.hello_verify_request, body)


@pytest.mark.req("HS-1", "ERR-1")
@pytest.mark.parametrize(
    ("body", "alert"),
    [
        (b"\xfe\xff\x20" + b"c" * 10, A.decode_error),  # cookie shorter than its length byte
        (b"\xfe\xff\x02cc" + b"extra", A.decode_error),  # bytes after the cookie
        (b"\xfe\xff", A.decode_error),  # no cookie vector at all
        (b"\x03\x03\x02cc", A.protocol_version),  # a TLS version
        (b"\xfe\xfb\x02cc", A.protocol_version),  # a DTLS version newer than 1.2
    ],
    ids=["short", "trailing", "missing", "tls-version", "future-dtls"],
)
def test_malformed_hello_verify_request(body: bytes, alert: AlertDescription) -> None:
    ex = drive(psk_client(), lambda fake, got: [raw_hvr(fake, body)] if got.types() else [])
    assert_refused(ex, alert)


# -- ServerHello ----------------------------------------------------------------------------------


def with_hello(**changes: object) -> Callable[[FakeServer, Received], list[bytes]]:
    return honest_flights(hello=lambda fake: fake.server_hello(**changes))


@pytest.mark.req("REC-5", "PSK-1", "REC-4", "ERR-1")
@pytest.mark.parametrize(
    ("changes", "alert"),
    [
        ({"server_version": DTLS_1_0}, A.protocol_version),
        ({"server_version": 0x0303}, A.protocol_version),
        ({"cipher_suite": 0xC0AE}, A.illegal_parameter),  # a profile suite, not offered
        ({"cipher_suite": 0x00AE}, A.illegal_parameter),  # PSK_WITH_AES_128_CBC_SHA256
        ({"cipher_suite": 0xFFFF}, A.illegal_parameter),  # unknown
        ({"compression_method": 1}, A.illegal_parameter),  # DEFLATE
        ({"extensions": (RenegotiationInfo(b""),)}, A.handshake_failure),  # no EMS
        (
            {"extensions": (RenegotiationInfo(b""), ExtendedMasterSecret(), Heartbeat(1))},
            A.unsupported_extension,
        ),
        (
            {"extensions": (RenegotiationInfo(b""), ExtendedMasterSecret(), ServerName(""))},
            A.unsupported_extension,
        ),
        (
            {"extensions": (ExtendedMasterSecret(), UnknownExtension(0x1234, b"?"))},
            A.unsupported_extension,
        ),
        ({"extensions": (RenegotiationInfo(b"x" * 24), ExtendedMasterSecret())},
         A.handshake_failure),
    ],
    ids=["dtls10", "tls12", "suite-ecdhe", "suite-cbc", "suite-unknown", "compression",
         "no-ems", "heartbeat", "server-name", "unknown-extension", "renegotiated"],
)
def test_server_hello_choosing_what_was_not_offered(
    changes: dict[str, object], alert: AlertDescription
) -> None:
    ex = drive(psk_client(), with_hello(**changes))
    assert_refused(ex, alert)
    assert ex.ended_at == 0.0


@pytest.mark.req("RES-3")
def test_no_ems_is_accepted_only_when_allowed() -> None:
    ex = drive(
        psk_client(require_extended_master_secret=False),
        with_hello(extensions=(RenegotiationInfo(b""),)),
    )
    assert_completed(ex)
    assert isinstance(ex.events[0], HandshakeComplete)
    assert ex.events[0].extended_master_secret is False


@pytest.mark.req("ERR-1")
def test_duplicate_extensions_in_server_hello() -> None:
    def hello(fake: FakeServer) -> bytes:
        # The ServerHello without extensions, then a block with extended_master_secret twice.
        bare = fake.server_hello(extensions=()).encode()
        return bare + b"\x00\x08" + b"\x00\x17\x00\x00" * 2

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if HandshakeType.client_hello in got.types() and fake.hello and fake.hello.cookie:
            return [plain(fake, HandshakeType.server_hello, hello(fake))]
        return honest_flights()(fake, got)

    ex = drive(psk_client(), script)
    assert_refused(ex, A.decode_error, "duplicate extension")


@pytest.mark.req("PSK-3")
def test_identity_hint_is_allowed_and_ignored() -> None:
    hint = ServerKeyExchangePsk(b"use identity 42").encode()
    ex = drive(
        psk_client(),
        honest_flights(extra=lambda fake: [plain(fake, HandshakeType.server_key_exchange, hint)]),
    )
    assert_completed(ex)
    (cke,) = [b for r in ex.received for t, _, b in r.messages
              if t == HandshakeType.client_key_exchange]
    assert cke[2:] == IDENTITY


# -- Finished -------------------------------------------------------------------------------------


@pytest.mark.req("HS-5", "SEC-2", "ERR-1")
def test_wrong_finished_is_decrypt_error() -> None:
    def wrong(fake: FakeServer) -> list[bytes]:
        fin = fake.message(HandshakeType.finished, Finished(bytes(12)).encode())
        return [fake.record(ContentType.change_cipher_spec, b"\x01") + fake.protected(22, fin)]

    ex = drive(psk_client(), honest_flights(finished=wrong))
    assert_refused(ex, A.decrypt_error, "Finished does not verify")


@pytest.mark.req("HS-5", "HS-4")
@pytest.mark.parametrize(
    "final",
    [
        lambda fake: [],  # nothing after the client's Finished
        lambda fake: [fake.record(ContentType.change_cipher_spec, b"\x01")],  # CCS only
        lambda fake: [fake.finished()[:-8] + bytes(8)],  # Finished that does not authenticate
    ],
    ids=["silence", "ccs-only", "finished-bad-tag"],
)
def test_missing_finished_ends_at_the_deadline(final: Callable[[FakeServer], list[bytes]]) -> None:
    ex = drive(psk_client(handshake_timeout=12.0), honest_flights(finished=final))
    assert isinstance(ex.client.error, HandshakeTimeout)
    assert ex.ended_at == 12.0  # exactly the deadline: no hang, no early give-up
    assert_nothing_delivered(ex)
    # The client retransmitted its flight 5 meanwhile (RFC 6347 §4.2.4).
    assert sum(HandshakeType.finished in r.types() for r in ex.received) >= 3


# -- junk among real flights ----------------------------------------------------------------------


def junk_records(fake: FakeServer) -> list[bytes]:
    """Records of unknown and future epochs, garbage, a truncated and an oversized record,
    plaintext application data and a plaintext fatal alert claiming to be from epoch 0."""
    future = [RecordHeader(22, 0xFEFD, e, 7, 30).encode() + bytes(30) for e in (2, 5, 0xFFFF)]
    return [
        *future,
        b"\x17\xfe\xfd" + bytes(20),  # truncated header
        RecordHeader(22, 0xFEFD, 0, 9, 500).encode() + bytes(10),  # length beyond the datagram
        RecordHeader(23, 0xFEFD, 1, 9, 2**14 + 2049).encode() + bytes(2**14 + 2049),  # oversized
        fake.record(ContentType.application_data, b"plaintext data"),
        b"\x99\xfe\xfd" + bytes(10) + b"\x00\x01\x00",  # unknown content type
    ]


@pytest.mark.req("REC-3", "HS-5")
def test_junk_mixed_into_every_flight_is_ignored() -> None:
    honest = honest_flights()

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        out = []
        for datagram in honest(fake, got):
            out += junk_records(fake)
            out.append(datagram)
            out.append(datagram + junk_records(fake)[3])  # a truncated record after real ones
        return out

    ex = drive(psk_client(), script)
    assert_completed(ex)
    discards = ex.client.discards
    assert discards[DiscardReason.UNKNOWN_EPOCH] >= 3
    assert discards[DiscardReason.BAD_LENGTH] >= 3
    assert discards[DiscardReason.UNKNOWN_CONTENT_TYPE] >= 1
    assert ex.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] >= 1
    assert ex.ended_at == 0.0


@pytest.mark.req("HS-5")
def test_protected_data_before_the_finished_is_delivered_only_after_it() -> None:
    """Data that overtook the server's Finished is held, and delivered once the Finished is
    verified, before what came after it (RFC 6347 §4.1)."""

    def final(fake: FakeServer) -> list[bytes]:
        early = fake.protected(ContentType.application_data, b"before the Finished")
        return [early, fake.finished(), fake.protected(ContentType.application_data, b"after")]

    ex = drive(psk_client(), honest_flights(finished=final))
    assert ex.client.state is ConnectionState.ESTABLISHED
    assert [type(e) for e in ex.events] == [HandshakeComplete, DataReceived, DataReceived]
    assert ex.events[1:] == [DataReceived(b"before the Finished"), DataReceived(b"after")]
    assert ex.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


@pytest.mark.req("HS-5")
def test_data_behind_the_finished_in_its_datagram_is_delivered() -> None:
    """RFC 6347 §4.1: a datagram may carry several records; data behind the server's
    Finished comes after the handshake completed."""

    def final(fake: FakeServer) -> list[bytes]:
        return [fake.finished() + fake.protected(ContentType.application_data, b"behind")]

    ex = drive(psk_client(), honest_flights(finished=final))
    assert ex.client.state is ConnectionState.ESTABLISHED
    assert [type(e) for e in ex.events] == [HandshakeComplete, DataReceived]
    assert ex.events[1] == DataReceived(b"behind")
    assert ex.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


@pytest.mark.req("HS-5")
def test_data_between_the_ccs_and_the_finished_waits_for_the_finished() -> None:
    """A record of the server's new epoch between its ChangeCipherSpec and its Finished, in
    one datagram, is held until the Finished is verified (RFC 6347 §4.1)."""

    def final(fake: FakeServer) -> list[bytes]:
        ccs, fin = (header.encode() + body for header, body in split_datagram(fake.finished())[0])
        return [ccs + fake.protected(ContentType.application_data, b"between") + fin]

    ex = drive(psk_client(), honest_flights(finished=final))
    assert ex.client.state is ConnectionState.ESTABLISHED
    assert [type(e) for e in ex.events] == [HandshakeComplete, DataReceived]
    assert ex.events[1] == DataReceived(b"between")
    assert ex.client.dropped[DropReason.DATA_BEFORE_HANDSHAKE] == 0


# -- hostile handshake lengths and fragments ------------------------------------------------------


def fragment(fake: FakeServer, msg_type: int, seq: int, length: int, offset: int,
             body: bytes) -> bytes:
    header = bytes([msg_type]) + length.to_bytes(3, "big") + seq.to_bytes(2, "big")
    header += offset.to_bytes(3, "big") + len(body).to_bytes(3, "big")
    return fake.record(ContentType.handshake, header + body)


@pytest.mark.req("HS-3", "ERR-1")
@pytest.mark.parametrize(
    ("length", "offset", "size", "alert"),
    [
        (2**24 - 1, 0, 10, A.decode_error),  # far beyond max_handshake_message
        (70, 65, 10, A.decode_error),  # fragment past the end of the message
        (0, 0, 1, A.decode_error),  # bytes in an empty message
    ],
    ids=["huge", "past-the-end", "empty-with-bytes"],
)
def test_hostile_handshake_lengths(length: int, offset: int, size: int,
                                   alert: AlertDescription) -> None:
    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if got.types() == [HandshakeType.client_hello]:
            return [fragment(fake, HandshakeType.server_hello, 0, length, offset, b"h" * size)]
        return []

    ex = drive(psk_client(), script)
    assert_refused(ex, alert)


@pytest.mark.req("HS-3")
def test_overlapping_and_recut_fragments_of_the_server_flight() -> None:
    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if HandshakeType.client_hello in got.types() and fake.hello and fake.hello.cookie:
            sh = fake.server_hello()
            body = sh.encode()
            seq = fake.send_seq
            fake.message(HandshakeType.server_hello, body)  # numbered and hashed once only
            n = len(body)
            pieces = [(0, 20), (10, 25), (5, 5), (30, n - 30), (25, n - 25), (0, n)]
            out = [fragment(fake, 2, seq, n, o, body[o : o + s]) for o, s in pieces]
            out.append(plain(fake, HandshakeType.server_hello_done, b""))
            return out
        return honest_flights()(fake, got)

    ex = drive(psk_client(), script)
    assert_completed(ex)


# -- after the handshake --------------------------------------------------------------------------


def established_exchange() -> Exchange:
    ex = drive(psk_client(), honest_flights())
    assert_completed(ex)
    return ex


@pytest.mark.req("EXT-4", "REC-3", "HS-5")
def test_plaintext_alerts_and_hello_requests_after_the_handshake_are_ignored() -> None:
    ex = established_exchange()
    client, fake = ex.client, ex.fake
    for payload in (Alert(AlertLevel.FATAL, A.internal_error).encode(),
                    Alert(AlertLevel.WARNING, A.close_notify).encode()):
        client.receive_datagram(fake.record(ContentType.alert, payload), 1.0)
    client.receive_datagram(plain(fake, HandshakeType.hello_request, b""), 1.0)
    assert client.state is ConnectionState.ESTABLISHED
    assert client.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] == 3
    assert client.datagrams_to_send(1.0) == []
    # A protected HelloRequest (from the real server) is refused with no_renegotiation.
    client.receive_datagram(fake.protected(22, fake.message(0, b"", hashed=False)), 1.0)
    (answer,) = client.datagrams_to_send(1.0)
    assert fake.take(answer).alerts == [(AlertLevel.WARNING, A.no_renegotiation)]
    assert client.state is ConnectionState.ESTABLISHED
    assert client.next_event() is None


@pytest.mark.req("EXT-4", "HS-3")
def test_hello_requests_during_the_handshake_are_ignored() -> None:
    """RFC 5246 §7.4.1.1: a client negotiating ignores a HelloRequest. Two plaintext ones,
    numbered as the next message of the server and the one after it, come ahead of each of
    its flights: they take no message_seq, so the real messages complete the handshake."""
    honest = honest_flights()

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        seq = fake.send_seq
        hello_request = HandshakeType.hello_request
        requests = [fragment(fake, hello_request, n, 0, 0, b"") for n in (seq, seq + 1)]
        return [*requests, *honest(fake, got)]

    ex = drive(psk_client(), script)
    assert_completed(ex)
    assert ex.client.dropped[DropReason.HELLO_REQUEST_DURING_HANDSHAKE] == 6
    assert not ex.alerts


@pytest.mark.req("HS-5", "ERR-1")
def test_hello_request_with_a_body_during_the_handshake_is_decode_error() -> None:
    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if HandshakeType.client_hello in got.types() and fake.hello and fake.hello.cookie:
            return [fragment(fake, HandshakeType.hello_request, fake.send_seq, 1, 0, b"\x00")]
        return honest_flights()(fake, got)

    ex = drive(psk_client(), script)
    assert_refused(ex, A.decode_error, "HelloRequest with a 1-byte body")


@pytest.mark.req("ERR-1")
def test_a_protected_fatal_alert_ends_it_with_a_typed_error() -> None:
    ex = established_exchange()
    alert = Alert(AlertLevel.FATAL, A.handshake_failure).encode()
    ex.client.receive_datagram(ex.fake.protected(ContentType.alert, alert), 1.0)
    event = ex.client.next_event()
    assert isinstance(event, ConnectionClosed)
    assert isinstance(event.error, DtlsError) and "handshake_failure" in str(event.error)


# -- datagrams from another address (the adapters' connected sockets) ----------------------------


FAST = RetransmitPolicy(0.1, 0.5)


class UdpFakeServer:
    """`honest_flights` on a real UDP socket, in a thread; before answering the first hello
    it lets a rogue socket (another address) send the client a plaintext fatal alert, a
    HelloVerifyRequest and a close_notify, which a client bound to the server must never see."""

    def __init__(self, client_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.rogue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rogue.bind(("127.0.0.1", 0))
        self.client_port = client_port
        self.fake = FakeServer()
        self.script = honest_flights()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def run(self) -> None:
        rogue_sent = False
        while not self.stop.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if not rogue_sent:
                rogue_sent = True
                target = ("127.0.0.1", self.client_port)
                forger = FakeServer()
                for datagram in (
                    forger.record(21, Alert(AlertLevel.FATAL, A.internal_error).encode()),
                    forger.hello_verify_request(b"rogue cookie"),
                    forger.record(21, Alert(AlertLevel.WARNING, A.close_notify).encode()),
                ):
                    self.rogue.sendto(datagram, target)
                time.sleep(0.05)
            for answer in self.script(self.fake, self.fake.take(data)):
                self.sock.sendto(answer, address)


@contextmanager
def udp_fake_server(client_sock: socket.socket) -> Iterator[UdpFakeServer]:
    server = UdpFakeServer(client_sock.getsockname()[1])
    server.thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.thread.join(5.0)
        server.sock.close()
        server.rogue.close()


@pytest.mark.req("REC-3")
@pytest.mark.parametrize("adapter", ["aio", "sync"])
def test_datagrams_from_another_address_never_reach_the_client(adapter: str) -> None:
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, retransmit=FAST,
                          handshake_timeout=5.0)
    client_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client_sock.bind(("127.0.0.1", 0))
    with udp_fake_server(client_sock) as server:
        if adapter == "sync":
            conn = sync.connect("127.0.0.1", server.port, config, sock=client_sock)
            state = conn.connection.state
            hello_randoms = {h.random for h in server.fake.hellos}
            conn.close()
        else:
            async def main() -> tuple[ConnectionState, set[bytes]]:
                async with aio.connect("127.0.0.1", server.port, config,
                                       sock=client_sock) as c:
                    return c.connection.state, {h.random for h in server.fake.hellos}

            state, hello_randoms = asyncio.run(main())
    assert state is ConnectionState.ESTABLISHED
    # Only the real server's HelloVerifyRequest was answered: one random, the real cookie.
    assert len(hello_randoms) == 1
    assert [h.cookie for h in server.fake.hellos][:2] == [b"", b"\xc0" * 16]


def test_the_fake_server_reads_protected_alerts() -> None:
    """The helper decodes alerts in epoch 1 too (so `assert_refused` sees every alert)."""
    ex = established_exchange()
    ex.client.close()
    (datagram,) = ex.client.datagrams_to_send(1.0)
    assert ex.fake.take(datagram).alerts == [(AlertLevel.WARNING, A.close_notify)]


@pytest.mark.req("HS-5", "ERR-1")
def test_server_hello_done_with_a_body_is_decode_error() -> None:
    def script(fake: FakeServer, got: Received) -> list[bytes]:
        if HandshakeType.client_hello in got.types() and fake.hello and fake.hello.cookie:
            sh = fake.record(ContentType.handshake, fake.message(2, fake.server_hello().encode()))
            return [sh, plain(fake, HandshakeType.server_hello_done, b"\x00")]
        return honest_flights()(fake, got)

    ex = drive(psk_client(), script)
    assert_refused(ex, A.decode_error, "ServerHelloDone with a body")
    # Our hellos carry no session to resume (no session cache yet): an empty session_id.
    assert {h.session_id for h in ex.fake.hellos} == {b""}
