"""What a load run measured (`LoadResult`) and how it is reported (text and JSON)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["LoadProgress", "LoadResult", "percentile"]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class LoadProgress:
    """A snapshot while a run goes on (sent by generator processes to the parent)."""

    completed: int
    failed: int
    in_flight: int


@dataclass
class LoadResult:
    """Counters and latencies of a run (or of one generator process of it); `+` merges."""

    #: Seconds from the first handshake started to the last association ended.
    elapsed: float = 0.0
    #: The measuring window: the run's duration (time mode) or `elapsed` (count mode).
    window: float = 0.0
    started: int = 0
    completed: int = 0
    #: Handshakes completed inside the window (the rate counts these).
    completed_in_window: int = 0
    #: Failed handshakes by cause ("handshake timeout", "received alert decrypt_error", ...).
    failures: Counter[str] = field(default_factory=Counter)
    #: Associations that failed after their handshake completed (the server closed or ended
    #: them during the echoes), by cause: their handshakes count as completed.
    association_failures: Counter[str] = field(default_factory=Counter)
    #: Handshakes still in progress when the run was stopped (Ctrl-C): neither counted as
    #: completed nor as failed.
    unfinished: int = 0
    #: Full handshake latencies in seconds: first ClientHello sent to the server's Finished
    #: checked.
    latencies: list[float] = field(default_factory=list)
    #: Associations that offered the session of their lane's previous one (`--resume`) ...
    sessions_offered: int = 0
    #: ... and the latencies of the abbreviated handshakes that resumed one (RFC 5246 §7.3).
    resumed_latencies: list[float] = field(default_factory=list)
    #: The run offered sessions (`--resume`): the report then always says what resumed.
    resume: bool = False
    #: Full handshakes of such a run that left their lane no session to offer: the server's
    #: ServerHello had no session_id (a server that keeps no sessions) ...
    no_session_id: int = 0
    #: ... or the handshake had no extended master secret (RFC 7627 §5.3: never resumed; only
    #: with `require_extended_master_secret=False`).
    no_extended_master_secret: int = 0
    messages_sent: int = 0
    messages_echoed: int = 0
    #: Messages whose echo did not come back within the echo timeout, nor anything else.
    messages_lost: int = 0
    #: Messages whose echo did not come back within the echo timeout though other data did
    #: (a server answering other bytes; late echoes of earlier messages are not counted).
    messages_mismatched: int = 0
    #: Messages still waiting for their echo when the run was stopped (Ctrl-C): neither
    #: echoed, lost nor mismatched (sent = echoed + lost + mismatched + unanswered).
    messages_unanswered: int = 0
    echo_latencies: list[float] = field(default_factory=list)
    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    #: ICMP errors reported on the clients' sockets (e.g. port unreachable: no server, or a
    #: server busy with another peer on a connected socket); the handshakes retransmit, and
    #: give up at the second port unreachable ("port unreachable") if nothing came back.
    icmp_errors: int = 0
    processes: int = 1
    loop: str = ""
    #: The server's address the run used ("[::1]:5684"): of a name with several, the first
    #: that answered (`pick_target`).
    address: str = ""

    def __add__(self, other: LoadResult) -> LoadResult:
        """The figures of two generator processes as one run: the longer run's times, the
        first loop name, either's flag; every count, cause counter and latency list added
        together."""
        merged = LoadResult()
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, bool):
                value = mine or theirs
            elif isinstance(mine, float):
                value = max(mine, theirs)
            elif isinstance(mine, str):
                value = mine or theirs
            else:
                value = mine + theirs
            setattr(merged, f.name, value)
        return merged

    @property
    def resumed(self) -> int:
        """Handshakes that resumed a session (abbreviated)."""
        return len(self.resumed_latencies)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        """Handshakes per second over the window."""
        return self.completed_in_window / self.window if self.window > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Every figure as plain JSON-ready values (milliseconds for latencies)."""
        hs = sorted(self.latencies)
        echo = sorted(self.echo_latencies)
        resumed = sorted(self.resumed_latencies)
        return {
            "elapsed_s": round(self.elapsed, 3),
            "window_s": _window_seconds(self.window),
            "address": self.address,
            "processes": self.processes,
            "loop": self.loop,
            "handshakes": {
                "started": self.started,
                "completed": self.completed,
                "completed_in_window": self.completed_in_window,
                "failed": self.failed,
                "unfinished": self.unfinished,
                "per_second": round(self.rate, 1),
                "sessions_offered": self.sessions_offered,
                "resumed": self.resumed,
                "no_session_id": self.no_session_id,
                "no_extended_master_secret": self.no_extended_master_secret,
            },
            "latency_ms": _latency_ms(hs),
            "resumed_latency_ms": _latency_ms(resumed),
            "failures": dict(sorted(self.failures.items())),
            "association_failures": dict(sorted(self.association_failures.items())),
            "messages": {
                "sent": self.messages_sent,
                "echoed": self.messages_echoed,
                "lost": self.messages_lost,
                "mismatched": self.messages_mismatched,
                "unanswered": self.messages_unanswered,
                "per_second": round(self.messages_echoed / self.elapsed, 1) if self.elapsed else 0,
                "rtt_ms": _latency_ms(echo),
            },
            "datagrams": {
                "sent": self.datagrams_sent,
                "received": self.datagrams_received,
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
            },
            "icmp_errors": self.icmp_errors,
        }

    def report(self, target: str, concurrency: int) -> str:
        """The final report, a few lines of text; `concurrency` is the associations that
        were in flight at most (`engine.lanes` of the spec: fewer handshakes than the
        concurrency asked for leave fewer)."""
        s = self.summary()
        hs, lat = s["handshakes"], s["latency_ms"]
        used = f" ({self.address})" if self.address not in ("", target) else ""
        lines = [
            f"iotdtls perf {target}{used}: {self.elapsed:.2f} s, concurrency {concurrency}, "
            f"{self.processes} process{'es' if self.processes > 1 else ''} ({self.loop})",
            f"handshakes: {hs['completed']} completed, {hs['failed']} failed"
            + (f", {hs['unfinished']} unfinished" if hs["unfinished"] else "")
            + f"; {hs['per_second']:.1f}/s{self._rate_window()}",
            f"latency ms: {_spread(lat)}"
            + (" (full handshakes)" if self.resume or self.sessions_offered else ""),
        ]
        if self.resume or self.sessions_offered:
            lines.append(self._resumption_line(s["resumed_latency_ms"]))
        lines.append(
            "failures: "
            + (_by_cause(s["failures"]) or "none")
            + (
                f"; after the handshake: {_by_cause(s['association_failures'])}"
                if self.association_failures
                else ""
            )
        )
        msg = s["messages"]
        if msg["sent"]:
            lines.append(
                f"messages: {msg['sent']} sent, {msg['echoed']} echoed, {msg['lost']} lost"
                + (f", {msg['mismatched']} mismatched" if msg["mismatched"] else "")
                + (f", {msg['unanswered']} unanswered at stop" if msg["unanswered"] else "")
                + f"; {msg['per_second']:.1f}/s; rtt ms {_spread(msg['rtt_ms'], ('median', 'p99'))}"
            )
        lines.append(
            f"datagrams: {self.datagrams_sent} sent ({self.bytes_sent} B), "
            f"{self.datagrams_received} received ({self.bytes_received} B)"
            + (f"; ICMP errors {self.icmp_errors}" if self.icmp_errors else "")
        )
        return "\n".join(lines)

    def _rate_window(self) -> str:
        """What the rate counts, when it is not every handshake over the whole run: a time run
        lasts until its last associations end, after its window (the duration), and its rate
        counts the handshakes completed within the window only. " within the 2 s window, 3000
        completed after it": without it "3002 completed; 1.0/s" (probe CE: 3000 handshakes
        started at once, completed after the window) and "8 completed; 0.0/s" read as wrong."""
        if not self.window < self.elapsed:  # a count run, or a time run stopped in its window
            return ""
        late = self.completed - self.completed_in_window
        after = f", {late} completed after it" if late else ""
        return f" within the {_window_seconds(self.window):g} s window{after}"

    def _resumption_line(self, latency_ms: dict[str, float | None]) -> str:
        """How many sessions offered were resumed (RFC 5246 §7.3), or why none was offered."""
        if self.sessions_offered:
            return (
                f"resumed: {self.resumed} of {self.sessions_offered} sessions offered; "
                f"latency ms {_spread(latency_ms)}"
            )
        if self.no_session_id:
            why = "the server offered no session to resume: no session_id in its ServerHello"
        elif self.no_extended_master_secret:
            why = (
                "no session to resume: the handshakes had no extended master secret, RFC 7627, "
                "and such a session is never resumed"
            )
        else:
            why = "no session offered: no lane completed a handshake before its next"
        return f"resumed: 0 ({why})"


