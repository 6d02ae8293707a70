"""Writing a file so that no reader ever sees half of it (key files, the chain cache)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, replace: bool = True
) -> None:
    """Write `data` to `path` through a temporary file in the same directory (created with
    `mode`, synced to disk) that then takes the final name in one step.

    A symlink at `path` is followed, as `open` follows it: the file it points to is written
    (its temporary file made beside it, so the rename stays on one filesystem) and the link
    stays a link; replacing the link instead left the old content, a secret maybe, in the
    file it pointed to.

    With `replace`, an existing file is replaced (rename); without, `FileExistsError` is raised
    when `path` exists, checked in the same step (a hard link, which never overwrites).
    """
    target = Path(os.path.realpath(path))
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)
            os.unlink(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
