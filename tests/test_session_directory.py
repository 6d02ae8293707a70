"""`iotdtls.sessions.DirectorySessionStore`: sessions in a directory the worker processes of one
server share (RES-1) and a restart finds again. One file per session, named by the hex of its
id, written atomically with mode 0600; a lifetime by the wall clock; a bound kept by scans that
are rare; a directory refused unless only this user can reach it; no secret in its repr."""

from __future__ import annotations

import errno
import fractions
import gc
import itertools
import os
import shutil
import socket
import stat
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import iotdtls._files
import iotdtls.sessions
from iotdtls.config import DEFAULT_SESSION_CACHE_SIZE, DEFAULT_SESSION_LIFETIME, Mode
from iotdtls.endpoint import _CountedStore
from iotdtls.errors import ConfigError
from iotdtls.identity import PskIdentity
from iotdtls.sessions import DirectorySessionStore, SessionState
from tests.descriptor_support import descriptors_of

PSK_SUITE = 0xC0A8
MASTER = bytes(range(100, 148))
#: The wall clock of most tests, years before the files' real modification times (which the
#: test sets back to it for the files it dates).
START = 1_000_000_000.0


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(number: int = 1) -> SessionState:
    return SessionState(
        number.to_bytes(32, "big"), PSK_SUITE, Mode.PSK, MASTER, PskIdentity(b"Client_identity")
    )


def store_in(
    tmp_path: Path,
    max_entries: int = DEFAULT_SESSION_CACHE_SIZE,
    lifetime: float = DEFAULT_SESSION_LIFETIME,
    clock: Callable[[], float] = time.time,
) -> DirectorySessionStore:
    return DirectorySessionStore(tmp_path / "sessions", max_entries, lifetime, clock=clock)


def session_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def test_a_session_is_one_private_file_named_by_its_id_in_a_private_directory(
    tmp_path: Path,
) -> None:
    store = store_in(tmp_path)
    assert stat.S_IMODE((tmp_path / "sessions").stat().st_mode) == 0o700
    state = session()
    store.put(state, now=5.0)
    path = tmp_path / "sessions" / state.session_id.hex()
    assert session_files(tmp_path / "sessions") == [path.name]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = store.get(state.session_id, now=5.0)
    assert got == state and got is not None and got.master_secret == MASTER
    store.remove(state.session_id)
    assert not path.exists()
    assert store.get(state.session_id, now=5.0) is None


def test_a_lookup_allocates_about_the_file_not_the_size_limit(tmp_path: Path) -> None:
    """Probe BA: reading a session file of about 150 bytes through a buffer of the 1 MiB
    limit (`read_regular_file`) doubled the time of a lookup (16 to 31-44 us)."""
    store = store_in(tmp_path)
    state = session()
    store.put(state, now=5.0)
    assert store.get(state.session_id, now=5.0) == state  # anything imported, cached
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        assert store.get(state.session_id, now=5.0) == state
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak


def test_the_bounded_reader_takes_a_file_of_its_limit_and_refuses_a_larger_one_unread(
    tmp_path: Path,
) -> None:
    """`read_regular_file`: a file of exactly the limit is read whole; one byte more is
    refused, also where fstat gives no size (/proc); a file whose size is over the limit is
    refused without a read (no buffer of the limit: a sparse 2 MiB file against the 1 MiB
    default)."""
    read, refused = iotdtls._files.read_regular_file, iotdtls._files.RefusedFile
    exact, over, huge = tmp_path / "exact", tmp_path / "over", tmp_path / "huge"
    exact.write_bytes(bytes(range(100)))
    over.write_bytes(bytes(101))
    with huge.open("wb") as sparse:
        sparse.truncate(2 << 20)
    assert read(str(exact), 100) == bytes(range(100))
    with pytest.raises(refused, match=r"^is larger than 100 bytes: is it the right file\?$"):
        read(str(over), 100)
    # A size the file system does not know (0 in /proc): read on up to the limit and a byte.
    cmdline = Path("/proc/self/cmdline").read_bytes()
    assert os.stat("/proc/self/cmdline").st_size == 0 and len(cmdline) > 10
    assert read("/proc/self/cmdline") == cmdline
    assert read("/proc/self/cmdline", len(cmdline)) == cmdline
    with pytest.raises(refused, match=r"^is larger than 10 bytes"):
        read("/proc/self/cmdline", 10)
    tracemalloc.start()
    try:
        with pytest.raises(refused, match=r"^is larger than 1 MiB"):
            read(str(huge))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak


def test_the_bounded_reader_stops_at_its_bound_whatever_the_size_said() -> None:
    """`_read_at_most` on a descriptor with more than it may take and a size of 0 (as /proc
    gives, or a file grown since fstat): the first read asks for a byte, the next for at most
    what was read so far or 4096 bytes, and no read goes past `most`."""
    reader, writer = os.pipe()
    try:
        os.write(writer, bytes(range(100)))
        os.close(writer)
        assert iotdtls._files._read_at_most(reader, 11, 0) == bytes(range(11))
        assert os.read(reader, 200) == bytes(range(11, 100))  # nothing more was taken
    finally:
        os.close(reader)


def test_another_store_on_the_directory_finds_the_session(tmp_path: Path) -> None:
    """Another worker, or the server after a restart, with its own monotonic clock."""
    state = session()
    store_in(tmp_path).put(state, now=1000.0)
    other = store_in(tmp_path)
    got = other.get(state.session_id, now=0.5)
    assert got is not None and got.master_secret == MASTER
    other.remove(state.session_id)
    assert store_in(tmp_path).get(state.session_id, now=0.5) is None


@pytest.mark.parametrize(("later", "live"), [(99.0, True), (100.0, False), (-100.0, False)])
def test_the_lifetime_runs_by_the_wall_clock_not_by_now(
    tmp_path: Path, later: float, live: bool
) -> None:
    """`now` is a per-process monotonic clock: the store keeps its own wall-clock expiry (an
    expired file is removed); a clock set back far does not make a session live forever."""
    clock = Clock()
    store = store_in(tmp_path, lifetime=100.0, clock=clock)
    state = session()
    store.put(state, now=0.0)
    clock.now = START + later
    assert (store.get(state.session_id, now=0.0) is not None) == live
    assert (tmp_path / "sessions" / state.session_id.hex()).exists() == live
    assert store.expired == (0 if live else 1)


@pytest.mark.parametrize("damage", ["empty", "cut", "garbage", "another_id"])
def test_a_damaged_file_is_a_miss_removed_and_counted(tmp_path: Path, damage: str) -> None:
    store = store_in(tmp_path)
    state = session()
    store.put(state, now=0.0)
    path = tmp_path / "sessions" / state.session_id.hex()
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "cut": data[:-3],
        "garbage": data[:8] + b"not a session",
        "another_id": data[:8] + session(2).to_bytes(),
    }[damage]
    path.write_bytes(damaged)
    assert store.get(state.session_id, now=0.0) is None
    assert not path.exists()
    assert store.damaged == 1
    assert store.get(state.session_id, now=0.0) is None  # now a plain miss
    assert store.damaged == 1


