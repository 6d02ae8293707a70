"""`iotdtls server` (an echo server) and `iotdtls client` (stdin lines as datagrams, replies on
stdout): argument wiring only, every protocol decision lives in the library."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from iotdtls import aio
from iotdtls.chaincache import ChainCache
from iotdtls.cli.common import (
    DEFAULT_PORT,
    UsageError,
    add_common_flags,
    parse_hostport,
    stop_on_signals,
)
from iotdtls.cli.credentials import (
    add_client_credentials,
    add_server_credentials,
    chain_cache,
    client_config,
    server_config,
)
from iotdtls.config import DEFAULT_IDLE_TIMEOUT, ClientConfig, RetryPolicy, ServerConfig
from iotdtls.errors import DatagramTooLarge

__all__ = ["register"]

#: After stdin ends, how long the client waits for replies to stop arriving.
REPLY_GRACE = 1.0
#: Bytes read from stdin at a time.
STDIN_CHUNK = 65536
#: Longest the server's stop may take (handlers that ignore cancellation are left behind).
STOP_GRACE = 5.0


def register(sub: Any) -> None:
    """Add `server` and `client` to the subcommands."""
    srv = sub.add_parser("server", help="echo server: every datagram received is sent back")
    srv.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT")
    add_server_credentials(srv)
    srv.add_argument(
        "--no-cookie", action="store_true", help="skip the HelloVerifyRequest exchange"
    )
    srv.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help=f"close associations idle for S seconds (default {DEFAULT_IDLE_TIMEOUT:g})",
    )
    add_common_flags(srv)
    srv.set_defaults(run=run_server, server_logging=True)

    cli = sub.add_parser("client", help="send each stdin line as one datagram, print replies")
    cli.add_argument("address", metavar="HOST:PORT")
    add_client_credentials(cli)
    cli.add_argument("--timeout", type=float, default=30.0, metavar="S", help="handshake deadline")
    cli.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="after a failed handshake, try N more times with back-off",
    )
    add_common_flags(cli)
    cli.set_defaults(run=run_client, server_logging=False)


def run_server(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen)
    config = server_config(
        args,
        cookie_exchange=not args.no_cookie,
        mtu=args.mtu,
        keylog_file=args.keylog,
        idle_timeout=args.idle_timeout,
    )
    asyncio.run(_serve(config, host, port))
    return 0


def run_client(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    config = client_config(
        args,
        host,
        handshake_timeout=args.timeout,
        mtu=args.mtu,
        keylog_file=args.keylog,
        retry=RetryPolicy(args.retries + 1) if args.retries else None,
    )
    asyncio.run(_talk(config, host, port, chain_cache(args)))
    return 0


async def _echo(session: aio.ServerSession) -> None:
    async for datagram in session:
        try:
            session.send(datagram)
        except DatagramTooLarge as exc:  # the client's MTU is larger than ours
            logging.getLogger("iotdtls.cli").warning("reply not sent: %s", exc)


async def _serve(config: ServerConfig, host: str, port: int) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then stop: close_notify to every peer, handlers
    cancelled, socket closed, within `STOP_GRACE` seconds. stdin is never read: a server run
    from a terminal or a pipe does not care whether it stays open."""
    stop = stop_on_signals()
    server = await aio.serve(_echo, host, port, config)
    bound = server.address
    # Announced only once the signals are handled: from here on they stop it cleanly.
    log = logging.getLogger("iotdtls.cli")
    log.info("listening on %s:%d", bound[0], bound[1])
    await stop.wait()
    try:
        await asyncio.wait_for(server.close(), STOP_GRACE)
    except TimeoutError:
        log.warning("stopped after %g s with handlers still running", STOP_GRACE)


class StdinLines:
    """Lines of stdin for the event loop, read without a thread.

    A pipe or terminal is watched by the loop (`add_reader`), so the client can end at any
    moment, whatever stdin is doing, and no reader thread is left blocked in `read()` when the
    interpreter shuts down. A regular file or /dev/null cannot be watched (and never blocks):
    it is read at once. `get()` returns each line without its end of line, then None at EOF.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending = b""
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
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._queue.put_nowait(line.rstrip(b"\r"))

    def _end(self) -> None:
        if self._pending:
            self._queue.put_nowait(self._pending.rstrip(b"\r"))
            self._pending = b""
        self._queue.put_nowait(None)


async def _print_replies(conn: aio.ClientConnection) -> None:
    """Each datagram on its own line until the association ends; raises what ended it."""
    while (data := await conn.recv()) is not None:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()


async def _talk(config: ClientConfig, host: str, port: int, cache: ChainCache | None) -> None:
    """Send stdin lines until EOF, then close_notify; end at once when the server ends the
    association (close_notify: clean; a fatal alert: its `DtlsError` is raised)."""
    async with aio.connect(host, port, config, chain_cache=cache) as conn:
        lines = StdinLines(asyncio.get_running_loop())
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
