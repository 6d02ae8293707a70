"""The `iotdtls` command's entry point (`[project.scripts]`), a module outside the `iotdtls`
package so that it runs before the package is imported.

Importing the package (the whole core) and `iotdtls.cli` takes most of a second, and the
console script pip writes did it in its own first line, `from iotdtls.cli import main`: a
Ctrl-C then was a KeyboardInterrupt before any handler of ours, a 20-line traceback (probe CE).
Here the import happens inside `main`, and a Ctrl-C before the command runs ends it as one
while it runs does (`iotdtls.cli.main`): quietly, with status 130. Only from `main` on: the
interpreter's start and the wrapper's own imports (`import re`, then this module) come first, a
few tens of milliseconds in which a Ctrl-C is still Python's KeyboardInterrupt traceback.
`python -m iotdtls` cannot be helped so: the interpreter imports the package before its
`__main__`.
"""

from __future__ import annotations

__all__ = ["INTERRUPTED", "main"]

#: The exit status of a command ended by Ctrl-C: 128 + SIGINT, the shell's convention, as
#: `iotdtls.cli.main` returns it.
INTERRUPTED = 130


def main() -> int:
    """Import the command line and run it (`iotdtls.cli.main`, which reads `sys.argv`); a
    Ctrl-C before it runs, while the library is imported or the flags parsed, ends it quietly
    with `INTERRUPTED`."""
    try:
        from iotdtls.cli import main as run_command

        return run_command()
    except KeyboardInterrupt:
        return INTERRUPTED
