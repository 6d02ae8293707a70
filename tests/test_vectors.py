"""The acid test of the foundations: real DTLS 1.2 traffic recorded from other stacks.

The vectors in ``tests/vectors/`` were recorded by ``tools/record_vectors.py`` between OpenSSL
peers and between GnuTLS peers (PSK and ECDHE_ECDSA with mutual certificates, the latter with
``-mtu 256`` so that Certificate and NewSessionTicket are fragmented). Everything here runs
through iotdtls's own code only: record framing (RFC 6347 §4.1), handshake header and message
codecs (RFC 6347 §4.2, RFC 5246 §7.4), reassembly (RFC 6347 §4.2.3), the DTLS transcript
(RFC 6347 §4.2.6), the key schedule (RFC 5246 §6.3, §7.4.9, §8.1, RFC 4279 §2, RFC 7627 §4) and
AES-128-CCM-8 record protection (RFC 6655 §3) against the anti-replay window (RFC 6347
§4.1.2.6) and silent discard (RFC 6347 §4.1.2.7). The master secret comes from the NSS key log
the foreign client wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from iotdtls._buffer import Reader
from iotdtls.crypto import (
    Ccm8Protector,
    KeyBlock,
    derive_key_block,
    extended_master_secret,
    finished_verify_data,
    master_secret,
    psk_premaster_secret,
)
from iotdtls.errors import AlertDescription, AlertLevel
from iotdtls.handshake.reassembly import HandshakeFragment, Reassembler
from iotdtls.handshake.transcript import Transcript
from iotdtls.messages import (
    Alert,
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ChangeCipherSpec,
    CipherSuite,
    ClientHello,
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    ExtendedMasterSecret,
    Finished,
    HandshakeHeader,
    HandshakeType,
    HelloVerifyRequest,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
    find_extension,
)
from iotdtls.record import (
    ContentType,
    DiscardReason,
    PlainRecord,
    RecordHeader,
    RecordLayer,
    split_datagram,
)
from tests.peers import CLIENT_IDENTITY, PSK

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"
NAMES = ["openssl_psk", "openssl_ecdhe_mtu256", "gnutls_psk"]
PSK_NAMES = [name for name in NAMES if "psk" in name]
SIDES = ("client", "server")
PSK_SUITE = 0xC0A8  # TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655)
ECDHE_SUITE = 0xC0AE  # TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7251)
MAX_MESSAGE = 1 << 16


@dataclass(frozen=True)
class Message:
    """A whole handshake message, the side that sent it and the epoch it came in."""

    side: str
    msg_type: int
    message_seq: int
    body: bytes
    epoch: int


@cache
def load(name: str) -> dict[str, Any]:
    """The vector file `name` as parsed JSON."""
    data: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    return data


def datagrams(name: str) -> list[tuple[str, bytes]]:
    """(sender, datagram) in the order the proxy saw them."""
    return [(d["from"], bytes.fromhex(d["hex"])) for d in load(name)["datagrams"]]


def framed(name: str) -> list[tuple[str, RecordHeader, bytes]]:
    """Every record of the session, framed by `split_datagram` (nothing may be left over)."""
    out = []
    for side, data in datagrams(name):
        records, problem = split_datagram(data)
        assert problem is None, f"{side} datagram {data.hex()} does not frame"
        out += [(side, header, fragment) for header, fragment in records]
    return out


def keylog_master(name: str, client_random: bytes) -> bytes:
    """The master secret of the NSS key log's CLIENT_RANDOM line for `client_random`."""
    masters = {}
    for line in load(name)["keylog"].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "CLIENT_RANDOM":
            masters[bytes.fromhex(parts[1])] = bytes.fromhex(parts[2])
    assert client_random in masters, "the key log has no line for this session's ClientHello"
    return masters[client_random]


def fragments(payload: bytes) -> list[tuple[HandshakeHeader, bytes]]:
    """Split the plaintext of a handshake record into fragments (RFC 6347 §4.2.2)."""
    reader, out = Reader(payload), []
    while not reader.eof():
        header = HandshakeHeader.decode(reader)
        out.append((header, reader.pull_bytes(header.fragment_length)))
    return out


