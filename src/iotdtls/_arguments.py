"""Checks of what the adapters (`aio`, `sync`, `workers`) are given, made before any socket
exists, and of the data given to send: a mistake is one line naming the argument and what to
pass, not an error from deep inside the library (or from the socket layer, which wraps a port
above 65535 around)."""

from __future__ import annotations

import inspect
import ipaddress
import math
import numbers
import sys
from socket import (
    AF_INET,
    AF_INET6,
    IPPROTO_IP,
    IPPROTO_IPV6,
    SOCK_DGRAM,
    AddressFamily,
    socket,
)
from typing import Any

from iotdtls._addresses import format_hostport, listening_on, reaching
from iotdtls.chaincache import ChainCache
from iotdtls.config import ClientConfig, ServerConfig, type_name
from iotdtls.errors import ConfigError
from iotdtls.sessions import MemorySessionStore, SessionState

__all__ = [
    "byte_size",
    "check_bound_sock_agrees",
    "check_bytes_like",
    "check_client_arguments",
    "check_host",
    "check_no_recverr",
    "check_port",
    "check_server_arguments",
    "check_session",
    "check_session_store",
    "check_sock",
    "check_timeout",
    "check_type",
    "is_bound",
    "sealable",
    "sock_address",
    "wrong_family",
]

#: The largest UDP port number (RFC 768: a 16-bit field).
MAX_PORT = 65535


def check_port(port: object, *, any_port: bool = False) -> int:
    """`port` is an int from 1 to 65535, or 0 too with `any_port` (a server's "any free port");
    `TypeError` or `ConfigError` (a `ValueError`) otherwise. Returns it as a plain int, for the
    caller to use from then on: the resolver refuses an int subclass such as an `IntEnum`'s
    member ("Int or String expected"), which passes this check."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, got {type_name(port)}")
    lowest = 0 if any_port else 1
    if not lowest <= port <= MAX_PORT:
        raise ConfigError(f"port must be from {lowest} to {MAX_PORT}, got {port}")
    return int(port)


def check_host(host: object, *, server: bool = False) -> None:
    """`host` is a str; not "", which the resolver refuses (socket.gaierror) though
    `socket.bind` would take it for every IPv4 address (a server is told to give "0.0.0.0",
    or "::", every address, IPv4 too: its socket has IPV6_V6ONLY off, `datagram.dual_stack`);
    not an IPv6 address in brackets ("[::1]"), which are for `[V6]:PORT` and URIs (RFC 3986
    §3.2.2), not for a host alone. Nor None for a server, which getaddrinfo's passive lookup
    would bind to every address: an unset variable must not expose a server on every
    interface, so every address is asked for by name (`TypeError`)."""
    if host is None and server:
        raise TypeError(
            'host is None: give "0.0.0.0" (every IPv4 address), "::" (every address, IPv4 '
            "too) or the address to serve on"
        )
    check_type("host", host, str)
    if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
        raise ConfigError(
            f"host {host!r} is in brackets: give it without them, {host[1:-1]!r} (brackets "
            "are for [V6]:PORT and URIs)"
        )
    if host == "":
        if server:
            raise ConfigError(
                'host is empty: give "0.0.0.0" (every IPv4 address), "::" (every address, '
                "IPv4 too) or the address to serve on"
            )
        raise ConfigError("host is empty: give the server's name or IP address")


def check_type(
    name: str, value: object, kind: type, hint: str = "", *, optional: bool = False
) -> None:
    """`value` is a `kind` (or None, when `optional`); else `TypeError` naming the argument, the
    type it takes (with `hint`: how to make one) and what it got."""
    if not (isinstance(value, kind) or (optional and value is None)):
        article = "an" if kind.__name__[0] in "aeiouAEIOU" else "a"
        raise TypeError(
            f"{name} must be {article} {kind.__name__}{hint}, got {type_name(value)}"
        )


def check_client_arguments(
    host: object,
    port: object,
    config: object,
    *,
    sock: object,
    chain_cache: object,
    session: object,
) -> int:
    """What `aio.connect` and `sync.connect` take; returns the port as a plain int
    (`check_port`)."""
    check_host(host)
    checked_port = check_port(port)
    check_type("config", config, ClientConfig)
    check_sock(sock)
    if isinstance(sock, socket) and isinstance(host, str):
        check_sock_family(sock, host)
    check_type("chain_cache", chain_cache, ChainCache, " (ChainCache(directory))", optional=True)
    check_session(session)
    return checked_port


def check_server_arguments(
    host: object, port: object, config: object, *, sock: object, session_store: object
) -> int:
    """What `aio.serve` takes besides its handler; returns the port as a plain int
    (`check_port`). The host may be None with a `sock` bound already, which is served where
    it is bound (a host is not used then); with a `sock` it would bind, None is refused as
    without one (`check_host`)."""
    if host is not None or sock is None:
        check_host(host, server=True)
    checked_port = check_port(port, any_port=True)
    check_type("config", config, ServerConfig)
    check_sock(sock)
    if isinstance(sock, socket) and is_bound(sock):
        check_bound_sock_agrees(sock, host, checked_port)
    elif host is None and isinstance(sock, socket):
        raise TypeError(
            'host is None and sock is not bound: bind it, or give "0.0.0.0", "::" or the '
            "address to bind it to"
        )
    check_session_store(session_store)
    return checked_port


def check_bound_sock_agrees(sock: socket, host: object, port: int) -> None:
    """A server's `sock=` bound already is served where it is bound: a `host` and `port` given
    with it must say the same, or a `ConfigError` names both (serve("::1", 5684, sock=s) with
    `s` on 127.0.0.1:46255 served there silently, even of the other IP family: probe CK).
    Agreeing: a host of None (served where it is), or an IP address equal to the bound one
    (its zone left aside); a port of 0 ("any free port"), or the bound one. A name is not
    resolved to compare (a resolver's answer may differ from the bind's): it is refused."""
    bound_host, bound_port = sock.getsockname()[:2]
    where = format_hostport(bound_host, bound_port)
    fix = f"give host None (served where it is bound) or {bound_host!r}, and port 0 or {bound_port}"
    if isinstance(host, str):
        try:
            same = _ip_without_zone(host) == _ip_without_zone(bound_host)
        except ValueError:
            raise ConfigError(
                f"host {host!r} is a name and sock is bound already, to {where}: a name is not "
                f"resolved to compare; {fix}"
            ) from None
        if not same:
            raise ConfigError(f"host {host!r} disagrees with sock, bound to {where}: {fix}")
    if port not in (0, bound_port):
        raise ConfigError(f"port {port} disagrees with sock, bound to {where}: {fix}")


def _ip_without_zone(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP address `text` is, its IPv6 zone ("%eth0") left aside; `ValueError` for a name."""
    return ipaddress.ip_address(text.partition("%")[0])


