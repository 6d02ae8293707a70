"""An `Enum` base whose members hash in C.

`enum.Enum.__hash__` is a Python method (the hash of the member's name), so every dict or set
lookup keyed by a plain Enum member, a handshake state in a transition table say, runs a Python
call. Members are singletons that compare by identity, so object's identity hash agrees with
their equality and costs nothing. `IntEnum` members hash as ints already and need none of this.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["IdentityHashEnum"]


class IdentityHashEnum(Enum):
    """Base of the plain enums used as dict keys (handshake states, counted reasons, `Mode`)."""

    __hash__ = object.__hash__
