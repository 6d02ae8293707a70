"""A dataclass decorator for values the core makes on every handshake: frozen to the type
checker, a plain `__init__` at run time.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (it
must pass by the `__setattr__` that refuses changes): on CPython 3.11 about 1,300 machine
instructions a field, where a plain slotted `__init__` stores a field in a few. A PSK handshake
makes a dozen such messages and keys, about 60 field stores, 3 % of its instructions.
`statically_frozen` makes a slotted dataclass that compares and hashes as a frozen one (equality
and hash by fields, `dataclasses.replace`, a class-defined `__repr__` kept) and that `mypy
--strict`, through `typing.dataclass_transform(frozen_default=True)`, refuses to assign to; at run
time nothing refuses an assignment. The values the library hands to its users (events, sessions,
identities) stay frozen dataclasses; this is for the core's own messages and key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["statically_frozen"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def statically_frozen(cls: type[T], /) -> type[T]:
    """`@dataclass(frozen=True, slots=True)` to mypy; at run time the same without `frozen`
    (hash by fields kept through `unsafe_hash`, as a frozen dataclass with `eq` has it)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
