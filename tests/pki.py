"""Certificates made on the fly for the X.509 tests: CAs, intermediates and leaves with every
defect a test needs (validity, names, key types, usages, signatures). Nothing is checked in.

This is a helper module, not a test file: ``from tests.pki import ...``. `tests.peers`
`make_test_pki` writes the interop files; this module stays in memory and is more flexible.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
"""The validation time of the tests: every certificate is valid a year either side."""
YEAR = datetime.timedelta(days=365)
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str | None) -> x509.Name:
    """O=iotdtls tests and the CN; a CN past the 64 characters of RFC 5280's ub-common-name
    too (a hostile one), with cryptography's UserWarning for it."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotdtls tests")]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name,
                                             _validate=len(common_name) <= 64))
    return x509.Name(attributes)


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def spki(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _usage(*, digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def issue(
    common_name: str | None,
    issuer: Issued | None,
    *,
    key: PrivateKey | None = None,
    ca: bool = False,
    path_length: int | None = None,
    basic_constraints: bool = True,
    authority_key_id: bool = True,
    san: Sequence[x509.GeneralName] | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    key_usage: bool = True,
    digital_signature: bool = True,
    not_before: datetime.datetime = NOW - YEAR,
    not_after: datetime.datetime = NOW + YEAR,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    signing_key: PrivateKey | None = None,
) -> Issued:
    """A certificate for `common_name` issued by `issuer` (self-signed when None).

    `signing_key` signs instead of the issuer's key (a bad signature); the authority key
    identifier still names the issuer.
    """
    key = key or p256()
    issuer_name = name(common_name) if issuer is None else issuer.cert.subject
    issuer_key = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if authority_key_id:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if key_usage:
        usage = _usage(digital_signature=digital_signature, cert_sign=ca)
        builder = builder.add_extension(usage, critical=True)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    signer = signing_key or issuer_key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer, algorithm), key)


def root(common_name: str = "iotdtls test root", **kwargs: Any) -> Issued:
    return issue(common_name, None, ca=True, **kwargs)


def intermediate(issuer: Issued, common_name: str, **kwargs: Any) -> Issued:
    return issue(common_name, issuer, ca=True, **kwargs)


def ca_chain(depth: int) -> tuple[Issued, list[Issued]]:
    """A root and `depth` intermediates below it, the lowest last."""
    anchor = root()
    cas: list[Issued] = []
    for level in range(depth):
        cas.append(intermediate(cas[-1] if cas else anchor, f"intermediate {level + 1}"))
    return anchor, cas


def dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def ip(*addresses: str) -> list[x509.GeneralName]:
    return [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]


def server_leaf(issuer: Issued, *names: str, **kwargs: Any) -> Issued:
    """A server certificate with dNSName SANs `names` (default localhost) and serverAuth."""
    kwargs.setdefault("san", dns(*(names or ("localhost",))))
    kwargs.setdefault("eku", [SERVER_AUTH])
    return issue("server", issuer, **kwargs)


def client_leaf(issuer: Issued, common_name: str = "01-23-45-67-89-AB-CD-EF",
                **kwargs: Any) -> Issued:
    """A client certificate whose CN is `common_name`, with clientAuth and no SAN."""
    kwargs.setdefault("eku", [CLIENT_AUTH])
    return issue(common_name, issuer, **kwargs)


def chain_der(leaf: Issued, *cas: Issued) -> tuple[bytes, ...]:
    return (leaf.der, *(c.der for c in cas))


def with_version_field(der: bytes, field: int) -> bytes:
    """A certificate cryptography wrote (DER, version field 2: v3) with its version field set
    to `field` (0 to 127; 1 is v2, which cryptography does not parse, RFC 5280 §4.1.2.1). Its
    signature no longer verifies, which no check reaches: the certificate does not parse."""
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2, first in the TBSCertificate
    at = der.index(v3)
    assert at < 12, "the version field opens the TBSCertificate"
    return der[:at] + v3[:4] + bytes([field]) + der[at + len(v3):]


def pem_certificate(der: bytes) -> bytes:
    """`der` in a PEM CERTIFICATE block (RFC 7468 §5), whatever it holds."""
    text = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE-----\n{text}-----END CERTIFICATE-----\n".encode()