def test_each_damaged_or_expired_file_is_counted(tmp_path: Path) -> None:
    clock = Clock()
    store = store_in(tmp_path, lifetime=100.0, clock=clock)
    for number in (1, 2):
        store.put(session(number), now=0.0)
        (tmp_path / "sessions" / session(number).session_id.hex()).write_bytes(b"")
        assert store.get(session(number).session_id, now=0.0) is None
    for number in (3, 4):
        store.put(session(number), now=0.0)
    clock.now = START + 100  # exactly the lifetime: expired
    for number in (3, 4):
        assert store.get(session(number).session_id, now=0.0) is None
    assert (store.damaged, store.expired) == (2, 2)


def test_ids_of_1_and_32_bytes_name_sessions(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    for size in (1, 32):
        state = SessionState(bytes([7]) * size, PSK_SUITE, Mode.PSK, MASTER,
                             PskIdentity(b"Client_identity"))
        store.put(state, now=0.0)
        store.put(state, now=0.0)  # the file replaced
        found = store.get(state.session_id, now=0.0)
        assert found is not None and found.session_id == state.session_id
        store.remove(state.session_id)
        assert store.get(state.session_id, now=0.0) is None
        store.remove(state.session_id)  # no longer there: nothing to do


def _expired_get_raced(tmp_path: Path, race: Callable[[Path], object]) -> Path:
    """A session put, then got once it has expired, `race(path of its file)` run between
    `get`'s read of the file and its unlink (the store's clock is read there), as another
    process may: `get` must give a miss and count the file expired. The file's path."""
    state = session()
    path = tmp_path / "sessions" / state.session_id.hex()

    class RacingClock(Clock):
        def __call__(self) -> float:  # called by get once the file is read
            if self.now > START:
                race(path)
            return self.now

    clock = RacingClock()
    store = store_in(tmp_path, lifetime=100.0, clock=clock)
    store.put(state, now=0.0)
    clock.now = START + 100
    assert store.get(state.session_id, now=0.0) is None
    assert store.expired == 1
    return path


def test_a_file_another_store_removes_as_get_finds_it_expired_is_a_miss(tmp_path: Path) -> None:
    _expired_get_raced(tmp_path, lambda path: path.unlink(missing_ok=True))


def test_a_put_writes_its_temporary_file_under_the_name_scans_look_for_unsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put killed before its temporary file takes the session's name leaves a master
    secret: the file is named as the scans that remove such files look for. It is not synced
    (a session a crash loses costs one full handshake; a sync would cost every one)."""
    store = store_in(tmp_path)
    written: list[str] = []
    real_replace = os.replace

    def replace(source: str, target: str, **kwargs: Any) -> None:
        written.append(os.path.basename(source))
        real_replace(source, target, **kwargs)

    def no_sync(fd: int) -> None:
        raise AssertionError("fsync")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", no_sync)
    store.put(session(), now=0.0)
    assert len(written) == 1 and written[0].startswith(iotdtls.sessions.TEMPORARY_PREFIX)


def test_ids_that_name_no_file_are_misses(tmp_path: Path) -> None:
    """An empty or over-long session_id would name the directory itself or no session."""
    store = store_in(tmp_path)
    assert store.get(b"", now=0.0) is None
    assert store.get(bytes(33), now=0.0) is None
    store.remove(b"")
    assert (tmp_path / "sessions").is_dir()


def test_a_symlink_in_place_of_a_session_file_is_not_followed(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    state = session()
    elsewhere = tmp_path / "elsewhere"
    store.put(state, now=0.0)
    (tmp_path / "sessions" / state.session_id.hex()).rename(elsewhere)
    (tmp_path / "sessions" / state.session_id.hex()).symlink_to(elsewhere)
    assert store.get(state.session_id, now=0.0) is None  # ELOOP (O_NOFOLLOW): a miss
    assert (tmp_path / "sessions" / state.session_id.hex()).is_symlink()
    assert elsewhere.read_bytes()[8:] == state.to_bytes()


def refuse_unlink(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`os.unlink` of a file named `name` fails with EPERM (an immutable file: root could
    remove one denied by mode alone)."""
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(path) == name:
            raise PermissionError(errno.EPERM, "Operation not permitted", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


def fill(store: DirectorySessionStore, directory: Path, first: int, count: int) -> None:
    """`count` sessions put one second apart (by their files' modification times)."""
    for number in range(first, first + count):
        store.put(session(number), now=0.0)
        os.utime(directory / session(number).session_id.hex(), (START + number, START + number))


def test_the_directory_is_bounded_the_oldest_files_removed_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most about max_entries files, the oldest by modification time removed; the
    directory is scanned now and then, never at every put."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path, max_entries=100, clock=Clock(START + 1000))
    scans = 0
    real_scandir = os.scandir

    def counted(path: Path) -> object:
        nonlocal scans
        scans += 1
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    fill(store, directory, 1, 400)
    names = session_files(directory)
    assert 90 <= len(names) <= 110, len(names)
    kept = {int(name, 16) for name in names}
    assert max(kept) == 400 and min(kept) >= 400 - len(names)  # the newest kept
    assert 1 < scans <= 400 // 10, scans


def test_a_scan_removes_expired_files_first(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    clock = Clock(START + 100)
    store = store_in(tmp_path, max_entries=10, lifetime=50.0, clock=clock)
    fill(store, directory, 1, 60)  # the files of 1 to 50 expired by modification time
    kept = {int(name, 16) for name in session_files(directory)}
    assert kept and min(kept) > 50


def test_a_scan_removes_a_file_exactly_the_lifetime_old_as_get_would(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    fill(store_in(tmp_path, clock=Clock(START + 100)), directory, 1, 2)
    store_in(tmp_path, lifetime=99.0, clock=Clock(START + 100))  # 1 is exactly 99 s old
    assert {int(name, 16) for name in session_files(directory)} == {2}


@pytest.mark.parametrize("target", ["nothing", "a file"])
def test_a_dangling_symlink_in_place_of_a_session_file_is_left_alone(
    tmp_path: Path, target: str
) -> None:
    """A scan takes no link for a session file, even one named as one and older than the
    lifetime, nor follows it: a link to nothing, or to a regular file, is left where it is
    (not ours to remove), and the scan does not fail on it."""
    directory = tmp_path / "sessions"
    store_in(tmp_path)
    if target == "a file":
        (tmp_path / target).write_bytes(b"")
    (directory / "ab").symlink_to(tmp_path / target)
    old = time.time() - 10_000
    os.utime(directory / "ab", (old, old), follow_symlinks=False)
    store = store_in(tmp_path, lifetime=100.0)
    assert os.path.islink(directory / "ab")
    store.put(session(), now=0.0)
    assert session_files(directory) == sorted(["ab", session().session_id.hex()])


@pytest.mark.parametrize(("max_entries", "there", "kept", "puts"), [
    (21, 0, 0, 10), (10, 9, 9, 1), (20, 18, 18, 2), (21, 20, 20, 2), (10, 10, 10, 1),
    (10, 11, 9, 1), (20, 21, 18, 2),  # M20: `_files_to_keep` 11, a tenth as `// 11`
])
def test_the_next_scan_comes_after_half_the_room_left_or_a_tenth_of_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_entries: int, there: int, kept: int,
    puts: int,
) -> None:
    """A scan that finds `there` session files keeps them up to `max_entries` (beyond, the
    oldest down to nine tenths, one file at least); the next scan comes with the put that fills
    half the room left, `(max_entries - kept) // 2`, or a tenth of `max_entries` (at least 1)
    when that is more."""
    directory = tmp_path / "sessions"
    fill(store_in(tmp_path, max_entries=1000, clock=Clock(START + 100)), directory, 1, there)
    store = store_in(tmp_path, max_entries=max_entries, clock=Clock(START + 100))
    assert len(session_files(directory)) == kept
    scans: list[bool] = []
    real_scan = DirectorySessionStore._scan

    def counted(self: DirectorySessionStore, *, full: bool = False) -> None:
        scans.append(full)
        real_scan(self, full=full)

    monkeypatch.setattr(DirectorySessionStore, "_scan", counted)
    for number in range(1000, 1000 + puts):
        assert not scans
        store.put(session(number), now=0.0)
    assert scans == [False]


@pytest.mark.parametrize(("max_entries", "puts"), [(10, 1), (100, 10)])
def test_after_a_scan_that_failed_the_next_comes_after_a_tenth_of_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_entries: int, puts: int
) -> None:
    """A scan a put starts may fail (its listing: EMFILE, EIO): that put raises (the server
    counts a store failure) and the next scan comes with the put that makes a tenth of
    `max_entries` (at least one) since, not at every put nor never."""
    store = store_in(tmp_path, max_entries=max_entries, clock=Clock(START + 100))
    real_scandir = os.scandir
    listings: list[str] = []
    failing = [True]

    def listing(fd: int) -> Any:
        listings.append("failed" if failing[0] else "listed")
        if failing[0]:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", listing)
    numbers = itertools.count(1)
    with pytest.raises(OSError) as failed:  # the put that fills half the room scans
        for _ in range(max_entries):
            store.put(session(next(numbers)), now=0.0)
    assert failed.value.errno == errno.EMFILE
    assert listings == ["failed"]
    failing[0] = False
    for _ in range(puts - 1):
        store.put(session(next(numbers)), now=0.0)
    assert listings == ["failed"]
    store.put(session(next(numbers)), now=0.0)
    assert listings == ["failed", "listed"]


def test_an_entry_whose_type_the_listing_cannot_tell_is_left_alone() -> None:
    """On a file system whose listing gives no types, `is_file` asks lstat, which may fail
    (EACCES, EIO): a scan leaves such an entry alone rather than taking it for ours."""

    class Untold:
        name = "ab"

        def is_file(self, *, follow_symlinks: bool = True) -> bool:
            raise OSError(errno.EIO, "Input/output error")

    untold: Any = Untold()
    assert iotdtls.sessions._is_our_regular_file(untold) is False


def test_files_another_store_removes_during_a_scan_are_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers scan one directory: a file this scan listed may be gone before it dates it,
    and one it dated before it removes it (a temporary file of a put, an expired session, one
    of the oldest beyond the bound): the scan goes on."""
    directory = tmp_path / "sessions"
    fill(store_in(tmp_path, clock=Clock(START + 100)), directory, 1, 12)
    (directory / ".tmp-racing").write_bytes(b"")
    gone = [directory / ".tmp-racing", directory / session(1).session_id.hex(),
            directory / session(6).session_id.hex()]  # a temporary, expired, the oldest live

    listed = False  # the clock is read as the store is made too, before the listing

    class RacingClock(Clock):
        def __call__(self) -> float:  # called by the scan once the directory is listed
            if listed:
                for path in gone:
                    path.unlink(missing_ok=True)
            return self.now

    class Vanished:
        name = "ab"

        def is_file(self, *, follow_symlinks: bool = True) -> bool:
            return True  # as the listing said (a DirEntry's type comes with the list)

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    real_scandir = os.scandir

    class ListedThenGone:
        def __init__(self, path: Path) -> None:
            self._entries = real_scandir(path)

        def __enter__(self) -> Any:
            nonlocal listed
            listed = True
            return itertools.chain([Vanished()], self._entries.__enter__())

        def __exit__(self, *exc: object) -> None:
            self._entries.__exit__(*exc)

    monkeypatch.setattr(os, "scandir", ListedThenGone)
    store_in(tmp_path, max_entries=5, lifetime=100.0, clock=RacingClock(START + 105))
    assert listed
    assert {int(name, 16) for name in session_files(directory)} == {9, 10, 11, 12}


def test_every_scan_removes_the_expired_files_below_the_bound_too(tmp_path: Path) -> None:
    """Expired sessions (master secrets) do not stay on disk until the directory fills or
    their id comes back: the scan a store makes as it starts removes them, and so does each
    scan after puts, far below `max_entries`."""
    directory = tmp_path / "sessions"
    clock = Clock(START + 1000)
    store = store_in(tmp_path, max_entries=100, lifetime=100.0, clock=clock)
    for number, mtime in ((1, START + 899), (2, START + 950), (3, START + 950)):  # 1 expired
        store.put(session(number), now=0.0)
        os.utime(directory / session(number).session_id.hex(), (mtime, mtime))
    store = store_in(tmp_path, max_entries=100, lifetime=100.0, clock=clock)
    assert {int(name, 16) for name in session_files(directory)} == {2, 3}
    clock.now = START + 1100  # 2 and 3 expire too
    for number in range(4, 64):  # the next scan comes after half the room left: 48 puts
        store.put(session(number), now=0.0)  # dated now by the clock: live
    assert {int(name, 16) for name in session_files(directory)} == set(range(4, 64))


@pytest.mark.parametrize("clock_at", [START, 4_000_000_000.0])  # 2001, 2096
def test_a_put_dates_its_file_by_the_clock_so_scans_keep_what_get_finds_live(
    tmp_path: Path, clock_at: float
) -> None:
    """A file's modification time is the creation time `put` wrote in it, by `clock`, not
    the file system's time: with a clock decades behind or ahead of the file system's (a
    `clock` other than time.time, the system clock set since), a scan keeps the sessions
    `get` finds live, as it removes those it finds expired (probe CD: a clock 120 s ahead,
    lifetime 60, and every scan removed every live session)."""
    directory = tmp_path / "sessions"
    clock = Clock(clock_at + 0.123)
    store = store_in(tmp_path, lifetime=100.0, clock=clock)
    store.put(session(1), now=0.0)
    path = directory / session(1).session_id.hex()
    assert path.stat().st_mtime_ns == int.from_bytes(path.read_bytes()[:8], "big") * 10**6
    assert path.stat().st_mtime_ns == (round(clock_at * 1000) + 123) * 10**6
    clock.now = clock_at + 99
    store_in(tmp_path, lifetime=100.0, clock=clock)  # its first scan
    assert store.get(session(1).session_id, now=0.0) is not None
    clock.now = clock_at + 100.123  # exactly the lifetime: expired, by the scan as by get
    store_in(tmp_path, lifetime=100.0, clock=clock)
    assert session_files(directory) == []


def test_a_scan_removes_files_a_clock_set_back_dates_in_the_future_as_get_would(
    tmp_path: Path,
) -> None:
    """The clock set back after some puts (their files dated ahead of it): `get` takes a
    session created `lifetime` or more in the future for expired (no endless life), and so
    does a scan, which removes its file (a master secret) however few the files, rather than
    keeping it until the clock catches up (probe CD: 30 days set back, the expired files all
    stayed through 40 puts and their scans)."""
    directory = tmp_path / "sessions"
    clock = Clock(START + 30 * 86400)
    store = store_in(tmp_path, max_entries=100, lifetime=100.0, clock=clock)
    for number in (1, 2):
        store.put(session(number), now=0.0)
    clock.now = START + 30 * 86400 - 99  # set back less than the lifetime: live
    store_in(tmp_path, max_entries=100, lifetime=100.0, clock=clock)
    assert len(session_files(directory)) == 2
    clock.now = START  # set back 30 days
    store.put(session(3), now=0.0)
    store_in(tmp_path, max_entries=100, lifetime=100.0, clock=clock)
    assert {int(name, 16) for name in session_files(directory)} == {3}


def test_the_bound_trims_the_oldest_by_their_distance_from_the_clock(tmp_path: Path) -> None:
    """Beyond `max_entries` a scan removes the files oldest by `clock`, as `get` reckons a
    session's age (either way from now): a file dated 65 s ahead of a clock set back is
    older than one put 63 s ago, and goes first, rather than a live file put since."""
    directory = tmp_path / "sessions"
    clock = Clock(START)
    filling = store_in(tmp_path, max_entries=1000, lifetime=100.0, clock=clock)
    for number, created in (*((n, START - 65 + n) for n in range(2, 12)), (1, START + 65)):
        clock.now = created
        filling.put(session(number), now=0.0)
    clock.now = START  # 11 files, aged 65 (1), then 63 (2) down to 54 (11)
    store_in(tmp_path, max_entries=10, lifetime=100.0, clock=clock)  # nine tenths of 10 kept
    assert {int(name, 16) for name in session_files(directory)} == set(range(3, 12))


def test_the_files_already_there_count_from_the_start(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    fill(store_in(tmp_path, max_entries=1000), directory, 1, 50)
    store = store_in(tmp_path, max_entries=20, clock=Clock(START + 1000))
    assert len(session_files(directory)) <= 20
    store.put(session(999), now=0.0)
    assert len(session_files(directory)) <= 21


def test_two_stores_on_one_directory_keep_it_near_the_bound(tmp_path: Path) -> None:
    """Two workers each count their own puts only: the bound is approximate, not lost."""
    directory = tmp_path / "sessions"
    stores = [store_in(tmp_path, max_entries=100) for _ in range(2)]
    for number in range(1, 1001):
        stores[number % 2].put(session(number), now=0.0)
    assert len(session_files(directory)) <= 120


def test_other_files_in_the_directory_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    store = store_in(tmp_path, max_entries=5)
    (directory / "notes.txt").write_text("mine")
    (directory / ".tmp-crashed").write_bytes(b"")
    fill(store, directory, 1, 30)
    assert (directory / "notes.txt").exists() and (directory / ".tmp-crashed").exists()


@pytest.mark.parametrize(("max_entries", "there", "freed"), [
    (1000, 50, 25), (1000, 500, 100), (20, 20, 8), (20, 12, 6), (200, 40, 20), (10, 3, 1),
    (10, 1, 1),
])
def test_a_put_failing_for_want_of_room_frees_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_entries: int, there: int, freed: int
) -> None:
    """A full file system (ENOSPC) well below max_entries: the put fails (the server counts
    it), and a scan removes the oldest files, a tenth of `max_entries` (8 at least) but no
    more than half of those there (one at least), so that later puts find room rather than
    failing for good, or every other one."""
    directory = tmp_path / "sessions"
    fill(store_in(tmp_path, max_entries=1000, clock=Clock(START + 1000)), directory, 1, there)
    store = store_in(tmp_path, max_entries=max_entries, clock=Clock(START + 1000))

    def no_room(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(iotdtls.sessions, "replace_in_private_directory", no_room)
    with pytest.raises(OSError) as failed:
        store.put(session(there + 1), now=0.0)
    assert failed.value.errno == errno.ENOSPC
    kept = {int(name, 16) for name in session_files(directory)}
    assert kept == set(range(freed + 1, there + 1))  # the oldest removed
    monkeypatch.undo()
    store.put(session(there + 1), now=0.0)
    assert len(session_files(directory)) == there - freed + 1


def test_on_a_small_full_file_system_most_puts_find_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system with room for 16 session files (probe CD: a 64 KiB tmpfs), the default
    bound (1024): after each ENOSPC the store frees 8 files, so 8 puts find room before the
    next fails, one put in 9 (freeing a tenth of the files, one, every other put failed), and
    the newest sessions stay."""
    directory = tmp_path / "sessions"
    clock = Clock(START)
    store = store_in(tmp_path, clock=clock)
    real_replace = iotdtls.sessions.replace_in_private_directory

    def sixteen_files_fit(directory_fd: int, name: str, data: bytes, **kwargs: Any) -> None:
        if len(session_files(directory)) >= 16:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(directory_fd, name, data, **kwargs)

    monkeypatch.setattr(iotdtls.sessions, "replace_in_private_directory", sixteen_files_fit)
    failed = []
    for number in range(1, 17 + 9 * 9):  # 16 fit, then 9 rounds: a failure, 8 that fit
        clock.now = START + number
        try:
            store.put(session(number), now=0.0)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failed.append(number)
    assert failed == list(range(17, 17 + 9 * 9, 9))
    newest = [number for number in range(1, 17 + 9 * 9) if number not in failed][-16:]
    assert {int(name, 16) for name in session_files(directory)} == set(newest)


def test_a_scan_removes_the_temporary_files_of_killed_puts(tmp_path: Path) -> None:
    """A put killed as it wrote leaves its temporary file, a master secret no session file
    names: a scan (here the one a new store makes) removes it once a minute old, not a
    younger one (a put in progress in another process)."""
    directory = tmp_path / "sessions"
    store_in(tmp_path)
    stale, fresh = directory / ".tmp-killed", directory / ".tmp-writing"
    minute = directory / ".tmp-a-minute-old"
    for path in (stale, fresh, minute):
        path.write_bytes(MASTER)
    now = float(int(time.time()))
    for path, age in ((stale, 61), (minute, 60)):  # older than a minute, and exactly one
        os.utime(path, (now - age, now - age))
    store_in(tmp_path, clock=lambda: now)
    assert not stale.exists() and fresh.exists() and minute.exists()


def test_a_temporary_file_dated_ahead_of_a_clock_set_back_is_removed(tmp_path: Path) -> None:
    """The system clock set back after a put was killed as it wrote: its temporary file (a
    master secret) dated 30 days ahead is removed by the next scan, not kept until the clock
    catches up; one dated less than a minute ahead may be a put in progress and stays."""
    directory = tmp_path / "sessions"
    store_in(tmp_path)
    ahead, writing = directory / ".tmp-before-set-back", directory / ".tmp-writing"
    now = float(int(time.time()))
    for path, by in ((ahead, 30 * 86400), (writing, 59)):
        path.write_bytes(MASTER)
        os.utime(path, (now + by, now + by))
    store_in(tmp_path, clock=lambda: now)
    assert not ahead.exists() and writing.exists()


def test_a_temporary_file_of_a_put_in_progress_stays_whatever_the_stores_clock(
    tmp_path: Path,
) -> None:
    """A temporary file is dated by the file system as it is written, then by the store's
    `clock` before its rename: with a `clock` far from the system clock (here decades ahead)
    a scan leaves a temporary file near either now (another process's put in progress,
    which its removal would fail), and removes one far from both."""
    directory = tmp_path / "sessions"
    clock = Clock(4_000_000_000.0)  # 2096
    store_in(tmp_path, clock=clock)
    written, stamped, killed = (directory / f".tmp-{name}" for name in ("a", "b", "c"))
    for path in (written, stamped, killed):
        path.write_bytes(MASTER)
    os.utime(stamped, (clock.now - 59, clock.now - 59))
    os.utime(killed, (clock.now - 61, clock.now - 61))
    store_in(tmp_path, clock=clock)
    assert written.exists() and stamped.exists() and not killed.exists()


@pytest.mark.parametrize(("make", "problem"), [
    ("symlink", "is a symbolic link; name the directory itself"),
    ("file", "is a regular file, not a directory: name a directory"),
    ("fifo", "is a FIFO, not a directory: name a directory"),
    ("mode 0755", "is open to group or others (mode 0755): chmod 700 it or name a new directory"),
    ("mode 0710", "is open to group or others (mode 0710): chmod 700 it or name a new directory"),
    ("mode 0701", "is open to group or others (mode 0701): chmod 700 it or name a new directory"),
])
def test_a_directory_others_could_reach_is_refused_in_one_line(
    tmp_path: Path, make: str, problem: str
) -> None:
    path = tmp_path / "sessions"
    if make == "symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "real")
    elif make == "file":
        path.write_bytes(b"")
    elif make == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
        path.chmod(int(make.split()[1], 8))
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(path)
    assert str(refused.value) == f"session directory {path} {problem}"
    left = ["real", "sessions"] if make == "symlink" else ["sessions"]
    assert sorted(os.listdir(tmp_path)) == left  # nothing made, nothing removed


def access_by_the_mode_bits(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`os.access` of `directory` answers from its owner's mode bits, as for a user that is
    not root: root passes the mode bits, and the tests run as root in CI."""
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(os.fspath(path)) != directory:
            return real_access(path, mode, **kwargs)
        owner = stat.S_IMODE(os.stat(directory).st_mode) >> 6
        return owner & mode == mode

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize(("mode", "problem"), [
    (0o300, "cannot be read by this user (mode 0300): chmod 700 it or name another directory"),
    (0o500, "cannot be written by this user (mode 0500): chmod 700 it or name another directory"),
    (0o600, "cannot be searched by this user (mode 0600): chmod 700 it or name another directory"),
])
def test_a_directory_we_cannot_use_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, problem: str
) -> None:
    """Not readable (a bare PermissionError from the first scan), not writable (accepted, and
    every put failed): refused when the store is made, in one line naming the directory."""
    path = tmp_path / "sessions"
    path.mkdir(mode=0o700)
    path.chmod(mode)
    access_by_the_mode_bits(path, monkeypatch)
    try:
        with pytest.raises(ConfigError) as refused:
            DirectorySessionStore(path)
    finally:
        path.chmod(0o700)
    assert str(refused.value) == f"session directory {path} {problem}"


def test_a_directory_on_a_read_only_file_system_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sessions"
    path.mkdir(mode=0o700)
    real_access, real_statvfs = os.access, os.statvfs

    def access(where: Any, mode: int, **kwargs: Any) -> bool:
        return not mode & os.W_OK and real_access(where, mode, **kwargs)

    def statvfs(where: Any) -> Any:
        real = real_statvfs(where)
        return type("Statvfs", (), {"f_flag": real.f_flag | os.ST_RDONLY})()

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(path)
    assert str(refused.value) == (
        f"session directory {path} cannot be written by this user (mode 0700): it is on a"
        " read-only file system: name another directory"
    )


def test_a_directory_denied_by_more_than_its_mode_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode 0700 and yet not readable (an access control list, a security module): the fix is
    another directory. The access asked about is the effective ids' where os.access can tell
    (files are made with them; on Linux it cannot, and the ids are the same but in a setuid
    program)."""
    path = tmp_path / "sessions"
    path.mkdir(mode=0o700)
    asked: list[object] = []

    def access(where: Any, mode: int, **kwargs: Any) -> bool:
        asked.append(kwargs.get("effective_ids"))
        return not mode & os.R_OK

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(path)
    assert str(refused.value) == (
        f"session directory {path} cannot be read by this user (mode 0700): name another"
        " directory"
    )
    assert asked and {bool(ids) for ids in asked} == {os.access in os.supports_effective_ids}


def test_a_first_scan_that_fails_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever os.access said (root passes the mode bits; an ACL, a security module), the
    first scan failing is a ConfigError naming the directory, not a bare OSError."""
    path = tmp_path / "sessions"

    def refused_scan(where: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(where))

    monkeypatch.setattr(os, "scandir", refused_scan)
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(path)
    assert str(refused.value) == f"cannot use session directory {path}: Permission denied"


def test_a_symlink_given_with_a_trailing_slash_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "sessions").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        DirectorySessionStore(f"{tmp_path}/sessions/")


def test_an_empty_path_is_refused_not_taken_for_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore("")
    assert str(refused.value) == 'session directory is empty: name the directory ("." for this one)'


def test_a_directory_whose_parent_is_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "sessions"
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(path)
    assert str(refused.value) == (
        f"cannot use session directory {path}: No such file or directory"
    )


@pytest.mark.parametrize(("max_entries", "lifetime", "message"), [
    (0, 60.0, "session cache size must be at least 1, got 0"),
    (10, 0.0, "session lifetime must be > 0 seconds, got 0.0"),
])
def test_bad_bounds_are_refused(
    tmp_path: Path, max_entries: int, lifetime: float, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        store_in(tmp_path, max_entries, lifetime)
    assert str(refused.value) == message


def test_the_least_bounds_are_accepted(tmp_path: Path) -> None:
    """One session at most, and any lifetime above zero (here a millisecond)."""
    store = store_in(tmp_path, 1, 0.001)
    assert (store.max_entries, store.lifetime) == (1, 0.001)


@pytest.mark.parametrize(("name", "is_session"), [
    ("ab", True), ("0" * 64, True), ("0123456789abcdef", True),
    ("", False), ("a", False), ("abc", False), ("0" * 66, False), ("zz", False),
    ("AB", False), (".tmp-0123", False),
])
def test_the_files_of_sessions_are_named_by_the_hex_of_1_to_32_bytes(
    name: str, is_session: bool
) -> None:
    """What a scan dates (and may remove): the lower-case hex of a session_id of 1 to 32
    bytes, as `put` names it; any other name is left alone."""
    assert iotdtls.sessions._is_session_file_name(name) is is_session


def test_no_secret_in_the_repr(tmp_path: Path) -> None:
    store = store_in(tmp_path, max_entries=7, lifetime=60.0)
    state = session()
    store.put(state, now=0.0)
    store.get(state.session_id, now=0.0)
    shown = repr(store)
    assert shown == f"<DirectorySessionStore {str(tmp_path / 'sessions')!r} max_entries=7 " \
        "lifetime=60.0s>"
    assert MASTER.hex() not in shown and state.session_id.hex() not in shown


@pytest.mark.parametrize("clock", [5, "time.time", None])
def test_a_clock_that_is_not_callable_is_refused_when_the_store_is_made(
    tmp_path: Path, clock: Any
) -> None:
    """It was taken, then a TypeError ('int' object is not callable) at the first put."""
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(tmp_path / "sessions", clock=clock)
    assert str(refused.value) == (
        f"session store clock must be callable (like time.time), got {type(clock).__name__}"
        if clock is not None else
        "session store clock must be callable (like time.time), got None")
    assert not (tmp_path / "sessions").exists()


def plant_foreign_entries(directory: Path, when: float) -> list[Path]:
    """A subdirectory, a symlink, a FIFO and a subdirectory named as a temporary file, with
    session-file names (all hex) or a temporary's, dated `when` (long expired)."""
    subdirectory, symlink, fifo = directory / "2026", directory / "beef", directory / "cafe"
    temporary_like = directory / ".tmp-mine"
    subdirectory.mkdir()
    temporary_like.mkdir()
    symlink.symlink_to(directory.parent / "elsewhere")
    os.mkfifo(fifo)
    planted = [subdirectory, symlink, fifo, temporary_like]
    for entry in planted:
        os.utime(entry, (when, when), follow_symlinks=False)
    return planted


def test_entries_that_are_not_regular_files_are_left_alone_and_the_bound_holds(
    tmp_path: Path,
) -> None:
    """An old subdirectory, symlink or FIFO with a hex name (DIR/2026) is not a session file:
    no scan counts, dates or removes it, nor fails on it (IsADirectoryError stopped the scan
    before its trim, every later put rescanned and failed again, the directory grew past the
    bound); a restart takes the directory."""
    directory = tmp_path / "sessions"
    clock = Clock(START + 1000)
    store = store_in(tmp_path, max_entries=20, lifetime=100.0, clock=clock)
    planted = plant_foreign_entries(directory, START - 10_000)
    fill(store, directory, 1, 200)
    assert all(os.path.lexists(entry) for entry in planted)
    assert len(session_files(directory)) <= 22 + len(planted) - 1
    restarted = store_in(tmp_path, max_entries=20, lifetime=100.0, clock=clock)
    restarted.put(session(999), now=0.0)
    assert restarted.get(session(999).session_id, now=0.0) == session(999)
    assert all(os.path.lexists(entry) for entry in planted)


def test_an_entry_that_cannot_be_removed_does_not_stop_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session file that will not go (EPERM: an immutable file) is skipped: the scan
    removes the other expired files, trims, removes the stale temporaries and sets the next
    scan, rather than failing at every later put."""
    directory = tmp_path / "sessions"
    clock = Clock(START + 100)
    store = store_in(tmp_path, max_entries=20, lifetime=500.0, clock=clock)
    fill(store, directory, 1, 15)
    assert len(session_files(directory)) == 15
    stale = directory / ".tmp-killed"
    stale.write_bytes(MASTER)
    os.utime(stale, (START, START))
    stubborn = session(1).session_id.hex()
    refuse_unlink(monkeypatch, stubborn)
    clock.now = START + 2000  # all 15 expired; the stale temporary too
    for number in range(100, 200):
        store.put(session(number), now=0.0)  # no OSError
    names = session_files(directory)
    assert stubborn in names and not stale.exists()
    assert len(names) <= 23, len(names)


def test_a_get_of_an_id_named_by_a_fifo_or_a_subdirectory_is_a_miss_left_alone(
    tmp_path: Path,
) -> None:
    """A client's session_id whose hex names a FIFO in the directory does not block the
    server on opening it (no writer), nor does a subdirectory's fail it: a miss, the entry
    kept."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    os.mkfifo(directory / "cafe")
    (directory / "2026").mkdir()
    result: list[SessionState | None] = []
    getter = threading.Thread(
        target=lambda: result.append(store.get(bytes.fromhex("cafe"), now=0.0)), daemon=True
    )
    getter.start()
    getter.join(timeout=5)
    if getter.is_alive():  # blocked in open(): give it a writer, then fail
        os.close(os.open(directory / "cafe", os.O_WRONLY | os.O_NONBLOCK))
        getter.join(timeout=5)
        pytest.fail("get blocked on a FIFO")
    assert result == [None]
    assert store.get(bytes.fromhex("2026"), now=0.0) is None
    assert (directory / "cafe").exists() and (directory / "2026").is_dir()


async def _async_clock() -> float:
    return 1.0


@pytest.mark.parametrize(("clock", "message"), [
    (lambda: "x", "session store clock returned str, not a number of seconds since the epoch"),
    (lambda: float("nan"), "session store clock returned float, not a date (NaN, infinite or "
                           "beyond the years 1 to 9999)"),
    (_async_clock, "session store clock is async def: it is called synchronously (never "
                   "awaited), so it would only make a coroutine: make it a plain def"),
], ids=["str", "nan", "async"])
def test_a_clock_that_answers_no_time_is_refused_when_the_store_is_made(
    tmp_path: Path, clock: Any, message: str
) -> None:
    """Read as `wall_clock` is (`read_wall_clock`): a clock answering no number gave a raw
    TypeError from the first scan, an async def one that and "never awaited"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no coroutine left never awaited
        with pytest.raises(ConfigError) as refused:
            DirectorySessionStore(tmp_path / "sessions", clock=clock)
        gc.collect()
    assert str(refused.value) == message
    assert refused.value.__suppress_context__ or refused.value.__context__ is None


def test_a_clock_may_answer_any_real_number(tmp_path: Path) -> None:
    """As `wall_clock`: a Fraction is seconds as float() makes them."""
    store = DirectorySessionStore(tmp_path / "sessions", clock=lambda: fractions.Fraction(7, 2))
    state = session()
    store.put(state, now=0.0)
    assert store.get(state.session_id, now=0.0) == state


def test_a_directory_with_a_nul_character_is_refused_in_one_line(tmp_path: Path) -> None:
    """It was a raw ValueError ("embedded null byte") from the directory's check."""
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(f"{tmp_path}/sessions\0secret")
    assert str(refused.value) == (
        "session directory holds a NUL character, which no file name can: name the directory")


def test_a_get_of_an_id_named_by_a_symlink_or_a_socket_is_a_miss_left_alone(
    tmp_path: Path,
) -> None:
    """As the FIFO and the subdirectory: the symlink (ELOOP from O_NOFOLLOW, even one to a
    session file) and the Unix socket (ENXIO) raised OSError from `get`."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    state = session()
    store.put(state, now=0.0)
    (directory / "beef").symlink_to(directory / state.session_id.hex())
    listening = socket.socket(socket.AF_UNIX)
    with listening:
        listening.bind(os.fspath(directory / "cafe"))
        assert store.get(bytes.fromhex("beef"), now=0.0) is None
        assert store.get(bytes.fromhex("cafe"), now=0.0) is None
        assert (directory / "beef").is_symlink() and (directory / "cafe").is_socket()
    assert store.get(state.session_id, now=0.0) == state


def test_an_expired_file_get_cannot_remove_is_a_miss_left_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An immutable file (EPERM on its unlink, simulated: the tests run as root) is skipped as
    a scan skips it: `get` raised PermissionError for an expired session."""
    directory = tmp_path / "sessions"
    clock = Clock()
    store = store_in(tmp_path, lifetime=100.0, clock=clock)
    state = session()
    store.put(state, now=0.0)
    stubborn = state.session_id.hex()
    refuse_unlink(monkeypatch, stubborn)
    clock.now = START + 100
    assert store.get(state.session_id, now=0.0) is None
    assert store.expired == 1
    assert (directory / stubborn).is_file()


def test_an_expired_file_replaced_by_a_subdirectory_before_its_unlink_is_a_miss(
    tmp_path: Path,
) -> None:
    """Another process put a subdirectory in its place between `get`'s read and its unlink
    (IsADirectoryError raised from `get`): a miss, the subdirectory left alone."""

    def into_a_subdirectory(path: Path) -> None:
        if path.is_file():
            path.unlink()
            path.mkdir()

    assert _expired_get_raced(tmp_path, into_a_subdirectory).is_dir()


@pytest.mark.parametrize("error", [errno.EIO, errno.EACCES])
def test_a_session_file_that_cannot_be_read_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    """As documented: the server logs it by type and errno name and takes it as a miss."""
    store = store_in(tmp_path)
    state = session()
    store.put(state, now=0.0)
    real_open = os.open

    def failing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.path.basename(path) == state.session_id.hex():
            raise OSError(error, os.strerror(error))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(OSError) as raised:
        store.get(state.session_id, now=0.0)
    assert raised.value.errno == error


def test_the_store_keeps_to_the_directory_it_checked_when_its_path_is_swapped(
    tmp_path: Path,
) -> None:
    """The directory is held open from its check: renamed away and a symlink to a directory
    open to all put in its place, puts still write the master secrets in the directory that
    was checked, and gets read from it only (a file planted in the other is not read)."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path, max_entries=5)
    first = session(1)
    store.put(first, now=0.0)
    moved, elsewhere = tmp_path / "moved", tmp_path / "elsewhere"
    directory.rename(moved)
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    directory.symlink_to(elsewhere)
    assert store.get(first.session_id, now=0.0) == first
    for number in range(2, 12):  # and scans, which trim the moved directory
        store.put(session(number), now=0.0)
    assert os.listdir(elsewhere) == []
    assert 1 <= len(session_files(moved)) <= 5
    planted = session(99)
    (elsewhere / planted.session_id.hex()).write_bytes((moved / session(11).session_id.hex())
                                                       .read_bytes())
    assert store.get(planted.session_id, now=0.0) is None
    assert store.get(session(11).session_id, now=0.0) == session(11)
    store.remove(session(11).session_id)
    assert session(11).session_id.hex() not in os.listdir(moved)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    """`close` closes the directory's descriptor (once: a second close does nothing); a
    store used after it raises ValueError, as a closed file does."""
    with store_in(tmp_path) as store:
        store.put(session(), now=0.0)
    store.close()
    for use in (lambda: store.get(session().session_id, now=0.0),
                lambda: store.put(session(), now=0.0),
                lambda: store.remove(session().session_id),
                lambda: store.get(b"", now=0.0),  # an id no file can have: closed all the same
                lambda: store.remove(bytes(33))):
        with pytest.raises(ValueError, match=r"^<DirectorySessionStore .* closed> is closed$"):
            use()
    assert session_files(tmp_path / "sessions") == [session().session_id.hex()]


def test_a_forked_process_scanning_meanwhile_moves_no_scan_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made, then the process forked: both scan the directory at once. Each listing
    reads through a descriptor of its own: through the held one (whose duplicates share one
    position with the child's) each saw entries twice or not at all, counted more than
    `max_entries` and trimmed live sessions away."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path, max_entries=2000, clock=Clock(START + 2000))
    fill(store, directory, 1, 1500)
    counted: list[int] = []
    real_remove_expired = store._remove_expired

    def counting(dated: list[tuple[float, str]]) -> list[tuple[float, str]]:
        counted.append(len(dated))
        return real_remove_expired(dated)

    pid = os.fork()
    if pid == 0:  # the child: scan for a moment, then leave without any cleanup
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                store._scan()
        finally:
            os._exit(0)
    try:
        monkeypatch.setattr(store, "_remove_expired", counting)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            store._scan()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert counted and set(counted) == {1500}
    assert len(session_files(directory)) == 1500


@pytest.mark.parametrize(("swapped_for", "problem"), [
    ("a symlink", "was replaced as it was checked: name it again"),
    ("a file", "was replaced as it was checked: name it again"),
    ("a private directory once opened", "was replaced as it was checked: name it again"),
    ("a directory open to all", "is open to group or others (mode 0777): chmod 700 it or name a"
     " new directory"),
])
def test_the_directory_replaced_as_it_is_opened_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped_for: str, problem: str
) -> None:
    """Between its check and its opening, a symlink put in its place is not followed, and a
    file of ours put there is not opened (O_DIRECTORY): either is named as replaced. A
    directory put there is checked again by the descriptor held: one open to others is
    refused as such; one put there once the checked one is open is not the directory held."""
    directory = tmp_path / "sessions"
    directory.mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    real_private_directory = iotdtls._files.private_directory

    def put_in_its_place() -> None:
        directory.rename(tmp_path / "moved")
        if swapped_for == "a symlink":
            directory.symlink_to(tmp_path / "elsewhere")
        elif swapped_for == "a file":
            directory.touch(mode=0o600)
        else:
            directory.mkdir()
            directory.chmod(0o777 if swapped_for == "a directory open to all" else 0o700)

    def checked_then_swapped(path: Any) -> Path:
        checked = real_private_directory(path)
        if swapped_for != "a private directory once opened":
            put_in_its_place()
            return checked
        real_fstat = os.fstat

        def opened_then_swapped(fd: int) -> os.stat_result:  # the held one's fstat, first
            monkeypatch.setattr(os, "fstat", real_fstat)
            held = real_fstat(fd)
            put_in_its_place()
            return held

        monkeypatch.setattr(os, "fstat", opened_then_swapped)
        return checked

    monkeypatch.setattr(iotdtls._files, "private_directory", checked_then_swapped)
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(directory)
    assert str(refused.value) == f"session directory {directory} {problem}"


class _BytesPath:
    """An os.PathLike whose __fspath__ answers bytes."""

    def __fspath__(self) -> bytes:
        return b"/tmp/sessions"


@pytest.mark.parametrize(("given", "shown"), [
    (b"/tmp/sessions", "bytes"),
    (_BytesPath(), "_BytesPath (its __fspath__ returned bytes)"),
    (None, "None"),
], ids=["bytes", "pathlike-bytes", "None"])
def test_a_directory_given_as_no_str_is_refused_in_one_line(given: Any, shown: str) -> None:
    """bytes raised "a bytes-like object is required, not 'str'" from the NUL check."""
    with pytest.raises(TypeError) as refused:
        DirectorySessionStore(given)
    assert str(refused.value) == (
        f"session directory must be a str or an os.PathLike of str, got {shown}")


class FailingLater(Clock):
    """A wall clock that answers its first `answers` reads, then NaN."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.left = answers

    def __call__(self) -> float:
        self.left -= 1
        return self.now if self.left >= 0 else float("nan")


def test_a_clock_that_fails_at_the_first_scan_is_refused_when_the_store_is_made(
    tmp_path: Path,
) -> None:
    """It answered the check and failed at the first scan: a raw WallClockFailed came out of
    the constructor; now the one-line ConfigError of a clock refused there."""
    with pytest.raises(ConfigError) as refused:
        DirectorySessionStore(tmp_path / "sessions", clock=FailingLater(1))
    assert str(refused.value) == (
        "session store clock returned float, not a date (NaN, infinite or beyond the years 1 "
        "to 9999)")
    assert refused.value.__suppress_context__ or refused.value.__context__ is None
    assert descriptors_of(tmp_path / "sessions") == 0


def test_a_clock_failing_later_is_a_store_failure_the_server_counts(tmp_path: Path) -> None:
    """At run time the server's wrapper (`_CountedStore`) counts the WallClockFailed of a
    get or a put as any store error, a miss, rather than letting it end the handshake."""
    clock = FailingLater(100)
    store = DirectorySessionStore(tmp_path / "sessions", lifetime=100.0, clock=clock)
    state = session()
    store.put(state, now=0.0)
    counted = _CountedStore(store)
    clock.left = 0
    assert counted.get(state.session_id, 0.0) is None
    counted.put(session(2), 0.0)
    assert counted.errors == 2


def test_a_directory_removed_is_made_again_at_the_next_put(tmp_path: Path) -> None:
    """The held directory removed (`rm -rf`) while the store runs: the put that finds it gone
    fails (the server counts it) and makes the store open the path again, checked as at the
    start (made with mode 0700 when missing); the next put lands there. A symlink put at the
    path instead is refused, as at the start: puts go on failing and nothing is written
    through it."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    store.put(session(1), now=0.0)
    shutil.rmtree(directory)
    with pytest.raises(FileNotFoundError):
        store.put(session(2), now=0.0)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    store.put(session(3), now=0.0)
    assert session_files(directory) == [session(3).session_id.hex()]
    assert store.get(session(3).session_id, now=0.0) == session(3)
    shutil.rmtree(directory)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    directory.symlink_to(elsewhere)
    for number in (4, 5):
        with pytest.raises(FileNotFoundError):
            store.put(session(number), now=0.0)
    assert os.listdir(elsewhere) == []
    store.close()


def test_a_put_that_fails_after_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A put whose rename fails (a subdirectory in place of the session's file: EISDIR)
    raises, and removes its temporary file, which holds the session's master secret, rather
    than leave it to a scan a minute later."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    (directory / session().session_id.hex()).mkdir()
    with pytest.raises(IsADirectoryError):
        store.put(session(), now=0.0)
    assert os.listdir(directory) == [session().session_id.hex()]


def test_a_directory_removed_during_a_put_is_made_again_at_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removed (`rm -rf`) between a put's temporary file and its rename: the put fails with
    the rename's ENOENT (its temporary file went with the directory), and the store opens
    the path again as when the directory was gone before the put."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    real_fill = iotdtls._files._fill

    def fill_then_remove(*args: Any, **kwargs: Any) -> None:
        real_fill(*args, **kwargs)
        shutil.rmtree(directory)

    monkeypatch.setattr(iotdtls._files, "_fill", fill_then_remove)
    with pytest.raises(FileNotFoundError):
        store.put(session(1), now=0.0)
    monkeypatch.undo()
    store.put(session(2), now=0.0)
    assert session_files(directory) == [session(2).session_id.hex()]


def test_a_temporary_file_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put's temporary file is made with mode 0600 (not the umask's 0644 until its chmod)."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    real_fill = iotdtls._files._fill
    modes: list[int] = []

    def fill(file: Any, *args: Any, **kwargs: Any) -> None:
        modes.append(stat.S_IMODE(os.fstat(file.fileno()).st_mode))
        real_fill(file, *args, **kwargs)

    monkeypatch.setattr(iotdtls._files, "_fill", fill)
    umask = os.umask(0o022)
    try:
        store.put(session(), now=0.0)
    finally:
        os.umask(umask)
    assert modes == [0o600]
    assert session_files(directory) == [session().session_id.hex()]


def test_a_temporary_name_already_taken_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put's temporary file is a new file (O_EXCL): a random name already there (a
    collision, or a link planted under it) is passed over for the next one, and when all
    `_TEMPORARY_TRIES` names are taken the put fails with EEXIST, writing through none."""
    directory = tmp_path / "sessions"
    store = store_in(tmp_path)
    taken = directory / (iotdtls._files.TEMPORARY_PREFIX + "00" * 6)
    taken.write_bytes(b"someone else's")
    draws = iter([bytes(6), bytes([1] * 6)])
    monkeypatch.setattr(iotdtls._files.os, "urandom", lambda n: next(draws))
    store.put(session(), now=0.0)
    assert taken.read_bytes() == b"someone else's"
    assert session_files(directory) == [session().session_id.hex()]
    monkeypatch.setattr(iotdtls._files.os, "urandom", lambda n: bytes(n))
    with pytest.raises(FileExistsError) as failed:
        store.put(session(2), now=0.0)
    assert (failed.value.errno, failed.value.strerror) == (
        errno.EEXIST, "no free name for a temporary file")
    assert taken.read_bytes() == b"someone else's"
