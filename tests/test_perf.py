"""The load generator (`iotdtls.perf`) in this process: its figures, its report, its checks,
and the engine against an asyncio server on the same loop (short runs, counted, never timed).

`tests/test_scale.py` runs the `iotdtls perf` command against real server processes; these
tests reach what a subprocess hides from mutation testing: how the counters add up, what each
failure is called, when an echo counts, how a run is split over processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import functools
import gc
import json
import logging
import multiprocessing
import os
import pickle
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from iotdtls import aio, cli, loop, perf
from iotdtls.chaincache import ChainCache
from iotdtls.cli import perf as perf_cli
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.crypto.aead import CCM8_TAG_LENGTH, EXPLICIT_NONCE_LENGTH
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    DtlsError,
    HandshakeTimeout,
    PortUnreachable,
)
from iotdtls.perf import LoadProgress, LoadResult, LoadSpec, check_spec, run_load
from iotdtls.perf import engine as perf_engine
from iotdtls.perf.engine import failure_cause, run_engine
from iotdtls.perf.result import percentile
from iotdtls.record import RECORD_HEADER_LEN
from iotdtls.stats import ServerStats
from tests.aio_support import client_config, echo, run, server_config
from tests.interop_support import CREDENTIALS, WRONG_PSK, WRONG_PSK_HEX, FlushedText
from tests.peers import CLIENT_IDENTITY, LOCALHOST, Pki, free_udp_port
from tests.pki import chain_der
from tests.pubkey_support import x509_configs, x509_pki


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing the engine leaves behind makes asyncio complain: no exception in a callback,
    no task or future whose exception was never retrieved (found once garbage is collected)."""
    yield
    gc.collect()
    records = [*caplog.get_records("call"), *caplog.records]
    errors = [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert errors == []


# -- what a run measured ------------------------------------------------------------------------


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.991) == 100.0  # rounded up: the rank is ceil(99.1) = 100
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0  # the first value, never the one before it
    assert percentile(values, 2.0) == 100.0  # never past the last
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


#: Every integer counter of a result (`processes` is counted apart): a counter added to
#: `LoadResult` and forgotten by `+` fails the test below.
COUNTERS = tuple(
    f.name for f in dataclasses.fields(LoadResult) if f.type == "int" and f.name != "processes"
)


def numbered(first: int, **fields: Any) -> LoadResult:
    """A result whose counters are first, first + 1, ... in the order of COUNTERS."""
    return LoadResult(**{name: first + i for i, name in enumerate(COUNTERS)}, **fields)


def test_the_results_of_two_processes_add_up() -> None:
    """Counters and failures add, latencies join, the longer run's times and the first loop
    name stand, and the processes are counted."""
    a = numbered(1, elapsed=3.0, window=2.0, failures=Counter({"handshake timeout": 2}),
                 association_failures=Counter({"closed by the server": 1}),
                 latencies=[0.1], echo_latencies=[0.01], resumed_latencies=[0.05], loop="")
    b = numbered(100, elapsed=2.5, window=2.5,
                 failures=Counter({"handshake timeout": 1, "received alert decrypt_error": 4}),
                 association_failures=Counter({"closed by the server": 2, "x": 1}),
                 latencies=[0.2, 0.3], echo_latencies=[0.02], resumed_latencies=[0.06],
                 processes=2, loop="uvloop")
    total = a + b
    assert {name: getattr(total, name) for name in COUNTERS} == {
        name: 101 + 2 * i for i, name in enumerate(COUNTERS)
    }
    assert total.failures == Counter({"handshake timeout": 3, "received alert decrypt_error": 4})
    assert total.failed == 7
    assert total.association_failures == Counter({"closed by the server": 3, "x": 1})
    assert total.latencies == [0.1, 0.2, 0.3]
    assert total.echo_latencies == [0.01, 0.02]
    assert total.resumed_latencies == [0.05, 0.06] and total.resumed == 2
    assert (total.elapsed, total.window) == (3.0, 2.5)
    assert total.processes == 3
    assert total.loop == "uvloop"
    assert dataclasses.replace(a, loop="asyncio").__add__(b).loop == "asyncio"
    assert a.failures == Counter({"handshake timeout": 2})  # the parts are left as they were


def test_the_rate_counts_the_handshakes_inside_the_window() -> None:
    assert LoadResult(completed=60, completed_in_window=50, window=2.0).rate == 25.0
    assert LoadResult(completed_in_window=50, window=0.0).rate == 0.0


@pytest.mark.parametrize(
    ("figures", "rate"),
    [
        ({"elapsed": 1.83, "window": 1.0, "completed": 8, "completed_in_window": 0},
         "0.0/s within the 1 s window, 8 completed after it"),
        ({"elapsed": 3.77, "window": 2.0, "completed": 3002, "completed_in_window": 2},
         "1.0/s within the 2 s window, 3000 completed after it"),
        ({"elapsed": 2.01, "window": 2.0, "completed": 8, "completed_in_window": 8},
         "4.0/s within the 2 s window"),
        ({"elapsed": 1.5, "window": 1.5, "completed": 6, "completed_in_window": 6}, "4.0/s"),
        ({"elapsed": 0.01, "window": 0.0004, "completed": 2, "completed_in_window": 0},
         "0.0/s within the 0.0004 s window, 2 completed after it"),
    ],
    ids=["all-after", "most-after", "none-after", "count-run", "under-a-millisecond"],
)  # fmt: skip
def test_the_report_says_which_handshakes_the_rate_counts(
    figures: dict[str, Any], rate: str
) -> None:
    """A time run's rate counts the handshakes completed within its duration; those completed
    after it, while the last associations end, are in the count but not in the rate, and the
    report says so (probe CE: "8 completed, 0 failed; 0.0/s" through a slow proxy). A count
    run (or one stopped within its window) measures over all of its time: nothing to add.
    A window under a millisecond (`perf -d 0.0004`) is not shown as 0 s (probe CF F7)."""
    result = LoadResult(**figures)
    line = result.report("h:1", 8).splitlines()[1]
    assert line == f"handshakes: {figures['completed']} completed, 0 failed; {rate}"
    assert result.summary()["window_s"] == round(figures["window"], 4)


def busy_result() -> LoadResult:
    """Figures whose rounding shows: to 3 places in the summary, 2 in the report."""
    return LoadResult(
        elapsed=2.0126, window=1.7504, started=12, completed=8, completed_in_window=6,
        failures=Counter({"received alert decrypt_error": 1, "handshake timeout": 2}),
        unfinished=1, latencies=[0.0041234, 0.0010005, 0.0020004, 0.0030009], messages_sent=18,
        messages_echoed=15, messages_lost=1, messages_mismatched=3, messages_unanswered=2,
        echo_latencies=[0.00151234, 0.00051234],
        datagrams_sent=50, datagrams_received=40, bytes_sent=5000, bytes_received=4000,
        icmp_errors=3, processes=2, loop="uvloop", address="192.0.2.7:5684",
        association_failures=Counter({"closed by the server": 1}), sessions_offered=5,
        resumed_latencies=[0.0009001, 0.0005006, 0.0007004, 0.0006009],
    )  # fmt: skip


def test_the_summary_has_every_figure() -> None:
    assert busy_result().summary() == {
        "elapsed_s": 2.013,
        "window_s": 1.75,
        "address": "192.0.2.7:5684",
        "processes": 2,
        "loop": "uvloop",
        "handshakes": {"started": 12, "completed": 8, "completed_in_window": 6, "failed": 3,
                       "unfinished": 1, "per_second": 3.4, "sessions_offered": 5, "resumed": 4,
                       "no_session_id": 0, "no_extended_master_secret": 0},
        "latency_ms": {"median": 2.0, "p99": 4.123, "max": 4.123},
        "resumed_latency_ms": {"median": 0.601, "p99": 0.9, "max": 0.9},
        "failures": {"handshake timeout": 2, "received alert decrypt_error": 1},
        "association_failures": {"closed by the server": 1},
        "messages": {"sent": 18, "echoed": 15, "lost": 1, "mismatched": 3, "unanswered": 2,
                     "per_second": 7.5,
                     "rtt_ms": {"median": 0.512, "p99": 1.512, "max": 1.512}},
        "datagrams": {"sent": 50, "received": 40, "bytes_sent": 5000, "bytes_received": 4000},
        "icmp_errors": 3,
    }  # fmt: skip
    empty = LoadResult().summary()
    nothing = {"median": None, "p99": None, "max": None}  # null in JSON, never a zero
    assert empty["latency_ms"] == empty["resumed_latency_ms"] == nothing
    assert empty["messages"]["rtt_ms"] == nothing
    assert empty["failures"] == empty["association_failures"] == {}
    assert empty["messages"]["per_second"] == 0
    assert empty["handshakes"]["per_second"] == 0.0


def test_the_summary_tells_the_median_the_p99_and_the_maximum_apart() -> None:
    """Nearest rank over 200 latencies given in no order: the 100th, the 198th, the last."""
    seconds = [n / 1000 for n in range(200, 0, -1)]
    summary = LoadResult(latencies=seconds, echo_latencies=seconds[1::2]).summary()
    assert summary["latency_ms"] == {"median": 100.0, "p99": 198.0, "max": 200.0}
    assert summary["messages"]["rtt_ms"] == {"median": 99.0, "p99": 197.0, "max": 199.0}


def test_the_report_shows_what_happened_and_leaves_out_what_did_not() -> None:
    assert busy_result().report("192.0.2.7:5684", 10).splitlines() == [
        "iotdtls perf 192.0.2.7:5684: 2.01 s, concurrency 10, 2 processes (uvloop)",
        "handshakes: 8 completed, 3 failed, 1 unfinished; 3.4/s within the 1.75 s window, "
        "2 completed after it",
        "latency ms: median 2.00, p99 4.12, max 4.12 (full handshakes)",
        "resumed: 4 of 5 sessions offered; latency ms median 0.60, p99 0.90, max 0.90",
        "failures: handshake timeout 2, received alert decrypt_error 1; "
        "after the handshake: closed by the server 1",
        "messages: 18 sent, 15 echoed, 1 lost, 3 mismatched, 2 unanswered at stop; 7.5/s; "
        "rtt ms median 0.51, p99 1.51",
        "datagrams: 50 sent (5000 B), 40 received (4000 B); ICMP errors 3",
    ]
    quiet = LoadResult(elapsed=1.0, window=1.0, started=2, completed=2, completed_in_window=2,
                       latencies=[0.001, 0.001], datagrams_sent=6, datagrams_received=6,
                       bytes_sent=600, bytes_received=500, loop="asyncio", address="[::1]:1")
    assert quiet.report("h:1", 1).splitlines() == [
        "iotdtls perf h:1 ([::1]:1): 1.00 s, concurrency 1, 1 process (asyncio)",
        "handshakes: 2 completed, 0 failed; 2.0/s",
        "latency ms: median 1.00, p99 1.00, max 1.00",
        "failures: none",
        "datagrams: 6 sent (600 B), 6 received (500 B)",
    ]


