"""Writing a file so that no reader ever sees half of it (key files, the chain cache), following
only the symlinks another user cannot have planted, opening the key log so that it cannot be
another user's file, and reading a credential file so that a FIFO or a device can neither block
nor fill memory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "LOCK_ATTEMPTS",
    "MAX_CREDENTIAL_FILE",
    "NOT_OPENED_AS_A_FILE",
    "RefusedFile",
    "append_lock",
    "directory_access_problem",
    "file_kind",
    "is_readable",
    "not_ours_alone",
    "open_private_append",
    "open_private_directory",
    "path_problem",
    "private_directory",
    "private_directory_problem",
    "private_file_problem",
    "read_regular_file",
    "read_regular_file_and_stat",
    "replace_in_private_directory",
    "resolve_links",
    "same_file",
    "write_atomically",
]

#: Largest key, certificate, public-key, PSK or credentials file read: a PEM chain is a few
#: kilobytes, so a larger file is the wrong one (or /dev/zero), refused before it fills memory.
MAX_CREDENTIAL_FILE = 1 << 20

#: The errors of opening what is no regular file, not through a symlink: the symlink itself
#: (ELOOP; EMLINK on FreeBSD) or a Unix socket (ENXIO).
NOT_OPENED_AS_A_FILE = frozenset({errno.ELOOP, errno.EMLINK, errno.ENXIO})

#: The least a read asks for past a file's size (`_read_at_most`).
_READ_CHUNK = 4096

#: Symlinks followed in one path at most, as the kernel's limit (MAXSYMLINKS): then it is a loop.
_MAX_LINKS = 40


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


class RefusedFile(Exception):
    """A file we will not write secrets to; the message says what it is and what to do, and
    follows the path: "is a symbolic link; name the file itself"."""


def private_file_problem(info: os.stat_result) -> str | None:
    """What makes the file `info` describes unfit to hold secrets (the key log), as the end of
    a sentence naming it; None when it is a regular file of ours, with one name, that only we
    can read."""
    if not stat.S_ISREG(info.st_mode):
        return f"is {file_kind(info.st_mode)}, not a regular file: name a regular file"
    problem = not_ours_alone(info, "file", "600")
    if problem is not None:
        return problem
    if info.st_nlink > 1:
        # A hard link another user made to one of ours (where fs.protected_hardlinks is 0)
        # would pass the tests above, and the secrets would be appended to that file.
        return f"has {info.st_nlink} hard links, so it is also another file: name a new file"
    return None


def not_ours_alone(
    info: os.stat_result, kind: str, private_mode: str, could: str = "could read it"
) -> str | None:
    """What lets another user at the `kind` ("file", "directory") `info` describes, as the end
    of a sentence naming it: owned by another user (`could` says what that user could do:
    "could read it", "could have written it"), or open to group or others (the fix: chmod
    `private_mode`); None when only this user can reach it."""
    if info.st_uid != os.geteuid():
        return (
            f"is owned by {_user(info.st_uid)}, not by this user: name a {kind} of your own "
            f"(another user {could})"
        )
    if info.st_mode & 0o077:
        return (
            f"is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}): chmod "
            f"{private_mode} it or name a new {kind}"
        )
    return None


def private_directory_problem(info: os.stat_result) -> str | None:
    """What makes the directory `info` (from lstat) describes unfit to hold secrets (saved
    sessions), as the end of a sentence naming it; None when it is a directory of ours that
    only we can enter, read or write."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link; name the directory itself"
    if not stat.S_ISDIR(info.st_mode):
        kind = "a regular file" if stat.S_ISREG(info.st_mode) else file_kind(info.st_mode)
        return f"is {kind}, not a directory: name a directory"
    return not_ours_alone(info, "directory", "700")


#: What a directory must let this user do, and how a message says each (os.access).
_DIRECTORY_ACCESS = ((os.R_OK, "read"), (os.W_OK, "written"), (os.X_OK, "searched"))


