"""Run fuzz targets one after the other, each in its own atheris process, and report:

    python -m fuzz.campaign [--runs N] [--seconds S] [--seed K] [--jobs J] [TARGET ...]

Each target runs in a fresh process (atheris ends its process when done); with `--jobs J`, in J
processes at once, each with its own seed, its share of the inputs and its own copy of the
corpus, merged back into the corpus when they end (for the slow targets on a machine with several
cores). Inputs are the ones fuzzed: loading the corpus first is not counted. Prints one line per
target (inputs fuzzed, rate, coverage, corpus size, peak memory, outcome)
and exits 1 if any target found a crash (its input is in `fuzz/crashes/TARGET/`). `make fuzz`
runs every target for a million inputs; `tests/test_fuzz.py` runs a short campaign.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from fuzz import TARGET_NAMES

__all__ = ["Outcome", "fuzz_target", "main"]

ROOT = Path(__file__).resolve().parent.parent
#: How long a target's process may run before it is killed (a long campaign takes hours).
PROCESS_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class Outcome:
    target: str
    returncode: int
    inputs: int
    per_second: int
    coverage: int
    features: int
    corpus: int
    new_units: int
    peak_rss_mb: int
    seconds: float
    log_tail: str

    @property
    def crashed(self) -> bool:
        return self.returncode != 0

    def line(self) -> str:
        status = "CRASH" if self.crashed else "ok"
        return (
            f"{self.target:9} {self.inputs:>9} inputs {self.per_second:>6}/s "
            f"cov {self.coverage:>5} ft {self.features:>6} corpus {self.corpus:>5} "
            f"rss {self.peak_rss_mb:>4} MB {self.seconds:>7.1f} s  {status}"
        )


def _stat(text: str, name: str) -> int:
    match = re.search(rf"stat::{name}:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def _last(text: str, pattern: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def _run_in_child(argv: list[str], log: str) -> None:
    """The child process: libFuzzer's output goes to `log`, then atheris takes over (it ends
    the process with its own status)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(ROOT)
    from fuzz.run import main

    main(argv)


def fuzz_target(
    target: str, runs: int, seconds: int, seed: int, timeout: float, corpus: Path | None = None
) -> Outcome:
    """Run `python -m fuzz.run TARGET` in a fresh process for `runs` inputs fuzzed beyond the
    corpus it loads first, or `seconds`, whichever ends first (in `corpus`, a directory, instead
    of the default one if given). The process has the corpus to itself: it does not reload it."""
    argv = ["fuzz.run", target]
    if corpus is not None:
        argv.append(f"--corpus={corpus}")
    argv += [f"--inputs={runs}", f"-seed={seed}", "-reload=0"]
    if seconds:
        argv.append(f"-max_total_time={seconds}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "fuzz.log")
        child = multiprocessing.get_context("spawn").Process(
            target=_run_in_child, args=(argv, log_path)
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            log = fh.read()
    elapsed = time.monotonic() - started
    # libFuzzer counts the loading of the corpus as runs too, up to its "#N INITED" line.
    loaded = _last(log, r"#(\d+)\s+INITED")
    inputs = max(_stat(log, "number_of_executed_units") - loaded, 0) if loaded else 0
    return Outcome(
        target=target,
        returncode=child.exitcode if child.exitcode is not None else -1,
        inputs=inputs,
        per_second=round(inputs / max(elapsed, 1e-3)),
        coverage=_last(log, r"cov: (\d+)"),
        features=_last(log, r"ft: (\d+)"),
        corpus=_last(log, r"corp: (\d+)/"),
        new_units=_stat(log, "new_units_added"),
        peak_rss_mb=_stat(log, "peak_rss_mb"),
        seconds=elapsed,
        log_tail="\n".join(log.splitlines()[-40:]),
    )


def fuzz_in_parallel(
    target: str, runs: int, seconds: int, seed: int, jobs: int, corpus: Path | None = None
) -> Outcome:
    """Run `target` in `jobs` processes at once (seeds `seed`, `seed + 1`, ...), `runs` inputs in
    all, and sum what they did: inputs, new units; the widest coverage; the first crash. Each
    job fuzzes its own copy of `corpus` (so that it loads a known set of units, and no other
    job's finds while it runs); what the jobs found is copied into `corpus` when they end."""
    if jobs == 1:
        return fuzz_target(target, runs, seconds, seed, PROCESS_TIMEOUT, corpus)
    if corpus is None:
        corpus = ROOT / ".fuzz" / "corpus" / target  # fuzz.run's default
    corpus.mkdir(parents=True, exist_ok=True)
    share = -(-runs // jobs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        copies = [Path(tmp) / f"job-{job}" for job in range(jobs)]
        for copy in copies:
            shutil.copytree(corpus, copy)
        with ThreadPoolExecutor(jobs) as pool:
            outcomes = list(pool.map(
                lambda job: fuzz_target(
                    target, share, seconds, seed + job, PROCESS_TIMEOUT, copies[job]
                ),
                range(jobs),
            ))
        for copy in copies:  # units are named by their content: same name, same unit
            for unit in copy.iterdir():
                if unit.is_file() and not (corpus / unit.name).exists():
                    shutil.copy2(unit, corpus / unit.name)
    elapsed = time.monotonic() - started
    inputs = sum(o.inputs for o in outcomes)
    crashed = [o for o in outcomes if o.crashed]
    first = crashed[0] if crashed else outcomes[0]
    return replace(
        first,
        inputs=inputs,
        per_second=round(inputs / max(elapsed, 1e-3)),
        coverage=max(o.coverage for o in outcomes),
        features=max(o.features for o in outcomes),
        corpus=max(o.corpus for o in outcomes),
        new_units=sum(o.new_units for o in outcomes),
        peak_rss_mb=max(o.peak_rss_mb for o in outcomes),
        seconds=elapsed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.campaign")
    parser.add_argument("targets", nargs="*", default=list(TARGET_NAMES), metavar="TARGET")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seconds", type=int, default=0, help="time limit per target (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="processes per target (default 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    unknown = set(args.targets) - set(TARGET_NAMES)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; targets: {', '.join(TARGET_NAMES)}")
    failed = False
    for target in args.targets:
        outcome = fuzz_in_parallel(target, args.runs, args.seconds, args.seed, args.jobs)
        print(outcome.line(), flush=True)
        if outcome.crashed:
            failed = True
            print(outcome.log_tail, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
