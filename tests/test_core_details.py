"""Details of the core that mutation testing (`make mutation`, docs/mutation.md) found no test
for: boundaries of the record layer, the CCM_8 nonce and additional data for large sequence
numbers, exact counters of the endpoint's gate, the cookie jar across a rotation, the paths a
datagram takes at the gate, the flight cutter at its exact boundaries, the retransmission
timer's memory of losses, the key schedule and the reassembler's bounds."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from iotdtls._buffer import Reader
from iotdtls.config import ClientConfig, KeyLogFailed, RetransmitPolicy, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import Ccm8Protector, NullProtector, psk_premaster_secret, random_bytes
from iotdtls.crypto.ecdhe import check_point
from iotdtls.crypto.keys import finished_verify_data
from iotdtls.endpoint import CookieJar, GateOutcome, ServerEndpoint
from iotdtls.errors import DecodeError, LocalProtocolError, ProtocolError
from iotdtls.events import ConnectionClosed
from iotdtls.handshake.flight import (
    MIN_FRAGMENT,
    Flight,
    OutgoingCcs,
    OutgoingMessage,
    RetransmitTimer,
    cut_flight,
)
from iotdtls.handshake.keyschedule import KeySchedule
from iotdtls.handshake.reassembly import MAX_RANGES, HandshakeFragment, Reassembler
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import HandshakeHeader, HandshakeType
from iotdtls.record import (
    MAX_PLAINTEXT_LENGTH,
    MAX_SEQUENCE_NUMBER,
    ContentType,
    DiscardReason,
    RecordHeader,
    RecordLayer,
    split_datagram,
)
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    established,
    handshake_record,
    make_link,
)

# -- record layer ---------------------------------------------------------------------------------


def test_epochs_up_to_65535() -> None:
    layer = RecordLayer()
    layer.install_read_epoch(0xFFFF, NullProtector())
    layer.install_write_epoch(0xFFFF, NullProtector())
    assert 0xFFFF in layer.read_epochs
    with pytest.raises(LocalProtocolError):
        layer.install_read_epoch(0x10000, NullProtector())


def test_sequence_numbers_above_32_bits_survive_framing_and_opening() -> None:
    layer = RecordLayer()
    seq = (1 << 40) + (1 << 33) + 5
    layer.install_write_epoch(0, NullProtector(), next_sequence_number=seq)
    record = layer.seal(ContentType.application_data, b"x")
    (header, _), *_ = split_datagram(record)[0]
    assert header.sequence_number == seq
    (opened,) = RecordLayer().open_datagram(record)
    assert opened.sequence_number == seq
    with pytest.raises(LocalProtocolError):
        layer.install_write_epoch(0, NullProtector(), next_sequence_number=MAX_SEQUENCE_NUMBER)


def test_header_decode_at_an_offset_needs_13_bytes_from_there() -> None:
    data = bytes(20)
    assert RecordHeader.decode(data, 7).length == 0
    with pytest.raises(DecodeError):
        RecordHeader.decode(data, 8)


def test_a_new_layer_writes_epoch_0_and_drops_unknown_epochs_quietly() -> None:
    layer = RecordLayer()
    assert layer.write_epoch == 0
    assert RecordHeader.decode(layer.seal(ContentType.handshake, b"h")).epoch == 0
    layer.drop_read_epoch(9)  # nothing to drop: no error
    layer.drop_write_epoch(9)


@pytest.mark.req("REC-3")
def test_an_epoch_is_authenticated_from_its_first_record_that_opens() -> None:
    """`authenticated_in(epoch)`: what lets a failure forget a session (only a peer that used
    the session's keys can): a record that opened, not one that failed or an epoch not read."""
    key = bytes(16)
    writer, reader = RecordLayer(), RecordLayer()
    writer.install_write_epoch(1, Ccm8Protector(key, bytes(4)))
    assert not reader.authenticated_in(1) and not reader.authenticated_in(3)
    assert not reader.authenticated_in(2)  # the epoch just past the table's end
    reader.install_read_epoch(1, Ccm8Protector(key, bytes(4)))
    forged = RecordLayer()
    forged.install_write_epoch(1, Ccm8Protector(bytes(range(16)), bytes(4)))
    reader.open_datagram(forged.seal(ContentType.handshake, b"f", 1))
    assert not reader.authenticated_in(1)
    opened = reader.open_datagram(writer.seal(ContentType.handshake, b"f", 1))
    assert [r.sequence_number for r in opened] == [0]
    assert reader.authenticated_in(1)
    assert not reader.authenticated_in(0)  # epoch 0 of this layer has a window, but no record


def test_the_largest_plaintext_opens_and_an_empty_record_is_a_record() -> None:
    layer = RecordLayer()
    big = layer.seal(ContentType.application_data, bytes(MAX_PLAINTEXT_LENGTH))
    empty = layer.seal(ContentType.application_data, b"")
    reader = RecordLayer()
    opened = reader.open_datagram(big + empty)
    assert [len(r.payload) for r in opened] == [MAX_PLAINTEXT_LENGTH, 0]
    assert reader.discards[DiscardReason.BAD_LENGTH] == 0
    assert [r.payload for r in RecordLayer().open_datagram(bytearray(empty))] == [b""]
    assert [r.payload for r in RecordLayer().open_datagram(memoryview(empty))] == [b""]


def test_ccm8_nonce_and_additional_data_for_a_large_sequence_number() -> None:
    """RFC 6655 §3 / RFC 6347 §4.1.2.1, computed independently with AESCCM: the 64-bit
    epoch || sequence number in nonce and additional data, above 32 bits too."""
    key, iv = bytes(range(16)), b"\x01\x02\x03\x04"
    epoch, seq, ctype, version = 3, (1 << 47) + (1 << 34) + 9, 23, 0xFEFD
    plaintext = b"sealed far along"
    explicit = ((epoch << 48) | seq).to_bytes(8, "big")
    aad = explicit + bytes([ctype]) + version.to_bytes(2, "big") + len(plaintext).to_bytes(2, "big")
    expected = explicit + AESCCM(key, tag_length=8).encrypt(iv + explicit, plaintext, aad)
    protector = Ccm8Protector(key, iv)
    assert protector.seal(epoch, seq, ctype, version, plaintext) == expected
    assert protector.open(epoch, seq, ctype, version, expected) == plaintext


# -- crypto ---------------------------------------------------------------------------------------


def test_premaster_takes_keys_up_to_65535_bytes() -> None:
    psk = bytes(range(256)) * 255 + bytes(255)  # 65535 bytes
    premaster = psk_premaster_secret(psk)
    assert premaster[:2] == b"\xff\xff" and premaster.endswith(psk)
    assert len(psk_premaster_secret(b"k", other_secret=bytes(65535))) == 2 + 65535 + 2 + 1
    with pytest.raises(ValueError):
        psk_premaster_secret(psk + b"!")


def test_no_random_bytes_is_an_empty_string() -> None:
    assert random_bytes(0) == b""
    with pytest.raises(ValueError):
        random_bytes(-1)


def test_a_point_of_the_right_length_with_the_wrong_prefix_is_not_uncompressed() -> None:
    with pytest.raises(ProtocolError, match="not an uncompressed P-256 point"):
        check_point(b"\x02" + bytes(64))


# -- key schedule ---------------------------------------------------------------------------------


def test_key_schedule_finished_labels_repr_and_keylog_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(line: str) -> None:
        raise OSError("disk full")

    keys = KeySchedule(broken)
    assert repr(keys) == "<KeySchedule ems=False master=unset>"
    keys.client_random, keys.server_random = bytes(32), bytes(range(32))
    keys.transcript.add(1, 0, b"hello")
    from iotdtls.crypto.suites import SUITES

    with caplog.at_level(logging.WARNING, logger="iotdtls"):
        keys.derive(psk_premaster_secret(KEY), SUITES[0xC0A8], True)
    assert [r.getMessage() for r in caplog.records] == ["key log callback failed: OSError"]
    caplog.clear()

    def our_file(line: str) -> None:  # what FileKeyLog raises: its text is shown
        raise KeyLogFailed("key log 'k.log' cannot be written: No space left on device")

    ours = KeySchedule(our_file)
    ours.client_random, ours.server_random = bytes(32), bytes(range(32))
    with caplog.at_level(logging.WARNING, logger="iotdtls"):
        ours.derive(psk_premaster_secret(KEY), SUITES[0xC0A8], True)
    assert [r.getMessage() for r in caplog.records] == [
        "key log 'k.log' cannot be written: No space left on device"]
    assert repr(keys) == "<KeySchedule ems=False master=set>"
    digest = keys.transcript.digest()
    client, server = keys.verify_data(from_client=True), keys.verify_data(from_client=False)
    assert client != server
    master = keys._master
    assert client == finished_verify_data(master, True, digest)
    assert server == finished_verify_data(master, False, digest)


# -- the endpoint's gate --------------------------------------------------------------------------


def hello_datagram() -> bytes:
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(0.0)
    (datagram,) = client.datagrams_to_send(0.0)
    return datagram


def test_gate_counters_count_every_datagram() -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    hello = hello_datagram()
    old = hello[:25] + b"\xfe\xff" + hello[27:]  # a DTLS 1.0 ClientHello
    for i in range(3):
        endpoint.receive_datagram(b"junk", ("192.0.2.7", i), 0.0)
        endpoint.receive_datagram(old, ("192.0.2.8", i), 0.0)
        endpoint.receive_datagram(hello, ("192.0.2.9", i), 0.0)
    assert endpoint.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 3
    assert endpoint.gate[GateOutcome.VERSION_REFUSED] == 3
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 3


def test_caps_count_each_eviction() -> None:
    link = make_link(server={"max_handshakes": 1, "max_connections": 1})
    link.handshake()
    endpoint = link.server
    clients = []
    for i in range(3):  # three more cookie-proven handshakes that go no further
        client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
        client.connect(0.0)
        address = ("198.51.100.1", 7000 + i)
        for _ in range(2):
            for data in client.datagrams_to_send(0.0):
                endpoint.receive_datagram(data, address, 0.0)
            for data, to in endpoint.datagrams_to_send(0.0):
                if to == address and data[13] == HandshakeType.hello_verify_request:
                    client.receive_datagram(data, 0.0)
        clients.append(client)
    assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1 + 3
    assert endpoint.gate[GateOutcome.HANDSHAKE_EVICTED] == 2
    assert endpoint.gate[GateOutcome.EVICTED_WHEN_FULL] == 0  # half-open ones count apart
    assert len(endpoint.connections) == 2 and len(endpoint._handshaking) == 1
    assert set(endpoint._timed) <= set(endpoint.connections)  # the evicted left no timer


def test_cookies_of_the_current_period_verify_while_the_previous_period_s_do() -> None:
    jar = CookieJar(rotation=10.0)
    old = jar.make(5.0, b"addr", b"hello")
    new = jar.make(15.0, b"addr", b"hello")  # a new period
    assert jar.verify(15.0, b"addr", b"hello", new)
    assert jar.verify(15.0, b"addr", b"hello", old)
    assert not jar.verify(25.0, b"addr", b"hello", old)


def test_a_13_byte_datagram_from_a_known_address_is_just_dropped() -> None:
    link = make_link()
    link.handshake()
    header_only = RecordHeader(ContentType.handshake, 0xFEFD, 0, 99, 0).encode()
    link.server.receive_datagram(header_only, CLIENT_ADDR, link.now)
    assert established(link)


def test_which_hellos_from_a_known_address_go_through_the_gate() -> None:
    """A copy of the association's own hello (same random), even cut after the random, goes
    to the association; a hello too short to carry a random, or undecodable, goes to the gate
    (RFC 6347 §4.2.8)."""
    link = make_link()
    link.handshake()
    conn = link.server_conn
    assert conn is not None
    random = conn.client_random
    gate_before = sum(link.server.gate.values())
    cut = b"\xfe\xfd" + random  # 34 bytes: version and random, nothing more
    link.server.receive_datagram(handshake_record(RecordLayer(), 1, 0, cut), CLIENT_ADDR, 0)
    assert sum(link.server.gate.values()) == gate_before
    short = b"\xfe\xfd" + random[:31]
    link.server.receive_datagram(handshake_record(RecordLayer(), 1, 0, short), CLIENT_ADDR, 0)
    assert link.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 1
    assert link.server_conn is conn and established(link)


@pytest.mark.parametrize(
    "change",
    ["fragmented", "epoch-1", "not-a-hello", "body-past-the-record"],
)
def test_the_gate_answers_only_whole_epoch0_client_hellos(change: str) -> None:
    hello = hello_datagram()
    header = RecordHeader.decode(hello)
    body = hello[25:]
    if change == "fragmented":  # claims to be a fragment, though the record holds all of it
        hs = handshake_header(1, 0, len(body), 0, len(body) - 1)
        datagram = header._replace(length=12 + len(body)).encode() + hs + body
    elif change == "epoch-1":
        datagram = header._replace(epoch=1).encode() + hello[13:]
    elif change == "not-a-hello":
        datagram = hello[:13] + b"\x02" + hello[14:]
    else:  # the record ends before the message: what follows is another record
        datagram = header._replace(length=40).encode() + hello[13:]
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    endpoint.receive_datagram(datagram, CLIENT_ADDR, 0.0)
    assert endpoint.datagrams_to_send(0.0) == []
    assert endpoint.connections == {}
    if change == "fragmented":
        assert endpoint.gate == {GateOutcome.FRAGMENTED_CLIENT_HELLO: 1}
    else:
        assert endpoint.gate == {GateOutcome.NOT_A_CLIENT_HELLO: 1}


# -- the endpoint's table and clock ---------------------------------------------------------------


def test_data_sent_at_the_start_counts_from_time_zero() -> None:
    link = make_link(server={"idle_timeout": 50.0})
    link.handshake()
    link.server.send(CLIENT_ADDR, b"right away")
    assert link.server.get_timer() == 50.0


def test_a_closed_association_leaves_no_idle_timer_behind() -> None:
    link = make_link(server={"idle_timeout": 50.0})
    link.handshake()
    link.client.close()
    link.step()
    assert link.server.connections == {}
    assert link.server.get_timer() is None
    link.server.handle_timer(1000.0)  # nothing left to expire


def test_what_the_endpoint_sends_goes_to_the_right_address() -> None:
    link = make_link()
    link.handshake()
    link.server.send(CLIENT_ADDR, b"data")
    link.server.close(CLIENT_ADDR)
    assert [to for _, to in link.server.datagrams_to_send(0.0)] == [CLIENT_ADDR, CLIENT_ADDR]


def test_a_handshake_that_fails_early_names_no_peer() -> None:
    server = DtlsConnection(ServerConfig(psk_store={IDENTITY: KEY}))
    server.accept(0.0)
    server.receive_datagram(handshake_record(RecordLayer(), 16, 0, b"\x00\x01x"), 0.0)
    event = server.next_event()
    assert isinstance(event, ConnectionClosed) and event.peer is None
    assert DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY)).get_timer() is None


