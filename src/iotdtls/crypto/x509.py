"""X.509 for the certificate mode: loading, trust anchors, path validation, peer names.

The profile's certificate rules (draft "Certificate Use with DTLS", CRT-1 .. CRT-8):

* Path validation to a provisioned `TrustStore` (CRT-1) by `cryptography.x509.verification`
  (chain building, signatures, validity at the time passed in, basic constraints, pathLen,
  CA key usage, name constraints, critical extensions). The root need not be sent; if it is, it
  is harmless. Nothing is ever fetched: no OCSP, no CRL, no AIA chasing (CRT-5); the verifier
  has no network code and this module adds none.
* `max_depth` bounds the CA certificates between the leaf and the anchor (CRT-6).
* The verifier's web-PKI policy is relaxed for what an IoT PKI legitimately lacks: an end-entity
  certificate may have no subjectAltName (a CN-only server certificate, RFC 6125 §6.4.4; an
  EUI-64 in the CN, RFC 7252 §9.1.3.3), and no certificate needs an authorityKeyIdentifier.
  extendedKeyUsage is left to this module, which checks it per role.
* What the verifier does not check is checked here: the leaf's key is ECDSA P-256 (the only key
  TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 uses in this profile, RFC 7251), its keyUsage (when present)
  allows digitalSignature and its extendedKeyUsage (when present) the role (RFC 8422 §5.3 and
  §5.6, RFC 5280 §4.2.1.3 and §4.2.1.12), the server name per RFC 6125 (CRT-3) and the client's
  EUI-64 (CRT-4). The verifier applies name constraints to subjectAltNames only: a CN taken as
  the name (a server's CN-ID, a client's EUI-64) must satisfy the DNS name constraints of
  every CA on the path here (RFC 5280 §4.2.1.10), as OpenSSL checks a host-name CN.

Failures raise `ProtocolError` with the alert of RFC 5246 §7.2.2:

* bad_certificate: a certificate that does not parse (one whose version is neither v1 nor v3
  too: `parse_der_certificate`), a signature in the chain that does not
  verify ("contained signatures that did not verify correctly"), any other rejection by the
  verifier, and a name that does not match or a client certificate without an EUI-64. The name
  cases have no alert of their own; the certificate is not acceptable as presented, which is
  bad_certificate's "etc.", and what OpenSSL sends for a host name mismatch. So is a name
  outside the path's name constraints, a subjectAltName (the verifier's refusal) or a CN alike
  (the alert OpenSSL sends for a name constraint violation). A DNS constraint with a leading
  dot (".example.com", which OpenSSL takes; RFC 5280 §4.2.1.10 spells one "host.example.com")
  holds the names below it for a CN checked here, while the verifier refuses it as malformed
  when it checks a subjectAltName against it (bad_certificate too).
* unsupported_certificate: a leaf key that is not ECDSA P-256, or whose keyUsage or
  extendedKeyUsage forbids the use (a certificate "of an unsupported type" for this suite).
* certificate_expired: a certificate of the path outside its validity period ("has expired or
  is not currently valid"). A certificate sent that is on no path (an expired cross-sign, an
  expired copy of a renewed root) is ignored, as RFC 5280 §6.1.3 (a)(2) checks the path only.
* unknown_ca: no path to a trust anchor, including paths through a certificate that may not
  act as a CA and chains deeper than `max_depth`: within the allowed depth no trusted CA "could
  be located" (the same choice as OpenSSL for too-long chains and bad CAs). So is a CA
  certificate sent with an RSA key too dear to check signatures with (`_refuse_dear_keys`),
  a chain in which no path by names leads from the leaf to an anchor
  (`_refuse_unanchored_names`), and a chain whose names leave the verifier too many candidate
  issuers to check (`_refuse_ambiguous_chain`), all refused before any signature is checked
  (but a self-signed leaf's own, to name it as such). Finding the
  reason of a refusal runs the verifier at most `VERIFIER_RUNS_AGAIN` more times, each within
  that bound.
"""

from __future__ import annotations

import collections
import datetime
import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from iotdtls.crypto.pem import (
    CERTIFICATE,
    CertificateVersionError,
    parse_der_certificate,
    parse_pem_certificates,
    that_is,
)
from iotdtls.crypto.signature import PublicKey
from iotdtls.crypto.x509names import (
    IpAddress,
    canonical_eui64,
    dns_name_matches,
    reference_identity,
)
from iotdtls.errors import AlertDescription, ConfigError, ProtocolError
from iotdtls.identity import CertificateIdentity, shown_name
from iotdtls.messages.constants import IdentifierType, SignatureScheme

__all__ = [
    "CANDIDATE_CHECKS_PER_LEVEL",
    "CHAIN_SIGNATURE_SCHEMES",
    "DEFAULT_MAX_CHAIN_DEPTH",
    "MAX_CHAIN_DEPTH_LIMIT",
    "RSA_MAX_MODULUS_BITS",
    "RSA_MAX_PUBLIC_EXPONENT",
    "TrustStore",
    "authority_identifiers",
    "chain_hash",
    "chain_matches_authority",
    "is_self_signed",
    "leaf_public_key_spki",
    "load_certificates",
    "select_chain_index",
    "verify_client_chain",
    "verify_server_chain",
]

DEFAULT_MAX_CHAIN_DEPTH: Final = 2
"""CA certificates allowed between the leaf and the trust anchor (CRT-6).

The draft leaves the depth open ("Is one level enough?"). Two covers the deepest layout that
device PKIs commonly use (root, policy or product CA, issuing CA, device: IEEE 802.1AR device
identities and manufacturer PKIs) while keeping a peer's chain, which crosses a constrained link
and costs one signature verification per certificate, short."""

MAX_CHAIN_DEPTH_LIMIT: Final = 16
"""The largest `max_depth` accepted: a configuration asking for more is a mistake."""

VALIDATED_CHAINS_KEPT: Final = 256
"""Chains a `TrustStore` remembers as validated by default (least recently used dropped): a
peer that comes back with the same chain skips the path validation while every certificate of
the chain and every anchor is still valid (nothing is revoked in this profile, CRT-5). A server
whose devices, more of them than this, reconnect in turn sets its own
(`TrustStore(validated_chains=)`, `ServerConfig.validated_chains`)."""

REFUSED_CHAINS_KEPT: Final = 256
"""Chains a `TrustStore` remembers as refused (least recently used dropped), by a SHA-256
digest: a peer sending the same refused chain again gets the same refusal with no parse, path
search or diagnosis, while no certificate of the chain or anchor enters or leaves its validity
period (`_RefusedChains`). A refusal naming the time (certificate_expired) is not kept."""

NAMES_KEPT_PER_LEAF: Final = 8
"""Name checks remembered per validated leaf: a chain seen again is not matched again against
a name it was already found valid for (a client reaches a server under few names)."""

RSA_MAX_PUBLIC_EXPONENT: Final = 2**32 - 1
"""The largest RSA public exponent accepted in a certificate a peer sends.

Checking a signature costs one modular exponentiation by the exponent, so its cost grows with
the exponent's length: with e = 65537 a 3072-bit check takes ~0.05 ms, with a 3070-bit e (which
OpenSSL accepts for moduli up to 3072 bits) ~5 ms, enough for a peer with no credentials to
make the path validation of a few chains a second eat a core. RFC 8017 §3.1 allows any odd
e from 3 to n - 1 and FIPS 186-5 / NIST SP 800-89 any odd e below 2^256, but those are bounds
for key generation, not for the cost a verifier accepts from a stranger; deployed CAs use 65537
(and a few old ones 3). 2^32 - 1 is what Windows CryptoAPI can hold (a DWORD), and close to
the 33 bits BoringSSL and ring allow, so no key in use is refused; a check then costs at most
~2x one with 65537."""

RSA_MAX_MODULUS_BITS: Final = 8192
"""The largest RSA modulus accepted in a certificate a peer sends: what ring/webpki verify
(2048 to 8192 bits), above the 4096 of the largest CA keys in use. With the exponent bounded
a check then costs ~0.6 ms here, about as much as one with a P-521 key (which a CA may have);
OpenSSL alone would go to 16384 bits (~2.3 ms a check). The lower bound, 2048 bits, is the
verifier's own (its web-PKI policy)."""

CANDIDATE_CHECKS_PER_LEVEL: Final = 2
"""Signature checks the verifier may be led to make per level of depth allowed: a chain whose
names offer more candidate issuers than `CANDIDATE_CHECKS_PER_LEVEL * (max_depth + 2)` is
refused before any signature is checked (`_refuse_ambiguous_chain`).

The verifier of `cryptography` builds the path depth first: for each certificate it reaches it
checks the signature of every certificate sent or anchor named as its issuer, and goes on from
each one that verifies, the same certificate again if it issues itself, down to `max_depth`
(it stops only after 128 checks). A peer with no credentials can send CA certificates named
like a trust anchor, under one key of its own and issuing one another: three make 52 checks at
the default depth (20 ms with P-521 keys, 0.5 ms a check here). An honest chain of `max_depth`
CAs gives at most `max_depth + 2` candidates (one per CA, the anchor, a copy of the root sent
along); twice that leaves room for a second candidate at every level: an old and a new anchor
of one name, an expired copy of a renewed root sent along (self-issued: a candidate at every
level), a CA cross-signed (two certificates of one key with different issuers). At the
default depth 2: 8."""

