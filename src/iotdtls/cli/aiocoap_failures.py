"""What aiocoap (0.4.17) raises where nothing of ours can catch it while an `iotdtls coap`
request runs, so that its one line is not followed by Python's tracebacks:

- in a callback of the event loop: its UDP transport (coap://) decodes each datagram in one,
  and catches only `UnparsableMessage`; a text option that is not UTF-8 (RFC 7252 §3.2)
  raises UnicodeDecodeError, which asyncio prints ("Exception in callback ...");
- in a task nothing awaits: its block-wise runner reports a failure to an observation it
  had already ended, and fails with RuntimeError ("Task exception was never retrieved");
- in a finalizer: an observation's iterator raises again, when collected, the error it
  already gave the command ("Exception ignored in: ClientObservation._Iterator.__del__").

`coap serve` has aiocoap's own log lines too: one that carries an exception raised in aiocoap's
code ("An exception occurred while rendering a resource: ValueError()", with 20 lines of
traceback) is a line without it, the traceback a debug line (`OneLineTracebacks`).

aiocoap also logs an error line of its own before raising some errors to the request
("coap.blockwise-requester: Error assembling blockwise response, passing on error
NotImplemented()"), which the command's line then reports: without -v that line is held back
(`ReportedByTheCommand`), so the command's line comes alone; -v shows it.

A Reset answering a request (RFC 7252 §4.2) fails it with aiocoap's `MessageError`: aiocoap
hands its request the class, not an instance, and then warns that "An exception that is not
an aiocoap Error was raised from a transport; please report this as a bug in aiocoap". The
command's line says what happened ("the server rejected the request with a Reset (RST)"), and
that warning is a debug line of `iotdtls.cli` (`SendFailureLines`, `RESET_WARNING`).

A coap:// request to a multicast address that cannot be sent (no route: `ff02::1%lo`, an
interface without multicast) fails in aiocoap's own error path: it compares the unicast
remotes of its requests with the multicast request's None, and raises an AttributeError in
its UDP transport's `__eq__`, the socket error as its context. It logs that with its
traceback ("Exception raised through dispatch_error"), then asks for a bug report, and the
request fails with the AttributeError. `send_failure` finds the socket error in it, for the
command's one line ("coap: cannot reach [ff02::1%lo]:5683: Network is unreachable"); aiocoap's
lines about it are debug lines of `iotdtls.cli` (`SendFailureLines`), and its warning that a
multicast request goes as a unicast one is held back without -v (`MULTICAST_REMARK`).

`run_routing_aiocoap_failures` runs the command's coroutine with an exception handler on its
event loop and a `sys.unraisablehook` that take only what was raised in aiocoap's code (the
innermost frame of the traceback: `raised_in_aiocoap`) to a debug line of `iotdtls.cli`
(`-v` shows it); a datagram that is not CoAP is ignored with one warning, as over coaps
(`iotdtls.coap.addresses`). Anything raised in our code keeps its traceback. The
unraisable hook lasts for the command's run only (until what it left is collected) and is
then restored; the loop's handler goes with the run's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = [
    "BLOCK1_IGNORED_REMARK",
    "BLOCKWISE_LOGGER",
    "CLIENT_LOGGER",
    "MULTICAST_REMARK",
    "REPORTED_BY_THE_COMMAND",
    "RESET_WARNING",
    "OneLineTracebacks",
    "ReportedByTheCommand",
    "SendFailureLines",
    "raised_in_aiocoap",
    "reported_lines_held_back",
    "reset_warning",
    "run_routing_aiocoap_failures",
    "send_failure",
]

logger = logging.getLogger("iotdtls.cli")
coap_logger = logging.getLogger("iotdtls.coap")

T = TypeVar("T")

#: The logger of aiocoap's block-wise requests, in a client context (aiocoap's "coap").
BLOCKWISE_LOGGER = "coap.blockwise-requester"
#: How the lines of aiocoap's (0.4.17) start that announce an error it then raises to the
#: request (UnexpectedBlock2 for a first block that is not block 0, NotImplemented or another
#: of its errors for a block it cannot append), which the command's own line reports.
REPORTED_BY_THE_COMMAND = ("Error assembling blockwise response",)
#: How aiocoap's (0.4.17) warning starts when the final response to a block-wise upload
#: carries no Block1 option (libcoap's 2.01 does so; RFC 7959 §2.3 does not require one): the
#: upload succeeded, which the command's line reports (probe CC).
BLOCK1_IGNORED_REMARK = "Block1 option completely ignored by server"
#: The logger of a client context of aiocoap's (its token manager, its UDP transport).
CLIENT_LOGGER = "coap"
#: aiocoap's (0.4.17) warning for every request to a multicast address, sent as a unicast one
#: (the first response is the request's): the user asked for that address.
MULTICAST_REMARK = "Sending request to multicast via unicast request method"
#: How aiocoap's (0.4.17) warning starts when what failed a request is no instance of its
#: errors: a Reset gives the class `MessageError` itself (`reset_warning`).
RESET_WARNING = "An exception that is not an aiocoap Error was raised from a transport"


def raised_in_aiocoap(exc: BaseException) -> bool:
    """True when `exc` was raised in aiocoap's code (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _module(tb.tb_frame.f_globals).partition(".")[0] == "aiocoap"


