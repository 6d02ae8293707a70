"""iotdtls public-key handshakes next to Mbed TLS (python-mbedtls) and OpenSSL (pyOpenSSL's
memory BIOs), in one process, over an in-memory transport; and the bytes on the wire per mode.

Run with ``make bench-pubkey`` (or ``.venv/bin/python benchmarks/bench_pubkey.py [--runs N]``).

(a) full TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 handshakes (RFC 7251), client and server, with the
    cookie exchange (RFC 6347 §4.2.1), median and mean over N runs:
    - mutual X.509 (a P-256 CA, a server leaf for "localhost", a client leaf with an EUI-64 CN;
      path validation and name checks on both sides) for iotdtls, Mbed TLS 2.28 and OpenSSL;
    - mutual raw public keys (RFC 7250) for iotdtls (neither Mbed TLS 2.28 nor OpenSSL 3.0 has
      them; compare with their certificate handshakes).
    Target: iotdtls no slower than OpenSSL. OpenSSL is held to the profile's ECDHE group,
    secp256r1 (RFC 7251 §2; left alone it picks X25519); python-mbedtls offers no way to set
    Mbed TLS's groups, which then agree on secp521r1, so Mbed TLS's figure is only indicative.
(b) bytes and datagrams each side puts on the wire for one full handshake (handshake and
    ChangeCipherSpec records, UDP payload) in each mode: PSK, raw public keys, X.509, and X.509
    with cached_info (RFC 7924), next to Mbed TLS and OpenSSL with X.509; and the ECDHE group
    each ServerKeyExchange names (the script stops if iotdtls or OpenSSL used another than
    secp256r1).

When iotdtls misses the target, the script profiles the iotdtls side and prints the hot spots.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_psk import (
    HandshakeWire,
    Mbed,
    Wire,
    describe,
    fmt,
    hot_spots,
    shuttle,
    time_each,
    time_interleaved,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.endpoint import ServerEndpoint
from iotdtls.handshake.reassembly import fragments_of
from iotdtls.messages.constants import HandshakeType
from iotdtls.record import ContentType, split_datagram

OPENSSL_TARGET = 1.0
#: NamedCurve values (RFC 8422 §5.1.1) a ServerKeyExchange may name; the profile's is secp256r1
#: (RFC 7251 §2, RFC 7925 §4.3), and every stack compared here must use it.
GROUP_NAMES = {23: "secp256r1", 24: "secp384r1", 25: "secp521r1", 29: "x25519", 30: "x448"}
PROFILE_GROUP = 23
#: How `bench_wire` treats a stack's group: must be PROFILE_GROUP, or only shown.
CHECKED, REPORTED = "checked", "reported"
IDENTITY = b"Client_identity"
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
EUI64 = "01-23-45-67-89-AB-CD-EF"


# -- test PKI ---------------------------------------------------------------------------------


@dataclass
class Pki:
    """PEM files in a temporary directory, and the same material as DER and keys."""

    directory: Path
    ca_der: bytes
    server: CertifiedKey
    client: CertifiedKey

    def path(self, name: str) -> str:
        return str(self.directory / name)


def make_pki(directory: Path) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "server", "client")}

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn: str, key: str, *, ca: bool = False, san: bool = False,
             eku: x509.ObjectIdentifier | None = None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name("bench CA"))
            .public_key(keys[key].public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca, None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False),
                           critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        return builder.sign(keys["ca"], hashes.SHA256())

    certs = {
        "ca": cert("bench CA", "ca", ca=True),
        "server": cert("localhost", "server", san=True, eku=ExtendedKeyUsageOID.SERVER_AUTH),
        "client": cert(EUI64, "client", eku=ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    for role in certs:
        (directory / f"{role}.crt").write_bytes(certs[role].public_bytes(pem))
        (directory / f"{role}.key").write_bytes(keys[role].private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def certified(role: str) -> CertifiedKey:
        return CertifiedKey((certs[role].public_bytes(der),), PrivateKey(keys[role]))

    return Pki(directory, certs["ca"].public_bytes(der), certified("server"), certified("client"))


# -- iotdtls ----------------------------------------------------------------------------------


def iotdtls_handshake(
    client_config: ClientConfig, server_config: ServerConfig, wire: HandshakeWire | None = None
) -> DtlsConnection:
    """Client and server endpoint (cookie exchange first) in memory, until both are done."""
    client = DtlsConnection(client_config)
    shuttle(client, ServerEndpoint(server_config), wire)
    return client


@dataclass(frozen=True)
class Modes:
    """iotdtls configurations of every mode (each one handshake's worth)."""

    x509: tuple[ClientConfig, ServerConfig]
    x509_cached: tuple[ClientConfig, ServerConfig]
    rpk: tuple[ClientConfig, ServerConfig]
    psk: tuple[ClientConfig, ServerConfig]


def modes(pki: Pki) -> Modes:
    x509_client = ClientConfig(trust_anchors=[pki.ca_der], certificate=pki.client,
                               server_name="localhost")
    x509_server = ServerConfig(certificates=[pki.server], client_trust_anchors=[pki.ca_der])
    cached = ClientConfig(trust_anchors=[pki.ca_der], certificate=pki.client,
                          server_name="localhost", cached_server_chain=pki.server.chain)
    server_key, client_key = pki.server.private_key, pki.client.private_key
    return Modes(
        x509=(x509_client, x509_server),
        x509_cached=(cached, x509_server),
        rpk=(ClientConfig(server_public_keys=[server_key.spki], raw_public_key=client_key),
             ServerConfig(raw_public_key=server_key, client_public_keys=[client_key.spki])),
        psk=(ClientConfig(psk_identity=IDENTITY, psk=KEY), ServerConfig(psk_store={IDENTITY: KEY})),
    )


# -- Mbed TLS ---------------------------------------------------------------------------------


def mbed_with_certificates(pki: Pki) -> Mbed:
    mbed = Mbed()
    import mbedtls.pk
    import mbedtls.tls
    import mbedtls.x509

    def conf(role: str) -> Any:
        chain = ([mbedtls.x509.CRT.from_file(pki.path(f"{role}.crt"))],
                 mbedtls.pk.ECC.from_file(pki.path(f"{role}.key")))
        trust = mbedtls.tls.TrustStore([mbedtls.x509.CRT.from_file(pki.path("ca.crt"))])
        return mbedtls.tls.DTLSConfiguration(
            ciphers=["TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8"], certificate_chain=chain,
            trust_store=trust, validate_certificates=True)

    mbed.client_conf, mbed.server_conf = conf("client"), conf("server")
    mbed.server_hostname = "localhost"
    return mbed


# -- OpenSSL (pyOpenSSL) ----------------------------------------------------------------------


class OpenSSLPair:
    """pyOpenSSL `Connection`s on memory BIOs: DTLS 1.2, ECDHE-ECDSA-AES128-CCM8 on P-256,
    mutual certificates, the server's cookie exchange (SSL_OP_COOKIE_EXCHANGE with a fixed
    cookie: the callback's cost is not what is compared). The client checks the chain; pyOpenSSL
    does not expose the host name check."""

    def __init__(self, pki: Pki) -> None:
        try:
            from OpenSSL import SSL
        except ImportError:
            sys.exit("pyOpenSSL is missing: pip install -e '.[test]' (make does) installs it")
        self.SSL = SSL
        self.client_ctx = self._context(pki, "client")
        self.server_ctx = self._context(pki, "server")
        self.server_ctx.set_options(SSL.OP_COOKIE_EXCHANGE)
        self.server_ctx.set_cookie_generate_callback(lambda conn: b"bench cookie")
        self.server_ctx.set_cookie_verify_callback(lambda conn, cookie: cookie == b"bench cookie")
        version = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        self.version = version.split()[1] if " " in version else version

    def _context(self, pki: Pki, role: str) -> Any:
        SSL = self.SSL
        ctx = SSL.Context(SSL.DTLS_METHOD)
        # A DTLS 1.2 suite (so DTLS 1.2 only); CCM_8 sits below the default security level of
        # recent OpenSSL builds (a 64-bit tag), as in the system OpenSSL 3.0 it does not.
        ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0")
        # The profile's ECDHE group only (RFC 7251 §2): left alone, OpenSSL offers and picks
        # X25519, a cheaper key exchange than the P-256 one iotdtls has to do.
        ctx.set_tmp_ecdh(ec.SECP256R1())
        ctx.use_certificate_file(pki.path(f"{role}.crt"))
        ctx.use_privatekey_file(pki.path(f"{role}.key"))
        ctx.load_verify_locations(pki.path("ca.crt"))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: args[-1])
        return ctx

    @staticmethod
    def _out(conn: Any) -> list[bytes]:
        out = []
        while True:
            try:
                data = conn.bio_read(65536)
            except Exception:
                return out
            if not data:
                return out
            out.append(data)

    def handshake(self, wire: HandshakeWire | None = None) -> None:
        SSL = self.SSL
        client = SSL.Connection(self.client_ctx, None)
        client.set_connect_state()
        server = SSL.Connection(self.server_ctx, None)
        server.set_accept_state()
        done = {"client": False, "server": False}
        for _ in range(30):
            for side, conn, other in (("client", client, server), ("server", server, client)):
                if not done[side]:
                    try:
                        conn.do_handshake()
                        done[side] = True
                    except SSL.WantReadError:
                        pass
                for datagram in self._out(conn):
                    if wire is not None:
                        (wire.client if side == "client" else wire.server).add(datagram)
                    other.bio_write(datagram)
            if done["client"] and done["server"]:
                return
        raise RuntimeError("OpenSSL handshake did not complete in memory")