def reassemble(records: Iterable[tuple[str, int, bytes]]) -> list[Message]:
    """Whole messages from (side, epoch, handshake record plaintext), in completion order.

    One `Reassembler` per direction; since the flights of a handshake alternate, completion
    order across both directions is the handshake (and transcript) order.
    """
    reassemblers = {side: Reassembler(MAX_MESSAGE) for side in SIDES}
    messages: list[Message] = []
    for side, epoch, payload in records:
        reassembler = reassemblers[side]
        for header, body in fragments(payload):
            reassembler.add(
                HandshakeFragment(
                    header.msg_type,
                    header.length,
                    header.message_seq,
                    header.fragment_offset,
                    body,
                    epoch,
                )
            )
        while (whole := reassembler.peek()) is not None:
            reassembler.pop()
            messages.append(
                Message(side, whole.msg_type, whole.message_seq, whole.body, whole.epoch)
            )
    return messages


@cache
def plaintext_messages(name: str) -> list[Message]:
    """The handshake messages of epoch 0, without any key."""
    return reassemble(
        (side, 0, fragment)
        for side, header, fragment in framed(name)
        if header.content_type == ContentType.handshake and header.epoch == 0
    )


def hello(name: str) -> tuple[ClientHello, ServerHello]:
    """The ClientHello answered by the ServerHello (the one after the cookie), and that hello."""
    messages = plaintext_messages(name)
    client = [m for m in messages if m.msg_type == HandshakeType.client_hello][-1]
    server = next(m for m in messages if m.msg_type == HandshakeType.server_hello)
    return ClientHello.decode(client.body), ServerHello.decode(server.body)


def key_block(name: str) -> tuple[bytes, KeyBlock]:
    """The key log's master secret and the key block derived from it (RFC 5246 §6.3)."""
    client_hello, server_hello = hello(name)
    master = keylog_master(name, client_hello.random)
    return master, derive_key_block(master, client_hello.random, server_hello.random)


def read_protector(name: str, sender: str) -> Ccm8Protector:
    """The epoch-1 protection of the records `sender` wrote (RFC 6655 §3)."""
    _, keys = key_block(name)
    if sender == "client":
        return Ccm8Protector(keys.client_write_key, keys.client_write_iv)
    return Ccm8Protector(keys.server_write_key, keys.server_write_iv)


def read_layer(name: str, sender: str) -> RecordLayer:
    """A record layer that reads what `sender` wrote: epoch 0 (null) and epoch 1."""
    layer = RecordLayer()
    layer.install_read_epoch(1, read_protector(name, sender))
    return layer


@cache
def opened(name: str) -> tuple[tuple[str, PlainRecord], ...]:
    """Every record of the session through a receiving `RecordLayer` per direction."""
    layers = {side: read_layer(name, side) for side in SIDES}
    out = []
    for side, data in datagrams(name):
        out += [(side, record) for record in layers[side].open_datagram(data)]
    for side, layer in layers.items():
        assert not layer.discards, f"{side} records were discarded: {dict(layer.discards)}"
    return tuple(out)


@cache
def all_messages(name: str) -> list[Message]:
    """Every handshake message, the epoch-1 Finished messages included (decrypted)."""
    return reassemble(
        (side, record.epoch, record.payload)
        for side, record in opened(name)
        if record.content_type == ContentType.handshake
    )


def decode_message(message: Message, suite: int) -> Any:
    """Decode a whole message with the class its type and the negotiated suite call for."""
    psk = suite == PSK_SUITE
    classes: dict[int, Any] = {
        HandshakeType.client_hello: ClientHello,
        HandshakeType.hello_verify_request: HelloVerifyRequest,
        HandshakeType.server_hello: ServerHello,
        HandshakeType.certificate: Certificate,
        HandshakeType.server_key_exchange: ServerKeyExchangePsk if psk else ServerKeyExchangeEcdhe,
        HandshakeType.certificate_request: CertificateRequest,
        HandshakeType.server_hello_done: ServerHelloDone,
        HandshakeType.client_key_exchange: ClientKeyExchangePsk if psk else ClientKeyExchangeEcdhe,
        HandshakeType.certificate_verify: CertificateVerify,
        HandshakeType.finished: Finished,
    }
    return classes[message.msg_type].decode(message.body)


def hash_before(messages: list[Message], stop: int) -> bytes:
    """SHA-256 of the DTLS transcript of messages[:stop] (RFC 6347 §4.2.6): everything up to and
    including the HelloVerifyRequest is left out; NewSessionTicket is kept raw."""
    verify = [i for i, m in enumerate(messages) if m.msg_type == HandshakeType.hello_verify_request]
    transcript = Transcript()
    for message in messages[(verify[-1] + 1 if verify else 0) : stop]:
        transcript.add(message.msg_type, message.message_seq, message.body)
    return transcript.digest()