# -- flights --------------------------------------------------------------------------------------


def layer_with_keys() -> RecordLayer:
    layer = RecordLayer()
    layer.install_write_epoch(1, Ccm8Protector(bytes(16), bytes(4)))
    return layer


def flight_five(identity_length: int) -> list[OutgoingMessage | OutgoingCcs]:
    cke = OutgoingMessage(HandshakeType.client_key_exchange, 2, bytes(2 + identity_length), 0)
    return [cke, OutgoingCcs(0), OutgoingMessage(HandshakeType.finished, 3, bytes(12), 1)]


def cut(items: list[OutgoingMessage | OutgoingCcs], mtu: int) -> list[list[tuple[int, int]]]:
    """The (content type, epoch) of the records of each datagram of a cut flight."""
    layer = layer_with_keys()
    datagrams = cut_flight(items, mtu, layer.overhead, layer.seal)
    assert all(len(d) <= mtu for d in datagrams)
    return [[(h.content_type, h.epoch) for h, _ in split_datagram(d)[0]] for d in datagrams]


CKE, CCS, FIN = (22, 0), (20, 0), (22, 1)


def test_ccs_and_finished_join_the_key_exchange_when_all_fit_exactly() -> None:
    # CKE record 13+12+2+n, CCS record 14, Finished record 13+16+12+12 = 53.
    n = 20
    total = (13 + 12 + 2 + n) + 14 + 53
    assert cut(flight_five(n), total) == [[CKE, CCS, FIN]]
    assert cut(flight_five(n), total - 1) == [[CKE], [CCS, FIN]]


