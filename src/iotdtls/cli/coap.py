"""`iotdtls coap get|post|put|delete URI` (a client in the manner of libcoap's coap-client) and
`iotdtls coap serve` (the demo site over coaps): argument wiring only; the CoAP is aiocoap's,
the DTLS is `iotdtls.coap`'s. Needs the `coap` extra (aiocoap); imported only when run.

A request prints the response code on stderr and the payload on stdout, and exits 0 for a
success (2.xx) response, 1 for an error response, a failed association, a response aiocoap
could not handle or no response in time; Ctrl-C (130), SIGTERM (143) and SIGHUP (129) end it
with close_notify.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from iotdtls._addresses import (
    check_usable,
    host_from_uri,
    interface_name,
    misplaced_zone,
    socket_error,
    uri_host,
)
from iotdtls._extras import AIOCOAP_HINT
from iotdtls.chaincache import ChainCache
from iotdtls.cli.aiocoap_failures import (
    OneLineTracebacks,
    raised_in_aiocoap,
    reported_lines_held_back,
    run_routing_aiocoap_failures,
    send_failure,
)
from iotdtls.cli.common import (
    DEFAULT_PORT,
    Parser,
    UsageError,
    add_common_flags,
    add_quiet_flag,
    add_server_limits,
    add_server_timeouts,
    common_settings,
    counters_signal_ignored,
    ended_by_signals,
    format_hostport,
    log_counters_on_signal,
    log_stopped,
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
from iotdtls.config import ClientConfig, ServerConfig

if TYPE_CHECKING:
    from aiocoap import Message
    from aiocoap.protocol import ClientObservation

__all__ = ["register"]

logger = logging.getLogger("iotdtls.cli")

#: `iotdtls.coap.uploads.DEFAULT_MAX_BODY_SIZE`, written again here: that module needs aiocoap,
#: which this one imports only when run (tests/test_cli_coap.py keeps the two equal).
DEFAULT_MAX_BODY_SIZE = 64 * 1024

#: `iotdtls.coap.observations.DEFAULT_MAX_OBSERVATIONS`, written again here for the same reason
#: (tests/test_cli_coap.py keeps the two equal).
DEFAULT_MAX_OBSERVATIONS = 16

METHODS = {
    "get": "GET a resource",
    "post": "POST a payload (argument, or stdin)",
    "put": "PUT a payload (argument, or stdin)",
    "delete": "DELETE a resource",
}


def register(sub: Any) -> None:
    """Add `coap` and its subcommands (`get`, `post`, `put`, `delete`, `serve`)."""
    coap = sub.add_parser("coap", help="CoAP over DTLS (coaps://) with aiocoap: client, server")
    commands = coap.add_subparsers(
        dest="coap_command",
        metavar="{" + ",".join([*METHODS, "serve"]) + "}",  # named so when it is missing
        required=True,
        parser_class=_IntermixedParser,
    )
    for method, text in METHODS.items():
        p = commands.add_parser(method, help=text)
        p.add_argument("uri", metavar="URI", help="coaps://HOST[:PORT]/PATH (or coap://)")
        if method in ("post", "put"):
            p.add_argument(
                "payload",
                nargs="?",
                metavar="PAYLOAD",
                help="the payload; '-': read stdin; none: read stdin, unless it is a "
                "terminal (then send an empty payload)",
            )
            p.add_argument(
                "--content-format", metavar="CF", help="number or media type, e.g. text/plain"
            )
        if method == "get":
            p.add_argument(
                "--observe",
                action="store_true",
                help="print every notification until the observation ends or --duration "
                "passes (a server gone without close_notify just falls silent: without "
                "--duration this then waits for ever)",
            )
            p.add_argument(
                "--duration", type=seconds(), metavar="S", help="with --observe: stop after S s"
            )
        add_client_credentials(p)
        p.add_argument(
            "--timeout",
            type=seconds(),
            default=30.0,
            metavar="S",
            help="deadline of the handshake, then as long for the response (for all the "
            "blocks of a block-wise transfer; default 30)",
        )
        add_common_flags(p)
        p.set_defaults(run=run_request, server_logging=False, method=method)

    srv = commands.add_parser(
        "serve",
        help="serve /.well-known/core, /hello, /counter, /temp",
        description="Serve /.well-known/core, /hello, /counter and /temp over coaps. SIGINT, "
        "SIGTERM or SIGHUP stop it cleanly (close_notify to every client) and it logs its DTLS "
        "counters; SIGUSR1 logs them and it goes on serving.",
    )
    srv.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
        help=f"address to serve on, [V6]:PORT for IPv6 (default 127.0.0.1:{DEFAULT_PORT}); "
        "[::] and 0.0.0.0 answer from the address the kernel picks: on a host with several, "
        "name one",
    )
    srv.add_argument(
        "--max-body-size", type=whole_number(1), default=DEFAULT_MAX_BODY_SIZE, metavar="BYTES",
        help="the largest request body taken, in one message or assembled from Block1 blocks "
        "(RFC 7959): past it the server answers 4.13 Request Entity Too Large itself, with "
        f"Size1 = BYTES (default {DEFAULT_MAX_BODY_SIZE})",
    )
    srv.add_argument(
        "--max-observations", type=whole_number(0), default=DEFAULT_MAX_OBSERVATIONS,
        metavar="N",
        help="the live Observe registrations (RFC 7641) kept per association: one past them "
        "is served as a plain GET, its response without Observe (0: none kept, every one so; "
        f"default {DEFAULT_MAX_OBSERVATIONS})",
    )
    add_server_limits(srv)
    add_quiet_flag(srv)
    add_server_timeouts(srv)
    add_server_credentials(srv)
    add_common_flags(srv)
    srv.set_defaults(run=run_serve, server_logging=True)


class _IntermixedParser(Parser):
    """The requests' parser: flags may come between the positionals (`coap post URI
    --content-format CF PAYLOAD`), where plain argparse binds the optional PAYLOAD, empty,
    with URI and refuses the payload as an unrecognized argument."""

    _intermixing = False

    def parse_known_args(self, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back (Python < 3.13)
            return super().parse_known_args(*args, **kwargs)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(*args, **kwargs)
        finally:
            self._intermixing = False


def _require_aiocoap() -> None:
    if importlib.util.find_spec("aiocoap") is None:
        raise UsageError(f"iotdtls coap needs aiocoap: {AIOCOAP_HINT}")


def run_request(args: argparse.Namespace) -> int:
    _require_aiocoap()
    scheme, host = _target(args.uri)
    if getattr(args, "duration", None) is not None and not args.observe:
        raise UsageError("--duration needs --observe")
    config = None
    observe = args.method == "get" and args.observe
    if scheme == "coap":
        _refuse_dtls_flags(args)
    else:
        # An observer sends nothing while notifications come: it offers heartbeats (RFC 6520)
        # and answers them, so that a server's keep-alive (coap serve --heartbeat) can tell
        # it is there before the server's idle timeout, which only a peer's records reset.
        config = client_config(
            args, host, handshake_timeout=args.timeout, heartbeat=observe,
            **common_settings(args),
        )
    options: dict[str, Any] = {}
    if args.method in ("post", "put"):
        options["payload"] = _payload(args.payload)
        if args.content_format is not None:
            options["content_format"] = _content_format(args.content_format)
    if observe:
        options["observe"] = 0
    message = _message(args.method, _uri_for_aiocoap(args.uri, scheme), options)
    request = _request(args, message, config, chain_cache(args), observe)
    # What aiocoap raises where we cannot catch it (callbacks, tasks, finalizers) is a debug
    # line, not a traceback after the command's line; its own lines announcing what that line
    # reports are held back without -v.
    with reported_lines_held_back(args.verbose):
        return run_routing_aiocoap_failures(ended_by_signals(request))


def _expected_uri(uri: str, reason: str = "") -> UsageError:
    """A request URI that cannot be used, and why (`reason`, ": ..."), naming the scheme the
    user wrote, coap:// or (for any other) coaps://."""
    scheme = "coap" if uri[:7].lower() == "coap://" else "coaps"
    return UsageError(f"expected a {scheme}://HOST[:PORT]/PATH URI, got {uri!r}{reason}")


def _target(uri: str) -> tuple[str, str]:
    """The scheme and host of a request URI, or a one-line `UsageError` saying what is wrong
    with it (a port is 1 to 65535: 0 is no port to send to; an IPv6 zone, RFC 6874 §2, has at
    least one character, `%25` or `%` alone naming no interface, and follows an IPv6 address
    only, `misplaced_zone`: the URI without it is what to write); an `UnusableAddress`, status
    2 as for `iotdtls client`, for an IPv6 address naming no usable interface (`check_usable`:
    link-local without its zone, or an unknown interface), which aiocoap's coap:// transport
    only met sending ("No route to host", "Invalid zone identifier 25nosuch")."""
    if zone_problem := _empty_zone(uri):
        raise _expected_uri(uri, f": {zone_problem}")
    written = _written_host(uri)
    if misplaced := misplaced_zone(written.removeprefix("[").removesuffix("]")):
        why, bare = misplaced
        hint = f"write {uri.replace(written, bare, 1)}" if bare else "as in [fe80::1%25eth0]"
        reason = f": {why}, {hint}"
        raise _expected_uri(uri, reason)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # an unclosed [IPv6 address
        raise _expected_uri(uri, f": {exc}") from None
    if parts.scheme not in ("coap", "coaps") or not parts.hostname:
        raise _expected_uri(uri)
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        reason = ": the port must be a number from 1 to 65535"
        raise _expected_uri(uri, reason)
    # RFC 7252 §6.1, §6.2: a URI without a port names the scheme's default.
    check_usable(host_from_uri(_bracketed_host(uri)), port or _DEFAULT_PORTS[parts.scheme])
    return parts.scheme, parts.hostname


#: The port of a URI that names none (RFC 7252 §6.1, §6.2).
_DEFAULT_PORTS = {"coap": 5683, "coaps": DEFAULT_PORT}


def _empty_zone(uri: str) -> str | None:
    """What `host_from_uri` objects to in the bracketed host of `uri`'s authority (an empty
    IPv6 zone, `[fe80::1%25]` or `[fe80::1%]`), or None: urlsplit refuses the second with a
    reason that says nothing of the zone, and takes the first as zone "25"."""
    try:
        host_from_uri(_bracketed_host(uri))
    except ValueError as exc:
        return str(exc)
    return None


def _uri_for_aiocoap(uri: str, scheme: str) -> str:
    """`uri` as aiocoap takes it: a coap:// URI's IPv6 zone written as RFC 6874 §2 writes it,
    `[fe80::1%25eth0]`, with the zone decoded, `[fe80::1%eth0]` (aiocoap does not decode it
    there and said "Invalid zone identifier 25eth0", while coaps:// URIs are ours to read);
    and an interface's index by its name, `%4` as `%eth0` (aiocoap takes only names: "Invalid
    zone identifier 4"); any other URI as it is. The zone names an interface of this host
    (`check_usable`)."""
    bracketed = _bracketed_host(uri)
    if scheme != "coap" or "%" not in bracketed:
        return uri
    return uri.replace(f"[{bracketed}]", f"[{_zoned_host(bracketed)}]", 1)


def _zoned_host(bracketed: str) -> str:
    """A URI's bracketed host (`_bracketed_host`) as aiocoap takes it and our messages write
    it: its IPv6 zone percent-decoded (RFC 6874 §2: `fe80::1%25eth0` is `fe80::1%eth0`) and
    an interface's index by its name (`%254` is `%eth0`: its index 4); "" stays ""."""
    if "%" not in bracketed:
        return bracketed
    address, _, zone = host_from_uri(bracketed).partition("%")
    if zone.isdecimal():
        zone = interface_name(int(zone))
    return f"{address}%{zone}"


def _written_host(uri: str) -> str:
    """The host of `uri`'s authority as written, with its brackets if it has them (after any
    user name; an unbracketed host ends at the port's ":")."""
    authority = uri.partition("//")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.partition(":")[0]


def _bracketed_host(uri: str) -> str:
    """The bracketed host of `uri`'s authority as written (an IPv6 address, its zone's case
    kept, which urlsplit's `hostname` lowers), without its brackets; "" when there is none."""
    authority = uri.partition("//")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    return authority.partition("[")[2].partition("]")[0]


def _refuse_dtls_flags(args: argparse.Namespace) -> None:
    """A coap:// request has no DTLS: a DTLS flag given with one is a mistake (a coaps URI
    meant, or a flag left over) rather than something to ignore."""
    for dest, unset in _dtls_defaults().items():
        if getattr(args, dest) != unset:
            flag = "--" + dest.replace("_", "-")
            raise UsageError(f"{flag} is for coaps:// URIs (coap:// has no DTLS)")


def _dtls_defaults() -> dict[str, object]:
    """The DTLS flags of a request, each (as its argparse dest) with its value when not
    given: what the shared builders add (the credentials, --allow-no-ems, --mtu, --keylog),
    read from a parser that has only them, so that a flag added there is refused too."""
    p = argparse.ArgumentParser(add_help=False)
    add_client_credentials(p)
    add_common_flags(p)
    defaults = vars(p.parse_args([]))
    del defaults["verbose"]  # logging, for coap:// as well
    return defaults


def _message(method: str, uri: str, options: dict[str, Any]) -> Message:
    """The request; aiocoap's objections to its URI as one line (a fragment, which RFC 7252
    §6.4 refuses, or a user name)."""
    from aiocoap import Code, Message

    try:
        return Message(code=Code[method.upper()], uri=uri, **options)
    except ValueError as exc:  # aiocoap's MalformedUrlError
        reason = str(exc).removeprefix("Malformed URL: ").rstrip(".")
        raise _expected_uri(uri, f": {reason}") from None


def _payload(argument: str | None) -> bytes:
    """The argument; or stdin to its end for '-', and for no argument unless stdin is a
    terminal (then the payload is empty, as libcoap's coap-client sends none without -f/-e).
    An `OSError` (the command's one line, status 1, as `stdout_buffer`'s) when the command
    was started with stdin closed."""
    if argument is not None and argument != "-":
        return argument.encode()
    if sys.stdin is None:
        raise OSError("cannot read the payload: stdin is closed")
    if argument is None and sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def _content_format(text: str) -> int:
    from aiocoap.numbers.contentformat import ContentFormat

    if text.isdigit() and int(text) <= 0xFFFF:
        return int(text)
    # RFC 7252 §12.3 registers text as "text/plain; charset=utf-8": accept the short form too.
    for media_type in (text, f"{text}; charset=utf-8"):
        try:
            return int(ContentFormat.by_media_type(media_type))
        except KeyError:
            continue
    raise UsageError(
        f"--content-format: unknown media type {text!r} (give a number, or e.g. text/plain)"
    )


async def _request(
    args: argparse.Namespace,
    message: Message,
    config: ClientConfig | None,
    cache: ChainCache | None,
    observe: bool,
) -> int:
    from aiocoap import error

    from iotdtls.coap import ClientRemote, client_context

    context = await client_context(config=config, plain_coap=config is None, chain_cache=cache)
    remote: ClientRemote | None = None  # its association, for what came over it
    try:
        if config is not None:
            # The handshake first, within its own deadline (handshake_timeout, --timeout):
            # the association is kept for the request, whose response then has --timeout.
            first = message.copy()
            await context.find_remote_and_interface(first)
            remote = first.remote if isinstance(first.remote, ClientRemote) else None
        request = context.request(message)
        # Kept from the start: notifications that come with the response are not lost.
        observation = request.observation
        notifications = None if observation is None else _Notifications(observation)
        response = await asyncio.wait_for(request.response, args.timeout)
        _print(response, code=True, lines=observe)
        if not response.code.is_successful():
            return 1
        if notifications is not None:
            return await _follow(notifications, args.duration)
        return 0
    except error.Error as exc:
        return _failed(_unreachable(exc, args.uri) or _problem(exc))
    except TimeoutError:
        if remote is None:
            return _failed(f"no response within {args.timeout:g} s")
        if received := remote.responses_received:  # a block-wise transfer cut short
            return _failed(
                f"response not complete within {args.timeout:g} s after the handshake "
                f"({received} CoAP response{'s' if received > 1 else ''} received)"
            )
        return _failed(f"no response within {args.timeout:g} s after the handshake")
    except Exception as exc:
        if (unsent := send_failure(exc)) is not None:  # aiocoap's bug in its error path
            logger.debug("aiocoap failed sending the request", exc_info=exc)
            return _failed(_socket_failure(unsent, args.uri))
        return _aiocoap_failed(exc)
    finally:
        await context.shutdown()


class _Notifications:
    """Every notification of an observation, in order, then how the observation ended. aiocoap's
    `async for` over it keeps one at a time: what came before the loop began is gone, and a
    last notification (not 2.xx, or without Observe, RFC 7641 §3.2), followed at once by the
    observation's end, is replaced by it unless the loop was already waiting (probe CH). Its
    callbacks, registered as the request is made, keep them all."""

    def __init__(self, observation: ClientObservation) -> None:
        self.observation = observation
        self._queue: asyncio.Queue[Message | Exception] = asyncio.Queue()
        with warnings.catch_warnings():  # deprecated in aiocoap 0.4.17 for the iterator
            warnings.simplefilter("ignore", DeprecationWarning)
            observation.register_callback(self._queue.put_nowait)
            observation.register_errback(self._queue.put_nowait)

    async def next(self) -> Message | None:
        """The next notification, or None when the observation ended as it may: the resource
        is not observable (a response without Observe, RFC 7641 §3.1) or the server ended it
        (a notification without Observe, §3.2); anything else it ended with is raised (the
        association ended, RFC 7252 §9.1, or a notification aiocoap could not handle)."""
        from aiocoap import error

        item = await self._queue.get()
        if isinstance(item, error.NotObservable | error.ObservationCancelled):
            return None
        if isinstance(item, Exception):
            raise item
        return item


async def _follow(notifications: _Notifications, duration: float | None) -> int:
    """Print notifications until `duration` passes (or forever), or the observation ends: 1
    when it ends with a notification that is not 2.xx (RFC 7641 §3.2: 4.04 when the resource
    went away), or failed; else 0. aiocoap cancels an observation that ended itself. A server
    that vanished without close_notify (killed, say) only stops notifying: no error comes (the
    observation is not re-registered after Max-Age, RFC 7641 §3.3.1), so without `duration`
    this waits for ever; the help says so."""

    async def until_the_end() -> int:
        while (notification := await notifications.next()) is not None:
            _print(notification, code=True, lines=True)
            if not notification.code.is_successful():
                return 1  # the last (§3.2), even if a server gave it an Observe option
        return 0

    try:
        return await asyncio.wait_for(until_the_end(), duration)
    except TimeoutError:
        return 0
    except Exception as exc:
        return _aiocoap_failed(exc)
    finally:
        if not notifications.observation.cancelled:
            notifications.observation.cancel()


def _print(message: Message, code: bool, lines: bool) -> None:
    """The code (when `code`) on stderr, then the payload on stdout: its bytes exactly, so
    that `> file` or a pipe gets the resource as it is, unless stdout is a terminal or
    `lines` (observe: one notification a line), where a missing final newline is added."""
    if code:
        print(message.code, file=sys.stderr, flush=True)
    if message.payload:
        out = stdout_buffer()
        out.write(message.payload)
        if not message.payload.endswith(b"\n") and (lines or sys.stdout.isatty()):
            out.write(b"\n")
        out.flush()


def _unreachable(exc: Exception, uri: str) -> str | None:
    """What the socket error under aiocoap's bare `NetworkError` of a coap:// request was: the
    error itself reads only "Network error: NetworkError". Worded as a DTLS client's socket
    errors are (`socket_error`: a link-local address without its interface says to add it),
    the address written as other messages write it (`_zoned_host`: `[fe80::1%eth0]:5683`);
    a URI without a port goes to 5683 (RFC 7252 §6.1). A coaps:// association that failed on
    a socket error (the server's address cannot be resolved or reached: no handshake began)
    says so as `iotdtls client` does, its text without "[Errno 22]"."""
    from aiocoap import error

    from iotdtls.coap.errors import AssociationFailed

    cause = exc.__cause__
    if type(exc) is AssociationFailed and isinstance(cause, OSError):
        return f"coaps: {cause.strerror or cause}"
    if type(exc) is not error.NetworkError or not isinstance(cause, OSError):
        return None
    return _socket_failure(cause, uri)


def _socket_failure(cause: OSError, uri: str) -> str:
    """The line for the socket error `cause` of a coap:// request to `uri` (`_unreachable`)."""
    from aiocoap.numbers.constants import COAP_PORT

    parts = urlsplit(uri)
    # The host as aiocoap was given it: urlsplit's keeps the zone encoded, `%25eth0` (then
    # read as the unknown interface "25eth0"), and lower-cased.
    host = _zoned_host(_bracketed_host(uri)) or parts.hostname or ""
    port = parts.port or COAP_PORT
    where = format_hostport(host, port)
    if cause.errno == errno.ECONNREFUSED:
        return f"coap: nothing listens on {where} (ICMP port unreachable)"
    return f"coap: cannot reach {where}: {socket_error(cause, host, port)}"


def _aiocoap_failed(exc: Exception) -> int:
    """The command's one line (`_problem`) for what aiocoap's request machinery raised: one of
    its errors, or any exception raised in its code (`raised_in_aiocoap`); any other is a bug
    of ours, raised again with its traceback."""
    from aiocoap import error

    if not isinstance(exc, error.Error) and not raised_in_aiocoap(exc):
        raise exc
    return _failed(_problem(exc))


def _problem(exc: Exception) -> object:
    """What to print for an exception of aiocoap's request machinery: an error made to be
    shown (`HelpfulError`: ours for the association, aiocoap's network errors) as it is; any
    other was raised for a response aiocoap could not handle (RFC 7959: a block out of order,
    `UnexpectedBlock2`, `NotImplemented`; or a bug of its block-wise code on a response it
    did not expect, an AttributeError or AssertionError), named by its type, as some have no
    text. Its traceback is logged at debug level (`-v`). A Reset answering the request (RFC
    7252 §4.2; aiocoap's `MessageError`, "Network error: MessageError") is said as such."""
    from aiocoap import error

    if isinstance(exc, error.MessageError):
        return "the server rejected the request with a Reset (RST)"
    if isinstance(exc, error.HelpfulError):
        return exc
    logger.debug("aiocoap failed on the server's response", exc_info=exc)
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"the server's response could not be handled (aiocoap: {what})"


def _failed(problem: object) -> int:
    """One line on stderr, as every subcommand prints: the problem, then what to check
    (`extra_help`), if anything, as its own sentence."""
    extra_help = getattr(problem, "extra_help", None)
    advice = extra_help() if extra_help is not None else None
    line = f"{problem}. {advice}" if advice else f"{problem}"
    print(f"iotdtls: {line}", file=sys.stderr)
    return 1


def run_serve(args: argparse.Namespace) -> int:
    """Serve until a stop signal; SIGUSR1 is ignored until the loop handles it
    (`counters_signal_ignored`), as `iotdtls server` does."""
    _require_aiocoap()
    host, port = parse_listen(args.listen)
    config = server_config(
        args, **common_settings(args), **server_limits(args), **server_timeouts(args)
    )
    server_logging(args.verbose, args.quiet)
    with counters_signal_ignored():
        asyncio.run(_serve(config, host, port, args.max_body_size, args.max_observations))
    return 0


async def _serve(
    config: ServerConfig, host: str, port: int, max_body_size: int, max_observations: int
) -> None:
    """Serve the demo site until SIGINT, SIGTERM or SIGHUP, then shut down (close_notify to
    every client) and log the DTLS server's counters, as `iotdtls server` does; SIGUSR1 logs
    them without stopping. aiocoap's repeated lines are bounded (`add_server_transport`), and
    what was raised in its code is one line, its traceback a debug line (-v)."""
    from aiocoap import Context

    from iotdtls.coap import add_server_transport, demo_site

    stop = stop_on_signals()
    context = Context(serversite=demo_site(), loggername="coap-server")
    # Its errors name the address (`aio.serve` underneath).
    transport = await add_server_transport(
        context, (host, port), config=config, max_body_size=max_body_size,
        max_observations=max_observations,
    )
    one_line = OneLineTracebacks()
    context.log.addFilter(one_line)
    try:
        server = transport.endpoint_server
        log = logging.getLogger("iotdtls.cli")
        log_counters_on_signal(server, log)
        bound = transport.address  # with its scope id: a link-local address needs its zone
        log.info("listening on coaps://%s:%d", uri_host(bound), bound[1])
        await stop.wait()
        await context.shutdown()
        log_stopped(server, log)
    finally:
        context.log.removeFilter(one_line)
