"""Details of the message codecs that the round trips and hand-written encodings leave open:
each vector's range at its edges, in both directions, and the enum members a decoder gives.

Written from a mutation run over `iotdtls.messages` (docs/mutation.md): each case fails when one
bound or mapping of the codec is changed. The ranges are the RFCs' (RFC 5246 §4.3: `<floor..
ceiling>`); what the decoder refuses the encoder refuses too, so we never send what we would drop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import IntEnum

import pytest

from iotdtls.errors import DecodeError
from iotdtls.messages import (
    DTLS_1_2,
    CachedInfo,
    Certificate,
    CertificateRequest,
    CertificateType,
    CertificateUrl,
    CipherSuite,
    ClientCertificateType,
    ClientHello,
    CompressionMethod,
    ECPointFormat,
    EcPointFormats,
    HandshakeType,
    IdentifierType,
    NamedGroup,
    RenegotiationInfo,
    RequestedCertificateType,
    ServerHello,
    ServerName,
    SignatureAlgorithms,
    SignatureScheme,
    SupportedGroups,
    TrustedCaKeys,
    UnknownExtension,
    UrlAndHash,
    encode_extensions,
)

CH = HandshakeType.client_hello
RANDOM = bytes(range(32))
SHA1 = bytes(20)
#: A value no registry below assigns, in one and in two bytes.
UNASSIGNED_U8 = 0xEE
UNASSIGNED_U16 = 0xEEEE


# --- decoding gives the registry's member for a known value, the int for an unknown one -------


def client_hello_lists() -> list[tuple[int, ...]]:
    suites = (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, UNASSIGNED_U16)
    hello = ClientHello(DTLS_1_2, RANDOM, b"", b"", suites, (CompressionMethod.null, UNASSIGNED_U8))
    decoded = ClientHello.decode(hello.encode())
    return [decoded.cipher_suites, decoded.compression_methods]


def certificate_request_lists() -> list[tuple[int, ...]]:
    request = CertificateRequest(
        (RequestedCertificateType.ecdsa_sign, UNASSIGNED_U8),
        (SignatureScheme.ecdsa_secp256r1_sha256, UNASSIGNED_U16),
    )
    decoded = CertificateRequest.decode(request.encode())
    return [decoded.certificate_types, decoded.signature_schemes]


def extension_list(
    extension: type[SupportedGroups | EcPointFormats | SignatureAlgorithms | ClientCertificateType],
    known_value: IntEnum,
    unknown_value: int,
) -> Callable[[], list[tuple[int, ...]]]:
    """The list a ClientHello extension of `extension` decodes to, sent with both values."""

    def decoded() -> list[tuple[int, ...]]:
        encoded = extension((known_value, unknown_value)).encode(CH)
        (values,) = dataclasses.astuple(extension.decode(encoded, CH))
        return [values]

    return decoded


@pytest.mark.parametrize(
    ("decoded", "enums"),
    [
        (client_hello_lists, [CipherSuite, CompressionMethod]),
        (certificate_request_lists, [RequestedCertificateType, SignatureScheme]),
        (extension_list(SupportedGroups, NamedGroup.secp256r1, UNASSIGNED_U16), [NamedGroup]),
        (
            extension_list(EcPointFormats, ECPointFormat.uncompressed, UNASSIGNED_U8),
            [ECPointFormat],
        ),
        (
            extension_list(
                SignatureAlgorithms, SignatureScheme.ecdsa_secp256r1_sha256, UNASSIGNED_U16
            ),
            [SignatureScheme],
        ),
        (
            extension_list(ClientCertificateType, CertificateType.RawPublicKey, UNASSIGNED_U8),
            [CertificateType],
        ),
    ],
)
def test_decoded_lists_hold_members_for_known_values_and_ints_for_others(
    decoded: Callable[[], list[tuple[int, ...]]], enums: list[type[IntEnum]]
) -> None:
    lists = decoded()
    assert len(lists) == len(enums)
    for (known_value, unknown_value), enum in zip(lists, enums, strict=True):
        assert type(known_value) is enum
        assert type(unknown_value) is int
        assert unknown_value in (UNASSIGNED_U8, UNASSIGNED_U16)


# --- what a decoder refuses ---------------------------------------------------------------------


def with_session_id_of(length: int, encoded: bytes) -> bytes:
    """`encoded` (a hello with an empty session_id) carrying `length` bytes of session_id."""
    assert encoded[34] == 0  # version(2) random(32) then the session_id's length
    return encoded[:34] + bytes((length,)) + b"\x5a" * length + encoded[35:]


CLIENT_HELLO = ClientHello(
    DTLS_1_2, RANDOM, b"", b"", (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,), (0,)
)
SERVER_HELLO = ServerHello(DTLS_1_2, RANDOM, b"", CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, 0, ())


@pytest.mark.parametrize(
    ("decode", "encoded"),
    [
        pytest.param(ClientHello.decode, CLIENT_HELLO.encode(), id="ClientHello"),
        pytest.param(ServerHello.decode, SERVER_HELLO.encode(), id="ServerHello"),
    ],
)
def test_hello_session_id_of_33_bytes_is_refused(
    decode: Callable[[bytes], ClientHello | ServerHello], encoded: bytes
) -> None:
    # RFC 5246 §7.4.1.2: SessionID<0..32>
    assert decode(with_session_id_of(32, encoded)).session_id == b"\x5a" * 32
    with pytest.raises(DecodeError, match=r"^vector of 33 bytes, at most 32 expected$"):
        decode(with_session_id_of(33, encoded))


EMPTY_VECTOR = r"^vector of 0 bytes, at least 1 expected$"


@pytest.mark.parametrize(
    ("extension_data", "reason"),
    [
        # RFC 6066 §3: server_name_list<1..2^16-1>
        pytest.param(b"\x00\x00", EMPTY_VECTOR, id="empty list"),
        # HostName<1..2^16-1>
        pytest.param(b"\x00\x03\x00\x00\x00", EMPTY_VECTOR, id="empty name"),
    ],
)
def test_server_name_refuses_empty_list_and_empty_name(extension_data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        ServerName.decode(extension_data, CH)


def test_certificate_url_refuses_an_empty_url() -> None:
    # RFC 6066 §5: url<1..2^16-1>; the entry is url, padding 0x01, SHA1Hash[20]
    entry = b"\x00\x00" + b"\x01" + SHA1
    body = b"\x00" + len(entry).to_bytes(2, "big") + entry
    with pytest.raises(DecodeError, match=EMPTY_VECTOR):
        CertificateUrl.decode(body)
    good = CertificateUrl(0, (UrlAndHash("h", SHA1),)).encode()
    assert CertificateUrl.decode(good).urls == (UrlAndHash("h", SHA1),)


# --- what an encoder refuses: an empty list where the RFC's floor is one item --------------------

EMPTY_WHERE_ONE_IS_THE_FLOOR: list[tuple[str, Callable[[], object]]] = [
    # RFC 8422 §5.1.1: NamedCurve named_curve_list<2..2^16-1>
    ("supported_groups", lambda: SupportedGroups(()).encode(CH)),
    # RFC 8422 §5.1.2: ECPointFormat ec_point_format_list<1..2^8-1>
    ("ec_point_formats", lambda: EcPointFormats(()).encode(CH)),
    # RFC 5246 §7.4.1.4.1: supported_signature_algorithms<2..2^16-2>
    ("signature_algorithms", lambda: SignatureAlgorithms(()).encode(CH)),
    # RFC 7250 §3: client_certificate_types<1..2^8-1>
    ("client_certificate_type", lambda: ClientCertificateType(()).encode(CH)),
    # RFC 7924 §3: CachedObject cached_info<1..2^16-1>
    ("cached_info", lambda: CachedInfo(()).encode(CH)),
    # RFC 6066 §6: DistinguishedName<1..2^16-1> of an x509_name TrustedAuthority
    (
        "trusted_ca_keys x509_name",
        lambda: TrustedCaKeys(((IdentifierType.x509_name, b""),)).encode(CH),
    ),
    # RFC 5246 §7.4.4: certificate_types<1..2^8-1>
    ("CertificateRequest types", lambda: CertificateRequest((), (0x0403,)).encode()),
    # DistinguishedName<1..2^16-1>
    ("CertificateRequest authority", lambda: CertificateRequest((64,), (0x0403,), (b"",)).encode()),
    # RFC 5246 §7.4.2: ASN.1Cert<1..2^24-1>
    ("Certificate entry", lambda: Certificate((b"",)).encode()),
    # RFC 6066 §5: url_and_hash_list<1..2^16-1>, url<1..2^16-1>
    ("CertificateURL list", lambda: CertificateUrl(0, ()).encode()),
    ("CertificateURL url", lambda: CertificateUrl(0, (UrlAndHash("", SHA1),)).encode()),
]


@pytest.mark.parametrize(
    "encode", [pytest.param(encode, id=what) for what, encode in EMPTY_WHERE_ONE_IS_THE_FLOOR]
)
def test_encoders_refuse_empty_vectors_below_the_floor(encode: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"of 0 bytes outside [12]\.\."):
        encode()


def test_extension_block_fills_its_two_byte_length_and_no_more() -> None:
    # RFC 5246 §7.4.1.2: Extension extensions<0..2^16-1>; 4 bytes of header per extension.
    largest = encode_extensions((UnknownExtension(0x1234, bytes(0xFFFF - 4)),), CH)
    assert largest[:2] == b"\xff\xff"
    assert len(largest) == 2 + 0xFFFF
    with pytest.raises(ValueError, match="extension block of 65536 bytes"):
        encode_extensions((UnknownExtension(0x1234, bytes(0xFFFF - 3)),), CH)


@pytest.mark.parametrize(
    ("extension", "too_large"),
    [
        pytest.param(SupportedGroups((0x10000,)), "65536 does not fit in 2 bytes", id="u16"),
        pytest.param(EcPointFormats((0x100,)), "256 does not fit in 1 bytes", id="u8"),
    ],
)
def test_list_values_must_fit_their_width(
    extension: SupportedGroups | EcPointFormats, too_large: str
) -> None:
    with pytest.raises(ValueError, match=too_large):
        extension.encode(CH)


def test_a_vector_may_fill_its_length_field() -> None:
    # RFC 5746 §3.2: renegotiated_connection<0..255>; no bound of its own beyond the length's.
    largest = RenegotiationInfo(bytes(255)).encode(CH)
    assert largest[0] == 255
    assert len(largest) == 256
    with pytest.raises(ValueError, match=r"vector of 256 bytes outside 0\.\.255"):
        RenegotiationInfo(bytes(256)).encode(CH)
