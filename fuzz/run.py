"""Coverage-guided fuzzing of one target with atheris (libFuzzer in-process):

    python -m fuzz.run TARGET [--corpus=DIR] [--inputs=N] [libFuzzer options, e.g. -runs=1000000]

Only `iotdtls` is instrumented for coverage. The corpus lives in `.fuzz/corpus/TARGET` (or
DIR; seeded from `fuzz/seeds.py`, grown by the run, not checked in); a crashing input is written to
`fuzz/crashes/TARGET/` where, once the bug is fixed, it stays as a regression test
(`tests/test_fuzz.py` runs every file there). `python -m fuzz.campaign` runs several targets and
reports the figures. libFuzzer's `-runs=N` counts the loading of the corpus as runs too (its
`#N INITED` line); `--inputs=N` sets `-runs` to N inputs fuzzed beyond that loading.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
CORPUS_ROOT = ROOT / ".fuzz" / "corpus"
CRASH_ROOT = ROOT / "fuzz" / "crashes"
#: libFuzzer settings every run gets: a hang of 10 s on one input is a finding too.
DEFAULT_FLAGS = ("-timeout=10", "-max_len=4096", "-print_final_stats=1")
USAGE = "usage: python -m fuzz.run TARGET [--corpus=DIR] [--inputs=N] [libFuzzer options]"


def prepare_corpus(corpus: Path, seeds: list[bytes]) -> Path:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = corpus / f"seed-{hashlib.sha256(seed).hexdigest()}"
        if not path.exists():
            path.write_bytes(seed)
    return corpus


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(USAGE)
    target, options = argv[1], argv[2:]
    corpus = CORPUS_ROOT / target
    inputs = None
    while options and options[0].startswith(("--corpus=", "--inputs=")):
        name, _, value = options.pop(0).partition("=")
        if name == "--corpus":
            corpus = Path(value)
        elif value.isdigit():
            inputs = int(value)
        else:
            sys.exit(f"--inputs wants a number of inputs, not {value!r}; {USAGE}")
    with atheris.instrument_imports(include=["iotdtls"]):
        from fuzz.seeds import seeds
        from fuzz.targets import TARGETS
    if target not in TARGETS:
        sys.exit(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
    logging.disable(logging.CRITICAL)  # the library's warnings are not findings
    prepare_corpus(corpus, seeds(target))
    if inputs is not None:
        # libFuzzer runs the empty input, then every file of the corpus, before it fuzzes.
        loaded = 1 + sum(1 for path in corpus.rglob("*") if path.is_file())
        options.append(f"-runs={inputs + loaded}")
    crashes = CRASH_ROOT / target
    crashes.mkdir(parents=True, exist_ok=True)
    flags = [*DEFAULT_FLAGS, f"-artifact_prefix={crashes}/", *options, str(corpus)]
    atheris.Setup([argv[0], *flags], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
