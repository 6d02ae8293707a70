"""Sessions for resumption (RFC 5246 §7.3, §7.4.1.2; RFC 7627 §5.3; profile "Session
Resumption", RES-1 .. RES-3).

`SessionState` is what an abbreviated handshake takes from the full handshake that created the
session: the session_id, the cipher suite, the master secret, the mode and who the peer was,
what RFC 6066 binds to the whole session (the max_fragment_length, §4, and the server_name,
§3), and a digest of the credential our side used (the PSK; a client's own raw key or
certificate), so that a session ends with the credential it was made with. Only sessions that
used the extended master secret are ever resumed (RES-3), so the state does not record it:
every `SessionState` is an EMS session.

A session serializes to bytes (`to_bytes` / `from_bytes`), so a client can keep it across a
sleep or a restart and a server's store can live outside the process. Those bytes hold the
master secret: keep them like a key (a file readable by its owner only, mode 0600). The repr
never shows the secret.

`SessionStore` is the server's cache interface (get, put and remove by session_id), so a
deployment can put sessions in a shared store; `MemorySessionStore` is the bounded default:
at most `max_entries` sessions, each for `lifetime` seconds from its creation, the least
recently used evicted first. Times are the caller's clock (the connection's `now`); the store
reads none. `DirectorySessionStore` keeps one file per session in a directory that the worker
processes of one server (`iotdtls.workers`) share, and that outlives the server: its lifetime
runs by the wall clock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from iotdtls._buffer import Reader, Writer
from iotdtls._files import (
    NOT_OPENED_AS_A_FILE,
    TEMPORARY_PREFIX,
    RefusedFile,
    open_private_directory,
    read_regular_file,
    replace_in_private_directory,
)
from iotdtls._paths import directory_name_problem
from iotdtls.config import (
    DEFAULT_SESSION_CACHE_SIZE,
    DEFAULT_SESSION_LIFETIME,
    Mode,
    check_plain_callback,
    type_name,
)
from iotdtls.credentials import WallClockFailed, read_wall_clock
from iotdtls.crypto.suites import suite_info
from iotdtls.errors import ConfigError, DecodeError
from iotdtls.identity import (
    CertificateIdentity,
    PeerIdentity,
    PskIdentity,
    RawPublicKeyIdentity,
    UnauthenticatedPeer,
)
from iotdtls.messages import MaxFragmentLengthCode

__all__ = [
    "DirectorySessionStore",
    "MemorySessionStore",
    "SessionState",
    "SessionStore",
    "starts_like_a_session",
]

#: RFC 5246 §7.4.1.2: SessionID<0..32>; a resumable session has a non-empty one.
MAX_SESSION_ID_LENGTH = 32
MASTER_SECRET_LENGTH = 48

#: Start of the serialized form, followed by its version byte.
_MAGIC = b"iotdtls-session"
_VERSION = 2
_MODE_CODES = {Mode.PSK: 1, Mode.RAW_PUBLIC_KEY: 2, Mode.X509: 3}
_MODES = {code: mode for mode, code in _MODE_CODES.items()}
_PSK, _RPK, _X509, _NONE = 1, 2, 3, 4
#: max_fragment_length codes a session may carry (RFC 6066 §4), 0 for none.
_FRAGMENT_LENGTH_CODES = frozenset((0, *MaxFragmentLengthCode))
#: Length of `credentials.psk_digest` and `credentials.own_credential_digest` (SHA-256).
CREDENTIAL_DIGEST_LENGTH = 32


@dataclass(frozen=True, slots=True)
class SessionState:
    """One resumable session (RFC 5246 §7.3: session identifier, cipher spec, master secret,
    peer; RFC 6066 §3, §4: server name and fragment length). Client and server keep the same
    fields; on the server, `peer` is the client the full handshake authenticated."""

    session_id: bytes
    cipher_suite: int
    mode: Mode
    master_secret: bytes = field(repr=False, compare=False)
    peer: PeerIdentity
    #: The max_fragment_length code (RFC 6066 §4) the session negotiated, 0 for none.
    max_fragment_length: int = 0
    #: The server_name the client sent (RFC 6066 §3), "" for none.
    server_name: str = ""
    #: Our side's credential in the full handshake, as a digest (never the credential):
    #: `psk_digest` of the PSK on both sides, on a client `own_credential_digest` of its raw
    #: key or certificate; empty when we authenticated with nothing. A resumption carries it.
    credential_digest: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.session_id) <= MAX_SESSION_ID_LENGTH:
            raise ConfigError("a resumable session has a session_id of 1 to 32 bytes")
        if len(self.master_secret) != MASTER_SECRET_LENGTH:
            raise ConfigError("a session's master secret is 48 bytes")
        if suite_info(self.cipher_suite) is None:
            raise ConfigError(f"cipher suite {self.cipher_suite:#06x} is not one of ours")
        if not self.server_name.isascii():
            raise ConfigError("a session's server_name is an ASCII host name (RFC 6066 §3)")
        if self.max_fragment_length not in _FRAGMENT_LENGTH_CODES:
            raise ConfigError(f"max_fragment_length code {self.max_fragment_length} is not 0-4")
        if len(self.credential_digest) not in (0, CREDENTIAL_DIGEST_LENGTH):
            raise ConfigError("a session's credential_digest is empty or 32 bytes")

    def __repr__(self) -> str:
        return (
            f"SessionState(id={self.session_id.hex()[:16]}..., suite={self.cipher_suite:#06x}, "
            f"mode={self.mode.value}, peer={self.peer}, master_secret=<redacted>)"
        )

    def to_bytes(self) -> bytes:
        """The session as bytes for `from_bytes`. They hold the master secret: store them
        where only the owner can read them (mode 0600), never in a log."""
        w = Writer()
        w.push_bytes(_MAGIC)
        w.push_uint8(_VERSION)
        w.push_vector(1, self.session_id)
        w.push_uint16(self.cipher_suite)
        w.push_uint8(_MODE_CODES[self.mode])
        w.push_vector(1, self.master_secret)
        w.push_uint8(self.max_fragment_length)
        w.push_vector(1, self.server_name.encode("ascii"))
        w.push_vector(1, self.credential_digest)
        _push_peer(w, self.peer)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        """A session from `to_bytes`; `ValueError` (one line) for anything else, `TypeError`
        (one line, without the value: its hex is the master secret) for what is not bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                "data must be the bytes of to_bytes (bytes.fromhex(text) for its hex), got "
                f"{type_name(data)}"
            )
        try:
            r = Reader(bytes(data))
            if r.pull_bytes(len(_MAGIC)) != _MAGIC or r.pull_uint8() != _VERSION:
                raise DecodeError("unknown format or version")
            session_id = r.pull_vector(1)
            suite = r.pull_uint16()
            mode = _MODES.get(r.pull_uint8())
            master = r.pull_vector(1)
            mfl = r.pull_uint8()
            name = r.pull_vector(1).decode("ascii")
            digest = r.pull_vector(1)
            peer = _pull_peer(r)
            r.expect_end()
            if mode is None:
                raise DecodeError("unknown mode")
            return cls(session_id, suite, mode, master, peer, mfl, name, digest)
        except (DecodeError, ConfigError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a session saved by this version of iotdtls ({exc})") from None


def starts_like_a_session(stream: BinaryIO) -> bool:
    """Whether what `stream` holds (read from where it is) could be `SessionState.to_bytes` of
    some version: it starts with the format's magic (or, shorter, with as much of it; nothing
    at all too). What does not holds something else than a saved session, where `from_bytes`
    refuses an older version or a damaged one alike."""
    head = stream.read(len(_MAGIC))
    return head == _MAGIC[: len(head)]


def _push_peer(w: Writer, peer: PeerIdentity) -> None:
    if isinstance(peer, PskIdentity):
        w.push_uint8(_PSK)
        w.push_vector(2, peer.identity)
    elif isinstance(peer, RawPublicKeyIdentity):
        w.push_uint8(_RPK)
        w.push_vector(2, peer.spki)
    elif isinstance(peer, CertificateIdentity):
        w.push_uint8(_X509)
        w.push_vector(2, peer.name.encode("utf-8"))
        with w.block(3):
            for cert in peer.chain:
                w.push_vector(3, cert)
    else:
        w.push_uint8(_NONE)


def _pull_peer(r: Reader) -> PeerIdentity:
    kind = r.pull_uint8()
    if kind == _PSK:
        return PskIdentity(r.pull_vector(2))
    if kind == _RPK:
        return RawPublicKeyIdentity(r.pull_vector(2, 1))
    if kind == _X509:
        name = r.pull_vector(2).decode("utf-8")
        chain = r.pull_block(3)
        certs: list[bytes] = []
        while not chain.eof():
            certs.append(chain.pull_vector(3, 1))
        return CertificateIdentity(name, tuple(certs))
    if kind == _NONE:
        return UnauthenticatedPeer()
    raise DecodeError(f"unknown peer kind {kind}")


def not_a_session(value: object) -> bool:
    """Whether what a `SessionStore.get` returned is a misuse (RES-1): neither a `SessionState`
    nor None (saved bytes not read back with `SessionState.from_bytes`, an awaitable). The
    handshake logs it and takes it as a miss; `iotdtls.endpoint` counts it as a store error."""
    return value is not None and not isinstance(value, SessionState)


def store_failure(exc: BaseException) -> str:
    """How a log line names what a session store raised: its type, and for an `OSError` the
    errno's name ("OSError ENOSPC": a full disk, "PermissionError EACCES"), never its text,
    which may name a session's file (its id) or whatever an application's store put there."""
    name = type(exc).__name__
    code = exc.errno if isinstance(exc, OSError) else None
    if isinstance(code, int):
        return f"{name} {errno.errorcode.get(code, code)}"
    return name


class SessionStore(Protocol):
    """A server's session cache, keyed by session_id (RES-1). An implementation may forget a
    session at any time: the client then gets a full handshake.

    Its methods are plain functions (not ``async def``), called synchronously on the server's
    event loop in the middle of a handshake: while one runs, every association of that server
    (of that worker, with `iotdtls.workers`) waits, so a slow store (a network database) must
    answer from memory that another thread or task keeps up to date. `now` is the connection's
    clock, the event loop's monotonic one: it means nothing on another host or after a reboot,
    so a store kept across them keeps its own wall-clock expiry. The store keeps sessions for
    as long as it decides: `ServerConfig.session_lifetime` is the default store's lifetime
    only. A method that raises, or a `get` returning anything but a `SessionState` or None, is
    logged by the exception's or the value's type only (its text may carry data) and is a miss:
    a full handshake, never a failed one."""

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        """The live session of that id, or None (what `put` was given: saved bytes are read
        back with `SessionState.from_bytes`)."""
        ...

    def put(self, state: SessionState, now: float) -> None:
        """Keep a session created (by a full handshake) at `now`; `state.to_bytes()` holds
        the master secret: keep it like a key."""
        ...

    def remove(self, session_id: bytes) -> None:
        """Forget a session (one that ended with a fatal alert, RFC 5246 §7.2.2)."""
        ...


class MemorySessionStore:
    """The default `SessionStore`: in memory, at most `max_entries` sessions, each for
    `lifetime` seconds from its creation; when full, the least recently used one goes."""

    def __init__(
        self,
        max_entries: int = DEFAULT_SESSION_CACHE_SIZE,
        lifetime: float = DEFAULT_SESSION_LIFETIME,
    ) -> None:
        _check_bounds(max_entries, lifetime)
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._entries: OrderedDict[bytes, tuple[SessionState, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<MemorySessionStore {len(self)}/{self.max_entries} lifetime={self.lifetime}s>"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        state, created = entry
        if now - created >= self.lifetime:
            del self._entries[session_id]
            return None
        self._entries.move_to_end(session_id)
        return state

    def put(self, state: SessionState, now: float) -> None:
        self._entries[state.session_id] = (state, now)
        self._entries.move_to_end(state.session_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def remove(self, session_id: bytes) -> None:
        self._entries.pop(session_id, None)


def _check_bounds(max_entries: int, lifetime: float) -> None:
    """A store's `max_entries` and `lifetime`, or a one-line `ConfigError`."""
    if not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigError(f"session cache size must be at least 1, got {max_entries!r}")
    if not lifetime > 0:
        raise ConfigError(f"session lifetime must be > 0 seconds, got {lifetime}")


#: Bytes of a `DirectorySessionStore` file before the session's `to_bytes`: the wall-clock
#: time of its `put`, in milliseconds since the epoch.
_CREATED_WIDTH = 8
#: A session file's modification time is its creation time (`put`), in nanoseconds.
_NANOSECONDS_PER_MILLISECOND = 1_000_000
_NANOSECONDS_PER_SECOND = 1_000_000_000
#: Session files a put that found no room (ENOSPC) frees at least, when a tenth of
#: `max_entries` is fewer (never more than half of the files there).
_FREED_WHEN_FULL = 8
#: Seconds after which a temporary file in a session directory is taken for one a killed put
#: left (a put takes well under a millisecond).
STALE_TEMPORARY_AGE = 60.0
#: The errors of a file system with no room left (the disk, or the user's quota).
_NO_ROOM = frozenset((errno.ENOSPC, errno.EDQUOT))
_HEX_DIGITS = frozenset("0123456789abcdef")


def _is_session_file_name(name: str) -> bool:
    """Whether a file name in the directory is a session's (the hex of a 1 to 32 byte
    session_id), not a temporary file of a `put` under way (".tmp-...") nor anything else."""
    return (
        2 <= len(name) <= 2 * MAX_SESSION_ID_LENGTH
        and len(name) % 2 == 0
        and _HEX_DIGITS.issuperset(name)
    )


#: How errors name a `DirectorySessionStore`'s clock.
CLOCK_NAME = "session store clock"


def _check_clock(clock: object) -> None:
    """A store's `clock` is checked when it is made, not at the first put or scan: callable,
    no async def, and read once as `wall_clock` is (`read_wall_clock`): a one-line
    ConfigError naming it otherwise."""
    if not callable(clock):
        raise ConfigError(
            f"{CLOCK_NAME} must be callable (like time.time), got {type_name(clock)}")
    check_plain_callback(CLOCK_NAME, clock)
    try:
        read_wall_clock(clock, CLOCK_NAME)
    except WallClockFailed as exc:
        raise ConfigError(str(exc)) from None


class DirectorySessionStore:
    """A `SessionStore` in a directory, one file per session: the sessions the worker
    processes of one server share (`iotdtls.workers`, ``iotdtls server --workers N
    --session-dir DIR``), each one making its own store on the directory, and that a restart
    of the server finds again.

    A file's name is the hex of the session_id (random: 32 bytes of `os.urandom` from our
    server, RFC 5246 §7.4.1.3), its content the wall-clock time of the `put` then
    `SessionState.to_bytes()`, written atomically (a temporary file in the directory, mode
    0600, renamed: a reader never sees half of it; not synced to disk, as a cache: a crash of
    the machine may lose a session, never a restart of the server). `get` reads the file: a
    missing one is a miss, and so is a damaged one or one older than `lifetime` seconds by
    the wall clock (`clock`, `time.time`, checked when the store is made: callable, no async
    def, answering seconds as `wall_clock` does (`read_wall_clock`), at the check and at the
    first scan, or `ConfigError`; one failing later makes the `get` or `put` raise
    `WallClockFailed`, which the server counts as a store error, a miss; `now` is
    a per-process monotonic clock, meaningless in another process or after a restart), which
    is removed (counted in `damaged` and
    `expired`; one that will not go, an immutable file or one replaced meanwhile by a
    subdirectory, stays, and the `get` is a miss all the same). `remove` unlinks the file. A
    session file that cannot be read for another reason (EIO; EACCES, an ACL or a security
    module) raises `OSError`, which the server logs by type and errno name and takes as a miss.

    Other entries in the directory are left alone: the store only counts, dates, reads and
    removes regular files (not followed) named by the hex of a session_id, and its own
    temporary files; a subdirectory, a symlink, a FIFO or a socket is none of these whatever
    its name (a ``2026`` or ``beef`` subdirectory or symlink included: a `get` of that id is a
    miss), nor is a file named otherwise; `get` reads a session file of at most 1 MiB
    (`read_regular_file`: a larger one is a miss left to the scans). A file a scan cannot
    remove (EPERM) stays, and the scan goes on.

    The directory holds master secrets: keep it like a key. Missing, it is made with mode
    0700 (its parent must exist); a symlink, something else than a directory, another user's
    directory, one open to group or others, or one this user cannot read, write and search
    (mode 0500, a read-only file system; or whose first scan fails) is refused (`ConfigError`,
    one line naming it), and so are an empty str and a name with a NUL character
    (`directory_name_problem`; `Path("")` is `Path(".")`, the working directory, taken as
    such); bytes, or anything but a str or an os.PathLike of str, is a one-line TypeError.
    The repr shows the path and bounds only. The directory checked is held open
    (`open_private_directory`) and every file is named through it: renamed away and a
    symlink to another directory put in its place, the store still keeps and finds its
    sessions in the one it checked, never in the other. Removed, it is opened again at its
    path by the put that finds it gone (`_reopen_if_removed`: made again when missing,
    checked as the first was; that put fails). `close` (or a ``with`` block) closes
    it, the server that made the store as it closes (the CLI, each worker of
    `iotdtls.workers`), the garbage collector otherwise; a store used after `close` raises
    ValueError, as a closed file does.

    At most about `max_entries` files: a scan of the directory (names, and the modification
    time of each session file) counts them when the store is made, then again after a number
    of `put`s, half the room the last scan left and at least a tenth of `max_entries`, so that
    the scans cost a few directory entries per `put`, never a scan per `put`. A `put` sets its
    file's modification time to the creation time it writes in it, by `clock` (before the
    rename), so that the scans date the files as `get` does, whatever the file system's clock
    says. Every scan removes the files whose modification time is `lifetime` or more away
    from `clock`'s now, either way (a clock set back: no endless life), however few the files:
    an expired session's master secret does not stay on disk until the directory fills, the
    clock catches up or its id comes back. A scan that still finds more than `max_entries`
    removes the oldest files (by that same distance) down to nine tenths of it. Each
    process counts only its own `put`s between its scans, so with N workers the bound is
    approximate: the directory may hold up to about max(N / 2, 1 + N / 10) times
    `max_entries` between two scans. A `put` that fails for want of room (ENOSPC, EDQUOT: a
    small tmpfs full before `max_entries`) scans at once and removes the oldest files, a
    tenth of `max_entries` (8 at least) but no more than half of those there (one at least),
    so that the next puts find room without emptying the directory. A scan also removes the
    temporary files older than `STALE_TEMPORARY_AGE` (a put killed as it wrote: each holds a
    master secret), by both `clock` and the system clock, either way
    (`_remove_stale_temporaries`).

    Stores sharing a directory (the workers' own, or processes of different servers) must use
    the same `clock` (the default, `time.time`, in every one): each dates the files by its
    own `clock`, so a store whose clock is far from another's (a year ahead, a fixed time)
    takes the other's session files for expired and removes them at its scans and `get`s, and
    its temporary files of puts in progress too (stamped by the other's clock before their
    rename: that put then fails), and the other does the same to its files.

    Costs, on the event loop (`make bench-session-store`; a 2-core VM): a `get` reads one
    small file, about 13 us (a miss 4 to 6 us), a `put` writes and renames one, about 26 us
    on tmpfs and 40 to 250 us on an ext4 disk (its journal), where `MemorySessionStore` takes
    under 1 us and a full handshake some milliseconds; a scan of 1,000 files takes about
    4 ms (an lstat of each; the names alone, a quarter of it), more in a directory many files
    went through. A tmpfs directory (under ``/run``
    or ``/dev/shm``) is the fast choice and survives a restart of the server; one on a disk
    survives a reboot too.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_entries: int = DEFAULT_SESSION_CACHE_SIZE,
        lifetime: float = DEFAULT_SESSION_LIFETIME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_bounds(max_entries, lifetime)
        _check_clock(clock)
        problem = directory_name_problem("session directory", path)
        if problem is not None:
            raise ConfigError(problem)
        try:
            self.path, directory_fd = open_private_directory(path)
        except RefusedFile as exc:
            raise ConfigError(f"session directory {os.fspath(path)} {exc}") from None
        except OSError as exc:
            raise _unusable_directory(path, exc) from None
        #: The directory, held open from its check to `close` (every file named in it).
        self._directory_fd = directory_fd
        self._close_fd = weakref.finalize(self, os.close, directory_fd)
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._clock = clock
        #: Files removed by `get` because they could not be read as a session of their name.
        self.damaged = 0
        #: Files removed by `get` because their session was older than `lifetime`.
        self.expired = 0
        #: `put`s left before the next scan of the directory (`_scan`).
        self._puts_before_scan = 0
        try:
            self._scan()
        except OSError as exc:  # what os.access did not tell (root, an ACL, a security module)
            self.close()
            raise _unusable_directory(path, exc) from None
        except WallClockFailed as exc:  # it answered _check_clock, not the scan's read
            self.close()
            raise ConfigError(str(exc)) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the directory's descriptor (the server that made the store closes it as it
        closes); a second close does nothing. A `get`, `put` or `remove` after it raises
        ValueError, as a closed file does."""
        self._close_fd()

    def __enter__(self) -> DirectorySessionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _reopen_if_removed(self) -> None:
        """After a put failed for want of its directory (ENOENT): if the held directory was
        removed (no link left to it) and one is at its path again, checked as the store's
        first was (`open_private_directory`: ours alone, no symlink), hold that one from now
        on; the failed put stays failed (counted by the server). Anything else at the path,
        or nothing, leaves the store as it was, each put failing."""
        if os.fstat(self._directory()).st_nlink > 0:
            return
        try:
            _, directory_fd = open_private_directory(self.path)
        except (RefusedFile, OSError):
            return
        self._close_fd()
        self._directory_fd = directory_fd
        self._close_fd = weakref.finalize(self, os.close, directory_fd)

    def _directory(self) -> int:
        """The directory's descriptor; ValueError once the store is closed."""
        if not self._close_fd.alive:
            raise ValueError(f"{self!r} is closed")
        return self._directory_fd

    @contextlib.contextmanager
    def _listing(self) -> Iterator[Iterator[os.DirEntry[str]]]:
        """The directory's entries, through a descriptor of its own opened on the held one
        ("." relative to it): `os.scandir` of the held descriptor would read through a
        duplicate that shares its position with every duplicate, those of a process forked
        from this one included, and two processes listing at once would each skip entries
        or see them twice (then take live sessions for ones beyond the bound)."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._directory())
        try:
            with os.scandir(fd) as entries:
                yield entries
        finally:
            os.close(fd)

    def _now(self) -> float:
        """The wall-clock time by `clock`, read as `wall_clock` is (`WallClockFailed`)."""
        return read_wall_clock(self._clock, CLOCK_NAME)

    def __repr__(self) -> str:
        finalizer = getattr(self, "_close_fd", None)  # None while __init__ runs
        closed = "" if finalizer is not None and finalizer.alive else " closed"
        return (
            f"<DirectorySessionStore {os.fspath(self.path)!r} max_entries={self.max_entries} "
            f"lifetime={self.lifetime}s{closed}>"
        )

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        """The session saved under that id if it is still live by the wall clock; `now`
        (the caller's monotonic clock) is not used."""
        self._directory()  # ValueError once closed, whatever the id
        if not 1 <= len(session_id) <= MAX_SESSION_ID_LENGTH:
            return None
        try:
            data = read_regular_file(
                session_id.hex(), dir_fd=self._directory(), follow_symlinks=False
            )
        except FileNotFoundError:
            return None
        except RefusedFile:  # a subdirectory, a FIFO, over 1 MiB: not ours to remove
            return None
        except OSError as exc:
            if exc.errno in NOT_OPENED_AS_A_FILE:  # a symlink, a socket: not ours either
                return None
            raise
        state = self._live_session(session_id, data)
        if state is None:
            self._remove(session_id.hex())
        return state

    def put(self, state: SessionState, now: float) -> None:
        """Save the session with the wall-clock time now as its creation (`now`, the caller's
        monotonic clock, is not used), written in the file and as its modification time: the
        scans date it by `clock` as `get` does, not by the file system's clock."""
        created_ms = max(0, round(self._now() * 1000))
        created = Writer()
        created.push_uint(_CREATED_WIDTH, created_ms)
        data = created.getvalue() + state.to_bytes()
        try:
            replace_in_private_directory(
                self._directory(),
                state.session_id.hex(),
                data,
                sync=False,
                modified_ns=created_ms * _NANOSECONDS_PER_MILLISECOND,
            )
        except OSError as exc:
            if exc.errno in _NO_ROOM:  # the next put finds room
                self._scan(full=True)
            elif exc.errno == errno.ENOENT:  # the directory itself was removed
                self._reopen_if_removed()
            raise
        self._puts_before_scan -= 1
        if self._puts_before_scan <= 0:
            self._scan()

    def remove(self, session_id: bytes) -> None:
        directory = self._directory()  # ValueError once closed, whatever the id
        if 1 <= len(session_id) <= MAX_SESSION_ID_LENGTH:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(session_id.hex(), dir_fd=directory)

    def _live_session(self, session_id: bytes, data: bytes) -> SessionState | None:
        """The session `data` holds, if it is the one named `session_id` and younger than
        `lifetime` by the wall clock; None (counted) otherwise."""
        try:
            state = SessionState.from_bytes(data[_CREATED_WIDTH:])
        except ValueError:  # a file cut short included
            state = None
        if state is None or state.session_id != session_id:
            self.damaged += 1
            return None
        created = int.from_bytes(data[:_CREATED_WIDTH], "big") / 1000
        if abs(self._now() - created) >= self.lifetime:  # a clock set back: no endless life
            self.expired += 1
            return None
        return state

    def _scan(self, *, full: bool = False) -> None:
        """Date the session files by their modification time (`clock`'s time of their `put`)
        and remove those `lifetime` or more from now (`_remove_expired`: master secrets no
        `get` will take); beyond `max_entries`, or when the file system is `full` (a put
        failed with ENOSPC: at fewer files), remove the oldest (`_files_to_keep`, `_trim`); remove
        the temporary files of puts cut short (`_remove_stale_temporaries`). Then set how many
        `put`s of this process come before the next scan: half the room left (other
        processes fill it too), at least a tenth of `max_entries`."""
        self._puts_before_scan = max(1, self.max_entries // 10)  # if this scan fails
        dated: list[tuple[float, str]] = []  # (creation time by `clock`, name)
        temporaries: list[str] = []
        with self._listing() as entries:
            for entry in entries:
                if not _is_our_regular_file(entry):  # a subdirectory named 2026: not ours
                    continue
                if _is_session_file_name(entry.name):
                    with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                        modified = entry.stat(follow_symlinks=False).st_mtime_ns
                        dated.append((modified / _NANOSECONDS_PER_SECOND, entry.name))
                elif entry.name.startswith(TEMPORARY_PREFIX):
                    temporaries.append(entry.name)
        self._remove_stale_temporaries(temporaries)
        live = self._remove_expired(dated)
        found = len(live)
        keep = self._files_to_keep(found, full=full)
        if keep < found:
            found = self._trim(live, keep)
        tenth = max(1, self.max_entries // 10)
        self._puts_before_scan = max(tenth, (self.max_entries - found) // 2)

    def _remove_stale_temporaries(self, names: list[str]) -> None:
        """Remove the temporary files (`replace_in_private_directory`) older than
        `STALE_TEMPORARY_AGE`: of a put whose process was killed as it wrote, each holding a
        master secret that no session file names. One may be a put in progress in another
        process: its modification time is the file system's (the system clock, `time.time`)
        as it is written, then that process's `clock`'s just before its rename (`put`), so a
        temporary file within `STALE_TEMPORARY_AGE` of either of our clocks' now, either way,
        stays; the others go, one dated ahead of a clock set back since included. A put in
        progress is therefore kept only while the other process's `clock` agrees with ours:
        stamped by a clock far from both of ours, it is removed before its rename, and that
        put fails (stores sharing a directory must use the same `clock`: see the class)."""
        clocks_now = (self._now(), time.time())
        for name in names:
            with contextlib.suppress(OSError):  # renamed or removed meanwhile; see _remove
                info = os.stat(name, dir_fd=self._directory_fd, follow_symlinks=False)
                modified = info.st_mtime_ns / _NANOSECONDS_PER_SECOND
                if all(abs(now - modified) > STALE_TEMPORARY_AGE for now in clocks_now):
                    self._remove(name)

    def _remove_expired(self, dated: list[tuple[float, str]]) -> list[tuple[float, str]]:
        """Remove the session files (modification time, name) whose `put` (the modification
        time, stamped with `clock`'s time) is `lifetime` or more away from `clock`'s now, in
        either direction, as `get` judges the time written in the file (a clock set back: no
        endless life); the others, as (age, name)."""
        now = self._now()
        live: list[tuple[float, str]] = []
        for created, name in dated:
            age = abs(now - created)
            if age < self.lifetime:
                live.append((age, name))
            else:
                self._remove(name)
        return live

    def _files_to_keep(self, found: int, *, full: bool) -> int:
        """How many of the `found` live session files a scan keeps: all of them up to
        `max_entries`, beyond it nine tenths of `max_entries`; when the file system is `full`
        (a put failed with ENOSPC), fewer by a tenth of `max_entries` (`_FREED_WHEN_FULL` at
        least) but by no more than half of them (one at least): so many puts find room before
        the next fails (freeing a tenth of the files, one of 16 on a 64 KiB tmpfs, every
        other put failed), and the directory is not emptied."""
        keep = found
        if found > self.max_entries:
            keep = self.max_entries - max(1, self.max_entries // 10)
        if full and found:
            freed = min(max(_FREED_WHEN_FULL, self.max_entries // 10), found // 2)
            keep = min(keep, found - max(1, freed))
        return keep

    def _trim(self, aged: list[tuple[float, str]], keep: int) -> int:
        """Remove the oldest of the session files (age by `clock`, name), keeping the `keep`
        youngest; the number of files left."""
        aged.sort()
        for _, name in aged[keep:]:
            self._remove(name)
        return min(keep, len(aged))

    def _remove(self, name: str) -> None:
        """Unlink the file `name` a scan or `get` found expired or damaged, if it still can:
        one that will not go (an immutable file, EPERM; replaced meanwhile by a subdirectory,
        EISDIR) stays, the scan goes on with the others, its trim and the temporaries, and
        the `get` is a miss."""
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self._directory_fd)


def _is_our_regular_file(entry: os.DirEntry[str]) -> bool:
    """Whether a directory entry is a regular file, not followed (a subdirectory, a symlink,
    a FIFO is never a session file nor one of our temporaries, whatever its name)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:  # it cannot tell: leave it alone
        return False


def _unusable_directory(path: str | os.PathLike[str], exc: OSError) -> ConfigError:
    """The one-line error for a session directory that failed as it was checked or first
    scanned (no such parent, no permission), naming it and the reason."""
    return ConfigError(f"cannot use session directory {os.fspath(path)}: {exc.strerror or exc}")