def send_failure(exc: BaseException) -> OSError | None:
    """The socket error that failed sending a coap:// request to a multicast address, when
    `exc` is what aiocoap (0.4.17) raised for it: an AttributeError in its UDP transport's
    `__eq__` (a unicast remote compared with the multicast request's None, in its error
    path), the socket error as its context; None for any other exception."""
    if not isinstance(exc, AttributeError) or not isinstance(exc.__context__, OSError):
        return None
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_code.co_name != "__eq__" or _module(frame.f_globals) != UDP6_MODULE:
        return None
    return exc.__context__


#: The module of aiocoap's UDP transport (coap://).
UDP6_MODULE = "aiocoap.transports.udp6"


def reset_warning(record: logging.LogRecord) -> bool:
    """True for aiocoap's warning (`RESET_WARNING`) about the `MessageError` of a Reset that
    answered a request, which the command's line reports."""
    from aiocoap import error

    if not str(record.msg).startswith(RESET_WARNING):
        return False
    args = record.args if isinstance(record.args, tuple) else ()
    return any(arg is error.MessageError or isinstance(arg, error.MessageError) for arg in args)


def _module(namespace: dict[str, Any]) -> str:
    name = namespace.get("__name__", "")
    return name if isinstance(name, str) else ""


def _not_coap(exc: BaseException) -> bool:
    """True for what aiocoap's `Message.decode` raised for a datagram that is not CoAP and
    its UDP transport did not catch: a ValueError (UnicodeDecodeError of a text option)."""
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "decode" and _module(tb.tb_frame.f_globals) == "aiocoap.message":
            return True
        tb = tb.tb_next
    return False


