"""What every `iotdtls` subcommand shares: the one-line usage error, HOST:PORT and hex parsing,
the number flags' checked types, the common flags (the --keylog file made private before any
handshake), stdout for bytes, a server's socket errors naming its address and the stderr
logging set-up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import ipaddress
import logging
import math
import os
import signal
import string
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, BinaryIO, NoReturn, Protocol

from iotdtls._addresses import format_hostport, host_from_uri, misplaced_zone
from iotdtls._arguments import MAX_PORT
from iotdtls._files import RefusedFile, open_private_append, same_file
from iotdtls.config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MTU,
    MAX_MTU,
    MIN_KEEPALIVE_INTERVAL,
    MIN_MTU,
    RFC6347_RETRANSMIT,
    RetransmitPolicy,
    ServerConfig,
    keepalive_outlasts_idle,
)
from iotdtls.loop import LOOP_CHOICES
from iotdtls.stats import ServerStats

__all__ = [
    "DEFAULT_PORT",
    "Once",
    "UsageError",
    "add_common_flags",
    "add_loop_flag",
    "add_server_limits",
    "common_settings",
    "counters_signal_ignored",
    "discard_new_keylog",
    "ended_by_signals",
    "file_flags",
    "file_path",
    "fill_closed_standard_fds",
    "format_hostport",
    "hex_bytes",
    "log_counters_on_signal",
    "log_stopped",
    "parse_hostport",
    "parse_listen",
    "prepare_keylog",
    "require_streams",
    "seconds",
    "server_limits",
    "setup_logging",
    "stdout_buffer",
    "stop_on_signals",
    "whole_number",
]

DEFAULT_PORT = 5684  # coaps (RFC 7252 §12.7)
#: The smallest --retransmit: a first timeout far below a round trip only floods the path (a
#: server without cookie exchange would answer one ClientHello with a flight per doubling).
MIN_RETRANSMIT = 0.1
_HEX_DIGITS = frozenset(string.hexdigits)
#: A valid value for the messages of hex flags (16 bytes: a PSK of the usual size), not the
#: demo's key (a key in a test or a script should not show up in a message).
HEX_EXAMPLE = "00112233445566778899aabbccddeeff"
#: The namespace attribute where `Once` keeps the dests of the flags given.
_GIVEN_ONCE = "_given_once"


class UsageError(Exception):
    """A command-line value is wrong; the message is the one line to print."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit status 2, which never shows a
    value of the command line that may be a key (SEC-1): a mistyped key flag (`--psk-key HEX`,
    `--ps=HEX`) is named, its value only counted. A flag that takes one value is refused given
    twice (`Once` is its default action; the repeatable ones say `action="append"`), in every
    subcommand: `add_subparsers` makes them of the parent's class. `program` begins the error
    line: "iotdtls" for the `iotdtls` command and its subcommands."""

    program = "iotdtls"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, Once)
        self.register("action", "store", Once)

    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        """argparse's, its unrecognized arguments named by their flags (`_unrecognized`)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {_unrecognized(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        print(f"{self.program}: error: {_without_values(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _flag_name(arg: str) -> str:
    """The flag of a command-line word, without a value given with it: "--psk" of
    "--psk=HEX", "-v" of "-vHEX" (a short flag's value may follow it)."""
    return arg.partition("=")[0] if arg.startswith("--") else arg[:2]


def _is_flag(arg: str) -> bool:
    """Whether a word looks like a flag (argparse's negative numbers do not)."""
    return arg.startswith("-") and arg[1:2] not in ("", *string.digits, ".")


def _unrecognized(extras: list[str]) -> str:
    """Unrecognized arguments for a message: the flags by name (`_flag_name`); values, alone
    or joined to a flag, only counted: "--psk-key (and 1 value, not shown)"."""
    flags = [_flag_name(arg) for arg in extras if _is_flag(arg)]
    values = len(extras) - len(flags) + sum(
        _flag_name(arg) != arg for arg in extras if _is_flag(arg)
    )
    counted = f"{values} value{'s' * (values != 1)}, not shown"
    if not flags:
        return counted
    return " ".join(flags) + (f" (and {counted})" if values else "")


