"""`iotdtls server` (an echo server) and `iotdtls client` (stdin lines as datagrams, replies on
stdout): argument wiring only, every protocol decision lives in the library. The client can
keep its session in a file (`--session-file`, RES-1), ask for small records
(`--max-fragment-length`, EXT-1) and name the server (`--server-name`, SNI, EXT-2); the server
can keep its sessions in a directory its workers share (`--session-dir`); both keep their
associations alive with heartbeats (`--heartbeat`, EXT-5)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import io
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotdtls import aio, loop, workers
from iotdtls._addresses import format_address
from iotdtls._files import (
    RefusedFile,
    file_kind,
    not_ours_alone,
    read_regular_file_and_stat,
    resolve_links,
    write_atomically,
)
from iotdtls.chaincache import ChainCache
from iotdtls.cli.common import (
    COUNTERS_SIGNAL,
    DEFAULT_PORT,
    Once,
    UsageError,
    add_common_flags,
    add_heartbeat_flag,
    add_loop_flag,
    add_quiet_flag,
    add_server_limits,
    add_server_timeouts,
    common_settings,
    counters_signal_ignored,
    ended_by_signals,
    file_path,
    heartbeat_settings,
    log_counters_on_signal,
    log_stopped,
    parse_hostport,
    parse_listen,
    seconds,
    server_limits,
    server_logging,
    server_timeouts,
    stdout_buffer,
    stop_on_signals,
    whole_number,
)
from iotdtls.cli.credentials import (
    add_client_credentials,
    add_server_credentials,
    chain_cache,
    client_config,
    server_config,
)
from iotdtls.config import (
    MAX_FRAGMENT_LENGTHS,
    ClientConfig,
    RetryPolicy,
    ServerConfig,
)
from iotdtls.errors import ConfigError, DatagramTooLarge, DtlsError
from iotdtls.sessions import (
    DirectorySessionStore,
    SessionState,
    SessionStore,
    starts_like_a_session,
)

__all__ = ["register"]

#: After stdin ends, how long the client waits for replies still in flight before its
#: close_notify (less when the server ends the association first; README says so).
REPLY_GRACE = 1.0
#: Bytes read from stdin at a time.
STDIN_CHUNK = 65536
#: Longest the server's stop may take (handlers that ignore cancellation are left behind).
STOP_GRACE = 5.0
#: Largest --session-file read: a saved session is about 200 bytes, a few kilobytes with the
#: server's certificate chain (a Certificate message fits 16 KiB, the CLI's
#: max_handshake_message); a larger file is refused unread (`SessionFile`).
MAX_SESSION_FILE = 64 << 10


def register(sub: Any) -> None:
    """Add `server` and `client` to the subcommands."""
    srv = sub.add_parser(
        "server",
        help="echo server: every datagram received is sent back",
        description="Echo server: every datagram received is sent back. SIGINT, SIGTERM or "
        "SIGHUP stop it cleanly and it logs its counters; SIGUSR1 logs them and it goes on "
        "serving (with --workers, one line per worker and their sum).",
    )
    srv.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
        help=f"address to serve on, [V6]:PORT for IPv6 (default 127.0.0.1:{DEFAULT_PORT}); "
        "[::] and 0.0.0.0 answer from the address the kernel picks: on a host with several, "
        "name one",
    )
    add_server_credentials(srv)
    srv.add_argument(
        "--no-cookie",
        action="store_true",
        help="skip the HelloVerifyRequest exchange for addresses without an established"
        " association (a new ClientHello from one that has one still needs a cookie, RFC"
        " 6347 §4.2.8). Unsafe on an open network: a flood of ClientHellos from forged"
        " source addresses then takes every --max-handshakes place and evicts every honest"
        " handshake (one success in 7.3 s under such a flood)",
    )
    srv.add_argument(
        "--workers",
        type=whole_number(1, workers.MAX_WORKERS),
        default=1,
        metavar="N",
        help=f"N processes on the port (SO_REUSEPORT), 1 to {workers.MAX_WORKERS}, one cookie "
        "secret; each keeps its own sessions unless --session-dir (default 1)",
    )
    srv.add_argument(
        "--session-dir",
        metavar="DIR",
        help="keep the sessions for resumption in DIR, one file each, so that the --workers "
        "resume each other's and a restarted server finds them (DIR holds secrets: made with "
        "mode 0700 if missing, refused if others can reach it; a tmpfs one, under /run or "
        "/dev/shm, is the fastest)",
    )
    add_server_limits(srv, ", per worker")
    add_quiet_flag(srv)
    add_loop_flag(srv)
    add_server_timeouts(srv)
    add_common_flags(srv)
    srv.set_defaults(run=run_server, server_logging=True)

    cli = sub.add_parser(
        "client",
        help="send each stdin line as one datagram, print replies",
        description="Send each stdin line as one datagram and print the replies, one a line. "
        "Ends with the association: status 0 at the end of stdin or the server's close_notify; "
        "Ctrl-C, SIGTERM and SIGHUP end it with close_notify (status 130, 143, 129).",
    )
    cli.add_argument("address", metavar="HOST:PORT", help="the server ([V6]:PORT for IPv6)")
    add_client_credentials(cli)
    cli.add_argument(
        "--timeout", type=seconds(), default=30.0, metavar="S",
        help="deadline of a handshake, and of the answer to a heartbeat (default 30)",
    )
    cli.add_argument(
        "--retries",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="after a failed handshake, try N more times with back-off (default 0)",
    )
    cli.add_argument(
        "--session-file",
        metavar="FILE",
        type=file_path,
        action=Once,
        help="resume the session saved in FILE if there is one, and save the session there "
        "after the handshake (it holds a secret: written with mode 0600; a file holding anything "
        "else, another user's or one others can read or write is refused)",
    )
    cli.add_argument(
        "--max-fragment-length",
        type=int,
        choices=MAX_FRAGMENT_LENGTHS,
        metavar="{512,1024,2048,4096}",
        help="ask the server for records of at most this many bytes (RFC 6066)",
    )
    add_heartbeat_flag(cli, "--timeout")
    add_common_flags(cli)
    cli.set_defaults(run=run_client, server_logging=False, streams=["stdin", "stdout"])


def run_server(args: argparse.Namespace) -> int:
    """Serve until a stop signal; SIGUSR1 is ignored until the loop handles it
    (`counters_signal_ignored`)."""
    with counters_signal_ignored():
        return _run_server(args)


def _run_server(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    config = server_config_of(args)  # bad flags end here, in one line, before any worker
    sessions = session_store_factory(args.session_dir)
    server_logging(args.verbose, args.quiet)
    if args.workers == 1:
        store = None if sessions is None else sessions()
        try:
            return loop.run(_serve_alone(config, host, port, store), args.loop)
        finally:
            if isinstance(store, DirectorySessionStore):
                store.close()
    # Each worker builds its configuration from the flags itself (keys stay out of pipes);
    # what the flags warn of (an expired --cert) was said once, above.
    source = functools.partial(server_config_of, args, validity_warned=True)
    initializer = functools.partial(server_logging, args.verbose, args.quiet)
    return loop.run(
        _serve_workers(source, host, port, args.workers, args.loop, initializer, sessions),
        args.loop,
    )


def session_store_factory(directory: str | None) -> workers.SessionStoreFactory | None:
    """--session-dir: what makes a process's session store on the directory (RES-1), a
    `functools.partial` that pickles to the workers, each of which makes its own; None without
    the flag (each process keeps its sessions in memory). The directory is checked here, and
    made with mode 0700 if missing, so that a mistake is one line before any worker starts."""
    if directory is None:
        return None
    if not directory:  # not the working directory, as the API would take it
        raise UsageError("--session-dir is empty: give the directory to keep the sessions in")
    try:
        with DirectorySessionStore(directory) as checked:
            return functools.partial(DirectorySessionStore, checked.path)
    except ConfigError as exc:
        raise UsageError(f"--session-dir: {exc}") from None


def server_config_of(args: argparse.Namespace, validity_warned: bool = False) -> ServerConfig:
    """The server's configuration from its flags (`validity_warned`: see `server_config`)."""
    return server_config(
        args,
        validity_warned=validity_warned,
        cookie_exchange=not args.no_cookie,
        **common_settings(args),
        **server_limits(args),
        **server_timeouts(args),
    )


