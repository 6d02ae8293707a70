"""Failures that can come back at every handshake (a session store on a full disk, a key log
file replaced by one others can read), reported without flooding the log: the first of each
kind at once, the later ones summed up in one line at most every `SUMMARY_INTERVAL` seconds."""

from __future__ import annotations

__all__ = ["SUMMARY_INTERVAL", "SummedFailures"]

#: Seconds between two lines summing up the later failures of one thing.
SUMMARY_INTERVAL = 60.0


class SummedFailures:
    """The failures of one thing (`name`: "session store", "key log 'keys.log'"), and which
    of them to log: `failed` gives the line to log now, or None."""

    __slots__ = ("_kinds", "_latest", "_name", "_summary_due", "_unlogged")

    def __init__(self, name: str) -> None:
        self._name = name
        #: The kinds logged so far ("put raised OSError ENOSPC"): few, whatever the failures.
        self._kinds: set[str] = set()
        #: Failures since the last line, and when a summary of them may be logged.
        self._unlogged = 0
        self._summary_due = 0.0
        self._latest = ""

    def failed(self, kind: str, now: float) -> str | None:
        """Count a failure of `kind` at `now` (monotonic seconds); the line to log: "NAME
        KIND" for the first of its kind, "NAME: N more failures (the latest: KIND)" for those
        not logged once `SUMMARY_INTERVAL` has passed since the last line; otherwise None."""
        if kind not in self._kinds:
            self._kinds.add(kind)
            if not self._unlogged:
                self._summary_due = now + SUMMARY_INTERVAL
            return f"{self._name} {kind}"
        self._unlogged += 1
        self._latest = kind
        if now < self._summary_due:
            return None
        line = self.unlogged()
        self._summary_due = now + SUMMARY_INTERVAL
        return line

    def unlogged(self) -> str | None:
        """The line summing up the failures not logged yet, now (at the end: a short run
        never reached `SUMMARY_INTERVAL`), counted as logged; None when there are none."""
        if not self._unlogged:
            return None
        line = f"{self._name}: {self._unlogged} more failures (the latest: {self._latest})"
        self._unlogged = 0
        return line