VERIFIER_RUNS_AGAIN: Final = 2
"""Runs of the verifier that the diagnosis of a refused chain may add to the first one
(`_VerifierAgain`): at the time an expired CA certificate sent is valid, to name it if it is on
the path then, and now with room for every certificate sent, to count the CAs a chain longer
than allowed needs. Each is bounded as the first run is (`CANDIDATE_CHECKS_PER_LEVEL` per
level, at `len(chain) - 1` CAs), so refusing any chain costs the verifier at most
`CANDIDATE_CHECKS_PER_LEVEL * ((max_depth + 2) + VERIFIER_RUNS_AGAIN * (max_depth + 3))`
signature checks: 28 at the default depth 2, 112 at 16.

An honest chain needs one: its expired CA is on the path, or none is and it is too long (a
copy of a root sent along, expired when the CA was, shares the CA's run); 2 leave room for an
expired certificate on another signed path tried first. Only certificates on a signed path to
an anchor are tried, which a peer with no CA key cannot add: a chain needing more runs is
refused with the verifier's reason, the same alert."""

REFERENCE_IDENTITIES_KEPT: Final = 64
"""Server names whose reference identity is remembered (a client's every certificate handshake
asks for its one name again)."""

_reference_identity = functools.lru_cache(maxsize=REFERENCE_IDENTITIES_KEPT)(reference_identity)

_A = AlertDescription
_AGNOSTIC = verification.Criticality.AGNOSTIC
_EE_POLICY = (
    verification.ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, _AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, _AGNOSTIC, None)
)
_PINNED_EE_POLICY = (
    _EE_POLICY.may_be_present(x509.BasicConstraints, _AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, _AGNOSTIC, None)
)
"""For a leaf that is itself a trust anchor (pinned): it may be a CA certificate, as a
self-signed certificate usually is (`openssl req -x509` asserts cA). Its keyUsage is checked
here like any leaf's (`_check_leaf_usage`)."""


def _check_ca_key_usage(
    policy: verification.Policy, cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    """RFC 5280 §6.1.4 (n): a CA certificate's keyUsage, when present, asserts keyCertSign."""
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(_NO_CERT_SIGN)


_NO_CERT_SIGN: Final = "a CA certificate's keyUsage does not allow keyCertSign"


def _ca_policy(
    key_usage_check: Callable[
        [verification.Policy, x509.Certificate, x509.KeyUsage | None], None
    ],
) -> verification.ExtensionPolicy:
    """The web-PKI CA policy (basicConstraints cA required) without its demand for a keyUsage
    extension: RFC 5280 §6.1.4 (n) asks for keyCertSign only when keyUsage is present, and a
    CA made by `openssl req -x509` has none; `key_usage_check` sees each CA's keyUsage."""
    return (
        verification.ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, _AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, _AGNOSTIC, key_usage_check)
    )


_CA_POLICY = _ca_policy(_check_ca_key_usage)
_ROLE_USAGE = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}
_SHA1_LEN = 20
_SRV_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7")
"""id-on-dnsSRV, the otherName of an SRV-ID (RFC 4985 §2, RFC 6125 §6.4.4)."""
_E = TypeVar("_E", bound=x509.ExtensionType)


# -- loading ----------------------------------------------------------------------------------


def load_certificates(data: bytes) -> tuple[bytes, ...]:
    """The certificates of a PEM file (one or more CERTIFICATE blocks) or of one DER
    certificate, as DER, in file order. Anything else is a one-line `ConfigError`, naming what
    the data holds instead when it is a key (a file given for another)."""
    if b"-----BEGIN" in data:
        try:
            certs = parse_pem_certificates(data)
        except CertificateVersionError as exc:
            raise ConfigError(f"a PEM certificate is not usable: {exc}") from None
        except ValueError:
            raise ConfigError(_not_certificate(data, "no valid PEM certificate found")) from None
        return tuple(cert.public_bytes(serialization.Encoding.DER) for cert in certs)
    try:
        parse_der_certificate(data)
    except CertificateVersionError as exc:
        raise ConfigError(f"the DER certificate is not usable: {exc}") from None
    except ValueError:
        raise ConfigError(_not_certificate(data, "not a PEM or DER X.509 certificate")) from None
    return (bytes(data),)


def _not_certificate(data: bytes, otherwise: str) -> str:
    """What `data`, which holds no certificate, holds instead ("that is a private key (PEM
    PRIVATE KEY), not a certificate"), else `otherwise`."""
    return that_is(data, CERTIFICATE) or otherwise


class TrustStore:
    """The provisioned trust anchors (CRT-1): immutable, built from DER certificates.

    Anchors change only by configuration (CRT-5). A v1 certificate is refused (a
    `ConfigError`): the verifier takes v3 certificates only, anchors included, so every chain
    under it would fail (RFC 5280 §6.1.1 (d) would use its name and key alone). A leaf
    certificate given as an anchor is trusted directly (pinning), even when it is a CA
    certificate (a self-signed one usually asserts cA); its validity, key, keyUsage and names
    are checked as any leaf's.

    A store remembers the chains it validated (`validated_chains`) and the last
    `REFUSED_CHAINS_KEPT` it refused, each while it stays valid or refused.
    """

    __slots__ = (
        "_anchor_subjects",
        "_anchors",
        "_certificates",
        "_refused",
        "_store",
        "_validated",
    )

    _anchors: tuple[bytes, ...]
    _certificates: tuple[x509.Certificate, ...]
    #: The DER subject of each of `_certificates` (see `_Names`).
    _anchor_subjects: tuple[bytes, ...]
    _store: verification.Store
    #: Chains validated before (see `_validate_path`): the same bytes under the same anchors
    #: need no second path validation while the time stays inside the validity period of
    #: every certificate of the path found.
    _validated: _ValidatedChains
    #: Chains refused before (see `_validate_path`): the same refusal again, without work.
    _refused: _RefusedChains

    def __init__(
        self, anchors: Sequence[bytes], *, validated_chains: int = VALIDATED_CHAINS_KEPT
    ) -> None:
        """`validated_chains`: how many validated chains to remember (0: none, every chain is
        validated each time); `VALIDATED_CHAINS_KEPT` by default."""
        if isinstance(validated_chains, bool) or not isinstance(validated_chains, int) or (
            validated_chains < 0
        ):
            raise ConfigError(
                f"validated_chains must be an integer >= 0 (0: none kept), got {validated_chains!r}"
            )
        ders = tuple(dict.fromkeys(bytes(anchor) for anchor in anchors))
        if not ders:
            raise ConfigError("the trust store needs at least one CA certificate")
        certificates = []
        for number, der in enumerate(ders, 1):
            try:
                certificate = parse_der_certificate(der)
            except CertificateVersionError as exc:
                raise ConfigError(f"trust anchor {number} is not usable: {exc}") from None
            except ValueError:
                raise ConfigError(f"trust anchor {number} is not a DER X.509 certificate") from None
            if certificate.version is x509.Version.v1:
                raise ConfigError(
                    f"trust anchor {number} is an X.509 v1 certificate, which the path "
                    "validation refuses on every path (it takes v3 certificates only): give "
                    "a v3 certificate of the same name and key"
                )
            certificates.append(certificate)
        object.__setattr__(self, "_anchors", ders)
        object.__setattr__(self, "_certificates", tuple(certificates))
        object.__setattr__(
            self,
            "_anchor_subjects",
            tuple(_der_names(der, cert)[1] for der, cert in zip(ders, certificates, strict=True)),
        )
        object.__setattr__(self, "_store", verification.Store(certificates))
        object.__setattr__(self, "_validated", _ValidatedChains(validated_chains))
        object.__setattr__(self, "_refused", _RefusedChains(REFUSED_CHAINS_KEPT))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a TrustStore is immutable")

    def __len__(self) -> int:
        return len(self._anchors)

    def __repr__(self) -> str:
        return f"TrustStore({len(self)} anchors)"

    @property
    def validated_chain_hits(self) -> int:
        """Chains found among those remembered as validated: no path validation needed."""
        return self._validated.hits

    @property
    def validated_chain_misses(self) -> int:
        """Chains not remembered (or out of their validity period): validated in full."""
        return self._validated.misses

    @property
    def refused_chain_hits(self) -> int:
        """Chains found among those remembered as refused: refused again with no work."""
        return self._refused.hits

    @property
    def anchors(self) -> tuple[bytes, ...]:
        """The anchors as DER, duplicates removed, in the order given."""
        return self._anchors

    def trusted_authorities(self) -> tuple[tuple[int, bytes], ...]:
        """One RFC 6066 §6 TrustedAuthority per anchor: (key_sha1_hash, SHA-1 of its key), for
        a client's trusted_ca_keys (CRT-8). Anchors with a key type of no defined hash are
        left out."""
        hashes = (_key_sha1(cert) for cert in self._certificates)
        return tuple((IdentifierType.key_sha1_hash, h) for h in hashes if h is not None)


# -- path validation --------------------------------------------------------------------------


