"""Peer authentication (chosen once, when the hellos fix the certificate types).

What we send (`OwnCertificate`: a Certificate body and the key that signs for it) and how we
check what the peer sends (`PeerVerifier`): a raw public key against the provisioned keys
(RFC 7250 §3, RPK-1, RPK-3), or an X.509 chain against trust anchors (RFC 5246 §7.4.2, CRT-1).
A verifier returns the peer's identity and the SubjectPublicKeyInfo its signatures are checked
with. Raw-key failures raise certificate alerts, which the ERR-1 policy turns into
handshake_failure outside certificate mode (the profile excludes certificate alerts there).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from iotdtls.credentials import CertifiedKey, WallClockFailed, read_wall_clock
from iotdtls.crypto.signature import PrivateKey, PublicKey, spki_sha256
from iotdtls.crypto.x509 import TrustStore, verify_client_chain, verify_server_chain
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.identity import CertificateIdentity, PeerIdentity, RawPublicKeyIdentity
from iotdtls.messages import (
    CertChainType,
    Certificate,
    CertificateType,
    CertificateUrl,
    HandshakeType,
    RawPublicKeyCertificate,
    UrlAndHash,
)

__all__ = [
    "EMPTY_CERTIFICATE",
    "NO_CERTIFICATE",
    "OwnCertificate",
    "PeerVerifier",
    "RawKeyVerifier",
    "X509ClientVerifier",
    "X509ServerVerifier",
    "handshake_clock",
    "own_raw_key",
    "own_x509",
    "own_x509_urls",
]

#: The Certificate body of a client without a certificate (RFC 5246 §7.4.6; RFC 7250 §3 gives
#: the raw-key form the same three zero bytes).
EMPTY_CERTIFICATE = Certificate(()).encode()


@dataclass(frozen=True, slots=True)
class OwnCertificate:
    """Our Certificate message (or CertificateURL) body and the private key that signs for it
    in a CertificateVerify; no key for an empty Certificate."""

    certificate_type: int
    body: bytes = field(repr=False)
    key: PrivateKey | None = field(repr=False)
    msg_type: HandshakeType = HandshakeType.certificate


#: What a client without a fitting credential answers a CertificateRequest with.
NO_CERTIFICATE = OwnCertificate(CertificateType.X509, EMPTY_CERTIFICATE, None)


def own_raw_key(key: PrivateKey) -> OwnCertificate:
    """A raw public key credential: the Certificate carries our SubjectPublicKeyInfo."""
    return OwnCertificate(
        CertificateType.RawPublicKey, RawPublicKeyCertificate(key.spki).encode(), key
    )


def own_x509(certified: CertifiedKey) -> OwnCertificate:
    """An X.509 credential: the Certificate carries our chain, leaf first, root left out."""
    return OwnCertificate(
        CertificateType.X509, Certificate(certified.chain).encode(), certified.private_key
    )


def own_x509_urls(certified: CertifiedKey, urls: Sequence[str]) -> OwnCertificate:
    """RFC 6066 §5 (CRT-7): a CertificateURL naming where each certificate of our chain lies,
    with the SHA-1 of each, instead of the chain itself."""
    entries = tuple(
        UrlAndHash(url, hashlib.sha1(cert, usedforsecurity=False).digest())
        for url, cert in zip(urls, certified.chain, strict=True)
    )
    body = CertificateUrl(CertChainType.individual_certs, entries).encode()
    return OwnCertificate(
        CertificateType.X509, body, certified.private_key, HandshakeType.certificate_url
    )


class PeerVerifier(Protocol):
    """Checks the peer's Certificate message."""

    @property
    def certificate_type(self) -> int:
        """The RFC 7250 certificate type this verifier takes."""
        ...

    def verify(self, body: bytes) -> tuple[PeerIdentity, PublicKey]:
        """(the peer's identity, the key that verifies its signatures)."""
        ...