def is_bound(sock: socket) -> bool:
    """Whether the (open, AF_INET or AF_INET6) `sock` has a local address: an unbound UDP
    socket says port 0, which a bound one never has (binding to 0 picks a free port)."""
    port: int = sock.getsockname()[1]
    return port != 0


def check_sock(sock: object) -> None:
    """`sock=`: None or an open UDP socket. A TCP socket is a `TypeError` (a server would never
    receive a datagram on it, a client would fail with ConnectionRefusedError), and so is a
    datagram socket of another family than AF_INET and AF_INET6 (AF_UNIX: the adapters
    failed on its addresses with an unrelated IndexError or TypeError), a closed one a
    `ConfigError` (not "Bad file descriptor" from the socket layer), and so is one with
    IP_RECVERR or IPV6_RECVERR set (Linux, `_RECVERR`)."""
    check_type("sock", sock, socket, optional=True)
    if isinstance(sock, socket):
        if sock.fileno() == -1:
            raise ConfigError("sock is closed: pass an open UDP socket (SOCK_DGRAM)")
        if sock.type != SOCK_DGRAM:
            raise TypeError(f"sock must be a UDP socket (SOCK_DGRAM), got {sock.type.name}")
        if sock.family not in (AF_INET, AF_INET6):
            raise TypeError(
                f"sock must be an AF_INET or AF_INET6 UDP socket, got {_family_name(sock)}"
            )
        check_no_recverr(sock)


def _family_name(sock: socket) -> str:
    family = sock.family
    return family.name if isinstance(family, AddressFamily) else str(family)


