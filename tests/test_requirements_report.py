"""tools/requirements_report.py on a tiny spec and tests directory."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parent.parent / "tools" / "requirements_report.py"

SPEC = """\
# tiny spec

## Section
- AAA-1 MUST: first item,
  continued on a second line.
- AAA-2 SHOULD (ours: default on): a level with a colon inside parentheses.
- BBB-1 Ours: ours.
- BBB-2 MAY: nobody tests this.
- not an item
"""

TEST_A = '''\
import pytest

pytestmark = [pytest.mark.interop, pytest.mark.req("BBB-1")]


@pytest.mark.req("AAA-1", "AAA-2")
def test_both() -> None:
    pass


def test_module_mark_only() -> None:
    pass


def helper() -> None:
    pass
'''

TEST_B = '''\
import pytest
from pytest import mark


@pytest.mark.req("AAA-1")
class TestGroup:
    pytestmark = pytest.mark.req("AAA-2")

    def test_in_class(self) -> None:
        pass

    @mark.req("ZZZ-9")
    def test_unknown_id(self) -> None:
        pass


@pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.req("BBB-1"))])
async def test_param(x: int) -> None:
    pass
'''


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("requirements_report", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_fixture(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "requirements.md"
    spec.write_text(SPEC)
    tests = tmp_path / "tests"
    (tests / "sub").mkdir(parents=True)
    (tests / "test_a.py").write_text(TEST_A)
    (tests / "sub" / "test_b.py").write_text(TEST_B)
    # Not a test file: ignored even though it uses the marker.
    (tests / "helpers.py").write_text(
        'import pytest\n@pytest.mark.req("BBB-2")\ndef test_x(): pass\n'
    )
    return spec, tests


def test_parse_spec_levels() -> None:
    tool = load_tool()
    reqs = tool.parse_spec(SPEC)
    assert [(r.id, r.level) for r in reqs] == [
        ("AAA-1", "MUST"),
        ("AAA-2", "SHOULD (ours: default on)"),
        ("BBB-1", "Ours"),
        ("BBB-2", "MAY"),
    ]


def test_scan_finds_every_form(tmp_path: Path) -> None:
    tool = load_tool()
    _, tests = make_fixture(tmp_path)
    covered = tool.scan_tests(tests)
    assert covered == {
        "BBB-1": ["tests/sub/test_b.py::test_param", "tests/test_a.py::test_both",
                  "tests/test_a.py::test_module_mark_only"],
        "AAA-1": ["tests/sub/test_b.py::TestGroup::test_in_class",
                  "tests/sub/test_b.py::TestGroup::test_unknown_id",
                  "tests/test_a.py::test_both"],
        "AAA-2": ["tests/sub/test_b.py::TestGroup::test_in_class",
                  "tests/sub/test_b.py::TestGroup::test_unknown_id",
                  "tests/test_a.py::test_both"],
        "ZZZ-9": ["tests/sub/test_b.py::TestGroup::test_unknown_id"],
    }


def test_command_line_report(tmp_path: Path) -> None:
    spec, tests = make_fixture(tmp_path)
    done = subprocess.run(
        [sys.executable, str(TOOL), "--spec", str(spec), "--tests", str(tests)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split(" | ") == ["ID   ", "level                    ", "covered by"]
    assert lines[-1] == "covered 3/4"
    row = next(line for line in lines if line.startswith("BBB-2"))
    assert row.endswith("-- NOT COVERED --")
    row = next(line for line in lines if line.startswith("AAA-1"))
    assert "tests/test_a.py::test_both" in row
    assert any(line.startswith("warning: ZZZ-9 is not in the spec") for line in lines)


def test_a_missing_spec_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    """A clone away from ../shared has no spec: one line saying so, not a traceback."""
    missing = tmp_path / "nowhere" / "requirements.md"
    done = subprocess.run(
        [sys.executable, str(TOOL), "--spec", str(missing), "--tests", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"requirements_report: cannot read the spec {missing}: No such file or directory; "
        "give its path with --spec PATH\n"
    )
