"""Summarise a mutmut run (`make mutation`) against docs/mutation.md.

Reads mutmut's results (`mutants/**/*.meta`) and docs/mutation.md, whose lines
"- `mutant name`: why" list, under the heading "## Equivalent mutants", mutants that change no
behaviour and, under "## Open mutants", survivors no test kills yet (with the reason). Prints:

* how many mutants each status has (killed, timeout, survived, no tests, ...);
* the kill rate: mutants detected (killed or timed out) over all mutants, and over all mutants
  less those documented as equivalent;
* the survivors that only change the text of a message (a string literal replaced, emptied or
  cased differently, nothing else): counted apart, as what they are, not as equivalent;
* every other surviving (or untested) mutant that docs/mutation.md does not explain, with
  `mutmut show NAME` to see its diff;
* every mutant listed as equivalent that a test detects after all, or that no longer exists
  (a stale line).

Exits 1 when such an unexplained mutant or stale line exists, so `make mutation` fails until
each one is killed by a test or explained, and the list of equivalents stays true. Names are
mutmut's: `module.function__mutmut_N` (classes appear as `xǁClassǁmethod`).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPLAINED = re.compile(r"^- `([^`]+)`")
#: A str literal (plain or f-string, not bytes) and a bare None in an argument position.
_TEXT = re.compile(r"""(?<![bB])[fF]?(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_NONE_ARG = re.compile(r"(?:(?<=[(,])|^)\s*None\s*(?=[,)]|$)")
#: mutmut's exit codes (mutmut/stats.py) by the status they mean.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", -11: "segfault", -9: "segfault", None: "not checked"}
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def results() -> dict[str, str]:
    statuses: dict[str, str] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        for name, code in data.get("exit_code_by_key", {}).items():
            statuses[name] = STATUS.get(code, "suspicious")
    return statuses


def explained() -> dict[str, set[str]]:
    """Mutant names listed in docs/mutation.md, by the section (`## ...` heading) they are in."""
    doc = ROOT / "docs" / "mutation.md"
    sections: dict[str, set[str]] = {}
    section = ""
    if doc.exists():
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                section = line[3:].strip().lower()
            elif m := EXPLAINED.match(line):
                sections.setdefault(section, set()).add(m.group(1))
    return sections


def message_only(diff: str) -> bool:
    """True when a mutant's diff changes nothing but the text of string literals (a message
    replaced by None counts as text too)."""
    removed = [line[1:] for line in diff.splitlines()
               if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    if not removed or len(removed) != len(added):
        return False

    def shape(line: str) -> str:
        return _NONE_ARG.sub('"S"', _TEXT.sub('"S"', line)).replace(" ", "")

    return all(shape(a) == shape(b) for a, b in zip(removed, added, strict=True)) and any(
        _TEXT.search(line) for line in removed
    )


def diff_of(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # the `mutation` extra

    try:
        return str(get_diff_for_mutant(name))
    except Exception as exc:  # a name mutmut no longer finds: show it as not classified
        return f"? {type(exc).__name__}"


def main() -> int:
    statuses = results()
    if not statuses:
        print("no mutmut results under mutants/: run `make mutation` first")
        return 1
    counts = Counter(statuses.values())
    listed = explained()
    listed_equivalent = listed.get("equivalent mutants", set())
    # Only survivors count as equivalent: a listed mutant that a test kills, or that no longer
    # exists (its code changed), is a stale line.
    equivalent = {name for name in listed_equivalent & set(statuses)
                  if statuses[name] not in DETECTED}
    stale = sorted(listed_equivalent - equivalent)
    still_open = listed.get("open mutants", set()) & set(statuses)
    detected = sum(n for status, n in counts.items() if status in DETECTED)
    total = len(statuses)
    print("mutants: " + ", ".join(f"{n} {status}" for status, n in counts.most_common()))
    print(f"kill rate: {detected}/{total} = {detected / total:.1%} of all mutants; "
          f"{detected}/{total - len(equivalent)} = "
          f"{detected / max(total - len(equivalent), 1):.1%} without the {len(equivalent)} "
          "equivalent ones of docs/mutation.md")
    undetected = sorted(name for name, status in statuses.items()
                        if status not in DETECTED and name not in equivalent)
    texts = [name for name in undetected if message_only(diff_of(name))]
    print(f"{len(texts)} of the surviving mutants only change the text of a message; "
          f"without them: {detected}/{total - len(equivalent) - len(texts)} = "
          f"{detected / max(total - len(equivalent) - len(texts), 1):.1%}")
    print(f"{len(still_open)} open mutants (listed in docs/mutation.md, no test kills them yet)")
    unexplained = [name for name in undetected if name not in set(texts) | still_open]
    for name in unexplained:
        print(f"  {statuses[name]}: {name}")
    if unexplained:
        print(f"{len(unexplained)} mutants neither killed nor explained (`mutmut show NAME`)")
    for name in stale:
        print(f"  {statuses.get(name, 'no such mutant')}: {name}")
    if stale:
        print(f"{len(stale)} mutants listed as equivalent are detected or gone: drop their lines")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