def index_of(messages: list[Message], side: str, msg_type: int) -> int:
    """Position of the (only) message of `msg_type` from `side` after the cookie exchange."""
    found = [i for i, m in enumerate(messages) if m.side == side and m.msg_type == msg_type]
    assert found, f"no message {msg_type} from the {side}"
    return found[-1]


vector_names = pytest.mark.parametrize("name", NAMES)


# -- completeness of the files ---------------------------------------------------------------


@vector_names
def test_vector_file_is_complete(name: str) -> None:
    """A broken re-recording is noticed: both directions hold ChangeCipherSpec, an epoch-1
    Finished and application data; the key log and the expected data are there."""
    vector = load(name)
    assert {"note", "cipher_suite", "cipher_suite_id", "keylog", "datagrams"} <= set(vector)
    assert "CLIENT_RANDOM " in vector["keylog"]
    seen = {(side, header.content_type, header.epoch) for side, header, _ in framed(name)}
    for side in SIDES:
        assert (side, ContentType.change_cipher_spec, 0) in seen, side
        assert (side, ContentType.handshake, 1) in seen, side
        assert (side, ContentType.application_data, 1) in seen, side
        assert vector["application_data"][side], side
        counts: dict[str, int] = {}
        for sender, header, _ in framed(name):
            if sender == side:
                key = f"type {header.content_type} epoch {header.epoch}"
                counts[key] = counts.get(key, 0) + 1
        assert vector["summary"][side]["records"] == counts, "summary disagrees with datagrams"
    assert CipherSuite(vector["cipher_suite_id"]).name == vector["cipher_suite"]


# -- 1. record framing -------------------------------------------------------------------------


@pytest.mark.req("REC-1")
@vector_names
def test_datagrams_split_and_reencode(name: str) -> None:
    """Every datagram splits into records (RFC 6347 §4.1) that re-encode byte for byte."""
    several = 0
    for side, data in datagrams(name):
        records, problem = split_datagram(data)
        assert problem is None and records, (side, data.hex())
        rebuilt = b"".join(header.encode() + fragment for header, fragment in records)
        assert rebuilt == data
        for header, fragment in records:
            assert header.length == len(fragment)
            assert header.version in (0xFEFD, 0xFEFF)
        several += len(records) > 1
    assert several, "no datagram carried several records"


# -- 2. handshake codecs -----------------------------------------------------------------------


@vector_names
def test_handshake_fragments_reencode(name: str) -> None:
    """Each plaintext handshake record is a run of fragments (RFC 6347 §4.2.2) whose headers
    re-encode byte for byte."""
    for _, header, fragment in framed(name):
        if header.content_type == ContentType.handshake and header.epoch == 0:
            parts = fragments(fragment)
            assert parts
            assert b"".join(h.encode() + body for h, body in parts) == fragment


@vector_names
def test_handshake_messages_decode_and_reencode(name: str) -> None:
    """Reassembled messages (RFC 6347 §4.2.3) decode with the class of their type and suite
    and encode back to the same body; NewSessionTicket (RFC 5077) stays raw."""
    suite = load(name)["cipher_suite_id"]
    messages = plaintext_messages(name)
    types = [(m.side, m.msg_type) for m in messages]
    assert types[:3] == [
        ("client", HandshakeType.client_hello),
        ("server", HandshakeType.hello_verify_request),
        ("client", HandshakeType.client_hello),
    ]
    for message in messages:
        if message.msg_type == HandshakeType.new_session_ticket:
            assert message.side == "server" and message.body
            continue
        decoded = decode_message(message, suite)
        assert message.msg_type == decoded.MSG_TYPE
        assert decoded.encode() == message.body, (message.side, message.msg_type)
    _, server_hello = hello(name)
    assert server_hello.cipher_suite == suite
    first, _, second = (decode_message(m, suite) for m in messages[:3])
    cookie = HelloVerifyRequest.decode(messages[1].body).cookie
    assert first.cookie == b"" and second.cookie == cookie and first.random == second.random