def test_a_fragment_starts_in_the_tail_when_it_just_fits() -> None:
    big = OutgoingMessage(HandshakeType.certificate, 1, bytes(200), 0)
    small = OutgoingMessage(HandshakeType.server_hello_done, 2, bytes(16), 0)
    # After the first message, exactly 16 bytes of body fit the first datagram's tail.
    mtu = (13 + 12 + 200) + (13 + 12 + 16)
    assert cut([big, small], mtu) == [[CKE, CKE]]
    assert cut([big, small], mtu - 1) == [[CKE], [CKE]]


def test_a_larger_message_begins_in_a_tail_of_at_least_min_fragment_bytes() -> None:
    big = OutgoingMessage(HandshakeType.certificate, 1, bytes(200), 0)
    request = OutgoingMessage(HandshakeType.certificate_request, 2, bytes(300), 0)
    # After the first message, MIN_FRAGMENT bytes of the second one's body fit the tail; the
    # second one (300 bytes) fits no datagram whole (241 or 240 bytes of body).
    mtu = (13 + 12 + 200) + (13 + 12 + MIN_FRAGMENT)
    assert cut([big, request], mtu) == [[CKE, CKE], [CKE], [CKE]]
    assert cut([big, request], mtu - 1) == [[CKE], [CKE], [CKE]]  # too short a tail: left empty