def test_the_report_says_none_where_nothing_was_measured() -> None:
    """No handshake completed, no session resumed, no echo came back: "none", not zeros."""
    unanswered = LoadResult(elapsed=1.0, window=1.0, started=3, completed=1,
                            failures=Counter({"handshake timeout": 2}), sessions_offered=1,
                            messages_sent=1, messages_lost=1, loop="asyncio")
    lines = unanswered.report("h:1", 1).splitlines()
    assert lines[2:4] == [
        "latency ms: none (full handshakes)",
        "resumed: 0 of 1 sessions offered; latency ms none",
    ]
    assert lines[5] == "messages: 1 sent, 0 echoed, 1 lost; 0.0/s; rtt ms none"
    assert "latency ms: none" in LoadResult(started=1, unfinished=1).report("h:1", 1)


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    ("figures", "line"),
    [
        ({"no_session_id": 4},
         "resumed: 0 (the server offered no session to resume: no session_id in its ServerHello)"),
        ({"no_extended_master_secret": 4},
         "resumed: 0 (no session to resume: the handshakes had no extended master secret, "
         "RFC 7627, and such a session is never resumed)"),
        ({}, "resumed: 0 (no session offered: no lane completed a handshake before its next)"),
    ],
    ids=["no-session-id", "no-ems", "nothing-completed"],
)
def test_a_resume_run_that_offered_no_session_says_why(figures: dict[str, int], line: str) -> None:
    """With --resume the report always has its resumed line; with no session offered it says
    why rather than leaving the line out."""
    result = LoadResult(elapsed=1.0, window=1.0, started=4, completed=4, loop="asyncio",
                        latencies=[0.001] * 4, resume=True, **figures)
    lines = result.report("h:1", 2).splitlines()
    assert lines[2:4] == ["latency ms: median 1.00, p99 1.00, max 1.00 (full handshakes)", line]
    assert not any(
        x.startswith("resumed") for x in LoadResult(**figures).report("h:1", 2).splitlines()
    )


def test_the_resume_flag_survives_merging_the_processes_figures() -> None:
    merged = LoadResult(resume=True, no_session_id=2) + LoadResult(resume=True, no_session_id=3)
    assert merged.resume is True
    assert merged.no_session_id == 5
    assert (LoadResult() + LoadResult()).resume is False


@pytest.mark.req("ERR-1")
@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (HandshakeTimeout(5.0), "handshake timeout"),
        (AlertReceived(AlertDescription.decrypt_error), "received alert decrypt_error"),
        (AlertReceived(200), "received alert 200"),
        (AlertSent(AlertDescription.bad_record_mac, "details"), "sent alert bad_record_mac"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
         "socket error: Connection refused"),
        (OSError("no route"), "socket error: no route"),
        (DtlsError("closed by the server"), "closed by the server"),
        (PortUnreachable((LOCALHOST, 5684), 2), "port unreachable"),
        (DtlsError(), "DtlsError"),
    ],
)  # fmt: skip
def test_each_failure_has_a_short_stable_name(error: BaseException, cause: str) -> None:
    assert failure_cause(error) == cause


# -- what a run may ask for -------------------------------------------------------------------


def spec(**changes: Any) -> LoadSpec:
    """A count run of 10 handshakes with the test credentials, a few settings changed."""
    settings: dict[str, Any] = {
        "host": LOCALHOST, "port": 5684, "config": client_config(), "handshakes": 10, **changes,
    }  # fmt: skip
    return LoadSpec(**settings)


