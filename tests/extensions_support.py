"""Helpers for the interop tests of resumption, max_fragment_length, SNI and heartbeats: our
configurations in every credential mode from the test PKI (`tests.peers.Pki`), the matching
OpenSSL and GnuTLS peers, and a second server certificate for name-based selection."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import CertifiedKey, PrivateKey, load_certificate_file
from iotdtls.proxy import LossyProxy
from tests.interop_support import FAST
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK,
    NetNamespace,
    PeerProcess,
    Pki,
    gnutls_psk_client,
    gnutls_psk_server,
    gnutls_rpk_client,
    gnutls_rpk_server,
    openssl_cert_client,
    openssl_cert_server,
    openssl_psk_client,
    openssl_psk_server,
    write_psk_file,
)

#: Line-buffered OpenSSL and GnuTLS peers print these around a (resumed) handshake.
OPENSSL_NEW = r"New, TLSv1\.2, Cipher is"
OPENSSL_REUSED = r"Reused, TLSv1\.2, Cipher is"
GNUTLS_RESUMED = r"This is a resumed session"


def our_server(mode: str, pki: Pki | None, **settings: Any) -> ServerConfig:
    """Our server in `mode` ("psk", "rpk", "x509"; the PKI for the last two), mutual
    authentication in the key modes."""
    base: dict[str, Any] = {"handshake_timeout": 10.0, "retransmit": FAST}
    if mode == "psk":
        base["psk_store"] = {CLIENT_IDENTITY.encode(): PSK}
        return ServerConfig(**{**base, **settings})
    assert pki is not None
    if mode == "rpk":
        base["raw_public_key"] = PrivateKey.load(pki.server_key)
        base["client_public_keys"] = [pki.client_pub.read_bytes()]
    else:
        base["certificates"] = [CertifiedKey.load(pki.server_crt, pki.server_key)]
        base["client_trust_anchors"] = load_certificate_file(pki.ca_crt)
    return ServerConfig(**{**base, **settings})


def our_client(mode: str, pki: Pki | None, **settings: Any) -> ClientConfig:
    """Our client in `mode`, provisioned for the test server."""
    base: dict[str, Any] = {"handshake_timeout": 10.0, "retransmit": FAST}
    if mode == "psk":
        base.update(psk_identity=CLIENT_IDENTITY, psk=PSK)
        return ClientConfig(**{**base, **settings})
    assert pki is not None
    if mode == "rpk":
        base["server_public_keys"] = [pki.server_pub.read_bytes()]
        base["raw_public_key"] = PrivateKey.load(pki.client_key)
    else:
        base["trust_anchors"] = load_certificate_file(pki.ca_crt)
        base["certificate"] = CertifiedKey.load(pki.client_crt, pki.client_key)
        base["server_name"] = "localhost"
    return ClientConfig(**{**base, **settings})


def s_client(mode: str, port: int, pki: Pki, *extra: str) -> PeerProcess:
    """`openssl s_client` in `mode` (OpenSSL 3.0 has no raw public keys)."""
    if mode == "psk":
        return openssl_psk_client(port, extra=extra, time_limit=30.0)
    return openssl_cert_client(port, pki, extra=extra, time_limit=30.0)


def s_server(mode: str, port: int, pki: Pki, *extra: str, naccept: int = 1) -> PeerProcess:
    """`openssl s_server` in `mode`, serving `naccept` associations."""
    if mode == "psk":
        return openssl_psk_server(port, naccept=naccept, extra=extra, time_limit=30.0)
    return openssl_cert_server(port, pki, extra=(*extra, "-naccept", str(naccept)),
                               time_limit=30.0)


def gnutls_client(mode: str, port: int, pki: Pki, ns: NetNamespace, *extra: str) -> PeerProcess:
    """`gnutls-cli --udp` in `mode` ("psk" or "rpk"), inside `ns`."""
    if mode == "psk":
        return gnutls_psk_client(port, netns=ns, extra=extra, time_limit=30.0)
    return gnutls_rpk_client(port, pki, netns=ns, extra=extra, time_limit=30.0)


def gnutls_server(
    mode: str, port: int, pki: Pki, ns: NetNamespace, tmp_path: Path, *extra: str
) -> PeerProcess:
    """`gnutls-serv --udp` in `mode` ("psk" or "rpk"), inside `ns`."""
    if mode == "psk":
        psk_file = write_psk_file(tmp_path / "psk.passwd")
        return gnutls_psk_server(port, psk_file, netns=ns, extra=extra, time_limit=30.0)
    return gnutls_rpk_server(port, pki, netns=ns, extra=extra, time_limit=30.0)


@contextmanager
def proxy_in(ns: NetNamespace | None, port: int, **impairments: Any) -> Iterator[LossyProxy]:
    """A logging LossyProxy in front of 127.0.0.1:`port` (inside `ns` when given)."""
    factory = None if ns is None else (lambda family: ns.socket(family))
    options: dict[str, Any] = {"seed": 0, "lifetime": 60.0, **impairments}
    if factory is not None:
        options["socket_factory"] = factory
    with LossyProxy((LOCALHOST, port), **options) as proxy:
        yield proxy


def with_large_server_certificate(pki: Pki, directory: Path) -> Pki:
    """The test PKI with a server certificate for localhost that no 512-byte record holds
    (40 more names), so that max_fragment_length cuts the Certificate message."""
    cert, key = second_server_certificate(pki, "localhost", directory, extra_names=40)
    return dataclasses.replace(pki, server_crt=cert, server_key=key)


def second_server_certificate(
    pki: Pki, name: str, directory: Path, *, extra_names: int = 0
) -> tuple[Path, Path]:
    """(certificate, key) files of another server certificate of the test CA, for `name` (and
    `extra_names` made-up names after it)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            *(x509.DNSName(n) for n in (name, *(f"n{i}.{name}.test" for i in range(extra_names)))),
            x509.IPAddress(ipaddress.ip_address(LOCALHOST)),  # gnutls-cli checks the address
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