def test_a_message_that_fits_a_datagram_whole_is_not_split() -> None:
    """RFC 6347 §4.2.3 allows a message in fragments or whole: one that fits no more in the
    room left but whole in an empty datagram starts one, and what follows it joins it."""
    big = OutgoingMessage(HandshakeType.certificate, 1, bytes(200), 0)
    request = OutgoingMessage(HandshakeType.certificate_request, 2, bytes(100), 0)
    done = OutgoingMessage(HandshakeType.server_hello_done, 3, b"", 0)
    # After the first message, the tail holds 50 bytes of body: room for a first fragment.
    mtu = (13 + 12 + 200) + (13 + 12 + 50)
    layer = layer_with_keys()
    datagrams = cut_flight([big, request, done], mtu, layer.overhead, layer.seal)
    assert [len(split_datagram(d)[0]) for d in datagrams] == [1, 2]
    assert [fragment for d in datagrams for _, fragment in split_datagram(d)[0]] == [
        big.encoded, request.encoded, done.encoded
    ]


@pytest.mark.parametrize(
    ("body", "max_payload", "records"),
    [
        # 275 bytes fill an empty datagram of 300 exactly (25 of headers): whole in the next.
        (275, MAX_PLAINTEXT_LENGTH, [1, 1]),
        # One byte more fits no datagram: it starts in the 50 bytes of the first one's tail.
        (276, MAX_PLAINTEXT_LENGTH, [2, 1]),
        # 64 bytes fill one record of max_fragment_length 76 exactly: whole in the next.
        (64, 12 + 64, [1, 1]),
        # One byte more is cut whatever the datagram: it starts in the tail.
        (65, 12 + 64, [2, 1]),
    ],
)
def test_a_message_fitting_one_record_of_an_empty_datagram_exactly_is_not_split(
    body: int, max_payload: int, records: list[int]
) -> None:
    first = OutgoingMessage(HandshakeType.server_hello, 1, bytes(200 if body > 200 else 40), 0)
    second = OutgoingMessage(HandshakeType.certificate, 2, bytes(body), 0)
    mtu = 300 if body > 200 else (13 + 12 + 40) + (13 + 12 + 50)
    layer = layer_with_keys()
    datagrams = cut_flight([first, second], mtu, layer.overhead, layer.seal, max_payload)
    assert all(len(d) <= mtu for d in datagrams)
    assert [len(split_datagram(d)[0]) for d in datagrams] == records


