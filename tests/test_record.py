"""Record layer (RFC 6347 §4.1): header codec, datagram splitting, per-epoch protection, silent
discard with counters, sequence number exhaustion."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from iotdtls.crypto import Ccm8Protector, NullProtector
from iotdtls.errors import DecodeError, LocalProtocolError, SequenceNumbersExhausted
from iotdtls.record import (
    MAX_CIPHERTEXT_LENGTH,
    MAX_SEQUENCE_NUMBER,
    RECORD_HEADER_LEN,
    ContentType,
    DiscardReason,
    PlainRecord,
    RecordHeader,
    RecordLayer,
    split_datagram,
)

KEY_C = bytes(range(16))
KEY_S = bytes(range(16, 32))
IV_C = b"\xc0\xc1\xc2\xc3"
IV_S = b"\x50\x51\x52\x53"
APP = ContentType.application_data
HS = ContentType.handshake


def pair(epoch: int = 1) -> tuple[RecordLayer, RecordLayer]:
    """A client-side sender and a server-side receiver sharing `epoch` keys; epoch 0 in both."""
    sender, receiver = RecordLayer(), RecordLayer()
    sender.install_write_epoch(epoch, Ccm8Protector(KEY_C, IV_C))
    receiver.install_read_epoch(epoch, Ccm8Protector(KEY_C, IV_C))
    return sender, receiver


def raw_record(ctype: int, version: int, epoch: int, seq: int, fragment: bytes) -> bytes:
    return RecordHeader(ctype, version, epoch, seq, len(fragment)).encode() + fragment


# -- header codec and splitting -----------------------------------------------------------------


@pytest.mark.req("REC-1")
def test_header_layout() -> None:
    h = RecordHeader(22, 0xFEFD, 0x0102, 0x030405060708, 0x090A)
    raw = h.encode()
    assert raw == bytes.fromhex("16 fefd 0102 030405060708 090a")
    assert len(raw) == RECORD_HEADER_LEN == 13
    assert RecordHeader.decode(raw) == h
    assert RecordHeader.decode(b"xx" + raw, 2) == h
    with pytest.raises(DecodeError):
        RecordHeader.decode(raw[:12])
    with pytest.raises(ValueError):
        RecordHeader(22, 0xFEFD, 0, 2**48, 0).encode()


@pytest.mark.req("REC-1")
def test_seal_writes_epoch_and_sequence_and_aead_fragment() -> None:
    sender, _ = pair()
    r0 = sender.seal(APP, b"ping")
    r1 = sender.seal(APP, b"ping")
    h0, h1 = RecordHeader.decode(r0), RecordHeader.decode(r1)
    assert (h0.content_type, h0.version, h0.epoch, h0.sequence_number) == (23, 0xFEFD, 1, 0)
    assert (h1.epoch, h1.sequence_number) == (1, 1)
    assert h0.length == len(r0) - 13 == 4 + 16
    # explicit nonce = epoch || seq; the fragment matches AESCCM with the RFC 6655 nonce.
    explicit = bytes.fromhex("0001 000000000001")
    aad = explicit + b"\x17\xfe\xfd\x00\x04"
    assert r1[13:] == explicit + AESCCM(KEY_C, tag_length=8).encrypt(IV_C + explicit, b"ping", aad)


def test_split_datagram_several_records() -> None:
    a = raw_record(22, 0xFEFD, 0, 0, b"one")
    b = raw_record(20, 0xFEFD, 0, 1, b"\x01")
    c = raw_record(23, 0xFEFD, 1, 0, b"")
    records, reason = split_datagram(a + b + c)
    assert reason is None
    assert [(h.content_type, h.sequence_number, f) for h, f in records] == [
        (22, 0, b"one"),
        (20, 1, b"\x01"),
        (23, 0, b""),
    ]
    assert split_datagram(b"") == ([], None)


def test_split_datagram_truncated_trailer() -> None:
    a = raw_record(22, 0xFEFD, 0, 0, b"one")
    b = raw_record(22, 0xFEFD, 0, 1, b"two")
    records, reason = split_datagram(a + b[:-1])
    assert [f for _, f in records] == [b"one"] and reason is DiscardReason.BAD_LENGTH
    records, reason = split_datagram(a + b[:5])
    assert [f for _, f in records] == [b"one"] and reason is DiscardReason.BAD_LENGTH


# -- round trips and epochs ---------------------------------------------------------------------


def test_several_records_in_one_datagram() -> None:
    sender, receiver = pair()
    datagram = b"".join(sender.seal(APP, bytes([i]) * i) for i in range(5))
    out = receiver.open_datagram(datagram)
    assert out == [PlainRecord(APP, 1, i, bytes([i]) * i) for i in range(5)]
    assert sum(receiver.discards.values()) == 0


def test_epoch_0_and_1_readable_at_once() -> None:
    sender, receiver = pair()
    finished = sender.seal(HS, b"finished", epoch=1)
    hello = sender.seal(HS, b"hello", epoch=0)
    ccs = sender.seal(ContentType.change_cipher_spec, b"\x01", epoch=0)
    assert list(receiver.read_epochs) == [0, 1]
    out = receiver.open_datagram(hello + ccs + finished)
    assert [(r.epoch, r.content_type, r.payload) for r in out] == [
        (0, HS, b"hello"),
        (0, ContentType.change_cipher_spec, b"\x01"),
        (1, HS, b"finished"),
    ]
    receiver.drop_read_epoch(0)
    assert receiver.read_epochs == (1,)
    assert receiver.open_datagram(sender.seal(HS, b"late", epoch=0)) == []
    assert receiver.discards[DiscardReason.UNKNOWN_EPOCH] == 1


def test_epoch0_application_data_is_passed_up() -> None:
    layer = RecordLayer()
    out = layer.open_datagram(raw_record(23, 0xFEFD, 0, 3, b"early"))
    assert out == [PlainRecord(APP, 0, 3, b"early")]


def test_write_epochs_default_and_sequence_per_epoch() -> None:
    layer = RecordLayer()
    assert layer.write_epoch == 0
    assert layer.overhead() == 13
    layer.seal(HS, b"a")
    layer.install_write_epoch(1, Ccm8Protector(KEY_S, IV_S))
    assert layer.write_epoch == 1
    assert layer.overhead() == 13 + 16 and layer.overhead(0) == 13
    assert layer.next_sequence_number(0) == 1 and layer.next_sequence_number() == 0
    assert RecordHeader.decode(layer.seal(HS, b"b", epoch=0)).sequence_number == 1
    assert RecordHeader.decode(layer.seal(HS, b"c")).epoch == 1
    with pytest.raises(LocalProtocolError):
        layer.drop_write_epoch(1)
    for missing in (2, -1):  # past the table, and no index from its end
        with pytest.raises(LocalProtocolError, match=f"no write state for epoch {missing}"):
            layer.seal(HS, b"e", epoch=missing)
    layer.drop_write_epoch(0)
    with pytest.raises(LocalProtocolError):
        layer.seal(HS, b"d", epoch=0)
    with pytest.raises(LocalProtocolError):
        layer.install_write_epoch(2**16, NullProtector())


def test_a_write_epoch_continues_at_a_given_sequence_number() -> None:
    """A server continuing the client's epoch-0 numbering after the cookie exchange (RFC 6347
    §4.2.1) moves the epoch it names, not the current one, within 0..2^48-2."""
    layer = RecordLayer()
    layer.install_write_epoch(1, Ccm8Protector(KEY_S, IV_S))
    layer.set_next_sequence_number(0, 7)
    assert layer.next_sequence_number(0) == 7 and layer.next_sequence_number(1) == 0
    assert RecordHeader.decode(layer.seal(HS, b"a", epoch=0)).sequence_number == 7
    layer.set_next_sequence_number(0, MAX_SEQUENCE_NUMBER - 1)
    for wrong in (MAX_SEQUENCE_NUMBER, -1):
        with pytest.raises(LocalProtocolError, match="next sequence number"):
            layer.set_next_sequence_number(0, wrong)
    with pytest.raises(LocalProtocolError, match="no write state"):
        layer.set_next_sequence_number(2, 0)


def test_version_override_only_for_epoch_0() -> None:
    layer = RecordLayer()
    hvr = layer.seal(HS, b"hvr", version=0xFEFF)
    assert RecordHeader.decode(hvr).version == 0xFEFF
    layer.install_write_epoch(1, Ccm8Protector(KEY_S, IV_S))
    with pytest.raises(LocalProtocolError):
        layer.seal(HS, b"x", version=0xFEFF)
    with pytest.raises(LocalProtocolError):
        layer.seal(HS, b"x", epoch=0, version=0x0303)
    with pytest.raises(LocalProtocolError):
        layer.seal(APP, bytes(2**14 + 1))


def test_sequence_exhaustion_raises_instead_of_wrapping() -> None:
    layer = RecordLayer()
    layer.install_write_epoch(1, Ccm8Protector(KEY_S, IV_S), next_sequence_number=2**48 - 2)
    last = layer.seal(APP, b"last")
    assert RecordHeader.decode(last).sequence_number == 2**48 - 2
    with pytest.raises(SequenceNumbersExhausted) as info:
        layer.seal(APP, b"one too many")
    assert info.value.epoch == 1
    with pytest.raises(SequenceNumbersExhausted):
        layer.seal(APP, b"still no")
    assert layer.next_sequence_number() == MAX_SEQUENCE_NUMBER
    assert RecordHeader.decode(layer.seal(APP, b"old epoch", epoch=0)).epoch == 0


# -- silent discard and counting ----------------------------------------------------------------


def _bad_records(sender: RecordLayer) -> dict[DiscardReason, bytes]:
    good_frag = sender.seal(APP, b"victim")[13:]
    tampered = bytearray(sender.seal(APP, b"tampered"))
    tampered[-1] ^= 0xFF
    huge = bytes(MAX_CIPHERTEXT_LENGTH + 1)
    return {
        DiscardReason.UNKNOWN_CONTENT_TYPE: raw_record(99, 0xFEFD, 1, 50, good_frag),
        DiscardReason.BAD_VERSION: raw_record(23, 0x0303, 1, 51, good_frag),
        DiscardReason.UNKNOWN_EPOCH: raw_record(23, 0xFEFD, 7, 52, good_frag),
        DiscardReason.BAD_TAG: bytes(tampered),
        DiscardReason.BAD_LENGTH: raw_record(23, 0xFEFD, 1, 53, huge),
        # Unprotected and over the negotiated max_fragment_length (RFC 6066 §4): 513 > 512.
        DiscardReason.OVER_FRAGMENT_LIMIT: raw_record(22, 0xFEFD, 0, 54, bytes(513)),
    }


@pytest.mark.req("REC-3")
@pytest.mark.parametrize("reason", list(DiscardReason))
def test_each_discard_is_counted_and_next_good_record_delivered(reason: DiscardReason) -> None:
    sender, receiver = pair()
    receiver.plaintext_limit = 512
    if reason in (DiscardReason.REPLAYED, DiscardReason.TOO_OLD):
        first = sender.seal(APP, b"first")
        for _ in range(64 if reason is DiscardReason.TOO_OLD else 0):
            receiver.open_datagram(sender.seal(APP, b"fill"))
        if reason is DiscardReason.REPLAYED:
            receiver.open_datagram(first)
        bad = first
    else:
        bad = _bad_records(sender)[reason]
    good = sender.seal(APP, b"good")
    assert [r.payload for r in receiver.open_datagram(bad + good)] == [b"good"]
    assert receiver.discards[reason] == 1
    assert sum(receiver.discards.values()) == 1


@pytest.mark.req("REC-3")
def test_bad_tags_counted_per_epoch() -> None:
    sender, receiver = pair()
    sender.install_write_epoch(2, Ccm8Protector(KEY_S, IV_S))
    receiver.install_read_epoch(2, Ccm8Protector(KEY_C, IV_C))  # wrong key for epoch 2
    datagram = sender.seal(APP, b"x", epoch=1) + sender.seal(APP, b"y") + sender.seal(APP, b"z")
    assert [r.payload for r in receiver.open_datagram(datagram)] == [b"x"]
    assert receiver.bad_tag_by_epoch == {2: 2}
    assert receiver.discards[DiscardReason.BAD_TAG] == 2


@pytest.mark.req("REC-3", "EXT-1")
def test_only_an_exempt_layer_takes_a_lone_client_hello_over_the_limit() -> None:
    """Over `plaintext_limit`, an unprotected record is taken only by a layer that is
    `client_hello_exempt` (a server's, set by its connection), and only when it holds one
    ClientHello fragment whose 24-bit fragment_length (RFC 6347 §4.2.2) ends the record."""
    body = bytes(600)

    def hello(fragment_length: bytes) -> bytes:
        # msg_type, length, message_seq, fragment_offset, fragment_length, then the body
        header = b"\x01" + (600).to_bytes(3, "big") + b"\x00\x00" + bytes(3) + fragment_length
        return raw_record(22, 0xFEFD, 0, 7, header + body)

    whole = hello((600).to_bytes(3, "big"))
    high_byte = hello(b"\x01" + (600).to_bytes(2, "big"))  # 66,136: not this record's
    for exempt, datagram, taken in [
        (False, whole, False),  # the default: a fresh layer is no server's
        (True, whole, True),
        (True, high_byte, False),
    ]:
        layer = RecordLayer()
        layer.plaintext_limit = 512
        if exempt:
            layer.client_hello_exempt = True
        got = layer.open_datagram(datagram)
        assert [len(r.payload) for r in got] == ([612] if taken else [])
        assert layer.discards[DiscardReason.OVER_FRAGMENT_LIMIT] == (0 if taken else 1)


@pytest.mark.req("REC-3")
def test_short_fragment_and_truncated_datagram() -> None:
    sender, receiver = pair()
    short = raw_record(23, 0xFEFD, 1, 9, bytes(15))  # cannot hold nonce and tag
    good = sender.seal(APP, b"ok")
    assert [r.payload for r in receiver.open_datagram(short + good)] == [b"ok"]
    assert receiver.discards[DiscardReason.BAD_LENGTH] == 1
    assert receiver.bad_tag_by_epoch == {}
    # a truncated trailing record is dropped with the rest of the datagram
    good2 = sender.seal(APP, b"ok2")
    assert [r.payload for r in receiver.open_datagram(good2 + good2[:20])] == [b"ok2"]
    assert receiver.open_datagram(b"\x17\xfe\xfd") == []
    assert receiver.discards[DiscardReason.BAD_LENGTH] == 3


@pytest.mark.req("REC-3")
def test_dtls10_version_tolerated_only_for_epoch0_handshake_and_alert() -> None:
    layer = RecordLayer()
    layer.install_read_epoch(1, NullProtector())
    hello = raw_record(22, 0xFEFF, 0, 0, b"client hello")
    assert [r.payload for r in layer.open_datagram(hello)] == [b"client hello"]
    # a DTLS 1.0 server refuses in its own version: a fatal handshake_failure, epoch 0
    refusal = raw_record(21, 0xFEFF, 0, 1, b"\x02\x28")
    assert layer.open_datagram(refusal) == [PlainRecord(ContentType.alert, 0, 1, b"\x02\x28")]
    for ctype, epoch, seq in ((23, 0, 2), (20, 0, 3), (24, 0, 4), (22, 1, 0), (21, 1, 1)):
        assert layer.open_datagram(raw_record(ctype, 0xFEFF, epoch, seq, b"x")) == []
    assert layer.discards[DiscardReason.BAD_VERSION] == 5


def test_replay_check_can_be_turned_off_per_epoch() -> None:
    layer = RecordLayer()
    layer.install_read_epoch(0, NullProtector(), replay_check=False)
    rec = raw_record(22, 0xFEFD, 0, 5, b"again")
    assert len(layer.open_datagram(rec + rec)) == 2


# -- never raises -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_split_datagram_never_raises(data: bytes) -> None:
    records, reason = split_datagram(data)
    consumed = sum(RECORD_HEADER_LEN + len(f) for _, f in records)
    assert consumed <= len(data)
    assert (reason is None) == (consumed == len(data))


def _record_strategy() -> st.SearchStrategy[bytes]:
    header = st.tuples(
        st.sampled_from([19, 20, 21, 22, 23, 24, 25]),
        st.sampled_from([0xFEFD, 0xFEFF, 0x0303]),
        st.sampled_from([0, 1, 2]),
        st.integers(min_value=0, max_value=2**48 - 1),
        st.binary(max_size=40),
    )
    return header.map(lambda t: raw_record(*t))


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(_record_strategy(), max_size=5).map(b"".join),
    ),
    st.binary(max_size=30),
)
def test_open_datagram_never_raises(data: bytes, tail: bytes) -> None:
    sender, receiver = pair()
    receiver.install_read_epoch(2, NullProtector())
    good = sender.seal(APP, b"good")
    receiver.open_datagram(data + tail)
    out = receiver.open_datagram(data)
    assert all(isinstance(r, PlainRecord) for r in out)
    # a well-formed prefix never disturbs a good record that follows it
    _, reason = split_datagram(data)
    if reason is None:
        assert [r.payload for r in receiver.open_datagram(data + good)][-1:] == [b"good"]


class _InterruptedProtector(Ccm8Protector):
    """Runs `interrupt` once, inside its first seal: as a signal handler calling send() does
    when the signal lands while the main thread is sealing."""

    __slots__ = ("interrupt",)

    def seal(self, epoch: int, seq: int, content_type: int, version: int,
             plaintext: bytes) -> bytes:
        interrupt, self.interrupt = self.interrupt, None
        if interrupt is not None:
            interrupt()
        return super().seal(epoch, seq, content_type, version, plaintext)


def test_a_seal_made_while_another_is_sealing_takes_the_next_sequence_number() -> None:
    """A sequence number is taken before the record is protected: a seal entered from inside
    another (a signal handler's send) got the same number, and under one key the same AES-CCM
    nonce for two plaintexts (RFC 6655 §3, RFC 5116 §3; probe AV: 8 numbers used twice in
    116k records of a send loop with a SIGUSR1 handler that sends)."""
    sender, receiver = RecordLayer(), RecordLayer()
    protector = _InterruptedProtector(KEY_C, IV_C)
    sender.install_write_epoch(1, protector)
    receiver.install_read_epoch(1, Ccm8Protector(KEY_C, IV_C))
    nested: list[bytes] = []
    protector.interrupt = lambda: nested.append(sender.seal(APP, b"from the handler"))
    outer = sender.seal(APP, b"main thread")
    numbers = [RecordHeader.decode(r).sequence_number for r in (*nested, outer)]
    assert numbers == [1, 0]
    assert sender.next_sequence_number() == 2
    opened = receiver.open_datagram(outer + nested[0])
    assert [(r.sequence_number, r.payload) for r in opened] == [
        (0, b"main thread"), (1, b"from the handler")]
