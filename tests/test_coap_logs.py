"""aiocoap's log lines at a coaps server, bounded (`iotdtls.coap.logs`; probe AX: 2,000
confirmable GETs with one token over one association made aiocoap log 1,969 warnings, none
naming the peer)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
from typing import Any, cast

import aiocoap
import pytest
from aiocoap import resource

from iotdtls.coap import CoapsServerInterface, logs
from tests.aio_support import server_config
from tests.coap_support import CoapSite, coaps_server, device, raw_request, run
from tests.peers import LOCALHOST

PIGGYBACK = "New request came in while old request not ACKed yet"


def record(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("coap-server", level, __file__, 1, message, args, None)


def test_each_kind_passes_once_an_interval_and_then_says_how_many_were_held_back() -> None:
    now = [0.0]
    lines = logs.RepeatedLines(interval=60.0, clock=lambda: now[0])
    first = record("timed out %s", "a")
    assert lines.filter(first) and first.getMessage() == "timed out a"
    for t in range(1, 60):
        now[0] = float(t)
        assert not lines.filter(record("timed out %s", "b"))
    other = record("another %d", 1)
    assert lines.filter(other)  # another template: its own count
    info = record("timed out %s", "c", level=logging.INFO)
    assert lines.filter(info)  # below the level: never held back
    now[0] = 60.0
    later = record("timed out %s", "d")
    assert lines.filter(later)
    assert later.getMessage() == "timed out d (59 more like it held back)"
    assert not lines.filter(record("timed out %s", "e"))
    assert lines.held_back() == ["1 more like 'timed out %s' held back"]
    assert lines.held_back() == []


def test_what_a_server_held_back_is_said_at_its_shutdown_past_another_s_filter() -> None:
    """Two servers' filters on one logger ("coap-server" for every `server_context`): the
    lines the first logs at its shutdown, one per kind held back, all pass the second's
    filter (probe AY: they were one kind, "%s", to it, all but the first held back)."""
    log = logging.getLogger("iotdtls-test-two-servers")
    first, second = logs.RepeatedLines(), logs.RepeatedLines()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    log.addHandler(keep)
    log.addFilter(first)
    try:
        for template in ("one %s", "two %s", "three %s"):
            for n in range(3):
                log.warning(template, n)
        log.removeFilter(first)
        log.addFilter(second)
        first.log_held_back(log)
    finally:
        log.removeFilter(second)
        log.removeHandler(keep)
    assert seen[3:] == [
        "2 more like 'one %s' held back",
        "2 more like 'two %s' held back",
        "2 more like 'three %s' held back",
    ]
    assert second.held_back() == []


def test_the_kinds_counted_are_bounded() -> None:
    lines = logs.RepeatedLines(clock=lambda: 0.0)
    for n in range(logs.KINDS_KEPT + 10):
        assert lines.filter(record(f"line {n}"))
    assert len(lines._kinds) == logs.KINDS_KEPT
    assert lines.filter(record("line 0"))  # forgotten: passes again
    assert not lines.filter(record(f"line {logs.KINDS_KEPT + 9}"))


def test_a_line_logged_while_a_message_is_handled_names_its_remote() -> None:
    lines, other_server = logs.RepeatedLines(), logs.RepeatedLines()
    token = logs.receiving.set("<ServerRemote coaps://192.0.2.1:40000>")
    try:
        named = record("odd %s", "message")
        assert lines.filter(named)
        # A second server's filter on the same logger leaves what the first let through.
        assert other_server.filter(named)
    finally:
        logs.receiving.reset(token)
    assert named.getMessage() == "odd message (from '<ServerRemote coaps://192.0.2.1:40000>')"


@pytest.mark.req("COAP-1")
# aiocoap's own (0.4.17): a request replacing one not yet ACKed leaves a coroutine of its
# rendering never awaited, which Python reports once when collected (README, CoAP section).
@pytest.mark.filterwarnings(
    "ignore:coroutine 'Context._render_to_pipe' was never awaited:RuntimeWarning"
)
def test_a_peer_repeating_a_token_gets_one_warning_and_a_count_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 confirmable GETs with one token, back to back, over one association: aiocoap's
    warning comes once, naming the association, and the shutdown sums up the rest."""
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            for mid in range(200):
                dev.connection.send(raw_request(mid, b"TOKN", "hello"))
            answered = 0
            while await dev.answer(0.5) is not None:
                answered += 1
            assert answered >= 1

    run(main())
    warnings = [r.getMessage() for r in caplog.records if r.name == "coap-server"]
    repeated = [w for w in warnings if w.startswith(PIGGYBACK)]
    assert len(repeated) == 1, warnings[:5]
    assert "(from <ServerRemote coaps://127.0.0.1:" in repeated[0]
    [summary] = [w for w in warnings if "held back" in w]
    held = int(summary.split()[0])
    assert held >= 100 and summary.startswith(f"{held} more like 'New request came in")
    assert not any(PIGGYBACK in w for w in warnings if w not in (repeated[0], summary))


