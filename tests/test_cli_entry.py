"""The `iotdtls` console script as pip writes it from `[project.scripts]`, run in a real
subprocess: its entry point (`_iotdtls_command.main`) runs before the package is imported, so a
Ctrl-C while the library is imported ends the command quietly with status 130, as one while it
runs does (`iotdtls.cli.main`), instead of a KeyboardInterrupt traceback (probe CE)."""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.peers import LOCALHOST, free_udp_port

ROOT = Path(__file__).resolve().parents[1]

#: Seconds any wait of these tests may take (the child imports the library: about a second).
WAIT = 60.0

#: A finder that holds the import of the core's connection module (the middle of `import
#: iotdtls`) for a while, after saying so on stdout: the test's SIGINT lands in that import.
SLOW_IMPORT = """
import sys, time
class HeldImport:
    def find_spec(self, name, path=None, target=None):
        if name == "iotdtls.connection":
            print("importing", flush=True)
            time.sleep(30)
        return None
sys.meta_path.insert(0, HeldImport())
"""


def console_script(*, held: bool) -> str:
    """What pip's console script for `iotdtls` runs (`[project.scripts]`), the import of the
    library held for a while when `held`."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        entry = tomllib.load(file)["project"]["scripts"]["iotdtls"]
    module, function = entry.split(":")
    return (SLOW_IMPORT if held else "") + (
        f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    )


def environment() -> dict[str, str]:
    """This environment, with the directory of the entry module (and of the package tested)
    first on the child's path."""
    spec = importlib.util.find_spec("_iotdtls_command")
    assert spec is not None and spec.origin is not None, "the entry module is importable"
    source = str(Path(spec.origin).parent)
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_the_console_script_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", console_script(held=False), "keygen", "psk"],
        capture_output=True, text=True, timeout=WAIT, env=environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(bytes.fromhex(done.stdout.strip())) == 16


def test_ctrl_c_while_the_library_is_imported_ends_the_command_quietly_with_130() -> None:
    """SIGINT sent while `import iotdtls` is under way (held, so that it surely is): no
    traceback, status 130. Before, the console script's own `from iotdtls.cli import main`
    raised KeyboardInterrupt, a 20-line traceback and death by SIGINT."""
    child = subprocess.Popen(
        [sys.executable, "-c", console_script(held=True), "perf",
         f"{LOCALHOST}:{free_udp_port()}", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
    )  # fmt: skip
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], WAIT)
        assert readable, "the child never reached the import of iotdtls.connection"
        assert child.stdout.readline() == "importing\n"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=WAIT)
    assert (child.returncode, out, err) == (130, "", "")


def test_ctrl_c_of_a_running_command_is_130_too() -> None:
    """The convention the early Ctrl-C follows: a client command interrupted while it waits
    for its handshake (nothing listens at the port) ends with 130, no traceback."""
    child = subprocess.Popen(
        [sys.executable, "-c", console_script(held=False), "client",
         f"{LOCALHOST}:{free_udp_port()}",
         "--psk-identity", "x", "--psk", "00" * 16, "--timeout", "30", "-v"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(),
    )  # fmt: skip
    try:
        assert child.stderr is not None
        readable, _, _ = select.select([child.stderr], [], [], WAIT)
        assert readable, "the client never logged its first datagram"
        first = child.stderr.readline()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=WAIT)
    assert child.returncode == 130, first + err
    assert "Traceback" not in first + err
