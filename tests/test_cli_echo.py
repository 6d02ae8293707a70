"""The echo commands' parts, in this process: stdin cut into lines (`StdinLines`), the session
file of `client --session-file` (RES-1, a secret: mode 0600, a damaged one ignored), the echo
handler, and the client's whole conversation (`_talk`) against an echo server on loopback.
test_cli.py runs the same commands as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import io
import logging
import multiprocessing
import os
import pickle
import re
import signal
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from iotdtls import aio, loop, workers
from iotdtls._addresses import (
    UnusableAddress,
    UnusableName,
    format_address,
    listening_on,
    reaching,
    resolve,
    socket_error,
    unknown_interface,
)
from iotdtls.chaincache import ChainCache
from iotdtls.cli import echo, main
from iotdtls.cli.common import UsageError
from iotdtls.config import (
    CONSTRAINED_RETRANSMIT,
    RFC6347_RETRANSMIT,
    ClientConfig,
    Mode,
    ServerConfig,
)
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    DatagramTooLarge,
    HandshakeTimeout,
    PortUnreachable,
)
from iotdtls.identity import PskIdentity
from iotdtls.sessions import DirectorySessionStore, SessionState
from tests.aio_support import (
    client_config,
    eventually,
    log_to_file,
    server_config,
    signal_fallback,
)
from tests.descriptor_support import descriptors_of
from tests.interop_support import AlertingServer
from tests.memory_link import legacy_server
from tests.peers import LOCALHOST, PSK_HEX, Pki, free_udp_port
from tests.pubkey_support import x509_configs


def lines_of(
    stdin: object, monkeypatch: pytest.MonkeyPatch, limit: int | None = None
) -> list[bytes | None]:
    """What `StdinLines` yields for `stdin` (as sys.stdin) up to and with the final None."""
    async def main() -> list[bytes | None]:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdin", stdin)
            lines = echo.StdinLines(asyncio.get_running_loop(), limit)
        got: list[bytes | None] = []
        while True:
            line = await asyncio.wait_for(lines.get(), 5.0)
            got.append(line)
            if line is None:
                lines.close()
                return got

    return asyncio.run(main())


# CRLF or LF ends a line; other trailing bytes, spaces and X included, are the line's own.
EXPECTED = [b"one", b"two ", b"", b"boX", b"last without newline X", None]
TEXT = b"one\r\ntwo \n\nboX\r\nlast without newline X\r"


@pytest.mark.parametrize(
    ("text", "expected"),
    [(TEXT, EXPECTED), (b"spaces stay \r", [b"spaces stay ", None])],
)
def test_stdin_lines_from_a_regular_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, expected: list[bytes | None]
) -> None:
    """A file cannot be watched by the loop: it is read at once, and ends."""
    path = tmp_path / "input.txt"
    path.write_bytes(text)
    with open(path, encoding="utf-8") as stdin:
        assert lines_of(stdin, monkeypatch) == expected


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A pipe as stdin: (its reading end as a text file, the writing fd)."""
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as raw, io.TextIOWrapper(raw) as reader:
        try:
            yield reader, write_fd
        finally:
            with contextlib.suppress(OSError):  # the test closed it to end the input
                os.close(write_fd)


