"""Events a `DtlsConnection` reports to its user (small frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from iotdtls.errors import AlertDescription, DtlsError
from iotdtls.identity import PeerIdentity, PskIdentity

__all__ = [
    "AlertReceived",
    "CertificateUrlsReceived",
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "HandshakeComplete",
    "HeartbeatAnswered",
]


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake finished; application data may flow (RFC 5246 §7.4.9).

    `peer` is who the handshake authenticated: the PSK identity, the peer's raw public key or
    its certificate identity (`iotdtls.identity`)."""

    cipher_suite: int
    peer: PeerIdentity
    extended_master_secret: bool
    #: The abbreviated handshake of a resumed session (RFC 5246 §7.3, RES-1); `peer` is then
    #: who the full handshake of that session authenticated.
    resumed: bool = False
    #: The server_name the client sent (RFC 6066 §3, EXT-2), "" for none.
    server_name: str = ""
    #: The negotiated max_fragment_length in bytes (RFC 6066 §4, EXT-1), None for none.
    max_fragment_length: int | None = None

    @property
    def psk_identity(self) -> bytes:
        """The PSK identity (empty outside PSK mode)."""
        return _psk_bytes(self.peer)


@dataclass(frozen=True, slots=True)
class DataReceived:
    """One application-data record, as one datagram of the application (RFC 6347 §4.1)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AlertReceived:
    """A warning alert from the peer; fatal alerts arrive as `ConnectionClosed` instead."""

    description: AlertDescription | int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The association ended: `error` is None after a clean close_notify (RFC 5246 §7.2.1).

    `peer` is the identity the peer claimed, if it got that far, so a server can log who
    failed: a PSK identity (public: it travels in clear in the ClientKeyExchange) or, once
    authenticated, a raw key or certificate identity."""

    error: DtlsError | None
    peer: PeerIdentity | None = field(default=None, compare=False)

    @property
    def psk_identity(self) -> bytes:
        """The PSK identity the client named (empty outside PSK mode or before it)."""
        return _psk_bytes(self.peer)


def _psk_bytes(peer: PeerIdentity | None) -> bytes:
    return peer.identity if isinstance(peer, PskIdentity) else b""


@dataclass(frozen=True, slots=True)
class CertificateUrlsReceived:
    """A client sent URLs of its certificates instead of its chain (RFC 6066 §5, CRT-7): fetch
    them (`iotdtls.certurl.fetch_client_chain` checks the SHA-1 of each) and hand the chain, or
    the `ProtocolError` of the fetch, to `DtlsConnection.supply_certificate_chain`. The
    handshake waits until then, within its deadline."""

    urls_and_hashes: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class HeartbeatAnswered:
    """The peer answered our heartbeat request (RFC 6520 §3) `elapsed` seconds after we first
    sent it."""

    elapsed: float


Event = (
    HandshakeComplete
    | DataReceived
    | AlertReceived
    | ConnectionClosed
    | CertificateUrlsReceived
    | HeartbeatAnswered
)