def verify_server_chain(
    chain: Sequence[bytes],
    store: TrustStore,
    *,
    server_name: str | None,
    when: datetime.datetime,
    max_depth: int,
) -> tuple[CertificateIdentity, PublicKey]:
    """Validate a server's chain (leaf first, as received) and its name (CRT-1, CRT-3); return
    the identity and the leaf's key, which verifies the server's signature.

    With `server_name` (a DNS name or an IP address, from the configuration: a bad one raises
    `ConfigError` before the chain is looked at), a DNS name is matched against the leaf's
    dNSName subjectAltNames, or its subject CN when its subjectAltName presents no DNS-ID,
    SRV-ID or URI-ID (RFC 6125 §6.4.4: none at all, or only iPAddress entries, say); an IP
    address only against iPAddress subjectAltNames, an IPv4-mapped one as the IPv4 address it
    is (`unmapped_address`: 4 octets). The identity's `name` is the matched
    reference name; without `server_name` nothing is matched and `name` is the leaf's first
    DNS or IP subjectAltName, else its CN (for logs).
    """
    reference = None if server_name is None else _reference_identity(server_name)
    leaf = _validate_path(chain, store, when, max_depth, "server")
    name = leaf.name_for(
        reference,
        lambda: _display_name(leaf) if reference is None else _match_server_name(leaf, reference),
    )
    return CertificateIdentity(name=name, chain=tuple(bytes(c) for c in chain)), leaf.public_key


def verify_client_chain(
    chain: Sequence[bytes],
    store: TrustStore,
    *,
    when: datetime.datetime,
    max_depth: int,
) -> tuple[CertificateIdentity, PublicKey]:
    """Validate a client's chain (CRT-1); return its EUI-64 identity (CRT-4) and the leaf's key,
    which verifies the client's CertificateVerify.

    The EUI-64 comes from a dNSName subjectAltName, or from the subject CN when the
    subjectAltName presents no DNS-ID, SRV-ID or URI-ID (RFC 7252 §9.1.3.3, RFC 6125 §6.4.4);
    `name` is its canonical form `01-23-45-67-89-AB-CD-EF`.
    """
    leaf = _validate_path(chain, store, when, max_depth, "client")
    name = leaf.name_for(None, lambda: _client_eui64(leaf))
    identity = CertificateIdentity(name=name, chain=tuple(bytes(c) for c in chain))
    return identity, leaf.public_key


def leaf_public_key_spki(chain: Sequence[bytes]) -> bytes:
    """The DER SubjectPublicKeyInfo of the chain's first certificate (for signature checks)."""
    if not chain:
        raise ProtocolError("the certificate chain is empty", _A.bad_certificate)
    leaf = _parse(chain[0], "peer", 0)
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise ProtocolError(
            "the certificate's key cannot be read", _A.unsupported_certificate
        ) from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _validate_path(
    chain: Sequence[bytes],
    store: TrustStore,
    when: datetime.datetime,
    max_depth: int,
    role: str,
) -> _Leaf:
    """Everything but the names; returns the parsed leaf (kept for chains seen again)."""
    if not 0 <= max_depth <= MAX_CHAIN_DEPTH_LIMIT:
        raise ConfigError(f"max chain depth must be 0 to {MAX_CHAIN_DEPTH_LIMIT}, got {max_depth}")
    if not chain:
        raise ProtocolError(f"the {role} sent no certificate", _A.bad_certificate)
    if len(chain) > max_depth + 2:  # leaf, max_depth CAs and a root sent along
        raise ProtocolError(
            f"{role} chain of {len(chain)} certificates is deeper than the allowed "
            f"{max_depth} CA certificates",
            _A.unknown_ca,
        )
    when = _as_utc(when)
    key = (tuple(chain), role, max_depth)
    known = store._validated.recall(key, when)
    if known is not None:
        return known
    refusal_key = _refusal_key(chain, role, max_depth)
    store._refused.repeat(refusal_key, when)
    store._validated.misses += 1
    certs: list[x509.Certificate] = []
    try:
        for index, der in enumerate(chain):  # those before one that does not parse are kept
            certs.append(_parse(der, role, index))
        leaf, path = _validate_parsed(chain, certs, store, when, max_depth, role)
    except ProtocolError as refusal:
        store._refused.keep(refusal_key, refusal, _steady_window(certs, store, when))
        raise
    store._validated.keep(key, leaf, _window_of(path))
    return leaf


def _validate_parsed(
    chain: Sequence[bytes],
    certs: list[x509.Certificate],
    store: TrustStore,
    when: datetime.datetime,
    max_depth: int,
    role: str,
) -> tuple[_Leaf, list[x509.Certificate]]:
    """`_validate_path` of a chain seen neither validated nor refused, parsed: the leaf and
    the path found."""
    leaf_key = _check_leaf_key(certs[0], role)
    if not _valid_at(certs[0], when):  # the leaf is on every path
        raise _not_valid(certs[0], 0, when, role)
    _refuse_dear_keys(certs, role)
    names = _Names(chain, certs, store)
    pinned = bytes(chain[0]) in store._anchors
    if not pinned:
        _refuse_unanchored_names(certs, names, role)
    _refuse_ambiguous_chain(names, max_depth, role)
    try:
        path = _verifier(store, when, max_depth, pinned=pinned).verify(certs[0], certs[1:]).chain
    except (verification.VerificationError, ValueError) as exc:
        raise _diagnose(
            exc, certs, store, names, when, max_depth, role, pinned=pinned
        ) from None
    leaf = _Leaf.of(certs[0], leaf_key, role, _dns_constraints(path[1:]))
    _check_leaf_usage(leaf, role)
    return leaf, path


class _ValidatedChains:
    """A `TrustStore`'s chains found valid, least recently used dropped beyond `capacity` (0:
    none kept), with the count of lookups that found one (`hits`) and that did not (`misses`:
    a full path validation). Each is kept with its parsed leaf and the window in which its whole
    path is valid."""

    __slots__ = ("_entries", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self._entries: collections.OrderedDict[tuple[object, ...], tuple[_Leaf, _Window]] = (
            collections.OrderedDict()
        )
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def recall(self, key: tuple[object, ...], when: datetime.datetime) -> _Leaf | None:
        """The leaf of the chain `key` if it was validated and `when` is in its window."""
        known = self._entries.get(key)
        if known is not None and known[1].contains(when):
            self._entries.move_to_end(key)
            self.hits += 1
            return known[0]
        return None  # a miss once the chain is known not to be refused (`_validate_path`)

    def keep(self, key: tuple[object, ...], leaf: _Leaf, window: _Window) -> None:
        """Remember the chain `key`, just validated, dropping the least recently used."""
        if not self.capacity:
            return
        self._entries[key] = (leaf, window)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class _RefusedChains:
    """A `TrustStore`'s chains refused, least recently used dropped beyond `capacity`: by the
    digest of the chain, role and depth allowed (`_refusal_key`), the refusal (its type, alert
    and message) and the window in which it holds (`_steady_window`), with the count of those
    refused again (`hits`)."""

    __slots__ = ("_entries", "capacity", "hits")

    def __init__(self, capacity: int) -> None:
        self._entries: collections.OrderedDict[
            bytes, tuple[type[ProtocolError], AlertDescription, str, _Window]
        ] = collections.OrderedDict()
        self.capacity = capacity
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def repeat(self, key: bytes, when: datetime.datetime) -> None:
        """Raise again the refusal of the chain `key` if it was refused and `when` is in the
        window in which that refusal holds."""
        known = self._entries.get(key)
        if known is None or not known[3].contains(when):
            return
        self._entries.move_to_end(key)
        self.hits += 1
        kind, alert, message, _ = known
        raise kind(message, alert)

    def keep(self, key: bytes, refusal: ProtocolError, window: _Window) -> None:
        """Remember the refusal of the chain `key` for `window`, unless it names the time (a
        certificate not valid at it), dropping the least recently used."""
        if not self.capacity or refusal.alert is _A.certificate_expired:
            return
        self._entries[key] = (type(refusal), refusal.alert, str(refusal), window)
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def _refusal_key(chain: Sequence[bytes], role: str, max_depth: int) -> bytes:
    """SHA-256 over the role, the depth allowed and each DER certificate with its length."""
    digest = hashlib.sha256(f"{role} {max_depth} {len(chain)}".encode())
    for der in chain:
        digest.update(len(der).to_bytes(4, "big"))
        digest.update(der)
    return digest.digest()


_TICK: Final = datetime.timedelta(microseconds=1)
_ALL_TIME: Final = (
    datetime.datetime.min.replace(tzinfo=datetime.UTC),
    datetime.datetime.max.replace(tzinfo=datetime.UTC),
)


def _steady_window(
    certs: Iterable[x509.Certificate], store: TrustStore, when: datetime.datetime
) -> _Window:
    """The span around `when` in which no certificate of `certs` (those of a chain that
    parsed) or trust anchor enters or leaves its validity period: the time counts in a path
    validation only through which certificates are valid (RFC 5280 §6.1.3 (a)(2)), so an
    outcome at `when` is the outcome anywhere in it."""
    start, end = _ALL_TIME
    for cert in (*certs, *store._certificates):
        first, last = cert.not_valid_before_utc, cert.not_valid_after_utc
        if when < first:
            end = min(end, first - _TICK)
        elif when <= last:
            start, end = max(start, first), min(end, last)
        else:
            start = max(start, last + _TICK)
    return _Window(start, end)


class _Window:
    """A span of time (UTC) in which a set of certificates is valid."""

    __slots__ = ("not_after", "not_before")

    def __init__(self, not_before: datetime.datetime, not_after: datetime.datetime) -> None:
        self.not_before = not_before
        self.not_after = not_after

    def contains(self, when: datetime.datetime) -> bool:
        return self.not_before <= when <= self.not_after

    def is_empty(self) -> bool:
        return self.not_before > self.not_after


def _window_of(certs: Iterable[x509.Certificate]) -> _Window:
    certs = list(certs)
    return _Window(
        max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs)
    )