@pytest.mark.req("HS-3")
@pytest.mark.parametrize("max_payload", [MAX_PLAINTEXT_LENGTH, 12 + 64])
def test_a_message_larger_than_a_datagram_is_still_cut_into_fragments(max_payload: int) -> None:
    """A message no datagram holds whole still starts in the tail and is cut into fragments
    (RFC 6347 §4.2.3) whose records fit the MTU and, with max_fragment_length, that limit."""
    hello = OutgoingMessage(HandshakeType.server_hello, 1, bytes(40), 0)
    body = bytes(range(256)) * 2
    certificate = OutgoingMessage(HandshakeType.certificate, 2, body, 0)
    mtu = 200
    layer = layer_with_keys()
    datagrams = cut_flight([hello, certificate], mtu, layer.overhead, layer.seal, max_payload)
    assert all(len(d) <= mtu for d in datagrams)
    records = [fragment for d in datagrams for _, fragment in split_datagram(d)[0]]
    assert len(split_datagram(datagrams[0])[0]) >= 2  # it begins in the tail of the first
    assert all(len(r) <= max_payload for r in records)
    assert records[0] == hello.encoded
    joined = b""
    for record in records[1:]:
        reader = Reader(record)
        header = HandshakeHeader.decode(reader)
        assert (header.msg_type, header.length, header.message_seq) == (11, len(body), 2)
        assert header.fragment_offset == len(joined) and header.fragment_length > 0
        joined += reader.pull_bytes(header.fragment_length)
        assert reader.eof()
    assert joined == body


