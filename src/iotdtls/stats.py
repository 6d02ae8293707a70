"""Counters of a running server: handshakes, datagrams, and what the stateless gate did.

`ServerStats` is what `iotdtls.aio.DtlsServer.stats` reports for one process and what
`iotdtls.workers` sums over its worker processes (it pickles, and `+` adds two). Counters only:
no peer address, identity or key material ever lands here (SEC-1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["ServerStats"]


@dataclass
class ServerStats:
    """What one server process (or the sum of several) has seen since it started."""

    #: Handshakes that ended in an established association (RFC 5246 §7.4.9).
    handshakes_completed: int = 0
    #: Of those completed, the abbreviated handshakes that resumed a session (RFC 5246 §7.3,
    #: RES-1): with `handshakes_completed`, the session cache's hit rate.
    handshakes_resumed: int = 0
    #: Associations that ended with an error before their handshake completed (a bad key, a
    #: timeout, an eviction of a half-open handshake, ...).
    handshakes_failed: int = 0
    #: Handshakes in progress when these counters were read (the endpoint's half-open ones,
    #: `iotdtls.endpoint.ServerEndpoint.handshakes_in_progress`); 0 once the server has stopped.
    handshakes_in_progress: int = 0
    #: Handshakes still in progress when the server closed them as it stopped: neither completed
    #: nor failed. At any time, the associations the gate let in (`cookie_accepted`,
    #: `hello_accepted_without_cookie`) are completed + failed + in progress + unfinished.
    handshakes_unfinished: int = 0
    #: Established associations that ended with an error (alert, eviction, replacement).
    associations_failed: int = 0
    #: Established associations let go by `ServerConfig.idle_timeout` (with close_notify).
    idle_expired: int = 0
    #: Calls to an application's session store (`iotdtls.sessions.SessionStore`) that raised,
    #: or `get`s returning neither a SessionState nor None: each logged and taken as a miss (a
    #: full handshake, a session not kept or not forgotten).
    session_store_errors: int = 0
    #: Client certificate chains found among those the trust store remembers as validated
    #: (`ServerConfig.validated_chains`: no path validation), and those validated in full (not
    #: remembered, or evicted: raise `validated_chains` when these grow with the handshakes).
    #: Counted by the trust store of the server's configuration (not those of the
    #: configurations `server_name_lookup` picks): servers sharing one configuration in a
    #: process share these counts.
    validated_chain_hits: int = 0
    validated_chain_misses: int = 0
    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    #: `iotdtls.endpoint.GateOutcome` names and how often the stateless gate reached each.
    gate: Counter[str] = field(default_factory=Counter)
    #: Records the associations silently discarded (RFC 6347 §4.1.2.7), by the name of their
    #: reason (`iotdtls.record.DiscardReason`, `iotdtls.connection.DropReason`,
    #: `iotdtls.heartbeat.HeartbeatDrop`): those that ended and those still live.
    discards: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: ServerStats) -> ServerStats:
        total = ServerStats()
        for f in fields(self):
            setattr(total, f.name, getattr(self, f.name) + getattr(other, f.name))
        return total

    def describe(self) -> str:
        """One log line: every counter, gate outcomes and discard reasons in lower case (the
        README explains each name)."""
        return (
            f"handshakes {self.handshakes_completed} completed ({self.handshakes_resumed} "
            f"resumed), {self.handshakes_failed} failed, "
            f"{self.handshakes_in_progress} in progress, {self.handshakes_unfinished} unfinished; "
            f"associations failed {self.associations_failed}, idle expired {self.idle_expired}; "
            f"session store errors {self.session_store_errors}; "
            f"validated-chain cache hits {self.validated_chain_hits}, "
            f"misses {self.validated_chain_misses}; "
            f"datagrams {self.datagrams_received} in ({self.bytes_received} B), "
            f"{self.datagrams_sent} out ({self.bytes_sent} B); gate: {_named(self.gate)}; "
            f"dropped: {_named(self.discards)}"
        )


def _named(counts: Counter[str]) -> str:
    """`counts` as "name 3, other 1" (lower case, by name), or "nothing"."""
    named = ", ".join(f"{name.lower()} {count}" for name, count in sorted(counts.items()))
    return named or "nothing"