def _without_values(message: str) -> str:
    """argparse's `message` without the command-line values it quotes where they may be a key
    (an unknown flag's "=VALUE", a value given to a flag that takes none)."""
    if message.startswith("ambiguous option: ") and " could match " in message:
        given, _, matches = message.removeprefix("ambiguous option: ").rpartition(" could match ")
        return f"ambiguous option: {_flag_name(given)} could match {matches}"
    argument, sep, _ = message.partition(": ignored explicit argument ")
    if sep:
        return f"{argument}: takes no value (the one given is not shown)"
    return message


class Once(argparse.Action):
    """argparse's `store` for a flag that takes one value, refusing it given twice (argparse
    keeps the last: `--psk-file A --psk-file B` would silently take B) in one line naming the
    flag; `hint`, if given, follows: "--psk-identity given twice: it takes one value; several
    PSK clients go in --psk-file"."""

    def __init__(self, *args: Any, hint: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hint = hint

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # The flags given so far, by dest: a value equal to the default (`--workers 1 --workers
        # 2`) or the default object itself (a small int) is given all the same.
        given: set[str] = namespace.__dict__.setdefault(_GIVEN_ONCE, set())
        if self.dest in given:
            hint = f"; {self.hint}" if self.hint else ""
            parser.error(f"{option_string} given twice: it takes one value{hint}")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def parse_hostport(
    text: str, default_host: str = "127.0.0.1", *, any_port: bool = False
) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` (a link-local address with its interface: `[fe80::1%eth0]:PORT`,
    or as a coaps URI writes it, `[fe80::1%25eth0]:PORT`, RFC 6874 §2) or `:PORT`. An IPv6
    address outside brackets is refused: `fd00::2:5684` is itself an IPv6 address, and
    `::1` would be read as host ":" and port 1. Brackets around anything else are refused too
    (RFC 3986 §3.2.2 keeps them for IP literals): `[127.0.0.1]` or `[v1.x]` is not IPv6; and
    so is a zone after anything but an IPv6 address (`127.0.0.1%lo`, `misplaced_zone`).
    The port is 1 to 65535 (where to send), 0 too with `any_port` (where to listen: a free
    port the kernel picks), as the API's `check_port` has it, in one message."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        sep, port = after[:1], after[1:]
        if not bracket or sep not in ("", ":"):
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        try:
            host = host_from_uri(host)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            raise UsageError(
                f"expected HOST:PORT, got {text!r}: write an IPv6 address in brackets, "
                f"as in {_bracketed_examples(text)}"
            )
    if not port:
        raise UsageError(f"expected HOST:PORT, got {text!r}: the port is missing")
    lowest = 0 if any_port else 1
    if not port.isdigit() or not lowest <= int(port) <= MAX_PORT:
        raise UsageError(f"port must be a number from {lowest} to {MAX_PORT}, got {port!r}")
    # A hint names only a form that is taken: the host without the zone or the brackets.
    if misplaced := misplaced_zone(host):
        why, bare = misplaced
        hint = f"write {bare}:{port}" if bare else f"as in [fe80::1%eth0]:{port}"
        raise UsageError(f"expected HOST:PORT, got {text!r}: {why}, {hint}")
    if text.startswith("[") and host and not _is_ipv6(host):
        if ":" in host:  # not to be written without its brackets either
            raise UsageError(f"expected HOST:PORT, got {text!r}: {host} is not an IPv6 address")
        raise UsageError(
            f"expected HOST:PORT, got {text!r}: brackets are for an IPv6 address only, "
            f"write {host}:{port}"
        )
    return host or default_host, int(port)


def _bracketed_examples(text: str) -> str:
    """What `text`, an IPv6 address with or without a port after it, may have meant in
    `[V6]:PORT` form: "[fd00::2]:5684 or [fd00::2:5684]:PORT"."""
    host, _, port = text.rpartition(":")
    examples = []
    if port.isdigit() and _is_ipv6(host):
        examples.append(f"[{host}]:{port}")
    if ":" not in text.partition("%")[2] and _is_ipv6(text):  # a ":" after the zone: a port
        examples.append(f"[{text}]:PORT")
    return " or ".join(examples) or f"[::1]:{DEFAULT_PORT}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_listen(text: str) -> tuple[str, int]:
    """A server's --listen `HOST:PORT`, its host required: `:PORT` means every address to
    some tools and loopback to others, so it is refused as the API refuses an empty host."""
    host, port = parse_hostport(text, default_host="", any_port=True)
    if not host:
        raise UsageError(
            f"--listen {text!r} has no host: give 127.0.0.1:{port} to serve this machine "
            f"only, 0.0.0.0:{port} (every IPv4 address) or [::]:{port} (every address, IPv4 "
            "too)"
        )
    return host, port


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number from `minimum` (to `maximum`). argparse names the
    flag in the one-line error: "argument --workers: must be a whole number from 1 to 256,
    got '0'"."""
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text!r}")
        return value

    return parse


def seconds(minimum: float = 0.0, *, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse `type`: a finite number of seconds above `minimum` (at least `minimum` when
    `inclusive`), refused like `whole_number`'s: "argument --timeout: must be a number of
    seconds > 0, got '0'"."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        in_range = value >= minimum if inclusive else value > minimum
        if not (math.isfinite(value) and in_range):
            raise argparse.ArgumentTypeError(f"must be a number of seconds {bound}, got {text!r}")
        return value

    return parse


def hex_bytes(name: str, text: str, *, secret: bool = False) -> bytes:
    """Non-empty hexadecimal bytes, or a one-line `UsageError` naming the flag. The message
    quotes a wrong value, except a `secret` one (a key mistyped by one digit is nearly the
    key): then it says where the value goes wrong."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        problem = _hex_problem(text) if secret else f"got {text!r}"
        raise UsageError(
            f"{name} must be hexadecimal bytes (e.g. {HEX_EXAMPLE}), {problem}"
        ) from None
    if not value:
        raise UsageError(f"{name} is empty")
    return value


def _hex_problem(text: str) -> str:
    """What is wrong with `text` as hexadecimal bytes, without quoting any of it."""
    for position, char in enumerate(text, 1):
        if char not in _HEX_DIGITS and not char.isspace():
            return f"character {position} of {len(text)} is not a hex digit"
    return "the digits do not pair up into whole bytes"


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--mtu, --retransmit, --keylog and -v, for every command that runs associations."""
    p.add_argument(
        "--mtu", type=whole_number(MIN_MTU, MAX_MTU), default=DEFAULT_MTU,
        help=f"largest datagram to send, in bytes (default {DEFAULT_MTU})",
    )
    p.add_argument(
        "--retransmit", type=seconds(MIN_RETRANSMIT, inclusive=True),
        default=RFC6347_RETRANSMIT.initial, metavar="S",
        help=f"first handshake retransmission after S s (at least {MIN_RETRANSMIT:g}), doubling "
        f"up to {RFC6347_RETRANSMIT.maximum:g} s or S if larger (default "
        f"{RFC6347_RETRANSMIT.initial:g}; RFC 7925 §11 suggests 9 on constrained networks)",
    )
    p.add_argument(
        "--keylog", metavar="FILE", action=Once,
        help="append NSS key-log lines to FILE (for Wireshark)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every datagram")


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration settings of `add_common_flags`' flags, for a client or server
    configuration: mtu, the retransmission timer (RFC 6347 §4.2.4.1: doubling from --retransmit
    to a cap of at least 60 s) and the key-log file."""
    initial: float = args.retransmit
    return {
        "mtu": args.mtu,
        "retransmit": RetransmitPolicy(initial, max(RFC6347_RETRANSMIT.maximum, initial)),
        "keylog_file": args.keylog,
    }


def add_server_limits(p: argparse.ArgumentParser, per: str = "") -> None:
    """--max-handshakes, --max-handshakes-per-host, --max-connections and --idle-timeout, for
    every command that serves (`per`, e.g. ", per worker": what the counts are kept for)."""
    p.add_argument(
        "--max-handshakes", type=whole_number(1), default=ServerConfig.max_handshakes,
        metavar="N",
        help=f"half-open handshakes kept at once{per} (the oldest is dropped when full; "
        f"default {ServerConfig.max_handshakes})",
    )
    p.add_argument(
        "--max-handshakes-per-host", type=whole_number(1),
        default=ServerConfig.max_handshakes_per_host, metavar="N",
        help="of those, kept from one host (IPv4 address, IPv6 /64) once all are in use: a "
        "host under it takes the place of the oldest of the host most beyond it; at or beyond "
        "it, its own oldest is dropped once stalled, else the new one waits for a "
        f"retransmission (default {ServerConfig.max_handshakes_per_host})",
    )
    p.add_argument(
        "--max-connections", type=whole_number(1), default=ServerConfig.max_connections,
        metavar="N",
        help=f"established associations kept at once{per} (the idlest makes room when "
        f"full; default {ServerConfig.max_connections})",
    )
    p.add_argument(
        "--idle-timeout", type=seconds(), default=DEFAULT_IDLE_TIMEOUT, metavar="S",
        help="close associations whose peer sent nothing for S seconds (what we send it does "
        f"not count; an answer to --heartbeat does; default {DEFAULT_IDLE_TIMEOUT:g})",
    )


def add_quiet_flag(p: argparse.ArgumentParser) -> None:
    """-q: no log line per handshake (`server_logging`), for every command that serves."""
    p.add_argument(
        "-q", "--quiet", action="store_true",
        help="no log line per handshake (where it listens and the counters only)",
    )


def add_server_timeouts(p: argparse.ArgumentParser) -> None:
    """--timeout (the handshake timeout) and --heartbeat, for every command that serves."""
    p.add_argument(
        "--timeout", type=seconds(), default=ServerConfig.handshake_timeout, metavar="S",
        help="deadline of a handshake (a half-open one is dropped after it), and of the answer "
        f"to a heartbeat (default {ServerConfig.handshake_timeout:g})",
    )
    add_heartbeat_flag(p, "--timeout")


def server_timeouts(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServerConfig` settings of `add_server_timeouts`' flags; --heartbeat plus --timeout
    (while a heartbeat is sent again) must not exceed --idle-timeout (`add_server_limits`),
    which only the peer's records reset."""
    if keepalive_outlasts_idle(args.heartbeat, args.timeout, args.idle_timeout):
        raise UsageError(
            f"--heartbeat {args.heartbeat:g} plus --timeout {args.timeout:g} must not exceed "
            f"--idle-timeout {args.idle_timeout:g}: a client that only listens would be let go "
            "before its heartbeat is answered"
        )
    return {"handshake_timeout": args.timeout, **heartbeat_settings(args)}


def add_heartbeat_flag(p: argparse.ArgumentParser, unanswered: str) -> None:
    """--heartbeat; `unanswered`: how long a heartbeat may go unanswered (the handshake
    timeout, the threshold of RFC 6520 §3)."""
    p.add_argument(
        "--heartbeat",
        type=seconds(MIN_KEEPALIVE_INTERVAL, inclusive=True),
        metavar="SECONDS",
        help="negotiate heartbeats (RFC 6520) and send one after SECONDS of silence; one "
        f"unanswered for {unanswered} ends the association; an answer to the peer's request is "
        "as large as the request, even beyond --mtu",
    )


def heartbeat_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration settings of `add_heartbeat_flag`'s flag, client or server."""
    if args.heartbeat is None:
        return {}
    return {"heartbeat": True, "keepalive_interval": args.heartbeat}


def server_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServerConfig` settings of `add_server_limits`' flags."""
    return {
        "max_handshakes": args.max_handshakes,
        "max_handshakes_per_host": args.max_handshakes_per_host,
        "max_connections": args.max_connections,
        "idle_timeout": args.idle_timeout,
    }


def file_path(value: str) -> str:
    """The `type` of every flag naming a file the command reads, writes or keeps
    (--session-file): the mark `file_flags` finds them by. The value is taken as it is."""
    return value


def file_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The flags `file_path` marks in `parser` and its subcommands, by argparse dest: the
    --keylog file must be none of them (SEC-1: master secrets appended to a key or a CA
    file). Read from the parser, so that a file flag added later is checked too."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(file_flags(sub))
        elif action.type is file_path:
            found[action.dest] = max(action.option_strings, key=len)
    return found


def prepare_keylog(args: argparse.Namespace, files: dict[str, str]) -> bool:
    """--keylog FILE, before any handshake: the file must take appended lines, and a missing
    one is created with mode 0600, as it will hold every association's master secret. An
    existing one must be a regular file of this user's that only it can read or write, and
    not a symlink, nor reached through another user's symlink in a shared directory
    (`open_private_append`: what another user could have planted, or could read), nor
    another of the command's files (`files`, from `file_flags`; through links too; which may
    be missing yet, as the session file: compared by path then). Whether the file was
    made now (see `discard_new_keylog`); a `UsageError` naming the flag and the file
    otherwise."""
    path: str = args.keylog
    for dest, flag in files.items():
        given = getattr(args, dest, None)
        for other in given if isinstance(given, list) else [given]:
            if other is not None and same_file(path, other):
                raise UsageError(
                    f"--keylog {path} is the {flag} file too: give the key log a file of its own"
                )
    made = not os.path.lexists(path)
    try:
        fd = open_private_append(path)
    except RefusedFile as exc:
        raise UsageError(f"--keylog {path} {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write --keylog {path}: {exc.strerror or exc}") from None
    os.close(fd)
    return made


def discard_new_keylog(path: str) -> None:
    """Remove the key-log file `prepare_keylog` made for a command that was then refused (a
    flag that does not fit the URI, a credential file that cannot be read): nothing ran, so
    nothing is left behind. A file that has lines meanwhile is kept."""
    with contextlib.suppress(OSError):
        if os.path.getsize(path) == 0:
            os.remove(path)


def fill_closed_standard_fds() -> None:
    """Open os.devnull onto whichever of fds 0, 1 and 2 is closed (a command started with
    `<&-` or `>&-`): else the first sockets took those numbers, and uvloop (libuv) aborted
    the process as it closed them at the end (its assertion `fd > STDERR_FILENO`, status
    134). Inheritable, as standard descriptors are, so that the processes a command spawns
    (workers, generators) start with them open too. `sys.stdin` and `sys.stdout` stay None:
    a command that needs one still says it is closed (`stdout_buffer`). `sys.stderr` becomes
    a text stream on the new fd 2, as Python makes it (line-buffered, backslashreplace): left
    None, print(..., file=sys.stderr) wrote to stdout, the error lines among the payload, and
    the logging set up later (`setup_logging`) takes it too."""
    for fd in range(3):
        try:
            os.fstat(fd)
        except OSError:  # EBADF: closed
            # open gives the lowest free number (POSIX): this one, the lower ones being open.
            os.set_inheritable(os.open(os.devnull, os.O_RDWR), True)
            if fd == 2:
                # Never closed (closefd=False): fd 2 stays open as long as the process.
                sys.stderr = io.TextIOWrapper(
                    io.FileIO(2, "w", closefd=False), errors="backslashreplace",
                    line_buffering=True,
                )


#: What a command started without a stream it needs says (`require_streams`).
_CLOSED_STREAMS = {
    "stdin": "cannot read: stdin is closed",
    "stdout": "cannot print: stdout is closed",
}


def require_streams(names: Iterable[str]) -> None:
    """An `OSError` (the command's one line, status 1) when the command was started with one
    of the streams `names` ("stdin", "stdout") closed (`<&-`, `>&-`: `sys.stdin` or
    `sys.stdout` is None, `fill_closed_standard_fds`). `main` checks the streams a command
    declares (`set_defaults(streams=...)`) before the key log is made or anything sent: the
    client handshook with no line to send, perf and demo lost their report, all with
    status 0."""
    for name in names:
        if getattr(sys, name) is None:
            raise OSError(_CLOSED_STREAMS[name])


def stdout_buffer() -> BinaryIO:
    """stdout for bytes; an `OSError` (the command's one line, status 1) when the command was
    started with stdout closed (`require_streams`), as a full disk or a closed pipe would
    give."""
    require_streams(["stdout"])
    return sys.stdout.buffer


def add_loop_flag(p: argparse.ArgumentParser) -> None:
    """--loop: the event loop (`iotdtls.loop`; auto = uvloop when installed)."""
    p.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop (default auto: uvloop when installed), or force one",
    )


def setup_logging(verbose: bool, server: bool) -> None:
    """stderr logging. Without -v: a server says where it listens and one line per handshake
    (peer and identity, from `iotdtls.aio`), and a coaps server what an association's end sums
    up (`iotdtls.coap`: Observe registrations past the bound served as plain GETs, datagrams
    that were not CoAP messages); a client only its final error. With -v: everything, every
    datagram included (`iotdtls.trace`, no key material)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("iotdtls").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if server and not verbose:
        for name in _SERVER_INFO_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


#: The loggers whose info lines a server shows without -v (`setup_logging`).
_SERVER_INFO_LOGGERS = ("iotdtls.aio", "iotdtls.cli", "iotdtls.workers", "iotdtls.coap")


def server_logging(verbose: bool, quiet: bool) -> None:
    """A server's stderr logging (also run first in every worker process): `setup_logging`,
    and with `quiet` (-q) no line per handshake (a server under load spends time on them)."""
    setup_logging(verbose, server=True)
    if quiet and not verbose:
        logging.getLogger("iotdtls.aio").setLevel(logging.WARNING)


#: Signals that stop a server cleanly (a terminal closing sends SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The signal that makes a server log its counters and go on serving.
COUNTERS_SIGNAL = signal.SIGUSR1


class HasCounters(Protocol):
    """A server whose counters the command line logs (`aio.DtlsServer`)."""

    @property
    def stats(self) -> ServerStats: ...


@contextlib.contextmanager
def counters_signal_ignored() -> Iterator[None]:
    """Ignore SIGUSR1 (`COUNTERS_SIGNAL`) until the server's loop handles it
    (`log_counters_on_signal`): its default action ended a server signalled while it started
    (its keys loading, its workers spawning). Spawned workers inherit that, and ignore it
    anyway. Once serving ends (the loop, closing, left SIG_DFL) it stays ignored to the
    process's exit: the default action ended a server signalled after its "stopped:" line,
    during its teardown. A handler a caller in-process had set is put back."""
    previous = signal.signal(COUNTERS_SIGNAL, signal.SIG_IGN)
    try:
        yield
    finally:
        keep = signal.SIG_IGN if previous in (None, signal.SIG_DFL) else previous
        signal.signal(COUNTERS_SIGNAL, keep)


def log_counters_on_signal(server: HasCounters, log: logging.Logger) -> None:
    """On SIGUSR1, log the server's counters ("counters: handshakes ...") and go on serving."""
    asyncio.get_running_loop().add_signal_handler(
        COUNTERS_SIGNAL, lambda: log.info("counters: %s", server.stats.describe())
    )


def log_stopped(server: HasCounters, log: logging.Logger) -> None:
    """The line a server logs once stopped: "stopped: " and its counters."""
    log.info("stopped: %s", server.stats.describe())


def stop_on_signals() -> asyncio.Event:
    """An event of the running loop that SIGINT, SIGTERM and SIGHUP set (a server's clean
    stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    return stop


#: Signals that end a client as Ctrl-C does (a terminal closing sends SIGHUP; a service
#: manager or `kill` sends SIGTERM).
END_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def ended_by_signals(work: Coroutine[Any, Any, int]) -> int:
    """`work`'s exit status; or, when SIGTERM or SIGHUP comes, `work` cancelled as Ctrl-C
    cancels it (a client's association ends with close_notify, RFC 5246 §7.2.1, rather than
    waiting out the server's idle timeout) and 128 + the signal's number, the status a shell
    gives a process the signal ended. `iotdtls client` and `coap` requests run under it."""
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def end(number: int) -> None:
        received.append(number)
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in END_SIGNALS:
        loop.add_signal_handler(sig, end, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for sig in END_SIGNALS:
            loop.remove_signal_handler(sig)
