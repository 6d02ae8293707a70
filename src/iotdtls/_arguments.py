"""Checks of what the adapters (`aio`, `sync`, `workers`) are given, made before any socket
exists: a mistake is one line naming the argument and what to pass, not an error from deep
inside the library (or from the socket layer, which wraps a port above 65535 around)."""

from __future__ import annotations

from iotdtls.errors import ConfigError

__all__ = ["check_port"]

#: The largest UDP port number (RFC 768: a 16-bit field).
MAX_PORT = 65535


def check_port(port: object, *, any_port: bool = False) -> None:
    """`port` is an int from 1 to 65535, or 0 too with `any_port` (a server's "any free port");
    `TypeError` or `ConfigError` (a `ValueError`) otherwise."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, got {type_name(port)}")
    lowest = 0 if any_port else 1
    if not lowest <= port <= MAX_PORT:
        raise ConfigError(f"port must be from {lowest} to {MAX_PORT}, got {port}")


def type_name(value: object) -> str:
    """How an error message names what it was given: None, or the type's name."""
    return "None" if value is None else type(value).__name__
