"""Handshake, alert, ChangeCipherSpec and heartbeat codecs against hand-written encodings.

Every byte string here was written by hand from the RFC layouts cited beside it, not captured
from another implementation: the offsets in the comments are the checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import iotdtls.messages.handshake
from iotdtls._buffer import Reader
from iotdtls.errors import AlertDescription, AlertLevel, DecodeError, ProtocolError
from iotdtls.messages import (
    DTLS_1_2,
    HANDSHAKE_HEADER_LEN,
    Alert,
    Certificate,
    CertificateRequest,
    CertificateUrl,
    CertificateVerify,
    ChangeCipherSpec,
    CipherSuite,
    ClientHello,
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    CompressionMethod,
    ExtendedMasterSecret,
    Extension,
    Finished,
    HandshakeHeader,
    HandshakeType,
    HeartbeatMessage,
    HeartbeatMessageType,
    HelloRequest,
    HelloVerifyRequest,
    NamedGroup,
    RawPublicKeyCertificate,
    RenegotiationInfo,
    RequestedCertificateType,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
    SignatureAlgorithms,
    SignatureScheme,
    UnknownExtension,
    UrlAndHash,
)
from iotdtls.messages.ccs import check_change_cipher_spec
from iotdtls.messages.extensions import EXTENSION_BLOCK_KEPT_MAX
from iotdtls.messages.handshake import encode_message_header

RANDOM = bytes(range(32))

# A PSK ClientHello shaped like OpenSSL's `s_client -dtls1_2 -psk ...` first flight: suites
# {C0A8, 00FF}, extensions session_ticket(35), encrypt_then_mac(22), extended_master_secret(23),
# signature_algorithms(13). RFC 6347 §4.2.1 layout.
OPENSSL_PSK_CLIENT_HELLO = bytes.fromhex(
    "fefd"  # 0: client_version DTLS 1.2
    + RANDOM.hex()  # 2: random[32]
    + "00"  # 34: session_id length 0
    + "00"  # 35: cookie length 0
    + "0004 c0a8 00ff"  # 36: cipher_suites<4>
    + "01 00"  # 42: compression_methods<1> = null
    + "0018"  # 44: extensions length 24
    + "0023 0000"  # 46: session_ticket, empty
    + "0016 0000"  # 50: encrypt_then_mac, empty
    + "0017 0000"  # 54: extended_master_secret, empty
    + "000d 0008 0006 0403 0503 0804"  # 58: signature_algorithms
)


def test_openssl_psk_client_hello_decodes_field_by_field() -> None:
    hello = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    assert hello.client_version == DTLS_1_2
    assert hello.random == RANDOM
    assert hello.session_id == b""
    assert hello.cookie == b""
    assert hello.cipher_suites == (
        CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
        CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
    )
    assert hello.compression_methods == (CompressionMethod.null,)
    assert hello.extensions == (
        UnknownExtension(35, b""),
        UnknownExtension(22, b""),
        ExtendedMasterSecret(),
        SignatureAlgorithms(
            (
                SignatureScheme.ecdsa_secp256r1_sha256,
                SignatureScheme.ecdsa_secp384r1_sha384,
                SignatureScheme.rsa_pss_rsae_sha256,
            )
        ),
    )
    assert hello.encode() == OPENSSL_PSK_CLIENT_HELLO


def test_client_hello_built_from_fields_matches_positions() -> None:
    hello = ClientHello(
        client_version=DTLS_1_2,
        random=RANDOM,
        session_id=b"\x11" * 32,
        cookie=b"\xcc" * 20,
        cipher_suites=(0xC0A8, 0x00FF),
        compression_methods=(0,),
        extensions=(ExtendedMasterSecret(), RenegotiationInfo()),
    )
    data = hello.encode()
    assert data[0:2] == b"\xfe\xfd"
    assert data[2:34] == RANDOM
    assert data[34] == 32 and data[35:67] == b"\x11" * 32
    assert data[67] == 20 and data[68:88] == b"\xcc" * 20
    assert data[88:94] == bytes.fromhex("0004 c0a8 00ff")
    assert data[94:96] == b"\x01\x00"
    assert data[96:] == bytes.fromhex("0009 00170000 ff01000100")
    assert ClientHello.decode(data) == hello


def test_client_hello_with_cookie_differs_only_in_cookie() -> None:
    first = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    second = dataclasses.replace(first, cookie=b"\xab" * 32)
    data = second.encode()
    assert data[:35] == OPENSSL_PSK_CLIENT_HELLO[:35]
    assert data[35] == 32
    assert data[68:] == OPENSSL_PSK_CLIENT_HELLO[36:]


@pytest.mark.req("REC-4")
def test_client_hello_keeps_every_compression_method() -> None:
    """Decoding keeps non-null methods in order so the engine can refuse them (RFC 7925 §5)."""
    hello = dataclasses.replace(
        ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO), compression_methods=(1, 0, 64)
    )
    data = hello.encode()
    assert data[42:46] == bytes.fromhex("03 01 00 40")
    decoded = ClientHello.decode(data)
    assert decoded.compression_methods == (1, 0, 64)
    assert decoded == hello
    only_deflate = dataclasses.replace(hello, compression_methods=(1,))
    methods = ClientHello.decode(only_deflate.encode()).compression_methods
    assert methods == (1,)
    assert CompressionMethod.null not in methods


def test_client_hello_without_extension_block() -> None:
    bare = OPENSSL_PSK_CLIENT_HELLO[:44]
    hello = ClientHello.decode(bare)
    assert hello.extensions == ()
    assert hello.encode() == bare
    # An empty block is accepted and decodes to () as well; we re-encode it as no block.
    assert ClientHello.decode(bare + b"\x00\x00").extensions == ()


@pytest.mark.parametrize(
    ("description", "data"),
    [
        ("truncated random", OPENSSL_PSK_CLIENT_HELLO[:20]),
        ("trailing byte", OPENSSL_PSK_CLIENT_HELLO + b"\x00"),
        ("session_id over 32", OPENSSL_PSK_CLIENT_HELLO[:34] + b"\x21" + b"\x00" * 33),
        ("odd suites", OPENSSL_PSK_CLIENT_HELLO[:36] + bytes.fromhex("0003 c0a8 00") + b"\x01\x00"),
        ("no suites", OPENSSL_PSK_CLIENT_HELLO[:36] + bytes.fromhex("0000") + b"\x01\x00"),
        ("no compression", OPENSSL_PSK_CLIENT_HELLO[:42] + b"\x00"),
        ("bad extension block length", OPENSSL_PSK_CLIENT_HELLO[:44] + b"\x00\x05\x00"),
    ],
)
def test_client_hello_rejects(description: str, data: bytes) -> None:
    with pytest.raises(DecodeError):
        ClientHello.decode(data)


def test_client_hello_offer_is_encoded_once_and_unhashable_ones_each_time() -> None:
    """What a hello offers behind its cookie is remembered encoded (a client offers the same
    in every hello); an offer holding an unhashable value is encoded all the same."""
    hello = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    assert hello.encode() == hello.encode() == OPENSSL_PSK_CLIENT_HELLO
    suites: Any = list(hello.cipher_suites)
    listed = dataclasses.replace(hello, cipher_suites=suites)
    assert listed.encode() == OPENSSL_PSK_CLIENT_HELLO
    data: Any = bytearray(b"\x01")
    unknown = UnknownExtension(0xFAFA, data)
    other = dataclasses.replace(hello, extensions=(unknown,))
    assert other.encode().endswith(bytes.fromhex("0005 fafa 0001 01"))


def test_client_hello_offer_is_decoded_once_unless_large() -> None:
    """What a hello offers behind its cookie is remembered decoded (a fleet's hellos offer the
    same byte for byte), up to `EXTENSION_BLOCK_KEPT_MAX` bytes; a larger offer is decoded
    each time, so that a peer's hellos pin little memory."""
    first, again = (ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO) for _ in range(2))
    assert first == again and first.extensions is again.extensions
    assert first.cipher_suites is again.cipher_suites
    big = dataclasses.replace(
        first, extensions=(UnknownExtension(0xFAFA, bytes(EXTENSION_BLOCK_KEPT_MAX)),)
    )
    large, large_again = (ClientHello.decode(big.encode()) for _ in range(2))
    assert large == large_again == big and large.extensions is not large_again.extensions