def test_stdin_lines_from_a_pipe_across_chunks(
    pipe: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe is watched by the loop; a line split over two writes comes out whole."""
    reader, write_fd = pipe
    os.write(write_fd, TEXT[:6])  # "one\r\nt"
    os.write(write_fd, TEXT[6:])
    os.close(write_fd)
    assert lines_of(reader, monkeypatch) == EXPECTED


def test_a_read_error_on_stdin_ends_the_input(
    pipe: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe that fails to read (EIO) ends the input like EOF: nothing is made up."""
    reader, write_fd = pipe
    os.write(write_fd, b"never read\n")

    def broken(fd: int, size: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(echo.os, "read", broken)
    assert lines_of(reader, monkeypatch) == [None]


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["then-more", "at-eof"])
def test_a_line_longer_than_a_datagram_is_skipped_not_kept(
    pipe: tuple[io.TextIOWrapper, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ending: bytes,
) -> None:
    """A 64 MB line was gathered whole, each 64 KiB chunk copying all before it (23 s, 227
    MB), to be refused by send(); past the most one datagram carries nothing more of it is
    kept, and it is skipped with one warning."""
    reader, write_fd = pipe
    long_line = b"x" * (4 * 1024 * 1024 + 5)
    after = b"next\n" if ending else b""
    kept: list[int] = []
    feed = echo.StdinLines._feed

    def watched(self: echo.StdinLines, chunk: bytes) -> None:
        feed(self, chunk)
        kept.append(len(self._pending))

    monkeypatch.setattr(echo.StdinLines, "_feed", watched)

    def write() -> None:
        with open(write_fd, "wb", closefd=True) as out:
            out.write(b"before\n" + long_line + ending + after)

    writer = threading.Thread(target=write)
    writer.start()
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    try:
        got = lines_of(reader, monkeypatch, limit=1000)
    finally:
        writer.join(10.0)
    assert got == [b"before", *([b"next"] if ending else []), None]
    assert max(kept) <= 1001  # never more than a datagram (and a "\r")
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage() == (
        f"line not sent: {len(long_line)} bytes of application data do not fit one datagram "
        "(at most 1000 bytes)")


def test_lines_at_the_edges_of_the_limit_and_of_the_chunks(
    pipe: tuple[io.TextIOWrapper, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A line of `limit` bytes and its "\r" (`limit` + 1 pending) is kept whole, one byte more
    is skipped; the end of a skipped line found at the very start of the next chunk ends it
    there, so the line after it is sent."""
    reader, write_fd = pipe
    os.write(write_fd, b"r")  # readable for the loop: the reads below are the chunks
    chunks = [b"a" * 1002, b"\nafter\n", b"b" * 1000 + b"\r", b"\n", b"c" * 1002, b"\n"]

    def read(fd: int, size: int) -> bytes:
        return chunks.pop(0) if chunks else b""

    monkeypatch.setattr(echo.os, "read", read)
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    assert lines_of(reader, monkeypatch, limit=1000) == [b"after", b"b" * 1000, None]
    warned = [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"]
    assert [w.split(":")[1].split()[0] for w in warned] == ["1002", "1002"]


def test_no_stdin_at_all_is_an_empty_input(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lines_of(None, monkeypatch) == [None]


# -- the session file ------------------------------------------------------------------------


def a_session() -> SessionState:
    return SessionState(os.urandom(32), 0xC0A8, Mode.PSK, os.urandom(48), PskIdentity(b"dev1"))


@pytest.mark.req("RES-1")
def test_session_file_round_trip_is_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "iotdtls.cli")
    file = echo.SessionFile(str(tmp_path / "session"))
    assert file.load() is None  # none yet: a full handshake
    session = a_session()
    file.save(session)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    loaded = file.load()
    assert loaded == session and loaded is not None
    assert loaded.master_secret == session.master_secret
    assert caplog.messages == []
    file.save(None)  # no session to keep (the server gave no session_id)
    assert not file.path.exists()
    assert caplog.messages == [  # one info line (-v) says why no file was saved
        f"the server gave no session to resume (no session_id): nothing saved in {file.path}"]
    file.discard()  # already gone: no error


@pytest.mark.req("RES-1")
def test_a_session_file_through_a_symlink_writes_and_removes_the_file_it_points_to(
    tmp_path: Path,
) -> None:
    """The link was replaced by a regular file, leaving the old session (its master secret)
    in the file it pointed to, which `discard` left there too; both now act on that file, the
    link stays, and messages name the path given."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "real" / "s.sess"
    link = tmp_path / "links" / "s.sess"
    link.symlink_to(Path("..", "real", "s.sess"))
    echo.SessionFile(str(real)).save(a_session())
    file = echo.SessionFile(str(link))
    file.check()
    assert file.path == link
    newer = a_session()
    file.save(newer)
    assert link.is_symlink() and file.load() == newer
    assert echo.SessionFile(str(real)).load() == newer
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["links", "real", "s.sess", "s.sess"]
    file.discard()  # after a failed handshake: the secret goes, the link stays (dangling)
    assert not real.exists() and link.is_symlink()
    file.save(newer)  # made again through the link
    assert link.is_symlink() and echo.SessionFile(str(real)).load() == newer
    astray = tmp_path / "links" / "astray"  # to a directory that is not there
    astray.symlink_to(Path("..", "gone", "s.sess"))
    with pytest.raises(UsageError) as refused:
        echo.SessionFile(str(astray)).check()
    assert str(refused.value) == (
        f"cannot write --session-file {astray}: No such file or directory")


def test_a_damaged_session_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "session"
    path.write_bytes(b"not a session")
    path.chmod(0o600)
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    assert echo.SessionFile(str(path)).load() is None
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage() == (
        "ignoring --session-file: not a session saved by this version of iotdtls (message "
        "truncated: need 15 bytes, have 13)"
    )
    unreadable = tmp_path / "a directory"
    unreadable.mkdir()
    with pytest.raises(UsageError) as refused:  # put there after `check`, which refuses it
        echo.SessionFile(str(unreadable)).load()
    assert str(refused.value) == (
        f"--session-file {unreadable} is a directory, not a regular file")


# -- the echo handler -------------------------------------------------------------------------


class FakeSession:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        if len(data) > self.limit:
            raise DatagramTooLarge(len(data), self.limit, 1232)
        self.sent.append(data)


def test_echo_sends_back_and_only_warns_when_a_reply_cannot_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = FakeSession(limit=4)
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    served = cast(aio.ServerSession, session)
    echo.echo.datagram_received(served, b"ping")
    echo.echo.datagram_received(served, b"too long")
    assert session.sent == [b"ping"]
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage().startswith("reply not sent: 8 bytes of application data")


# -- the client's conversation -------------------------------------------------------------------


class Recording(aio.DatagramHandler):
    """The echo handler, noting for each handshake whether it resumed a session."""

    def __init__(self) -> None:
        self.resumed: list[bool] = []

    def session_started(self, session: aio.ServerSession) -> None:
        self.resumed.append(session.resumed)

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        echo.echo.datagram_received(session, data)


async def talk_once(
    port: int,
    text: bytes,
    config: ClientConfig,
    session_file: echo.SessionFile | None = None,
    cache: ChainCache | None = None,
) -> None:
    """`_talk` with `text` on stdin (a pipe) against the server on loopback `port`."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, text)
    os.close(write_fd)
    with open(read_fd, "rb") as raw, io.TextIOWrapper(raw) as reader:
        saved = sys.stdin
        sys.stdin = reader
        try:
            await echo._talk(config, LOCALHOST, port, cache, session_file)
        finally:
            sys.stdin = saved


def talk(
    texts: list[bytes],
    config: ClientConfig,
    session_file: echo.SessionFile | None = None,
    *,
    cache: ChainCache | None = None,
    serving: ServerConfig | None = None,
) -> list[bool]:
    """One `_talk` per text against one echo server on loopback (PSK unless `serving` says
    otherwise); returns, for each handshake the server completed, whether it resumed a
    session."""
    handler = Recording()

    async def main() -> None:
        server = await aio.serve(handler, LOCALHOST, 0, serving or server_config())
        try:
            for text in texts:
                await talk_once(server.address[1], text, config, session_file, cache)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))
    return handler.resumed


def test_the_client_sends_each_line_and_prints_each_reply(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert talk([b"first\nsecond\r\n"], client_config()) == [False]
    out, _err = capsysbinary.readouterr()
    assert out == b"first\nsecond\n"


def test_replies_with_stdout_closed_end_the_talk_with_an_os_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started with stdout closed (`>&-`: sys.stdout is None): the command's one line."""
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OSError, match=r"^cannot print: stdout is closed$"):
        talk([b"one\n"], client_config())


def test_a_line_too_long_for_the_mtu_is_skipped_with_a_warning(
    capsysbinary: pytest.CaptureFixture[bytes], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    talk([b"a\n" + b"x" * 400 + b"\nb\n"], client_config(mtu=300))
    out, _err = capsysbinary.readouterr()
    assert out == b"a\nb\n"
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage().startswith("line not sent: 400 bytes of application data")


def test_the_client_keeps_the_servers_chain_in_its_cache(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--cache-dir: the chain the server sent is kept for the next run (RFC 7924)."""
    client, server = x509_configs()
    cache = ChainCache(tmp_path / "chains")
    talk([b"one\n"], client, cache=cache, serving=server)
    assert capsysbinary.readouterr().out == b"one\n"
    (entry,) = cache.directory.iterdir()
    assert entry.stat().st_size > 0


@pytest.mark.req("RES-1")
@pytest.mark.parametrize("with_file", [True, False])
def test_a_fatal_alert_ends_the_talk_and_its_session_file(tmp_path: Path, with_file: bool) -> None:
    """RFC 5246 §7.2.2: a session ended by a fatal alert must not be resumed: the file saved
    after the handshake goes; the alert is what `_talk` raises (the command's error line)."""
    file = echo.SessionFile(str(tmp_path / "session")) if with_file else None
    with AlertingServer() as server, pytest.raises(AlertReceived) as ended:
        asyncio.run(asyncio.wait_for(
            talk_once(server.port, b"provoke\n", client_config(), file), 10.0))
    assert ended.value.alert is AlertDescription.internal_error
    assert file is None or not file.path.exists()


@pytest.mark.req("RES-1")
def test_the_session_file_resumes_the_next_run(tmp_path: Path) -> None:
    file = echo.SessionFile(str(tmp_path / "session"))
    assert talk([b"hello\n", b"again\n"], client_config(), file) == [False, True]
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600


NO_EMS_NOT_SAVED = (
    "the session was made without the extended master secret, so it is never "
    "resumed (RFC 7627 §5.3): nothing saved in {}"
)


@pytest.mark.req("RES-1", "RES-3")
def test_the_session_file_says_why_no_session_was_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that keeps no sessions gives no session_id: -v says so. A session made without
    the extended master secret (--allow-no-ems, a server from before RFC 7627) is never
    resumed, whatever session_id the server gave: -v said "no session_id" for it too, while
    OpenSSL's s_server had sent one (probe BU F3); it now names the real reason."""
    caplog.set_level(logging.INFO, "iotdtls.cli")
    file = echo.SessionFile(str(tmp_path / "session"))
    talk([b"hello\n"], client_config(), file, serving=server_config(session_cache_size=0))
    assert not file.path.exists()
    assert [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"] == [
        f"the server gave no session to resume (no session_id): nothing saved in {file.path}"]
    caplog.clear()
    legacy_server(monkeypatch)
    talk([b"hello\n"], client_config(require_extended_master_secret=False), file,
         serving=server_config(require_extended_master_secret=False))
    assert not file.path.exists()
    assert [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"] == [
        NO_EMS_NOT_SAVED.format(file.path)]


@pytest.mark.req("RES-1")
def test_a_saved_session_that_fails_its_handshake_is_dropped(tmp_path: Path) -> None:
    """A saved session the server cannot resume correctly (here its master secret damaged)
    failed every later run with "handshake timed out" while the file was kept; the failure now
    removes the file and says so, and the next run makes a full handshake. It comes at once
    (it took the whole handshake timeout): the server's Finished does not authenticate, a
    decrypt_error (RFC 5246 §7.3, §7.4.9)."""
    file = echo.SessionFile(str(tmp_path / "session"))
    handler = Recording()
    config = client_config()  # a handshake timeout of 10 s

    async def main() -> None:
        server = await aio.serve(handler, LOCALHOST, 0, server_config())
        try:
            port = server.address[1]
            await talk_once(port, b"one\n", config, file)
            saved = file.load()
            assert saved is not None
            damaged = bytes([saved.master_secret[0] ^ 1]) + saved.master_secret[1:]
            file.save(dataclasses.replace(saved, master_secret=damaged))
            started = time.monotonic()
            with pytest.raises(echo.SessionDropped) as failed:
                await talk_once(port, b"two\n", config, file)
            assert time.monotonic() - started < 2.0
            assert isinstance(failed.value.__cause__, AlertSent)
            assert failed.value.__cause__.alert is AlertDescription.decrypt_error
            assert failed.value.__cause__.resuming  # the server took the session up
            assert str(failed.value) == (
                "sent fatal alert decrypt_error: the peer's Finished record does not "
                f"authenticate; the saved session in {file.path} was dropped: the next run "
                "makes a full handshake")
            assert not file.path.exists()
            await talk_once(port, b"three\n", config, file)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))
    assert handler.resumed == [False, False]  # the damaged session never completed
    assert file.load() is not None


@pytest.mark.req("RES-1")
def test_a_failed_handshake_without_a_saved_session_is_told_as_it_is(tmp_path: Path) -> None:
    """With --session-file but nothing saved yet (a first run), a handshake refused with a
    fatal alert (here a wrong key: decrypt_error, PSK-4) is that alert: no session was
    offered, so none is said to be dropped."""
    file = echo.SessionFile(str(tmp_path / "session"))
    wrong_key = client_config(psk=bytes(16))

    async def main() -> None:
        server = await aio.serve(Recording(), LOCALHOST, 0, server_config())
        try:
            await talk_once(server.address[1], b"one\n", wrong_key, file)
        finally:
            await server.close()

    with pytest.raises(AlertReceived) as failed:
        asyncio.run(asyncio.wait_for(main(), 10.0))
    assert not isinstance(failed.value, echo.SessionDropped)
    assert failed.value.alert is AlertDescription.decrypt_error
    assert not file.path.exists()


@pytest.mark.req("RES-1")
@pytest.mark.parametrize("peer", ["silent", "nothing listening"])
def test_a_handshake_failing_before_the_server_took_the_session_keeps_the_file(
    tmp_path: Path, peer: str
) -> None:
    """A device that wakes while its server cannot be reached (no answer within the deadline,
    or nothing listening) keeps its saved session: the session is not what failed, and it
    still saves a full handshake once the server is back."""
    file = echo.SessionFile(str(tmp_path / "session"))
    quick = client_config(handshake_timeout=0.5)
    assert talk([b"one\n"], quick, file) == [False]
    kept = file.path.read_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        port = silent.getsockname()[1]
        if peer == "nothing listening":
            silent.close()
        expected = HandshakeTimeout if peer == "silent" else PortUnreachable
        with pytest.raises(expected) as failed:
            asyncio.run(asyncio.wait_for(talk_once(port, b"two\n", quick, file), 10.0))
    assert not isinstance(failed.value, echo.SessionDropped)
    assert not (isinstance(failed.value, HandshakeTimeout) and failed.value.resuming)
    assert file.path.read_bytes() == kept


@pytest.mark.req("RES-1")
def test_a_session_not_offered_is_kept_when_the_handshake_fails(tmp_path: Path) -> None:
    """A run with a mistyped key does not offer the session (made with another credential of
    ours) and fails with decrypt_error: the session is not what failed, and the next run with
    the right key still resumes it."""
    file = echo.SessionFile(str(tmp_path / "session"))
    handler = Recording()
    wrong = client_config(psk=bytes(range(16)))

    async def main() -> None:
        server = await aio.serve(handler, LOCALHOST, 0, server_config())
        try:
            port = server.address[1]
            await talk_once(port, b"one\n", client_config(), file)
            kept = file.path.read_bytes()
            with pytest.raises(AlertReceived) as failed:
                await talk_once(port, b"two\n", wrong, file)
            assert failed.value.resuming is False
            assert file.path.read_bytes() == kept
            await talk_once(port, b"three\n", client_config(), file)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))
    assert handler.resumed == [False, True]


@pytest.mark.req("EXT-5")
@pytest.mark.parametrize(
    ("serving", "warning", "notes"),
    [
        ({"heartbeat": True}, None, ["negotiated", "negotiated"]),
        ({}, "the server did not agree to heartbeats (RFC 6520)",
         ["not negotiated by the peer", None]),
        ({"heartbeat": True, "answer_heartbeats": False},
         "the server accepts no heartbeat requests (peer_not_allowed_to_send, RFC 6520)",
         ["negotiated, but the peer accepts no requests", "negotiated"]),
    ],
    ids=["agreed", "not-negotiated", "not-answered"],
)
def test_heartbeats_the_server_refuses_are_a_warning(
    caplog: pytest.LogCaptureFixture,
    serving: dict[str, Any],
    warning: str | None,
    notes: list[str | None],
) -> None:
    """--heartbeat did nothing, silently, with a server that left heartbeats out of its hello
    or announced peer_not_allowed_to_send (RFC 6520 §2); the client now warns once after the
    handshake (the library's warning: any client with `keepalive_interval`, the CLI's too).
    At -v (DEBUG) each side's "handshake complete" line says what was negotiated:
    per peer for a server, no flood of warnings (`notes`: the client's, the server's; None for
    a server that did not ask)."""
    caplog.set_level(logging.DEBUG, "iotdtls")
    config = client_config(heartbeat=True, keepalive_interval=5.0)
    talk([b"one\n"], config, serving=server_config(**serving))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ([] if warning is None else [
        f"{warning}: no keep-alive heartbeat will go on this association"])
    complete = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("handshake complete: suite")]
    said = [line.partition(", heartbeats: ")[2] or None for line in complete]
    assert sorted(said, key=str) == sorted(notes, key=str)


# -- the commands' flags, as the client and server receive them ----------------------------------


@pytest.fixture
def talks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of each `_talk` the client command starts (which then does nothing)."""
    seen: list[tuple[Any, ...]] = []

    async def recorded(*args: Any) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(echo, "_talk", recorded)
    return seen


def test_client_flags_reach_its_configuration(talks: list[tuple[Any, ...]], tmp_path: Path) -> None:
    seen = talks
    session = tmp_path / "session"
    status = main([
        "client", "gw.example:6000", "--psk-identity", "dev1", "--psk", PSK_HEX,
        "--timeout", "7", "--mtu", "600", "--keylog", str(tmp_path / "k.log"), "--retries", "2",
        "--retransmit", "9",
        "--max-fragment-length", "512", "--heartbeat", "3", "--session-file", str(session),
    ])
    assert status == 0
    [(config, host, port, cache, session_file)] = seen
    assert (host, port, cache) == ("gw.example", 6000, None)
    assert isinstance(session_file, echo.SessionFile) and session_file.path == session
    assert (config.psk_identity, config.server_name) == (b"dev1", "gw.example")
    assert (config.handshake_timeout, config.mtu) == (7.0, 600)
    assert config.keylog_file == str(tmp_path / "k.log")
    assert config.retry is not None and config.retry.attempts == 3
    assert config.max_fragment_length == 512
    assert config.heartbeat and config.keepalive_interval == 3.0
    assert config.retransmit == CONSTRAINED_RETRANSMIT
    assert logging.getLogger("iotdtls.aio").level == logging.NOTSET  # a client: no INFO lines
    seen.clear()
    assert main(["client", "gw.example:6000", "--psk-identity", "dev1", "--psk", PSK_HEX]) == 0
    [(config, _host, _port, _cache, session_file)] = seen
    assert config.retry is None and session_file is None and not config.heartbeat
    assert config.handshake_timeout == 30.0 and config.retransmit == RFC6347_RETRANSMIT
    with pytest.raises(SystemExit):  # RFC 6066 §4 has four lengths only
        main(["client", "h:1", "--psk-identity", "a", "--psk", "01", "--max-fragment-length",
              "1000"])


def test_client_chain_cache_flag_reaches_the_conversation(
    talks: list[tuple[Any, ...]], tmp_path: Path, pki: Pki
) -> None:
    assert main(["client", "localhost:6000", "--cafile", str(pki.ca_crt),
                 "--cache-dir", str(tmp_path)]) == 0
    [(_config, _host, _port, cache, _session)] = talks
    assert isinstance(cache, ChainCache)


@pytest.mark.req("RES-1")
def test_a_session_file_that_cannot_be_written_is_refused_before_connecting(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found only after the handshake, it cost the handshake and stdin's data; a file that is
    missing is fine (made after the handshake), so is a damaged session (a warning)."""
    a_file = tmp_path / "a file"
    a_file.write_bytes(b"not a directory")
    for path, problem in [
        (tmp_path / "missing" / "s.bin", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (a_file / "s.bin", "Not a directory"),
    ]:
        status = main(["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
                       "--session-file", str(path)])
        assert (status, capsys.readouterr().err, talks) == (
            2, f"iotdtls: error: cannot write --session-file {path}: {problem}\n", [])
    assert sorted(tmp_path.iterdir()) == [a_file]  # the trial file in the directory is gone
    a_file.write_bytes(b"iotdtls-session\x01")  # of another version
    a_file.chmod(0o600)
    for path in (tmp_path / "new", a_file):
        assert main(["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
                     "--session-file", str(path)]) == 0
    assert len(talks) == 2


def test_a_session_file_that_is_not_a_regular_file_is_refused_before_connecting(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO blocked the client for ever in reading it, and as root a device (/dev/null) was
    replaced by a file holding the master secret; "" was taken for the current directory.
    Each is refused in one line before any socket, and neither file is opened: /dev/null is
    only stat'ed (`talks` stands in for the conversation)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    through_a_link = tmp_path / "link"
    through_a_link.symlink_to("/dev/null")
    for path, message in [
        (str(fifo), f"--session-file {fifo} is a FIFO, not a regular file"),
        ("/dev/null", "--session-file /dev/null is a character device, not a regular file"),
        (str(through_a_link), f"--session-file {through_a_link} is a character device, not a "
                              "regular file"),
        ("", "--session-file is empty"),
    ]:
        status = main(["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
                       "--session-file", path])
        err = capsys.readouterr().err
        assert (status, talks) == (2, [])
        assert err.startswith(f"iotdtls: error: {message}: give the file to keep the session in")
        assert err.count("\n") == 1
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and through_a_link.is_symlink()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")  # made (through the link) after the handshake
    assert main(["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
                 "--session-file", str(dangling)]) == 0


def test_a_session_file_through_another_users_symlink_is_refused_before_connecting(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    give_away: Callable[[Path], str], in_shared_dir: Callable[[str], Path],
) -> None:
    """A dangling link another user planted in a shared directory made the client write the
    session (its master secret) into that user's directory: only links of this user, root or
    the directory's owner are followed there; another's is refused in one line naming it and
    its owner. In a directory only its owner writes, the link is followed (as the kernel's
    fs.protected_symlinks does): an admin's link there failed the same way."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    link = in_shared_dir("s.sess")
    link.symlink_to(theirs / "s.sess")
    owner = give_away(link)
    command = ["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
               "--session-file"]
    status = main([*command, str(link)])
    assert (status, talks, list(theirs.iterdir())) == (2, [], [])
    assert capsys.readouterr().err == (
        f"iotdtls: error: cannot write --session-file {link}: {link} is a symbolic link owned "
        f"by {owner}, who could point it anywhere: name the file itself\n")
    tmp_path.chmod(0o755)
    private = tmp_path / "private.sess"
    private.symlink_to(theirs / "s.sess")
    give_away(private)
    assert main([*command, str(private)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.req("RES-1")
def test_a_session_file_another_user_could_have_written_is_refused_before_connecting(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    give_away: Callable[[Path], str], in_shared_dir: Callable[[str], Path],
) -> None:
    """A session file another user planted (a full handshake of theirs with the same server,
    at a path in /tmp) was resumed: the client's traffic ran under a master secret that user
    knew (probe BJ, F1). In a sticky directory a non-root client then failed at every run to
    replace it ("Operation not permitted"), without saying why. Another user's file, or one
    of ours open to group or others, is refused in one line before connecting, as the key
    log is, and left as it is."""
    planted = in_shared_dir("victim.sess")
    planted.write_bytes(a_session().to_bytes())
    planted.chmod(0o600)
    owner = give_away(planted)
    command = ["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX,
               "--session-file"]
    before = planted.read_bytes()
    assert main([*command, str(planted)]) == 2
    assert capsys.readouterr().err == (
        f"iotdtls: error: --session-file {planted} is owned by {owner}, not by this user: name "
        "a file of your own (another user could have written it)\n")
    assert planted.read_bytes() == before and talks == []
    ours = tmp_path / "open.sess"
    ours.write_bytes(before)
    for mode in (0o644, 0o620, 0o604):
        ours.chmod(mode)
        assert main([*command, str(ours)]) == 2
        assert capsys.readouterr().err == (
            f"iotdtls: error: --session-file {ours} is open to group or others (mode "
            f"{mode:04o}): chmod 600 it or name a new file\n")
        assert ours.read_bytes() == before and talks == []
    ours.chmod(0o600)
    assert main([*command, str(ours)]) == 0 and len(talks) == 1


@pytest.mark.req("RES-1")
def test_a_session_file_swapped_after_its_check_is_refused_unread(
    tmp_path: Path, give_away: Callable[[Path], str],
) -> None:
    """`load` read the file with `Path.read_bytes`: a FIFO put there after `check` blocked
    the client for ever in opening it, and another user's file was read as the session to
    offer (probe BJ, F1). It reads through `read_regular_file` (never blocking) and checks the
    file it opened (fstat) as `check` does: either is the same one-line refusal."""
    path = tmp_path / "s.sess"
    file = echo.SessionFile(str(path))
    file.check()  # nothing there yet: made after the handshake
    os.mkfifo(path)

    def blocked(signum: int, frame: Any) -> None:
        raise TimeoutError("load() blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(UsageError) as refused:
            file.load()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert str(refused.value) == f"--session-file {path} is a FIFO, not a regular file"
    path.unlink()
    path.write_bytes(a_session().to_bytes())
    path.chmod(0o600)
    assert file.load() is not None
    path.chmod(0o640)
    with pytest.raises(UsageError) as refused:
        file.load()
    assert str(refused.value) == (
        f"--session-file {path} is open to group or others (mode 0640): chmod 600 it or name "
        "a new file")
    path.chmod(0o600)
    owner = give_away(path)
    with pytest.raises(UsageError) as refused:
        file.load()
    assert str(refused.value) == (
        f"--session-file {path} is owned by {owner}, not by this user: name a file of your own "
        "(another user could have written it)")


@pytest.mark.req("RES-1")
def test_a_session_file_far_larger_than_a_session_is_refused_unread(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A file of ours starting like a session was read whole, however large (300 MiB: 639 MiB
    of memory, probe BJ); a session is a few hundred bytes, a few kilobytes with a certificate
    chain. Over `MAX_SESSION_FILE` it is refused before connecting, unread and left as it is,
    and `load` refuses it too (grown after the check)."""
    path = tmp_path / "big.sess"
    session = a_session().to_bytes()
    path.write_bytes(session + bytes(echo.MAX_SESSION_FILE - len(session)))
    path.chmod(0o600)
    file = echo.SessionFile(str(path))
    file.check()  # at the limit: a damaged session, ignored with a warning then replaced
    assert file.load() is None
    with path.open("ab") as grown:
        grown.write(b"\0")
    command = ["client", "127.0.0.1:9", "--psk-identity", "dev1", "--psk", PSK_HEX]
    assert main([*command, "--session-file", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"iotdtls: error: --session-file {path} is larger than {echo.MAX_SESSION_FILE} bytes: "
        "is it the right file?\n")
    assert talks == [] and path.stat().st_size == echo.MAX_SESSION_FILE + 1
    with pytest.raises(UsageError, match="is larger than"):
        file.load()


@pytest.mark.req("RES-1")
def test_a_session_file_is_never_a_file_of_another_flag_nor_other_data(
    talks: list[tuple[Any, ...]], tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    """`--psk-file dup.psk --session-file dup.psk` only warned "ignoring --session-file" and
    then wrote the session over the keys; a key, a certificate or any file that is not a
    session was lost the same way. Both are refused before connecting, in one line, and the
    file is left as it was; through a symlink too. The key and certificate files are read
    first, so they hold data that is not a session; the --keylog file may be missing or empty,
    so it is compared by path (by `prepare_keylog`, which refuses it first)."""
    keys = tmp_path / "dup.psk"
    keys.write_bytes(b"dev1:" + PSK_HEX.encode() + b"\n")
    keys.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(keys)
    psk = ["client", "127.0.0.1:9", "--psk-file", str(keys)]
    keylog = tmp_path / "k.log"
    other_data = "holds something else than a saved session: give another path"
    for command, path, problem in [
        (psk, keys, other_data),
        (psk, link, other_data),
        (["client", "localhost:9", "--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt),
          "--key", str(pki.client_key)], pki.client_key, other_data),
        (["client", "127.0.0.1:9", "--peer-rpk", str(pki.client_pub), "--peer-rpk",
          str(pki.server_pub)], pki.server_pub, other_data),
    ]:
        before = Path(path).read_bytes() if Path(path).exists() else None
        status = main([*command, "--session-file", str(path)])
        assert (status, capsys.readouterr().err, talks) == (
            2, f"iotdtls: error: --session-file {path} {problem}\n", [])
        assert (Path(path).read_bytes() if Path(path).exists() else None) == before
    status = main([*psk, "--keylog", str(keylog), "--session-file", str(keylog)])
    assert (status, capsys.readouterr().err, talks, keylog.exists()) == (
        2, f"iotdtls: error: --keylog {keylog} is the --session-file file too: give the key log "
           "a file of its own\n", [], False)
    other = tmp_path / "notes.txt"
    other.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    assert main([*psk, "--session-file", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"iotdtls: error: --session-file {other} holds something else than a saved session: "
        "give another path\n")
    assert other.read_bytes() == b"-----BEGIN PRIVATE KEY-----\n" and talks == []
    other.write_bytes(b"")  # empty: nothing lost
    other.chmod(0o600)
    assert main([*psk, "--session-file", str(other)]) == 0 and len(talks) == 1


def test_a_timeout_before_the_second_refusal_says_the_port_was_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--timeout` below the first retransmission (1 s): nothing listens, one ICMP report (not
    the two `PortUnreachable` takes), and the line said only "handshake timed out after 0.5 s"
    (probe BG, F5). It says the network reported the port unreachable."""
    port = free_udp_port()
    status = main(["client", f"{LOCALHOST}:{port}", "--psk-identity", "dev1", "--psk", PSK_HEX,
                   "--timeout", "0.5"])
    assert (status, capsys.readouterr().err) == (1, (
        "iotdtls: handshake timed out after 0.5 s; the network reported the port unreachable "
        "1 time (ICMP): nothing may listen there\n"
    ))


def test_a_server_name_that_does_not_resolve_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """"iotdtls: Name or service not known" named nothing; the one line names the host."""
    status = main(["client", "nonexistent.invalid:5684", "--psk-identity", "dev1", "--psk",
                   PSK_HEX, "--timeout", "2"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("iotdtls: cannot resolve nonexistent.invalid: ") and err.count("\n") == 1


#: A zone longer than an IDNA label (63 characters, RFC 1035 §2.3.4): Python's resolver
#: raised UnicodeError ("encoding with 'idna' codec failed ... label too long") for it.
LONG_ZONE = "z" * 64
#: An interface index that no interface of this host has.
NO_INDEX = "99999"

#: Every command taking an address, "{address}" where `HOST:PORT` goes, "{uri}" where a URI's
#: host and port go, and what its line says it cannot do there.
ADDRESS_COMMANDS = {
    "client": (["client", "{address}", "--timeout", "1"], "reach"),
    "server": (["server", "--listen", "{address}"], "listen on"),
    "server-workers": (["server", "--workers", "2", "--listen", "{address}"], "listen on"),
    "perf": (["perf", "{address}", "-n", "1", "-q", "--timeout", "1"], "reach"),
    "coap-serve": (["coap", "serve", "--listen", "{address}"], "listen on"),
    "coap-get-coaps": (["coap", "get", "coaps://{uri}/x", "--timeout", "1"], "reach"),
    "coap-get-coap": (["coap", "get", "coap://{uri}/x", "--timeout", "1"], "reach"),
}


@pytest.mark.parametrize("command", list(ADDRESS_COMMANDS))
@pytest.mark.parametrize(
    ("zone", "said"),
    [("", "a link-local address needs %interface, as in [fe80::1%eth0]:{port}"),
     *((zone, f"the network interface {zone} is unknown")
       for zone in ["nosuch", LONG_ZONE, NO_INDEX, "0"])],
    ids=["no-zone", "nosuch", "long", "no-index", "index-0"],
)
def test_an_address_naming_no_usable_interface_is_a_usage_mistake_of_every_command(
    capsys: pytest.CaptureFixture[str], command: str, zone: str, said: str
) -> None:
    """A link-local address without its interface, or with one this host does not have, is a
    configuration mistake found before any datagram is sent: status 2 and the same one line
    from every command (README: "every `iotdtls` subcommand exits 2 for such a mistake").
    `client` and `server` exited 1 for both, `perf` 2 for the first and 1 for an unknown
    name (an unknown index failed each handshake, "Network is unreachable"), and the
    requests 1, a coap:// one in aiocoap's words ("No route to host", "Invalid zone
    identifier 25nosuch") (probe BG, F1). The kernel's bare "Invalid argument" for the first
    named neither the address nor what was missing; the client said "cannot resolve
    fe80::1%nosuch: Name or service not known", the server "Name or service not known"
    (probe AS); a zone of 64 characters or more gave a 49-line UnicodeError traceback, an
    index of no interface "Network is unreachable", index 0 "Invalid argument" (probe AU)."""
    if command.startswith("coap"):
        pytest.importorskip("aiocoap")
    words, doing = ADDRESS_COMMANDS[command]
    port = free_udp_port()
    host = f"fe80::1%{zone}" if zone else "fe80::1"
    uri_host = f"[fe80::1%25{zone}]" if zone else "[fe80::1]"
    argv = [word.format(address=f"[{host}]:{port}", uri=f"{uri_host}:{port}") for word in words]
    if command != "coap-get-coap":
        argv += ["--psk-identity", "dev1", "--psk", PSK_HEX]
    status = main(argv)
    assert (status, capsys.readouterr().err) == (
        2, f"iotdtls: error: cannot {doing} [{host}]:{port}: {said.format(port=port)}\n")


@pytest.mark.parametrize("command", list(ADDRESS_COMMANDS))
@pytest.mark.parametrize(
    ("host", "scope"),
    [("ff02::1", "a link-local multicast"), ("ff01::1", "an interface-local multicast")],
    ids=["link-local", "interface-local"],
)
def test_a_multicast_address_of_link_scope_without_its_zone_is_a_usage_mistake(
    capsys: pytest.CaptureFixture[str], command: str, host: str, scope: str
) -> None:
    """Found by a probe: a link-local multicast address without its interface ([ff02::1]),
    which the kernel refuses as it does fe80::1 ("Invalid argument"), was not seen as one
    (only fe80::/10 was) and exited 1 with the kernel's bare words. Now it and an
    interface-local one (ff01::/16, RFC 4291 §2.7 scopes 1 and 2) are the same usage
    mistake: status 2, one line saying to add %interface."""
    if command.startswith("coap"):
        pytest.importorskip("aiocoap")
    words, doing = ADDRESS_COMMANDS[command]
    port = free_udp_port()
    argv = [word.format(address=f"[{host}]:{port}", uri=f"[{host}]:{port}") for word in words]
    if command != "coap-get-coap":
        argv += ["--psk-identity", "dev1", "--psk", PSK_HEX]
    status = main(argv)
    assert (status, capsys.readouterr().err) == (
        2, f"iotdtls: error: cannot {doing} [{host}]:{port}: {scope} address needs %interface, "
        f"as in [{host}%eth0]:{port}\n")


def test_a_host_name_that_cannot_be_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A label longer than 63 characters or empty (RFC 1035 §2.3.4) cannot be resolved:
    one line, not the UnicodeError of Python's idna codec with its traceback (probe AU)."""
    for host in (f"{LONG_ZONE}.example", "a..example"):
        status = main(["server", "--listen", f"{host}:5684", "--psk-identity", "dev1", "--psk",
                       PSK_HEX])
        err = capsys.readouterr().err
        assert status == 1 and err.startswith(f"iotdtls: cannot listen on {host}:5684: not a "
                                              "valid host name (label "), err
        assert err.count("\n") == 1


def test_a_host_that_cannot_be_a_name_is_refused_as_a_name_that_does_not_resolve() -> None:
    """`resolve` of a host Python's idna codec refuses (a label of 64 characters) raises what
    the resolver raises for a name that does not resolve: `socket.gaierror`, EAI_NONAME,
    saying why."""
    with pytest.raises(socket.gaierror) as refused:
        resolve("a" * 64 + ".example", 5684)
    assert refused.value.errno == socket.EAI_NONAME
    assert refused.value.strerror.startswith("not a valid host name (label ")  # codec's words


@pytest.mark.parametrize(
    ("host", "said"),
    [("fe80::1%nosuch", "the network interface nosuch is unknown"),
     (f"fe80::1%{LONG_ZONE}", f"the network interface {LONG_ZONE} is unknown"),
     (f"fe80::1%{NO_INDEX}", f"the network interface {NO_INDEX} is unknown"),
     (f"fe80::1%{2**70}", f"the network interface {2**70} is unknown"),
     ("fe80::1%0", "the network interface 0 is unknown"),
     ("fe80::1%lo%x", "the network interface lo%x is unknown"),  # all after the first "%"
     ("fe80::1%lo", ""), ("fe80::1%1", ""),  # an interface; index 1, the loopback's
     ("fe80::1", ""), ("gw.example", ""), ("gw%nosuch", "")],
)
def test_only_a_zone_naming_no_interface_is_unknown(host: str, said: str) -> None:
    assert unknown_interface(host) == said


@pytest.mark.parametrize(
    ("error", "host", "said"),
    [
        (OSError(errno.EINVAL, "Invalid argument"), "fe80::1", "a link-local address needs "
         "%interface, as in [fe80::1%eth0]:5684"),
        (OSError(errno.EINVAL, "Invalid argument"), "fe80::1%eth0", "Invalid argument"),
        (OSError(errno.EINVAL, "Invalid argument"), "2001:db8::1", "Invalid argument"),
        (OSError(errno.EINVAL, "Invalid argument"), "gw.example", "Invalid argument"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "fe80::1",
         "Network is unreachable"),
        (OSError("no errno"), "fe80::1", "no errno"),
    ],
)
def test_only_invalid_argument_for_a_link_local_address_is_told_to_add_its_interface(
    error: OSError, host: str, said: str
) -> None:
    """The kernel's "Invalid argument" is explained for an IPv6 link-local address without its
    zone only; any other error, or that one for any other host, is shown as it is."""
    assert socket_error(error, host, 5684) == said


def test_an_error_of_an_unusable_address_is_raised_again_with_its_kind_and_errno() -> None:
    """`listening_on` (and `reaching`, but for the resolver's errors, which it names itself)
    raises an error of an address naming no usable interface again as an `UnusableAddress`:
    an `UnusableName`, a `socket.gaierror` still, where the resolver refused it, not one
    where the kernel did; with its errno, or none (M14: `_named`)."""
    with pytest.raises(UnusableName) as refused, listening_on("fe80::1%nosuch", 5684):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert refused.value.errno == socket.EAI_NONAME
    assert "the network interface nosuch is unknown" in str(refused.value)
    with pytest.raises(UnusableAddress) as invalid, reaching("fe80::1", 5684):
        raise OSError(errno.EINVAL, "Invalid argument")
    assert not isinstance(invalid.value, socket.gaierror)
    assert invalid.value.errno == errno.EINVAL
    with pytest.raises(UnusableAddress) as plain, listening_on("fe80::1%nosuch", 5684):
        raise OSError("no errno")
    assert plain.value.errno is None
    assert str(plain.value) == (
        "cannot listen on [fe80::1%nosuch]:5684: the network interface nosuch is unknown"
    )


def test_a_session_that_cannot_be_saved_names_the_file(tmp_path: Path) -> None:
    file = echo.SessionFile(str(tmp_path / "gone" / "session"))
    with pytest.raises(OSError) as caught:
        file.save(a_session())
    assert caught.value.strerror == (  # the command's one line
        f"cannot write --session-file {file.path}: No such file or directory")


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_server_flags_reach_one_process_or_the_workers(
    monkeypatch: pytest.MonkeyPatch, loop_choice: str
) -> None:
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def alone(*args: Any) -> int:
        seen.append((loop.loop_name(asyncio.get_running_loop()), args))
        return 0

    async def pool(*args: Any) -> int:
        seen.append((loop.loop_name(asyncio.get_running_loop()), args))
        return 1

    monkeypatch.setattr(echo, "_serve_alone", alone)
    monkeypatch.setattr(echo, "_serve_workers", pool)
    common = ["server", "--listen", "127.0.0.1:7000", "--psk-identity", "dev1", "--psk", PSK_HEX,
              "--mtu", "700", "--loop", loop_choice]
    assert main(common) == 0
    [(running, (config, host, port, store))] = seen
    assert (running, host, port, config.mtu) == (loop_choice, "127.0.0.1", 7000, 700)
    assert store is None  # without --session-dir: the sessions in memory
    assert logging.getLogger("iotdtls.aio").level == logging.INFO  # a line per handshake
    seen.clear()
    assert main([*common, "-q", "-v"]) == 0
    assert logging.getLogger("iotdtls").level == logging.DEBUG  # -v wins over -q
    logging.getLogger("iotdtls.aio").setLevel(logging.NOTSET)
    assert main([*common, "-q"]) == 0
    assert logging.getLogger("iotdtls.aio").level == logging.WARNING
    seen.clear()
    assert main([*common, "--workers", "3", "-q", "-v"]) == 1  # what the workers' run returned
    [(running, (source, host, port, count, choice, initializer, sessions))] = seen
    assert (running, host, port, count, choice) == (loop_choice, "127.0.0.1", 7000, 3, loop_choice)
    assert sessions is None  # each worker its own sessions in memory
    built = source()  # each worker builds the configuration from the flags itself
    assert isinstance(built, ServerConfig) and built.mtu == 700
    assert built.psk_store == {b"dev1": bytes.fromhex(PSK_HEX)}
    logging.getLogger("iotdtls").setLevel(logging.WARNING)
    initializer()  # a worker's logging: -v, everything
    assert logging.getLogger("iotdtls").level == logging.DEBUG


def _record_serving(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Serving replaced by a recorder: the arguments of each `_serve_alone`/`_serve_workers`
    call, which then ends at once with status 0."""
    seen: list[tuple[Any, ...]] = []

    async def serve(*args: Any) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(echo, "_serve_alone", serve)
    monkeypatch.setattr(echo, "_serve_workers", serve)
    return seen


@pytest.mark.parametrize("count", ["1", "2"])
def test_the_session_dir_reaches_one_process_or_each_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, count: str
) -> None:
    """--session-dir DIR: the directory is made (0700) before anything serves; one process
    gets a store on it, the workers a picklable function each calls to make its own."""
    seen = _record_serving(monkeypatch)
    directory = tmp_path / "sessions"
    assert main(["server", "--listen", "127.0.0.1:44401", "--psk-identity", "dev1", "--psk",
                 PSK_HEX, "--workers", count,
                 "--session-dir", str(directory)]) == 0
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert descriptors_of(directory) == 0  # the check's and the one process's store closed
    [args] = seen
    store = args[-1] if count == "1" else pickle.loads(pickle.dumps(args[-1]))()
    assert isinstance(store, DirectorySessionStore) and store.path == directory
    if count == "1":  # closed with the server
        with pytest.raises(ValueError, match="is closed"):
            store.get(b"\1", now=0.0)
    store.close()


@pytest.mark.parametrize(("make", "problem"), [
    ("open", "is open to group or others (mode 0755): chmod 700 it or name a new directory"),
    ("file", "is a regular file, not a directory: name a directory"),
])
def test_a_session_dir_others_could_reach_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    make: str, problem: str,
) -> None:
    served = _record_serving(monkeypatch)
    directory = tmp_path / "sessions"
    if make == "open":
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
    else:
        directory.write_bytes(b"")
    assert main(["server", "--listen", "127.0.0.1:44401", "--psk-identity", "dev1", "--psk",
                 PSK_HEX, "--workers", "2",
                 "--session-dir", str(directory)]) == 2
    assert capsys.readouterr().err == (
        f"iotdtls: error: --session-dir: session directory {directory} {problem}\n"
    )
    assert served == []


def test_a_session_dir_we_cannot_write_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """A directory of mode 0500 was accepted and every put failed; one of 0300 ended the
    command with "iotdtls: Permission denied" and status 1. Refused in one line, status 2
    (os.access as a user that is not root: root passes the mode bits)."""
    served = _record_serving(monkeypatch)
    directory = tmp_path / "sessions"
    directory.mkdir(mode=0o500)
    directory.chmod(0o500)
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(os.fspath(path)) == directory:
            return not mode & os.W_OK
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    try:
        assert main(["server", "--listen", "127.0.0.1:46201", "--psk-identity", "dev1", "--psk",
                     PSK_HEX, "--session-dir", str(directory)]) == 2
    finally:
        directory.chmod(0o700)
    assert capsys.readouterr().err == (
        f"iotdtls: error: --session-dir: session directory {directory} cannot be written by this"
        " user (mode 0500): chmod 700 it or name another directory\n"
    )
    assert served == []


def test_an_empty_session_dir_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """--session-dir "" was the working directory ("session directory  is open to group or
    others"): refused as --session-file "" is, before anything serves."""
    served = _record_serving(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["server", "--listen", "127.0.0.1:44401", "--psk-identity", "dev1", "--psk",
                 PSK_HEX, "--session-dir", ""]) == 2
    assert capsys.readouterr().err == (
        "iotdtls: error: --session-dir is empty: give the directory to keep the sessions in\n"
    )
    assert served == []


@pytest.mark.parametrize(
    ("verbose", "quiet", "aio_level"),
    [(False, False, logging.INFO), (False, True, logging.WARNING), (True, True, logging.NOTSET)],
)
def test_server_logging(
    verbose: bool, quiet: bool, aio_level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("iotdtls", "iotdtls.aio"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    echo.server_logging(verbose, quiet)
    assert logging.getLogger("iotdtls.aio").level == aio_level
    assert logging.getLogger("iotdtls").level == (logging.DEBUG if verbose else logging.WARNING)


# -- the server until its stop signal --------------------------------------------------------------


async def listening_port(caplog: pytest.LogCaptureFixture, serving: asyncio.Future[int]) -> int:
    """The port of the server's "listening on HOST:PORT" line, once it is logged."""
    for _ in range(2000):  # worker processes take a few seconds to start on a busy machine
        if serving.done():
            raise AssertionError(f"the server ended before listening: {serving.result()}")
        for record in caplog.records:
            if match := re.match(r"listening on 127\.0\.0\.1:(\d+) ", record.getMessage()):
                return int(match.group(1))
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not say where it listens")


async def echo_once(port: int) -> bytes | None:
    async with aio.connect(LOCALHOST, port, client_config()) as conn:
        conn.send(b"ping")
        return await asyncio.wait_for(conn.recv(), 5.0)


def worker_config() -> ServerConfig:
    """What each worker builds (module level: it goes to the workers by pickle)."""
    return server_config()


def no_setup() -> None:
    """A worker initializer doing nothing."""


@pytest.mark.parametrize(
    "command",
    [["server"], ["server", "--workers", "2"], ["coap", "serve"]],
    ids=["one-process", "workers", "coap"],
)
def test_a_port_in_use_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((LOCALHOST, 0))
        port = holder.getsockname()[1]
        status = main([*command, "--listen", f"{LOCALHOST}:{port}", "--psk-identity", "dev1",
                       "--psk", PSK_HEX])
    assert (status, capsys.readouterr().err) == (
        1, f"iotdtls: cannot listen on 127.0.0.1:{port}: Address already in use\n")


def test_listening_errors_name_the_address() -> None:
    """(A worker that did not start is not named so: `listening_on` wraps only the binds,
    test_workers' test_a_worker_that_does_not_start_stops_them_all.)"""
    with pytest.raises(OSError) as caught, listening_on("::1", 5684):
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert caught.value.errno == errno.EADDRNOTAVAIL
    assert caught.value.strerror == "cannot listen on [::1]:5684: Cannot assign requested address"


@pytest.mark.parametrize("worker_count", [1, 2])
def test_a_server_gives_its_whole_socket_name(worker_count: int) -> None:
    """`sockname` keeps what `address` cuts off, an IPv6 socket's flowinfo and scope id, for
    the CLI's listening line; both kinds of server."""
    async def main() -> None:
        if worker_count == 1:
            server = await aio.serve(echo.echo, "::1", 0, server_config())
        else:
            server = await workers.serve(echo.echo, "::1", 0, server_config, workers=2)
        try:
            port = server.address[1]
            assert server.address == ("::1", port)
            assert server.sockname == ("::1", port, 0, 0)
            assert format_address(server.sockname) == f"[::1]:{port}"
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_one_process_serves_until_sigterm_and_logs_its_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "iotdtls.cli")

    wanted = free_udp_port()

    async def main() -> int:
        serving = asyncio.ensure_future(echo._serve_alone(server_config(), LOCALHOST, wanted))
        port = await listening_port(caplog, serving)
        assert await echo_once(port) == b"ping"
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(serving, 10.0)

    with signal_fallback(signal.SIGTERM) as fallback:
        assert loop.run(main(), "uvloop") == 0
    assert fallback == []
    lines = [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"]
    assert lines[0] == f"listening on 127.0.0.1:{wanted} (uvloop)"
    assert lines[-1].startswith(
        "stopped: handshakes 1 completed (0 resumed), 0 failed, 0 in progress, 0 unfinished; "
    )


def test_a_handler_that_outlives_the_stop_grace_is_left_behind(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler that ignores its cancellation does not hold the stop up past STOP_GRACE (0.3 s
    here): the server says so and still ends with 0, its counters logged."""
    caplog.set_level(logging.INFO, "iotdtls.cli")
    monkeypatch.setattr(echo, "STOP_GRACE", 0.3)
    handling = asyncio.Event()

    async def stubborn(session: aio.ServerSession) -> None:
        handling.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # the first cancellation ignored (the loop's end cancels again)

    monkeypatch.setattr(echo, "echo", stubborn)

    async def main() -> tuple[int, float]:
        serving = asyncio.ensure_future(echo._serve_alone(server_config(), LOCALHOST, 0))
        port = await listening_port(caplog, serving)
        async with aio.connect(LOCALHOST, port, client_config()):
            await asyncio.wait_for(handling.wait(), 5.0)
            started = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            status = await asyncio.wait_for(serving, 10.0)
            return status, time.monotonic() - started

    with signal_fallback(signal.SIGTERM) as fallback:
        status, took = loop.run(main(), "asyncio")
    assert (status, fallback) == (0, [])
    assert 0.3 <= took < 3.0, took
    lines = [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"]
    assert lines[-2] == "stopped after 0.3 s with handlers still running", lines
    assert lines[-1].startswith(
        "stopped: handshakes 1 completed (0 resumed), 0 failed, 0 in progress, 0 unfinished; "
    )


def test_workers_serve_until_sigterm(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """The workers run the initializer given (here: their log to a file), the loop asked for
    and the session store (a directory), not `workers.serve`'s defaults; SIGUSR1 logs their
    counters."""
    caplog.set_level(logging.INFO, "iotdtls.cli")
    caplog.set_level(logging.INFO, "iotdtls.workers")
    logs = tmp_path / "workers.log"
    sessions = tmp_path / "sessions"
    wanted = free_udp_port()

    async def main() -> int:
        serving = asyncio.ensure_future(echo._serve_workers(
            worker_config, LOCALHOST, wanted, 2, "asyncio", partial(log_to_file, str(logs)),
            partial(DirectorySessionStore, str(sessions))))
        port = await listening_port(caplog, serving)
        assert await echo_once(port) == b"ping"
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await eventually(lambda: any(
            r.getMessage().startswith("counters: all 2 workers: handshakes 1 completed")
            for r in caplog.records), 10.0)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(serving, 20.0)

    with signal_fallback(signal.SIGTERM) as fallback, \
            signal_fallback(signal.SIGUSR1) as counters_fallback:
        assert asyncio.run(main()) == 0
    assert fallback == [] and counters_fallback == []
    lines = [r.getMessage() for r in caplog.records if r.name == "iotdtls.cli"]
    assert lines[0] == f"listening on 127.0.0.1:{wanted} (2 workers)"
    serving = [line for line in logs.read_text().splitlines() if line.endswith(" serving")]
    assert len(serving) == 2 and all(line.endswith(", asyncio) serving") for line in serving)
    assert len(list(sessions.iterdir())) == 1  # the session of the handshake, as a file


def test_the_workers_end_with_status_1_when_one_dies(caplog: pytest.LogCaptureFixture) -> None:
    """A worker killed under the server: the others are stopped and the command fails."""
    caplog.set_level(logging.INFO, "iotdtls.cli")

    async def main() -> int:
        serving = asyncio.ensure_future(echo._serve_workers(
            worker_config, LOCALHOST, 0, 2, "asyncio", no_setup))
        await listening_port(caplog, serving)
        victim = next(p for p in multiprocessing.active_children()
                      if p.name.startswith("iotdtls-worker-"))
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        return await asyncio.wait_for(serving, 20.0)

    assert asyncio.run(main()) == 1
    assert multiprocessing.active_children() == []


def test_an_ipv6_server_logs_its_address_in_brackets(caplog: pytest.LogCaptureFixture) -> None:
    """"listening on [::1]:PORT", the form HOST:PORT arguments take (RFC 3986 §3.2.2)."""
    caplog.set_level(logging.INFO, "iotdtls.cli")

    async def main() -> None:
        serving = asyncio.ensure_future(echo._serve_alone(server_config(), "::1", 0))
        try:
            for _ in range(200):
                if any(r.name == "iotdtls.cli" for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run(main(), "asyncio")
    first = next(r.getMessage() for r in caplog.records if r.name == "iotdtls.cli")
    assert re.fullmatch(r"listening on \[::1\]:\d+ \(asyncio\)", first), first
    # Cancelled, it closed its server: none left open for the loop's end to close and warn of.
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