@pytest.mark.parametrize("name", [n for n in NAMES if "mtu" in n])
def test_fragmented_messages_reassemble(name: str) -> None:
    """With -mtu 256 both Certificate messages arrive in several fragments and reassemble."""
    counts: dict[tuple[str, int], int] = {}
    for side, header, fragment in framed(name):
        if header.content_type == ContentType.handshake and header.epoch == 0:
            for part, _ in fragments(fragment):
                key = (side, part.msg_type)
                counts[key] = counts.get(key, 0) + 1
    assert counts[("server", HandshakeType.certificate)] > 1
    assert counts[("client", HandshakeType.certificate)] > 1
    certs = [
        Certificate.decode(m.body)
        for m in plaintext_messages(name)
        if m.msg_type == HandshakeType.certificate
    ]
    assert len(certs) == 2 and all(c.certificates for c in certs)


@pytest.mark.req("PSK-1")
@pytest.mark.parametrize("name", PSK_NAMES)
def test_psk_messages(name: str) -> None:
    """The PSK sessions negotiated TLS_PSK_WITH_AES_128_CCM_8 and the client sent its identity
    as opaque bytes (RFC 4279 §2)."""
    client_hello, server_hello = hello(name)
    assert PSK_SUITE in client_hello.cipher_suites
    assert server_hello.cipher_suite == PSK_SUITE
    cke = next(
        m for m in plaintext_messages(name) if m.msg_type == HandshakeType.client_key_exchange
    )
    assert ClientKeyExchangePsk.decode(cke.body).identity == CLIENT_IDENTITY.encode()


# -- 3. keys and Finished ----------------------------------------------------------------------


@pytest.mark.req("REC-1")
@vector_names
def test_every_protected_record_opens(name: str) -> None:
    """With keys from the key log, every epoch-1 record of both directions authenticates: nonce
    (implicit IV || explicit nonce) and AAD (epoch || seq || type || version || length) are
    built as the foreign stacks build them (RFC 6655 §3, RFC 5246 §6.2.3.3, RFC 6347 §4.1)."""
    client_hello, _ = hello(name)
    lines = [line.split() for line in load(name)["keylog"].splitlines() if line.strip()]
    logged = [bytes.fromhex(p[1]) for p in lines if p[0] == "CLIENT_RANDOM"]
    assert logged == [client_hello.random]  # the key log names this very session
    records = opened(name)  # asserts that nothing was discarded
    protected = sum(1 for _, header, _ in framed(name) if header.epoch == 1)
    assert sum(1 for _, record in records if record.epoch == 1) == protected > 0
    for side, record in records:
        if record.content_type == ContentType.change_cipher_spec:
            assert record.epoch == 0
            assert ChangeCipherSpec.decode(record.payload).encode() == record.payload
        if record.epoch == 1:
            assert record.content_type != ContentType.change_cipher_spec, side


@vector_names
def test_finished_messages_verify(name: str) -> None:
    """Both Finished messages carry PRF(master, label, SHA-256(transcript))[0..11]
    (RFC 5246 §7.4.9, DTLS transcript of RFC 6347 §4.2.6), NewSessionTicket included."""
    master, _ = key_block(name)
    messages = all_messages(name)
    client_fin = index_of(messages, "client", HandshakeType.finished)
    server_fin = index_of(messages, "server", HandshakeType.finished)
    assert messages[client_fin].epoch == messages[server_fin].epoch == 1
    assert client_fin < server_fin == len(messages) - 1
    client_vd = Finished.decode(messages[client_fin].body).verify_data
    server_vd = Finished.decode(messages[server_fin].body).verify_data
    assert client_vd == finished_verify_data(master, True, hash_before(messages, client_fin))
    assert server_vd == finished_verify_data(master, False, hash_before(messages, server_fin))
    assert client_vd != finished_verify_data(master, True, hash_before(messages, client_fin - 1))


@vector_names
def test_extended_master_secret_negotiated(name: str) -> None:
    """Both sides sent extended_master_secret (RFC 7627 §5.1), so the key log's master secret
    is the extended one."""
    client_hello, server_hello = hello(name)
    assert find_extension(client_hello.extensions, ExtendedMasterSecret) is not None
    assert find_extension(server_hello.extensions, ExtendedMasterSecret) is not None


