"""Events a `DtlsConnection` reports to its user (small frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from iotdtls.errors import AlertDescription, DtlsError

__all__ = [
    "AlertReceived",
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "HandshakeComplete",
]


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake finished; application data may flow (RFC 5246 §7.4.9)."""

    cipher_suite: int
    psk_identity: bytes
    extended_master_secret: bool


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

    `psk_identity` is the identity the client named, if it got that far (public: it travels
    in clear in the ClientKeyExchange), so a server can log who failed."""

    error: DtlsError | None
    psk_identity: bytes = field(default=b"", compare=False)


Event = HandshakeComplete | DataReceived | AlertReceived | ConnectionClosed
