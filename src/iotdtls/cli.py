"""The `iotdtls` command line: `server` (echo), `client` (stdin lines as datagrams), `demo`.

Argument parsing and wiring only: every protocol decision lives in the library.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from iotdtls import aio
from iotdtls.config import DEFAULT_MTU, ClientConfig, ServerConfig
from iotdtls.demo import run_demo
from iotdtls.errors import ConfigError, DtlsError

__all__ = ["main", "parse_hostport"]

DEFAULT_PORT = 5684  # coaps (RFC 7252 §12.7)
#: After stdin ends, how long the client waits for replies to stop arriving.
REPLY_GRACE = 1.0


class UsageError(Exception):
    """A command-line value is wrong; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"iotdtls: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)


def _hex(name: str, text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise UsageError(
            f"{name} must be hexadecimal bytes (e.g. 0102...0f10), got {text!r}"
        ) from None
    if not value:
        raise UsageError(f"{name} is empty")
    return value


def _psk_file(path: str) -> dict[bytes, bytes]:
    """Lines `identity:HEXKEY` (GnuTLS psktool format); blank lines and # comments skipped."""
    store: dict[bytes, bytes] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --psk-file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, key = line.rpartition(":")
        if not sep or not identity:
            raise UsageError(f"{path}:{number}: expected identity:HEXKEY")
        store[identity.encode()] = _hex(f"{path}:{number} key", key)
    return store


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="largest datagram to send (bytes)")
    p.add_argument(
        "--keylog", metavar="FILE", help="append NSS key-log lines to FILE (for Wireshark)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every datagram")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iotdtls", description="DTLS 1.2 (RFC 7925 profile) tools")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("server", help="echo server: every datagram received is sent back")
    srv.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT")
    srv.add_argument("--psk-identity", metavar="ID")
    srv.add_argument("--psk", metavar="HEX")
    srv.add_argument("--psk-file", metavar="FILE", help="lines identity:HEXKEY")
    srv.add_argument(
        "--no-cookie", action="store_true", help="skip the HelloVerifyRequest exchange"
    )
    _common(srv)
    cli = sub.add_parser("client", help="send each stdin line as one datagram, print replies")
    cli.add_argument("address", metavar="HOST:PORT")
    cli.add_argument("--psk-identity", metavar="ID", required=True)
    cli.add_argument("--psk", metavar="HEX", required=True)
    cli.add_argument("--timeout", type=float, default=30.0, metavar="S", help="handshake deadline")
    _common(cli)
    sub.add_parser("demo", help="a server and a client on loopback: handshake and echo")
    return parser


def _server_config(args: argparse.Namespace) -> ServerConfig:
    store: dict[bytes, bytes] = _psk_file(args.psk_file) if args.psk_file else {}
    if (args.psk_identity is None) != (args.psk is None):
        raise UsageError("give --psk-identity and --psk together")
    if args.psk is not None:
        store[args.psk_identity.encode()] = _hex("--psk", args.psk)
    if not store:
        raise UsageError("give --psk-identity ID --psk HEX, or --psk-file FILE")
    return ServerConfig(
        psk_store=store,
        cookie_exchange=not args.no_cookie,
        mtu=args.mtu,
        keylog_file=args.keylog,
    )


async def _run_server(config: ServerConfig, host: str, port: int) -> None:
    async def echo(session: aio.ServerSession) -> None:
        async for datagram in session:
            session.send(datagram)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await aio.serve(echo, host, port, config)
    bound = server.address
    # Announced only once SIGINT/SIGTERM are handled: from here on they stop it cleanly.
    logging.getLogger("iotdtls.cli").info("listening on %s:%d", bound[0], bound[1])
    await stop.wait()
    await server.close()


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
    for line in sys.stdin.buffer:
        loop.call_soon_threadsafe(queue.put_nowait, line.rstrip(b"\r\n"))
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _run_client(config: ClientConfig, host: str, port: int) -> None:
    async with aio.connect(host, port, config) as conn:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        threading.Thread(target=_stdin_lines, args=(loop, lines), daemon=True).start()

        async def printer() -> None:
            while (data := await conn.recv()) is not None:
                sys.stdout.buffer.write(data + b"\n")
                sys.stdout.buffer.flush()

        reader = asyncio.ensure_future(printer())
        while (line := await lines.get()) is not None:
            if reader.done():
                break
            conn.send(line)
        # stdin ended: let replies in flight arrive, then close_notify.
        done, _ = await asyncio.wait({reader}, timeout=REPLY_GRACE)
        reader.cancel()
        error = reader.exception() if reader in done else None
        if error is not None:
            raise error


def _setup_logging(verbose: bool, server: bool) -> None:
    """stderr logging. Without -v: the server says where it listens and one line per
    handshake (peer and identity, from `iotdtls.aio`); the client only its final error.
    With -v: everything, every datagram included (`iotdtls.trace`, no key material)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("iotdtls").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if server and not verbose:
        for name in ("iotdtls.aio", "iotdtls.cli"):
            logging.getLogger(name).setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return run_demo()
    _setup_logging(args.verbose, server=args.command == "server")
    try:
        if args.command == "server":
            host, port = parse_hostport(args.listen)
            asyncio.run(_run_server(_server_config(args), host, port))
            return 0
        host, port = parse_hostport(args.address)
        config = ClientConfig(
            psk_identity=args.psk_identity,
            psk=_hex("--psk", args.psk),
            handshake_timeout=args.timeout,
            mtu=args.mtu,
            keylog_file=args.keylog,
        )
        asyncio.run(_run_client(config, host, port))
        return 0
    except (UsageError, ConfigError) as exc:
        print(f"iotdtls: error: {exc}", file=sys.stderr)
        return 2
    except DtlsError as exc:
        print(f"iotdtls: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"iotdtls: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
