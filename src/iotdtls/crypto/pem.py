"""What a credential file holds, to name it when a loader wanted something else: a private key
given as the certificate, a certificate as the key or as a raw public key (the common mix-ups
of `--cert`/`--key`/`--rpk-allow`). PEM is told by its labels (RFC 7468 §2: "-----BEGIN
LABEL-----"), DER by what it parses as. Only the kind and the label are named, never content.
"""

from __future__ import annotations

import re
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CERTIFICATE",
    "PRIVATE_KEY",
    "PUBLIC_KEY",
    "CertificateVersionError",
    "kind_of",
    "parse_der_certificate",
    "parse_pem_certificates",
    "pem_labels",
    "that_is",
]

CERTIFICATE: Final = "a certificate"
PRIVATE_KEY: Final = "a private key"
PUBLIC_KEY: Final = "a public key"

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")

#: The kind of each label OpenSSL and RFC 7468 §5-§13 write for these files.
_KINDS: Final = {
    "CERTIFICATE": CERTIFICATE,
    "X509 CERTIFICATE": CERTIFICATE,
    "TRUSTED CERTIFICATE": CERTIFICATE,
    "PRIVATE KEY": PRIVATE_KEY,
    "ENCRYPTED PRIVATE KEY": PRIVATE_KEY,
    "EC PRIVATE KEY": PRIVATE_KEY,
    "RSA PRIVATE KEY": PRIVATE_KEY,
    "DSA PRIVATE KEY": PRIVATE_KEY,
    "OPENSSH PRIVATE KEY": PRIVATE_KEY,
    "PUBLIC KEY": PUBLIC_KEY,
    "RSA PUBLIC KEY": PUBLIC_KEY,
    "CERTIFICATE REQUEST": "a certificate request",
    "NEW CERTIFICATE REQUEST": "a certificate request",
    "X509 CRL": "a certificate revocation list",
    "PKCS7": "a PKCS #7 bundle",
}
#: Written beside an EC private key by `openssl ecparam -genkey`: says nothing of the file.
_PARAMETERS: Final = "EC PARAMETERS"


class CertificateVersionError(ValueError):
    """A certificate whose version field is neither v1 (0) nor v3 (2): cryptography parses no
    other (RFC 5280 §4.1.2.1 allows v2, which this profile has no use for) and says so with
    `x509.InvalidVersion`, which is not a ValueError; the parsers here raise this instead."""


def parse_der_certificate(der: bytes) -> x509.Certificate:
    """One DER certificate parsed; every refusal is a ValueError (a `CertificateVersionError`
    for a version other than v1 or v3), so a caller catching ValueError misses none."""
    try:
        return x509.load_der_x509_certificate(der)
    except x509.InvalidVersion as exc:
        raise _version_error(exc) from None


def parse_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """The CERTIFICATE blocks of PEM `data` parsed; refusals as `parse_der_certificate`'s."""
    try:
        return x509.load_pem_x509_certificates(data)
    except x509.InvalidVersion as exc:
        raise _version_error(exc) from None


def _version_error(exc: x509.InvalidVersion) -> CertificateVersionError:
    field = exc.parsed_version
    return CertificateVersionError(
        f"X.509 version field {field} (v{field + 1}) is not v1 or v3"
        if isinstance(field, int) and 0 <= field < 2**16
        else "X.509 version field is not v1 or v3"
    )


def pem_labels(data: bytes) -> tuple[str, ...]:
    """The labels of the PEM blocks in `data`, in order, each once."""
    return tuple(dict.fromkeys(m.group(1).decode("ascii") for m in _BEGIN.finditer(data)))


def kind_of(data: bytes) -> tuple[str, str] | None:
    """What `data` holds, as (kind, form): ("a private key", "PEM PRIVATE KEY"), ("a
    certificate", "DER"); None when it is neither PEM nor a DER certificate, private or public
    key. A PEM file holding several kinds is named by its first (after EC PARAMETERS)."""
    labels = [label for label in pem_labels(data) if label != _PARAMETERS] or pem_labels(data)
    if labels:
        label = labels[0]
        return _KINDS.get(label, f"a {label} block"), f"PEM {label}"
    kind = _der_kind(data)
    return None if kind is None else (kind, "DER")


def that_is(data: bytes, wanted: str) -> str | None:
    """"that is a private key (PEM PRIVATE KEY), not a certificate" when `data` holds something
    other than `wanted` (`CERTIFICATE`, `PRIVATE_KEY`, `PUBLIC_KEY`); None when it holds
    `wanted` (then what failed is something else: a damaged block, a wrong key type) or
    nothing this module recognises."""
    if any(_KINDS.get(label) == wanted for label in pem_labels(data)):
        return None
    found = kind_of(data)
    if found is None or found[0] == wanted:
        return None
    kind, form = found
    return f"that is {kind} ({form}), not {wanted}"


def _der_kind(data: bytes) -> str | None:
    """`CERTIFICATE`, `PRIVATE_KEY` (encrypted or not) or `PUBLIC_KEY` for DER `data` that
    parses as one; None otherwise."""
    try:
        parse_der_certificate(data)
    except ValueError:
        pass
    else:
        return CERTIFICATE
    try:
        serialization.load_der_private_key(data, None)
    except TypeError:  # cryptography's way to say it needs a password: a key all the same
        return PRIVATE_KEY
    except (ValueError, UnsupportedAlgorithm):
        pass
    else:
        return PRIVATE_KEY
    try:
        serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return PUBLIC_KEY
