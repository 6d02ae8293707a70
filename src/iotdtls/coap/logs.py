"""aiocoap's log lines at a coaps server, bounded so that a peer cannot flood the log.

aiocoap (0.4.17) logs some warnings once per message a peer sends: one client sending 2,000
confirmable GETs with one token over one association made it log 1,969 lines "New request
came in while old request not ACKed yet ... Cancelling ACK" (403 KB of log for 28 KB of CoAP),
none naming the peer. `RepeatedLines`, a filter on the context's logger (`context.log`) for
the life of the server transport, lets each kind of line (its level and message template)
through once per `SUMMARY_INTERVAL`, as the key log's failures are (`iotdtls._failures`):
those held back are counted, and the next one let through says how many there were; what is
still held back when the transport shuts down is summed up then. A line logged while a
message of an association is handled (`receiving`, set in the task that serves the
association, which the tasks aiocoap starts for it inherit) names that association's remote.
"""

from __future__ import annotations

import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iotdtls._failures import SUMMARY_INTERVAL

__all__ = ["KINDS_KEPT", "RepeatedLines", "receiving"]

#: The remote whose message is being handled, or a weak reference to it: set once in the task
#: serving an association (`CoapsServerInterface`), whose aiocoap `dispatch_message` calls and
#: the tasks they start (a resource's rendering) see it. Setting it per message would make
#: each context aiocoap keeps of a request (its duplicate-detection timer, 247 s) hold a
#: mapping of its own (120 B each), and the remote itself would outlive its
#: association in any of them.
receiving: contextvars.ContextVar[Any] = contextvars.ContextVar("receiving", default=None)
#: Kinds of line counted at once; a further kind makes the one seen least recently forgotten
#: (aiocoap's templates are a few dozen; this bounds those that carry a peer's data).
KINDS_KEPT = 256

#: The attribute that marks a record a `RepeatedLines` has let through.
_SEEN = "iotdtls_repeated_lines"


@dataclass(slots=True)
class _Kind:
    """A kind of line: when the next may be let through, how many were held back since the
    last one was."""

    due: float
    held: int = 0


class RepeatedLines(logging.Filter):
    """Lets each kind of record at `level` or above (its level and `msg`) through once per
    `interval` seconds, counting those it holds back; the next one let through ends with
    "(N more like it held back)". Records below `level` all pass. Records logged while a
    message of a remote was handled name it (`receiving`)."""

    def __init__(
        self,
        interval: float = SUMMARY_INTERVAL,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self._clock = clock
        self._kinds: dict[tuple[int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # Another server's filter on the same logger has let it through already.
        if record.levelno < self.level or getattr(record, _SEEN, False):
            return True
        setattr(record, _SEEN, True)
        key = (record.levelno, str(record.msg))
        now = self._clock()
        kinds = self._kinds
        kind = kinds.pop(key, None)
        if kind is not None and now < kind.due:
            kind.held += 1
            kinds[key] = kind
            return False
        kinds[key] = _Kind(now + self.interval)
        while len(kinds) > KINDS_KEPT:
            del kinds[next(iter(kinds))]
        remote = receiving.get()
        if isinstance(remote, weakref.ref):
            remote = remote()
        extra = [f"from {remote!r}"] if remote is not None else []
        if kind is not None and kind.held:
            extra.append(f"{kind.held} more like it held back")
        if extra:
            record.msg = f"{record.getMessage()} ({'; '.join(extra)})"
            record.args = None
        return True

    def log_held_back(self, log: logging.Logger) -> None:
        """Log on `log` a warning for each kind of record held back (`held_back`), marked as
        let through already: another server's filter on the same logger would otherwise take
        them for one kind of its own ("%s") and hold all but the first back (probe AY)."""
        for line in self.held_back():
            log.warning("%s", line, extra={_SEEN: True})

    def held_back(self) -> list[str]:
        """Lines summing up, by kind, the records held back since the last of each kind was
        let through, and forget them."""
        lines = [f"{kind.held} more like {template!r} held back"
                 for (_, template), kind in self._kinds.items() if kind.held]
        self._kinds.clear()
        return lines
