"""The `--help` of every command, word for word (tests/cli_help/): the flags, their value
names and defaults and what each does are the command line's documentation, so a change to
any of them shows here and is made on purpose. After such a change:
`IOTDTLS_UPDATE_HELP=1 .venv/bin/python -m pytest tests/test_cli_help.py` rewrites the files;
read the diff before committing it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from iotdtls.cli import _parser, main

HELP_DIR = Path(__file__).parent / "cli_help"
UPDATE = os.environ.get("IOTDTLS_UPDATE_HELP") == "1"


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[
    tuple[str, ...]
]:
    """Every command and subcommand of `parser`, as argument lists."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


COMMANDS = command_paths(_parser())


def test_every_command_has_its_help_file() -> None:
    expected = {"_".join(path) or "iotdtls" for path in COMMANDS}
    assert len(expected) >= 14  # iotdtls, server, client, perf, keygen (3), coap (5), demo
    if not UPDATE:
        assert {p.stem for p in HELP_DIR.glob("*.txt")} == expected


@pytest.mark.parametrize("command", COMMANDS, ids=lambda path: " ".join(path) or "iotdtls")
def test_help_text(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    path = HELP_DIR / f"{'_'.join(command) or 'iotdtls'}.txt"
    if UPDATE:
        path.write_text(out, encoding="utf-8")
    assert out == path.read_text(encoding="utf-8")


def test_every_flag_with_a_default_value_names_it() -> None:
    """`perf --help` gave no default for --size (64), --echo-timeout (2) or --concurrency
    (10): each flag that takes a value and has a default says it in its help."""

    def silent(parser: argparse.ArgumentParser, command: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += silent(sub, f"{command} {name}")
            elif (action.option_strings and action.nargs != 0
                  and action.default not in (None, [], argparse.SUPPRESS)
                  and "default" not in (action.help or "")):
                found.append(f"{command} {action.option_strings[0]}")
        return found

    assert silent(_parser(), "iotdtls") == []
