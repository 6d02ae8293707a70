"""Credentials of the profile's asymmetric modes (profile §3, CFG-1; RFC 7250; RFC 5246 §7.4.2).

* `PrivateKey` (from `iotdtls.crypto`): an ECDSA P-256 key pair, the own half of a raw-public-key
  or certificate credential.
* `public_key_pin(value)`: the form a provisioned raw public key takes here: the SHA-256 of its
  DER SubjectPublicKeyInfo (RPK-3), with the point uncompressed as peers send it (RPK-2). The
  key itself (DER or PEM, a P-256 key, its point in either form) or that SHA-256 (32 bytes, or
  64 hex digits) are accepted.
* `CertifiedKey`: a certificate chain (DER, leaf first, root left out: a trailing self-signed
  certificate is dropped, CRT-1) with its private key.
* `psk_digest(psk)`, `own_credential_digest(credential)`: what a resumable session keeps of the
  credential it was made with (`iotdtls.sessions.SessionState.credential_digest`), never the
  credential itself.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike, fspath

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from iotdtls._files import RefusedFile, read_regular_file
from iotdtls._paths import cannot_read, shown_path
from iotdtls.crypto.pem import (
    CERTIFICATE,
    PRIVATE_KEY,
    PUBLIC_KEY,
    kind_of,
    parse_der_certificate,
    that_is,
)
from iotdtls.crypto.signature import (
    PrivateKey,
    PublicKey,
    spki_sha256,
)
from iotdtls.crypto.x509 import is_self_signed, leaf_public_key_spki, load_certificates
from iotdtls.errors import ConfigError, ProtocolError

__all__ = [
    "PIN_PREFIX",
    "PIN_TEXT",
    "CertifiedKey",
    "PrivateKey",
    "own_credential_digest",
    "pin_from_hex",
    "psk_digest",
    "public_key_pin",
    "public_key_pins",
    "public_key_spki",
    "read_wall_clock",
    "validity_problem",
    "warn_if_out_of_validity",
]

_log = logging.getLogger("iotdtls.credentials")

_SHA256_LEN = 32
#: What the demo and the log lines print before a raw key's SHA-256 ("sha256:<hex>",
#: `identity.RawPublicKeyIdentity`): taken back, in any case, wherever such a SHA-256 is.
PIN_PREFIX = "sha256:"
#: How a raw key's SHA-256 is written, for messages.
PIN_TEXT = "64 hex digits (a SHA-256), optionally after sha256:"
_HEX_PIN = re.compile(r"[0-9A-Fa-f]{64}")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """The DER contents of every PEM block labelled `label` in `data` (RFC 7468)."""
    blocks: list[bytes] = []
    for match in _PEM_BLOCK.finditer(data):
        if match.group(1).decode() == label:
            try:
                blocks.append(base64.b64decode(b"".join(match.group(2).split()), validate=True))
            except binascii.Error:
                raise ConfigError(f"a PEM {label} block is not valid base64") from None
    return blocks


def pin_from_hex(text: str) -> bytes | None:
    """The 32 bytes of a raw public key's SHA-256 (RPK-3) written as 64 hex digits, after an
    optional `PIN_PREFIX` ("sha256:", any case: the form the demo and the logs print), white
    space around it ignored; None when `text` is not that."""
    text = text.strip()
    if text[: len(PIN_PREFIX)].lower() == PIN_PREFIX:
        text = text[len(PIN_PREFIX):]
    return bytes.fromhex(text) if _HEX_PIN.fullmatch(text) else None


def public_key_pin(value: bytes | str) -> bytes:
    """The SHA-256 of a raw public key's SubjectPublicKeyInfo with its point uncompressed (the
    form a peer sends, RFC 8422 §5.1.2), from the key (DER or PEM, either point form) or from
    that hash itself (32 bytes, or as text `pin_from_hex` reads: 64 hex digits, optionally
    after "sha256:"). Text that is neither that nor PEM is refused as a mistyped SHA-256, by
    its length only."""
    if isinstance(value, str):
        text = value.strip()
        pin = pin_from_hex(text)
        if pin is not None:
            return pin
        if not text.startswith("-----"):
            raise ConfigError(
                f"a public key given as text must be {PIN_TEXT}, or a PEM "
                f"SubjectPublicKeyInfo; got {len(text)} characters"
            )
        value = text.encode()
    if not isinstance(value, bytes | bytearray):
        raise ConfigError(f"a public key must be bytes or str, got {type(value).__name__}")
    value = bytes(value)
    if len(value) == _SHA256_LEN:
        return value
    return spki_sha256(public_key_spki(value))


def public_key_spki(value: bytes) -> bytes:
    """A P-256 public key's DER SubjectPublicKeyInfo with its point uncompressed (as peers send
    it, RFC 8422 §5.1.2), from the key in DER or PEM, either point form."""
    if value.lstrip().startswith(b"-----"):
        blocks = pem_blocks(value, "PUBLIC KEY")
        if len(blocks) != 1:
            instead = None if blocks else _not_public_key(value)
            raise ConfigError(instead or "a public key PEM must hold exactly one PUBLIC KEY block")
        value = blocks[0]
    return _uncompressed_p256_spki(value)


#: How to get the public key out of what was given instead (RFC 7250 §3: a raw public key is
#: a SubjectPublicKeyInfo), by what that is.
_PUBLIC_KEY_OF = {
    PRIVATE_KEY: "iotdtls keygen spki --key KEY.pem --out PUB.pem writes it",
    CERTIFICATE: "openssl x509 -in CERT.pem -pubkey -noout > PUB.pem writes it",
}


def _not_public_key(data: bytes) -> str | None:
    """What `data`, which holds no public key, holds instead, with how to get the public key
    out of a private key or a certificate ("that is a certificate (PEM CERTIFICATE), not a
    public key; give its public key (openssl x509 ... writes it) or the public key's SHA-256"); None
    when it is nothing `iotdtls.crypto.pem` recognises."""
    instead = that_is(data, PUBLIC_KEY)
    found = kind_of(data)
    if instead is None or found is None or found[0] not in _PUBLIC_KEY_OF:
        return instead
    how = _PUBLIC_KEY_OF[found[0]]
    return f"{instead}; give its public key ({how}) or the public key's SHA-256"


def _uncompressed_p256_spki(der: bytes) -> bytes:
    """A raw public key is a DER SubjectPublicKeyInfo (RFC 7250 §3) of a P-256 key, the only
    kind the profile's ECDHE_ECDSA suite signs with (RFC 7925 §4.3); otherwise the error says
    what it is instead. Returned with its point uncompressed, the only form a peer sends
    (RFC 8422 §5.1.2, RPK-2), so that the key pins alike however it was provisioned
    (`openssl ec -pubout -conv_form compressed` writes a compressed one)."""
    key: PublicKeyTypes | None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(_not_p256_spki(der, key))
    return PublicKey.of(key).spki


def _not_p256_spki(der: bytes, key: PublicKeyTypes | None) -> str:
    """What `der`, not a P-256 SubjectPublicKeyInfo, is: another kind of key (`key`, the public
    key it holds, None for none), a private key or a certificate (each a common mix-up), or
    none of them."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"the public key is on {key.curve.name}; the profile needs P-256"
    if key is not None:
        kind = type(key).__name__.removesuffix("PublicKey")
        return f"the public key is {kind}, not ECDSA; the profile needs P-256"
    instead = _not_public_key(der)
    return instead or "a public key must be a SubjectPublicKeyInfo (DER or PEM) or its SHA-256"


def public_key_pins(values: Iterable[bytes | str], name: str) -> tuple[bytes, ...]:
    """`public_key_pin` of each value, without duplicates, in order; a `ConfigError` names
    the entry refused (`name[index]`, `name` the setting)."""
    pins: list[bytes] = []
    for index, value in enumerate(values):
        try:
            pin = public_key_pin(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}[{index}]: {exc}") from None
        if pin not in pins:
            pins.append(pin)
    return tuple(pins)


#: Labels of the credential digests: SHA-256 over a label and the credential, never the
#: credential itself (a PSK has no forward secrecy: its digest alone is kept with a session).
_PSK_LABEL = b"iotdtls session psk\x00"
_OWN_CREDENTIAL_LABEL = b"iotdtls session own credential\x00"


def psk_digest(psk: bytes) -> bytes:
    """What a session keeps of the PSK it was made with (RFC 4279 §2): SHA-256 over a fixed
    label and the key, to tell whether today's key for the identity is still that one."""
    return hashlib.sha256(_PSK_LABEL + psk).digest()


def own_credential_digest(credential: bytes) -> bytes:
    """What a client's session keeps of the credential it authenticated with (RFC 7250 §3: our
    SubjectPublicKeyInfo; RFC 5246 §7.4.6: our certificate): SHA-256 over a fixed label and
    it."""
    return hashlib.sha256(_OWN_CREDENTIAL_LABEL + credential).digest()


@dataclass(frozen=True, slots=True, repr=False)
class CertifiedKey:
    """Our certificate chain (DER, leaf first; the root is not sent, CRT-1) and its key.

    A chain of more than one certificate that ends in a self-signed one (a full-chain file:
    leaf, CA, root) loses that root here: the profile ("Certificate Use with DTLS", CRT-1)
    omits it from the chain, the peer holding it as a trust anchor (RFC 5246 §7.4.2). A lone
    self-signed certificate (a pinned leaf) stays. The root left out is kept as
    `withheld_root`, so a client's trusted_ca_keys can still name it (RFC 6066 §6).

    Its repr names the leaf's subject and counts the certificates; the key is left out."""

    chain: tuple[bytes, ...]
    private_key: PrivateKey
    #: Where the chain came from (its file, as `load` read it), for messages; None if unknown.
    source: str | None = field(default=None, compare=False)
    withheld_root: bytes | None = field(default=None, init=False, compare=False)
    #: Whether `warn_if_out_of_validity` has logged this chain's warning (once is enough:
    #: `ClientConfig.for_host` makes a configuration per host from one chain).
    validity_warned: bool = field(default=False, init=False, compare=False)
    #: The leaf's validity period (notBefore, notAfter; RFC 5280 §4.1.2.5) and whether it is
    #: an X.509 v1 certificate, read from it the first time `validity_problem` or
    #: `version_problem` asks (`_leaf_facts`), then kept.
    _facts: tuple[datetime.datetime, datetime.datetime, bool] | None = field(
        default=None, init=False, compare=False
    )

    def __post_init__(self) -> None:
        chain = as_der_sequence("a certificate chain", self.chain)
        if not chain:
            raise ConfigError("a certificate chain needs at least the leaf certificate")
        try:
            leaf_key = leaf_public_key_spki(chain)
        except ProtocolError as exc:
            raise ConfigError(f"the leaf certificate is not usable: {exc}") from None
        if leaf_key != self.private_key.spki:
            raise ConfigError("the private key does not belong to the leaf certificate")
        if len(chain) > 1 and is_self_signed(chain[-1]):
            _log.debug("certificate chain: the self-signed root at its end is not sent (CRT-1)")
            object.__setattr__(self, "withheld_root", chain[-1])
            chain = chain[:-1]
        object.__setattr__(self, "chain", chain)

    def __repr__(self) -> str:
        subject = parse_der_certificate(self.chain[0]).subject.rfc4514_string()
        count = len(self.chain)
        return (
            f"CertifiedKey(leaf {subject!r}, {count} certificate{'s' * (count != 1)}, "
            "private key redacted)"
        )

    @classmethod
    def from_pem(
        cls, certificates: bytes, key: bytes, password: bytes | None = None
    ) -> CertifiedKey:
        """From PEM certificate(s) (or one DER certificate), leaf first, and a private key
        (`PrivateKey.from_pem`), each given as bytes: text is a one-line `ConfigError`, as
        `PrivateKey.from_pem` says of a key."""
        if not isinstance(certificates, bytes | bytearray | memoryview):
            raise ConfigError(
                f"give the certificates as bytes (PEM or DER), got {type(certificates).__name__}"
            )
        return cls(load_certificates(bytes(certificates)), PrivateKey.from_pem(key, password))

    @classmethod
    def load(
        cls, cert_file: str | PathLike[str], key_file: str | PathLike[str],
        password: bytes | None = None,
    ) -> CertifiedKey:
        """From a certificate file (PEM chain or one DER certificate, `load_certificate_file`)
        and a key file (`PrivateKey.load`); an error names the file it is about ("certificate
        file PATH: no valid PEM certificate found"), or both when they do not pair. The key
        itself given instead of a path is not quoted in the error (`cannot_read`)."""
        chain = load_certificate_file(cert_file)
        private_key = PrivateKey.load(key_file, password)
        try:
            return cls(chain, private_key, source=shown_path(fspath(cert_file)))
        except ConfigError as exc:
            cert_shown = shown_path(fspath(cert_file))
            key_shown = shown_path(fspath(key_file))
            raise ConfigError(
                f"certificate file {cert_shown} with key file {key_shown}: {exc}"
            ) from None


def validity_window(certified: CertifiedKey) -> tuple[datetime.datetime, datetime.datetime]:
    """Our leaf certificate's validity period (notBefore, notAfter, UTC; RFC 5280 §4.1.2.5),
    parsed from the leaf once per `CertifiedKey` and kept: each configuration made with it
    (each `dataclasses.replace`, each coap `for_host`) only compares it with its clock."""
    start, end, _ = _leaf_facts(certified)
    return start, end


def _leaf_facts(certified: CertifiedKey) -> tuple[datetime.datetime, datetime.datetime, bool]:
    """(notBefore, notAfter, is v1) of our leaf, parsed once per `CertifiedKey`."""
    facts = certified._facts
    if facts is None:
        leaf = parse_der_certificate(certified.chain[0])
        v1 = leaf.version is x509.Version.v1
        facts = (leaf.not_valid_before_utc, leaf.not_valid_after_utc, v1)
        object.__setattr__(certified, "_facts", facts)
    return facts


def version_problem(certified: CertifiedKey) -> str | None:
    """That our leaf is an X.509 v1 certificate (RFC 5280 §4.1.2.1; what `openssl x509 -req`
    makes without -extfile), or None: an iotdtls peer refuses it with bad_certificate
    (cryptography's verifier takes v3 certificates only, "certificate must be an X509v3
    certificate"), though it loads and RFC 5280 allows it."""
    if not _leaf_facts(certified)[2]:
        return None
    return (
        f"our certificate {_shown_leaf(certified)} is an X.509 v1 certificate: iotdtls peers "
        "refuse it with bad_certificate (they take v3 only); issue a v3 one (openssl x509 -req "
        "with -extfile naming its extensions, or openssl req -x509)"
    )


def _shown_leaf(certified: CertifiedKey) -> str:
    """Our leaf as messages name it: its file, or else its subject."""
    if certified.source:
        return certified.source
    return repr(parse_der_certificate(certified.chain[0]).subject.rfc4514_string())


class WallClockFailed(Exception):
    """The application's `wall_clock` raised or answered no time: the message names the
    setting and what went wrong (the type of its error, never its text)."""


def read_wall_clock(wall_clock: Callable[[], object], name: str = "wall_clock") -> float:
    """The application's `wall_clock`, read for a certificate's validity (RFC 5280 §6.1.3
    (a)(2)): seconds since the epoch that a date can be made of (not NaN, not out of range),
    as any `numbers.Real` but a bool (a Fraction, numpy's numbers) gives them to float().
    `WallClockFailed` when it raises or answers anything else; each caller says what that
    means (a `ConfigError` at construction, internal_error in a handshake). The message names
    the clock (`name`) and the answer's type, never its value (the repr of 10**5000 raises
    ValueError)."""
    try:
        now: object = wall_clock()
    except Exception as exc:
        raise WallClockFailed(f"{name} raised {type(exc).__name__}") from None
    answered = type(now).__name__
    if not isinstance(now, numbers.Real) or isinstance(now, bool):
        raise WallClockFailed(
            f"{name} returned {answered}, not a number of seconds since the epoch")
    try:
        seconds = float(now)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    except Exception as exc:
        raise WallClockFailed(f"{name} returned {answered}, which float() could not convert"
                              f" ({type(exc).__name__})") from None
    if not _is_a_date(seconds):
        raise WallClockFailed(
            f"{name} returned {answered}, not a date (NaN, infinite or beyond the years 1"
            " to 9999)")
    return seconds


def _is_a_date(now: float) -> bool:
    try:
        datetime.datetime.fromtimestamp(now, datetime.UTC)
    except (OverflowError, ValueError, OSError):  # NaN, infinity, past the year 9999
        return False
    return True


def validity_problem(certified: CertifiedKey, now: float) -> str | None:
    """How our leaf certificate is out of its validity period at `now` (seconds since the
    epoch): "our certificate server.crt expired 2026-12-04 (valid 2026-11-25 to 2026-12-04)",
    or "... is not valid before ..."; None inside it. A peer checking it (RFC 5280 §6.1.3
    (a)(2)) refuses it with certificate_expired (RFC 5246 §7.2.2)."""
    start, end = validity_window(certified)
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if start <= when <= end:
        return None
    name = _shown_leaf(certified)  # for a message, once
    state = f"expired {end:%Y-%m-%d}" if when > end else f"is not valid before {start:%Y-%m-%d}"
    return f"our certificate {name} {state} (valid {start:%Y-%m-%d} to {end:%Y-%m-%d})"


def warn_if_out_of_validity(certified: CertifiedKey, now: float) -> None:
    """Log, once per chain, that our certificate is out of its validity period at `now`: a
    warning, not a refusal (a device's clock may be wrong, not the certificate), but every peer
    will refuse it. So, the same once, of a v1 certificate (`version_problem`): peers other
    than ours may take it."""
    if certified.validity_warned:
        return
    problem = validity_problem(certified, now)
    old_version = version_problem(certified)
    if problem is not None or old_version is not None:
        mark_validity_warned(certified)
    if problem is not None:
        _log.warning("%s: peers will refuse it with certificate_expired", problem)
    if old_version is not None:
        _log.warning("%s", old_version)


def mark_validity_warned(certified: CertifiedKey) -> None:
    """Keep `warn_if_out_of_validity` silent about this chain: its warning is given already,
    here or by another process (the parent of ``iotdtls server --workers N`` warns once for
    the workers, which each load the same file again)."""
    object.__setattr__(certified, "validity_warned", True)


def load_certificate_file(path: str | PathLike[str]) -> tuple[bytes, ...]:
    """The certificates of a PEM file (any number) or a DER file (one), as DER; a regular file
    of at most 1 MiB (`read_regular_file`: a FIFO or a device is refused, never read); an
    error names the file ("certificate file PATH: not a PEM or DER X.509 certificate")."""
    try:
        data = read_regular_file(fspath(path))
    except RefusedFile as exc:
        raise ConfigError(f"certificate file {shown_path(fspath(path))} {exc}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(cannot_read("certificate file", fspath(path), exc)) from None
    try:
        return load_certificates(data)
    except ConfigError as exc:
        raise ConfigError(f"certificate file {shown_path(fspath(path))}: {exc}") from None


def as_der_sequence(name: str, values: Sequence[bytes]) -> tuple[bytes, ...]:
    """Certificates given as DER or PEM (one or more blocks each) -> DER tuple."""
    if isinstance(values, bytes | str):
        raise ConfigError(f"{name} must be a list of certificates, not one bytes value")
    out: list[bytes] = []
    for value in values:
        if not isinstance(value, bytes | bytearray):
            # A path where the certificate's bytes belong: say how to read it.
            path = isinstance(value, str | PathLike)
            hint = ": read the file: Path(p).read_bytes()" if path else ""
            raise ConfigError(f"{name} items must be bytes (DER or PEM certificates){hint}")
        try:
            out.extend(load_certificates(bytes(value)))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return tuple(out)