def directory_access_problem(path: Path) -> str | None:
    """What this user (the effective one, as the files' owner) cannot do in the directory at
    `path` of those it reads, writes and searches, as the end of a sentence naming it, with
    the fix: its mode, or a read-only file system; None when it can do all three. Root passes
    the mode bits (os.access says so), not a read-only file system."""
    effective = os.access in os.supports_effective_ids
    denied = [
        what for flag, what in _DIRECTORY_ACCESS
        if not os.access(path, flag, effective_ids=effective)
    ]
    if not denied:
        return None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if os.statvfs(path).f_flag & os.ST_RDONLY and "written" in denied:
        fix = "it is on a read-only file system: name another directory"
    elif mode & 0o700 != 0o700:
        fix = "chmod 700 it or name another directory"
    else:  # an access control list, a security module
        fix = "name another directory"
    return f"cannot be {' or '.join(denied)} by this user (mode {mode:04o}): {fix}"


def private_directory(path: str | os.PathLike[str]) -> Path:
    """`path`, a directory for secrets, absolute with its parents' symlinks resolved
    (`resolve_links`: another user's link planted in a shared parent is an `OSError`), made
    with mode 0700 when missing (its parent must exist). `RefusedFile` when it is a symlink
    itself, not a directory, another user's, open to group or others
    (`private_directory_problem`), or one this user cannot read, write and search
    (`directory_access_problem`: mode 0500, a read-only file system); other failures (no such
    parent, no permission) are `OSError`."""
    given = os.fspath(path).rstrip("/") or "/"
    info = _lstat_or_none(given)  # before resolve_links, which would follow the link itself
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise RefusedFile("is a symbolic link; name the directory itself")
    resolved = resolve_links(given)
    if info is None:
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
            os.mkdir(resolved, 0o700)
    problem = private_directory_problem(os.lstat(resolved)) or directory_access_problem(resolved)
    if problem is not None:
        raise RefusedFile(problem)
    return resolved


def read_regular_file(
    path: str,
    limit: int = MAX_CREDENTIAL_FILE,
    *,
    dir_fd: int | None = None,
    follow_symlinks: bool = True,
) -> bytes:
    """The bytes of the regular file `path` (relative to `dir_fd` if given), at most `limit`.
    Anything else is `RefusedFile`, its message the end of a sentence naming the file: "is a
    FIFO, not a regular file" (a FIFO or a device is opened without blocking, O_NONBLOCK, and
    never read: one would block the caller, /dev/zero fill its memory), "is larger than 1 MiB:
    is it the right file?". Other failures are `OSError` (`ValueError` for a NUL in `path`),
    as from `open`; without `follow_symlinks`, a symlink is ELOOP (O_NOFOLLOW) and a Unix
    socket ENXIO, as the kernel refuses to open them (`NOT_OPENED_AS_A_FILE`)."""
    return read_regular_file_and_stat(
        path, limit, dir_fd=dir_fd, follow_symlinks=follow_symlinks
    )[0]