def test_an_outgoing_message_repr_leaves_out_the_body() -> None:
    """A Finished of ours carries verify_data: not for logs (SEC-1)."""
    finished = OutgoingMessage(HandshakeType.finished, 3, bytes.fromhex("5ec2e7" * 4), 1)
    text = repr(finished) + str(finished) + f"{finished}" + repr(Flight((finished,)))
    assert "5ec2e7" not in text and "\\xc2\\xe7" not in text and "body" not in text
    assert repr(finished) == "OutgoingMessage(msg_type=20, message_seq=3, epoch=1)"


def test_the_smallest_room_for_a_fragment_is_one_byte() -> None:
    message = OutgoingMessage(HandshakeType.client_key_exchange, 2, bytes(5), 0)
    assert len(cut([message], 13 + 12 + 1)) == 5
    with pytest.raises(ValueError, match="leaves no room"):
        cut([message], 13 + 12)
    with pytest.raises(ValueError, match="leaves no room"):
        cut([message], 20)


def test_the_retransmission_timer_remembers_a_loss_for_the_next_flight() -> None:
    """RFC 6347 §4.2.4.1: after a retransmission the next flight keeps the longer timer; only
    an exchange without loss brings back the initial value."""
    timer = RetransmitTimer(RetransmitPolicy(1.0, 60.0))
    assert timer.deadline is None and not timer.expired(100.0)
    timer.start(0.0)
    timer.back_off(1.0)
    assert (timer.interval, timer.deadline) == (2.0, 3.0)
    timer.start(3.0)  # the next flight, after a loss: still 2 s
    assert timer.deadline == 5.0
    timer.start(4.0)  # then an exchange without loss: back to 1 s
    assert timer.deadline == 5.0


