"""Requirement coverage report: which requirement IDs have tests, which do not.

Reads the IDs from the spec (lines ``- XXX-N LEVEL: text`` of requirements.md, by default
``../shared/spec/requirements.md`` relative to the repository root) and finds the tests that
name them in ``pytest.mark.req(...)`` markers, by parsing the test files (AST, nothing is
imported or run). Recognised forms:

- decorators on test functions, test methods and test classes: ``@pytest.mark.req("A-1", "B-2")``
  (also ``@mark.req`` after ``from pytest import mark``), including marks nested in decorator
  arguments such as ``pytest.param(..., marks=pytest.mark.req("A-1"))``;
- ``pytestmark = pytest.mark.req(...)`` or a list/tuple of marks, at module or class level.

Prints a table ``ID | level | covered by`` and ``covered N/M``; IDs used in tests but absent
from the spec are listed as warnings. Exits 0 (it reports, it does not gate); 2 with one
line when the spec cannot be read (a clone outside the work tree has none: ``--spec``).

Usage: ``python tools/requirements_report.py [--spec PATH] [--tests DIR]`` or ``make
requirements``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT.parent / "shared" / "spec" / "requirements.md"
DEFAULT_TESTS = ROOT / "tests"

_ID_LINE = re.compile(
    r"^\s*[-*]\s+(?P<id>[A-Z][A-Z0-9]*-\d+)\s+(?P<level>[A-Za-z]+(?:\s*\([^)]*\))?)\s*:"
)


@dataclass(frozen=True)
class Requirement:
    """One spec item: its ID and its level (MUST, SHOULD, MAY, Ours, with any qualifier)."""

    id: str
    level: str


def parse_spec(text: str) -> list[Requirement]:
    """The requirement IDs of a requirements.md text, in order, each once."""
    found: dict[str, Requirement] = {}
    for line in text.splitlines():
        match = _ID_LINE.match(line)
        if match and match["id"] not in found:
            level = " ".join(match["level"].split())
            found[match["id"]] = Requirement(match["id"], level)
    return list(found.values())


def _dotted(node: ast.expr) -> str:
    """``pytest.mark.req`` for an attribute chain, '' for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_req_mark(call: ast.Call) -> bool:
    name = _dotted(call.func)
    return name in ("pytest.mark.req", "mark.req") or name.endswith(".mark.req")


def req_ids_in(node: ast.AST) -> list[str]:
    """IDs of every ``pytest.mark.req(...)`` call anywhere inside `node` (string constants)."""
    ids: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and _is_req_mark(sub):
            for arg in sub.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    ids.append(arg.value)
                elif isinstance(arg, ast.List | ast.Tuple | ast.Set):
                    ids += [e.value for e in arg.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return ids


def _pytestmark_ids(body: Iterable[ast.stmt]) -> list[str]:
    ids: list[str] = []
    for stmt in body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        if value is not None and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets
        ):
            ids += req_ids_in(value)
    return ids


def _tests_in(
    body: Iterable[ast.stmt], prefix: str, inherited: list[str]
) -> Iterator[tuple[str, list[str]]]:
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            if stmt.name.startswith("test"):
                own = [i for d in stmt.decorator_list for i in req_ids_in(d)]
                yield f"{prefix}::{stmt.name}", inherited + own
        elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
            marks = [i for d in stmt.decorator_list for i in req_ids_in(d)]
            marks += _pytestmark_ids(stmt.body)
            yield from _tests_in(stmt.body, f"{prefix}::{stmt.name}", inherited + marks)


def scan_tests(tests_dir: Path) -> dict[str, list[str]]:
    """Map each requirement ID to the tests (``path::Class::name``) that name it."""
    covered: dict[str, list[str]] = {}
    base = tests_dir.parent
    for path in sorted(tests_dir.rglob("*.py")):
        if not (path.name.startswith("test_") or path.name.endswith("_test.py")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as exc:
            print(f"warning: cannot parse {path}: {exc}", file=sys.stderr)
            continue
        prefix = path.relative_to(base).as_posix()
        for test, ids in _tests_in(tree.body, prefix, _pytestmark_ids(tree.body)):
            for req_id in dict.fromkeys(ids):
                covered.setdefault(req_id, []).append(test)
    return covered


def render(requirements: list[Requirement], covered: dict[str, list[str]]) -> str:
    """The report text: table, unknown IDs, summary."""
    rows = [("ID", "level", "covered by")]
    for req in requirements:
        tests = covered.get(req.id, [])
        rows.append((req.id, req.level, ", ".join(tests) if tests else "-- NOT COVERED --"))
    width_id = max(len(r[0]) for r in rows)
    width_level = max(len(r[1]) for r in rows)
    lines = [f"{a:<{width_id}} | {b:<{width_level}} | {c}" for a, b, c in rows]
    lines.insert(1, f"{'-' * width_id}-+-{'-' * width_level}-+-{'-' * 10}")
    known = {r.id for r in requirements}
    for unknown in sorted(set(covered) - known):
        users = ", ".join(covered[unknown])
        lines.append(f"warning: {unknown} is not in the spec; used by {users}")
    done = sum(1 for r in requirements if covered.get(r.id))
    lines.append(f"covered {done}/{len(requirements)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the report; exit 0 (2, with one line, when the spec cannot be read)."""
    parser = argparse.ArgumentParser(description="Requirement coverage report.")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC,
                        help=f"requirements.md (default {DEFAULT_SPEC})")
    parser.add_argument("--tests", type=Path, default=DEFAULT_TESTS,
                        help=f"tests directory (default {DEFAULT_TESTS})")
    args = parser.parse_args(argv)
    try:
        text = args.spec.read_text(encoding="utf-8")
    except OSError as exc:
        # The spec lives beside the repository, not in it: a clone elsewhere has none.
        parser.exit(2, f"requirements_report: cannot read the spec {args.spec}: "
                       f"{exc.strerror or exc}; give its path with --spec PATH\n")
    requirements = parse_spec(text)
    print(render(requirements, scan_tests(args.tests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
