"""Shared test configuration.

Under CI=true a skipped test is a failed test: an interop test whose peer is missing must not
pass silently on a fresh machine (see .ci/run). Locally, missing peers skip with a reason.

Three ways a skip can hide, all turned into failures under CI=true:

- a test (or its fixture) calls ``pytest.skip``: the test report says "skipped";
- a module skips at import (``pytest.importorskip`` or ``pytest.skip(allow_module_level=True)``):
  only the *collection* report says "skipped", and no test of the module ever runs;
- a test calls ``pytest.xfail()`` imperatively: the report is "skipped" with ``wasxfail``, like
  a declared expected failure, but no ``@pytest.mark.xfail`` marker declared it.

A test under a real ``xfail`` marker keeps its usual outcome.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.peers import Pki
    from tests.secret_guard import SecretGuard

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_CI_NOTE = "under CI=true, which counts as a failure"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Turn a skipped test, or an xfail without an xfail marker, into a failure under CI."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not IN_CI or not report.skipped:
        return
    if not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped {_CI_NOTE}: {report.longrepr}"
    elif item.get_closest_marker("xfail") is None:
        reason = report.wasxfail
        del report.wasxfail
        report.outcome = "failed"
        report.longrepr = f"pytest.xfail() without an xfail marker {_CI_NOTE}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    """Turn a skipped collection (a module-level skip or importorskip) into an error under CI."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"collection skipped {_CI_NOTE}: {report.longrepr}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test PKI of `tests.peers.make_test_pki` (CA, server and client certificates and raw
    keys), generated once per test session."""
    from tests.peers import make_test_pki  # here: the conftest must import on its own

    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def give_away(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], str]:
    """Make a file (a symlink itself, not what it points to) another user's, for the refusals
    of what another user could have planted; returns its owner as messages name it. As root (CI)
    by lchown to nobody (uid 65534); otherwise, as only root can give a file away, the code
    under test is told another effective uid (os.geteuid), so that every file of ours is another
    user's to it: the test runs either way, never skipped."""

    def give(path: Path) -> str:
        if os.geteuid() == 0:
            os.lchown(path, 65534, 65534)
        else:
            uid = os.geteuid()
            monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
        owner = os.lstat(path).st_uid
        try:
            return f"{pwd.getpwuid(owner).pw_name} (uid {owner})"
        except KeyError:
            return f"uid {owner}"

    return give


@pytest.fixture
def in_shared_dir(tmp_path: Path) -> Generator[Callable[[str], Path], None, None]:
    """Names in a sticky world-writable directory (as /tmp) whose owner is not the user
    `give_away` gives a file to: where another user's symlink is refused (`resolve_links`). As
    root (CI), a new one of root's (mode 1777); otherwise /tmp itself, root's (a directory of
    another user cannot be made without root), each name made unique there and its file
    removed after the test."""
    if os.geteuid() == 0:
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        prefix = ""
    else:
        shared = Path("/tmp")
        info = shared.lstat()
        assert info.st_mode & 0o1002 == 0o1002 and info.st_uid != os.geteuid(), (
            "/tmp is not a sticky world-writable directory of another user")
        prefix = f"iotdtls-test-{os.getpid()}-{tmp_path.name}-"
    made: list[Path] = []

    def name(base: str) -> Path:
        made.append(shared / f"{prefix}{base}")
        return made[-1]

    yield name
    for path in made:
        if os.path.lexists(path):
            path.unlink()


@pytest.fixture(autouse=True)
def restored_logging_levels() -> Generator[None, None, None]:
    """`iotdtls.cli.main` sets the levels of the library's loggers (`setup_logging`): every
    test that runs the command line in this process leaves them as it found them."""
    import logging

    names = ("iotdtls", "iotdtls.aio", "iotdtls.cli", "iotdtls.workers", "iotdtls.coap")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def secret_guard(request: pytest.FixtureRequest) -> Generator[SecretGuard | None, None, None]:
    """SEC-1 for every test: no secret the library handled in the test shows in any log line,
    error text, repr or command-line output it produced (`tests.secret_guard`). A test that
    leaks on purpose, to check the guard itself, says so with `@pytest.mark.secret_guard_off`."""
    if request.node.get_closest_marker("secret_guard_off") is not None:
        yield None
        return
    try:
        from tests.secret_guard import SecretGuard  # here: the conftest must import on its own
    except ModuleNotFoundError:  # a copy of this conftest outside the project (test_conftest)
        yield None
        return
    guard = SecretGuard()
    with pytest.MonkeyPatch.context() as mp:
        guard.install(mp)
        try:
            yield guard
        finally:
            guard.uninstall()
        leaks = guard.findings()
    assert not leaks, "secrets leaked (SEC-1):\n" + "\n".join(leaks)
