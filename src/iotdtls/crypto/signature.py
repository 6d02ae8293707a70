"""ECDSA with P-256 and SHA-256 (RFC 8422 §5.4, §5.8; RFC 5246 §7.4.3, §7.4.8; a peer's
signature also with SHA-384 or SHA-512, `ECDSA_SCHEME_HASHES`) and the
SubjectPublicKeyInfo of raw public keys (RFC 7250 §3).

Signatures are deterministic (RFC 6979) where OpenSSL offers it: signing draws no randomness.

`PrivateKey` is the long-term key of a raw-public-key or certificate credential; its repr and
str show only the fingerprint of its public half (SEC-1). `PublicKey` is a peer's key, decoded
once when its Certificate is checked and used for the signature that follows. Verification
failures are decrypt_error (RFC 5246 §7.4.3, §7.4.8: a signature that does not verify); a key
that is not ECDSA P-256, or whose point is not uncompressed (RFC 8422 §5.1.2), is
unsupported_certificate (RFC 5246 §7.2.2); an undecodable key bad_certificate.
"""

from __future__ import annotations

import functools
import hashlib
from os import PathLike, fspath
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from iotdtls._files import RefusedFile, read_regular_file
from iotdtls._paths import cannot_read, shown_path
from iotdtls.crypto.pem import PRIVATE_KEY, that_is
from iotdtls.crypto.rand import p256_private_key
from iotdtls.errors import AlertDescription, ConfigError, ProtocolError
from iotdtls.messages.constants import SignatureScheme

__all__ = [
    "ECDSA_SCHEME_HASHES",
    "PrivateKey",
    "PublicKey",
    "load_public_key",
    "private_key_form",
    "spki_sha256",
    "verify_digest_signature",
    "verify_signature",
]

#: Raw public keys remembered decoded (least recently used dropped).
PUBLIC_KEYS_KEPT = 256


def _ecdsa(algorithm: hashes.HashAlgorithm | Prehashed) -> ec.ECDSA:
    """Deterministic ECDSA (RFC 6979 §3.2): the nonce is derived from the key and the message, so
    signing draws no random value at all (CFG-2) and a weak generator cannot leak the key
    through a repeated nonce. The signature is an ordinary ECDSA signature to the verifier. With
    OpenSSL older than 3.2 (or in FIPS mode), which does not offer it, the nonce is random, from
    OpenSSL's generator."""
    try:
        return ec.ECDSA(algorithm, deterministic_signing=True)
    except UnsupportedAlgorithm:
        return ec.ECDSA(algorithm)


_SIGN = _ecdsa(hashes.SHA256())
_SIGN_DIGEST = _ecdsa(Prehashed(hashes.SHA256()))

ECDSA_SCHEME_HASHES: Final[dict[int, str]] = {
    SignatureScheme.ecdsa_secp256r1_sha256: "sha256",
    SignatureScheme.ecdsa_secp384r1_sha384: "sha384",
    SignatureScheme.ecdsa_secp521r1_sha512: "sha512",
}
"""The ECDSA pairs a peer's P-256 key may sign with, by their hash's `hashlib` name: in TLS 1.2
a pair names a hash and a signature algorithm, not a curve (RFC 5246 §7.4.1.4.1), so a peer may
sign with any of them that we listed (RFC 8422 §5.4, RFC 5246 §7.4.8). We sign with
ecdsa_secp256r1_sha256 alone (RFC 7251, RFC 7925 §4.4.2)."""

_HASHES: Final = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
_VERIFY: Final[dict[int, ec.ECDSA]] = {
    scheme: ec.ECDSA(_HASHES[name]) for scheme, name in ECDSA_SCHEME_HASHES.items()
}
_VERIFY_DIGEST: Final[dict[int, ec.ECDSA]] = {
    scheme: ec.ECDSA(Prehashed(_HASHES[name])) for scheme, name in ECDSA_SCHEME_HASHES.items()
}