class KeepsContexts(resource.Resource):
    """GET: keeps the context its rendering runs in, as a task or timer started then would
    (aiocoap's own keep one of each request for duplicate detection, 247 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[tuple[Any, contextvars.Context]] = []

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.kept.append((request.remote, contextvars.copy_context()))
        return aiocoap.Message(payload=b"kept")


def mapping_of(context: contextvars.Context) -> object:
    """The immutable mapping a context holds (CPython's HAMT), shared by its copies."""
    [mapping] = [o for o in gc.get_referents(context) if type(o).__name__ == "hamt"]
    return mapping


def reaches(start: object, target: object, depth: int = 4) -> bool:
    """True if `target` can be reached from `start` by strong references within `depth`."""
    level = [start]
    for _ in range(depth):
        if any(o is target for o in level):
            return True
        level = [r for o in level for r in gc.get_referents(o)]
    return any(o is target for o in level)


def test_what_a_request_leaves_in_a_context_is_shared_and_lets_the_remote_go() -> None:
    """Probe BA: `receiving` set around each message made every context aiocoap keeps of a
    request (its duplicate-detection timer, for EXCHANGE_LIFETIME after the association
    ended) hold a mapping of its own, 120 B a request, and with it the remote. Set once for
    the association, the requests' contexts share one mapping, which names the remote
    without keeping it."""
    site = CoapSite()
    keeps = KeepsContexts()
    site.site.add_resource(["keeps"], keeps)

    async def main() -> None:
        async with coaps_server(site) as server:
            async with device(server.address) as dev:
                for mid in range(3):
                    assert await dev.ask(raw_request(mid, b"T%d" % mid, "keeps")) is not None
            for _ in range(200):
                if keeps.kept and keeps.kept[0][0].ended:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert len(keeps.kept) == 3
    remote = keeps.kept[0][0]
    assert remote.ended and all(r is remote for r, _ in keeps.kept)
    contexts = [context for _, context in keeps.kept]
    assert len({id(mapping_of(context)) for context in contexts}) == 1
    for context in contexts:
        assert context.get(logs.receiving) is not None
        assert not reaches(context[logs.receiving], remote)


def test_a_second_shutdown_says_nothing_more(caplog: pytest.LogCaptureFixture) -> None:
    """The transport shut down by hand, then by its context: what it held back is said once,
    and its logger is as it was."""
    caplog.set_level(logging.WARNING)
    log = logging.getLogger("coap-server")

    async def main() -> None:
        async with coaps_server() as server:
            for n in range(3):
                log.warning("odd %s", n)
            await server.shutdown()
            assert not any(isinstance(f, logs.RepeatedLines) for f in log.filters)

    run(main())
    assert [r.getMessage() for r in caplog.records if r.name == "coap-server"] == [
        "odd 0", "2 more like 'odd %s' held back"]


def test_a_transport_whose_log_was_never_bounded_shuts_down() -> None:
    """`CoapsServerInterface.create` alone (as aiocoap's plumbing would use it, without
    `add_server_transport`'s `bound_log`): its shutdown has no lines to sum up."""

    async def main() -> None:
        transport = await CoapsServerInterface.create(
            cast(Any, object()), (LOCALHOST, 0), server_config(), lambda identity: ()
        )
        await transport.shutdown()

    run(main())
