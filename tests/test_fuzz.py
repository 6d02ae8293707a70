"""The fuzz harness inside the normal suite (docs/fuzzing.md).

Every seed and every input that once crashed a target (`fuzz/crashes/TARGET/`) runs through its
target as a regression test; then each target gets a short coverage-guided run with atheris
(installed by `make test`'s setup: under CI=true a missing atheris fails here, it never skips
silently). `make fuzz` runs the long campaign. The targets reach every handshake state of both
roles through the public sans-I/O API (`DtlsConnection`, `ServerEndpoint`), and a broken
invariant is found: the harness's own checks are mutated below and must fire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fuzz import TARGET_NAMES
from fuzz.scenario import MODES, client_at, client_stages, server_at, server_stages
from fuzz.seeds import seeds
from fuzz.targets import TARGETS
from iotdtls.connection import DtlsConnection
from iotdtls.events import DataReceived
from iotdtls.handshake.client import ClientState
from iotdtls.handshake.server import ServerState

CRASHES = Path(__file__).resolve().parent.parent / "fuzz" / "crashes"
#: Inputs per target in the short run: a few seconds each on a loaded 2-core machine.
SHORT_RUNS = {"messages": 20000, "records": 10000, "client": 4000, "server": 4000}


def crash_inputs() -> list[tuple[str, Path]]:
    return sorted(
        (target, path)
        for target in TARGET_NAMES
        for path in (CRASHES / target).glob("*")
        if path.is_file()
    )


@pytest.mark.req("REC-3", "HS-5")
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_seeds_pass(target: str) -> None:
    inputs = seeds(target)
    assert len(inputs) >= 5
    for data in inputs:
        TARGETS[target](data)


@pytest.mark.req("REC-3", "HS-2")
def test_inputs_that_once_crashed() -> None:
    """Every input kept in fuzz/crashes/ (each once broke a target; docs/fuzzing.md)."""
    kept = crash_inputs()
    assert kept
    for target, path in kept:
        TARGETS[target](path.read_bytes())


def test_stages_reach_every_handshake_state() -> None:
    """The connection targets start from every state of both machines (PSK and raw-key flows,
    established, closed, and the server's cookie gate): the fuzzed datagrams meet each one.
    A new state in either machine fails this test until the harness reaches it too."""
    client_states = {client_at(stage).handshake_state for stage in client_stages()}
    assert client_states == set(ClientState)
    assert any(client_at(stage).closed for stage in client_stages())
    server_states = set()
    for stage in server_stages():
        server = server_at(stage)
        conns = list(server.connections.values())
        server_states.add(conns[0].handshake_state if conns else "cookie gate")
    assert server_states == {*ServerState, "cookie gate"} - {ServerState.WAIT_CLIENT_HELLO}
    assert {stage.mode for stage in client_stages()} == set(MODES)


def test_the_harness_finds_a_broken_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Application data delivered before the handshake completes (a broken HS-5) is caught by
    the client target on a seed: replaying the server's data record at a client that has not
    seen the server's Finished."""
    real = DtlsConnection.receive_datagram

    def leaky(self: DtlsConnection, data: bytes, now: float) -> None:
        real(self, data, now)
        self._emit(DataReceived(b"leak"))

    monkeypatch.setattr(DtlsConnection, "receive_datagram", leaky)
    with pytest.raises(AssertionError, match="before the handshake completed"):
        for data in seeds("client"):
            TARGETS["client"](data)


@pytest.mark.req("REC-3", "HS-5", "HS-2")
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_short_coverage_guided_run(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris comes with `make test` (the fuzz extra)")
    from fuzz.campaign import fuzz_target

    runs = SHORT_RUNS[target]
    outcome = fuzz_target(target, runs, seconds=120, seed=1, timeout=300, corpus=tmp_path)
    assert not outcome.crashed, outcome.log_tail
    # Every input asked for ran (not cut short by the time limit). libFuzzer's own count may
    # end a few past its -runs limit (seen once in CI: 10,002 of 10,000).
    assert runs <= outcome.inputs <= runs + 16, outcome.log_tail
    assert outcome.coverage > 50, outcome.log_tail  # the library really is instrumented
    assert outcome.new_units > 0, outcome.log_tail  # coverage guidance found new inputs


def test_a_run_on_a_grown_corpus_counts_only_the_inputs_it_fuzzed(tmp_path: Path) -> None:
    """libFuzzer counts the loading of the corpus toward -runs; `--runs N` means N fuzzed inputs
    beyond it, however many units the corpus already holds (docs/fuzzing.md)."""
    pytest.importorskip("atheris", reason="atheris comes with `make test` (the fuzz extra)")
    from fuzz.campaign import fuzz_target

    first = fuzz_target("messages", 1000, seconds=120, seed=1, timeout=300, corpus=tmp_path)
    assert not first.crashed, first.log_tail
    assert len(list(tmp_path.iterdir())) > 500  # the seeds and the units found: more than runs
    again = fuzz_target("messages", 500, seconds=120, seed=2, timeout=300, corpus=tmp_path)
    assert not again.crashed, again.log_tail
    for outcome, runs in ((first, 1000), (again, 500)):
        assert runs <= outcome.inputs <= runs + 16, outcome.log_tail


def test_parallel_jobs_share_the_inputs_and_sum_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--jobs 2` runs two fuzzing processes at once, each fuzzing its share of the inputs; the
    outcome counts both, and what both found ends in the corpus (docs/fuzzing.md)."""
    pytest.importorskip("atheris", reason="atheris comes with `make test` (the fuzz extra)")
    from fuzz import campaign

    jobs: list[campaign.Outcome] = []
    real = campaign.fuzz_target

    def recorded(*args: Any, **kwargs: Any) -> campaign.Outcome:
        outcome = real(*args, **kwargs)
        jobs.append(outcome)
        return outcome

    monkeypatch.setattr(campaign, "fuzz_target", recorded)
    outcome = campaign.fuzz_in_parallel(
        "messages", 1000, seconds=120, seed=1, jobs=2, corpus=tmp_path
    )
    assert not outcome.crashed, outcome.log_tail
    assert len(jobs) == 2
    for job in jobs:
        assert 500 <= job.inputs <= 516, job.log_tail  # each job fuzzed its share
    assert outcome.inputs == sum(job.inputs for job in jobs)
    assert outcome.new_units > 0 and outcome.coverage > 50, outcome.log_tail
    assert len(list(tmp_path.iterdir())) > len(set(seeds("messages")))