@pytest.mark.parametrize(
    ("changes", "processes", "message"),
    [
        ({"concurrency": 0}, 1, "concurrency must be at least 1, got 0"),
        ({"handshakes": None}, 1, "give either a duration or a number of handshakes"),
        ({"duration": 1.0}, 1, "give either a duration or a number of handshakes"),
        ({"handshakes": None, "duration": 0.0}, 1,
         "duration must be a finite number of seconds > 0, got 0.0$"),
        ({"handshakes": None, "duration": float("nan")}, 1,
         "duration must be a finite number of seconds > 0, got nan$"),
        ({"handshakes": None, "duration": float("inf")}, 1,
         "duration must be a finite number of seconds > 0, got inf$"),
        ({"handshakes": 0}, 1, "handshakes must be at least 1, got 0"),
        ({"messages": -1}, 1, "messages must be 0 or more, got -1"),
        ({"message_size": 3}, 1, "message size must be from 4 to 16384 bytes"),
        ({"message_size": 16385}, 1, "message size must be from 4 to 16384 bytes"),
        ({"message_size": 1204}, 1,
         r"a message of 1204 bytes does not fit one datagram of 1232 bytes \(the MTU\): at most "
         "1203$"),
        ({"message_size": 572, "config": client_config(mtu=600)}, 1,
         r"a message of 572 bytes does not fit one datagram of 600 bytes \(the MTU\): at most "
         "571$"),
        ({"echo_timeout": 0.0}, 1, "echo timeout must be a finite number of seconds > 0, got 0.0$"),
        ({"echo_timeout": float("nan")}, 1, "echo timeout must be a finite number of seconds > 0"),
        ({"echo_timeout": float("inf")}, 1,
         "echo timeout must be a finite number of seconds > 0, got inf$"),
        ({"handshakes": None, "duration": 10**400}, 1,
         "duration must be a finite number of seconds > 0, got inf$"),
        ({"echo_timeout": Fraction(-(10**400))}, 1,
         "echo timeout must be a finite number of seconds > 0, got -inf$"),
        ({"port": 0}, 1, "port must be from 1 to 65535, got 0$"),
        ({"port": 65536}, 1, "port must be from 1 to 65535, got 65536$"),
        ({"host": ""}, 1, "host is empty"),
        ({}, 0, r"processes must be from 1 to the concurrency \(10\)"),
        ({}, 11, r"processes must be from 1 to the concurrency \(10\)"),
        ({"concurrency": 20}, 11, "processes must not exceed the number of handshakes"),
    ],
)  # fmt: skip
def test_a_run_that_cannot_be_done_is_refused_in_one_line(
    changes: dict[str, Any], processes: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        check_spec(spec(**changes), processes)


@pytest.mark.parametrize(
    ("changes", "processes", "message"),
    [
        ({"host": None}, 1, "host must be a str, got None"),
        ({"port": "5684"}, 1, "port must be an int, got str"),
        ({"config": None}, 1,
         "config must be a ClientConfig or a function returning one, got None"),
        ({"config": server_config()}, 1,
         "config must be a ClientConfig or a function returning one, got ServerConfig"),
        ({"concurrency": True}, 1, "concurrency must be an int, got bool"),
        ({"concurrency": 2.5}, 1, "concurrency must be an int, got float"),
        ({"handshakes": 1.5}, 1, "handshakes must be an int, got float"),
        ({"messages": 1.0}, 1, "messages must be an int, got float"),
        ({"message_size": "64"}, 1, "message_size must be an int, got str"),
        ({}, 2.0, "processes must be an int, got float"),
        ({"handshakes": None, "duration": "1"}, 1, "duration must be a number of seconds, got str"),
        ({"handshakes": None, "duration": True}, 1,
         "duration must be a number of seconds, got bool"),
        ({"echo_timeout": None}, 1, "echo_timeout must be a number of seconds, got None"),
        ({"resume": 1}, 1, "resume must be a bool, got int"),
        ({"chain_cache": "cache"}, 1,
         r"chain_cache must be a ChainCache \(ChainCache\(directory\)\), got str$"),
        ({"target": ("x",)}, 1,
         r"target must be None or one of getaddrinfo's answers \(family, type, proto, canonname, "
         r"sockaddr\), got tuple of str$"),
    ],
)  # fmt: skip
def test_a_setting_of_the_wrong_type_is_a_one_line_type_error(
    changes: dict[str, Any], processes: Any, message: str
) -> None:
    """As the adapters refuse an argument of the wrong type (README): before the run, rather
    than an AttributeError or a TypeError from deep inside it, or a run of 2.5 lanes, or one
    against loopback for a host of None (probe CE)."""
    with pytest.raises(TypeError, match=f"^{message}"):
        check_spec(spec(**changes), processes)


@pytest.mark.parametrize(
    ("processes", "error", "message"),
    [
        (0, ConfigError, r"processes must be from 1 to the concurrency \(10\)$"),
        (11, ConfigError, r"processes must be from 1 to the concurrency \(10\)$"),
        (2.0, TypeError, "processes must be an int, got float$"),
        (True, TypeError, "processes must be an int, got bool$"),
    ],
)
def test_run_load_checks_its_processes_before_running(
    processes: Any, error: type[Exception], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_load` checks `processes` with the spec (`check_spec`), in one line, before any
    run: not a run of 11 processes for a concurrency of 10, nor one of True (1) process (M21:
    run_load 8, `check_spec(spec)` without it)."""

    def no_run(*args: object) -> None:
        raise AssertionError("a run began")

    monkeypatch.setattr(perf, "_run_here", no_run)
    monkeypatch.setattr(perf, "_run_processes", no_run)
    with pytest.raises(error, match=f"^{message}"):
        run_load(spec(), processes=processes)


def test_a_function_building_the_config_must_build_a_client_config() -> None:
    """Its answer is only known in the generator process: checked there, in one line."""
    target = (socket.AF_INET, socket.SOCK_DGRAM, 0, "", (LOCALHOST, free_udp_port()))
    message = r"^config\(\) must return a ClientConfig, got ServerConfig$"
    with pytest.raises(TypeError, match=message):
        run_load(spec(config=server_config, handshakes=1, concurrency=1, target=target))


def test_the_edges_of_a_possible_run_are_accepted() -> None:
    check_spec(spec(concurrency=1, handshakes=1))  # one process unless told
    check_spec(spec(message_size=4, messages=0), processes=1)
    check_spec(spec(message_size=1203))  # the default MTU less a record's 29 bytes
    check_spec(spec(message_size=16384, concurrency=10, config=client_config(mtu=16384 + 29)),
               processes=10)
    check_spec(spec(message_size=16384, config=client_config))  # built later: not checked here
    check_spec(spec(handshakes=None, duration=0.01, concurrency=3), processes=3)


class NumpyLikeInt:
    """An integer that is no int (as numpy's): it has `__index__`, which Python's own
    functions (`range`) take."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_check_spec_gives_the_numbers_as_python_s_own() -> None:
    """A `Fraction` duration passed the check, then the report failed ("unsupported format
    string passed to Fraction.__format__") and the JSON summary with it; an `IntEnum` port
    failed in the resolver ("Int or String expected"); a numpy-like count, which ran once,
    was refused (probe CF F2, F3). `check_spec` returns the spec that `run_load` runs, each
    count and the port a plain int, each number of seconds a float."""
    named = enum.IntEnum("Named", {"PORT": 5684, "TWO": 2})
    processes: Any = NumpyLikeInt(2)
    checked = check_spec(
        spec(port=named.PORT, concurrency=named.TWO, handshakes=NumpyLikeInt(4),
             messages=NumpyLikeInt(1), message_size=NumpyLikeInt(64),
             echo_timeout=Fraction(3, 2)),
        processes,
    )
    numbers = {name: getattr(checked, name) for name in
               ("port", "concurrency", "handshakes", "messages", "message_size", "echo_timeout")}
    assert numbers == {"port": 5684, "concurrency": 2, "handshakes": 4, "messages": 1,
                       "message_size": 64, "echo_timeout": 1.5}
    assert [type(value) for value in numbers.values()] == [int] * 5 + [float]
    timed = check_spec(spec(handshakes=None, duration=Fraction(1, 5)))
    assert type(timed.duration) is float and timed.duration == 0.2


def test_run_load_runs_and_reports_a_fraction_duration_on_an_int_enum_port() -> None:
    """What `check_spec` returns is what runs: the report and the JSON summary of a run of a
    `Fraction` duration (probe CF F2), against a port given as an `IntEnum` (F3)."""
    with server_on_a_thread() as server:
        port = enum.IntEnum("Port", {"SERVER": server.address[1]}).SERVER
        load = spec(port=port, handshakes=None, duration=Fraction(1, 5), concurrency=1,
                    config=client_config(handshake_timeout=10.0))
        result = run_load(load, loop_choice="asyncio")
    assert result.completed > 0 and result.failed == 0
    assert result.window == 0.2
    assert json.loads(json.dumps(result.summary()))["window_s"] == 0.2
    assert result.report(f"{LOCALHOST}:{port}", 1).startswith(f"iotdtls perf {LOCALHOST}:{port}")


def test_a_run_is_split_fairly_over_processes() -> None:
    parts = perf._split(spec(concurrency=10, handshakes=7), 3)
    assert [(p.concurrency, p.handshakes) for p in parts] == [(4, 3), (3, 2), (3, 2)]
    timed = perf._split(spec(concurrency=5, handshakes=None, duration=2.0, messages=3), 2)
    assert [(p.concurrency, p.handshakes, p.duration, p.messages) for p in timed] == [
        (3, None, 2.0, 3), (2, None, 2.0, 3),
    ]  # fmt: skip


# -- the engine against a server on the same loop -----------------------------------------------


async def settle(stats: ServerStats, result: LoadResult) -> None:
    """Wait (bounded) until the server has counted every datagram the generator sent: the
    last close_notify may still be on its way when the run returns."""
    deadline = time.monotonic() + 5.0
    while stats.datagrams_received < result.datagrams_sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


#: A close_notify under AES_128_CCM_8: record header, explicit nonce, the alert, the tag.
CLOSE_NOTIFY_RECORD = RECORD_HEADER_LEN + EXPLICIT_NONCE_LENGTH + 2 + CCM8_TAG_LENGTH


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_counted_run_agrees_with_the_server(
    monkeypatch: pytest.MonkeyPatch, loop_choice: str
) -> None:
    """Handshakes, echoes, datagrams and bytes as the server counts them; each echoed datagram
    has the size asked for and its number in its first four bytes. The clients' configuration
    is given as a function building it (as for generator processes). Without a progress
    callback, nothing reports progress (however often it would)."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.001)
    echoed: list[bytes] = []

    async def numbered_echo(session: aio.ServerSession) -> None:
        async for datagram in session:
            echoed.append(datagram)
            session.send(datagram)

    async def main() -> None:
        async with await aio.serve(numbered_echo, LOCALHOST, 0, server_config()) as server:
            load = spec(handshakes=12, concurrency=4, messages=3, message_size=32,
                        port=server.address[1], config=client_config)
            result = await run_engine(load)
            await settle(server.stats, result)
            stats = server.stats
        assert (result.started, result.completed, result.completed_in_window) == (12, 12, 12)
        assert result.failures == Counter() and result.unfinished == 0
        assert len(result.latencies) == 12 and 0 < min(result.latencies) <= max(
            result.latencies) < 5.0  # fmt: skip
        assert (result.messages_sent, result.messages_echoed, result.messages_lost) == (36, 36, 0)
        assert len(result.echo_latencies) == 36 and 0 < max(result.echo_latencies) < 5.0
        assert stats.handshakes_completed == 12
        assert (stats.datagrams_received, stats.bytes_received) == (
            result.datagrams_sent, result.bytes_sent,
        )  # fmt: skip
        # The server answers each close_notify, to a socket the generator has closed (rarely
        # the kernel gives that port to a later client, which then receives the stray answer).
        strays = result.datagrams_received + 12 - stats.datagrams_sent
        assert 0 <= strays <= 3
        assert stats.bytes_sent - result.bytes_received == (12 - strays) * CLOSE_NOTIFY_RECORD
        assert result.window == result.elapsed > 0
        assert result.loop == loop_choice and result.processes == 1

    loop.run(main(), loop_choice)
    assert {len(datagram) for datagram in echoed} == {32}
    assert sorted(int.from_bytes(d[:4], "big") for d in echoed) == sorted([0, 1, 2] * 12)
    assert {d[4:] for d in echoed} == {bytes(28)}


def run_against(
    handler: aio.Handler,
    *,
    server: ServerConfig | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    **changes: Any,
) -> tuple[LoadResult, float]:
    """`spec(**changes)` run by the engine, in a fresh loop, against an in-process server of
    `handler` (configured by `server_config()` unless given): the result and the seconds the
    run took."""
    outcome: list[tuple[LoadResult, float]] = []

    async def main() -> None:
        async with await aio.serve(handler, LOCALHOST, 0, server or server_config()) as running:
            started = time.monotonic()
            result = await run_engine(spec(port=running.address[1], **changes), progress)
            outcome.append((result, time.monotonic() - started))

    run(main())
    return outcome[0]


@pytest.mark.req("CRT-2")
def test_a_chain_cache_is_filled_then_offered_by_every_association(tmp_path: Path) -> None:
    """With a chain cache the first association that sees the server's chain keeps it, and
    every later one (of this run and of the next) offers it in cached_info (RFC 7924): the
    server then sends its fingerprint instead of its Certificate, and less comes back."""
    client, server = x509_configs(client={"handshake_timeout": 10.0})
    cache = ChainCache(tmp_path)
    chain = chain_der(x509_pki().server, x509_pki().ca)
    chain_size = sum(len(certificate) for certificate in chain)

    results: list[LoadResult] = []

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            port = running.address[1]
            for cached in (None, cache, cache):
                load = spec(port=port, config=client, handshakes=2, concurrency=1, messages=1,
                            chain_cache=cached)
                results.append(await run_engine(load))
            assert cache.load(f"localhost:{port}") == chain

    run(main())
    uncached, filled, offered = results
    for result in (uncached, filled, offered):
        assert (result.completed, result.failed, result.messages_echoed) == (2, 0, 2)
    # Two chains came in the run without a cache, one in the run that filled it, none after.
    assert uncached.bytes_received - filled.bytes_received > chain_size - 64
    assert filled.bytes_received - offered.bytes_received > chain_size - 64


@pytest.mark.req("CRT-3")
def test_a_load_spec_checks_the_server_certificate_against_its_host_as_connect_does() -> None:
    """From Python too (not only `iotdtls perf`, whose configuration names the host): a
    certificate-mode configuration without a server_name checks the host it is given
    (`ClientConfig.for_host`), so a server whose certificate names only localhost, reached
    at 127.0.0.1, fails every handshake as it fails `aio.connect`."""
    client, server = x509_configs(client={"server_name": None, "handshake_timeout": 10.0})
    outcome: list[tuple[DtlsError, LoadResult]] = []

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            with pytest.raises(DtlsError) as refused:
                await aio.connect(*running.address, client)
            load = spec(port=running.address[1], config=client, handshakes=2, concurrency=1)
            outcome.append((refused.value, await run_engine(load)))

    run(main())
    (error, result), = outcome
    assert result.completed == 0
    assert result.failures == Counter({failure_cause(error): 2})


def test_failed_handshakes_are_counted_by_cause() -> None:
    result, _ = run_against(echo, handshakes=3, concurrency=1,
                            config=client_config(psk=WRONG_PSK))
    assert result.failures == Counter({"received alert decrypt_error": 3})
    assert result.completed == 0 and result.latencies == []
    assert result.started == 3


def test_a_port_nobody_serves_fails_each_handshake_early_as_port_unreachable() -> None:
    """ICMP port unreachable for the ClientHello and its first retransmission, nothing from
    the server: each handshake gives up then (as `aio.connect` does), long before its
    deadline, and the report says why: nothing listens, not a server too busy to answer."""
    port = free_udp_port()
    load = spec(handshakes=2, concurrency=2, port=port,
                config=client_config(handshake_timeout=10.0))

    async def main() -> None:
        started = time.monotonic()
        result = await run_engine(load)
        assert time.monotonic() - started < 5.0
        assert result.failures == Counter({"port unreachable": 2})
        # One ICMP error for each datagram sent (the ClientHello, retransmitted once).
        assert result.icmp_errors == result.datagrams_sent == 4
        assert result.datagrams_received == 0

    run(main())


def test_a_host_that_does_not_resolve_is_named() -> None:
    """As `aio.connect` says it: a `socket.gaierror` naming the host before any handshake."""
    with pytest.raises(socket.gaierror) as unresolved:
        asyncio.run(run_engine(spec(host="nonexistent.invalid", handshakes=1)))
    assert str(unresolved.value.strerror).startswith("cannot resolve nonexistent.invalid: ")


def resolve_dual_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the name "dual.test" resolve to ::1 first, then to 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def dual(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":
            return [*real_getaddrinfo("::1", port, *args, **kwargs),
                    *real_getaddrinfo(LOCALHOST, port, *args, **kwargs)]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dual)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_name_with_several_addresses_is_run_against_the_first_that_answers(
    monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """A name resolving to ::1 first, a server on 127.0.0.1 only: the run used the first
    address alone, and every handshake failed "port unreachable" where `iotdtls client`
    moves on to 127.0.0.1. It now picks its address as `aio.connect` does (a handshake to
    ::1 refused, not counted), and says which it used."""
    resolve_dual_test(monkeypatch)
    with server_on_a_thread() as server:
        port = server.address[1]
        load = spec(host="dual.test", port=port, handshakes=2, concurrency=2,
                    config=client_config(handshake_timeout=10.0))
        result = run_load(load, processes=processes, loop_choice="asyncio")
    assert (result.completed, result.failures, result.icmp_errors) == (2, Counter(), 0)
    assert result.address == f"{LOCALHOST}:{port}"
    assert result.report(f"dual.test:{port}", 2).startswith(
        f"iotdtls perf dual.test:{port} ({LOCALHOST}:{port}): ")


def test_the_address_passed_over_is_logged_as_aio_connect_logs_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`pick_target` tries the addresses as `aio.connect` does (`sockets_in_turn`): the one
    refused is one line, the refusal and the move to the next address, as the client says it;
    nothing counted."""
    resolve_dual_test(monkeypatch)
    made: list[socket.socket] = []

    class Recorded(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(socket, "socket", Recorded)
    port = free_udp_port()
    load = spec(host="dual.test", port=port, handshakes=1,
                config=client_config(handshake_timeout=10.0))
    caplog.set_level(logging.INFO, logger=perf_engine.__name__)

    async def main() -> None:
        chosen = await perf_engine.pick_target(load)
        assert chosen.target is not None and chosen.target[4] == (LOCALHOST, port)

    run(main())
    # The probe's handshake goes over the socket that was connected to ::1, then closed.
    (probe,) = [sock for sock in made if sock.family == socket.AF_INET6]
    assert probe.fileno() == -1
    lines = [r.getMessage() for r in caplog.records if r.name == perf_engine.__name__]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"nothing listens on [::1]:{port}: "), lines  # the refusal
    assert lines[0].endswith("; trying the next address of dual.test"), lines


def test_the_first_address_that_answers_is_chosen_over_the_last(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of a name's addresses, the first whose handshake gets an answer is the run's, though
    later ones remain: 127.0.0.1 first, then ::1, a server on 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def ipv4_first(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":
            return [*real_getaddrinfo(LOCALHOST, port, *args, **kwargs),
                    *real_getaddrinfo("::1", port, *args, **kwargs)]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", ipv4_first)
    with server_on_a_thread() as server:
        port = server.address[1]
        load = spec(host="dual.test", port=port, handshakes=1,
                    config=client_config(handshake_timeout=10.0))

        async def main() -> None:
            chosen = await perf_engine.pick_target(load)
            assert chosen.target is not None and chosen.target[4] == (LOCALHOST, port)

        run(main())


def test_an_address_the_socket_cannot_reach_is_passed_over_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An address whose socket cannot even connect (a link-local one without its zone:
    "Invalid argument") is passed over in one line naming the name and port asked for, as
    `aio.connect` says it; the next address is taken."""
    real_getaddrinfo = socket.getaddrinfo
    unreachable = (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "",
                   ("fe80::1", 9, 0, 0))

    def first_unreachable(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":
            return [unreachable, *real_getaddrinfo(LOCALHOST, port, *args, **kwargs)]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", first_unreachable)
    port = free_udp_port()
    load = spec(host="dual.test", port=port, handshakes=1)
    caplog.set_level(logging.INFO)

    async def main() -> None:
        chosen = await perf_engine.pick_target(load)
        assert chosen.target is not None and chosen.target[4] == (LOCALHOST, port)

    run(main())
    assert [r.getMessage() for r in caplog.records if "trying the next" in r.getMessage()] == [
        f"[Errno {errno.EINVAL}] cannot reach dual.test:{port}: Invalid argument; trying the next "
        "address of dual.test"
    ]


async def swallow(session: aio.ServerSession) -> None:
    async for _ in session:
        pass


async def answer_wrongly(session: aio.ServerSession) -> None:
    async for datagram in session:
        session.send(b"!" + datagram[1:])


async def answer_late(session: aio.ServerSession) -> None:
    """Each datagram echoed twice, the second copy after the client has sent its next one."""
    previous = b""
    async for datagram in session:
        if previous:
            session.send(previous)
        session.send(datagram)
        previous = datagram


async def hang_up(session: aio.ServerSession) -> None:
    await session.recv()
    session.close()


@pytest.mark.parametrize(
    ("handler", "echoed", "lost", "mismatched", "after_handshake"),
    [
        (swallow, 0, 4, 0, {}),
        # An answer that is not the datagram sent is no echo of it: mismatched, not lost.
        (answer_wrongly, 0, 0, 4, {}),
        # A late copy of the previous datagram is passed over; the echo itself counts.
        (answer_late, 4, 0, 0, {}),
        # The server ends the association: the message is lost and the association failed
        # (after its handshake, which counts as completed).
        (hang_up, 0, 2, 0, {"closed by the server": 2}),
    ],
    ids=["swallowed", "wrong", "late-copies", "hang-up"],
)  # fmt: skip
def test_an_echo_counts_only_when_the_datagram_itself_comes_back(
    handler: Any, echoed: int, lost: int, mismatched: int, after_handshake: dict[str, int]
) -> None:
    result, took = run_against(handler, handshakes=2, concurrency=1, messages=2,
                               echo_timeout=0.2)
    assert result.completed == 2
    assert (result.messages_echoed, result.messages_lost) == (echoed, lost)
    assert result.messages_mismatched == mismatched
    assert len(result.echo_latencies) == echoed
    assert result.failures == Counter() and result.failed == 0
    assert result.association_failures == Counter(after_handshake)
    assert result.messages_sent == echoed + lost + mismatched
    # Each message not echoed waits out its echo timeout, once.
    assert took < 0.2 * (lost + mismatched) + 2.0


async def chatter(session: aio.ServerSession) -> None:
    """No echo, but a status datagram every 50 ms for 3 s after each datagram received."""
    async for _ in session:
        for _ in range(60):
            session.send(b"status")
            await asyncio.sleep(0.05)


def test_the_echo_timeout_counts_from_the_send_whatever_else_arrives() -> None:
    """A server that sends other datagrams more often than the echo timeout does not keep the
    wait going: each message is given up `echo_timeout` after its send (it waited for the
    server to fall silent before), and counted as mismatched since data came back."""
    result, took = run_against(chatter, handshakes=1, concurrency=1, messages=1,
                               echo_timeout=0.3)
    assert result.completed == 1
    assert (result.messages_sent, result.messages_echoed) == (1, 0)
    assert (result.messages_lost, result.messages_mismatched) == (0, 1)
    assert took < 2.0


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    ("resume", "cache", "offered", "resumed"),
    [
        (True, 100, 8, 8),  # each lane: one full handshake, then resumptions
        # A server that keeps no session sends no session_id: nothing to offer, all full.
        (True, 0, 0, 0),
        (False, 100, 0, 0),
    ],
    ids=["resume", "no-server-cache", "no-resume"],
)
def test_resume_offers_each_association_the_session_of_the_one_before(
    caplog: pytest.LogCaptureFixture, resume: bool, cache: int, offered: int, resumed: int
) -> None:
    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        result, _ = run_against(echo, server=server_config(session_cache_size=cache),
                                handshakes=10, concurrency=2, messages=1, resume=resume)
    assert (result.completed, result.failed, result.messages_echoed) == (10, 0, 10)
    assert (result.sessions_offered, result.resumed) == (offered, resumed)
    # A full handshake of a --resume run without a session_id is counted, and said.
    assert result.no_session_id == (10 if resume and not cache else 0)
    assert result.no_extended_master_secret == 0
    told = "resumed: 0 (the server offered no session to resume: no session_id in its ServerHello)"
    assert (told in result.report("h:1", 2).splitlines()) == (resume and not cache)
    assert len(result.latencies) == 10 - resumed
    assert len(result.resumed_latencies) == resumed
    done = [r.getMessage() for r in caplog.records if "handshake complete" in r.getMessage()]
    assert len(done) == 10
    assert sum("(resumed)" in line for line in done) == resumed


def test_a_server_closing_during_the_handshake_fails_it() -> None:
    """A peer answering the ClientHello with a (plaintext) close_notify: the handshake fails at
    once, grouped under that alert as the core names it (AlertReceived, RFC 5246 §7.2.1)."""
    close_notify = bytes.fromhex("15fefd" "0000" "000000000000" "0002" "0100")

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LOCALHOST, 0))
            peer.setblocking(False)
            running = asyncio.get_running_loop()

            def answer() -> None:
                with contextlib.suppress(BlockingIOError):
                    _, address = peer.recvfrom(2048)
                    peer.sendto(close_notify, address)

            running.add_reader(peer.fileno(), answer)
            try:
                load = spec(handshakes=2, concurrency=1, port=peer.getsockname()[1])
                started = time.monotonic()
                result = await run_engine(load)
                assert time.monotonic() - started < 2.0
            finally:
                running.remove_reader(peer.fileno())
        assert result.failures == Counter({"received alert close_notify": 2})
        assert result.completed == 0

    run(main())


def test_a_server_closing_during_an_echo_ends_the_wait_at_once() -> None:
    result, took = run_against(hang_up, handshakes=2, concurrency=1, messages=3,
                               echo_timeout=10.0)
    assert took < 3.0
    assert (result.messages_sent, result.messages_lost) == (2, 2)
    assert result.association_failures == Counter({"closed by the server": 2})


class EchoThenHangUp(aio.DatagramHandler):
    """Echoes a datagram and closes at once: echo and close_notify in one datagram."""

    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        session.send(data)
        session.close()


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_server_closing_between_two_echoes_fails_the_association_and_the_run_goes_on(
    loop_choice: str,
) -> None:
    """The server echoes the first datagram and closes the association (its close_notify
    right behind the echo; uvloop reads both before the engine sends again): the next message
    is not sent, the association failed after its handshake ("closed by the server"), and the
    run goes on to its report."""

    async def main() -> LoadResult:
        async with await aio.serve(EchoThenHangUp(), LOCALHOST, 0, server_config()) as server:
            return await run_engine(spec(port=server.address[1], handshakes=3, concurrency=1,
                                         messages=2, echo_timeout=1.0))

    result = loop.run(main(), loop_choice)
    assert (result.completed, result.failed) == (3, 0)
    assert result.messages_echoed == 3
    assert result.messages_sent == result.messages_echoed + result.messages_lost
    assert result.association_failures == Counter({"closed by the server": 3})


def test_a_socket_that_cannot_reach_the_server_is_a_failure_by_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`connect` refused by the system (here: a socket class that raises, as for an
    unreachable network): counted as a socket error, and the socket closed."""
    made: list[socket.socket] = []

    class Unreachable(socket.socket):
        def connect(self, address: Any) -> None:
            made.append(self)
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(perf_engine.socket, "socket", Unreachable)

    async def main() -> None:
        result = await run_engine(spec(handshakes=3, concurrency=1))
        assert result.failures == Counter({"socket error: Network is unreachable": 3})
        assert result.started == 3 and result.datagrams_sent == 0

    run(main())
    assert len(made) == 3 and all(sock.fileno() == -1 for sock in made)


def test_a_timed_run_starts_no_association_after_its_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Progress, reported every 20 ms, shows the three lanes busy until the run winds down."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.02)
    seen: list[LoadProgress] = []

    result, _ = run_against(echo, progress=seen.append, handshakes=None, duration=0.5,
                            concurrency=3)
    assert result.completed > 0 and result.failed == 0 and result.unfinished == 0
    assert result.completed == result.started
    assert 0 < result.completed_in_window <= result.completed
    assert result.window == 0.5 <= result.elapsed < 2.0
    assert result.rate == result.completed_in_window / 0.5
    assert len(seen) >= 5 and {p.in_flight for p in seen[:-2]} == {3}
    assert [p.completed for p in seen] == sorted(p.completed for p in seen)


def progress_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("the progress callback raised")]


def test_a_progress_callback_that_raises_is_logged_once_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its exception ended the reporting task, unretrieved: progress stopped without a word
    (probe CE). It is logged once, with the exception, and the run completes without progress
    (its figures are what it is for)."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.02)
    calls: list[LoadProgress] = []

    def failing(progress: LoadProgress) -> None:
        calls.append(progress)
        raise ZeroDivisionError("division by zero")

    result, _ = run_against(echo, progress=failing, handshakes=None, duration=0.3, concurrency=2)
    assert result.completed > 0 and result.failed == 0
    assert len(calls) == 1
    [record] = progress_failures(caplog)
    assert record.name == "iotdtls.perf.engine" and record.levelno == logging.ERROR
    assert record.getMessage() == (
        "the progress callback raised: the run goes on without progress reports"
    )
    assert record.exc_info is not None and isinstance(record.exc_info[1], ZeroDivisionError)


def test_the_progress_of_generator_processes_goes_to_a_failing_callback_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The parent's reporter of a run over several processes (`_report_children`) does the
    same: logged once, and it ends (the run goes on)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.01)
    calls: list[LoadProgress] = []

    def failing(progress: LoadProgress) -> None:
        calls.append(progress)
        raise RuntimeError("broken display")

    latest = {0: LoadProgress(1, 0, 2), 1: LoadProgress(3, 1, 1)}
    asyncio.run(asyncio.wait_for(perf._report_children(latest, failing), 5.0))
    assert calls == [LoadProgress(4, 1, 3)]
    [record] = progress_failures(caplog)
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_run_over_processes_without_a_progress_callback_reports_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a progress callback the parent starts no reporter: none calls None at its
    first report and logs it as a failing callback (M20: `_wait_children` 3, a reporter
    made anyway, logged an ERROR in every run over processes longer than
    `PROGRESS_INTERVAL`)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.01)
    with server_on_a_thread() as server:
        load = spec(handshakes=4, concurrency=2, port=server.address[1])
        result = run_load(load, processes=2, loop_choice="asyncio")
    assert result.completed == 4
    assert progress_failures(caplog) == []


def test_a_generator_process_whose_parent_has_gone_sends_its_progress_to_nobody_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its pipe closed: the send fails, and is not logged as a failing callback (the process
    stops once it sees the pipe closed)."""
    parent, child = multiprocessing.Pipe()
    parent.close()
    try:
        perf._send_progress(child, LoadProgress(1, 0, 0))
    finally:
        child.close()
    assert progress_failures(caplog) == []


def test_a_stopped_run_counts_what_was_in_progress_as_unfinished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that never answers: stop ends the run, the handshakes in progress are neither
    completed nor failed; progress was reported on the way, each a snapshot of the engine."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.05)
    seen: list[LoadProgress] = []

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((LOCALHOST, 0))
            load = spec(handshakes=None, duration=30.0, concurrency=3,
                        port=silent.getsockname()[1])
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.3, stop.set)
            result = await run_engine(load, seen.append, stop)
            reported = len(seen)
            await asyncio.sleep(0.2)
            assert len(seen) == reported  # the reporter stopped with the run
        assert (result.started, result.unfinished, result.completed, result.failed) == (3, 3, 0, 0)
        assert result.window == result.elapsed < 2.0
        assert result.datagrams_sent >= 3

    run(main())
    assert len(seen) >= 3
    assert set(seen) == {LoadProgress(completed=0, failed=0, in_flight=3)}


def test_a_stopped_run_counts_the_echoes_it_was_waiting_for_as_unanswered() -> None:
    """Stopped while each lane waits for an echo (of a server that echoes nothing): those
    messages are neither echoed nor lost but unanswered at the stop, and the figures add up."""

    async def main() -> LoadResult:
        async with await aio.serve(swallow, LOCALHOST, 0, server_config()) as server:
            load = spec(port=server.address[1], handshakes=None, duration=30.0, concurrency=3,
                        messages=2, echo_timeout=30.0)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, stop.set)
            return await run_engine(load, None, stop)

    result = loop.run(main(), "asyncio")
    assert (result.completed, result.unfinished) == (3, 0)
    assert (result.messages_sent, result.messages_echoed, result.messages_lost) == (3, 0, 0)
    assert result.messages_unanswered == 3
    assert result.summary()["messages"]["unanswered"] == 3
    assert "messages: 3 sent, 0 echoed, 0 lost, 3 unanswered at stop; " in result.report("h:1", 3)


@contextlib.contextmanager
def server_on_a_thread(
    handler: aio.Handler = echo, config: ServerConfig | None = None
) -> Iterator[aio.DtlsServer]:
    """A server (echoing; `config`, by default the tests' own) on its own loop in another
    thread (`run_load` runs a loop of its own on this one)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(
            aio.serve(handler, LOCALHOST, 0, config or server_config()), loop
        ).result(10.0)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(10.0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        loop.close()


def record_engine_loops(path: str) -> None:
    """A generator process's initializer: each run of the engine there appends the name of
    the loop it runs on to the file `path`."""
    real = perf.run_engine

    async def recorded(*args: Any, **kwargs: Any) -> LoadResult:
        with open(path, "a") as loops:
            loops.write(loop.loop_name(asyncio.get_running_loop()) + "\n")
        return await real(*args, **kwargs)

    pytest.MonkeyPatch().setattr(perf, "run_engine", recorded)  # its process ends


def test_run_load_here_and_over_two_processes(tmp_path: Path) -> None:
    """`run_load` in this process, then split over two generator processes whose results are
    merged (their summed progress: see the signal tests, whose runs last long enough), each
    on the loop asked for (the merged result names the parent's)."""
    loops = tmp_path / "loops"
    with server_on_a_thread() as server:
        load = spec(handshakes=6, concurrency=3, messages=1, port=server.address[1])
        here = run_load(load)  # on uvloop (the `fast` extra is installed here)
        split = run_load(dataclasses.replace(load, handshakes=41), processes=2,
                         loop_choice="asyncio",
                         initializer=functools.partial(record_engine_loops, str(loops)))
        with pytest.raises(ConfigError, match="processes must be from 1 to the concurrency"):
            run_load(load, processes=4)
        stats = server.stats
    assert (here.completed, here.messages_echoed, here.processes, here.loop) == (6, 6, 1, "uvloop")
    # 21 and 20 handshakes: the two processes' results both count, each once.
    assert (split.started, split.completed, split.messages_echoed) == (41, 41, 41)
    assert split.processes == 2 and split.loop == "asyncio"
    assert loops.read_text().split() == ["asyncio", "asyncio"]
    assert len(split.latencies) == 41
    assert stats.handshakes_completed == 47


def test_sigterm_stays_handled_while_the_generators_are_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generators are reaped (`reap`: up to 5 s for one that does not end by itself) with
    the run's SIGTERM handler still in place: a service manager's stop then is one more stop,
    not the end of the parent without its report (M17: `_wait_children` 22, its SIGINT
    handler's `_stop_on_signals` given the default signals, removed SIGTERM's there, leaving
    SIGTERM's default action, death, for the reaps)."""
    during_reaps: list[Any] = []
    real_reap = perf.reap

    def reap(process: multiprocessing.process.BaseProcess, timeout: float) -> bool:
        during_reaps.append(signal.getsignal(signal.SIGTERM))
        return real_reap(process, timeout)

    monkeypatch.setattr(perf, "reap", reap)
    with server_on_a_thread() as server:
        load = spec(handshakes=4, concurrency=2, port=server.address[1])
        result = run_load(load, processes=2, loop_choice="asyncio")
    assert result.completed == 4 and len(during_reaps) == 2
    assert signal.SIG_DFL not in during_reaps, during_reaps


def failing_initializer() -> None:
    raise RuntimeError("no set-up here")


def test_a_generator_process_that_fails_ends_the_run_with_its_error() -> None:
    """A generator process whose start fails (its initializer raises) says why on its pipe:
    the run's error is that line, not "ended unexpectedly"."""
    with server_on_a_thread() as server:
        load = spec(handshakes=4, concurrency=2, port=server.address[1])
        with pytest.raises(ChildProcessError) as failed:
            run_load(load, processes=2, loop_choice="asyncio", initializer=failing_initializer)
    assert str(failed.value) == "load generator process 0: RuntimeError: no set-up here"
    assert multiprocessing.active_children() == []


def failing_after_a_while() -> None:
    """A generator process's initializer that fails two seconds in (its parent gone by then,
    in the test below)."""
    time.sleep(2.0)
    raise RuntimeError("no set-up here")


@pytest.mark.parametrize("initializer", ["None", "failing_after_a_while"],
                         ids=["stops", "fails"])
def test_generator_processes_whose_parent_has_gone_end_without_a_traceback(
    initializer: str,
) -> None:
    """The parent gone a second into a run (nobody reads the pipes any more): each generator
    process sees its pipe's end and stops, or fails to start, and cannot send its result (or
    its failure); that is no error of its own, and nothing is written on the stderr it shares
    with the parent."""
    program = (
        "import os, threading\n"
        "from iotdtls.perf import run_load\n"
        "from tests.test_perf import failing_after_a_while, server_on_a_thread, spec\n"
        "with server_on_a_thread() as server:\n"
        "    threading.Timer(1.0, os._exit, (0,)).start()\n"
        "    run_load(spec(handshakes=None, duration=30.0, concurrency=2,\n"
        "                  port=server.address[1]),\n"
        f"             processes=2, loop_choice='asyncio', initializer={initializer})\n"
    )
    # Its output ends when the generator processes, which hold stderr too, have ended.
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60.0, check=False)
    assert done.returncode == 0
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("processes", "sig"),
    [(1, signal.SIGINT), (1, signal.SIGTERM), (2, signal.SIGINT), (2, signal.SIGTERM)],
)
def test_a_signal_ends_a_run_early_with_the_figures_so_far(
    monkeypatch: pytest.MonkeyPatch, processes: int, sig: signal.Signals
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM, sent here once progress shows a completed handshake, ends
    a 10-second run at once; what was done is counted, what was in progress is unfinished.
    Over two processes the progress is the sum of theirs (each reports once a second)."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.05)
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    missed: list[int] = []  # the signal reaching no handler of the run's
    previous = signal.signal(sig, lambda number, frame: missed.append(number))
    seen: list[LoadProgress] = []

    def note(progress: LoadProgress) -> None:
        if progress.completed and not seen:
            os.kill(os.getpid(), sig)
        if progress.completed:
            seen.append(progress)

    try:
        with server_on_a_thread() as server:
            load = spec(handshakes=None, duration=10.0, concurrency=4, messages=1,
                        port=server.address[1])
            started = time.monotonic()
            result = run_load(load, processes=processes, loop_choice="asyncio", progress=note)
            took = time.monotonic() - started
    finally:
        signal.signal(sig, previous)
    assert missed == []
    assert took < 15.0 and result.elapsed < 10.0  # ended by the signal, not by its duration
    assert seen[0].completed > 0 and all(p.in_flight <= 4 and p.failed == 0 for p in seen)
    assert result.completed >= seen[0].completed and result.failed == 0
    assert result.started == result.completed + result.unfinished
    assert result.unfinished <= 4
    assert result.window == result.elapsed
    assert result.processes == processes


def test_a_run_stopped_before_it_began_starts_nothing() -> None:
    """A generator process that finds a SIGTERM held while it started sets `stop` before
    `run_engine`: its lanes started their first handshakes all the same (each cut short, the
    run's status 1 for handshakes "unfinished", probe BK F1). Now nothing is started."""
    port = free_udp_port()
    load = spec(handshakes=None, duration=5.0, concurrency=3, port=port)

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        result = await run_engine(load, None, stop)
        assert (result.started, result.unfinished, result.datagrams_sent) == (0, 0, 0)

    run(main())


def test_a_ctrl_c_while_the_generators_spawn_ends_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a probe: a Ctrl-C (SIGINT to this process) that arrived while the generator
    processes were being spawned was dropped (SIGINT was ignored in the parent meanwhile) and
    the run went on to its end. Now it is held and delivered once they are: the run ends
    with KeyboardInterrupt (as a Ctrl-C just before or after the spawns), no process left."""
    real_spawn = perf.spawn
    spawned: list[Any] = []

    def spawn_with_ctrl_c(*args: Any) -> Any:
        if not spawned:
            os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, in this instant
        spawned.append(real_spawn(*args))
        return spawned[-1]

    monkeypatch.setattr(perf, "spawn", spawn_with_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with server_on_a_thread() as server:
        load = spec(handshakes=None, duration=3.0, concurrency=2, messages=1,
                    port=server.address[1])
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_load(load, processes=2, loop_choice="asyncio")
        assert time.monotonic() - started < 2.5  # not the run's 3 s
    assert len(spawned) == 2
    for process, _ in spawned:
        assert not process.is_alive() and process.exitcode is not None
    assert multiprocessing.active_children() == []


def on_generator_0(
    done: list[int],
    act: Callable[[int], None],
    reported: Callable[[], bool] = lambda: True,
) -> Callable[[LoadProgress], None]:
    """A progress callback that, once progress shows a completed handshake (and `reported()`
    holds), does `act` to the pid of generator process 0 (iotdtls-perf-0), once, noting the
    pid in `done`."""

    def once(progress: LoadProgress) -> None:
        children = multiprocessing.active_children()
        if progress.completed and not done and children and reported():
            victim = min(children, key=lambda child: child.name)
            done.append(victim.pid or 0)
            act(victim.pid or 0)

    return once


def assert_counted_whole(partial: LoadResult) -> None:
    """The figures of a process stopped at once count each handshake started: completed,
    failed (which a loaded machine can give) or unfinished."""
    assert partial.completed >= 1
    assert partial.started == partial.completed + partial.failed + partial.unfinished, (
        partial.failures
    )


def generators_reporting(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many generator processes have reported their progress so far (read from the
    parent's own record of it): one stopped before its first report would be under
    `perf.START_LIMIT`, not `SILENCE_LIMIT`."""
    records: list[dict[int, LoadProgress]] = []
    real = perf._report_children

    def report(latest: dict[int, LoadProgress], progress: Any) -> Any:
        records.append(latest)
        return real(latest, progress)

    monkeypatch.setattr(perf, "_report_children", report)
    return lambda: len(records[0]) if records else 0


def test_a_generator_that_hangs_during_the_run_ends_it_with_the_others_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A generator process stopped (SIGSTOP) during the run made `perf -p 2 -d 3` run for
    ever: only a hang after the stop was bounded (probe AU). Each reports its progress every
    second: one that sends nothing for SILENCE_LIMIT seconds has hung, and the run ends as
    when one dies, the other's figures kept (it is killed, so nothing waits for it)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    monkeypatch.setattr(perf, "SILENCE_LIMIT", 3.0)  # the generators report every 1 s
    stopped: list[int] = []
    reporting = generators_reporting(monkeypatch)
    stop_one = on_generator_0(stopped, lambda pid: os.kill(pid, signal.SIGSTOP),
                              reported=lambda: reporting() == 2)
    ended_by_themselves: list[bool] = []
    real_reap = perf.reap

    def reap(process: multiprocessing.process.BaseProcess, timeout: float) -> bool:
        ended_by_themselves.append(real_reap(process, timeout))
        return ended_by_themselves[-1]

    monkeypatch.setattr(perf, "reap", reap)

    with server_on_a_thread() as server:
        load = spec(handshakes=None, duration=60.0, concurrency=4, port=server.address[1])
        started = time.monotonic()
        try:
            with pytest.raises(ChildProcessError) as failed:
                run_load(load, processes=2, loop_choice="asyncio", progress=stop_one)
        finally:
            for pid in stopped:  # not left stopped whatever happened
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        took = time.monotonic() - started
    assert str(failed.value) == (
        "load generator process 0: sent nothing for 3 s: stopped or hung"
    )
    assert stopped and took < 15.0
    # The watchdog killed the hung process at once: the run's end found both ended, without
    # waiting `reap`'s 5 s for the stopped one (M13: `_hung_children` given no children).
    assert ended_by_themselves == [True, True]
    assert multiprocessing.active_children() == []
    assert isinstance(failed.value, perf.GeneratorProcessFailed)
    partial = failed.value.result
    assert (partial.processes, partial.loop) == (1, "asyncio")
    assert_counted_whole(partial)


def slow_to_start() -> None:
    """A generator process's initializer that takes 2.5 s (many processes importing at once
    on a small machine)."""
    time.sleep(2.5)


def test_a_generator_slow_to_start_is_not_taken_for_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    """The silence limit counts from a generator's last report; before its first, its imports
    and initializer have `START_LIMIT` (60 s): counted from its spawn, a start slower than
    `SILENCE_LIMIT` failed the run, "sent nothing for 10 s: stopped or hung", on a machine
    that only started many processes slowly."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    monkeypatch.setattr(perf, "SILENCE_LIMIT", 1.0)
    with server_on_a_thread() as server:
        load = spec(handshakes=4, concurrency=2, messages=1, port=server.address[1])
        result = run_load(load, processes=2, loop_choice="asyncio", initializer=slow_to_start)
    assert (result.processes, result.completed) == (2, 4)


def test_a_generator_that_never_reports_ends_the_run_at_the_start_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A generator that never sends a word from its spawn on is taken for hung after
    `START_LIMIT` seconds, killed, and the run fails naming it (the other, spawned a little
    later, is told to stop: STOP_GRACE, then `reap`'s 5 s)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    monkeypatch.setattr(perf, "START_LIMIT", 2.0)
    monkeypatch.setattr(perf, "STOP_GRACE", 0.5)
    real_spawn = perf.spawn
    monkeypatch.setattr(perf, "spawn", lambda target, args, name: real_spawn(
        _silent_generator_for_good, args, name))
    started = time.monotonic()
    with pytest.raises(ChildProcessError) as failed:
        run_load(spec(handshakes=None, duration=30.0, concurrency=2), processes=2,
                 loop_choice="asyncio")
    assert str(failed.value) == (
        "load generator process 0: sent nothing in the 2 s from its start: stopped or hung"
    )
    assert time.monotonic() - started < 16.0  # not the 60 s of START_LIMIT unpatched
    assert multiprocessing.active_children() == []


class StuckProcess:
    """A generator process as `_hung_children` sees it: `kill` notes the call, or raises
    `error` (one already gone: ProcessLookupError)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.error = error
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("first", ["done", "talking"])
def test_the_watchdog_looks_at_every_generator_each_time(
    monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """`_hung_children` in this process, on four generators: the first done or still talking,
    then one silent for `SILENCE_LIMIT` since its last report, one silent for `START_LIMIT`
    since its start without a report (its kill raising: it had just ended), and one silent for
    less than `START_LIMIT` without a report. The two hung ones fail, each naming its limit,
    and are killed; the others go on (M17: `_hung_children` 5 and 16 ended the look at the
    first generator done or well, 6, 13, 19, 20 missed one, 11 and 15 gave no reason)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.01)
    monkeypatch.setattr(perf, "SILENCE_LIMIT", 5.0)
    monkeypatch.setattr(perf, "START_LIMIT", 20.0)
    processes = [StuckProcess(), StuckProcess(), StuckProcess(ProcessLookupError()),
                 StuckProcess()]
    children: Any = [(process, object()) for process in processes]
    progress = LoadProgress(completed=1, failed=0, in_flight=1)

    async def main() -> list[asyncio.Future[LoadResult]]:
        now = asyncio.get_running_loop().time()
        results: list[asyncio.Future[LoadResult]] = [
            asyncio.get_running_loop().create_future() for _ in processes
        ]
        if first == "done":
            results[0].set_result(LoadResult(elapsed=1.0, window=1.0, started=1, completed=1))
        heard = {0: now, 1: now - 6.0, 2: now - 21.0, 3: now - 10.0}
        reported = {0: progress, 1: progress}
        watchdog = asyncio.ensure_future(perf._hung_children(children, heard, reported, results))
        await asyncio.sleep(0.2)
        assert not watchdog.done()
        watchdog.cancel()
        return results

    results = asyncio.run(main())
    assert [process.killed for process in processes] == [False, True, True, False]
    assert results[0].done() == (first == "done") and not results[3].done()
    assert [str(results[i].exception()) for i in (1, 2)] == [
        "load generator process 1: sent nothing for 5 s: stopped or hung",
        "load generator process 2: sent nothing in the 20 s from its start: stopped or hung",
    ]


def test_a_generator_process_that_dies_ends_the_run_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One of two generator processes killed once progress shows: the run raises a
    ChildProcessError naming it, at once, and the other process is stopped and reaped; the
    error holds that other's figures (`GeneratorProcessFailed.result`), as a stop would."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    killed: list[int] = []
    kill_one = on_generator_0(killed, lambda pid: os.kill(pid, signal.SIGKILL))

    with server_on_a_thread() as server:
        load = spec(handshakes=None, duration=10.0, concurrency=4, port=server.address[1])
        started = time.monotonic()
        with pytest.raises(ChildProcessError) as failed:
            run_load(load, processes=2, loop_choice="asyncio", progress=kill_one)
        took = time.monotonic() - started
    assert str(failed.value) == "load generator process 0: ended unexpectedly: killed by SIGKILL"
    assert killed and took < 8.0
    assert multiprocessing.active_children() == []
    assert isinstance(failed.value, perf.GeneratorProcessFailed)
    partial = failed.value.result
    assert (partial.processes, partial.loop) == (1, "asyncio")
    assert partial.address == f"{LOCALHOST}:{server.address[1]}"
    assert_counted_whole(partial)


@pytest.mark.parametrize(
    ("soft", "hard", "raised_to"),
    [
        (100, 200, 114),  # 50 sockets and the spare files: lifted to what is needed
        (1000, 2000, None),  # enough already
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, None),
        (100, resource.RLIM_INFINITY, 114),
        (114, 200, None),  # exactly enough
        (100, 114, 114),  # the hard limit is exactly enough
    ],
)
def test_the_open_files_limit_is_lifted_to_what_the_concurrency_needs(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, raised_to: int | None
) -> None:
    lifted: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(perf.resource, "getrlimit", lambda which: (soft, hard))
    monkeypatch.setattr(perf.resource, "setrlimit",
                        lambda which, limits: lifted.append((which, limits)))
    perf._raise_open_files_limit(50)
    expected = [] if raised_to is None else [(resource.RLIMIT_NOFILE, (raised_to, hard))]
    assert lifted == expected


def test_a_concurrency_past_the_hard_open_files_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(perf.resource, "getrlimit", lambda which: (100, 113))
    with pytest.raises(ConfigError) as refused:
        perf._raise_open_files_limit(50)
    assert str(refused.value) == (
        "concurrency 50 needs 114 open files, the limit is 113: "
        "lower --concurrency, use --processes, or raise `ulimit -n`"
    )


def test_a_count_run_needs_files_for_its_handshakes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrency of 100000 for one handshake runs one association: it needs one socket and
    the spare files, not 100064 (nor 100000 lanes)."""
    lifted: list[Any] = []
    monkeypatch.setattr(perf.resource, "getrlimit", lambda which: (100, 113))
    monkeypatch.setattr(perf.resource, "setrlimit", lambda *limits: lifted.append(limits))
    with server_on_a_thread() as server:
        result = run_load(spec(concurrency=100000, handshakes=1, port=server.address[1]),
                          loop_choice="asyncio")
    assert (result.completed, result.failed) == (1, 0)
    assert lifted == []
    assert perf.lanes(spec(concurrency=100000, handshakes=1)) == 1
    assert perf.lanes(spec(concurrency=3, handshakes=10)) == 3
    assert perf.lanes(spec(concurrency=7, handshakes=None, duration=1.0)) == 7


# -- `iotdtls perf` in this process -------------------------------------------------------------


def perf_command(port: int, *args: str, credentials: tuple[str, ...] = tuple(CREDENTIALS)) -> int:
    return cli.main(["perf", f"{LOCALHOST}:{port}", *credentials, "--loop", "asyncio", *args])


def test_the_perf_command_reports_as_json_and_fails_when_a_handshake_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with server_on_a_thread() as server:
        port = server.address[1]
        ok = perf_command(port, "-n", "4", "-c", "2", "-m", "2", "--size", "16", "--json", "-q")
        good = capsys.readouterr()
        wrong_key = ("--psk-identity", CLIENT_IDENTITY, "--psk", WRONG_PSK_HEX)
        wrong = perf_command(port, "-n", "1", "-c", "1", "-q", credentials=wrong_key)
        bad = capsys.readouterr()
    assert ok == 0 and good.err == ""
    summary = json.loads(good.out)
    assert summary["concurrency"] == 2 and summary["requested"]["handshakes"] == 4
    assert summary["requested"]["messages"] == 2 and summary["requested"]["message_size"] == 16
    assert summary["handshakes"]["completed"] == 4 and summary["handshakes"]["failed"] == 0
    assert summary["messages"]["echoed"] == 8
    assert summary["datagrams"]["bytes_sent"] > 0
    assert wrong == 1 and bad.err == ""
    assert bad.out.splitlines()[0].startswith(f"iotdtls perf {LOCALHOST}:{port}: ")
    assert "failures: received alert decrypt_error 1" in bad.out.splitlines()


@pytest.fixture
def specs_run(monkeypatch: pytest.MonkeyPatch) -> list[LoadSpec]:
    """Every `LoadSpec` the perf command hands to `run_load` (which still runs it)."""
    specs: list[LoadSpec] = []
    real_run_load = perf_cli.run_load

    def spy(spec: LoadSpec, **kwargs: Any) -> LoadResult:
        specs.append(spec)
        return real_run_load(spec, **kwargs)

    monkeypatch.setattr(perf_cli, "run_load", spy)
    return specs


def test_the_perf_command_runs_ten_seconds_unless_told_and_shows_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], specs_run: list[LoadSpec]
) -> None:
    """Without --duration or --handshakes a run lasts DEFAULT_DURATION (shortened here); the
    progress lines go to stderr, the report to stdout; --timeout is the handshake deadline."""
    monkeypatch.setattr(perf_engine, "PROGRESS_INTERVAL", 0.1)
    monkeypatch.setattr(perf_cli, "DEFAULT_DURATION", 0.5)
    with server_on_a_thread() as server:
        status = perf_command(server.address[1], "-c", "2", "--timeout", "7", "--echo-timeout",
                              "0.5")
    out, err = capsys.readouterr()
    assert status == 0
    (load,) = specs_run
    assert (load.duration, load.handshakes, load.concurrency, load.resume) == (0.5, None, 2, False)
    assert (load.messages, load.message_size, load.echo_timeout) == (0, 64, 0.5)
    assert isinstance(load.config, ClientConfig) and load.config.handshake_timeout == 7.0
    progress = err.splitlines()
    assert progress and all(
        re.fullmatch(r" +\d+\.\d s  \d+ handshakes, 0 failed, [0-2] in flight", line)
        for line in progress
    ), progress
    assert out.startswith(f"iotdtls perf {LOCALHOST}:{server.address[1]}: ")
    assert "concurrency 2, 1 process (asyncio)" in out


def test_the_perf_report_gives_the_concurrency_used(capsys: pytest.CaptureFixture[str]) -> None:
    """`perf -n 1` runs one association at a time, whatever -c (10 by default): the report
    said "concurrency 10"; `-n 5 -c 2` uses 2."""
    with server_on_a_thread() as server:
        for flags, used in [(("-n", "1"), 1), (("-n", "5", "-c", "2"), 2), (("-n", "3"), 3)]:
            assert perf_command(server.address[1], *flags, "-q") == 0
            head = capsys.readouterr().out.splitlines()[0]
            assert f", concurrency {used}, 1 process " in head, head


def test_the_perf_command_builds_the_configuration_again_in_each_process(
    capsys: pytest.CaptureFixture[str], specs_run: list[LoadSpec]
) -> None:
    with server_on_a_thread() as server:
        status = perf_command(server.address[1], "-n", "4", "-c", "2", "-p", "2", "-q")
    out, _ = capsys.readouterr()
    assert status == 0
    (load,) = specs_run
    assert callable(load.config)
    built = load.config()
    assert isinstance(built, ClientConfig) and built.psk_identity == CLIENT_IDENTITY.encode()
    assert "handshakes: 4 completed, 0 failed" in out
    assert "2 processes" in out


def test_the_perf_command_fails_when_an_association_fails_after_its_handshake(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with server_on_a_thread(hang_up) as server:
        status = perf_command(server.address[1], "-n", "2", "-c", "1", "-m", "1", "-q",
                              "--echo-timeout", "0.5")
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert "handshakes: 2 completed, 0 failed; " in "\n".join(lines)
    assert "failures: none; after the handshake: closed by the server 2" in lines


def perf_text_and_json_failing(
    handler: Any, *flags: str, capsys: pytest.CaptureFixture[str]
) -> tuple[list[str], Any]:
    """Two handshakes, one at a time, against a server on a thread running `handler`, each
    message's echo awaited 0.2 s: the text report's lines and the JSON summary, each run
    asserted to exit with status 1."""
    with server_on_a_thread(handler) as server:
        args = ("-n", "2", "-c", "1", *flags, "-q", "--echo-timeout", "0.2")
        text = perf_command(server.address[1], *args)
        lines = capsys.readouterr().out.splitlines()
        as_json = perf_command(server.address[1], *args, "--json")
        summary = json.loads(capsys.readouterr().out)
    assert text == as_json == 1
    return lines, summary


def test_the_perf_command_fails_when_an_echo_is_lost(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that does not echo (as `openssl s_server`): every handshake completes, every
    message is lost, the round-trip time is none (null in JSON), and the status is 1."""
    lines, summary = perf_text_and_json_failing(swallow, "-m", "1", capsys=capsys)
    assert "handshakes: 2 completed, 0 failed; " in lines[1] and "failures: none" in lines
    assert any(line.startswith("messages: 2 sent, 0 echoed, 2 lost; ") and
               line.endswith("; rtt ms none") for line in lines), lines
    assert summary["messages"]["lost"] == 2
    assert summary["messages"]["rtt_ms"] == {"median": None, "p99": None, "max": None}


def test_the_perf_command_reports_mismatched_answers_apart_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server answering other bytes of the right length: the answers came, none an echo."""
    lines, summary = perf_text_and_json_failing(answer_wrongly, "-m", "2", capsys=capsys)
    assert any(line.startswith("messages: 4 sent, 0 echoed, 0 lost, 4 mismatched; ")
               for line in lines), lines
    assert (summary["messages"]["lost"], summary["messages"]["mismatched"]) == (0, 4)


def test_the_perf_command_resumes_sessions(
    capsys: pytest.CaptureFixture[str], specs_run: list[LoadSpec]
) -> None:
    with server_on_a_thread() as server:
        status = perf_command(server.address[1], "-n", "6", "-c", "2", "-q", "--resume")
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [load.resume for load in specs_run] == [True]
    assert "handshakes: 6 completed, 0 failed; " in lines[1]
    assert lines[2].startswith("latency ms: median ") and lines[2].endswith(" (full handshakes)")
    assert lines[3].startswith("resumed: 4 of 4 sessions offered; latency ms median ")


def test_the_perf_command_says_when_the_server_offered_no_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--resume against a server that keeps no sessions (no session_id in its ServerHello):
    the report says so instead of leaving the resumed line out."""
    with server_on_a_thread(config=server_config(session_cache_size=0)) as server:
        status = perf_command(server.address[1], "-n", "4", "-c", "2", "-q", "--resume")
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert "handshakes: 4 completed, 0 failed; " in lines[1]
    assert lines[3] == (
        "resumed: 0 (the server offered no session to resume: no session_id in its ServerHello)"
    )


# -- `iotdtls perf`: the flags' way to `run_load` (which is not run) ----------------------------

#: What the stubbed `run_load` returns: three handshakes, one after its deadline.
STUB_RESULT = LoadResult(elapsed=1.5, window=1.0, started=3, completed=3,
                         completed_in_window=2, latencies=[0.010, 0.012, 0.030])


@pytest.fixture
def stub_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[LoadSpec, dict[str, Any]]]:
    """Every run the perf command asks for, with its keyword arguments; none is run: a
    progress snapshot is shown (when there is a callback) and `STUB_RESULT` comes back."""
    runs: list[tuple[LoadSpec, dict[str, Any]]] = []

    def stub(spec: LoadSpec, **kwargs: Any) -> LoadResult:
        runs.append((spec, kwargs))
        if kwargs["progress"] is not None:
            kwargs["progress"](LoadProgress(completed=3, failed=1, in_flight=2))
        return STUB_RESULT

    monkeypatch.setattr(perf_cli, "run_load", stub)
    return runs


def test_the_perf_defaults(stub_runs: list[tuple[LoadSpec, dict[str, Any]]],
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["perf", "192.0.2.1:5684", *CREDENTIALS, "-q"]) == 0
    ((spec, kwargs),) = stub_runs
    assert (spec.host, spec.port, spec.concurrency) == ("192.0.2.1", 5684, 10)
    assert (spec.duration, spec.handshakes) == (perf_cli.DEFAULT_DURATION, None) == (10.0, None)
    assert (spec.messages, spec.message_size, spec.echo_timeout, spec.resume) == (0, 64, 2.0, False)
    assert isinstance(spec.config, ClientConfig) and spec.config.handshake_timeout == 10.0
    initializer = kwargs.pop("initializer")  # the logging of -v in every generator process
    assert (initializer.func, initializer.args, initializer.keywords) == (
        perf_cli.setup_logging, (False,), {"server": False})
    assert kwargs == {"processes": 1, "progress": None, "loop_choice": "auto"}


def test_the_perf_flags_reach_the_run(stub_runs: list[tuple[LoadSpec, dict[str, Any]]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["perf", "192.0.2.1:5684", *CREDENTIALS, "-c", "7", "-d", "0.25", "-m", "3",
                       "--size", "100", "--resume", "--timeout", "4", "--echo-timeout", "0.5",
                       "--loop", "asyncio", "--mtu", "600", "-q"])
    assert status == 0
    ((spec, kwargs),) = stub_runs
    assert (spec.concurrency, spec.duration, spec.handshakes) == (7, 0.25, None)
    assert isinstance(spec.duration, float)
    assert (spec.messages, spec.message_size, spec.echo_timeout, spec.resume) == (3, 100, 0.5, True)
    assert isinstance(spec.config, ClientConfig)
    assert (spec.config.handshake_timeout, spec.config.mtu) == (4.0, 600)
    assert kwargs["loop_choice"] == "asyncio"


def test_the_perf_host_reaches_each_processes_configuration(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], pki: Pki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In certificate mode the host is the name the server's certificate must carry: in this
    process's configuration and in the one each generator process builds again (-p)."""
    flags = ["--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt),
             "--key", str(pki.client_key), "-n", "2", "-q"]
    assert cli.main(["perf", "localhost:5684", *flags]) == 0
    assert cli.main(["perf", "localhost:5684", *flags, "-p", "2"]) == 0
    (here, _), (spread, kwargs) = stub_runs
    assert isinstance(here.config, ClientConfig) and here.config.server_name == "localhost"
    assert kwargs["processes"] == 2 and not isinstance(spread.config, ClientConfig)
    assert spread.config().server_name == "localhost"


def test_the_perf_cache_dir_reaches_the_run(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], pki: Pki, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--cache-dir: the store every association's handshake offers the server's chain from
    (in each generator process too: it pickles)."""
    flags = ["--cafile", str(pki.ca_crt), "-n", "2", "-q"]
    assert cli.main(["perf", "localhost:5684", *flags]) == 0
    assert cli.main(["perf", "localhost:5684", *flags, "--cache-dir", str(tmp_path)]) == 0
    (without, _), (cached, _) = stub_runs
    assert without.chain_cache is None
    assert isinstance(cached.chain_cache, ChainCache)
    assert cached.chain_cache.directory == tmp_path
    assert pickle.loads(pickle.dumps(cached.chain_cache)).directory == tmp_path


@pytest.mark.parametrize(
    ("flags", "largest"),
    [((), 1203), (("--mtu", "600"), 571), (("-p", "2", "-c", "2"), 1203)],
)
def test_a_perf_message_size_is_checked_against_the_mtu_before_the_run(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...], largest: int,
) -> None:
    """The largest --size is what one record carries in one datagram of --mtu bytes (less
    29: header, explicit nonce, tag): it runs; one byte more, or fewer than 4, is refused in
    one line naming --size and the largest, with the status of a usage error."""
    mtu = 600 if "--mtu" in flags else 1232
    command = ["perf", "192.0.2.1:5684", *CREDENTIALS, "-n", "3", "-m", "1", "-q", *flags]
    assert cli.main([*command, "--size", str(largest)]) == 0
    assert cli.main([*command, "--size", "4"]) == 0
    assert [spec.message_size for spec, _ in stub_runs] == [largest, 4]
    capsys.readouterr()
    for size in (largest + 1, 5000, 3):
        assert cli.main([*command, "--size", str(size)]) == 2
        assert capsys.readouterr().err == (
            f"iotdtls: error: --size must be from 4 to {largest} bytes (what one datagram of "
            f"--mtu {mtu} carries), got {size}\n"
        )
    assert len(stub_runs) == 2


def test_a_perf_target_link_local_without_its_interface_is_refused_up_front(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], capsys: pytest.CaptureFixture[str],
) -> None:
    """`perf '[fe80::1]:P'` ran and counted every handshake "socket error: Invalid argument"
    (the kernel needs the interface of a link-local address, RFC 4007 §11): it is refused in
    one line saying what to write, with the status of a usage error, as the client refuses it."""
    assert cli.main(["perf", "[fe80::1]:5684", *CREDENTIALS, "-n", "1", "-q"]) == 2
    assert capsys.readouterr().err == (
        "iotdtls: error: cannot reach [fe80::1]:5684: a link-local address needs %interface, "
        "as in [fe80::1%eth0]:5684\n"
    )
    assert stub_runs == []


def test_the_largest_perf_message_is_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with server_on_a_thread() as server:
        status = perf_command(server.address[1], "-n", "1", "-c", "1", "-m", "1", "-q",
                              "--mtu", "600", "--size", "571", "--json")
    assert status == 0
    assert json.loads(capsys.readouterr().out)["messages"]["echoed"] == 1


def test_the_perf_progress_lines_are_flushed_at_once(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stderr may be a pipe (buffered): each progress line is flushed as it is printed."""
    stderr = FlushedText()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert cli.main(["perf", "192.0.2.1:5684", *CREDENTIALS, "-n", "3"]) == 0
    assert callable(stub_runs[0][1]["progress"])
    assert re.fullmatch(r" +\d+\.\d s  3 handshakes, 1 failed, 2 in flight\n", stderr.flushed)


def test_the_perf_report_names_an_ipv6_server_in_brackets(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["perf", "[::1]:21080", *CREDENTIALS, "-n", "3", "-q"]) == 0
    assert stub_runs[0][0].host == "::1"
    assert capsys.readouterr().out.startswith("iotdtls perf [::1]:21080: 1.50 s, ")


#: What --json says of a run asked for with "-n 3" and the other flags' defaults.
STUB_REQUESTED = {
    "concurrency": 10, "duration_s": None, "handshakes": 3, "messages": 0, "message_size": 64,
    "processes": 1, "resume": False, "timeout_s": 10.0, "echo_timeout_s": 2.0,
}


@pytest.mark.parametrize(("flags", "requested", "concurrency"), [
    (["-n", "3"], STUB_REQUESTED, 3),
    (["-n", "3", "-c", "2", "-m", "5", "--size", "32", "-p", "2", "--resume", "--timeout", "3",
      "--echo-timeout", "0.5"],
     {**STUB_REQUESTED, "concurrency": 2, "messages": 5, "message_size": 32, "processes": 2,
      "resume": True, "timeout_s": 3.0, "echo_timeout_s": 0.5}, 2),
    (["-d", "2.5", "-c", "4"],
     {**STUB_REQUESTED, "concurrency": 4, "duration_s": 2.5, "handshakes": None}, 4),
    (["-c", "4"], {**STUB_REQUESTED, "concurrency": 4, "duration_s": 10.0, "handshakes": None}, 4),
])
def test_the_perf_json_report_is_the_run_asked_for_and_the_summary_indented(
    stub_runs: list[tuple[LoadSpec, dict[str, Any]]], capsys: pytest.CaptureFixture[str],
    flags: list[str], requested: dict[str, Any], concurrency: int,
) -> None:
    """Probe BQ, finding 6: the JSON had neither the concurrency (the text report's header
    gives it: at most -n) nor what the run was asked for (-c, -d or -n, -m, --size, -p), so
    its rates and latencies could not be read alone. It now begins with them."""
    assert cli.main(["perf", "192.0.2.1:5684", *CREDENTIALS, *flags, "-q", "--json"]) == 0
    expected = {"requested": requested, "concurrency": concurrency, **STUB_RESULT.summary()}
    assert capsys.readouterr().out == json.dumps(expected, indent=2) + "\n"


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (STUB_RESULT, 0),
        (LoadResult(started=1), 1),  # nothing completed
        (dataclasses.replace(STUB_RESULT, failures=Counter({"handshake timeout": 1})), 1),
        (dataclasses.replace(STUB_RESULT, association_failures=Counter({"closed": 1})), 1),
        (dataclasses.replace(STUB_RESULT, messages_sent=3, messages_echoed=2,
                             messages_lost=1), 1),  # an echo lost
        # Stopped (Ctrl-C, SIGTERM) with a handshake or an echo cut short: not everything
        # completed, not every echo came back.
        (dataclasses.replace(STUB_RESULT, started=4, unfinished=1), 1),
        (dataclasses.replace(STUB_RESULT, messages_sent=3, messages_echoed=2,
                             messages_unanswered=1), 1),
    ],
)
def test_the_perf_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    result: LoadResult, status: int,
) -> None:
    monkeypatch.setattr(perf_cli, "run_load", lambda spec, **kwargs: result)
    assert cli.main(["perf", "192.0.2.1:5684", *CREDENTIALS, "-n", "3", "-q"]) == status


class MergedStream:
    """stdout or stderr into one `log` shared by both, as `2>&1` into a pipe: a buffered
    stream (stdout) reaches it only when flushed, stderr (line-buffered) at each write."""

    def __init__(self, log: list[str], *, buffered: bool) -> None:
        self.log, self.buffered, self.pending = log, buffered, ""

    def write(self, text: str) -> int:
        if self.buffered:
            self.pending += text
        else:
            self.log.append(text)
        return len(text)

    def flush(self) -> None:
        self.log.append(self.pending)
        self.pending = ""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_failed_generators_report_goes_out_before_its_error_line(
    monkeypatch: pytest.MonkeyPatch, json_flag: list[str],
) -> None:
    """A generator process that fails ends the run with the others' figures: the report (text
    or --json) is printed and flushed, then the one error line on stderr, status 1 (9482bc3).
    Unflushed, a report to a pipe came after the error line with `2>&1`, or at exit."""
    log: list[str] = []
    monkeypatch.setattr(sys, "stdout", MergedStream(log, buffered=True))
    monkeypatch.setattr(sys, "stderr", MergedStream(log, buffered=False))

    def failing(spec: LoadSpec, **kwargs: Any) -> LoadResult:
        raise perf.GeneratorProcessFailed("load generator process 1: ended unexpectedly",
                                          STUB_RESULT)

    monkeypatch.setattr(perf_cli, "run_load", failing)
    argv = ["perf", "192.0.2.1:5684", *CREDENTIALS, "-n", "3", "-q", *json_flag]
    assert cli.main(argv) == 1
    report, error = "".join(log).split("iotdtls: ")
    assert error == "load generator process 1: ended unexpectedly\n"
    if json_flag:
        assert json.loads(report) == {"requested": STUB_REQUESTED, "concurrency": 3,
                                      **STUB_RESULT.summary(), "error": error.rstrip("\n")}
    else:
        assert report.startswith("iotdtls perf 192.0.2.1:5684: 1.50 s, "), report


def _silent_generator(spec: LoadSpec, loop_choice: str, initializer: Any, conn: Any) -> None:
    """A generator process that has hung: it never reports, and ends by itself after 3 s."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(3.0)


def _silent_generator_for_good(
    spec: LoadSpec, loop_choice: str, initializer: Any, conn: Any
) -> None:
    """A generator process that has hung and does not end by itself (within a minute)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(60.0)


@pytest.mark.parametrize(
    ("generator", "bound"), [(_silent_generator, 10.0), (_silent_generator_for_good, 16.0)]
)
def test_a_generator_that_does_not_report_after_the_stop_ends_the_run_with_an_error(
    monkeypatch: pytest.MonkeyPatch, generator: Callable[..., None], bound: float,
) -> None:
    """Told to stop, generator processes abandon what is in flight and report at once; one
    that has not reported within STOP_GRACE has hung, and the run fails naming that instead
    of waiting for ever: one that does not end by itself is killed 5 s later (`reap`; M13:
    `_run_processes` 69 waited for it)."""
    monkeypatch.setattr(perf, "PROGRESS_INTERVAL", 0.05)
    monkeypatch.setattr(perf, "STOP_GRACE", 0.5)
    real_spawn = perf.spawn
    monkeypatch.setattr(
        perf, "spawn", lambda target, args, name: real_spawn(generator, args, name)
    )
    missed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: missed.append(number))
    stops: list[LoadProgress] = []

    def stop_once(progress: LoadProgress) -> None:
        if not stops:
            stops.append(progress)
            os.kill(os.getpid(), signal.SIGINT)

    started = time.monotonic()
    try:
        with pytest.raises(ChildProcessError) as failed:
            run_load(spec(handshakes=None, duration=30.0, concurrency=2), processes=2,
                     loop_choice="asyncio", progress=stop_once)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert str(failed.value) == (
        "a load generator process did not report within 0.5 s of the stop"
    )
    assert missed == [] and stops and time.monotonic() - started < bound
    assert multiprocessing.active_children() == []
    assert isinstance(failed.value, perf.GeneratorProcessFailed)
    nothing = failed.value.result  # neither reported: no figures, but where and how
    assert (nothing.processes, nothing.started, nothing.loop) == (0, 0, "asyncio")
    assert nothing.address.startswith(f"{LOCALHOST}:")
