"""Certificate messages: Certificate (X.509 and raw public key), CertificateRequest, CertificateURL.

`encode()` returns the body without the handshake header; `decode(data)` consumes the body
exactly and raises only `DecodeError`. Which Certificate class applies depends on the negotiated
certificate type (RFC 7250 §3), so the caller picks.
"""

from __future__ import annotations

from typing import ClassVar, Self

from iotdtls._buffer import Reader, Writer
from iotdtls._values import statically_frozen
from iotdtls.errors import DecodeError
from iotdtls.messages.constants import (
    CertChainType,
    HandshakeType,
    RequestedCertificateType,
    SignatureScheme,
    known,
)
from iotdtls.messages.extensions import (
    SHA1_LEN,
    decode_ascii,
    decode_vector,
    encode_ascii,
    encode_vector,
    pull_uint_list,
    pull_vector_list,
    push_checked_vector,
    push_uint_list,
    push_vector_list,
)

__all__ = [
    "Certificate",
    "CertificateRequest",
    "CertificateUrl",
    "RawPublicKeyCertificate",
    "UrlAndHash",
]


@statically_frozen
class Certificate:
    """Certificate with X.509 (RFC 5246 §7.4.2): ASN.1Cert certificate_list<0..2^24-1>.

    Each ASN.1Cert<1..2^24-1> is one DER certificate, the sender's own first. An empty tuple is
    the client's "no certificate" answer.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.certificate
    certificates: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        writer = Writer()
        push_vector_list(writer, 3, 3, self.certificates)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        certificates = pull_vector_list(reader, 3, 3)
        reader.expect_end()
        return cls(certificates)


@statically_frozen
class RawPublicKeyCertificate:
    """Certificate with a raw public key (RFC 7250 §3).

    The body is `opaque ASN.1_subjectPublicKeyInfo<1..2^24-1>`: one 3-byte length (where the X.509
    form has the certificate_list length) and the DER SubjectPublicKeyInfo, with no inner
    per-certificate length (TLS 1.2 form; GnuTLS and OpenSSL agree). `spki=b""` (body 00 00 00)
    is accepted and produced for a client that has no key to send (RFC 5246 §7.4.6).
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.certificate
    spki: bytes

    def encode(self) -> bytes:
        return encode_vector(3, self.spki)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(decode_vector(data, 3))


@statically_frozen
class CertificateRequest:
    """CertificateRequest (RFC 5246 §7.4.4, RFC 8422 §5.5).

    certificate_types<1..2^8-1> (u8 each), supported_signature_algorithms<2..2^16-2> (u16 each)
    and certificate_authorities<0..2^16-1> of DistinguishedName<1..2^16-1> (DER, without length).
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.certificate_request
    certificate_types: tuple[int, ...]
    signature_schemes: tuple[int, ...]
    authorities: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        writer = Writer()
        push_uint_list(writer, 1, 1, self.certificate_types, 1)
        push_uint_list(writer, 2, 2, self.signature_schemes, 2, 0xFFFE)
        push_vector_list(writer, 2, 2, self.authorities)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        types = pull_uint_list(reader, 1, 1, 1, enum=RequestedCertificateType)
        schemes = pull_uint_list(reader, 2, 2, 2, 0xFFFE, enum=SignatureScheme)
        authorities = pull_vector_list(reader, 2, 2)
        reader.expect_end()
        return cls(types, schemes, authorities)


@statically_frozen
class UrlAndHash:
    """URLAndHash (RFC 6066 §5): url<1..2^16-1>, padding byte 0x01, SHA1Hash[20].

    The URL is an absolute URI, kept as printable ASCII text.
    """

    url: str
    sha1_hash: bytes


@statically_frozen
class CertificateUrl:
    """CertificateURL (RFC 6066 §5): sent instead of Certificate after client_certificate_url.

    CertChainType type (individual_certs(0), pkipath(1)) and url_and_hash_list<1..2^16-1>.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.certificate_url
    chain_type: int
    urls: tuple[UrlAndHash, ...]

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_uint8(self.chain_type)
        entries = Writer()
        for number, entry in enumerate(self.urls, 1):
            url = f"URL {number}"  # by its number: the text may hold user information
            push_checked_vector(entries, 2, encode_ascii(entry.url, url), 1, what=url)
            entries.push_uint8(1)
            if len(entry.sha1_hash) != SHA1_LEN:
                raise ValueError("URLAndHash.SHA1Hash must be 20 bytes")
            entries.push_bytes(entry.sha1_hash)
        push_checked_vector(writer, 2, entries.getvalue(), 1, what="url_and_hash_list")
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        chain_type = known(CertChainType, reader.pull_uint8())
        entries = Reader(reader.pull_vector(2, 1))
        reader.expect_end()
        urls: list[UrlAndHash] = []
        while not entries.eof():
            url = decode_ascii(entries.pull_vector(2, 1), "certificate URL")
            if entries.pull_uint8() != 1:
                raise DecodeError("URLAndHash padding byte is not 0x01")
            urls.append(UrlAndHash(url, entries.pull_bytes(SHA1_LEN)))
        return cls(chain_type, tuple(urls))
