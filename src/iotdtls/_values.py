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

`plainly_built` is for those frozen ones that the core makes on every handshake
(`HandshakeComplete`, `SessionState`): a constructor that makes the value as a plain slotted
twin of its class (the same fields in the same slots, set by plain stores) and then gives it
its class, by `__class__` assignment, which CPython allows between classes of one slot layout.
The value is then an instance of the frozen class like any other: equal, hashed, shown and
refusing assignment (`FrozenInstanceError`) as one; only its making skips the field-by-field
`object.__setattr__` (a `HandshakeComplete` of six fields about 4k instructions, not 10k).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from typing import Any, ParamSpec, TypeVar, cast, dataclass_transform

__all__ = ["plainly_built", "statically_frozen"]

T = TypeVar("T")
P = ParamSpec("P")


@dataclass_transform(frozen_default=True)
def statically_frozen(cls: type[T], /) -> type[T]:
    """`@dataclass(frozen=True, slots=True)` to mypy; at run time the same without `frozen`
    (hash by fields kept through `unsafe_hash`, as a frozen dataclass with `eq` has it)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


def plainly_built(cls: Callable[P, T], /) -> Callable[P, T]:
    """A constructor of `cls`, a frozen slotted dataclass, taking the same arguments: its
    fields are stored into a plain slotted twin, its `__post_init__` (if any) checks them
    there, and the twin becomes a `cls` (see the module's docstring). `__post_init__` must only
    read the fields (no `super()`, no other method of `cls`)."""
    frozen = cast(Any, cls)
    post_init = getattr(frozen, "__post_init__", None)

    def become(self: object) -> None:
        if post_init is not None:
            post_init(self)
        self.__class__ = frozen

    twin = make_dataclass(
        f"_Plain{frozen.__name__}",
        [
            (
                f.name,
                f.type,
                field(
                    default=f.default,
                    default_factory=f.default_factory,
                    init=f.init,
                    kw_only=f.kw_only if f.kw_only is not MISSING else False,
                ),
            )
            for f in fields(frozen)
        ],
        namespace={"__post_init__": become, "__repr__": frozen.__repr__},
        repr=False,  # the class's own repr, which redacts secrets, even where a check fails
        slots=True,
    )
    object.__new__(twin).__class__ = frozen  # the layouts agree, or TypeError here and now
    return cast(Callable[P, T], twin)