def _verifier(
    store: TrustStore, when: datetime.datetime, max_depth: int, *, pinned: bool = False
) -> verification.ClientVerifier:
    """A verifier with no name check (the names are matched here) and the relaxed policies;
    `pinned` (the leaf is one of the anchors, trusted directly) lets the leaf be a CA
    certificate.

    The client verifier of `cryptography` is used for both roles: it is the one that accepts
    an end-entity policy without subjectAltName.
    """
    return (
        verification.PolicyBuilder()
        .store(store._store)
        .time(when)
        .max_chain_depth(max_depth)
        .extension_policies(
            ca_policy=_CA_POLICY, ee_policy=_PINNED_EE_POLICY if pinned else _EE_POLICY
        )
        .build_client_verifier()
    )


def _diagnose(
    exc: Exception,
    certs: list[x509.Certificate],
    store: TrustStore,
    names: _Names,
    when: datetime.datetime,
    max_depth: int,
    role: str,
    *,
    pinned: bool,
) -> ProtocolError:
    """Turn a verifier failure into the right alert by checking the usual causes one by one
    (the verifier's error has no machine-readable reason); `pinned`: the leaf is an anchor.

    The work is bounded whatever the peer sent: each signature is checked at most once per
    (certificate, issuer named) pair (`_Signatures`), and the verifier is run again (to name an
    expired CA or count the CAs a too-deep chain needs) only when the names and signatures
    link the leaf to an anchor. Without such a link, which a peer with no CA to issue its
    certificates cannot make, those runs could find no path: a hostile chain of CA
    certificates of one name would cost one more full search each. The runs again are at most
    `VERIFIER_RUNS_AGAIN`, each bounded by names as the first one is (`_VerifierAgain`).
    """
    signatures = _Signatures()
    linked = pinned or _signed_path(certs, store, names, signatures.verified) is not None
    for anchor in _anchors_for(certs, store, names):
        if not _valid_at(anchor, when):
            return ProtocolError(
                f"the trust anchor '{anchor.subject.rfc4514_string()}' of the {role} chain is "
                f"not valid at {when:%Y-%m-%d %H:%M}Z {_validity(anchor)}",
                _A.certificate_expired,
            )
    again = _VerifierAgain.of(certs, store, names) if linked else None
    expired = _expired_on_path(certs, store, names, when, signatures, again) if linked else None
    if expired is not None:
        return _not_valid(certs[expired], expired, when, role)
    needed = None  # a path needs at most the CAs sent: more than allowed only if more were sent
    if again is not None and again.depth > max_depth:
        needed = _intermediates_needed(when, again)
    if needed is not None and needed > max_depth:
        return ProtocolError(
            f"{role} chain needs {needed} CA certificate{'s' * (needed != 1)}, more than the "
            f"allowed {max_depth}",
            _A.unknown_ca,
        )
    bad_signature = _bad_signature(certs, store, names, signatures)
    if bad_signature is not None:
        return ProtocolError(
            f"the signature on {role} certificate {bad_signature} does not verify",
            _A.bad_certificate,
        )
    reason = _verifier_reason(exc)
    malformed = _malformed_extensions(certs) if "ASN.1" in reason else None
    if malformed is not None:
        return ProtocolError(
            f"{role} certificate {malformed} has a malformed extension", _A.bad_certificate
        )
    if not pinned and names.signs_itself(certs[0]):
        # Whatever else the verifier saw first.
        return _self_signed_not_anchor(role)
    if "candidates exhausted" in reason:
        detail = reason.removeprefix("candidates exhausted: ")
        if _breaks_name_constraints(detail):
            return ProtocolError(
                f"the {role} certificate is refused by the name constraints of its chain: "
                f"{shown_name(detail)} (RFC 5280 §4.2.1.10)",
                _A.bad_certificate,
            )
        if "Forbidden public key algorithm" in detail:
            detail = _forbidden_key(certs, store, names) or "a CA key of a type not allowed"
        elif "Forbidden signature algorithm" in detail:
            detail = _forbidden_signature(certs) or "a signature algorithm not allowed"
        elif _NO_CERT_SIGN in detail:
            detail = _no_cert_sign(certs, store, names) or detail
        # Nothing tried failed, or no anchor issued any certificate sent (a self-signed root
        # sent along then makes the verifier loop on it to its "max depth"): no issuer found.
        if "with no interior errors" in detail or not _anchors_for(certs, store, names):
            detail = _NO_ANCHOR_ISSUER
        return ProtocolError(
            f"{role} chain leads to no trusted CA: {shown_name(detail)}", _A.unknown_ca
        )
    return ProtocolError(f"{role} certificate rejected: {shown_name(reason)}", _A.bad_certificate)


def _breaks_name_constraints(detail: str) -> bool:
    """Whether the verifier refused a path for its name constraints (RFC 5280 §4.2.1.10): a
    subjectAltName outside a permitted subtree or inside an excluded one, or a constraint it
    cannot apply ("malformed DNS name constraint: .example.com"). The path leads to a trust
    anchor, so not unknown_ca but bad_certificate, as for a CN outside them
    (`_DnsConstraint`); the verifier's bound on the checks ("Exceeded maximum name constraint
    check limit") is no such refusal."""
    detail = detail.lower()
    return "name constraint" in detail and "exceeded maximum" not in detail


def _malformed_extensions(certs: list[x509.Certificate]) -> int | None:
    """Index of the first certificate whose extensions do not parse."""
    for index, cert in enumerate(certs):
        try:
            _ = cert.extensions
        except ValueError:
            return index
    return None


_CA_KEY_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_SIGNATURES_ALLOWED = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
    }
)
"""The signature algorithms the verifier's web-PKI policy accepts (besides, it refuses an RSA
key under 2048 bits, with a message of its own)."""

CHAIN_SIGNATURE_SCHEMES: Final = (
    SignatureScheme.ecdsa_secp256r1_sha256,
    SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512,
    SignatureScheme.rsa_pss_rsae_sha256,
    SignatureScheme.rsa_pss_rsae_sha384,
    SignatureScheme.rsa_pss_rsae_sha512,
    SignatureScheme.rsa_pkcs1_sha256,
    SignatureScheme.rsa_pkcs1_sha384,
    SignatureScheme.rsa_pkcs1_sha512,
)
"""`_SIGNATURES_ALLOWED` as TLS 1.2 hash/signature pairs, in our order of preference (ECDSA,
then RSASSA-PSS, then RSA PKCS#1 v1.5, each from SHA-256 up; OpenSSL's order): what a
certificate-mode hello lists in signature_algorithms and a CertificateRequest in
supported_signature_algorithms. RFC 5246 §7.4.1.4.1 makes the list the pairs that "may be used
in digital signatures", the certificates' included (§7.4.2 for the server's chain, §7.4.6 for
the client's), so it covers every chain the verifier accepts, and no more. ecdsa_secp256r1_sha256
comes first: the profile's own (RFC 7251, RFC 7925 §4.4.2). The verifier accepts RSASSA-PSS from
a CA key of type rsaEncryption only (its policy refuses the id-RSASSA-PSS key type), hence the
rsa_pss_rsae pairs and not the rsa_pss_pss ones (RFC 8446 §4.2.3)."""


def _forbidden_key(
    certs: list[x509.Certificate], store: TrustStore, names: _Names
) -> str | None:
    """The verifier's "Forbidden public key algorithm" in plain words: which CA certificate
    (sent, or a trust anchor) has a key of a type CA keys may not have."""
    for what, cert in _ca_candidates(certs, store, names):
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if isinstance(key, rsa.RSAPublicKey) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CA_KEY_CURVES)
        ):
            continue
        return (
            f"the key of {what} (CA) is {_describe_key(key)}: a CA key must be ECDSA P-256, "
            "P-384 or P-521, or RSA"
        )
    return None


def _ca_candidates(
    certs: list[x509.Certificate], store: TrustStore, names: _Names
) -> list[tuple[str, x509.Certificate]]:
    """The certificates that may act as a CA for the chain, named for a message: those sent
    after the leaf that issued one sent (by name), then the trust anchors that did."""
    sent = [
        (f"certificate {index}", cert)
        for index, cert in enumerate(certs)
        if index and any(names.issued(other, cert) for other in certs if other is not cert)
    ]
    anchors = [
        (f"trust anchor '{anchor.subject.rfc4514_string()}'", anchor)
        for anchor in _anchors_for(certs, store, names)
    ]
    return [*sent, *anchors]


def _no_cert_sign(
    certs: list[x509.Certificate], store: TrustStore, names: _Names
) -> str | None:
    """The verifier's refusal of a CA keyUsage without keyCertSign (RFC 5280 §6.1.4 (n)) naming
    the CA certificate: sent (its index) or a trust anchor (its subject)."""
    for what, cert in _ca_candidates(certs, store, names):
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        if not usage.key_cert_sign:
            return f"the keyUsage of {what} (CA) does not allow keyCertSign"
    return None


def _forbidden_signature(certs: list[x509.Certificate]) -> str | None:
    """The verifier's "Forbidden signature algorithm" in plain words: which certificate is
    signed with an algorithm the path validation does not accept."""
    for index, cert in enumerate(certs):
        algorithm = cert.signature_algorithm_oid
        if algorithm not in _SIGNATURES_ALLOWED:
            return (
                f"certificate {index} is signed with {_signature_name(algorithm)}: signatures "
                "must be ECDSA or RSA with SHA-256, SHA-384 or SHA-512"
            )
    return None


