"""`iotdtls server` (an echo server) and `iotdtls client` (stdin lines as datagrams, replies on
stdout): argument wiring only, every protocol decision lives in the library. The client can
keep its session in a file (`--session-file`, RES-1), ask for small records
(`--max-fragment-length`, EXT-1) and name the server (`--server-name`, SNI, EXT-2); both keep
their associations alive with heartbeats (`--heartbeat`, EXT-5)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotdtls import aio, loop, workers
from iotdtls._files import write_atomically
from iotdtls.chaincache import ChainCache
from iotdtls.cli.common import (
    DEFAULT_PORT,
    UsageError,
    add_common_flags,
    add_loop_flag,
    parse_hostport,
    setup_logging,
    stop_on_signals,
)
from iotdtls.cli.credentials import (
    add_client_credentials,
    add_server_credentials,
    chain_cache,
    client_config,
    server_config,
)
from iotdtls.config import MAX_FRAGMENT_LENGTHS, ClientConfig, RetryPolicy, ServerConfig
from iotdtls.sessions import SessionState

__all__ = ["register"]

#: After stdin ends, how long the client waits for replies to stop arriving.
REPLY_GRACE = 1.0
STDIN_CHUNK = 65536


def register(sub: Any) -> None:
    """Add `server` and `client` to the subcommands."""
    srv = sub.add_parser("server", help="echo server: every datagram received is sent back")
    srv.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT")
    add_server_credentials(srv)
    srv.add_argument(
        "--no-cookie", action="store_true", help="skip the HelloVerifyRequest exchange"
    )
    srv.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes on the port (SO_REUSEPORT), one cookie secret (default 1)",
    )
    srv.add_argument(
        "--max-handshakes", type=int, default=ServerConfig.max_handshakes, metavar="N",
        help="half-open handshakes kept at once, per worker (the oldest is dropped when full)",
    )
    srv.add_argument(
        "--max-connections", type=int, default=ServerConfig.max_connections, metavar="N",
        help="associations kept at once, per worker (the idlest makes room when full)",
    )
    srv.add_argument(
        "-q", "--quiet", action="store_true",
        help="no log line per handshake (where it listens and the counters at exit only)",
    )
    add_loop_flag(srv)
    _add_heartbeat_flag(srv)
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
    cli.add_argument(
        "--session-file",
        metavar="FILE",
        help="resume the session saved in FILE if there is one, and save the session there "
        "after the handshake (it holds a secret: written with mode 0600)",
    )
    cli.add_argument(
        "--max-fragment-length",
        type=int,
        choices=MAX_FRAGMENT_LENGTHS,
        metavar="{512,1024,2048,4096}",
        help="ask the server for records of at most this many bytes (RFC 6066)",
    )
    _add_heartbeat_flag(cli)
    add_common_flags(cli)
    cli.set_defaults(run=run_client, server_logging=False)


def _add_heartbeat_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help="negotiate heartbeats (RFC 6520) and send one after SECONDS of silence; a peer "
        "that stops answering ends its association",
    )


def _heartbeat_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.heartbeat is None:
        return {}
    return {"heartbeat": True, "keepalive_interval": args.heartbeat}


def run_server(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen)
    config = server_config_of(args)  # bad flags end here, in one line, before any worker
    server_logging(args.verbose, args.quiet)
    if args.workers == 1:
        return loop.run(_serve_alone(config, host, port), args.loop)
    # Each worker builds its configuration from the flags itself (keys stay out of pipes).
    source = functools.partial(server_config_of, args)
    initializer = functools.partial(server_logging, args.verbose, args.quiet)
    return loop.run(
        _serve_workers(source, host, port, args.workers, args.loop, initializer), args.loop
    )


def server_config_of(args: argparse.Namespace) -> ServerConfig:
    """The server's configuration from its flags."""
    return server_config(
        args,
        cookie_exchange=not args.no_cookie,
        mtu=args.mtu,
        keylog_file=args.keylog,
        max_handshakes=args.max_handshakes,
        max_connections=args.max_connections,
        **_heartbeat_settings(args),
    )


def server_logging(verbose: bool, quiet: bool) -> None:
    """The server's stderr logging (also run first in every worker process): `setup_logging`,
    and with `quiet` no line per handshake (a server under load spends time on them)."""
    setup_logging(verbose, server=True)
    if quiet and not verbose:
        logging.getLogger("iotdtls.aio").setLevel(logging.WARNING)


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
        max_fragment_length=args.max_fragment_length,
        **_heartbeat_settings(args),
    )
    session_file = None if args.session_file is None else SessionFile(args.session_file)
    asyncio.run(_talk(config, host, port, chain_cache(args), session_file))
    return 0


