"""The ICMP port-unreachable reports of a client's handshake, shared by the adapters (`aio`,
`sync`): they end the handshake with `PortUnreachable` instead of letting it retransmit until
its deadline (RFC 8085's ICMP guidelines: a UDP application acts on the ICMP errors its socket
reports). The sans-I/O core never sees them: they come from the socket (it is told their
number, for a `HandshakeTimeout` that comes before the second). Also what the
adapters add when they log a socket error (`LOST`)."""

from __future__ import annotations

from typing import Any

from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import PortUnreachable

__all__ = ["LOST", "REFUSALS_TO_GIVE_UP", "RefusedHandshake"]

#: What a socket error the adapters log means for the datagram (RFC 6347 §4.2.4).
LOST = "a datagram was lost: handshake flights are retransmitted, application data is not"

#: Reports, with no datagram from the server, after which a handshake gives up: the first
#: flight's and its first retransmission's (one report alone may be stale: the port of a server
#: that was restarting).
REFUSALS_TO_GIVE_UP = 2


class RefusedHandshake:
    """The reports one client has had in its current handshake (`refusals`, reset for each new
    handshake) and whether any datagram ever came from the server (`heard`: reports end no
    handshake after that; the core counts them for its `HandshakeTimeout`'s text)."""

    __slots__ = ("heard", "refusals")

    def __init__(self) -> None:
        self.heard = False
        self.refusals = 0

    def refused(self, connection: DtlsConnection, peer: tuple[Any, ...]) -> bool:
        """Count one report for `connection` (sending to `peer`); at the
        `REFUSALS_TO_GIVE_UP`-th, end its handshake with `PortUnreachable` and return True.
        Before, the core is told (`port_unreachable_reported`), for the `HandshakeTimeout` of
        a deadline that comes first (at or below the first retransmission). Once the server
        has answered, a report ends nothing (ICMP is soft, RFC 8085 §5.2; an off-path forger
        could end a handshake with one, and one may be a stale report of a restarting server):
        the core counts it (`port_unreachable_after_answer`), and a `HandshakeTimeout` says the
        server may have gone away."""
        if connection.state is not ConnectionState.HANDSHAKING:
            return False
        if self.heard:
            connection.port_unreachable_after_answer()
            return False
        self.refusals += 1
        if self.refusals < REFUSALS_TO_GIVE_UP:
            # Fewer: a deadline that comes first names them (`HandshakeTimeout`).
            connection.port_unreachable_reported(self.refusals)
            return False
        connection.terminate(PortUnreachable(peer, self.refusals))
        return True
