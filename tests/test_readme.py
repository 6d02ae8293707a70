"""The README's example runs as written (on a fresh port instead of 5684)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
