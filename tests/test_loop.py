"""`iotdtls.loop`: the event loop the adapters run on (issue 9: uvloop when installed, the
`fast` extra), chosen by name, with a one-line error for a wrong or missing choice."""

from __future__ import annotations

import asyncio

import pytest
import uvloop  # the `fast` extra, which `make test` installs

from iotdtls import loop
from iotdtls.errors import ConfigError


async def running_loop_name() -> str:
    return loop.loop_name(asyncio.get_running_loop())


def test_each_choice_runs_on_its_loop() -> None:
    assert loop.uvloop_available()
    assert loop.loop_factory("asyncio") is None
    assert loop.loop_factory("auto") is uvloop.new_event_loop
    assert loop.loop_factory("uvloop") is uvloop.new_event_loop
    assert loop.run(running_loop_name(), "asyncio") == "asyncio"
    assert loop.run(running_loop_name(), "uvloop") == "uvloop"
    assert loop.run(running_loop_name()) == "uvloop"  # auto, the default


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "uvloop_available", lambda: False)
    assert loop.loop_factory("auto") is None
    assert loop.run(running_loop_name(), "auto") == "asyncio"
    with pytest.raises(ConfigError) as caught:
        loop.loop_factory("uvloop")
    assert str(caught.value) == (
        "uvloop is not installed: pip install 'uvloop>=0.19' (or the iotdtls checkout with its"
        " extra: pip install '/path/to/iotdtls[fast]')")


def test_an_unknown_choice_is_refused_and_its_coroutine_closed() -> None:
    with pytest.raises(ConfigError) as caught:
        loop.loop_factory("trio")
    assert str(caught.value) == "loop must be one of auto, asyncio, uvloop, got 'trio'"
    main = running_loop_name()
    with pytest.raises(ConfigError):
        loop.run(main, "trio")
    assert main.cr_frame is None  # closed: no "never awaited" warning


def test_uvloop_available_follows_the_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.importlib.util.find_spec
    monkeypatch.setattr(
        loop.importlib.util, "find_spec",
        lambda name, *args: None if name == "uvloop" else real(name, *args),
    )
    assert not loop.uvloop_available()