def run_client(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    config = client_config(
        args,
        host,
        handshake_timeout=args.timeout,
        **common_settings(args),
        retry=RetryPolicy(args.retries + 1) if args.retries else None,
        max_fragment_length=args.max_fragment_length,
        **heartbeat_settings(args),
    )
    session_file = None if args.session_file is None else SessionFile(args.session_file)
    if session_file is not None:
        session_file.check()
    return asyncio.run(
        ended_by_signals(_talk(config, host, port, chain_cache(args), session_file))
    )


class Echo(aio.DatagramHandler):
    """The server's handler: send every datagram back to its sender. A `DatagramHandler`, so
    an idle peer costs no task (100,000 of them fit in one process: `make bench-memory`)."""

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        try:
            session.send(data)
        except DatagramTooLarge as exc:  # the client's MTU is larger than ours
            logging.getLogger("iotdtls.cli").warning("reply not sent: %s", exc)


#: The echo handler of `iotdtls server` (one object serves every peer).
echo = Echo()


async def _serve_alone(
    config: ServerConfig, host: str, port: int, store: SessionStore | None = None
) -> int:
    """Serve in this process until SIGINT, SIGTERM or SIGHUP, then stop: close_notify to every
    peer, handlers cancelled, socket closed, within `STOP_GRACE` seconds; log the counters
    (and on SIGUSR1 without stopping). stdin is never read: a server run from a terminal or a
    pipe does not care whether it stays open. `store`: the sessions' (None: in memory).
    Cancelled (an application or a test running it as a task), it closes the server the same
    way before the cancellation goes on."""
    stop = stop_on_signals()
    # Its errors name the address.
    server = await aio.serve(echo, host, port, config, session_store=store)
    log = logging.getLogger("iotdtls.cli")
    try:
        # Announced only once the signals are handled: from here on they stop it cleanly.
        running = asyncio.get_running_loop()
        log_counters_on_signal(server, log)
        # The whole socket name: a link-local address with its interface (RFC 4007 §11).
        where = format_address(server.sockname)
        log.info("listening on %s (%s)", where, loop.loop_name(running))
        await stop.wait()
    finally:
        await _close_within_grace(server, log)
    log_stopped(server, log)
    return 0


async def _close_within_grace(server: aio.DtlsServer, log: logging.Logger) -> None:
    """Close `server` (close_notify to every peer, handlers cancelled, socket closed), waiting
    at most `STOP_GRACE` seconds for its handlers; a warning says when they did not end."""
    try:
        await asyncio.wait_for(server.close(), STOP_GRACE)
    except TimeoutError:
        log.warning("stopped after %g s with handlers still running", STOP_GRACE)


async def _serve_workers(
    source: Callable[[], ServerConfig],
    host: str,
    port: int,
    worker_count: int,
    loop_choice: str,
    initializer: Callable[[], None],
    sessions: workers.SessionStoreFactory | None = None,
) -> int:
    """Serve with worker processes until SIGINT, SIGTERM or SIGHUP (status 0, even when a
    worker that got the same signal, sent to the whole group, ended first) or until a worker
    dies (status 1); the workers' counters are logged at the end, and on SIGUSR1 (the parent
    asks each worker for them: one line each and their sum). `sessions` makes each worker's
    session store (None: each its own in memory)."""
    stop = stop_on_signals()
    pool = await workers.serve(  # its errors name the address
        echo, host, port, source, workers=worker_count, loop_choice=loop_choice,
        initializer=initializer, session_store=sessions,
    )
    asyncio.get_running_loop().add_signal_handler(COUNTERS_SIGNAL, pool.log_counters)
    logging.getLogger("iotdtls.cli").info(
        "listening on %s (%d workers)", format_address(pool.sockname), worker_count
    )
    ended = asyncio.ensure_future(pool.worker_exited.wait())
    waiters = {asyncio.ensure_future(stop.wait()), ended}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    status = 0 if stop.is_set() else 1
    await pool.close()
    return status
class StdinLines:
    """Lines of stdin for the event loop, read without a thread.

    A pipe or terminal is watched by the loop (`add_reader`), so the client can end at any
    moment, whatever stdin is doing, and no reader thread is left blocked in `read()` when the
    interpreter shuts down. A regular file or /dev/null cannot be watched (and never blocks):
    it is read at once. `get()` returns each line without its end of line, then None at EOF.

    A line longer than `limit` (the most one datagram carries) is not kept: the rest of it is
    skipped up to its end of line and a warning says it was not sent, so a huge line costs
    neither memory nor time (it was gathered whole, to be refused anyway).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int | None = None) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending = b""
        self._limit = limit
        #: Bytes of the too long line being skipped (0: none).
        self._skipped = 0
        self._fd: int | None = None
        stdin = sys.stdin
        if stdin is None:
            self._queue.put_nowait(None)
            return
        fd = stdin.fileno()
        try:
            loop.add_reader(fd, self._readable)
        except PermissionError:  # epoll refuses regular files and /dev/null
            self._feed(stdin.buffer.read())
            self._end()
        else:
            self._fd = fd

    async def get(self) -> bytes | None:
        return await self._queue.get()

    def close(self) -> None:
        """Stop watching stdin (the association is over)."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, STDIN_CHUNK)
        except OSError:
            chunk = b""
        if chunk:
            self._feed(chunk)
        else:
            self.close()
            self._end()

    def _feed(self, chunk: bytes) -> None:
        if self._skipped:
            end = chunk.find(b"\n")
            if end < 0:
                self._skipped += len(chunk)
                return
            self._skipped += end
            self._too_long()
            chunk = chunk[end + 1:]
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._queue.put_nowait(line.rstrip(b"\r"))
        # One byte more for a "\r" before the "\n" still to come.
        if self._limit is not None and len(self._pending) > self._limit + 1:
            self._skipped = len(self._pending)
            self._pending = b""

    def _too_long(self) -> None:
        logging.getLogger("iotdtls.cli").warning(
            "line not sent: %d bytes of application data do not fit one datagram (at most %d "
            "bytes)", self._skipped, self._limit,
        )
        self._skipped = 0

    def _end(self) -> None:
        if self._skipped:
            self._too_long()
        if self._pending:
            self._queue.put_nowait(self._pending.rstrip(b"\r"))
            self._pending = b""
        self._queue.put_nowait(None)


async def _print_replies(conn: aio.ClientConnection) -> None:
    """Each datagram on its own line until the association ends; raises what ended it."""
    while (data := await conn.recv()) is not None:
        out = stdout_buffer()
        out.write(data + b"\n")
        out.flush()


async def _talk(
    config: ClientConfig,
    host: str,
    port: int,
    cache: ChainCache | None,
    session_file: SessionFile | None,
) -> int:
    """Send stdin lines until EOF, then close_notify; end at once when the server ends the
    association (close_notify: clean, status 0; a fatal alert: its `DtlsError` is raised). With a
    session file: saved after the handshake, removed when a fatal alert ends the session or
    when a handshake offering it fails because of it (`_handshake`)."""
    conn = await _handshake(config, host, port, cache, session_file)
    try:
        if session_file is not None:
            session_file.save(conn.session, conn.connection.extended_master_secret)
        lines = StdinLines(asyncio.get_running_loop(), conn.connection.max_send_size)
        printer = asyncio.ensure_future(_print_replies(conn))
        try:
            while (line := await _next_line(lines, printer)) is not None:
                _send_line(conn, line)
            if not printer.done():
                # stdin ended: let replies in flight arrive, then close_notify.
                await asyncio.wait({printer}, timeout=REPLY_GRACE)
            if printer.done():
                printer.result()  # the DtlsError that ended the association, if any
        finally:
            lines.close()
            printer.cancel()
            if session_file is not None and conn.session is None:
                session_file.discard()  # ended by a fatal alert: never resume it
    finally:
        await conn.close()
    return 0


async def _handshake(
    config: ClientConfig,
    host: str,
    port: int,
    cache: ChainCache | None,
    session_file: SessionFile | None,
) -> aio.ClientConnection:
    """The association, offering the session of `session_file` if it has one (RES-1). When
    that handshake fails, the file goes: a session the server cannot resume correctly (a
    damaged secret, a server that breaks resumption) would fail the same way every run, and
    the file is only a cache; `SessionDropped` says so. Only when the server had resumed the
    session (`DtlsError.resuming`): not when nothing listens or answers (a device that wakes
    while its network is down keeps its session), an alert came before the ServerHello, the
    session was not offered (made with another credential) or the server chose a full
    handshake."""
    saved = None if session_file is None else session_file.load()
    try:
        return await aio.connect(host, port, config, chain_cache=cache, session=saved)
    except DtlsError as exc:
        if session_file is None or saved is None or not exc.resuming:
            raise
        session_file.discard()
        raise SessionDropped(exc, session_file.path) from exc


async def _next_line(lines: StdinLines, printer: asyncio.Future[None]) -> bytes | None:
    """The next stdin line, or None at EOF or as soon as the association has ended."""
    reading = asyncio.ensure_future(lines.get())
    either: set[asyncio.Future[Any]] = {reading, printer}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if printer.done():
        reading.cancel()
        return None
    return reading.result()


def _send_line(conn: aio.ClientConnection, line: bytes) -> None:
    try:
        conn.send(line)
    except DatagramTooLarge as exc:
        logging.getLogger("iotdtls.cli").warning("line not sent: %s", exc)


class SessionDropped(DtlsError):
    """A handshake that offered the session of --session-file failed, so the file was removed
    (RES-1: a cache; the next run makes a full handshake). The message is the failure's, and
    says so; `__cause__` is the failure."""

    def __init__(self, failure: DtlsError, path: Path) -> None:
        super().__init__(
            f"{failure}; the saved session in {path} was dropped: the next run makes a full "
            "handshake"
        )


class SessionFile:
    """`--session-file`: a saved session (RES-1) for a device that sleeps or restarts. The
    file holds the master secret, so it is written atomically with mode 0600; one that cannot
    be read as a session is ignored (a full handshake replaces it). A symlink is followed, once
    (resolved here): the file it points to is read, written and removed, and the link stays;
    messages name the path given. Another user's symlink is refused (`resolve_links`), and so
    is a file another user could have written or that others can read (`not_ours_alone`: as
    the key log): a session another user planted (one of theirs with the same server) would
    be resumed, and the client's traffic would run under a master secret they know."""

    def __init__(self, path: str) -> None:
        self.given = path
        #: The path given, for messages.
        self.path = Path(path)
        #: The file read, written and removed: `path` with its symlinks resolved.
        try:
            self.target = resolve_links(path) if path else self.path
        except OSError as exc:
            raise UsageError(self._cannot_write(exc)) from None

    def check(self) -> None:
        """Before connecting: the session can be saved after the handshake, i.e. the path is
        given, is a regular file if it exists (followed through a symlink, as reading it is;
        a FIFO or a device is never opened, nor replaced by the file), and a file can be made
        in the directory of the file a symlink points to (the file itself may be missing: a
        dangling symlink's target is made). Nothing that is not a session is replaced: no
        existing file that does not start like a saved session (a damaged one or one of another
        version does, and is replaced after a full handshake), which covers the key and
        certificate files (read before this check, so they hold their data); the --keylog
        file, which may be missing or empty, was refused as this one before (`prepare_keylog`,
        by path). Nor is a session another user could have planted resumed: an existing file
        must be this user's, that only it can read or write, and at most `MAX_SESSION_FILE`
        bytes (`_read`). A `UsageError` naming the flag and the path given otherwise."""
        if not self.given:
            raise UsageError("--session-file is empty: give the file to keep the session in")
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            mode = None  # made after the handshake (a dangling symlink: replaced)
        except OSError as exc:
            raise UsageError(self._cannot_write(exc)) from None
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise UsageError(
                f"--session-file {self.path} is {file_kind(mode)}, not a regular file: "
                "give the file to keep the session in"
            )
        try:
            if mode is not None and stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            fd, trial = tempfile.mkstemp(dir=self.target.parent, prefix=".tmp-")
        except OSError as exc:
            raise UsageError(self._cannot_write(exc)) from None
        os.close(fd)
        os.unlink(trial)
        if mode is not None:
            try:
                self._read(sessions_only=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot read --session-file {self.path}: {exc.strerror or exc}"
                ) from None

    def _read(self, sessions_only: bool = False) -> bytes | None:
        """The bytes of the file, None when there is none. A `UsageError` naming the flag and
        the path given when what is there now is not a regular file (opened without blocking:
        a FIFO put there after `check`), is larger than `MAX_SESSION_FILE` (read no further),
        does not start like a saved session if `sessions_only` (a file of another flag, other
        data: said first, as chmod would not help), or is another user's or open to group or
        others: the file read is the one checked (fstat). Other failures (no permission, EIO)
        are `OSError`."""
        try:
            data, info = read_regular_file_and_stat(os.fspath(self.target), MAX_SESSION_FILE)
        except FileNotFoundError:
            return None
        except RefusedFile as exc:
            raise UsageError(f"--session-file {self.path} {exc}") from None
        if sessions_only and not starts_like_a_session(io.BytesIO(data)):
            raise UsageError(
                f"--session-file {self.path} holds something else than a saved session: give "
                "another path"
            )
        problem = not_ours_alone(info, "file", "600", could="could have written it")
        if problem is not None:
            raise UsageError(f"--session-file {self.path} {problem}")
        return data

    def load(self) -> SessionState | None:
        """The saved session, None when there is none or it cannot be read as one (damaged,
        of another version, unreadable: ignored with a warning, a full handshake replaces it).
        A file `check` would refuse for what it is, its size, its owner or its mode is refused
        here too (`_read`, a `UsageError`), as found in the file opened: one swapped in after
        the check (a FIFO, another user's file) is never waited on nor offered."""
        try:
            data = self._read()
            return None if data is None else SessionState.from_bytes(data)
        except (OSError, ValueError) as exc:
            logging.getLogger("iotdtls.cli").warning("ignoring --session-file: %s", exc)
            return None

    def save(self, session: SessionState | None, extended_master_secret: bool = True) -> None:
        """Keep `session`, the handshake's; None leaves no file, and says why at info level
        (-v): a session made without the extended master secret (`extended_master_secret`
        False: --allow-no-ems with a server from before RFC 7627) is never resumed (RFC 7627
        §5.3), whatever session_id the server gave; else the server gave no session_id
        (tinydtls, a server without a session cache)."""
        if session is None:
            why = (
                "the server gave no session to resume (no session_id)"
                if extended_master_secret
                else "the session was made without the extended master secret, so "
                "it is never resumed (RFC 7627 §5.3)"
            )
            logging.getLogger("iotdtls.cli").info("%s: nothing saved in %s", why, self.path)
            self.discard()
        else:
            try:
                write_atomically(self.target, session.to_bytes(), mode=0o600)
            except OSError as exc:
                raise OSError(exc.errno, self._cannot_write(exc)) from None

    def discard(self) -> None:
        """Remove the saved session: the file itself, not a symlink to it (the secret goes)."""
        self.target.unlink(missing_ok=True)

    def _cannot_write(self, exc: OSError) -> str:
        return f"cannot write --session-file {self.path}: {exc.strerror or exc}"

