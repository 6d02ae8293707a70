"""The README's example runs as written (on a fresh port instead of 5684), and it names every
command-line option there is."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from iotdtls.cli import _parser
from iotdtls.proxy import _build_parser
from tests.peers import free_udp_port

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    source = code.group(1).replace("5684", str(free_udp_port()))
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'hello'"


def test_readme_coap_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    coap = [b for b in blocks if "from iotdtls import coap" in b]
    assert len(coap) == 1
    source = coap[0].replace("5684", str(free_udp_port()))
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.05 Content Hello, dev1!"


def test_readme_resumption_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (example,) = [b for b in blocks if "SessionState.from_bytes" in b]
    source = example.replace("5684", str(free_udp_port()))
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True True"


def options(parser: argparse.ArgumentParser, command: str) -> Iterator[tuple[str, str]]:
    """(command, option string) of every option of `parser` and of its subcommands, help
    left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, f"{command} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield from ((command, option) for option in action.option_strings)


def test_readme_names_every_command_line_option() -> None:
    """A new user reads the README, not each --help: every flag of `iotdtls` (long and short
    forms) and of `python -m iotdtls.proxy` appears in it (perf's -q and -c, keygen's
    --force and --bytes, the proxy's --loss ... were missing)."""
    text = README.read_text(encoding="utf-8")
    every = [*options(_parser(), "iotdtls"), *options(_build_parser(), "iotdtls.proxy")]
    missing = [
        f"{command} {option}"
        for command, option in every
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
    ]
    assert not missing