def _window_seconds(window: float) -> float:
    """The window to show: to the millisecond, or to 3 significant digits when it is shorter
    than half of one (`perf -d 0.0004`), which rounding to the millisecond showed as 0 s."""
    return round(window, 3) or float(f"{window:.3g}")


def _spread(
    latency_ms: dict[str, float | None], names: tuple[str, ...] = ("median", "p99", "max")
) -> str:
    """"median 1.00, p99 2.00, max 3.00" (the figures `names`), or "none" when nothing was
    measured: never zeros that read like a measurement."""
    if latency_ms["median"] is None:
        return "none"
    return ", ".join(f"{name} {latency_ms[name]:.2f}" for name in names)


def _by_cause(counts: dict[str, int]) -> str:
    return ", ".join(f"{cause} {n}" for cause, n in counts.items())


def _latency_ms(sorted_seconds: list[float]) -> dict[str, float | None]:
    """Median, p99 and maximum in milliseconds; each None (JSON null) when there is none."""
    if not sorted_seconds:
        return {"median": None, "p99": None, "max": None}
    return {
        "median": round(percentile(sorted_seconds, 0.5) * 1000, 3),
        "p99": round(percentile(sorted_seconds, 0.99) * 1000, 3),
        "max": round(sorted_seconds[-1] * 1000, 3),
    }
