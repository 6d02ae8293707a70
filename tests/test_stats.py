"""A server's counters (`iotdtls.stats.ServerStats`): how they add over workers, the log line,
and what the asyncio server counts for each way an association ends."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from iotdtls import _failures, aio
from iotdtls.connection import DropReason, DtlsConnection
from iotdtls.endpoint import GateOutcome
from iotdtls.errors import AlertReceived
from iotdtls.heartbeat import HeartbeatDrop
from iotdtls.messages import DTLS_1_2
from iotdtls.record import ContentType, DiscardReason, RecordHeader
from iotdtls.sessions import MemorySessionStore, SessionState
from iotdtls.stats import ServerStats
from tests.aio_support import client_config, echo, eventually, run, server_config
from tests.interop_support import WRONG_PSK, SameAddressClient
from tests.peers import LOCALHOST
from tests.pubkey_support import x509_configs

COUNTERS = [f.name for f in dataclasses.fields(ServerStats) if f.name not in {"gate", "discards"}]


def numbered(
    first: int, gate: dict[str, int], discards: dict[str, int] | None = None
) -> ServerStats:
    return ServerStats(**{name: first + i for i, name in enumerate(COUNTERS)},
                       gate=Counter(gate), discards=Counter(discards or {}))


def test_the_counters_of_two_workers_add_up() -> None:
    a = numbered(1, {"COOKIE_ACCEPTED": 3, "HELLO_VERIFY_SENT": 4})
    b = numbered(10, {"COOKIE_ACCEPTED": 1, "NOT_A_CLIENT_HELLO": 2})
    total = a + b
    assert [getattr(total, name) for name in COUNTERS] == [11 + 2 * i for i in range(14)]
    assert total.gate == Counter(
        {"COOKIE_ACCEPTED": 4, "HELLO_VERIFY_SENT": 4, "NOT_A_CLIENT_HELLO": 2}
    )
    assert a.gate == Counter({"COOKIE_ACCEPTED": 3, "HELLO_VERIFY_SENT": 4})  # a part, unchanged
    assert ServerStats() + ServerStats() == ServerStats()


@pytest.mark.req("REC-3")
def test_the_discards_of_two_workers_add_up() -> None:
    a = numbered(1, {}, {"BAD_TAG": 100, "REPLAYED": 5})
    b = numbered(1, {}, {"BAD_TAG": 1, "UNKNOWN_EPOCH": 2})
    assert (a + b).discards == Counter({"BAD_TAG": 101, "REPLAYED": 5, "UNKNOWN_EPOCH": 2})
    assert a.discards == Counter({"BAD_TAG": 100, "REPLAYED": 5})  # a part, unchanged


def test_the_log_line_names_every_counter() -> None:
    stats = numbered(
        1, {"HELLO_VERIFY_SENT": 4, "COOKIE_ACCEPTED": 3}, {"REPLAYED": 500, "BAD_TAG": 100}
    )
    assert stats.describe() == (
        "handshakes 1 completed (2 resumed), 3 failed, 4 in progress, 5 unfinished; "
        "associations failed 6, idle expired 7; session store errors 8; "
        "validated-chain cache hits 9, misses 10; "
        "datagrams 11 in (13 B), 12 out (14 B); gate: cookie_accepted 3, hello_verify_sent 4; "
        "dropped: bad_tag 100, replayed 500"
    )
    assert ServerStats().describe().endswith("; gate: nothing; dropped: nothing")


def test_every_name_the_log_line_can_show_is_in_the_readme() -> None:
    """Each gate outcome and reason for a dropped record, as the counters line names it, is
    explained in the README (a new one cannot go undocumented)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    drops = [m.name for kind in (DiscardReason, DropReason, HeartbeatDrop) for m in kind]
    line = ServerStats(
        gate=Counter({o.name: 1 for o in GateOutcome}), discards=Counter(dict.fromkeys(drops, 1))
    ).describe()
    shown = re.findall(r"(\w+) 1\b", line.partition("; gate: ")[2])
    assert len(shown) == len(GateOutcome) + len(drops)
    missing = [name for name in shown if f"`{name}`" not in readme]
    assert missing == []


def forged(epoch: int, seq: int) -> bytes:
    """An application_data record of `epoch` that no key authenticates."""
    payload = bytes(40)
    header = RecordHeader(ContentType.application_data, DTLS_1_2, epoch, seq, len(payload))
    return header.encode() + payload