class OneLineTracebacks(logging.Filter):
    """A filter for aiocoap's logger: a record whose exception was raised in aiocoap's code
    (`raised_in_aiocoap`) is logged without its traceback, which goes to a debug line of
    `iotdtls.cli` (`-v`); any other record is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and raised_in_aiocoap(exc):
            logger.debug("aiocoap raised: %s", record.getMessage(), exc_info=exc)
            record.exc_info = None
            record.exc_text = None
        return True


class ReportedByTheCommand(logging.Filter):
    """A filter for aiocoap's block-wise logger (`BLOCKWISE_LOGGER`): holds back its lines
    that announce an error the command's line reports (`REPORTED_BY_THE_COMMAND`), and its
    remark on an upload whose last response had no Block1 (`BLOCK1_IGNORED_REMARK`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith((*REPORTED_BY_THE_COMMAND, BLOCK1_IGNORED_REMARK))


class SendFailureLines(logging.Filter):
    """A filter for aiocoap's client logger (`CLIENT_LOGGER`): its lines about a request that
    could not be sent (`send_failure`: the traceback of "Exception raised through
    dispatch_error", "please report this as a bug in aiocoap"), which the command's line
    reports, are debug lines of `iotdtls.cli` (-v), without the traceback (the command logs
    it once), and so is its warning about the Reset that failed a request (`reset_warning`);
    without `verbose`, its warning that a multicast request goes as a unicast one
    (`MULTICAST_REMARK`) is held back."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.verbose and record.msg == MULTICAST_REMARK:
            return False
        if reset_warning(record):
            logger.debug("aiocoap logged: %s", record.getMessage())
            return False
        exc = record.exc_info[1] if record.exc_info else None
        carried = [exc, *(record.args if isinstance(record.args, tuple) else ())]
        if not any(isinstance(e, BaseException) and send_failure(e) for e in carried):
            return True
        logger.debug("aiocoap logged: %s", record.getMessage())
        return False


@contextlib.contextmanager
def reported_lines_held_back(verbose: bool) -> Iterator[None]:
    """While a request command runs, aiocoap's lines about a request it could not send are
    debug lines (`SendFailureLines`); without `verbose` (-v), its lines that the command's
    own line reports are held back (`ReportedByTheCommand`), and so is its remark on a
    multicast request; with -v those are shown."""
    filters: list[tuple[logging.Logger, logging.Filter]] = [
        (logging.getLogger(CLIENT_LOGGER), SendFailureLines(verbose))]
    if not verbose:
        filters.append((logging.getLogger(BLOCKWISE_LOGGER), ReportedByTheCommand()))
    for log, held_back in filters:
        log.addFilter(held_back)
    try:
        yield
    finally:
        for log, held_back in filters:
            log.removeFilter(held_back)


class _Router:
    """The hooks of one run, and what they counted."""

    def __init__(self, unraisable: Callable[[Any], object]) -> None:
        self.previous_unraisable = unraisable
        #: Datagrams ignored as not CoAP (the first is a warning, the others debug lines).
        self.not_coap = 0

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not isinstance(exc, BaseException) or not raised_in_aiocoap(exc):
            loop.default_exception_handler(context)
            return
        if _not_coap(exc):
            self.not_coap += 1
            if self.not_coap == 1:
                coap_logger.warning("coap: ignoring a datagram that is not a CoAP message (any "
                                    "more are logged at debug level)")
            else:
                coap_logger.debug("coap: ignoring a datagram that is not a CoAP message (%d so "
                                  "far)", self.not_coap)
        logger.debug("aiocoap raised: %s", context.get("message"), exc_info=exc)

    def unraisable(self, what: Any) -> None:
        exc = what.exc_value
        if isinstance(exc, BaseException) and raised_in_aiocoap(exc):
            logger.debug("aiocoap raised: %s: %r", what.err_msg or "Exception ignored in",
                         what.object, exc_info=exc)
        else:
            self.previous_unraisable(what)


def run_routing_aiocoap_failures(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, with what aiocoap raises in callbacks, unawaited tasks and
    finalizers routed as the module docstring says, until the run's leftovers are
    collected; the previous `sys.unraisablehook` is then restored."""
    router = _Router(sys.unraisablehook)
    sys.unraisablehook = router.unraisable
    try:
        with asyncio.Runner() as runner:
            # The run's own loop: its handler goes with it (a task of aiocoap's collected
            # later, once the loop is closed, is still routed).
            runner.get_loop().set_exception_handler(router.loop_exception)
            return runner.run(work)
    finally:
        gc.collect()  # aiocoap's tasks and iterators left in cycles, while routed
        sys.unraisablehook = router.previous_unraisable
