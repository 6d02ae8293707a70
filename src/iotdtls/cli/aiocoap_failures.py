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
    "BLOCKWISE_LOGGER",
    "REPORTED_BY_THE_COMMAND",
    "OneLineTracebacks",
    "ReportedByTheCommand",
    "raised_in_aiocoap",
    "reported_lines_held_back",
    "run_routing_aiocoap_failures",
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


def raised_in_aiocoap(exc: BaseException) -> bool:
    """True when `exc` was raised in aiocoap's code (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _module(tb.tb_frame.f_globals).partition(".")[0] == "aiocoap"


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
    that announce an error the command's line reports (`REPORTED_BY_THE_COMMAND`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(REPORTED_BY_THE_COMMAND)


@contextlib.contextmanager
def reported_lines_held_back(verbose: bool) -> Iterator[None]:
    """While a request command runs without `verbose` (-v), aiocoap's lines that its own
    line reports are held back (`ReportedByTheCommand`); with -v they are all shown."""
    if verbose:
        yield
        return
    log, held_back = logging.getLogger(BLOCKWISE_LOGGER), ReportedByTheCommand()
    log.addFilter(held_back)
    try:
        yield
    finally:
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
