"""How a user installs an optional dependency, for the one-line errors that need it.

iotdtls is not on PyPI, so a hint giving pip the bare name iotdtls with an extra would fetch
whatever package of that name someone published there (dependency confusion). The hints
name the dependency itself, with the version range of pyproject.toml's extra
(tests/test_extras.py keeps the two equal), or the checkout installed with its extra.
"""

from __future__ import annotations

__all__ = ["AIOCOAP_HINT", "UVLOOP_HINT", "install_hint"]


def install_hint(requirement: str, extra: str) -> str:
    """The pip commands that install `requirement`, the `extra` of pyproject.toml."""
    return (f"pip install '{requirement}' (or the iotdtls checkout with its extra: "
            f"pip install '/path/to/iotdtls[{extra}]')")


#: pyproject.toml: coap = ["aiocoap==0.4.17"]
AIOCOAP_HINT = install_hint("aiocoap==0.4.17", "coap")
#: pyproject.toml: fast = ["uvloop>=0.19"]
UVLOOP_HINT = install_hint("uvloop>=0.19", "fast")
