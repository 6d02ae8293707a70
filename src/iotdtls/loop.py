"""Which asyncio event loop the adapters run on: uvloop when installed (the `fast` extra:
``pip install 'uvloop>=0.19'``), else asyncio's own.

    iotdtls.loop.run(main(), "auto")     # uvloop if installed
    iotdtls.loop.run(main(), "asyncio")  # always the standard loop
    iotdtls.loop.run(main(), "uvloop")   # ConfigError when uvloop is missing

The protocol code does not care: it reads no clock and touches no socket; only the adapters
(`iotdtls.aio`, `iotdtls.workers`, `iotdtls.perf`) run on the loop chosen here.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

from iotdtls._extras import UVLOOP_HINT
from iotdtls.errors import ConfigError

__all__ = [
    "LOOP_CHOICES",
    "LoopChoice",
    "loop_factory",
    "loop_name",
    "run",
    "uvloop_available",
]

LoopChoice = Literal["auto", "asyncio", "uvloop"]
LOOP_CHOICES: tuple[str, ...] = get_args(LoopChoice)
T = TypeVar("T")


def uvloop_available() -> bool:
    """Whether the `fast` extra (uvloop) is installed."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop, or None for asyncio's default."""
    if choice not in LOOP_CHOICES:
        raise ConfigError(f"loop must be one of {', '.join(LOOP_CHOICES)}, got {choice!r}")
    if choice == "asyncio":
        return None
    if not uvloop_available():
        if choice == "uvloop":
            raise ConfigError(f"uvloop is not installed: {UVLOOP_HINT}")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
        "uvloop"
    ).new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio", for logs and reports."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
