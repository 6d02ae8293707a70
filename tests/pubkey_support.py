"""Helpers for the public-key mode tests: keys made once per session, in-memory links in raw
public key mode, and rewriting of plaintext handshake messages in flight (a man in the middle
of an epoch-0 flight)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotdtls._buffer import Reader
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.errors import AlertReceived, AlertSent
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.handshake.alerts import X509_MODE_ALERTS
from iotdtls.messages import HandshakeHeader
from iotdtls.record import ContentType, RecordHeader, split_datagram
from tests import pki
from tests.memory_link import Direction, Fate, FateFn, MemoryLink, deliver_all, events_of

__all__ = [
    "X509Pki",
    "client_key",
    "failure",
    "received_alert",
    "rewrite",
    "rpk_link",
    "server_key",
    "stranger_key",
    "x509_configs",
    "x509_link",
    "x509_pki",
]


@cache
def server_key() -> PrivateKey:
    return PrivateKey.generate()


@cache
def client_key() -> PrivateKey:
    return PrivateKey.generate()


@cache
def stranger_key() -> PrivateKey:
    """A key nobody provisioned."""
    return PrivateKey.generate()


def rpk_link(
    fate: FateFn = deliver_all,
    *,
    cookie: bool = True,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> MemoryLink:
    """Mutual raw-public-key authentication: each side provisioned with the other's key."""
    ckw: dict[str, Any] = {
        "server_public_keys": [server_key().spki],
        "raw_public_key": client_key(),
        **(client or {}),
    }
    skw: dict[str, Any] = {
        "raw_public_key": server_key(),
        "client_public_keys": [client_key().spki_sha256],
        "cookie_exchange": cookie,
        **(server or {}),
    }
    return MemoryLink(ClientConfig(**ckw), ServerConfig(**skw), fate=fate)


@dataclass(frozen=True)
class X509Pki:
    """A root, an intermediate CA and the two leaves under it (server: SAN localhost; client:
    CN an EUI-64), all valid at `pki.NOW`."""

    root: pki.Issued
    ca: pki.Issued
    server: pki.Issued
    client: pki.Issued

    def certified(self, leaf: pki.Issued) -> CertifiedKey:
        assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
        return CertifiedKey(pki.chain_der(leaf, self.ca), PrivateKey(leaf.key))


@cache
def x509_pki() -> X509Pki:
    anchor = pki.root()
    ca = pki.intermediate(anchor, "iotdtls test issuing CA")
    return X509Pki(anchor, ca, pki.server_leaf(ca), pki.client_leaf(ca))


def x509_configs(
    *, cookie: bool = True, client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> tuple[ClientConfig, ServerConfig]:
    """Mutual certificates: a chain (leaf and issuing CA, root left out, CRT-1) each way, the
    client checking the name "localhost", both clocks at `pki.NOW`; `client` and `server`
    override settings."""
    p = x509_pki()
    clock = pki.NOW.timestamp
    ckw: dict[str, Any] = {
        "trust_anchors": [p.root.der],
        "certificate": p.certified(p.client),
        "server_name": "localhost",
        "wall_clock": clock,
        **(client or {}),
    }
    skw: dict[str, Any] = {
        "certificates": [p.certified(p.server)],
        "client_trust_anchors": [p.root.der],
        "wall_clock": clock,
        "cookie_exchange": cookie,
        **(server or {}),
    }
    return ClientConfig(**ckw), ServerConfig(**skw)


def x509_link(
    fate: FateFn = deliver_all,
    *,
    cookie: bool = True,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> MemoryLink:
    """`x509_configs` in memory."""
    client_config, server_config = x509_configs(cookie=cookie, client=client, server=server)
    return MemoryLink(client_config, server_config, fate=fate, allowed_alerts=X509_MODE_ALERTS)


def failure(link: MemoryLink, sender: Direction) -> AlertSent:
    """The AlertSent that ended `sender`'s side; the other side never completed nor got
    application data."""
    events = link.client_events if sender == "client" else link.server_events
    (closed,) = [e for e in events if isinstance(e, ConnectionClosed)]
    assert isinstance(closed.error, AlertSent), closed
    other: Direction = "server" if sender == "client" else "client"
    assert events_of(link, other, DataReceived) == []
    assert events_of(link, other, HandshakeComplete) == []
    return closed.error


def received_alert(link: MemoryLink, side: Direction) -> AlertReceived:
    """The AlertReceived that ended `side`'s association."""
    (closed,) = events_of(link, side, ConnectionClosed)
    assert isinstance(closed.error, AlertReceived), closed
    return closed.error


def rewrite(
    sender: Direction, msg_type: int, change: Callable[[bytes], bytes], *, times: int = 1
) -> FateFn:
    """A fate that rewrites the body of `sender`'s plaintext handshake message `msg_type` (whole,
    unfragmented messages in epoch 0), fixing the lengths; every retransmission too."""
    done = [0]

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction != sender or done[0] >= times:
            return "deliver"
        out = bytearray()
        changed = False
        recs, _ = split_datagram(data)
        for header, fragment in recs:
            if header.content_type == ContentType.handshake and header.epoch == 0:
                hs = HandshakeHeader.decode(Reader(fragment))
                if hs.msg_type == msg_type and hs.fragment_length == hs.length:
                    body = change(fragment[12:])
                    fragment = (
                        HandshakeHeader(hs.msg_type, len(body), hs.message_seq, 0, len(body))
                        .encode()
                        + body
                    )
                    changed = True
            out += RecordHeader(
                header.content_type, header.version, header.epoch, header.sequence_number,
                len(fragment),
            ).encode()
            out += fragment
        if changed:
            done[0] += 1
            return bytes(out)
        return "deliver"

    return fate


#: AlgorithmIdentifier of a P-256 key: id-ecPublicKey, secp256r1 (RFC 5480 §2.1.1).
P256_ALGORITHM = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")


def point_spki(point: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a P-256 point in the encoding given (SEC 1 §2.3.3:
    0x04 uncompressed, 0x02/0x03 compressed, 0x06/0x07 hybrid)."""
    body = P256_ALGORITHM + b"\x03" + bytes([len(point) + 1, 0]) + point
    return b"\x30" + bytes([len(body)]) + body


def compressed_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    """What `openssl ec -pubout -conv_form compressed` writes for `key` (as DER)."""
    return point_spki(key.public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.CompressedPoint))


def der_to_pem(der: bytes) -> bytes:
    text = base64.encodebytes(der).decode().replace("\n", "")
    return f"-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n".encode()