#: Linux's options that queue each ICMP error a socket gets on its error queue (`ip(7)`,
#: `ipv6(7)`; Python's socket module lacks them), by the families they apply to; IP_RECVERR
#: applies to an IPv6 socket's IPv4-mapped traffic too.
_RECVERR: list[tuple[tuple[int, ...], int, int, str]] = [
    ((AF_INET, AF_INET6), IPPROTO_IP, 11, "IP_RECVERR"),
    ((AF_INET6,), IPPROTO_IPV6, 25, "IPV6_RECVERR"),
]


def check_no_recverr(sock: socket) -> None:
    """A UDP socket with IP_RECVERR or IPV6_RECVERR set is a `ConfigError`: the adapters never
    read its error queue (MSG_ERRQUEUE), so after one ICMP error poll and epoll reported
    POLLERR for ever and both would spin at full CPU for the rest of the association. Our
    own sockets never set them; only a caller's `sock=` can."""
    if not sys.platform.startswith("linux"):
        return
    for families, level, option, name in _RECVERR:
        if sock.family in families:
            try:
                enabled = sock.getsockopt(level, option)
            except OSError:  # not a socket the option applies to
                continue
            if enabled:
                raise ConfigError(
                    f"sock has {name} set: the adapters do not read its error queue; clear it"
                    f" (setsockopt {name} 0)"
                )


#: The IP version of each socket family.
_VERSIONS: dict[int, int] = {AF_INET: 4, AF_INET6: 6}