class RawKeyVerifier:
    """A raw public key is accepted only if provisioned (RFC 7250 §3, RPK-3): its SHA-256 is
    among `pins`, or `lookup` (the application's decision) accepts it."""

    @property
    def certificate_type(self) -> int:
        return CertificateType.RawPublicKey

    def __init__(
        self,
        pins: tuple[bytes, ...],
        lookup: Callable[[RawPublicKeyIdentity], bool] | None = None,
    ) -> None:
        self._pins = frozenset(pins)
        self._lookup = lookup

    def verify(self, body: bytes) -> tuple[PeerIdentity, PublicKey]:
        spki = RawPublicKeyCertificate.decode(body).spki
        if not spki:
            raise ProtocolError(
                "the peer sent no raw public key", AlertDescription.handshake_failure
            )
        key = PublicKey.from_spki(spki)  # well formed, ECDSA P-256
        identity = RawPublicKeyIdentity(spki)
        if spki_sha256(spki) not in self._pins and not self._accepted(identity):
            raise ProtocolError(
                # The whole hash: what a pin (--rpk-allow-sha256, a SHA-256 pin) is written as.
                f"raw public key with SHA-256 {identity.sha256.hex()} is not provisioned",
                AlertDescription.bad_certificate,
            )
        return identity, key

    def _accepted(self, identity: RawPublicKeyIdentity) -> bool:
        if self._lookup is None:
            return False
        try:
            return bool(self._lookup(identity))
        except Exception as exc:
            raise ProtocolError(
                f"client_key_lookup raised {type(exc).__name__}", AlertDescription.internal_error
            ) from None


def _chain_of(body: bytes, what: str) -> tuple[bytes, ...]:
    chain = Certificate.decode(body).certificates
    if not chain:
        # RFC 5246 §7.4.6: a client that sends no certificate to a server that requires one
        # meets handshake_failure; a server must always send one (§7.4.2).
        raise ProtocolError(f"the {what} sent no certificate", AlertDescription.handshake_failure)
    return chain


logger = logging.getLogger("iotdtls")


def handshake_clock(wall_clock: Callable[[], float]) -> float:
    """The configured `wall_clock` read for checking a peer's chain (RFC 5280 §6.1.3 (a)(2)).
    The clock is the application's callback: when it raises or answers no time
    (`read_wall_clock`), the handshake ends with internal_error and a warning, as a failing
    `psk_lookup` ends it (`PskServerExchange._key_for`), instead of the error escaping into
    the network path."""
    try:
        return read_wall_clock(wall_clock)
    except WallClockFailed as exc:
        logger.warning("%s", exc)
        raise ProtocolError(str(exc), AlertDescription.internal_error) from None


class X509ServerVerifier:
    """The client's check of the server chain (CRT-1) and name (RFC 6125, CRT-3)."""

    @property
    def certificate_type(self) -> int:
        return CertificateType.X509

    def __init__(
        self, store: TrustStore, server_name: str | None, max_depth: int, now: float
    ) -> None:
        self._store = store
        self._server_name = server_name
        self._max_depth = max_depth
        self._when = datetime.datetime.fromtimestamp(now, datetime.UTC)

    def verify(self, body: bytes) -> tuple[PeerIdentity, PublicKey]:
        return self.verify_chain(_chain_of(body, "server"))

    def verify_chain(self, chain: Sequence[bytes]) -> tuple[CertificateIdentity, PublicKey]:
        """The server chain, leaf first, checked against the trust anchors, clock, name and
        depth this verifier was made with (RFC 5246 §7.4.2, CRT-1; RFC 6125, CRT-3)."""
        return verify_server_chain(
            chain,
            self._store,
            server_name=self._server_name,
            when=self._when,
            max_depth=self._max_depth,
        )


class X509ClientVerifier:
    """The server's check of a client chain (CRT-1) and its EUI-64 identity (CRT-4)."""

    @property
    def certificate_type(self) -> int:
        return CertificateType.X509

    def __init__(self, store: TrustStore, max_depth: int, now: float) -> None:
        self._store = store
        self._max_depth = max_depth
        self._when = datetime.datetime.fromtimestamp(now, datetime.UTC)

    def verify(self, body: bytes) -> tuple[PeerIdentity, PublicKey]:
        chain = _chain_of(body, "client")
        identity, leaf_key = verify_client_chain(
            chain, self._store, when=self._when, max_depth=self._max_depth
        )
        return identity, leaf_key
