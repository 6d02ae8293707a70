"""Ephemeral ECDH on secp256r1 (RFC 8422 §5.4, §5.7; RFC 7251; profile "Raw Public Key Use").

A fresh key pair per handshake gives perfect forward secrecy; its private scalar is drawn
from `os.urandom` (CFG-2, RFC 4086; rejection sampling, FIPS 186-5 §A.4.2). Points travel in
the uncompressed form only (RFC 8422 §5.1.2: the profile negotiates `uncompressed`); a point
that is malformed, compressed or not on the curve is an illegal_parameter (RFC 8422 §5.10
requires the check).
The premaster secret is the x-coordinate of the shared point (RFC 8422 §5.10).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from iotdtls.crypto.rand import p256_private_key
from iotdtls.errors import AlertDescription, ProtocolError

__all__ = ["P256_POINT_LENGTH", "EphemeralKey", "check_point"]

#: 0x04 || x (32) || y (32).
P256_POINT_LENGTH = 65
_CURVE = ec.SECP256R1()


def check_point(point: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of an uncompressed P-256 point; illegal_parameter otherwise."""
    if len(point) != P256_POINT_LENGTH or point[0] != 0x04:
        raise ProtocolError(
            "ECDH point is not an uncompressed P-256 point", AlertDescription.illegal_parameter
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)
    except ValueError:
        raise ProtocolError(
            "ECDH point is not on the P-256 curve", AlertDescription.illegal_parameter
        ) from None


class EphemeralKey:
    """One handshake's ECDH key pair; `shared_secret` is the premaster secret. Repr redacted."""

    __slots__ = ("_key", "public_point")

    def __init__(self) -> None:
        self._key = p256_private_key()
        self.public_point = self._key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )

    def shared_secret(self, peer_point: bytes) -> bytes:
        """ECDH with the peer's point (checked first): the 32-byte x-coordinate."""
        return self._key.exchange(ec.ECDH(), check_point(peer_point))

    def __repr__(self) -> str:
        return "EphemeralKey(p256, <redacted>)"
