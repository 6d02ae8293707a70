"""Socket addresses as people read them, in logs and messages: `HOST:PORT`, `[V6]:PORT`, and
`[fe80::1%eth0]:PORT` for an IPv6 address with a scope id (a link-local address means nothing
without its interface: RFC 4007 §11 writes the zone after "%")."""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["format_address", "format_hostport"]


def format_hostport(host: str, port: int) -> str:
    """`HOST:PORT`, or `[V6]:PORT` for an IPv6 address (a zone included: `[fe80::1%eth0]:PORT`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_address(address: Any) -> str:
    """A socket address: (host, port), or IPv6's (host, port, flowinfo, scope_id) with a
    non-zero scope id written as the interface's name (its index when the name is unknown);
    anything else as its repr."""
    if not (isinstance(address, tuple) and len(address) >= 2):
        return repr(address)
    host = str(address[0])
    if len(address) >= 4 and address[3] and "%" not in host:
        host = f"{host}%{interface_name(address[3])}"
    return format_hostport(host, address[1])


def interface_name(index: int) -> str:
    """The name of the network interface `index` ("eth0"), or the index when there is none."""
    try:
        return socket.if_indextoname(index)
    except (OSError, OverflowError, TypeError, ValueError):
        return str(index)