async def echo(session: aio.ServerSession) -> None:
    """The server's handler: send every datagram back to its sender."""
    async for datagram in session:
        session.send(datagram)


async def _serve_alone(config: ServerConfig, host: str, port: int) -> int:
    """Serve in this process until SIGINT/SIGTERM; log the counters at the end."""
    stop = stop_on_signals()
    server = await aio.serve(echo, host, port, config)
    # Announced only once SIGINT/SIGTERM are handled: from here on they stop it cleanly.
    log = logging.getLogger("iotdtls.cli")
    running = asyncio.get_running_loop()
    log.info("listening on %s:%d (%s)", *server.address, loop.loop_name(running))
    await stop.wait()
    await server.close()
    log.info("stopped: %s", server.stats.describe())
    return 0


async def _serve_workers(
    source: Callable[[], ServerConfig],
    host: str,
    port: int,
    worker_count: int,
    loop_choice: str,
    initializer: Callable[[], None],
) -> int:
    """Serve with worker processes until SIGINT/SIGTERM (status 0) or until a worker dies
    (status 1); the workers' counters are logged at the end."""
    stop = stop_on_signals()
    pool = await workers.serve(
        echo, host, port, source, workers=worker_count, loop_choice=loop_choice,
        initializer=initializer,
    )
    logging.getLogger("iotdtls.cli").info(
        "listening on %s:%d (%d workers)", *pool.address, worker_count
    )
    ended = asyncio.ensure_future(pool.worker_exited.wait())
    waiters = {asyncio.ensure_future(stop.wait()), ended}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    await pool.close()
    return 1 if pool.worker_exited.is_set() else 0


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
    """Read stdin lines in a daemon thread. Raw reads, not `sys.stdin.buffer`: a thread
    blocked inside the buffered reader when the association ends would hold its lock at
    interpreter shutdown, which aborts the process."""
    pending = b""
    while chunk := os.read(sys.stdin.fileno(), STDIN_CHUNK):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip(b"\r"))
    if pending:
        loop.call_soon_threadsafe(queue.put_nowait, pending.rstrip(b"\r"))
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _talk(
    config: ClientConfig,
    host: str,
    port: int,
    cache: ChainCache | None,
    session_file: SessionFile | None,
) -> None:
    saved = None if session_file is None else session_file.load()
    async with aio.connect(host, port, config, chain_cache=cache, session=saved) as conn:
        if session_file is not None:
            session_file.save(conn.session)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        threading.Thread(target=_stdin_lines, args=(loop, lines), daemon=True).start()

        async def printer() -> None:
            while (data := await conn.recv()) is not None:
                sys.stdout.buffer.write(data + b"\n")
                sys.stdout.buffer.flush()

        reader = asyncio.ensure_future(printer())
        try:
            await _send_lines(conn, lines, reader)
        finally:
            if session_file is not None and conn.session is None:
                session_file.discard()  # ended by a fatal alert: never resume it
        error = reader.exception() if reader.done() and not reader.cancelled() else None
        reader.cancel()
        if error is not None:
            raise error


async def _send_lines(
    conn: aio.ClientConnection,
    lines: asyncio.Queue[bytes | None],
    reader: asyncio.Future[None],
) -> None:
    """Send stdin lines until stdin ends (then let replies in flight arrive for
    `REPLY_GRACE` seconds) or the association does."""
    while True:
        line = asyncio.ensure_future(lines.get())
        either: set[asyncio.Future[Any]] = {line, reader}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            line.cancel()
            return
        data = line.result()
        if data is None:
            await asyncio.wait({reader}, timeout=REPLY_GRACE)
            return
        conn.send(data)


class SessionFile:
    """`--session-file`: a saved session (RES-1) for a device that sleeps or restarts. The
    file holds the master secret, so it is written atomically with mode 0600; one that cannot
    be read as a session is ignored (a full handshake replaces it)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self) -> SessionState | None:
        try:
            return SessionState.from_bytes(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logging.getLogger("iotdtls.cli").warning("ignoring --session-file: %s", exc)
            return None

    def save(self, session: SessionState | None) -> None:
        if session is None:
            self.discard()
        else:
            write_atomically(self.path, session.to_bytes(), mode=0o600)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