def _signature_name(algorithm: x509.ObjectIdentifier) -> str:
    """A readable name of a signature algorithm: `ECDSA_WITH_SHA224` as "ECDSA with SHA224"."""
    for attribute, value in vars(SignatureAlgorithmOID).items():
        if value == algorithm:
            return attribute.replace("_WITH_", " with ").replace("_", "-")
    return f"algorithm {algorithm.dotted_string}"


def _expired_on_path(
    certs: list[x509.Certificate],
    store: TrustStore,
    names: _Names,
    when: datetime.datetime,
    signatures: _Signatures,
    again: _VerifierAgain | None,
) -> int | None:
    """Index of a CA certificate sent that is not valid at `when` but is on the path found at
    a time it is valid: the one that made the chain fail (RFC 5280 §6.1.3 (a)(2)). A
    certificate sent but on no path (an expired cross-sign, an old copy of a root) is not.
    The verifier is asked again (`again`; not at all when None) as `_expired_on_verified_path`
    says.

    When no moment exists at which every certificate of the path is valid (a leaf issued
    after its CA expired), the verifier can be asked at no time: the path is then the one
    the names and signatures link (`_signed_path`), and its first certificate sent that is
    not valid at `when` is named."""
    if again is not None:
        found = _expired_on_verified_path(certs, store, names, when, signatures, again)
        if found is not None:
            return found
    if all(_valid_at(cert, when) for cert in certs[1:]):
        return None
    linked = _signed_path(certs, store, names, signatures.issued_by)
    if linked is None or not _window_of(linked).is_empty():
        return None  # no path, or the verifier was asked above at a time all of it is valid
    for index, cert in enumerate(certs[1:], 1):
        if cert in linked and not _valid_at(cert, when):
            return index
    return None


def _expired_on_verified_path(
    certs: list[x509.Certificate],
    store: TrustStore,
    names: _Names,
    when: datetime.datetime,
    signatures: _Signatures,
    again: _VerifierAgain,
) -> int | None:
    """The first CA certificate sent not valid at `when` that is on the verifier's path at a
    time it is valid. Only the certificates on a signed path to an anchor are tried (no other
    can be on the verifier's path, and a peer with no CA key cannot add one)."""
    on_paths = _on_signed_paths(certs, store, names, signatures.verified)
    for index, cert in enumerate(certs[1:], 1):
        if _valid_at(cert, when) or index not in on_paths:
            continue
        then = min(max(when, cert.not_valid_before_utc), cert.not_valid_after_utc)
        path = again.path(then)
        if path is not None and cert in path:
            return index
    return None


def _on_signed_paths(
    certs: list[x509.Certificate],
    store: TrustStore,
    names: _Names,
    signed: Callable[[x509.Certificate, x509.Certificate], bool],
) -> set[int]:
    """Indexes of the certificates sent after the leaf that lie on some path from the leaf to
    a trust anchor, each issued by the next by name and signature (RFC 5280 §6.1.3 (a)(1),
    (a)(4)), validity not looked at. A search of the graph: each pair checked once."""
    issuers: dict[int, list[int]] = {}
    anchored: set[int] = set()
    reached, todo = {0}, [0]
    while todo:
        index = todo.pop()
        cert = certs[index]
        if any(names.issued(cert, a) and signed(cert, a) for a in store._certificates):
            anchored.add(index)
        issuers[index] = [
            other
            for other, issuer in enumerate(certs[1:], 1)
            if names.issued(cert, issuer) and signed(cert, issuer)
        ]
        todo.extend(other for other in issuers[index] if other not in reached)
        reached.update(issuers[index])
    leading = set(anchored)  # those from which an anchor is reached
    grown = True
    while grown:
        before = len(leading)
        leading.update(i for i, up in issuers.items() if not leading.isdisjoint(up))
        grown = len(leading) > before
    return leading - {0}


class _VerifierAgain:
    """The diagnosis's runs of the verifier again, at other times than the first run: at
    `depth`, `len(certs) - 1` (room for any path through the certificates sent, each once),
    one per time asked, `VERIFIER_RUNS_AGAIN` at most (then no path is found). Made only
    when at that depth the names offer no more candidate issuers than allowed
    (`_refuse_ambiguous_chain`'s bound): each run costs what the first one may."""

    __slots__ = ("_certs", "_paths", "_store", "depth")

    def __init__(self, certs: list[x509.Certificate], store: TrustStore, depth: int) -> None:
        self._certs = certs
        self._store = store
        self.depth = depth
        self._paths: dict[datetime.datetime, list[x509.Certificate] | None] = {}

    @classmethod
    def of(
        cls, certs: list[x509.Certificate], store: TrustStore, names: _Names
    ) -> _VerifierAgain | None:
        """Runs again for the chain, or None when its names make them dear."""
        depth = len(certs) - 1
        if _candidate_checks(names.graph(), depth) > _candidates_allowed(depth):
            return None
        return cls(certs, store, depth)

    def path(self, when: datetime.datetime) -> list[x509.Certificate] | None:
        """The verifier's path at `when`, or None (none, or no run left)."""
        if when not in self._paths:
            if len(self._paths) >= VERIFIER_RUNS_AGAIN:
                return None
            self._paths[when] = _verifier_path(self._certs, self._store, when, self.depth)
        return self._paths[when]


def _verifier_path(
    certs: list[x509.Certificate], store: TrustStore, when: datetime.datetime, depth: int
) -> list[x509.Certificate] | None:
    """The path the verifier finds for the chain at `when` allowing `depth` CAs, or None."""
    try:
        return _verifier(store, when, depth).verify(certs[0], certs[1:]).chain
    except (verification.VerificationError, ValueError):
        return None


def _signed_path(
    certs: list[x509.Certificate],
    store: TrustStore,
    names: _Names,
    signed: Callable[[x509.Certificate, x509.Certificate], bool],
) -> list[x509.Certificate] | None:
    """A path from the leaf to a trust anchor through the certificates sent, each issued by
    the next by name and signature (RFC 5280 §6.1.3 (a)(1), (a)(4)), validity not looked at;
    None when there is none. A search of the graph, not of the orderings: a certificate
    entered once is never entered again, so a hostile chain of certificates that all issue
    one another costs at most one signature check per pair, not one per permutation.
    `signed(cert, issuer)` tells whether a signature links them."""
    entered: set[int] = set()

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        last = path[-1]
        for anchor in store._certificates:
            if names.issued(last, anchor) and signed(last, anchor):
                return [*path, anchor]
        for index, cert in enumerate(certs[1:], 1):
            if (
                index in entered
                or not names.issued(last, cert)
                or not signed(last, cert)
            ):
                continue
            entered.add(index)
            found = extend([*path, cert])
            if found is not None:
                return found
        return None

    return extend(certs[:1])


def _intermediates_needed(when: datetime.datetime, again: _VerifierAgain) -> int | None:
    """How many CA certificates the chain needs when there is room for every one sent, or None
    when it fails for another reason."""
    path = again.path(when)
    return None if path is None else max(len(path) - 2, 0)


def _bad_signature(
    certs: list[x509.Certificate], store: TrustStore, names: _Names, signatures: _Signatures
) -> int | None:
    """Index of a certificate whose issuer is present by name (next in the chain, or an
    anchor) but whose signature verifies under none of them."""
    for index, cert in enumerate(certs):
        candidates = (*certs[index + 1 :], *store._certificates)
        issuers = [c for c in candidates if names.issued(cert, c)]
        if issuers and not any(signatures.issued_by(cert, issuer) for issuer in issuers):
            return index
    return None


