"""A fixed certificate authority, server and client certificate for the certificate-mode fuzz
recording: keys derived from labels, fixed serial numbers and dates, deterministic ECDSA
(RFC 6979), so every process builds the same bytes and a saved input replays anywhere."""

from __future__ import annotations

import datetime
import hashlib
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.crypto.rand import P256_ORDER

__all__ = ["CLIENT_EUI64", "NOW", "SERVER_NAME", "TestPki", "test_pki"]

SERVER_NAME = "localhost"
CLIENT_EUI64 = "00-11-22-FF-FE-33-44-55"
_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC)
#: The wall clock of every certificate check in the harness (inside the validity period).
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp()


def p256_key(seed: bytes, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """The P-256 key derived from `seed` (the same seed, the same key, in every process)."""
    scalar = int.from_bytes(hashlib.sha256(seed).digest(), "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, curve or ec.SECP256R1())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey],
    serial: int,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    cert = builder.sign(issuer[1], hashes.SHA256(), ecdsa_deterministic=True)
    return cert.public_bytes(Encoding.DER)


def _usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


class TestPki:
    """The CA certificate and the two certified keys."""

    def __init__(self) -> None:
        ca_key = p256_key(b"fuzz ca")
        issuer = ("iotdtls fuzz CA", ca_key)
        ca_usage = _usage(signs_certificates=True)
        self.ca = _certificate(
            issuer[0],
            ca_key,
            issuer,
            1,
            [(x509.BasicConstraints(ca=True, path_length=1), True), (ca_usage, True)],
        )
        server_key, client_key = p256_key(b"fuzz server"), p256_key(b"fuzz client")
        server = _certificate(
            SERVER_NAME,
            server_key,
            issuer,
            2,
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_usage(signs_certificates=False), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                (x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False),
            ],
        )
        client = _certificate(
            CLIENT_EUI64,
            client_key,
            issuer,
            3,
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_usage(signs_certificates=False), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ],
        )
        self.server = CertifiedKey((server,), PrivateKey(server_key))
        self.client = CertifiedKey((client,), PrivateKey(client_key))


@cache
def test_pki() -> TestPki:
    return TestPki()
