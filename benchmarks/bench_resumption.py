"""Session resumption (RFC 5246 §7.3, RES-1): the abbreviated handshake next to the full one.

Run with ``make bench-resumption`` (or ``.venv/bin/python benchmarks/bench_resumption.py
[--runs N]``). Client and server run in one process over an in-memory transport, the cookie
exchange included every time (RFC 6347 §4.2.1, HS-1), for

* TLS_PSK_WITH_AES_128_CCM_8,
* TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 with raw public keys, both sides authenticated (RFC 7250),
* TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 with certificates, both sides authenticated (a leaf under
  an intermediate CA each way; a resumption re-validates the client's chain, since the server
  checks that today's configuration still accepts the session's peer),

it prints the median time of a full and of a resumed handshake, and the bytes and datagrams each
side puts on the wire (UDP payloads of handshake and ChangeCipherSpec records).

Mbed TLS 2.28 (python-mbedtls) is timed for the full handshakes only: python-mbedtls 2.10 has
no session API (a client cannot be given a session to offer, and its server keeps no session
cache: offered a session, it answers with a full handshake and a new session_id, which
tests/test_interop_resumption.py checks), so its resumption cannot be driven from Python.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_psk import (
    IDENTITY,
    KEY,
    HandshakeWire,
    Mbed,
    describe,
    fmt,
    shuttle,
    time_each,
)

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.endpoint import ServerEndpoint
from iotdtls.sessions import SessionState
from tests import pki

MBEDTLS_ECDHE = "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8"


# -- iotdtls ----------------------------------------------------------------------------------


class Pair:
    """A client configuration and a server endpoint that outlives handshakes (its session
    cache with it)."""

    def __init__(self, client: ClientConfig, server: ServerConfig) -> None:
        self.client = client
        self.endpoint = ServerEndpoint(server)

    def handshake(
        self, session: SessionState | None = None, wire: HandshakeWire | None = None
    ) -> DtlsConnection:
        client = DtlsConnection(self.client, session=session)
        shuttle(client, self.endpoint, wire)
        return client

    def resumable(self) -> SessionState:
        session = self.handshake().session
        assert session is not None
        return session

    def resumed(self, session: SessionState, wire: HandshakeWire | None = None) -> None:
        assert self.handshake(session, wire).resumed


@dataclass(frozen=True)
class Credentials:
    """Keys and certificates valid now (Mbed TLS checks validity against the clock)."""

    root: pki.Issued
    server: pki.Issued
    server_chain: tuple[bytes, ...]
    client: pki.Issued
    client_chain: tuple[bytes, ...]

    @property
    def server_key(self) -> PrivateKey:
        return _own(self.server)

    @property
    def client_key(self) -> PrivateKey:
        return _own(self.client)


def _own(leaf: pki.Issued) -> PrivateKey:
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    return PrivateKey(leaf.key)


def _pkcs8(leaf: pki.Issued) -> bytes:
    return leaf.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def credentials() -> Credentials:
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_before": now - datetime.timedelta(days=1),
             "not_after": now + datetime.timedelta(days=30)}
    root = pki.root(**valid)
    ca = pki.intermediate(root, "bench issuing CA", **valid)
    server = pki.server_leaf(ca, **valid)
    client = pki.client_leaf(ca, **valid)
    return Credentials(root, server, pki.chain_der(server, ca), client, pki.chain_der(client, ca))


def pairs(c: Credentials) -> dict[str, Pair]:
    return {
        "PSK": Pair(
            ClientConfig(psk_identity=IDENTITY, psk=KEY), ServerConfig(psk_store={IDENTITY: KEY})
        ),
        "ECDHE-ECDSA, raw public keys": Pair(
            ClientConfig(server_public_keys=[c.server_key.spki], raw_public_key=c.client_key),
            ServerConfig(raw_public_key=c.server_key, client_public_keys=[c.client_key.spki]),
        ),
        "ECDHE-ECDSA, certificates": Pair(
            ClientConfig(
                trust_anchors=[c.root.der],
                certificate=CertifiedKey(c.client_chain, c.client_key),
                server_name="localhost",
            ),
            ServerConfig(
                certificates=[CertifiedKey(c.server_chain, c.server_key)],
                client_trust_anchors=[c.root.der],
            ),
        ),
    }


# -- Mbed TLS ---------------------------------------------------------------------------------


class MbedCertificates(Mbed):
    """`bench_psk.Mbed` with certificates both ways instead of the PSK."""

    def __init__(self, c: Credentials) -> None:
        super().__init__()
        from mbedtls import pk, x509

        tls = self.tls

        def chain(ders: tuple[bytes, ...], leaf: pki.Issued) -> Any:
            return [x509.CRT.from_DER(d) for d in ders], pk.ECC.from_DER(_pkcs8(leaf))

        trust = tls.TrustStore([x509.CRT.from_DER(c.root.der)])
        common = {"ciphers": [MBEDTLS_ECDHE], "trust_store": trust}
        self.client_conf = tls.DTLSConfiguration(
            certificate_chain=chain(c.client_chain, c.client), **common
        )
        self.server_conf = tls.DTLSConfiguration(
            certificate_chain=chain(c.server_chain, c.server), **common
        )


# -- the report -------------------------------------------------------------------------------


def report_row(name: str, time: float | None, wire: HandshakeWire | None) -> None:
    cells = f"{fmt(time) if time is not None else 'n/a':>12}"
    if wire is not None:
        cells += f"   client {describe(wire.client)}   server {describe(wire.server)}"
    print(f"    {name:34}{cells}")


def bench(name: str, pair: Pair, mbed: Mbed | None, runs: int) -> None:
    print(f"\n{name}")
    full_wire, resumed_wire = HandshakeWire(), HandshakeWire()
    pair.handshake(wire=full_wire)
    session = pair.resumable()
    pair.resumed(session, resumed_wire)
    full = time_each(pair.handshake, runs)
    resumed = time_each(lambda: pair.resumed(session), runs)
    report_row("iotdtls full handshake", full.median, full_wire)
    report_row("iotdtls resumed (abbreviated)", resumed.median, resumed_wire)
    print(f"    {'resumed / full':34}{resumed.median / full.median:>11.2f}x")
    if mbed is not None:
        mbed_wire = HandshakeWire()
        mbed.handshake(mbed_wire)
        theirs = time_each(mbed.handshake, runs)
        report_row("Mbed TLS 2.28 full handshake", theirs.median, mbed_wire)
        report_row("Mbed TLS 2.28 resumed", None, None)
        print(f"    {'iotdtls resumed / Mbed TLS full':34}"
              f"{resumed.median / theirs.median:>11.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="handshakes per row")
    args = parser.parse_args(argv)
    creds = credentials()
    print(f"Full and resumed handshakes, median of {args.runs}, cookie exchange included, "
          f"Python {sys.version.split()[0]}, one process, in-memory transport")
    print("(Mbed TLS resumed: n/a, python-mbedtls exposes no session API; see the docstring)")
    mbeds: dict[str, Callable[[], Mbed]] = {
        "PSK": Mbed,
        "ECDHE-ECDSA, certificates": lambda: MbedCertificates(creds),
    }
    for name, pair in pairs(creds).items():
        make = mbeds.get(name)
        bench(name, pair, make() if make is not None else None, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