def read_regular_file_and_stat(
    path: str,
    limit: int = MAX_CREDENTIAL_FILE,
    *,
    dir_fd: int | None = None,
    follow_symlinks: bool = True,
) -> tuple[bytes, os.stat_result]:
    """`read_regular_file`, and the fstat of the file it read: the caller checks the very file
    whose bytes it has (its owner and mode: `not_ours_alone`), not one that was at the path
    when it looked before, or after."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"is {file_kind(info.st_mode)}, not a regular file")
        # st_size over the limit refuses the file unread; under it, it may be short.
        data = b"" if info.st_size > limit else _read_at_most(fd, limit + 1, info.st_size)
    finally:
        os.close(fd)
    if len(data) > limit or info.st_size > limit:
        size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
        raise RefusedFile(f"is larger than {size}: is it the right file?")
    return data, info


def _read_at_most(fd: int, most: int, size: int) -> bytes:
    """The bytes of `fd` up to its end or `most` bytes, whichever comes first. The first read
    asks for the size fstat gave (`size`) and one byte more, so that a small file (a saved
    session of about 150 bytes) costs no buffer of `most` bytes (1 MiB: it doubled a session
    store's lookup); `size` may be short (a growing file, /proc gives 0), so the
    reads go on, each asking for at most as much as was read so far, until the end."""
    chunks: list[bytes] = []
    total = 0
    want = min(size + 1, most)
    while total < most:
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = min(max(total, _READ_CHUNK), most - total)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def open_private_append(path: str) -> int:
    """A descriptor appending to `path` (created with mode 0600), for secrets: the key log.
    Open for reading too, so that a writer can see whether the file ends with a whole line,
    unless reading is denied (a write-only file of its owner's, mode 0200): then write-only
    (`is_readable` tells which).

    What another user could have planted there is refused with `RefusedFile`: a symlink
    (not followed, O_NOFOLLOW), a file that is not regular, owned by another user or open to
    group or others (`private_file_problem`); and on the way there, a symlink of another user's
    in a directory others can write (`resolve_links`, as for every file we write: an `OSError`,
    EACCES, naming the link and its owner), where the file would be made in a directory that
    user chose. A FIFO or a device is opened without blocking
    (O_NONBLOCK, cleared for a regular file), then refused, so neither ever blocks (a Unix
    socket fails to open, ENXIO, and is refused as well). Other failures are `OSError`."""
    target = _directory_resolved(path)
    flags = os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = _open_not_planted(target, flags | os.O_RDWR)
    except PermissionError:  # EACCES: not readable (mode 0200), or not writable either
        fd = _open_not_planted(target, flags | os.O_WRONLY)
    try:
        problem = private_file_problem(os.fstat(fd))
        if problem is not None:
            raise RefusedFile(problem)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


#: How many times `append_lock` tries the lock, a millisecond apart, before going on without it.
LOCK_ATTEMPTS = 50


@contextlib.contextmanager
def append_lock(fd: int) -> Iterator[bool]:
    """An exclusive flock on `fd` for the block, so that what the processes taking it do
    there (look at the end of a shared file, then append) is not interleaved; whether it was
    had. Never blocking for long: tried `LOCK_ATTEMPTS` times a millisecond apart (a writer
    stopped while holding it), then the block runs without it, as where file locks are not
    supported (ENOLCK, some network file systems). Released at the end of the block."""
    locked = False
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another writer holds it: a write takes microseconds
            if attempt + 1 < LOCK_ATTEMPTS:
                time.sleep(0.001)
            continue
        except OSError:  # ENOLCK and the like: no lock to be had here
            break
        locked = True
        break
    try:
        yield locked
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)


def is_readable(fd: int) -> bool:
    """Whether `fd` was opened for reading too (`open_private_append`)."""
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


def _open_not_planted(path: str, flags: int) -> int:
    """os.open of `open_private_append`: a symlink or a FIFO nobody reads is `RefusedFile`,
    saying so (`path_problem`) whichever error the kernel gave (`_maybe_planted`)."""
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if not _maybe_planted(exc, path):
            raise
        problem = path_problem(path)
        if problem is None:
            raise
        raise RefusedFile(problem) from None


def _maybe_planted(exc: OSError, path: str) -> bool:
    """Whether opening `path` may have failed (`exc`) on what another user planted there: a
    symlink (ELOOP from O_NOFOLLOW; EMLINK on FreeBSD), a FIFO nobody reads or a Unix socket
    (ENXIO), all `NOT_OPENED_AS_A_FILE`; or a symlink that is EACCES, as some kernels refuse
    O_CREAT on another user's symlink in a sticky directory such as /tmp before O_NOFOLLOW
    could (even with fs.protected_symlinks 0; probe CD). Any other EACCES (a file of another
    user's, a write-only one of ours) stays the permission error it is."""
    if exc.errno in NOT_OPENED_AS_A_FILE:
        return True
    if exc.errno != errno.EACCES:
        return False
    info = _lstat_or_none(path)
    return info is not None and stat.S_ISLNK(info.st_mode)


def path_problem(path: str) -> str | None:
    """What `open_private_append` would refuse at `path`, from lstat alone (nothing opened,
    nothing made, so cheap enough for a configuration's check); None when nothing is there
    yet but its directory is. Another user's symlink on the way (`_directory_resolved`) is
    "cannot be written: " and why."""
    try:
        _directory_resolved(path)
    except OSError as exc:
        return f"cannot be written: {exc.strerror or exc}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            return f"is in a directory that does not exist ({directory}): make it or name another"
        return None
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link; name the file itself"
    return private_file_problem(info)


def _directory_resolved(path: str) -> str:
    """`path` with the symlinks of its directory resolved (`resolve_links`: another user's
    link planted in a directory others can write is an `OSError` naming it), its last part
    kept as given, not followed: `open_private_append` refuses a symlink there itself. A path
    ending in "/" is kept whole, for the open to say what it is."""
    directory, name = os.path.split(path)
    if not name:
        return path
    return os.path.join(resolve_links(directory or "."), name)


def resolve_links(path: str | os.PathLike[str]) -> Path:
    """`path` absolute with its symlinks resolved, as `os.path.realpath` (what is missing is
    kept as given), with the rule of the kernel's fs.protected_symlinks applied whatever that
    setting (realpath bypassed it), and to every directory others can write: a link in such a
    directory is followed only if owned by this user, root or the directory's owner
    (`_planted`), so that a link another user planted in a shared directory never sends our
    file to a place of theirs. Such a link is an `OSError` (EACCES) naming it and its owner.
    After `_MAX_LINKS` links the path is kept as reached (a loop, which the caller sees)."""
    resolved = Path("/") if os.fspath(path).startswith("/") else Path.cwd()
    todo = os.fspath(path).split("/")[::-1]
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            resolved = resolved.parent
            continue
        step = resolved / part
        try:
            info = os.lstat(step)
        except OSError:
            info = None
        if info is None or not stat.S_ISLNK(info.st_mode) or links == _MAX_LINKS:
            resolved = step
            continue
        if _planted(info, resolved):
            raise OSError(
                errno.EACCES,
                f"{step} is a symbolic link owned by {_user(info.st_uid)}, who could point it "
                "anywhere: name the file itself",
            )
        links += 1
        target = os.readlink(step)
        if target.startswith("/"):
            resolved = Path("/")
        todo.extend(target.split("/")[::-1])
    return resolved


def _planted(link: os.stat_result, directory: Path) -> bool:
    """Whether a symlink (lstat `link`) in `directory` may be another user's plant: the
    directory is writable by others than its owner (sticky world-writable as /tmp, or group- or
    other-writable) and the link is owned by neither this user, root, nor the directory's
    owner (fs.protected_symlinks, in proc_sys_fs(5), on sticky world-writable directories)."""
    if link.st_uid in (os.geteuid(), 0):
        return False
    try:
        info = os.lstat(directory)
    except OSError:
        return True
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return bool(shared) and link.st_uid != info.st_uid


def same_file(path: str | os.PathLike[str], other: str | os.PathLike[str]) -> bool:
    """Whether the paths name one file, through links (or will: neither exists yet)."""
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them is missing
        return os.path.realpath(path) == os.path.realpath(other)


def _user(uid: int) -> str:
    """A user for a message: "nobody (uid 65534)", or the number alone without a name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def write_atomically(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o600,
    replace: bool = True,
    sync: bool = True,
) -> None:
    """Write `data` to `path` through a temporary file in the same directory (created with
    `mode`, synced to disk unless not `sync`) that then takes the final name in one step.
    Without `sync`, for a cache: a reader still never sees half of the file, and a restart of
    the program finds it, but a crash of the machine may leave it empty or lose it.

    A symlink at `path` is followed, as `open` follows it: the file it points to is written
    (its temporary file made beside it, so the rename stays on one filesystem) and the link
    stays a link; replacing the link instead left the old content, a secret maybe, in the
    file it pointed to. In a directory others can write, only symlinks of this user, root or
    the directory's owner are followed (`resolve_links`): another user's is an `OSError`
    naming it.

    With `replace`, an existing file is replaced (rename); without, `FileExistsError` is raised
    when `path` exists, checked in the same step (a hard link, which never overwrites). What
    exists there and is not a regular file (a device such as /dev/null, a FIFO, a directory, a
    symlink loop) is never replaced: `OSError` (EINVAL) saying what it is.
    """
    target = resolve_links(path)
    try:
        existing = os.lstat(target).st_mode
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing):
        raise OSError(errno.EINVAL, f"{file_kind(existing)} is there, not a regular file")
    _write_through_temporary(target, data, mode=mode, replace=replace, sync=sync)


#: How the temporary file of a write (`write_atomically`, `replace_in_private_directory`)
#: begins its name, beside its target until renamed.
TEMPORARY_PREFIX = ".tmp-"


def replace_in_private_directory(
    directory_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    sync: bool = True,
    modified_ns: int | None = None,
) -> None:
    """`write_atomically` for the file `name` in the directory held open as `directory_fd`
    (`open_private_directory`), where no other user can have put a link or anything else:
    the file is written and replaced as named (no link resolved, nothing checked first), a
    few system calls instead of one per part of the path; and in that directory even if its
    path now names another (renamed away, a symlink in its place). With `modified_ns`, the
    file's modification (and access) time is set to it, in nanoseconds since the epoch,
    before the rename: the file takes its name with that date, never the file system's."""
    fd, temporary = _make_temporary(directory_fd, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            _fill(file, data, mode=mode, sync=sync, modified_ns=modified_ns)
        os.replace(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory_fd)
        raise


#: Names `_make_temporary` tries before it gives up (as `tempfile.mkstemp`, TMP_MAX).
_TEMPORARY_TRIES = 100


def _make_temporary(directory_fd: int, mode: int) -> tuple[int, str]:
    """A new file (mode `mode`, not followed) named `TEMPORARY_PREFIX` and 12 random hex
    digits in the directory `directory_fd`, opened for writing: its descriptor and name."""
    for _ in range(_TEMPORARY_TRIES):
        name = TEMPORARY_PREFIX + os.urandom(6).hex()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(name, flags, mode, dir_fd=directory_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name for a temporary file")


def _fill(
    file: BinaryIO, data: bytes, *, mode: int, sync: bool, modified_ns: int | None = None
) -> None:
    """Write `data` to the new temporary `file`, set its `mode` (whatever the umask) and, if
    given, its modification time `modified_ns` (once written: a write sets it), and sync it
    to disk if `sync`."""
    os.fchmod(file.fileno(), mode)
    file.write(data)
    file.flush()
    if modified_ns is not None:
        os.utime(file.fileno(), ns=(modified_ns, modified_ns))
    if sync:
        os.fsync(file.fileno())


def open_private_directory(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """`private_directory(path)` and a descriptor of that directory, opened not through a
    symlink and checked again by it (fstat: ours alone, and the very directory the path named
    when checked), so that what is done through it stays in that directory whatever happens
    to the path later (renamed away, a symlink to another directory put in its place). The
    caller closes the descriptor."""
    resolved = private_directory(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped since the check
            raise RefusedFile("was replaced as it was checked: name it again") from None
        raise
    try:
        held = os.fstat(fd)
        problem = private_directory_problem(held)
        if problem is None and not os.path.samestat(held, os.lstat(resolved)):
            problem = "was replaced as it was checked: name it again"
        if problem is not None:
            raise RefusedFile(problem)
    except BaseException:
        os.close(fd)
        raise
    return resolved, fd


def _write_through_temporary(
    target: Path, data: bytes, *, mode: int, replace: bool, sync: bool
) -> None:
    """`data` into a temporary file beside `target` (mode `mode`, synced if `sync`), which
    then takes its name: replacing what is there, or (not `replace`) `FileExistsError`."""
    fd, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=TEMPORARY_PREFIX, suffix=target.suffix
    )
    try:
        with os.fdopen(fd, "wb") as file:
            _fill(file, data, mode=mode, sync=sync)
        if replace:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)
            os.unlink(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
