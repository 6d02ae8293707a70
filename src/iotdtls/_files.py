"""Writing a file so that no reader ever sees half of it (key files, the chain cache)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["file_kind", "write_atomically"]


#: What a mode that is not a regular file's is, by the test that says so.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link that leads nowhere (a loop)"),
)


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is (`mode` from stat), for a message."""
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


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
    when `path` exists, checked in the same step (a hard link, which never overwrites). What
    exists there and is not a regular file (a device such as /dev/null, a FIFO, a directory, a
    symlink loop) is never replaced: `OSError` (EINVAL) saying what it is.
    """
    target = Path(os.path.realpath(path))
    try:
        existing = os.lstat(target).st_mode
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing):
        raise OSError(errno.EINVAL, f"{file_kind(existing)} is there, not a regular file")
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
