"""Failures that can come back at every handshake (a session store on a full disk, a key log
file replaced by one others can read, a handshake a peer without credentials makes fail),
reported without flooding the log: the first of each kind at once, or the first `lines` of
each interval whatever their kind; the later ones summed up in one line at most every
`SUMMARY_INTERVAL` seconds."""

from __future__ import annotations

__all__ = ["SUMMARY_INTERVAL", "SummedFailures"]

#: Seconds between two lines summing up the later failures of one thing.
SUMMARY_INTERVAL = 60.0


class SummedFailures:
    """The failures of one thing (`name`: "session store", "key log 'keys.log'"), and which
    of them to log: `failed` gives the line to log now, or None.

    By default the first failure of each kind is logged ("NAME KIND"), for kinds that are
    few whatever the failures (a store's "put raised OSError ENOSPC"). With `lines`, for
    kinds a peer chooses (a failed handshake names the peer and what it sent), the first
    `lines` failures of each interval are, whatever their kind: an interval begins with a
    failure at least `SUMMARY_INTERVAL` seconds after the last began, or at `sum_up`, which
    the owner calls at `summary_due` once `failed` has held one back. `summary` words the
    line summing up those held back ({name}, {count}, {latest}: the latest's kind, {s}:
    "s" unless the count is 1)."""

    __slots__ = (
        "_kinds", "_latest", "_lines", "_name", "_shown", "_summary", "_summary_due",
        "_unlogged",
    )

    def __init__(
        self,
        name: str,
        lines: int = 0,
        summary: str = "{name}: {count} more failure{s} (the latest: {latest})",
    ) -> None:
        self._name = name
        self._lines = lines
        self._summary = summary
        #: The kinds logged so far ("put raised OSError ENOSPC"): few, whatever the failures.
        self._kinds: set[str] = set()
        #: With `lines`: the lines logged in the current interval.
        self._shown = 0
        #: Failures since the last line, and when a summary of them may be logged (with
        #: `lines`: when the current interval ends).
        self._unlogged = 0
        self._summary_due = float("-inf") if lines else 0.0
        self._latest = ""

    @property
    def summary_due(self) -> float:
        """When the failures held back may be summed up (`sum_up`, with `lines`)."""
        return self._summary_due

    def failed(self, kind: str, now: float) -> str | None:
        """Count a failure of `kind` at `now` (monotonic seconds); the line to log: "NAME
        KIND" for the first of its kind (with `lines`: for one of the first `lines` of its
        interval), the summary (`summary`) of those not logged once `SUMMARY_INTERVAL` has
        passed since the last line; otherwise None."""
        if self._lines:
            return self._failed_in_interval(kind, now)
        if kind not in self._kinds:
            self._kinds.add(kind)
            if not self._unlogged:
                self._summary_due = now + SUMMARY_INTERVAL
            return f"{self._name} {kind}"
        self._count(kind)
        if now < self._summary_due:
            return None
        line = self.unlogged()
        self._summary_due = now + SUMMARY_INTERVAL
        return line

    def _failed_in_interval(self, kind: str, now: float) -> str | None:
        if now >= self._summary_due:
            if self._unlogged:  # its interval ended without `sum_up`: this one joins them
                self._count(kind)
                return self.sum_up(now)
            self._summary_due = now + SUMMARY_INTERVAL
            self._shown = 0
        if self._shown < self._lines:
            self._shown += 1
            return f"{self._name} {kind}"
        self._count(kind)
        return None

    def _count(self, kind: str) -> None:
        self._unlogged += 1
        self._latest = kind

    @property
    def held_back(self) -> int:
        """Failures counted and not logged yet (for the next summary)."""
        return self._unlogged

    def sum_up(self, now: float) -> str | None:
        """With `lines`, at the end of an interval (`summary_due`): the line summing up the
        failures held back in it (`unlogged`), and a new interval begins at `now`. None, and
        nothing begins, before `summary_due`: a failure that came at its end, before the
        owner's timer, has summed up those and begun the interval that still runs (else that
        interval would begin twice, `lines` lines each time)."""
        if now < self._summary_due:
            return None
        self._summary_due = now + SUMMARY_INTERVAL
        self._shown = 0
        return self.unlogged()

    def unlogged(self) -> str | None:
        """The line summing up the failures not logged yet, now (at the end: a short run
        never reached `SUMMARY_INTERVAL`), counted as logged; None when there are none."""
        if not self._unlogged:
            return None
        count = self._unlogged
        line = self._summary.format(
            name=self._name, count=count, latest=self._latest, s="" if count == 1 else "s"
        )
        self._unlogged = 0
        return line
