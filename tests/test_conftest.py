"""The conftest's CI policy itself: under CI=true no skip of any kind passes silently.

Each test runs a tiny inner suite (pytester) with this project's conftest, once with CI=true
and once without CI, and compares the outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool,
              **files: str) -> pytest.RunResult:
    """Run the inner suite in a subprocess with CI set to "true" or unset."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**files)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


TEST_SKIP = """
import pytest

def test_skips():
    pytest.skip("peer missing")

def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest
pytest.importorskip("no_such_module_for_iotdtls_tests")

def test_never_runs():
    pass
"""

MODULE_SKIP_ALLOWED = """
import pytest
pytest.skip("whole module", allow_module_level=True)

def test_never_runs():
    pass
"""

XFAILS = """
import pytest

def test_imperative_xfail():
    pytest.xfail("not declared")

@pytest.mark.xfail(reason="declared", strict=True)
def test_declared_xfail():
    assert False

@pytest.mark.xfail(reason="declared, imperative too")
def test_declared_imperative_xfail():
    pytest.xfail("declared by marker")
"""


@pytest.mark.parametrize("ci", [True, False])
def test_skipped_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                      ci: bool) -> None:
    result = run_inner(pytester, monkeypatch, ci, test_inner=TEST_SKIP)
    if ci:
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*skipped under CI=true*peer missing*"])
    else:
        result.assert_outcomes(passed=1, skipped=1)


@pytest.mark.parametrize("source", [MODULE_SKIP, MODULE_SKIP_ALLOWED],
                         ids=["importorskip", "allow_module_level"])
@pytest.mark.parametrize("ci", [True, False])
def test_module_level_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                           ci: bool, source: str) -> None:
    result = run_inner(pytester, monkeypatch, ci, test_inner=source)
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*collection skipped under CI=true*"])
        assert result.ret != 0
    else:
        result.assert_outcomes(skipped=1)
        assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.mark.parametrize("ci", [True, False])
def test_xfail_needs_a_marker_under_ci(pytester: pytest.Pytester,
                                       monkeypatch: pytest.MonkeyPatch, ci: bool) -> None:
    result = run_inner(pytester, monkeypatch, ci, test_inner=XFAILS)
    if ci:
        result.assert_outcomes(failed=1, xfailed=2)
        result.stdout.fnmatch_lines(
            ["*pytest.xfail() without an xfail marker under CI=true*not declared*"])
    else:
        result.assert_outcomes(xfailed=3)
