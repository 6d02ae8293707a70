"""The `iotdtls` command line: `server` (echo), `client` (stdin lines as datagrams), `perf`
(load generator), `keygen`, `coap` (CoAP over DTLS with aiocoap), `demo`.

Each subcommand lives in a module of this package with a `register(subparsers)` function that
adds its parser and sets `run` (the function taking the parsed arguments and returning the exit
status) and `server_logging`. This module parses, sets up logging, prepares the --keylog file
of the commands that have one, and turns the errors a user can cause into one line and an exit
status: 2 for usage and configuration (an address naming no usable network interface too), 1
for a failed association, a datagram the association cannot carry or a socket error, 130 for
Ctrl-C of a client (`client` and a `coap` request also end with close_notify on SIGTERM, 143,
and SIGHUP, 129: `common.ended_by_signals`). A server (`server`, `coap serve`) stops cleanly
on SIGINT, SIGTERM or SIGHUP and exits 0; `server` logs its counters on SIGUSR1 and goes on
(ignored from the start of `main`, and after serving).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from iotdtls._addresses import UnusableAddress
from iotdtls.cli import coap, echo, keygen, perf
from iotdtls.cli.common import (
    Parser,
    UsageError,
    counters_signal_ignored,
    discard_new_keylog,
    file_flags,
    fill_closed_standard_fds,
    parse_hostport,
    prepare_keylog,
    require_streams,
    setup_logging,
)
from iotdtls.demo import run_demo
from iotdtls.errors import ConfigError, DtlsError, LocalProtocolError

__all__ = ["UsageError", "main", "parse_hostport"]

#: Modules whose `register(subparsers)` adds subcommands, in help order.
_COMMAND_MODULES = (echo, perf, keygen, coap)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="iotdtls", description="DTLS 1.2 (RFC 7925 profile) tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMAND_MODULES:
        module.register(sub)
    demo = sub.add_parser("demo", help="a server and a client on loopback: handshake and echo")
    demo.set_defaults(run=lambda args: run_demo(), server_logging=None, streams=["stdout"])
    return parser


#: The commands that serve (the first words of their arguments), which log their counters on
#: SIGUSR1 (`counters_signal_ignored`).
_SERVING_COMMANDS = (("server",), ("coap", "serve"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command `argv` names (default: `sys.argv[1:]`); its exit status. For a
    serving command SIGUSR1 is ignored first of all, before the flags are parsed and the keys
    loaded, so that a SIGUSR1 sent as the server starts does not end it
    (`counters_signal_ignored`: once serving ends it stays ignored, or the handler an
    in-process caller had set is put back). First of all, any of fds 0-2 that is closed gets
    /dev/null (`fill_closed_standard_fds`), so that no socket takes it."""
    fill_closed_standard_fds()
    arguments = sys.argv[1:] if argv is None else list(argv)
    serving = any(tuple(arguments[: len(words)]) == words for words in _SERVING_COMMANDS)
    if not serving:
        return _run(arguments)
    with counters_signal_ignored():
        return _run(arguments)


def _run(argv: list[str]) -> int:
    """`main` once SIGUSR1 is seen to: parse, set up logging and the key log, run the
    command, and turn the errors a user can cause into one line and an exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.server_logging is not None:
        setup_logging(args.verbose, server=args.server_logging)
    made_keylog = False
    try:
        require_streams(getattr(args, "streams", ()))
        if getattr(args, "keylog", None) is not None:  # the commands that run associations
            made_keylog = prepare_keylog(args, file_flags(parser))
        status: int = args.run(args)
        return status
    except (UsageError, ConfigError, UnusableAddress) as exc:
        # An address naming no usable interface (a link-local one without %interface, an
        # unknown interface) is a configuration mistake found before any datagram is sent,
        # whichever command met it: `reaching`, `listening_on` or `check_usable` raised it.
        if made_keylog:
            discard_new_keylog(args.keylog)
        said = exc.strerror if isinstance(exc, OSError) else exc
        print(f"iotdtls: error: {said}", file=sys.stderr)
        return 2
    except (DtlsError, LocalProtocolError) as exc:  # the association failed, or refused data
        print(f"iotdtls: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"iotdtls: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