class _Signatures:
    """The signature checks of one diagnosis, each (certificate, issuer) pair checked at most
    once however many of its steps ask."""

    __slots__ = ("_checked",)

    def __init__(self) -> None:
        self._checked: dict[tuple[int, int], bool | None] = {}

    def _check(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
        """`_signature_check`, remembered (the certificates live as long as the diagnosis)."""
        pair = (id(cert), id(issuer))
        if pair not in self._checked:
            self._checked[pair] = _signature_check(cert, issuer)
        return self._checked[pair]

    def issued_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """As `_issued_by`: a check that cannot be made counts as signed."""
        return self._check(cert, issuer) is not False

    def verified(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether the signature verifies, as the verifier requires of a path."""
        return self._check(cert, issuer) is True


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key signed `cert`; a check that cannot be made (another key type or
    algorithm) counts as signed: not a signature failure, so the verifier's reason stands."""
    return _signature_check(cert, issuer) is not False


def is_self_signed(der: bytes) -> bool:
    """Whether a certificate is a root: issued by its own subject and signed with its own key
    (RFC 5280 §3.2). One that does not parse, or whose signature cannot be checked, is not
    (the peer's path validation reports it)."""
    try:
        cert = parse_der_certificate(der)
    except ValueError:
        return False
    return _signs_itself(cert)


def _signs_itself(cert: x509.Certificate) -> bool:
    """Whether a parsed certificate is issued by its own subject and signed with its own key
    (RFC 5280 §3.2); one whose signature cannot be checked is not."""
    return cert.subject == cert.issuer and _signature_check(cert, cert) is True


def _signature_check(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """Whether `issuer`'s key verifies `cert`'s signature; None when that cannot be checked."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return True


def _anchors_for(
    certs: Iterable[x509.Certificate], store: TrustStore, names: _Names
) -> list[x509.Certificate]:
    """The trust anchors named as the issuer of a certificate sent."""
    certs = list(certs)
    return [a for a in store._certificates if any(names.issued(c, a) for c in certs)]


def _verifier_reason(exc: Exception) -> str:
    """The verifier's message without its prefix, the certificate dump it appends and the
    wrapping of the messages of this module's extension validators."""
    text = str(exc).removeprefix("validation failed: ")
    text = text.split(" (encountered processing", 1)[0]
    text = text.replace("Python extension validator failed: ValueError: ", "")
    # A Rust structure printed for debugging ("... AlgorithmIdentifier { oid: ...", "Tag {
    # value: 4, ...") tells a user nothing: keep the words before it.
    while "{" in text and ": " in text:
        text = text.rsplit(": ", 1)[0]
    return text


# -- names as DER ----------------------------------------------------------------------------


class _Names:
    """The DER issuer and subject names of the certificates of one validation (those sent and
    the trust anchors), read once from their bytes (`_der_names`) and compared as bytes, as the
    verifier compares them (DER is canonical). `Name.__eq__` compares attribute by attribute in
    Python (~64 us for names of 120 RDNs, which a peer may send) and `Name.public_bytes()`
    encodes again (~80 us); a name here costs ~1 us once. The certificates are known by
    identity: the objects live as long as the validation."""

    __slots__ = ("_certs", "_chain", "_graph", "_issuers", "_store", "_subjects")

    def __init__(
        self, chain: Sequence[bytes], certs: list[x509.Certificate], store: TrustStore
    ) -> None:
        self._chain, self._certs, self._store = chain, certs, store
        self._graph: _IssuerNames | None = None
        self._issuers: dict[int, bytes] = {}
        self._subjects: dict[int, bytes] = dict(
            zip(map(id, store._certificates), store._anchor_subjects, strict=True)
        )
        for der, cert in zip(chain, certs, strict=True):
            self._issuers[id(cert)], self._subjects[id(cert)] = _der_names(bytes(der), cert)

    def issued(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether `issuer`'s subject is `cert`'s issuer name (RFC 5280 §6.1.3 (a)(4)):
        `cert` is one sent, `issuer` one sent or a trust anchor."""
        return self._issuers[id(cert)] == self._subjects[id(issuer)]

    def signs_itself(self, cert: x509.Certificate) -> bool:
        """`_signs_itself` for a certificate sent, its names compared as bytes."""
        return self.issued(cert, cert) and _signature_check(cert, cert) is True

    def graph(self) -> _IssuerNames:
        """Who may have issued whom among the chain's certificates, made once for every
        check of the validation that walks it."""
        if self._graph is None:
            self._graph = _IssuerNames.of(self._chain, self._certs, self._store, self)
        return self._graph


def _der_names(der: bytes, cert: x509.Certificate) -> tuple[bytes, bytes]:
    """The DER issuer and subject names of a certificate, `cert` parsed from `der`: the fourth
    and sixth fields of its TBSCertificate, after an optional [0] version (RFC 5280 §4.1),
    sliced from the bytes. Should the walk not find them, encoded again from `cert`."""
    try:
        tbs_start = _der_element(der, _der_element(der, 0)[1])[1]
        fields = _der_fields(der, tbs_start, 6 if der[tbs_start] == _EXPLICIT_VERSION else 5)
        issuer, subject = fields[-3], fields[-1]
        if der[issuer[0]] == der[subject[0]] == _SEQUENCE:
            return der[issuer[0] : issuer[1]], der[subject[0] : subject[1]]
    except (IndexError, ValueError):
        pass
    return cert.issuer.public_bytes(), cert.subject.public_bytes()


_SEQUENCE: Final = 0x30
_EXPLICIT_VERSION: Final = 0xA0


def _der_fields(der: bytes, start: int, count: int) -> list[tuple[int, int]]:
    """The (start, end) of the `count` DER elements one after the other from `start`."""
    fields = []
    for _ in range(count):
        end = _der_element(der, start)[2]
        fields.append((start, end))
        start = end
    return fields


def _der_element(der: bytes, at: int) -> tuple[int, int, int]:
    """The tag, content start and end of the DER element at `at` (X.690 §8.1.2-8.1.3: a
    one-byte tag, as every field up to the subject has, and a short or long definite length).
    ValueError when it overruns the data."""
    tag, first = der[at], der[at + 1]
    content = at + 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(der[content : content + count], "big")
        content += count
    else:
        length = first
    end = content + length
    if end > len(der):
        raise ValueError("DER element overruns the data")
    return tag, content, end


# -- per-certificate checks -------------------------------------------------------------------


def _parse(der: bytes, role: str, index: int) -> x509.Certificate:
    """A peer's certificate parsed; one that does not parse, whatever the reason (a version
    other than v1 or v3 too), is bad_certificate (RFC 5246 §7.2.2)."""
    try:
        return parse_der_certificate(bytes(der))
    except CertificateVersionError as exc:
        raise ProtocolError(
            f"{role} certificate {index} is not a usable X.509 certificate: {exc}",
            _A.bad_certificate,
        ) from None
    except ValueError:
        raise ProtocolError(
            f"{role} certificate {index} is not a valid DER X.509 certificate",
            _A.bad_certificate,
        ) from None


def _check_leaf_key(leaf: x509.Certificate, role: str) -> PublicKey:
    """ECDHE_ECDSA in this profile signs with P-256 only (RFC 7251 §2, RFC 8422 §5.3)."""
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return PublicKey.of(key)
    raise ProtocolError(
        f"the {role} certificate key is {_describe_key(key)}, not ECDSA P-256",
        _A.unsupported_certificate,
    )


def _refuse_dear_keys(certs: Sequence[x509.Certificate], role: str) -> None:
    """Refuse, before any signature is checked, a chain with a CA certificate (one sent after
    the leaf, whose key may check another's signature) whose RSA key makes that check dear: an
    exponent that is even, below 3 or above `RSA_MAX_PUBLIC_EXPONENT`, or a modulus above
    `RSA_MAX_MODULUS_BITS`. Such a key can be no CA of a path (unknown_ca, RFC 5246 §7.2.2,
    as for a CA key of a type not allowed). The trust anchors are the operator's and not
    looked at."""
    for index, cert in enumerate(certs[1:], 1):
        problem = _dear_rsa_key(cert)
        if problem is not None:
            raise ProtocolError(
                f"{role} chain leads to no trusted CA: the key of certificate {index} is "
                f"{problem}: an RSA key sent must have an odd public exponent from 3 to 2^32-1 "
                f"and at most {RSA_MAX_MODULUS_BITS} bits (its signature checks would be dear)",
                _A.unknown_ca,
            )


def _refuse_ambiguous_chain(names: _Names, max_depth: int, role: str) -> None:
    """Refuse, before any signature is checked, a chain whose names leave the verifier more
    candidate issuers to check than `CANDIDATE_CHECKS_PER_LEVEL * (max_depth + 2)`: unknown_ca
    (RFC 5246 §7.2.2), as no trusted CA can be located at an acceptable cost. Such a chain is
    no honest one (see `CANDIDATE_CHECKS_PER_LEVEL`); the check costs no signature."""
    allowed = _candidates_allowed(max_depth)
    if _candidate_checks(names.graph(), max_depth) > allowed:
        raise ProtocolError(
            f"{role} chain leads to no trusted CA: it is ambiguous, its names offer more than "
            f"{allowed} candidate issuers to check",
            _A.unknown_ca,
        )


def _refuse_unanchored_names(
    certs: list[x509.Certificate], names: _Names, role: str
) -> None:
    """Refuse, before the verifier, a chain in which no path by names leads from the leaf to
    a trust anchor (RFC 5280 §6.1.3 (a)(4): each issuer is the next one's subject): no
    signature check could find one. unknown_ca (RFC 5246 §7.2.2), the verifier's outcome for
    such a chain, with the diagnosis's message: it costs no signature, where the verifier
    would check every candidate named within the bound (a ring of CA names never reaching an
    anchor, under a P-521 key: ~6 ms). A self-signed leaf is still named as such, at the cost
    of the check of its own signature (a P-256 key, `_check_leaf_key`)."""
    if _reaches_anchor_by_name(names.graph()):
        return
    if names.signs_itself(certs[0]):
        raise _self_signed_not_anchor(role)
    raise ProtocolError(
        f"{role} chain leads to no trusted CA: {_NO_ANCHOR_ISSUER}", _A.unknown_ca
    )


_NO_ANCHOR_ISSUER: Final = "no issuer of it among the trust anchors"


def _self_signed_not_anchor(role: str) -> ProtocolError:
    """A leaf no anchor can have issued (`openssl req -x509` asserts cA, which an end-entity
    certificate must not: RFC 5280 §4.2.1.9). RFC 5246 §7.2.2's unknown_ca: no trusted CA
    matches; pinning it as an anchor is the way to trust it."""
    return ProtocolError(
        f"{role} certificate rejected: a self-signed certificate that is not among the "
        "trust anchors (give it as an anchor to pin it)",
        _A.unknown_ca,
    )


class _IssuerNames:
    """Who may have issued whom, by names alone, for the certificates of a chain (index 0 the
    leaf): `sent[i]` the indexes of the certificates sent after the leaf whose subject is
    certificate i's issuer, `anchors[i]` how many trust anchors have that subject, `trusted[i]`
    whether certificate i is itself an anchor (where a path ends)."""

    __slots__ = ("anchors", "sent", "trusted")

    def __init__(
        self, sent: list[list[int]], anchors: list[int], trusted: list[bool]
    ) -> None:
        self.sent = sent
        self.anchors = anchors
        self.trusted = trusted

    @classmethod
    def of(
        cls,
        chain: Sequence[bytes],
        certs: list[x509.Certificate],
        store: TrustStore,
        names: _Names,
    ) -> _IssuerNames:
        sent = [
            [index for index, issuer in enumerate(certs[1:], 1) if names.issued(cert, issuer)]
            for cert in certs
        ]
        anchors = [sum(names.issued(cert, a) for a in store._certificates) for cert in certs]
        return cls(sent, anchors, [bytes(der) in store._anchors for der in chain])


def _reaches_anchor_by_name(names: _IssuerNames) -> bool:
    """Whether some path by names leads from the leaf to a trust anchor, through the
    certificates sent, at any depth: the walk of `_candidate_checks` without its depth bound
    (a chain needing more CAs than allowed is left to the verifier, and the diagnosis says
    how many it needs)."""
    reached, todo = {0}, [0]
    while todo:
        index = todo.pop()
        if names.trusted[index] or names.anchors[index]:
            return True
        fresh = [issuer for issuer in names.sent[index] if issuer not in reached]
        reached.update(fresh)
        todo.extend(fresh)
    return False


def _candidates_allowed(depth: int) -> int:
    """The candidate issuers a chain may offer the verifier allowed `depth` CAs:
    `CANDIDATE_CHECKS_PER_LEVEL` for each level of the longest path (leaf, CAs, anchor)."""
    return CANDIDATE_CHECKS_PER_LEVEL * (depth + 2)


def _candidate_checks(graph: _IssuerNames, max_depth: int) -> int:
    """The most signature checks the verifier can make to build a path for the chain, from
    the names alone (RFC 5280 §6.1.3 (a)(4): an issuer is first found by its name).

    The verifier's search, as a count: from the leaf at depth 0, a certificate that is no
    trust anchor and is at a depth up to `max_depth` has every anchor and every certificate
    sent whose subject is its issuer checked as its issuer; those sent go on at the next
    depth, the same one again included. Counted per (certificate, depth) once, so the work
    is polynomial (at most (max_depth + 2)^2 (max_depth + 1) name pairs), not one step per
    path: the number of paths grows exponentially with the depth."""

    @functools.cache
    def below(index: int, depth: int) -> int:
        if graph.trusted[index] or depth > max_depth:
            return 0
        return graph.anchors[index] + sum(1 + below(j, depth + 1) for j in graph.sent[index])

    return below(0, 0)


def _dear_rsa_key(cert: x509.Certificate) -> str | None:
    """What makes the certificate's RSA key dear to verify with, or None when it is not (or is
    no RSA key, or does not load: the verifier refuses that without checking a signature)."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    exponent = key.public_numbers().e
    if exponent % 2 == 0:
        return f"RSA-{key.key_size} with an even public exponent"
    if not 3 <= exponent <= RSA_MAX_PUBLIC_EXPONENT:
        return f"RSA-{key.key_size} with a {exponent.bit_length()}-bit public exponent"
    if key.key_size > RSA_MAX_MODULUS_BITS:
        return f"RSA-{key.key_size}"
    return None


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return "of an unsupported type" if key is None else type(key).__name__.removesuffix("PublicKey")


def _not_valid(
    cert: x509.Certificate, index: int, when: datetime.datetime, role: str
) -> ProtocolError:
    """RFC 5280 §6.1.3 (a)(2): certificate `index` of the chain sent is on the path but not
    valid at `when`."""
    return ProtocolError(
        f"{role} certificate {index} is not valid at {when:%Y-%m-%d %H:%M}Z {_validity(cert)}",
        _A.certificate_expired,
    )


def _validity(cert: x509.Certificate) -> str:
    return f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"


def _valid_at(cert: x509.Certificate, when: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def _check_leaf_usage(leaf: _Leaf, role: str) -> None:
    """keyUsage must allow digitalSignature (RFC 8422 §5.3, §5.6; RFC 5280 §4.2.1.3) and
    extendedKeyUsage the role (RFC 5280 §4.2.1.12), when the extensions are present."""
    usage = leaf.extension(x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise ProtocolError(
            f"the {role} certificate's keyUsage does not allow digitalSignature",
            _A.unsupported_certificate,
        )
    purposes = leaf.extension(x509.ExtendedKeyUsage)
    wanted = _ROLE_USAGE[role]
    if purposes is not None and not (
        wanted in purposes or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in purposes
    ):
        raise ProtocolError(
            f"the {role} certificate's extendedKeyUsage does not allow {role} authentication",
            _A.unsupported_certificate,
        )


class _DnsConstraint:
    """The dNSName subtrees of one CA's nameConstraints (RFC 5280 §4.2.1.10): `permitted` None
    when the CA permits no DNS subtree (DNS names are then unrestricted by it). `readable`
    False: the CA's extensions do not all parse (the verifier parses only those it checks), so
    its constraints are unknown and no name satisfies them."""

    __slots__ = ("ca", "excluded", "permitted", "readable")

    def __init__(
        self,
        ca: str,
        permitted: tuple[str, ...] | None,
        excluded: tuple[str, ...],
        *,
        readable: bool = True,
    ) -> None:
        self.ca = ca
        self.permitted = permitted
        self.excluded = excluded
        self.readable = readable

    def violation(self, name: str) -> str | None:
        """Why `name` (a DNS name) breaks this constraint, or None when it does not."""
        if not self.readable:
            return f"unchecked against the name constraints of CA '{self.ca}' (malformed extension)"
        if self.permitted is not None and not any(_in_subtree(name, b) for b in self.permitted):
            return f"outside the DNS names permitted by CA '{self.ca}'"
        if any(_in_subtree(name, base) for base in self.excluded):
            return f"among the DNS names excluded by CA '{self.ca}'"
        return None


def _dns_constraints(cas: Iterable[x509.Certificate]) -> tuple[_DnsConstraint, ...]:
    """The DNS name constraints of the CA certificates of a validated path."""
    found = []
    for ca in cas:
        try:
            value = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        except ValueError:
            found.append(
                _DnsConstraint(shown_name(ca.subject.rfc4514_string()), None, (), readable=False)
            )
            continue
        permitted = [n.value for n in value.permitted_subtrees or () if isinstance(n, x509.DNSName)]
        excluded = [n.value for n in value.excluded_subtrees or () if isinstance(n, x509.DNSName)]
        if permitted or excluded:
            found.append(
                _DnsConstraint(
                    shown_name(ca.subject.rfc4514_string()),
                    tuple(permitted) or None,
                    tuple(excluded),
                )
            )
    return tuple(found)


def _in_subtree(name: str, base: str) -> bool:
    """RFC 5280 §4.2.1.10: a DNS name is within the subtree `base` when it is `base` with zero
    or more labels added on the left (case-insensitive); a `base` with a leading dot, a common
    spelling (OpenSSL takes it), holds only the names below it; an empty `base` holds every
    name."""
    name = name.lower().removesuffix(".")
    base = base.lower().removesuffix(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


class _Leaf:
    """A validated leaf certificate with its key and its extensions parsed once, by type, the
    DNS name constraints of its path (for a CN used as its name: the verifier applies them to
    subjectAltNames only), and the names it was found valid for (a chain seen again is not
    matched again)."""

    __slots__ = ("cert", "constraints", "extensions", "names", "public_key")

    def __init__(
        self,
        cert: x509.Certificate,
        public_key: PublicKey,
        extensions: dict[type, x509.ExtensionType],
        constraints: tuple[_DnsConstraint, ...] = (),
    ) -> None:
        self.cert = cert
        self.public_key = public_key
        self.extensions = extensions
        self.constraints = constraints
        #: Reference identity (None: the client's EUI-64, or no name checked) -> the name.
        self.names: dict[str | IpAddress | None, str] = {}

    @classmethod
    def of(
        cls,
        cert: x509.Certificate,
        public_key: PublicKey,
        role: str,
        constraints: tuple[_DnsConstraint, ...] = (),
    ) -> _Leaf:
        try:
            extensions = {type(ext.value): ext.value for ext in cert.extensions}
        except ValueError:
            raise ProtocolError(
                f"the {role} certificate has malformed extensions", _A.bad_certificate
            ) from None
        return cls(cert, public_key, extensions, constraints)

    def name_for(self, reference: str | IpAddress | None, check: Callable[[], str]) -> str:
        """The name `check` finds for `reference` (it raises when there is none), asked once:
        up to `NAMES_KEPT_PER_LEAF` outcomes are kept."""
        name = self.names.get(reference)
        if name is None:
            name = check()
            if len(self.names) < NAMES_KEPT_PER_LEAF:
                self.names[reference] = name
        return name

    def extension(self, kind: type[_E]) -> _E | None:
        value = self.extensions.get(kind)
        return value if isinstance(value, kind) else None

    def check_common_name(self, common_name: str, role: str) -> None:
        """A CN taken as the name must satisfy the path's DNS name constraints as a dNSName
        would (RFC 5280 §4.2.1.10, RFC 6125 §6.4.4): what OpenSSL checks too."""
        for constraint in self.constraints:
            problem = constraint.violation(common_name)
            if problem is not None:
                raise ProtocolError(
                    f"the {role} certificate's common name {shown_name(common_name)} is {problem} "
                    "(RFC 5280 §4.2.1.10)",
                    _A.bad_certificate,
                )


def _as_utc(when: datetime.datetime) -> datetime.datetime:
    """`when` in UTC; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


# -- names ------------------------------------------------------------------------------------


def _presents_identifiers(names: x509.SubjectAlternativeName) -> bool:
    """Whether the subjectAltName presents a DNS-ID, SRV-ID or URI-ID: only then is the CN
    no identifier (RFC 6125 §6.4.4); iPAddress or rfc822Name entries alone leave the CN."""
    return any(
        isinstance(name, x509.DNSName | x509.UniformResourceIdentifier)
        or (isinstance(name, x509.OtherName) and name.type_id == _SRV_NAME)
        for name in names
    )


def _match_server_name(leaf: _Leaf, reference: str | IpAddress) -> str:
    """RFC 6125 §6.4: the DNS-IDs, or the CN-IDs when the subjectAltName presents no DNS-ID,
    SRV-ID or URI-ID (§6.4.4), which must satisfy the path's DNS name constraints (RFC 5280
    §4.2.1.10); an IP address against iPAddress entries only. A CN-ID is compared as a whole
    name: "certificates with wildcards are not allowed" there (RFC 7252 §9.1.3.3, which RFC
    7925 §4.4.2 follows), so a wildcard only counts in a DNS-ID (RFC 6125 §6.4.3)."""
    names = leaf.extension(x509.SubjectAlternativeName)
    if isinstance(reference, str):
        if names is not None and _presents_identifiers(names):
            by_cn, presented = False, names.get_values_for_type(x509.DNSName)
        else:
            by_cn, presented = True, _common_names(leaf.cert)
        matching = [name for name in presented if dns_name_matches(reference, name)]
        if by_cn:
            whole = [name for name in matching if "*" not in name]
            if matching and not whole:
                raise ProtocolError(
                    f"the server certificate is not valid for {reference}: its common name "
                    f"{matching[0]} has a wildcard, which a common name may not "
                    "(RFC 7252 §9.1.3.3; a wildcard counts in a subjectAltName dNSName only)",
                    _A.bad_certificate,
                )
            matching = whole
            for common_name in matching:
                leaf.check_common_name(common_name, "server")
        if matching:
            return reference
    elif names is not None and reference in names.get_values_for_type(x509.IPAddress):
        # As written: 4 octets for an IPv4 address (RFC 5280 §4.2.1.6), which the reference
        # of a client reaching an IPv4-mapped address is. One of 16 octets spelling a mapped
        # address (::ffff:10.0.0.1) equals no reference: a CA's name constraints on IPv4
        # subtrees (an excluded 10.0.0.0/8) do not reach it (the verifier compares octets of
        # one length), so taking it for the IPv4 address would let such a CA name any address
        # it excludes.
        return str(reference)
    raise ProtocolError(f"the server certificate is not valid for {reference}", _A.bad_certificate)


def _client_eui64(leaf: _Leaf) -> str:
    """CRT-4: the EUI-64 of a dNSName subjectAltName, or of the CN when the subjectAltName
    presents no identifier (the profile's "in the SubjectAltName or in the CN", read with the
    RFC 6125 §6.4.4 rule the server name follows: a DNS-ID, SRV-ID or URI-ID bars the CN; an
    iPAddress alone does not). A CN must be within the path's DNS name constraints, as a
    dNSName must."""
    names = leaf.extension(x509.SubjectAlternativeName)
    if names is not None and _presents_identifiers(names):
        by_cn, where = False, "subjectAltName"
        candidates = names.get_values_for_type(x509.DNSName)
    else:
        by_cn, where = True, "common name"
        candidates = _common_names(leaf.cert)[-1:]  # the most specific CN (RFC 7252 §9.1.3.3)
    found = {eui for eui in map(canonical_eui64, candidates) if eui is not None}
    if len(found) == 1:
        if by_cn:
            leaf.check_common_name(candidates[0], "client")
        return found.pop()
    problem = "several different EUI-64s" if found else "no EUI-64"
    raise ProtocolError(
        f"the client certificate's {where} holds {problem} (RFC 7252 §9.1.3.3)",
        _A.bad_certificate,
    )


def _common_names(cert: x509.Certificate) -> list[str]:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [v.value if isinstance(v.value, str) else v.value.decode("latin-1") for v in values]


def _display_name(leaf: _Leaf) -> str:
    """A name for logs when none was checked: the first DNS or IP subjectAltName, else the CN
    (which names the server only when the subjectAltName presents no DNS-ID, SRV-ID or
    URI-ID: RFC 6125 §6.4.4), else the whole subject."""
    names = leaf.extension(x509.SubjectAlternativeName)
    if names is not None:
        for kind in (x509.DNSName, x509.IPAddress):
            values = names.get_values_for_type(kind)
            if values:
                return str(values[0])
    common = _common_names(leaf.cert)
    if common:
        return common[-1]
    return leaf.cert.subject.rfc4514_string()


# -- trusted CA indication (RFC 6066 §6, CRT-8) -----------------------------------------------


def authority_identifiers(
    chain: Sequence[bytes], *, issuers: Sequence[bytes] = ()
) -> frozenset[tuple[int, bytes]]:
    """Every RFC 6066 §6 TrustedAuthority that names a CA on the path of `chain` (a server's
    own chain, leaf first): compute it once per chain when the server is configured.

    The CAs are the chain's certificates after the leaf and the certificates of `issuers` (CA
    certificates the server knows but does not send, typically its roots) that issued one of the
    chain's certificates. For each: key_sha1_hash (SHA-1 of the key as RFC 6066 §6 defines it),
    cert_sha1_hash (SHA-1 of the DER certificate) and x509_name (DER subject). Besides, each
    certificate's DER issuer name (so a root that is not at hand still matches by x509_name),
    and a 20-byte authorityKeyIdentifier as key_sha1_hash (the usual key identifier is that
    same hash, RFC 5280 §4.2.1.2 method 1). pre_agreed names nothing and never matches.
    Raises `ConfigError` when a certificate does not parse.
    """
    certs = [_config_certificate(der, "a chain") for der in chain]
    cas = certs[1:]
    for candidate in (_config_certificate(der, "an issuer") for der in issuers):
        if any(c.issuer == candidate.subject and _issued_by(c, candidate) for c in certs):
            cas.append(candidate)
    found: set[tuple[int, bytes]] = set()
    for cert in certs:
        found.add((IdentifierType.x509_name, cert.issuer.public_bytes()))
        key_id = _authority_key_id(cert)
        if key_id is not None:
            found.add((IdentifierType.key_sha1_hash, key_id))
    for ca in cas:
        found.add((IdentifierType.x509_name, ca.subject.public_bytes()))
        found.add((IdentifierType.cert_sha1_hash, _sha1(_der(ca))))
        key_hash = _key_sha1(ca)
        if key_hash is not None:
            found.add((IdentifierType.key_sha1_hash, key_hash))
    return frozenset(found)


def chain_matches_authority(
    chain: Sequence[bytes],
    authorities: Iterable[tuple[int, bytes]],
    *,
    issuers: Sequence[bytes] = (),
) -> bool:
    """Whether one of the client's trusted_ca_keys `authorities` names a CA on the path of
    `chain` (see `authority_identifiers`)."""
    return select_chain_index([authority_identifiers(chain, issuers=issuers)], authorities) == 0


def select_chain_index(
    candidates: Sequence[frozenset[tuple[int, bytes]]],
    authorities: Iterable[tuple[int, bytes]],
) -> int | None:
    """The index of the first candidate chain (given by its `authority_identifiers`) under a CA
    the client indicated in trusted_ca_keys, or None when none is (the server then sends its
    default chain: RFC 6066 §6 leaves the choice to it)."""
    wanted = {(int(kind), bytes(identifier)) for kind, identifier in authorities}
    for index, identifiers in enumerate(candidates):
        if not wanted.isdisjoint(identifiers):
            return index
    return None


def _key_sha1(cert: x509.Certificate) -> bytes | None:
    """RFC 6066 §6 key_sha1_hash: for RSA the SHA-1 of the modulus (big-endian, no leading
    zeros); for (EC)DSA and the others the SHA-1 of the subjectPublicKey bit string."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPublicKey):
        modulus = key.public_numbers().n
        return _sha1(modulus.to_bytes((modulus.bit_length() + 7) // 8, "big"))
    try:
        return x509.SubjectKeyIdentifier.from_public_key(key).digest
    except (ValueError, TypeError):
        return None


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    key_id = aki.key_identifier
    return key_id if key_id is not None and len(key_id) == _SHA1_LEN else None


def _config_certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return parse_der_certificate(bytes(der))
    except CertificateVersionError as exc:
        raise ConfigError(f"{what} certificate is not usable: {exc}") from None
    except ValueError:
        raise ConfigError(f"{what} certificate is not a DER X.509 certificate") from None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


def chain_hash(certificate_message_body: bytes) -> bytes:
    """The RFC 7924 §3 fingerprint of a Certificate message (the `cert` CachedObject): SHA-256
    over the message body, without the handshake header (CRT-2)."""
    return hashlib.sha256(certificate_message_body).digest()
