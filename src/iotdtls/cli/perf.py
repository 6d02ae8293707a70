"""`iotdtls perf HOST:PORT`: the load generator (`iotdtls.perf`): argument wiring only.

Progress goes to stderr once a second; the report (text, or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from typing import Any

from iotdtls._addresses import check_usable
from iotdtls.cli.common import (
    UsageError,
    add_common_flags,
    add_loop_flag,
    common_settings,
    format_hostport,
    parse_hostport,
    seconds,
    setup_logging,
    whole_number,
)
from iotdtls.cli.credentials import add_client_credentials, chain_cache, client_config
from iotdtls.config import ClientConfig
from iotdtls.perf import (
    MIN_MESSAGE_SIZE,
    GeneratorProcessFailed,
    LoadProgress,
    LoadResult,
    LoadSpec,
    lanes,
    largest_message,
    run_load,
)

__all__ = ["register"]

DEFAULT_DURATION = 10.0


def register(sub: Any) -> None:
    """Add `perf` to the subcommands."""
    p = sub.add_parser(
        "perf",
        help="load generator: many handshakes at once against a DTLS server, then a report",
    )
    p.add_argument(
        "address", metavar="HOST:PORT", help="the DTLS server to load ([V6]:PORT for IPv6)"
    )
    add_client_credentials(p)
    p.add_argument(
        "--concurrency", "-c", type=whole_number(1), default=10, metavar="N",
        help="handshakes in flight (default 10)",
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", "-d", type=seconds(), metavar="S",
        help=f"start new handshakes for S seconds (default {DEFAULT_DURATION:g})",
    )
    amount.add_argument(
        "--handshakes", "-n", type=whole_number(1), metavar="N", help="run N handshakes"
    )
    p.add_argument(
        "--messages", "-m", type=whole_number(0), default=0, metavar="K",
        help="datagrams echoed over each association (default 0)",
    )
    # Its range (up to what one datagram of the MTU carries) is checked with the MTU, below.
    p.add_argument(
        "--size", type=whole_number(1), default=64, metavar="B",
        help=f"bytes per message, {MIN_MESSAGE_SIZE} up to what one datagram of --mtu carries "
        "(default 64)",
    )
    p.add_argument(
        "--resume", action="store_true",
        help="offer each association the session of the one before it in its lane "
        "(one full handshake per lane, then abbreviated ones)",
    )
    p.add_argument(
        "--timeout", type=seconds(), default=10.0, metavar="S",
        help="handshake deadline (default 10)",
    )
    p.add_argument(
        "--echo-timeout", type=seconds(), default=2.0, metavar="S",
        help="wait this long from each send for its echo (default 2)",
    )
    p.add_argument(
        "--processes", "-p", type=whole_number(1), default=1, metavar="P",
        help="generator processes sharing the concurrency (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    add_loop_flag(p)
    add_common_flags(p)
    p.set_defaults(run=run_perf, server_logging=False, streams=["stdout"])


def client_config_of(args: argparse.Namespace, host: str) -> ClientConfig:
    """The clients' configuration from the flags (built again in each generator process)."""
    return client_config(args, host, handshake_timeout=args.timeout, **common_settings(args))


def _json_report(
    result: LoadResult, spec: LoadSpec, args: argparse.Namespace, in_flight: int
) -> dict[str, Any]:
    """What --json prints: the run as asked for ("requested": -c, -d or -n, -m, --size, -p,
    --resume, --timeout, --echo-timeout), the concurrency used (the text report's header: at
    most -n), then the figures (`LoadResult.summary`; its "processes" are those that
    reported): rates and latencies cannot be read without the run's parameters."""
    requested = {
        "concurrency": spec.concurrency,
        "duration_s": spec.duration,
        "handshakes": spec.handshakes,
        "messages": spec.messages,
        "message_size": spec.message_size,
        "processes": args.processes,
        "resume": spec.resume,
        "timeout_s": args.timeout,
        "echo_timeout_s": spec.echo_timeout,
    }
    return {"requested": requested, "concurrency": in_flight, **result.summary()}


def run_perf(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    check_usable(host, port)  # else every handshake fails, "Invalid argument"
    config = client_config_of(args, host)  # bad flags end here, in one line
    largest = largest_message(config.mtu)
    if not MIN_MESSAGE_SIZE <= args.size <= largest:
        raise UsageError(
            f"--size must be from {MIN_MESSAGE_SIZE} to {largest} bytes (what one datagram "
            f"of --mtu {config.mtu} carries), got {args.size}"
        )
    source = functools.partial(client_config_of, args, host) if args.processes > 1 else config
    duration = args.duration
    if duration is None and args.handshakes is None:
        duration = DEFAULT_DURATION
    spec = LoadSpec(
        host, port, source,
        concurrency=args.concurrency, duration=duration, handshakes=args.handshakes,
        messages=args.messages, message_size=args.size, echo_timeout=args.echo_timeout,
        resume=args.resume, chain_cache=chain_cache(args),
    )
    in_flight = lanes(spec)
    if args.processes > in_flight:
        raise UsageError(
            f"--processes {args.processes} is more than the --concurrency"
            f"{'' if in_flight == args.concurrency else ' or --handshakes'} ({in_flight}): "
            "each process needs a handshake of its own"
        )
    started = time.monotonic()

    def show(p: LoadProgress) -> None:
        print(
            f"{time.monotonic() - started:6.1f} s  {p.completed} handshakes, "
            f"{p.failed} failed, {p.in_flight} in flight",
            file=sys.stderr, flush=True,
        )

    error = None
    try:
        result = run_load(
            spec, processes=args.processes, progress=None if args.quiet else show,
            loop_choice=args.loop,
            initializer=functools.partial(setup_logging, args.verbose, server=False),
        )
    except GeneratorProcessFailed as exc:  # the others' figures, then the one line, status 1
        result, error = exc.result, str(exc)
    if args.json:
        summary = _json_report(result, spec, args, in_flight)
        if error is not None:
            summary["error"] = error
        print(json.dumps(summary, indent=2), flush=True)
    else:
        # The associations actually in flight at most: fewer than -c with fewer -n.
        print(result.report(format_hostport(host, port), in_flight), flush=True)
    if error is not None:
        print(f"iotdtls: {error}", file=sys.stderr)
        return 1
    failed = (
        result.failed or result.association_failures or result.messages_lost
        or result.messages_mismatched
    )
    # A stop (Ctrl-C, SIGTERM) that cut handshakes or echoes short: not everything completed.
    cut_short = result.unfinished or result.messages_unanswered
    return 0 if result.completed and not failed and not cut_short else 1
