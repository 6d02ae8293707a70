"""The README's example runs as written (on a fresh port instead of 5684), and so do its server
blocks, saved as scripts and stopped with Ctrl-C; and it names every command-line option there
is."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import iotdtls.sync
from iotdtls import ClientConfig, DtlsError
from iotdtls.cli import _parser
from iotdtls.proxy import _build_parser
from tests.peers import LOCALHOST, free_udp_port

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


#: The key the README's server blocks give "dev1".
README_KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")


def python_block(marker: str) -> str:
    """The one Python block of the README holding `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, even under a runner started in the background
    (which ignores SIGINT, an ignored signal that its children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve_until_ctrl_c(
    script: Path, port: int, *, within: float = 30.0, ready: str | None = None
) -> tuple[int, str]:
    """Run `script` (a server on 127.0.0.1:`port`) in its own process group, echo one datagram
    through it with a client that stays connected, then Ctrl-C the group as a terminal does:
    the client must see close_notify (its recv returns None, the association ended). With
    `ready`, not before the script has printed a line starting so (a server of workers answers
    once one worker serves, before `serve` has returned). Returns the exit status and what the
    script printed (stdout and stderr)."""
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, preexec_fn=default_sigint, cwd=script.parent,
    ) as process:
        try:
            first = _wait_for_line(process, ready, within) if ready is not None else ""
            client = _connected(port, process, time.monotonic() + within)
            try:
                client.send(b"ping")
                assert client.recv(timeout=5) == b"ping"
                os.killpg(process.pid, signal.SIGINT)
                assert client.recv(timeout=5) is None and client.ended  # close_notify
            finally:
                client.close()
            output, _ = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return process.returncode, first + output


def _wait_for_line(process: subprocess.Popen[str], start: str, within: float) -> str:
    """What `process` printed up to and including its first line starting with `start` (the
    process is killed after `within` seconds without one, which ends the read)."""
    assert process.stdout is not None
    timer = threading.Timer(within, os.killpg, (process.pid, signal.SIGKILL))
    timer.start()
    try:
        lines = []
        while not (lines and lines[-1].startswith(start)):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        return "".join(lines)
    finally:
        timer.cancel()


def _connected(
    port: int, process: subprocess.Popen[str], deadline: float
) -> iotdtls.sync.DtlsClient:
    """A client of the script's server, tried until it answers (the script starting)."""
    config = ClientConfig(psk_identity=b"dev1", psk=README_KEY, handshake_timeout=2.0)
    while True:
        assert process.poll() is None, process.communicate()[0]
        try:
            return iotdtls.sync.connect(LOCALHOST, port, config)
        except DtlsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def saved(block: str, directory: Path, port: int) -> Path:
    """`block` saved as a script serving on 127.0.0.1:`port` instead of 0.0.0.0:5684."""
    script = directory / "server.py"
    script.write_text(block.replace("5684", str(port)).replace('"0.0.0.0"', f'"{LOCALHOST}"'))
    return script


def test_readme_datagram_handler_block_runs_as_saved(tmp_path: Path) -> None:
    """It used a top-level `await` (probe CK); saved as it is, it serves, and Ctrl-C ends it
    quietly (status 0), its peer told with close_notify."""
    port = free_udp_port()
    status, output = serve_until_ctrl_c(saved(python_block("iotdtls.DatagramHandler)"),
                                              tmp_path, port), port)
    assert status == 0, output
    assert "Traceback" not in output
    assert output == "hello psk identity b'dev1'\nbye psk identity b'dev1' None\n"


def test_readme_workers_block_runs_as_saved(tmp_path: Path) -> None:
    """It used a top-level `await` (probe CK); saved as it is, its workers serve, and Ctrl-C
    stops them all (close_notify to the peer), the summed counters printed, status 0."""
    port = free_udp_port()
    status, output = serve_until_ctrl_c(saved(python_block("iotdtls.workers.serve"),
                                              tmp_path, port), port, within=60.0,
                                        ready="serving: workers")
    assert status == 0, output
    assert re.fullmatch(r"serving: workers( \d+){4}\nstopped: handshakes 1 completed .*\n",
                        output), output


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
