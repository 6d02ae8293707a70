"""The echo commands' parts, in this process: stdin cut into lines (`StdinLines`), the session
file of `client --session-file` (RES-1, a secret: mode 0600, a damaged one ignored), the echo
handler, and the client's whole conversation (`_talk`) against an echo server on loopback.
test_cli.py runs the same commands as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from iotdtls import aio
from iotdtls.cli import echo
from iotdtls.config import DEFAULT_MTU, ClientConfig, Mode, ServerConfig
from iotdtls.errors import DatagramTooLarge
from iotdtls.identity import PskIdentity
from iotdtls.sessions import SessionState
from tests.interop_support import FAST
from tests.peers import CLIENT_IDENTITY, LOCALHOST, PSK


def lines_of(stdin: object, monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    """What `StdinLines` yields for `stdin` (as sys.stdin) up to and with the final None."""
    async def main() -> list[bytes | None]:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdin", stdin)
            lines = echo.StdinLines(asyncio.get_running_loop())
        got: list[bytes | None] = []
        while True:
            line = await asyncio.wait_for(lines.get(), 5.0)
            got.append(line)
            if line is None:
                lines.close()
                return got

    return asyncio.run(main())


EXPECTED = [b"one", b"two", b"", b"last without newline", None]
TEXT = b"one\r\ntwo\n\nlast without newline"


def test_stdin_lines_from_a_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file cannot be watched by the loop: it is read at once, and ends."""
    path = tmp_path / "input.txt"
    path.write_bytes(TEXT)
    with open(path, encoding="utf-8") as stdin:
        assert lines_of(stdin, monkeypatch) == EXPECTED


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


def test_no_stdin_at_all_is_an_empty_input(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lines_of(None, monkeypatch) == [None]


# -- the session file ------------------------------------------------------------------------


def a_session() -> SessionState:
    return SessionState(os.urandom(32), 0xC0A8, Mode.PSK, os.urandom(48), PskIdentity(b"dev1"))


@pytest.mark.req("RES-1")
def test_session_file_round_trip_is_private(tmp_path: Path) -> None:
    file = echo.SessionFile(str(tmp_path / "session"))
    assert file.load() is None  # none yet: a full handshake
    session = a_session()
    file.save(session)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    loaded = file.load()
    assert loaded == session and loaded is not None
    assert loaded.master_secret == session.master_secret
    file.save(None)  # no session to keep (the server gave no session_id)
    assert not file.path.exists()
    file.discard()  # already gone: no error


def test_a_damaged_session_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "session"
    path.write_bytes(b"not a session")
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    assert echo.SessionFile(str(path)).load() is None
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage().startswith("ignoring --session-file: ")
    unreadable = tmp_path / "a directory"
    unreadable.mkdir()
    assert echo.SessionFile(str(unreadable)).load() is None


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


def client_settings(mtu: int = DEFAULT_MTU) -> ClientConfig:
    return ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK, retransmit=FAST,
                        handshake_timeout=5.0, mtu=mtu)


class Recording(aio.DatagramHandler):
    """The echo handler, noting for each handshake whether it resumed a session."""

    def __init__(self) -> None:
        self.resumed: list[bool] = []

    def session_started(self, session: aio.ServerSession) -> None:
        self.resumed.append(session.resumed)

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        echo.echo.datagram_received(session, data)


async def talk_once(
    server: aio.DtlsServer,
    text: bytes,
    config: ClientConfig,
    session_file: echo.SessionFile | None = None,
) -> None:
    """`_talk` with `text` on stdin (a pipe) against `server`."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, text)
    os.close(write_fd)
    with open(read_fd, "rb") as raw, io.TextIOWrapper(raw) as reader:
        saved = sys.stdin
        sys.stdin = reader
        try:
            await echo._talk(config, LOCALHOST, server.address[1], None, session_file)
        finally:
            sys.stdin = saved


def talk(
    texts: list[bytes], config: ClientConfig, session_file: echo.SessionFile | None = None
) -> list[bool]:
    """One `_talk` per text against one echo server on loopback; returns, for each handshake
    the server completed, whether it resumed a session."""
    handler = Recording()

    async def main() -> None:
        server_config = ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK}, retransmit=FAST)
        server = await aio.serve(handler, LOCALHOST, 0, server_config)
        try:
            for text in texts:
                await talk_once(server, text, config, session_file)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))
    return handler.resumed


def test_the_client_sends_each_line_and_prints_each_reply(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert talk([b"first\nsecond\r\n"], client_settings()) == [False]
    out, _err = capsysbinary.readouterr()
    assert out == b"first\nsecond\n"


def test_a_line_too_long_for_the_mtu_is_skipped_with_a_warning(
    capsysbinary: pytest.CaptureFixture[bytes], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    talk([b"a\n" + b"x" * 400 + b"\nb\n"], client_settings(mtu=300))
    out, _err = capsysbinary.readouterr()
    assert out == b"a\nb\n"
    [record] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert record.getMessage().startswith("line not sent: 400 bytes of application data")


@pytest.mark.req("RES-1")
def test_the_session_file_resumes_the_next_run(tmp_path: Path) -> None:
    file = echo.SessionFile(str(tmp_path / "session"))
    assert talk([b"hello\n", b"again\n"], client_settings(), file) == [False, True]
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
