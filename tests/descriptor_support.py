"""The descriptors a test's process holds open on a directory (Linux: /proc/self/fd)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def descriptors_of(directory: Path) -> int:
    """How many descriptors of this process are open on `directory`."""
    found = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed
            found += os.readlink(f"/proc/self/fd/{name}") == os.fspath(directory)
    return found