def check_sock_family(sock: socket, host: str) -> None:
    """A client's `sock=` of one IP family and a host that is an address of the other: a
    `ConfigError` naming both (the socket layer said "AF_INET address must be a pair", or
    that the resolver could not resolve the address). A name is resolved for the socket's
    family later (`sync`)."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return
    if sock.family in _VERSIONS and _VERSIONS[sock.family] != version:
        raise wrong_family(sock.family, host, f"is an IPv{version} address")


def sock_address(sock: socket, infos: list[tuple[Any, ...]], host: str) -> Any:
    """The address a caller's `sock=` connects or binds to for `host`: the first of
    getaddrinfo's `infos` of the socket's family, in the resolver's order (RFC 6724), whole, so
    an IPv6 address keeps its scope id (a link-local address's zone, RFC 4007 §11; a bare
    `(host, port)` would give it scope 0, "Invalid argument"). A `ConfigError` when `host` has
    no address of that family."""
    if sock.family in _VERSIONS:
        infos = [info for info in infos if info[0] == sock.family]
        if not infos:
            raise wrong_family(sock.family, host, "has no address of that family")
    return infos[0][4]


def attach_socket(
    sock: socket, infos: list[tuple[Any, ...]], host: str, port: int, *, bind: bool = False
) -> None:
    """Connect a caller's `sock=` (bind it, for a server: `bind=True`) to its address among
    getaddrinfo's `infos` for `host:port` (`sock_address`); a socket error is raised again
    naming what failed, as `reaching` ("cannot reach ...") or `listening_on` ("cannot listen
    on ...") says it."""
    address = sock_address(sock, infos, host)
    with (listening_on if bind else reaching)(host, port):
        if bind:
            sock.bind(address)
        else:
            sock.connect(address)


def wrong_family(family: int, host: str, what: str) -> ConfigError:
    """The error for a `sock=` of `family` (AF_INET or AF_INET6) and a `host` that `what`
    ("is an IPv6 address", "has no address of that family")."""
    ours = _VERSIONS[family]
    other = AF_INET6 if family == AF_INET else AF_INET
    return ConfigError(
        f"sock is an {AddressFamily(family).name} (IPv{ours}) socket but {host} {what}: pass "
        f"an {other.name} socket, or an IPv{ours} address"
    )


def check_session(session: object) -> None:
    """A client's `session=`: a `SessionState` or None (saved bytes go through from_bytes)."""
    check_type("session", session, SessionState, " (SessionState.from_bytes(saved))",
               optional=True)


def check_session_store(session_store: object) -> None:
    """A server's `session_store=`: None, or an object with the methods of a `SessionStore`
    (the endpoint's own `MemorySessionStore` passes at once: it is given to every association
    it makes). A class is refused (its methods are unbound), and so is an `async def` method:
    the handshake calls the store synchronously, on the event loop (RES-1), so a coroutine
    would never run and its result would not be a session."""
    if session_store is None or type(session_store) is MemorySessionStore:
        return
    methods = ("get", "put", "remove")
    if not all(callable(getattr(session_store, method, None)) for method in methods):
        raise TypeError(
            "session_store must be a SessionStore (with get, put and remove), "
            f"got {type_name(session_store)}"
        )
    if isinstance(session_store, type):
        name = session_store.__name__
        raise TypeError(
            f"session_store must be a SessionStore instance, got the class {name}: pass {name}()"
        )
    for method in methods:
        if inspect.iscoroutinefunction(getattr(session_store, method)):
            raise TypeError(
                f"session_store.{method} must be a plain function, not async def: the store is "
                "called synchronously on the event loop; keep a slow store's data in memory "
                "(see README, Session resumption)"
            )


def check_timeout(timeout: object, *, optional: bool = False) -> float | None:
    """A blocking call's `timeout`, as a float: a number of seconds, 0 or more (infinity: no
    limit), any `numbers.Real` but a bool (a Fraction, numpy's numbers, as `wall_clock`'s
    answer; an int beyond any float is infinity), or None too when `optional`. NaN or a
    negative number is a `ValueError`, as `socket.settimeout` says: a NaN deadline never
    passes, and a wait computed from it returned at once, spinning a core until data came."""
    if timeout is None:
        if not optional:
            raise TypeError("timeout must be a number of seconds, got None")
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"timeout must be {kind}, got {type_name(timeout)}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int (or a Fraction) beyond any float
        seconds = -math.inf if timeout < 0 else math.inf
    if math.isnan(seconds):
        raise ValueError("timeout must be a number of seconds, got nan")
    if seconds < 0:
        raise ValueError(f"timeout must not be negative, got {_shown(timeout)}")
    return seconds


def _shown(number: numbers.Real) -> str:
    """`number` in an error message: its repr, unless that is too long to read (or to make:
    the repr of 10**5000 raises ValueError)."""
    try:
        shown = repr(number)
    except ValueError:  # more digits than `sys.set_int_max_str_digits` lets str() make
        return "a number beyond any float"
    return shown if len(shown) <= 40 else f"a number of {len(shown)} characters"


def check_bytes_like(data: object) -> None:
    """`data` is bytes, a bytearray or a memoryview; else `TypeError` (raised on its own, even
    while another is being handled)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _not_bytes_like(data) from None


def _not_bytes_like(data: object) -> TypeError:
    return TypeError(
        f"data must be bytes-like (bytes, bytearray, memoryview), got {type_name(data)}"
    )


def sealable(data: object) -> bytes | bytearray | memoryview:
    """`data` to send as one record, its len() its size in bytes: bytes and a bytearray as they
    are; a memoryview of any format (`array('H')`'s, `cast('I')`) as its bytes, `cast('B')`:
    len() of a view counts its items, not its bytes, and the cipher takes only views of bytes.
    A view that is not C-contiguous (`view[::2]`) has no bytes in one piece to seal, and a
    released one (`view.release()`, or the end of its `with`) none at all: a `TypeError`
    saying what to pass, as for data that is not bytes-like (a released view raises
    ValueError, "operation forbidden on released memoryview object", at any use)."""
    if isinstance(data, bytes | bytearray):
        return data
    if not isinstance(data, memoryview):
        raise _not_bytes_like(data)
    if _released(data):
        raise TypeError(
            "data is a released memoryview: pass bytes(data) before releasing it, or a view "
            "that is not released"
        )
    if not data.c_contiguous:
        raise TypeError(
            "data is a memoryview that is not contiguous: pass bytes(data), or a contiguous view"
        )
    return data.cast("B")


def _released(view: memoryview) -> bool:
    """Whether `view` has been released (memoryview has no attribute that says so: reading
    any of them raises ValueError)."""
    try:
        _ = view.nbytes
    except ValueError:
        return True
    return False


def byte_size(data: bytes | bytearray | memoryview) -> int:
    """The size in bytes of what `send` was given (a memoryview's len() counts its items), for
    the error that names it."""
    return memoryview(data).nbytes
