"""A loader run so that one blocked on a FIFO fails its test instead of hanging the run."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from iotdtls.errors import ConfigError


def outcome_without_blocking(load: Callable[[], object], fifo: Path) -> str:
    """The one-line error of `load`, run in a thread: a loader still blocked in opening or
    reading `fifo` after a while fails the test (and is let go by opening the FIFO's other
    end, so the test run does not hang)."""
    outcome: list[str] = []

    def run() -> None:
        try:
            load()
            outcome.append("loaded")
        except (ConfigError, OSError) as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5.0)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # EOF for the blocked reader
        thread.join(5.0)
        return "blocked on the FIFO"
    return outcome[0]