def test_client_hello_encode_refuses_unencodable_values() -> None:
    hello = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    for bad in (
        dataclasses.replace(hello, random=b"short"),
        dataclasses.replace(hello, session_id=bytes(33)),
        dataclasses.replace(hello, client_version=0x10000),
        dataclasses.replace(hello, client_version=-1),
        dataclasses.replace(hello, cookie=bytes(256)),
        dataclasses.replace(hello, cipher_suites=()),
        dataclasses.replace(hello, compression_methods=()),
        dataclasses.replace(hello, extensions=(ExtendedMasterSecret(), ExtendedMasterSecret())),
    ):
        with pytest.raises(ValueError):
            bad.encode()


def test_hello_parts_of_hashable_values_are_taken_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hello's offer or answer of hashable values comes out of the encoding cache, not
    through the encoder again; only one holding an unhashable value is encoded each time."""
    handshake = iotdtls.messages.handshake
    encoded: list[str] = []

    def counting(name: str) -> Callable[..., bytes]:
        encode = getattr(handshake, name)

        def counted(*args: Any) -> bytes:
            encoded.append(name)
            return encode(*args)

        return counted

    for name in ("_encode_client_hello_offer", "_encode_server_hello_answer"):
        monkeypatch.setattr(handshake, name, counting(name))
    client = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    server = ServerHello(DTLS_1_2, RANDOM, b"", 0xC0A8, 0, (ExtendedMasterSecret(),))
    assert client.encode() == OPENSSL_PSK_CLIENT_HELLO
    assert server.encode().endswith(bytes.fromhex("c0a8 00 0004 00170000"))
    assert encoded == []
    unhashable: Any = bytearray(b"\x01")
    odd = (UnknownExtension(0xFAFA, unhashable),)
    dataclasses.replace(client, extensions=odd).encode()
    dataclasses.replace(server, extensions=odd).encode()
    assert encoded == ["_encode_client_hello_offer", "_encode_server_hello_answer"]


def test_hello_versions_fill_their_two_bytes_at_both_ends() -> None:
    """A hello's version is any u16 (RFC 5246 §7.4.1.2: ProtocolVersion), 0 and 0xFFFF
    included, both ways; -1 and 0x10000 are refused before any byte is written."""
    client = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    server = ServerHello(DTLS_1_2, RANDOM, b"", 0xC0A8, 0)
    for version in (0, 0xFFFF):
        hello = dataclasses.replace(client, client_version=version)
        assert ClientHello.decode(hello.encode()) == hello
        answer = dataclasses.replace(server, server_version=version)
        assert ServerHello.decode(answer.encode()) == answer
    for version in (-1, 0x10000):
        with pytest.raises(ValueError, match=f"^{version} does not fit in 2 bytes$"):
            dataclasses.replace(server, server_version=version).encode()


def test_hello_parts_of_exactly_the_kept_maximum_are_remembered_decoded() -> None:
    """A ClientHello's offer and a ServerHello's answer of `EXTENSION_BLOCK_KEPT_MAX` bytes are
    remembered decoded (the bound is inclusive, as the extension blocks'); one byte more is
    decoded each time."""
    handshake = iotdtls.messages.handshake
    client = ClientHello.decode(OPENSSL_PSK_CLIENT_HELLO)
    server = ServerHello(DTLS_1_2, RANDOM, b"", 0xC0A8, 0)

    def padded(size: int, part: Callable[[tuple[Extension, ...]], bytes]) -> tuple[Extension, ...]:
        bare = len(part((UnknownExtension(0xFAFA, b""),)))
        extensions = (UnknownExtension(0xFAFA, bytes(size - bare)),)
        assert len(part(extensions)) == size
        return extensions

    def offer(extensions: tuple[Extension, ...]) -> bytes:
        suites, methods = client.cipher_suites, client.compression_methods
        return handshake._encode_client_hello_offer(suites, methods, extensions)

    def answer(extensions: tuple[Extension, ...]) -> bytes:
        return handshake._encode_server_hello_answer(0xC0A8, 0, extensions)

    for size, kept in ((EXTENSION_BLOCK_KEPT_MAX, True), (EXTENSION_BLOCK_KEPT_MAX + 1, False)):
        hello = dataclasses.replace(client, extensions=padded(size, offer))
        remembered = handshake._decoded_client_hello_offer
        hits = remembered.cache_info().hits
        assert ClientHello.decode(hello.encode()) == ClientHello.decode(hello.encode()) == hello
        assert (remembered.cache_info().hits > hits) is kept
        reply = dataclasses.replace(server, extensions=padded(size, answer))
        remembered = handshake._decoded_server_hello_answer
        hits = remembered.cache_info().hits
        assert ServerHello.decode(reply.encode()) == ServerHello.decode(reply.encode()) == reply
        assert (remembered.cache_info().hits > hits) is kept


def test_server_hello_answer_is_remembered_encoded_and_decoded() -> None:
    """What a ServerHello answers behind its session_id is remembered encoded and decoded, as
    a ClientHello's offer (a server answers its clients alike); an answer holding an
    unhashable value is encoded each time, a large one decoded each time."""
    hello = ServerHello(DTLS_1_2, RANDOM, b"\x5a" * 32, 0xC0A8, 0, (ExtendedMasterSecret(),))
    data = hello.encode()
    assert data == hello.encode() and data.endswith(bytes.fromhex("c0a8 00 0004 00170000"))
    remembered = iotdtls.messages.handshake._decoded_server_hello_answer
    hits = remembered.cache_info().hits
    first, again = ServerHello.decode(data), ServerHello.decode(data)
    assert first == again == hello and remembered.cache_info().hits >= hits + 1
    unhashable: Any = bytearray(b"\x01")
    odd = dataclasses.replace(hello, extensions=(UnknownExtension(0xFAFA, unhashable),))
    assert odd.encode().endswith(bytes.fromhex("0005 fafa 0001 01"))
    big = dataclasses.replace(
        hello, extensions=(UnknownExtension(0xFAFA, bytes(EXTENSION_BLOCK_KEPT_MAX)),)
    )
    large, large_again = (ServerHello.decode(big.encode()) for _ in range(2))
    assert large == large_again == big and large.extensions is not large_again.extensions


def test_hello_verify_request() -> None:
    # RFC 6347 §4.2.1: server_version, cookie<0..2^8-1>
    data = bytes.fromhex("fefd 04 deadbeef")
    assert HelloVerifyRequest.decode(data) == HelloVerifyRequest(DTLS_1_2, b"\xde\xad\xbe\xef")
    assert HelloVerifyRequest(DTLS_1_2, b"\xde\xad\xbe\xef").encode() == data
    assert HelloVerifyRequest.decode(b"\xfe\xfd\x00") == HelloVerifyRequest(DTLS_1_2, b"")
    with pytest.raises(DecodeError):
        HelloVerifyRequest.decode(bytes.fromhex("fefd 05 deadbeef"))


def test_server_hello() -> None:
    # RFC 5246 §7.4.1.3: version, random, session_id<0..32>, suite, compression, extensions
    session_id = b"\x5a" * 32
    data = (
        bytes.fromhex("fefd")
        + RANDOM
        + b"\x20"
        + session_id
        + bytes.fromhex("c0a8 00")
        + bytes.fromhex("0009 ff01 0001 00 0017 0000")
    )
    hello = ServerHello.decode(data)
    assert hello == ServerHello(
        DTLS_1_2,
        RANDOM,
        session_id,
        CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,
        0,
        (RenegotiationInfo(b""), ExtendedMasterSecret()),
    )
    assert hello.encode() == data
    assert ServerHello.decode(data[:70]).extensions == ()


def test_server_hello_refuses_client_only_extension() -> None:
    tail = bytes.fromhex("00 c0a8 00 0008 000d 0004 0002 0403")
    data = bytes.fromhex("fefd") + RANDOM + tail
    with pytest.raises(ProtocolError) as info:
        ServerHello.decode(data)
    assert info.value.alert == AlertDescription.unsupported_extension


def test_handshake_header() -> None:
    # RFC 6347 §4.2.2: msg_type, length u24, message_seq u16, fragment_offset u24, length u24
    data = bytes.fromhex("01 000123 0002 000010 000020") + b"rest"
    reader = Reader(data)
    header = HandshakeHeader.decode(reader)
    assert header == HandshakeHeader(HandshakeType.client_hello, 0x123, 2, 0x10, 0x20)
    assert header.msg_type is HandshakeType.client_hello
    assert reader.tell() == HANDSHAKE_HEADER_LEN
    assert reader.pull_rest() == b"rest"
    assert header.encode() == data[:HANDSHAKE_HEADER_LEN]


def test_handshake_header_unknown_type_and_bad_fragment() -> None:
    header = HandshakeHeader.decode(Reader(bytes.fromhex("63 000000 0000 000000 000000")))
    assert header.msg_type == 99
    with pytest.raises(DecodeError):
        HandshakeHeader.decode(Reader(bytes.fromhex("0b 000010 0000 000008 000009")))
    with pytest.raises(DecodeError):
        HandshakeHeader.decode(Reader(bytes.fromhex("0b 000010 0000 00")))


@pytest.mark.parametrize(
    "fields",
    [
        (0x100, 0, 0, 0, 0),  # msg_type is one byte
        (-1, 0, 0, 0, 0),
        (1, 0x1000000, 0, 0, 0),  # length, fragment_offset and fragment_length are u24
        (1, 0x10, 0x10000, 0, 0),  # message_seq is u16
        (1, 0x10, -1, 0, 0),
        (1, 0x10, 0, -1, 0),
        (1, 0x10, 0, 0, -1),
        (1, 0x10, 0, 0x8, 0x9),  # the fragment ends past the message
    ],
)
def test_handshake_header_encoder_refuses_fields_out_of_range(
    fields: tuple[int, int, int, int, int],
) -> None:
    with pytest.raises(ValueError, match="handshake header field out of range"):
        HandshakeHeader(*fields).encode()


def test_handshake_header_encoder_takes_the_largest_fields() -> None:
    header = HandshakeHeader(0xFF, 0xFFFFFF, 0xFFFF, 0xFFFFFE, 1)
    assert header.encode() == bytes.fromhex("ff ffffff ffff fffffe 000001")
    assert HandshakeHeader.decode(Reader(header.encode())) == header


def test_whole_message_header_is_the_unfragmented_header() -> None:
    """RFC 6347 §4.2.6: the transcript hashes each message as one fragment (offset 0,
    fragment_length = length)."""
    for msg_type, length, seq in [(1, 0x123, 2), (0xFF, 0xFFFFFF, 0xFFFF), (20, 0, 0)]:
        expected = HandshakeHeader(msg_type, length, seq, 0, length).encode()
        assert encode_message_header(msg_type, length, seq) == expected
    assert encode_message_header(11, 0x10203, 0x405) == bytes.fromhex(
        "0b 010203 0405 000000 010203"
    )


@pytest.mark.parametrize(
    "fields", [(0x100, 0, 0), (-1, 0, 0), (1, 0x1000000, 0), (1, 0, 0x10000), (1, 0, -1)]
)
def test_whole_message_header_refuses_fields_out_of_range(fields: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="handshake header field out of range"):
        encode_message_header(*fields)


def test_server_key_exchange_psk() -> None:
    # RFC 4279 §2: psk_identity_hint<0..2^16-1>
    assert ServerKeyExchangePsk.decode(b"\x00\x03abc") == ServerKeyExchangePsk(b"abc")
    assert ServerKeyExchangePsk().encode() == b"\x00\x00"
    with pytest.raises(DecodeError):
        ServerKeyExchangePsk.decode(b"\x00\x04abc")


def test_server_key_exchange_ecdhe_and_signed_params() -> None:
    point = b"\x04" + bytes(range(64))
    signature = b"\x30" + bytes(70)
    params = bytes.fromhex("03 0017 41") + point
    data = params + bytes.fromhex("0403 0047") + signature
    message = ServerKeyExchangeEcdhe.decode(data)
    assert message == ServerKeyExchangeEcdhe(
        NamedGroup.secp256r1, point, SignatureScheme.ecdsa_secp256r1_sha256, signature
    )
    assert message.signed_params() == params
    assert message.encode() == data
    with pytest.raises(DecodeError):  # explicit_prime curves are not supported
        ServerKeyExchangeEcdhe.decode(b"\x01" + data[1:])
    with pytest.raises(DecodeError):  # empty point
        ServerKeyExchangeEcdhe.decode(bytes.fromhex("03 0017 00 0403 0000"))


def test_client_key_exchange() -> None:
    # RFC 4279 §2: psk_identity<0..2^16-1>; RFC 8422 §5.7: ECPoint<1..2^8-1>
    assert ClientKeyExchangePsk.decode(b"\x00\x06Client") == ClientKeyExchangePsk(b"Client")
    assert ClientKeyExchangePsk(b"").encode() == b"\x00\x00"
    point = b"\x04" + bytes(64)
    assert ClientKeyExchangeEcdhe.decode(b"\x41" + point) == ClientKeyExchangeEcdhe(point)
    assert ClientKeyExchangeEcdhe(point).encode() == b"\x41" + point
    with pytest.raises(DecodeError):
        ClientKeyExchangeEcdhe.decode(b"\x00")
    with pytest.raises(ValueError):
        ClientKeyExchangeEcdhe(b"").encode()


def test_certificate_verify() -> None:
    data = bytes.fromhex("0403 0003 aabbcc")
    assert CertificateVerify.decode(data) == CertificateVerify(0x0403, b"\xaa\xbb\xcc")
    assert CertificateVerify(0x0403, b"\xaa\xbb\xcc").encode() == data


def test_certificate_chain() -> None:
    # RFC 5246 §7.4.2: certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>
    data = bytes.fromhex("00000b 000003 308101 000002 3000")
    assert Certificate.decode(data) == Certificate((b"\x30\x81\x01", b"\x30\x00"))
    assert Certificate((b"\x30\x81\x01", b"\x30\x00")).encode() == data
    assert Certificate.decode(b"\x00\x00\x00") == Certificate(())
    with pytest.raises(DecodeError):  # an empty ASN.1Cert
        Certificate.decode(bytes.fromhex("000003 000000"))
    with pytest.raises(DecodeError):  # inner length runs past the list
        Certificate.decode(bytes.fromhex("000004 000002 30"))


def test_raw_public_key_certificate() -> None:
    # RFC 7250 §3: ASN.1_subjectPublicKeyInfo<1..2^24-1>, one 3-byte length, no inner list
    prefix = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
    spki = prefix + b"\x04" + bytes(64)
    data = len(spki).to_bytes(3, "big") + spki
    assert RawPublicKeyCertificate(spki).encode() == data
    assert RawPublicKeyCertificate.decode(data) == RawPublicKeyCertificate(spki)
    assert RawPublicKeyCertificate.decode(b"\x00\x00\x00") == RawPublicKeyCertificate(b"")
    with pytest.raises(DecodeError):
        RawPublicKeyCertificate.decode(data + b"\x00")


def test_certificate_request() -> None:
    # RFC 5246 §7.4.4: types<1..2^8-1>, schemes<2..2^16-2>, authorities<0..2^16-1>
    data = bytes.fromhex("01 40 0004 0403 0401 0007 0002 3000 0001 31")
    message = CertificateRequest.decode(data)
    assert message == CertificateRequest(
        (RequestedCertificateType.ecdsa_sign,), (0x0403, 0x0401), (b"\x30\x00", b"\x31")
    )
    assert message.encode() == data
    no_authorities = CertificateRequest((64,), (0x0403,))
    assert no_authorities.encode() == bytes.fromhex("01 40 0002 0403 0000")
    for bad in (
        bytes.fromhex("00 0002 0403 0000"),  # no certificate types
        bytes.fromhex("01 40 0000 0000"),  # no signature schemes
        bytes.fromhex("01 40 0002 0403 0002 0000"),  # empty DistinguishedName
    ):
        with pytest.raises(DecodeError):
            CertificateRequest.decode(bad)


def test_certificate_url() -> None:
    # RFC 6066 §5: type, url_and_hash_list<1..2^16-1> of (url<1..2^16-1>, 0x01, SHA1Hash[20])
    sha1 = bytes(range(20))
    data = bytes.fromhex("000021000a") + b"http://a/c" + b"\x01" + sha1
    message = CertificateUrl.decode(data)
    assert message == CertificateUrl(0, (UrlAndHash("http://a/c", sha1),))
    assert message.encode() == data
    with pytest.raises(DecodeError):  # padding must be 0x01
        CertificateUrl.decode(data[:15] + b"\x00" + sha1)
    with pytest.raises(DecodeError):  # empty list
        CertificateUrl.decode(b"\x00\x00\x00")


def test_empty_messages() -> None:
    assert ServerHelloDone().encode() == b""
    assert HelloRequest().encode() == b""
    assert ServerHelloDone.decode(b"") == ServerHelloDone()
    assert HelloRequest.decode(b"") == HelloRequest()
    with pytest.raises(DecodeError):
        ServerHelloDone.decode(b"\x00")
    with pytest.raises(DecodeError):
        HelloRequest.decode(b"\x00")


def test_finished_is_the_whole_body() -> None:
    verify_data = bytes(range(12))
    assert Finished.decode(verify_data) == Finished(verify_data)
    assert Finished(verify_data).encode() == verify_data
    assert Finished.decode(b"") == Finished(b"")


def test_msg_types() -> None:
    assert ClientHello.MSG_TYPE == 1
    assert ServerHello.MSG_TYPE == 2
    assert HelloVerifyRequest.MSG_TYPE == 3
    assert Certificate.MSG_TYPE == RawPublicKeyCertificate.MSG_TYPE == 11
    assert ServerKeyExchangePsk.MSG_TYPE == ServerKeyExchangeEcdhe.MSG_TYPE == 12
    assert CertificateRequest.MSG_TYPE == 13
    assert ServerHelloDone.MSG_TYPE == 14
    assert CertificateVerify.MSG_TYPE == 15
    assert ClientKeyExchangePsk.MSG_TYPE == ClientKeyExchangeEcdhe.MSG_TYPE == 16
    assert Finished.MSG_TYPE == 20
    assert CertificateUrl.MSG_TYPE == 21
    assert HelloRequest.MSG_TYPE == 0


def test_alert() -> None:
    # RFC 5246 §7.2: level u8, description u8
    alert = Alert.decode(b"\x02\x28")
    assert alert == Alert(AlertLevel.FATAL, AlertDescription.handshake_failure)
    assert alert.level is AlertLevel.FATAL
    assert alert.description is AlertDescription.handshake_failure
    assert alert.is_fatal
    assert Alert(AlertLevel.WARNING, AlertDescription.close_notify).encode() == b"\x01\x00"
    unknown = Alert.decode(b"\x02\xfe")
    assert unknown.description == 254
    assert not isinstance(unknown.description, AlertDescription)
    for bad in (b"", b"\x02", b"\x02\x28\x00"):
        with pytest.raises(DecodeError):
            Alert.decode(bad)


def test_hellos_decode_from_any_bytes_like_as_from_bytes() -> None:
    """The part of a hello behind its cookie or session_id is a key of the decode caches: taken
    as bytes, so a bytearray or a memoryview decodes as its bytes do (probe CJ)."""
    server_hello = ServerHello(DTLS_1_2, RANDOM, b"\x5a" * 32, 0xC0A8, 0, ())
    for data in (OPENSSL_PSK_CLIENT_HELLO, OPENSSL_PSK_CLIENT_HELLO[:44]):
        for like in (bytearray(data), memoryview(data)):
            assert ClientHello.decode(like) == ClientHello.decode(data)
    for data in (server_hello.encode(), ServerHello(DTLS_1_2, RANDOM, b"", 0xC0A8, 0).encode()):
        for like in (bytearray(data), memoryview(data)):
            assert ServerHello.decode(like) == ServerHello.decode(data)


def test_a_wrong_change_cipher_spec_is_named_by_its_size_and_first_bytes() -> None:
    """A peer's record may hold 16 KiB: the error shows its length and 8 bytes, not all."""
    with pytest.raises(DecodeError) as refused:
        check_change_cipher_spec(b"\xff" * 16_000)
    assert str(refused.value) == (
        "ChangeCipherSpec must be the single byte 01, got 16000 bytes ffffffffffffffff..."
    )
    with pytest.raises(DecodeError, match=r"got 1 bytes 02$"):
        check_change_cipher_spec(b"\x02")


def test_change_cipher_spec() -> None:
    assert ChangeCipherSpec().encode() == b"\x01"
    assert ChangeCipherSpec.decode(b"\x01") == ChangeCipherSpec()
    check_change_cipher_spec(b"\x01")
    for bad in (b"", b"\x00", b"\x02", b"\x01\x01"):
        with pytest.raises(DecodeError):
            ChangeCipherSpec.decode(bad)
        with pytest.raises(DecodeError):
            check_change_cipher_spec(bad)


def test_heartbeat_message() -> None:
    # RFC 6520 §4: type u8, payload_length u16, payload, padding >= 16
    padding = b"\xee" * 16
    data = bytes.fromhex("010003") + b"abc" + padding
    message = HeartbeatMessage.decode(data)
    assert message == HeartbeatMessage(HeartbeatMessageType.heartbeat_request, b"abc", padding)
    assert message.encode() == data
    longer = HeartbeatMessage.decode(data + b"\x00" * 5)
    assert longer.padding == padding + b"\x00" * 5
    assert HeartbeatMessage.decode(bytes.fromhex("020000") + padding).payload == b""
    with pytest.raises(ValueError):
        HeartbeatMessage(1, b"abc", b"\x00" * 15).encode()


def test_heartbeat_rejects_heartbleed_payload_length() -> None:
    """payload_length + 3 + 16 must fit in the message (RFC 6520 §4, the Heartbleed check)."""
    padding = b"\x00" * 16
    with pytest.raises(DecodeError):  # claims 0x4000 bytes, carries 3
        HeartbeatMessage.decode(bytes.fromhex("014000") + b"abc" + padding)
    with pytest.raises(DecodeError):  # payload fits but leaves only 15 bytes of padding
        HeartbeatMessage.decode(bytes.fromhex("010004") + b"abc" + padding)
    with pytest.raises(DecodeError):
        HeartbeatMessage.decode(bytes.fromhex("0100"))
