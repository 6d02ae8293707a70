"""Protocol numbers shared by the message codecs (IANA TLS registries).

Enumerations here are `IntEnum`s; codecs keep a value that the enumeration does not know as a plain
`int` (an `IntEnum` member compares equal to its integer, so both forms round-trip).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from functools import cache

__all__ = [
    "DTLS_1_0",
    "DTLS_1_2",
    "RANDOM_LEN",
    "SESSION_ID_MAX_LEN",
    "CachedInformationType",
    "CertChainType",
    "CertificateType",
    "CipherSuite",
    "CompressionMethod",
    "ECCurveType",
    "ECPointFormat",
    "HandshakeType",
    "HeartbeatMessageType",
    "HeartbeatMode",
    "IdentifierType",
    "MaxFragmentLengthCode",
    "NameType",
    "NamedGroup",
    "RequestedCertificateType",
    "SignatureScheme",
]

DTLS_1_2 = 0xFEFD
"""ProtocolVersion {254, 253} (RFC 6347 §4.1)."""
DTLS_1_0 = 0xFEFF
"""ProtocolVersion {254, 255} (RFC 4347 §4.1), also the record version of a first ClientHello."""

RANDOM_LEN = 32
"""Length of ClientHello.random / ServerHello.random (RFC 5246 §7.4.1.2)."""
SESSION_ID_MAX_LEN = 32
"""SessionID<0..32> (RFC 5246 §7.4.1.2)."""


def known(enum: type[IntEnum], value: int) -> int:
    """Return the member of `enum` equal to `value`, or `value` itself when unknown."""
    return members_by_value(enum).get(value, value)


@cache
def members_by_value(enum: type[IntEnum]) -> Mapping[int, IntEnum]:
    """Every member of `enum` by its value, built once and shared (read it, do not change it):
    a dictionary lookup costs a fraction of calling the enumeration, which runs Python-level
    code in `enum`."""
    return {member.value: member for member in enum}


class HandshakeType(IntEnum):
    """HandshakeType (RFC 5246 §7.4, RFC 6347 §4.3.2, RFC 6066 §5)."""

    hello_request = 0
    client_hello = 1
    server_hello = 2
    hello_verify_request = 3
    new_session_ticket = 4
    certificate = 11
    server_key_exchange = 12
    certificate_request = 13
    server_hello_done = 14
    certificate_verify = 15
    client_key_exchange = 16
    finished = 20
    certificate_url = 21
    certificate_status = 22


class CipherSuite(IntEnum):
    """The cipher suites of the profile (RFC 6655, RFC 7251) and the RFC 5746 SCSV."""

    TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF
    TLS_PSK_WITH_AES_128_CCM_8 = 0xC0A8
    TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 = 0xC0AE


class CompressionMethod(IntEnum):
    """CompressionMethod (RFC 5246 §7.4.1.2); only null is ever accepted (RFC 7925 §5)."""

    null = 0


class NamedGroup(IntEnum):
    """NamedCurve / NamedGroup (RFC 8422 §5.1.1, RFC 7919)."""

    secp256r1 = 23
    secp384r1 = 24
    secp521r1 = 25
    x25519 = 29
    x448 = 30


class SignatureScheme(IntEnum):
    """SignatureAndHashAlgorithm as one u16, hash << 8 | signature (RFC 5246 §7.4.1.4.1)."""

    rsa_pkcs1_sha256 = 0x0401
    ecdsa_secp256r1_sha256 = 0x0403
    rsa_pkcs1_sha384 = 0x0501
    ecdsa_secp384r1_sha384 = 0x0503
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807


class CertificateType(IntEnum):
    """TLS Certificate Types (RFC 7250 §3, RFC 6091)."""

    X509 = 0
    OpenPGP = 1
    RawPublicKey = 2


class RequestedCertificateType(IntEnum):
    """ClientCertificateType of CertificateRequest (RFC 5246 §7.4.4, RFC 8422 §5.5).

    Renamed from the RFC's `ClientCertificateType`: that name belongs to the RFC 7250 extension.
    """

    rsa_sign = 1
    dss_sign = 2
    rsa_fixed_dh = 3
    dss_fixed_dh = 4
    ecdsa_sign = 64
    rsa_fixed_ecdh = 65
    ecdsa_fixed_ecdh = 66


class ECCurveType(IntEnum):
    """ECCurveType (RFC 8422 §5.4); only named_curve is left."""

    explicit_prime = 1
    explicit_char2 = 2
    named_curve = 3


class ECPointFormat(IntEnum):
    """ECPointFormat (RFC 8422 §5.1.2)."""

    uncompressed = 0
    ansiX962_compressed_prime = 1
    ansiX962_compressed_char2 = 2


class NameType(IntEnum):
    """NameType of server_name (RFC 6066 §3)."""

    host_name = 0


class MaxFragmentLengthCode(IntEnum):
    """MaxFragmentLength (RFC 6066 §4): code n means 2^(8+n) bytes."""

    len_512 = 1
    len_1024 = 2
    len_2048 = 3
    len_4096 = 4

    @property
    def length(self) -> int:
        """The maximum fragment length in bytes."""
        return 1 << (8 + self.value)


class IdentifierType(IntEnum):
    """IdentifierType of trusted_ca_keys (RFC 6066 §6)."""

    pre_agreed = 0
    key_sha1_hash = 1
    x509_name = 2
    cert_sha1_hash = 3


class CertChainType(IntEnum):
    """CertChainType of CertificateURL (RFC 6066 §5)."""

    individual_certs = 0
    pkipath = 1


class HeartbeatMode(IntEnum):
    """HeartbeatMode of the heartbeat extension (RFC 6520 §2)."""

    peer_allowed_to_send = 1
    peer_not_allowed_to_send = 2


class HeartbeatMessageType(IntEnum):
    """HeartbeatMessageType (RFC 6520 §3)."""

    heartbeat_request = 1
    heartbeat_response = 2


class CachedInformationType(IntEnum):
    """CachedInformationType (RFC 7924 §3, §4)."""

    cert = 1
    cert_req = 2
