"""Key exchange messages: ServerKeyExchange, ClientKeyExchange, CertificateVerify.

The key exchange messages depend on the cipher suite, so each form is its own class and the
caller picks: `*Psk` for TLS_PSK_WITH_AES_128_CCM_8 (RFC 4279 §2), `*Ecdhe` for
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 8422 §5.4, §5.7). `encode()` returns the body without the
handshake header; `decode(data)` consumes the body exactly and raises only `DecodeError`.
"""

from __future__ import annotations

from typing import ClassVar, Self

from iotdtls._buffer import Reader, Writer
from iotdtls._values import statically_frozen
from iotdtls.errors import DecodeError
from iotdtls.messages.constants import (
    ECCurveType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
    known,
)
from iotdtls.messages.extensions import decode_vector, encode_vector, push_checked_vector

__all__ = [
    "CertificateVerify",
    "ClientKeyExchangeEcdhe",
    "ClientKeyExchangePsk",
    "ServerKeyExchangeEcdhe",
    "ServerKeyExchangePsk",
]

EC_POINT_MAX_LEN = 255
"""ECPoint.point<1..2^8-1> (RFC 8422 §5.4)."""


@statically_frozen
class ServerKeyExchangePsk:
    """ServerKeyExchange for PSK: psk_identity_hint<0..2^16-1> (RFC 4279 §2).

    RFC 7925 §4.2 (PSK-3): our servers do not send it and clients ignore its content.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.server_key_exchange
    identity_hint: bytes = b""

    def encode(self) -> bytes:
        return encode_vector(2, self.identity_hint)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(decode_vector(data, 2))


def _push_signed(writer: Writer, scheme: int, signature: bytes) -> None:
    """digitally-signed struct of TLS 1.2: SignatureAndHashAlgorithm + signature<0..2^16-1>."""
    writer.push_uint16(scheme)
    push_checked_vector(writer, 2, signature)


def _pull_signed(reader: Reader) -> tuple[int, bytes]:
    scheme = known(SignatureScheme, reader.pull_uint16())
    return scheme, reader.pull_vector(2)


@statically_frozen
class ServerKeyExchangeEcdhe:
    """ServerKeyExchange for ECDHE_ECDSA (RFC 8422 §5.4, RFC 5246 §4.7, §7.4.3).

    ServerECDHParams (ECParameters with curve_type named_curve(3) and a u16 NamedCurve, then
    ECPoint public<1..2^8-1>) followed by a digitally-signed element: SignatureAndHashAlgorithm
    (u16) and signature<0..2^16-1>. Other curve types (explicit curves, deprecated by RFC 8422)
    are a decode_error.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.server_key_exchange
    named_curve: int
    public_point: bytes
    signature_scheme: int
    signature: bytes

    def signed_params(self) -> bytes:
        """The ServerECDHParams bytes (the signature covers both randoms, then these)."""
        writer = Writer()
        writer.push_uint8(ECCurveType.named_curve)
        writer.push_uint16(self.named_curve)
        push_checked_vector(writer, 1, self.public_point, 1, EC_POINT_MAX_LEN)
        return writer.getvalue()

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_bytes(self.signed_params())
        _push_signed(writer, self.signature_scheme, self.signature)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        curve_type = reader.pull_uint8()
        if curve_type != ECCurveType.named_curve:
            raise DecodeError(f"ServerKeyExchange: curve_type {curve_type} is not named_curve")
        named_curve = known(NamedGroup, reader.pull_uint16())
        point = reader.pull_vector(1, 1, EC_POINT_MAX_LEN)
        scheme, signature = _pull_signed(reader)
        reader.expect_end()
        return cls(named_curve, point, scheme, signature)


@statically_frozen
class ClientKeyExchangePsk:
    """ClientKeyExchange for PSK: psk_identity<0..2^16-1> (RFC 4279 §2).

    The identity is opaque bytes compared bit for bit (RFC 7925 §4.2, PSK-2).
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.client_key_exchange
    identity: bytes

    def encode(self) -> bytes:
        return encode_vector(2, self.identity)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(decode_vector(data, 2))


@statically_frozen
class ClientKeyExchangeEcdhe:
    """ClientKeyExchange for ECDHE: ClientECDiffieHellmanPublic, ECPoint<1..2^8-1> (RFC 8422 §5.7).

    The explicit form is always used (no fixed-ECDH client certificates in the profile).
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.client_key_exchange
    public_point: bytes

    def encode(self) -> bytes:
        return encode_vector(1, self.public_point, 1, EC_POINT_MAX_LEN)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(decode_vector(data, 1, 1, EC_POINT_MAX_LEN))


@statically_frozen
class CertificateVerify:
    """CertificateVerify (RFC 5246 §7.4.8): digitally-signed, u16 scheme + signature<0..2^16-1>."""

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.certificate_verify
    signature_scheme: int
    signature: bytes

    def encode(self) -> bytes:
        writer = Writer()
        _push_signed(writer, self.signature_scheme, self.signature)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        scheme, signature = _pull_signed(reader)
        reader.expect_end()
        return cls(scheme, signature)