def test_a_restart_keeps_the_interval_and_leaves_a_stopped_timer_stopped() -> None:
    """RFC 6347 §4.2.4: a resend for the peer's repeated flight re-arms the timer a whole
    interval on, not doubled; after our final flight the timer is stopped (only the peer's
    repeats resend it), and a restart leaves it so."""
    timer = RetransmitTimer(RetransmitPolicy(1.0, 60.0))
    timer.start(0.0)
    timer.back_off(1.0)
    timer.restart(2.5)
    assert (timer.interval, timer.deadline) == (2.0, 4.5)
    timer.stop()
    timer.restart(5.0)
    assert timer.deadline is None and not timer.expired(100.0)


# -- reassembly -----------------------------------------------------------------------------------


def test_reassembly_bounds_at_their_exact_values() -> None:
    r = Reassembler(1000)
    r.next_seq = 1
    assert r.evicted == 0
    r.add(HandshakeFragment(11, 1000, 1, 0, b"a" * 1000, 0))  # exactly the largest message
    assert r.peek() is not None
    r.add(HandshakeFragment(14, 0, 2, 0, b"", 0))  # an empty message is complete at once
    r.pop()
    empty = r.peek()
    assert empty is not None and empty.body == b""
    r.pop()
    r.add(HandshakeFragment(11, 1, 3, 0, b"", 0))  # one byte long, none received yet
    assert r.peek() is None
    with pytest.raises(DecodeError):
        r.add(HandshakeFragment(11, 1001, 3, 0, b"x", 0))


def test_the_range_list_takes_exactly_max_ranges_then_the_whole_message() -> None:
    r = Reassembler(4096)
    length = 4 * MAX_RANGES + 10
    for i in range(MAX_RANGES):  # disjoint one-byte fragments
        r.add(HandshakeFragment(11, length, 0, 4 * i, b"z", 0))
    r.add(HandshakeFragment(11, length, 0, 4 * MAX_RANGES + 2, b"w", 0))  # one range too many
    r.add(HandshakeFragment(11, length, 0, 0, b"q" * length, 0))  # the whole message
    message = r.peek()
    assert message is not None and message.body == b"q" * length


def test_a_newer_epoch_replaces_a_partial_message_and_an_older_one_does_not() -> None:
    r = Reassembler(1000)
    r.add(HandshakeFragment(20, 12, 0, 0, b"forged", 0))  # a plaintext stub
    r.add(HandshakeFragment(20, 12, 0, 0, b"f" * 12, 1))  # the protected message
    assert (message := r.peek()) is not None and message.body == b"f" * 12
    r.add(HandshakeFragment(20, 12, 0, 0, b"o" * 12, 0))  # older again: ignored
    assert (message := r.peek()) is not None and message.body == b"f" * 12
    r.discard()
    assert r.peek() is None and r.buffered_bytes == 0


def test_payloads_are_bytes_whatever_the_datagram_is() -> None:
    record = RecordLayer().seal(ContentType.application_data, b"payload")
    for datagram in (bytearray(record), memoryview(record)):
        (opened,) = RecordLayer().open_datagram(datagram)
        assert type(opened.payload) is bytes and opened.payload == b"payload"


def partials(r: Reassembler) -> list[int]:
    return sorted(r._partials)