@pytest.mark.req("REC-3")
def test_the_asyncio_server_counts_what_its_associations_discarded() -> None:
    """Records an established association drops (RFC 6347 §4.1.2.7: a forged tag, a replay, an
    epoch it never had) are in `DtlsServer.stats` while it lives and once it has ended, whether
    another association of its address replaced it or its peer closed it."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:

            def dropped(each: int) -> bool:
                kinds = ("BAD_TAG", "REPLAYED", "UNKNOWN_EPOCH")
                return server.stats.discards == Counter(dict.fromkeys(kinds, each))

            device = await SameAddressClient.open(server.address)
            try:
                for association in (1, 2):  # the second replaces the first (RFC 6347 §4.2.8)
                    await device.handshake(client_config())
                    conn, transport = device.connection, device.transport
                    assert conn is not None and transport is not None
                    conn.send(b"ping")
                    (ping,) = conn.datagrams_to_send(0.0)
                    for datagram in (ping, ping, forged(1, 1000), forged(7, 1)):
                        transport.sendto(datagram)
                    assert await eventually(functools.partial(dropped, association), 2.0)
                conn.close()  # the second ends with close_notify
                for datagram in conn.datagrams_to_send(0.0):
                    transport.sendto(datagram)
                assert await eventually(lambda: not server.endpoint.connections, 2.0)
            finally:
                device.close()
            assert dropped(2)
            # All counted as the associations ended (none is live): ended_discards holds them.
            assert server.endpoint.ended_discards == Counter({
                DiscardReason.BAD_TAG: 2, DiscardReason.REPLAYED: 2, DiscardReason.UNKNOWN_EPOCH: 2,
            })
            assert "; dropped: bad_tag 2, replayed 2, unknown_epoch 2" in server.stats.describe()

    run(main())


@pytest.mark.req("ERR-1")
def test_the_asyncio_server_counts_and_logs_each_way_an_association_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Completed handshakes, handshakes that failed (a wrong key, twice), established
    associations that failed (each replaced by a restart from its address, RFC 6347 §4.2.8,
    twice), one closed cleanly and two let go when idle are each counted where they belong,
    and each end is one log line naming the peer, its identity and what ended it (INFO; a
    clean close at DEBUG). The datagrams are counted too."""

    async def main() -> None:
        config = server_config(idle_timeout=0.3)
        async with await aio.serve(echo, LOCALHOST, 0, config) as server:
            async with aio.connect(*server.address, client_config()) as conn:
                conn.send(b"ping")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"ping"
            for _ in range(2):
                with pytest.raises(AlertReceived):
                    await aio.connect(*server.address, client_config(psk=WRONG_PSK))
            device = await SameAddressClient.open(server.address)
            try:
                for _ in range(3):  # each restart replaces the association before it
                    await device.handshake(client_config())
            finally:
                device.close()  # its last association is left to idle
            async with aio.connect(*server.address, client_config()) as quiet:
                assert await asyncio.wait_for(quiet.recv(), 5.0) is None  # idle, closed
            await asyncio.sleep(0.1)
            stats = server.stats
        assert stats.handshakes_completed == 5
        assert stats.handshakes_failed == 2
        assert stats.associations_failed == 2
        assert stats.idle_expired == 2  # not failures, but counted
        assert stats.gate["COOKIE_ACCEPTED"] == 7
        assert stats.gate["HELLO_VERIFY_SENT"] == 7
        assert stats.datagrams_received > stats.gate["HELLO_VERIFY_SENT"] > 0
        assert stats.bytes_received > stats.datagrams_received
        assert stats.bytes_sent > stats.datagrams_sent > 0

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    peer = "peer 127.0.0.1:P psk identity b'Client_identity'"
    ends = Counter(
        (r.levelname, re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:P", r.getMessage()))
        for r in caplog.records
        if r.name == "iotdtls.aio" and re.match("(association|handshake failed)", r.getMessage())
    )
    assert ends == {
        ("DEBUG", f"association closed: {peer}"): 1,
        ("INFO", f"handshake failed: {peer}: sent fatal alert decrypt_error: "
                 "the peer's Finished record does not authenticate"): 2,
        ("INFO", f"association failed: {peer}: "
                 "the peer started a new handshake from the same address"): 2,
        ("INFO", f"association closed: {peer}: association idle for 0.3 s, closed"): 2,
    }


def test_a_failed_handshake_is_one_log_line_naming_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With DEBUG on (the CLI's -v), a handshake that fails at the server is logged once, by
    the server with the peer's address and claimed identity, not again by the association."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            with pytest.raises(AlertReceived):
                await aio.connect(*server.address, client_config(psk=WRONG_PSK))

    with caplog.at_level(logging.DEBUG, logger="iotdtls"):
        run(main())
    lines = [(r.name, r.getMessage()) for r in caplog.records
             if "sent fatal alert decrypt_error" in r.getMessage()]
    assert [name for name, _ in lines] == ["iotdtls.aio"], lines
    assert lines[0][1].startswith("handshake failed: peer 127.0.0.1:")


def test_a_flood_of_failing_handshakes_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer without credentials can make handshakes fail as fast as it likes (probe BQ:
    about 2,000 lines a second from one host): the server logs the first
    `FAILED_HANDSHAKE_LINES` of a minute as ever, counts the rest, and sums them up in one
    line when the minute ends (here a shorter one) and at its stop; its counter counts all."""
    monkeypatch.setattr(_failures, "SUMMARY_INTERVAL", 3.0)  # each flood takes well under it
    flood = aio.FAILED_HANDSHAKE_LINES + 5

    async def fail(server: aio.DtlsServer, n: int) -> None:
        await asyncio.gather(*[fail_one(server) for _ in range(n)])

    async def fail_one(server: aio.DtlsServer) -> None:
        with pytest.raises(AlertReceived):
            await aio.connect(*server.address, client_config(psk=WRONG_PSK))

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            await fail(server, flood)
            assert await eventually(lambda: summaries(), 5.0)  # the interval's end: a timer
            await fail(server, flood)  # a new interval: its first lines, then held back
            assert server.stats.handshakes_failed == 2 * flood

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "iotdtls.aio" and r.levelno >= logging.INFO]

    def summaries() -> list[str]:
        return [line for line in lines() if "more handshakes failed" in line]

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    held = [r for r in caplog.records if r.getMessage().endswith("(held back, counted in the "
                                                                 "next summary)")]
    assert len(held) == 2 * 5 and {r.levelno for r in held} == {logging.DEBUG}  # for -v
    # Each names its failure, as the line it replaces would have.
    assert all(r.getMessage().startswith("handshake failed: peer 127.0.0.1:") for r in held)
    failed = [line for line in lines() if line.startswith("handshake failed: peer 127.0.0.1:")]
    assert len(failed) == 2 * aio.FAILED_HANDSHAKE_LINES, lines()
    latest = r"\(the latest: peer 127\.0\.0\.1:\d+ psk identity b'Client_identity': sent fatal"
    assert [re.sub(latest + " alert .*", "", line) for line in summaries()] == [
        "5 more handshakes failed ", "5 more handshakes failed ",  # the second at the stop
    ], lines()
    assert len(lines()) == 2 * flood - 2 * 5 + 2


def test_summed_failures_with_lines_log_the_first_of_each_interval_and_sum_up_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`SummedFailures(lines=N)`: whatever the kinds (a peer chooses them), N lines an
    interval, the rest summed up by `sum_up` at its end, or with the first failure after it
    when nothing called it; a failure after a quiet interval starts a new one."""
    monkeypatch.setattr(_failures, "SUMMARY_INTERVAL", 10.0)
    failures = _failures.SummedFailures("failed:", 2, "{count} more (the latest: {latest})")
    assert [failures.failed(f"p{i}", 100.0 + i) for i in range(5)] == [
        "failed: p0", "failed: p1", None, None, None]
    assert failures.summary_due == 110.0
    assert failures.sum_up(110.0) == "3 more (the latest: p4)"
    assert failures.sum_up(110.5) is None
    assert [failures.failed(f"q{i}", 121.0 + i) for i in range(4)] == [
        "failed: q0", "failed: q1", None, None]
    # No sum_up at 131: the next failure after it joins those held back.
    assert failures.failed("r", 140.0) == "3 more (the latest: r)"
    assert failures.failed("s", 141.0) == "failed: s"
    assert failures.unlogged() is None


def test_sum_up_begins_the_next_interval_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sum_up` at an interval's end begins the next one then, not at the next failure: that
    interval ends `SUMMARY_INTERVAL` after `sum_up`, however late its first failure comes."""
    monkeypatch.setattr(_failures, "SUMMARY_INTERVAL", 10.0)
    failures = _failures.SummedFailures("failed:", 1, "{count} more (the latest: {latest})")
    assert [failures.failed(f"p{i}", 100.0 + i) for i in range(2)] == ["failed: p0", None]
    assert failures.sum_up(110.0) == "1 more (the latest: p1)"
    assert failures.summary_due == 120.0
    assert failures.failed("q0", 115.0) == "failed: q0"
    assert failures.failed("q1", 120.0) == "failed: q1"  # a new interval, not held back
    assert failures.held_back == 0


def test_a_failure_at_an_intervals_end_before_the_timer_begins_the_next_interval_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio runs the I/O callbacks of an iteration before the timers due in it: a failure
    handled at `summary_due` sums up the interval and begins the next; the owner's timer,
    running just after, must not begin it again (10 more lines: 20 in one interval)."""
    monkeypatch.setattr(_failures, "SUMMARY_INTERVAL", 60.0)
    failures = _failures.SummedFailures("failed:", 10, "{count} more (the latest: {latest})")
    for i in range(11):
        failures.failed(f"a{i}", 0.0)
    due = failures.summary_due
    assert failures.failed("b0", due) == "2 more (the latest: b0)"
    shown = [failures.failed(f"b{i}", due) for i in range(1, 11)]
    assert failures.sum_up(due + 0.001) is None  # the timer, late: the interval still runs
    shown += [failures.failed(f"c{i}", due + 1) for i in range(10)]
    assert len([line for line in shown if line is not None]) == 10
    assert failures.held_back == 10
    assert failures.sum_up(due + 60) == "10 more (the latest: c9)"


def test_a_server_whose_timer_came_after_the_next_interval_began_sums_that_one_up_on_time(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer of an interval runs after a failure that began the next one (an I/O callback
    of the same loop iteration) and already holds one back: it waits for that interval's end
    to sum it up, rather than leaving it to the stop."""
    monkeypatch.setattr(_failures, "SUMMARY_INTERVAL", 0.3)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            protocol = server._protocol
            for i in range(aio.FAILED_HANDSHAKE_LINES + 1):
                protocol._handshake_failed(f"a{i}")
            timer = protocol._summary_timer
            assert timer is not None
            timer.cancel()  # late: it runs below, by hand, after the next interval began
            await asyncio.sleep(0.35)
            for i in range(aio.FAILED_HANDSHAKE_LINES + 2):  # the first sums up a0..a10
                protocol._handshake_failed(f"b{i}")
            protocol._sum_up()
            assert await eventually(lambda: "1 more handshake failed (the latest: b11)" in
                                    caplog.messages, 1.0)

    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        run(main())


class FlakyStore(MemorySessionStore):
    """An application's session store whose `get` raises while `failing` is set."""

    failing = False

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        if self.failing:
            raise OSError("store offline")
        return super().get(session_id, now)


@pytest.mark.req("RES-1")
def test_the_asyncio_server_counts_resumed_handshakes_and_store_errors() -> None:
    """Of the completed handshakes, those that resumed a session (the cache's hit rate), and
    the calls to an application's session store that raised (each taken as a miss: a full
    handshake) are counted, in the log line too."""
    store = FlakyStore()

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config(),
                                   session_store=store) as server:
            async with aio.connect(*server.address, client_config()) as first:
                saved = first.session
            for resumed in (True, True, False):
                store.failing = not resumed
                async with aio.connect(*server.address, client_config(), session=saved) as conn:
                    assert conn.resumed is resumed
            stats = server.stats
        assert (stats.handshakes_completed, stats.handshakes_resumed) == (4, 2)
        assert stats.session_store_errors == 1
        assert stats.describe().startswith(
            "handshakes 4 completed (2 resumed), 0 failed, 0 in progress, 0 unfinished; "
        )
        assert "; session store errors 1; " in stats.describe()

    run(main())


class BytesStore(MemorySessionStore):
    """An application's session store whose `get` returns the saved bytes, not read back with
    `SessionState.from_bytes`."""

    def get(self, session_id: bytes, now: float) -> Any:
        state = super().get(session_id, now)
        return None if state is None else state.to_bytes()


@pytest.mark.req("RES-1")
def test_a_session_store_get_returning_the_wrong_type_is_counted_as_a_store_error() -> None:
    """A `get` returning saved bytes was logged and taken as a miss, but
    session_store_errors stayed 0 (only calls that raised were counted): it counts as one."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config(),
                                   session_store=BytesStore()) as server:
            async with aio.connect(*server.address, client_config()) as first:
                saved = first.session
            async with aio.connect(*server.address, client_config(), session=saved) as conn:
                assert not conn.resumed
            stats = server.stats
        assert (stats.handshakes_completed, stats.session_store_errors) == (2, 1)

    run(main())


class HalfOpen(asyncio.DatagramProtocol):
    """A client that answers the HelloVerifyRequest (RFC 6347 §4.2.1: the server then holds
    state for it) and then says nothing more."""

    def __init__(self) -> None:
        self.connection = DtlsConnection(client_config())
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.connection.connect(0.0)
        self._flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answered:  # the HelloVerifyRequest: send the ClientHello with the cookie
            self.answered = True
            self.connection.receive_datagram(data, 0.0)
            self._flush()

    def _flush(self) -> None:
        for datagram in self.connection.datagrams_to_send(0.0):
            self.transport.sendto(datagram)


def ended(stats: ServerStats) -> int:
    """The associations the gate let in, by how far each got."""
    return (stats.handshakes_completed + stats.handshakes_failed
            + stats.handshakes_in_progress + stats.handshakes_unfinished)


def test_handshakes_in_progress_at_the_stop_are_counted_unfinished() -> None:
    """Three handshakes half-open when the server stops are neither completed nor failed, but
    unfinished: the associations the gate let in add up to the ends counted (one completed,
    one failed, three unfinished). Read before the stop, the three are in progress."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with aio.connect(*server.address, client_config()):
            pass
        with pytest.raises(AlertReceived):
            await aio.connect(*server.address, client_config(psk=WRONG_PSK))
        clients = [
            await asyncio.get_running_loop().create_datagram_endpoint(
                HalfOpen, remote_addr=server.address
            )
            for _ in range(3)
        ]
        try:
            assert await eventually(lambda: len(server.endpoint.connections) == 3, 5.0)
            assert server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 5
            running = server.stats
            await server.close()
        finally:
            for transport, _ in clients:
                transport.close()
        stats = server.stats
        assert stats.gate["COOKIE_ACCEPTED"] == 5 == ended(stats)
        assert "handshakes 1 completed (0 resumed), 1 failed, 0 in progress, 3 unfinished; " in (
            stats.describe()
        )
        # Read while they were under way (SIGUSR1's line), the three were in progress: the
        # counters added up then too (the line said "0 unfinished" and nothing of them).
        assert running.gate["COOKIE_ACCEPTED"] == 5 == ended(running)
        assert "1 failed, 3 in progress, 0 unfinished; " in running.describe()

    run(main())


def test_a_fragmented_client_hello_without_cookie_exchange_is_counted_accepted() -> None:
    """With cookie exchange off, a ClientHello in fragments (RFC 6347 §4.2.3) starts an
    association that was not counted `hello_accepted_without_cookie`: one completed handshake
    and no association let in. It is counted so (and `fragmented_client_hello`, the form it
    came in): the associations the gate let in add up to the ends counted."""

    async def main() -> None:
        config = server_config(cookie_exchange=False, reject_unknown_server_names=False)
        async with await aio.serve(echo, LOCALHOST, 0, config) as server:
            long_name = ".".join(["a" * 60] * 4)
            async with aio.connect(*server.address,
                                   client_config(server_name=long_name, mtu=200)):
                pass
        stats = server.stats
        assert stats.gate == {"FRAGMENTED_CLIENT_HELLO": 1, "HELLO_ACCEPTED_WITHOUT_COOKIE": 1}
        let_in = stats.gate["COOKIE_ACCEPTED"] + stats.gate["HELLO_ACCEPTED_WITHOUT_COOKIE"]
        assert (stats.handshakes_completed, let_in) == (1, 1)
        assert let_in == (
            stats.handshakes_completed + stats.handshakes_failed + stats.handshakes_unfinished
        )

    run(main())


@pytest.mark.req("CRT-1")
@pytest.mark.parametrize(("kept", "hits", "misses"), [(2, 2, 1), (0, 0, 3)])
def test_the_server_counts_client_chains_found_validated_and_validated_in_full(
    kept: int, hits: int, misses: int,
) -> None:
    """A server's CPU per certificate handshake rose by 60% once more devices than the 256
    chains the trust store remembered reconnected in turn, with nothing to show it nor to
    change: `validated_chains` sets the number, the counters show hits and misses (three
    handshakes of one client: the first validates, the next two find it; 0 keeps none)."""
    client, server_config = x509_configs(server={"validated_chains": kept})

    async def main() -> ServerStats:
        server = await aio.serve(echo, LOCALHOST, 0, server_config)
        try:
            for _ in range(3):
                async with aio.connect(LOCALHOST, server.address[1], client) as conn:
                    conn.send(b"x")
                    assert await asyncio.wait_for(conn.recv(), 10) == b"x"
            return server.stats
        finally:
            await server.close()

    stats = asyncio.run(asyncio.wait_for(main(), 30))
    assert (stats.handshakes_completed, stats.handshakes_resumed) == (3, 0)
    assert (stats.validated_chain_hits, stats.validated_chain_misses) == (hits, misses)
    assert f"validated-chain cache hits {hits}, misses {misses}; " in stats.describe()