def spki_sha256(spki: bytes) -> bytes:
    """SHA-256 of a DER SubjectPublicKeyInfo: how raw keys are pinned (RPK-3)."""
    return hashlib.sha256(spki).digest()


def _spki_of(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class PrivateKey:
    """An ECDSA P-256 private key (the only kind the profile's ECDHE_ECDSA suite uses)."""

    __slots__ = ("_key", "spki")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"the key is on {key.curve.name}; the profile needs P-256")
        self._key = key
        #: DER SubjectPublicKeyInfo of the public half (what a raw-key Certificate carries).
        self.spki = _spki_of(key.public_key())

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new key, its scalar from `os.urandom` (CFG-2, RFC 4086; FIPS 186-5 §A.4.2)."""
        return cls(p256_private_key())

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> PrivateKey:
        """A PEM (PKCS#8 or SEC1 "EC PRIVATE KEY") or DER private key; a certificate or public
        key given instead is named as such ("that is a certificate (PEM CERTIFICATE), not a
        private key")."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"give the key as bytes (PEM or DER), got {type(data).__name__}")
        if password is not None and not isinstance(password, bytes):
            raise ConfigError(f"give the key's password as bytes, got {type(password).__name__}")
        data = bytes(data)
        try:
            key = _load_private_key(data, password)
        except TypeError:  # cryptography's way to say the password does not fit the key
            if password is None:
                raise ConfigError("the private key is encrypted: give its password") from None
            raise ConfigError("the private key is not encrypted: give no password") from None
        except ValueError:
            if password is not None and private_key_form(data) == "encrypted":
                raise ConfigError("wrong password for the encrypted private key") from None
            instead = that_is(data, PRIVATE_KEY) or f"no private key in it ({_PRIVATE_KEY_FORMS})"
            raise ConfigError(instead) from None
        except UnsupportedAlgorithm:
            raise ConfigError("the private key is of an unsupported type; use P-256") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the private key is not an elliptic-curve key; use P-256")
        return cls(key)

    @classmethod
    def load(cls, path: str | PathLike[str], password: bytes | None = None) -> PrivateKey:
        """Read a private key file (PEM or DER): a regular file of at most 1 MiB (a FIFO or a
        device is refused, never read: `read_regular_file`); an error names the file ("key
        file PATH: no private key in it ..."). The key itself given instead of a path is not
        quoted in the error (`cannot_read`): `from_pem` takes it."""
        try:
            data = read_regular_file(fspath(path))
        except RefusedFile as exc:
            raise ConfigError(f"key file {shown_path(fspath(path))} {exc}") from None
        except (OSError, ValueError) as exc:
            instead = " (or pass the key's bytes to PrivateKey.from_pem)"
            raise ConfigError(cannot_read("key file", fspath(path), exc, instead)) from None
        try:
            return cls.from_pem(data, password)
        except ConfigError as exc:
            raise ConfigError(f"key file {shown_path(fspath(path))}: {exc}") from None

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: for a key file the user asked for (mode 0600)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def spki_sha256(self) -> bytes:
        return spki_sha256(self.spki)

    def sign(self, data: bytes) -> bytes:
        """DER ECDSA-SHA256 signature of `data` (ServerKeyExchange params, RFC 8422 §5.4),
        deterministic (RFC 6979) where OpenSSL has it."""
        return self._key.sign(data, _SIGN)

    def sign_digest(self, digest: bytes) -> bytes:
        """DER ECDSA signature of a SHA-256 digest (CertificateVerify, RFC 5246 §7.4.8),
        deterministic (RFC 6979) where OpenSSL has it."""
        return self._key.sign(digest, _SIGN_DIGEST)

    def __repr__(self) -> str:
        return f"PrivateKey(p256, spki sha256 {self.spki_sha256.hex()[:16]}..)"

    __str__ = __repr__


_PRIVATE_KEY_FORMS = "PEM or DER, PKCS#8 or SEC1"


def _load_private_key(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    if data.lstrip().startswith(b"-----"):
        return serialization.load_pem_private_key(data, password)
    return serialization.load_der_private_key(data, password)


def private_key_form(data: bytes) -> Literal["plain", "encrypted"] | None:
    """Whether `data` is a private key (PEM or DER, PKCS#8 or SEC1), one that asks for a
    password ("encrypted") or not ("plain"); None for anything else (to say what a file that
    cannot be used is)."""
    try:
        _load_private_key(data, None)
    except TypeError:  # cryptography's way to say it needs a password
        return "encrypted"
    except (ValueError, UnsupportedAlgorithm):
        return None
    return "plain"


def load_public_key(spki: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) whose point is
    uncompressed (RFC 8422 §5.1.2)."""
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm):
        raise ProtocolError(
            "undecodable SubjectPublicKeyInfo", AlertDescription.bad_certificate
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ProtocolError(
            "the peer's key is not an ECDSA P-256 key", AlertDescription.unsupported_certificate
        )
    if _spki_of(key) != spki:
        # Decoded, so a valid point, but compressed (0x02/0x03) or hybrid (0x06/0x07): the
        # profile's points are uncompressed (RFC 8422 §5.1.2, RFC 7925 §4.3, RPK-2), which is
        # also the one form a raw key is pinned in (RPK-3).
        raise ProtocolError(
            "the peer's P-256 key is not in uncompressed form (RFC 8422 §5.1.2)",
            AlertDescription.unsupported_certificate,
        )
    return key


class PublicKey:
    """A peer's ECDSA P-256 public key with the DER SubjectPublicKeyInfo it came from: decoded
    once, when the peer's Certificate is checked (RFC 5246 §7.4.2, RFC 7250 §3)."""

    __slots__ = ("key", "spki")

    def __init__(self, key: ec.EllipticCurvePublicKey, spki: bytes) -> None:
        self.key = key
        self.spki = spki

    @staticmethod
    def from_spki(spki: bytes) -> PublicKey:
        """Decode a raw public key (RFC 7250 §3); bad_certificate or unsupported_certificate
        for one that is not a well-formed P-256 key. The last `PUBLIC_KEYS_KEPT` keys are
        remembered (a peer that comes back is not decoded again; public keys are no secret)."""
        return _decoded(bytes(spki))

    @classmethod
    def of(cls, key: ec.EllipticCurvePublicKey) -> PublicKey:
        """The key of a certificate already checked to be P-256 (RFC 7251 §2)."""
        return cls(key, _spki_of(key))

    def __repr__(self) -> str:
        return f"PublicKey(p256, spki sha256 {spki_sha256(self.spki).hex()[:16]}..)"


def _decode(spki: bytes) -> PublicKey:
    return PublicKey(load_public_key(spki), spki)


_decoded = functools.lru_cache(maxsize=PUBLIC_KEYS_KEPT)(_decode)


def verify_signature(
    public_key: PublicKey,
    signature: bytes,
    data: bytes,
    scheme: int = SignatureScheme.ecdsa_secp256r1_sha256,
) -> None:
    """Check an ECDSA signature over `data` with the hash of `scheme`, one of
    `ECDSA_SCHEME_HASHES` (ServerKeyExchange, RFC 8422 §5.4); decrypt_error when it does not
    verify (RFC 5246 §7.4.3)."""
    _verify(public_key.key, signature, data, _VERIFY[scheme])


def verify_digest_signature(
    public_key: PublicKey,
    signature: bytes,
    digest: bytes,
    scheme: int = SignatureScheme.ecdsa_secp256r1_sha256,
) -> None:
    """Check an ECDSA signature over a `digest` made with the hash of `scheme`, one of
    `ECDSA_SCHEME_HASHES` (CertificateVerify, RFC 5246 §7.4.8); decrypt_error when it does not
    verify."""
    _verify(public_key.key, signature, digest, _VERIFY_DIGEST[scheme])


def _verify(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, algorithm: ec.ECDSA
) -> None:
    try:
        key.verify(signature, data, algorithm)
    except InvalidSignature:
        raise ProtocolError("signature does not verify", AlertDescription.decrypt_error) from None