def test_room_is_made_exactly_and_from_the_furthest() -> None:
    r = Reassembler(1000)  # a budget of 2000 bytes
    for seq, length in ((3, 500), (4, 500), (5, 500)):
        r.add(HandshakeFragment(11, length, seq, 0, b"x", 0))
    r.add(HandshakeFragment(11, 500, 6, 0, b"x", 0))  # exactly the budget: nobody leaves
    assert partials(r) == [3, 4, 5, 6] and r.evicted == 0 and r.buffered_bytes == 2000
    r.add(HandshakeFragment(11, 1, 2, 0, b"x", 0))  # one byte over: the furthest leaves
    assert partials(r) == [2, 3, 4, 5] and r.evicted == 1
    r.add(HandshakeFragment(11, 1000, 1, 0, b"x", 0))  # 1000 over: 5 and 4 just make it
    assert partials(r) == [1, 2, 3] and r.evicted == 3 and r.buffered_bytes == 1501
    r.add(HandshakeFragment(11, 999, 0, 0, b"x", 0))  # 500 over: 3 (500 bytes) is enough
    assert partials(r) == [0, 1, 2] and r.evicted == 4 and r.buffered_bytes == 2000


def test_exactly_max_ranges_are_kept_per_message() -> None:
    r = Reassembler(4096)
    length = 4 * MAX_RANGES + 10
    for i in range(MAX_RANGES + 1):
        r.add(HandshakeFragment(11, length, 0, 4 * i, b"z", 0))
    assert len(r._partials[0].ranges) == MAX_RANGES


def test_odd_hellos_from_a_known_address_meet_the_gate_and_nothing_breaks() -> None:
    """A ClientHello whose handshake length overruns its record (undecodable): from an
    established peer's address, the gate sees it; one that claims to be a later fragment
    cannot show a new random, so the association gets it and ignores it."""
    link = make_link()
    link.handshake()
    body = b"\xfe\xfd" + bytes(60)
    overrun = RecordHeader(22, 0xFEFD, 0, 50, 12 + 10).encode()
    overrun += handshake_header(1, 0, len(body), 0, len(body)) + body[:10]
    fragment = RecordLayer().seal(22, handshake_header(1, 0, 100, 5, len(body)) + body)
    for datagram in (overrun, fragment):
        link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)
    assert link.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 1
    assert link.server.gate[GateOutcome.FRAGMENTED_CLIENT_HELLO] == 0
    assert link.server.datagrams_to_send(link.now) == []
    assert established(link)


def test_evicted_and_replaced_associations_leave_no_idle_deadline() -> None:
    """Two clients in turn take the one slot of a full server; each eviction is counted, and
    the evicted ones' idle deadlines go with them."""
    link = make_link(server={"max_connections": 1, "max_handshakes": 1, "idle_timeout": 30.0})
    link.handshake()
    endpoint = link.server
    for i in range(2):
        client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
        client.connect(1.0 + i)
        address = ("198.51.100.9", 9000 + i)
        for _ in range(6):
            for data in client.datagrams_to_send(1.0 + i):
                endpoint.receive_datagram(data, address, 1.0 + i)
            for data, to in endpoint.datagrams_to_send(1.0 + i):
                if to == address:
                    client.receive_datagram(data, 1.0 + i)
        assert client.state is ConnectionState.ESTABLISHED
    assert endpoint.gate[GateOutcome.EVICTED_WHEN_FULL] == 2
    assert list(endpoint._activity) == [("198.51.100.9", 9001)]
    assert endpoint.get_timer() == 2.0 + 30.0
    endpoint.handle_timer(100.0)
    assert endpoint.connections == {} and endpoint.idle_expired == 1


def test_room_is_made_when_the_further_ones_free_just_enough() -> None:
    r = Reassembler(1000)  # a budget of 2000 bytes
    for seq, length in ((1, 1000), (5, 500), (6, 500)):
        r.add(HandshakeFragment(11, length, seq, 0, b"x", 0))
    r.add(HandshakeFragment(11, 1000, 4, 0, b"x", 0))  # needs 1000: 5 and 6 free exactly that
    assert partials(r) == [1, 4] and r.evicted == 2
    s = Reassembler(1000)
    for seq in (4, 5, 6):
        s.add(HandshakeFragment(11, 500, seq, 0, b"x", 0))
    s.add(HandshakeFragment(11, 500, 3, 0, b"x", 0))  # fills the budget exactly: nobody leaves
    assert partials(s) == [3, 4, 5, 6] and s.evicted == 0