# -- the report -------------------------------------------------------------------------------


def row(name: str, t: Any) -> None:
    print(f"    {name:40}{fmt(t.median):>12}{fmt(t.mean):>12}")


def bench_handshakes(pki: Pki, m: Modes, runs: int) -> float:
    print(f"\n(a) full ECDHE_ECDSA handshakes with cookie exchange, both sides, in memory "
          f"({runs} runs)")
    mbed = mbed_with_certificates(pki)
    openssl = OpenSSLPair(pki)
    print("    (iotdtls and OpenSSL taken in turns, one handshake of each per round; ratios to")
    print("    OpenSSL are medians of the rounds' ratios; Mbed TLS, on secp521r1, timed apart)")
    ours_x509, ours_rpk, ours_cached, theirs_openssl = time_interleaved(
        [
            lambda: iotdtls_handshake(*m.x509),
            lambda: iotdtls_handshake(*m.rpk),
            lambda: iotdtls_handshake(*m.x509_cached),
            openssl.handshake,
        ],
        runs,
    )
    theirs_mbed = time_each(mbed.handshake, max(10, runs // 10))
    print(f"    {'':40}{'median':>12}{'mean':>12}")
    row("iotdtls, mutual X.509", ours_x509)
    row("iotdtls, mutual X.509, cached_info", ours_cached)
    row("iotdtls, mutual raw public keys", ours_rpk)
    row(f"OpenSSL {openssl.version} (pyOpenSSL), mutual X.509", theirs_openssl)
    row("Mbed TLS 2.28 (python-mbedtls), mutual X.509", theirs_mbed)
    ratio = ours_x509.ratio_to(theirs_openssl)
    rpk_ratio = ours_rpk.ratio_to(theirs_openssl)
    mbed_ratio = ours_x509.median / theirs_mbed.median
    verdict = "met" if ratio <= OPENSSL_TARGET else "MISSED"
    print(f"    ratio iotdtls X.509 / OpenSSL X.509:   {ratio:5.2f}x   target <= "
          f"{OPENSSL_TARGET:g}x: {verdict}")
    print(f"    ratio iotdtls raw keys / OpenSSL X.509: {rpk_ratio:5.2f}x")
    print(f"    ratio iotdtls X.509 / Mbed TLS X.509:   {mbed_ratio:5.2f}x")
    return ratio


def bench_wire(pki: Pki, m: Modes) -> None:
    print("\n(b) on the wire for one full handshake with cookie exchange "
          "(UDP payload: handshake and ChangeCipherSpec records)")
    print(f"    {'':36}{'client':40}server")
    # Per row, what its ECDHE group must be: None for PSK (no ServerKeyExchange group), CHECKED
    # for iotdtls and OpenSSL (like for like), REPORTED for Mbed TLS (python-mbedtls cannot
    # restrict its groups, whose default list starts with secp521r1: only indicative).
    rows: list[tuple[str, Callable[[HandshakeWire], object], str | None]] = [
        ("iotdtls PSK", lambda w: iotdtls_handshake(*m.psk, w), None),
        ("iotdtls raw public keys", lambda w: iotdtls_handshake(*m.rpk, w), CHECKED),
        ("iotdtls X.509", lambda w: iotdtls_handshake(*m.x509, w), CHECKED),
        ("iotdtls X.509 with cached_info", lambda w: iotdtls_handshake(*m.x509_cached, w),
         CHECKED),
        ("Mbed TLS 2.28 X.509", mbed_with_certificates(pki).handshake, REPORTED),
        ("OpenSSL X.509", OpenSSLPair(pki).handshake, CHECKED),
    ]
    groups: list[str] = []
    for name, run, group_rule in rows:
        wire = HandshakeWire()
        run(wire)
        print(f"    {name:36}{describe(wire.client):40}{describe(wire.server)}")
        if group_rule is None:
            continue
        group = ecdhe_group(wire.server)
        groups.append(f"{name} {group_name(group)}")
        if group_rule == CHECKED and group != PROFILE_GROUP:
            sys.exit(f"{name} did its ECDHE over {group_name(group)}, not "
                     "secp256r1: the handshakes compared above are not the profile's")
    print(f"    ECDHE group named by each ServerKeyExchange: {', '.join(groups)}")


def group_name(group: int | None) -> str:
    if group is None:
        return "no ServerKeyExchange found"
    return GROUP_NAMES.get(group, f"group {group}")


def ecdhe_group(server: Wire) -> int | None:
    """The NamedCurve of the server's ServerKeyExchange (RFC 8422 §5.4: ECParameters start
    with curve_type named_curve (3) and the curve's 16-bit value), read from the first
    fragment of that message in the plaintext records of epoch 0 (RFC 6347 §4.2.2)."""
    for datagram in server.payloads:
        records, _ = split_datagram(datagram)
        for header, payload in records:
            if header.content_type != ContentType.handshake or header.epoch != 0:
                continue
            for fragment in fragments_of(payload, 0):
                if (fragment.msg_type == HandshakeType.server_key_exchange
                        and fragment.fragment_offset == 0 and fragment.body[:1] == b"\x03"):
                    return int.from_bytes(fragment.body[1:3], "big")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="handshakes per stack")
    parser.add_argument("--profile", action="store_true", help="profile even if targets are met")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(Path(directory))
        m = modes(pki)
        print(f"iotdtls public-key handshakes, Python {sys.version.split()[0]}, one process, "
              "in-memory transport")
        ratio = bench_handshakes(pki, m, args.runs)
        bench_wire(pki, m)
        if args.profile or ratio > OPENSSL_TARGET:
            hot_spots(lambda: iotdtls_handshake(*m.x509), args.runs,
                      "the iotdtls X.509 handshake")
    return 0


if __name__ == "__main__":
    sys.exit(main())