@pytest.mark.req("PSK-1")
@pytest.mark.parametrize("name", PSK_NAMES)
def test_master_secret_from_psk(name: str) -> None:
    """The master secret recomputed from the PSK (RFC 4279 §2 premaster, RFC 7627 §4 session
    hash up to and including ClientKeyExchange) equals the foreign stack's key log."""
    master, _ = key_block(name)
    client_hello, server_hello = hello(name)
    messages = all_messages(name)
    premaster = psk_premaster_secret(PSK)
    if find_extension(server_hello.extensions, ExtendedMasterSecret) is not None:
        cke = index_of(messages, "client", HandshakeType.client_key_exchange)
        computed = extended_master_secret(premaster, hash_before(messages, cke + 1))
        assert computed != master_secret(premaster, client_hello.random, server_hello.random)
    else:
        computed = master_secret(premaster, client_hello.random, server_hello.random)
    assert computed == master


# -- 4. application data and alerts ------------------------------------------------------------


@pytest.mark.req("REC-1")
@vector_names
def test_application_data_decrypts(name: str) -> None:
    """Each direction's application data records decrypt to the recorded strings, in order."""
    expected = load(name)["application_data"]
    for side in SIDES:
        got = [
            record.payload.decode()
            for sender, record in opened(name)
            if sender == side and record.content_type == ContentType.application_data
        ]
        assert got == expected[side], side


@vector_names
def test_alerts_are_close_notify(name: str) -> None:
    """The alerts that end the sessions are warning close_notify (RFC 5246 §7.2.1), each the
    last record its sender wrote."""
    records = opened(name)
    alerts = [(side, r) for side, r in records if r.content_type == ContentType.alert]
    assert alerts, "no side sent close_notify"
    for side, record in alerts:
        alert = Alert.decode(record.payload)
        assert (alert.level, alert.description) == (
            AlertLevel.WARNING,
            AlertDescription.close_notify,
        )
        assert alert.encode() == record.payload
        assert record.epoch == 1
        assert [r for s, r in records if s == side][-1] == record


# -- 6. anti-replay and silent discard on real records -----------------------------------------


def app_datagrams(name: str, side: str) -> list[bytes]:
    """`side`'s datagrams that hold one protected application data record each."""
    out = []
    for sender, data in datagrams(name):
        records, _ = split_datagram(data)
        if sender == side and [h.content_type for h, _ in records] == [
            ContentType.application_data
        ]:
            out.append(data)
    assert len(out) >= 2
    return out


@pytest.mark.req("REC-2")
@vector_names
@pytest.mark.parametrize("side", SIDES)
def test_replayed_datagram_discarded(name: str, side: str) -> None:
    """A recorded protected datagram opens once; fed again, it is REPLAYED (RFC 6347
    §4.1.2.6) while a later record still opens, and an earlier one inside the window too."""
    first, second = app_datagrams(name, side)[:2]
    layer = read_layer(name, side)
    assert len(layer.open_datagram(second)) == 1
    assert layer.open_datagram(second) == []
    assert layer.discards == {DiscardReason.REPLAYED: 1}
    assert len(layer.open_datagram(first)) == 1  # older but fresh: inside the window
    assert layer.open_datagram(first) == []
    assert layer.discards == {DiscardReason.REPLAYED: 2}


# offsets into a record: header sequence number, explicit nonce, ciphertext, tag
TAMPER_OFFSETS = {"header_seq": 10, "explicit_nonce": 13 + 7, "ciphertext": 13 + 8, "tag": -1}


@pytest.mark.req("REC-1", "REC-3")
@vector_names
@pytest.mark.parametrize("where", sorted(TAMPER_OFFSETS))
def test_tampered_record_discarded(name: str, where: str) -> None:
    """One flipped byte (in the header's sequence number, which the AAD covers, in the explicit
    nonce, the ciphertext or the tag) makes a real record a BAD_TAG discard (RFC 6347
    §4.1.2.7); the record behind it in the same datagram still opens, and the untouched
    original opens afterwards: the forged record did not move the replay window."""
    first, second = app_datagrams(name, "client")[:2]
    tampered = bytearray(first)
    tampered[TAMPER_OFFSETS[where]] ^= 0x01
    layer = read_layer(name, "client")
    records = layer.open_datagram(bytes(tampered) + second)
    assert [r.payload.decode() for r in records] == [load(name)["application_data"]["client"][1]]
    assert layer.discards == {DiscardReason.BAD_TAG: 1}
    assert layer.bad_tag_by_epoch[1] == 1
    assert [r.payload.decode() for r in layer.open_datagram(first)] == [
        load(name)["application_data"]["client"][0]
    ]
