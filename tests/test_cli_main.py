"""The command line's entry point (`iotdtls.cli.main`): a subcommand is required, each one sets
up logging as a server or a client (or not at all), and what a user can cause becomes one line
on stderr and an exit status (2 usage and configuration, 1 a failed association or a socket
error, 130 Ctrl-C). The subcommands' own work is stubbed here: test_cli_*.py run them."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from iotdtls import cli
from iotdtls.cli import coap, echo, keygen, perf
from iotdtls.cli.common import UsageError
from iotdtls.errors import ConfigError, DtlsError, LocalProtocolError
from tests.interop_support import CREDENTIALS

CLIENT = ["client", "127.0.0.1:5684", *CREDENTIALS]


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


def test_demo_runs_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "run_demo", lambda: 7)
    monkeypatch.setattr(cli, "setup_logging", lambda *args: pytest.fail("demo logs its own way"))
    assert cli.main(["demo"]) == 7


@pytest.mark.parametrize(
    ("module", "run", "argv", "logging"),
    [
        (echo, "run_server", ["server", "--listen", "127.0.0.1:5684", *CREDENTIALS],
         (False, True)),
        (echo, "run_client", [*CLIENT, "-v"], (True, False)),
        (perf, "run_perf", ["perf", "127.0.0.1:5684", *CREDENTIALS], (False, False)),
        (coap, "run_request", ["coap", "get", "coaps://127.0.0.1/x", *CREDENTIALS],
         (False, False)),
        (coap, "run_serve", ["coap", "serve", *CREDENTIALS, "-v"], (True, True)),
        (keygen, "run_psk", ["keygen", "psk"], None),
    ],
)
def test_each_command_sets_up_logging_as_a_server_or_a_client(
    monkeypatch: pytest.MonkeyPatch, module: Any, run: str, argv: list[str],
    logging: tuple[bool, bool] | None,
) -> None:
    set_up: list[tuple[bool, bool]] = []
    monkeypatch.setattr(cli, "setup_logging", lambda verbose, server: set_up.append(
        (verbose, server)))
    monkeypatch.setattr(module, run, lambda args: 0)
    assert cli.main(argv) == 0
    assert set_up == ([] if logging is None else [logging])


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (UsageError("give --psk"), 2, "iotdtls: error: give --psk"),
        (ConfigError("mtu too small"), 2, "iotdtls: error: mtu too small"),
        (DtlsError("handshake timed out"), 1, "iotdtls: handshake timed out"),
        (LocalProtocolError("datagram too large"), 1, "iotdtls: datagram too large"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), 1, "iotdtls: Connection refused"),
        (OSError("no strerror"), 1, "iotdtls: no strerror"),
        (KeyboardInterrupt(), 130, None),
    ],
)
def test_what_a_user_can_cause_is_one_line_and_a_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    raised: BaseException, status: int, line: str | None,
) -> None:
    def fails(args: object) -> int:
        raise raised

    monkeypatch.setattr(echo, "run_client", fails)
    assert cli.main(CLIENT) == status
    out, err = capsys.readouterr()
    assert (out, err) == ("", "" if line is None else line + "\n")


def test_anything_else_is_a_bug_and_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(echo, "run_client", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(CLIENT)


@pytest.mark.parametrize(
    ("argv", "closed", "line"),
    [
        (CLIENT, "stdin", "cannot read: stdin is closed"),
        (CLIENT, "stdout", "cannot print: stdout is closed"),
        (["perf", "127.0.0.1:5684", *CREDENTIALS], "stdout", "cannot print: stdout is closed"),
        (["perf", "127.0.0.1:5684", *CREDENTIALS, "--json"], "stdout",
         "cannot print: stdout is closed"),
        (["demo"], "stdout", "cannot print: stdout is closed"),
    ],
)
def test_a_command_started_without_a_stream_it_needs_refuses_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    argv: list[str], closed: str, line: str,
) -> None:
    """Started with the stream closed (`<&-`, `>&-`: sys.stdin or sys.stdout is None), the
    client handshook and exited 0 without a word, perf and demo lost their report and exited 0
    (probe AU): one line, status 1, before anything is sent or the key log made."""
    for command, run in ((echo, "run_client"), (perf, "run_perf"), (cli, "run_demo")):
        monkeypatch.setattr(command, run, lambda *args: pytest.fail("ran anyway"))
    monkeypatch.setattr(sys, closed, None)
    keylog = tmp_path / "keys.log"
    with_keylog = argv if argv == ["demo"] else [*argv, "--keylog", str(keylog)]
    assert cli.main(with_keylog) == 1
    assert capsys.readouterr().err == f"iotdtls: {line}\n"
    assert not keylog.exists()
