"""Socket addresses as people read them, in logs and messages: `HOST:PORT`, `[V6]:PORT`, and
`[fe80::1%eth0]:PORT` for an IPv6 address with a scope id (a link-local address means nothing
without its interface: RFC 4007 §11 writes the zone after "%"). In a URI the "%" is itself
percent-encoded, `[fe80::1%25eth0]` (RFC 6874 §2): `uri_host` writes that form and
`host_from_uri` reads it back (the bare "%" too, as RFC 6874 §4 suggests accepting)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

logger = logging.getLogger(__name__)

__all__ = [
    "UnusableAddress",
    "UnusableName",
    "address_mistake",
    "check_usable",
    "format_address",
    "format_hostport",
    "host_from_uri",
    "host_port",
    "interface_name",
    "listening_on",
    "misplaced_zone",
    "reaching",
    "resolve",
    "socket_error",
    "socket_to",
    "unknown_interface",
    "uri_host",
    "zone_needed",
]

#: RFC 6874 §2: in a URI, the zone of an IPv6 address follows the percent-encoded "%".
_URI_ZONE = "%25"


class UnusableAddress(OSError):
    """An IPv6 address naming no usable interface: a link-local one without its zone
    (`zone_needed`), or a zone naming no interface of this host (`unknown_interface`). Raised
    by `reaching` and `listening_on` (an `OSError` with the kernel's errno, as any socket
    error: `UnusableName` where the resolver refused it) and `check_usable`. It is a mistake
    of configuration, found before any datagram is sent: the command line reports it in one
    line with status 2, as its other usage mistakes (`iotdtls.cli`)."""


class UnusableName(socket.gaierror, UnusableAddress):
    """An `UnusableAddress` the resolver refused: a `socket.gaierror` (EAI_NONAME), as before."""


def format_hostport(host: str, port: int) -> str:
    """`HOST:PORT`, or `[V6]:PORT` for an IPv6 address (a zone included: `[fe80::1%eth0]:PORT`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_address(address: Any) -> str:
    """A socket address for a log line or a message: (host, port), or IPv6's (host, port,
    flowinfo, scope_id) with a non-zero scope id written as the interface's name (its index
    when the name is unknown); an IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2: an IPv4 peer
    of a socket on "::") as the IPv4 address it is, `127.0.0.1:41652`, not
    `[::ffff:127.0.0.1]:41652`; anything else as its repr. Only for reading: the address
    sent to stays the socket's."""
    if not (isinstance(address, tuple) and len(address) >= 2):
        return repr(address)
    return format_hostport(_unmapped(_zoned_host(address)), address[1])


def _unmapped(host: str) -> str:
    """The IPv4 address an IPv4-mapped IPv6 `host` holds (`::ffff:127.0.0.1`: 127.0.0.1),
    else `host` as it is."""
    if "%" in host or "ffff" not in host.lower():  # not one: no parse per log line
        return host
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return host if mapped is None else str(mapped)


def host_port(address: tuple[Any, ...]) -> tuple[str, int]:
    """The (host, port) of a socket address, a non-zero IPv6 scope id kept as the host's zone
    (`("fe80::1%eth0", 5684)`, which getaddrinfo reads back with its scope id)."""
    return _zoned_host(address), int(address[1])


def _zoned_host(address: Any) -> str:
    """The host of a socket address with its zone, `fe80::1%eth0` (RFC 4007 §11): the one its
    host names, else the interface of a non-zero scope id."""
    host = str(address[0])
    if len(address) >= 4 and address[3] and "%" not in host:
        host = f"{host}%{interface_name(address[3])}"
    return host


def uri_host(address: Any) -> str:
    """The host of a socket address as a URI writes it (RFC 3986 §3.2.2): an IPv6 address in
    brackets, its zone after "%25" and percent-encoded (RFC 6874 §2), as in
    `[fe80::1%25eth0]`."""
    host, _, zone = _zoned_host(address).partition("%")
    if zone:
        host = f"{host}{_URI_ZONE}{quote(zone, safe='')}"
    return f"[{host}]" if ":" in host else host


def host_from_uri(host: str) -> str:
    """The host of a URI's authority (without brackets) as sockets take it: an IPv6 zone written
    after "%25" (RFC 6874 §2) percent-decoded and after a plain "%" (`fe80::1%eth0`, the form
    RFC 6874 §4 suggests accepting, and `HOST:PORT` arguments take); other hosts as they are.
    A `ValueError` for an empty zone (`fe80::1%25`, `fe80::1%`): RFC 6874 §2's ZoneID has at
    least one character (interface 25 is written `%2525`)."""
    if ":" not in host or "%" not in host:
        return host
    address, _, zone = host.partition("%")
    if zone.startswith("25"):  # "%25" is the encoded "%"
        zone = unquote(zone.removeprefix("25"))
    if not zone:
        raise ValueError(
            f"the IPv6 zone of [{host}] is empty (RFC 6874): give the interface, as in "
            f"[{address}%25eth0]"
        )
    return f"{address}%{zone}"


def misplaced_zone(host: str) -> tuple[str, str] | None:
    """For a host with a zone (after "%", or "%25" in a URI) that is not an IPv6 address,
    which no resolver takes (RFC 4007 §11: a zone is an IPv6 address's): what is wrong, "an
    IPv4 address takes no zone" (`127.0.0.1%lo`), or for a name "a zone follows an IPv6
    address only", and the host without its zone ("" for a zone alone, `%lo`); None for any
    other host, and for one with a ":" before its "%" (an IPv6 address, or what only brackets
    may hold)."""
    bare, percent, _ = host.partition("%")
    if not percent or ":" in bare:
        return None
    try:
        ipaddress.IPv4Address(bare)
    except ValueError:
        return "a zone follows an IPv6 address only", bare
    return "an IPv4 address takes no zone", bare


def interface_name(index: int) -> str:
    """The name of the network interface `index` ("eth0"), or the index when there is none."""
    try:
        return socket.if_indextoname(index)
    except (OSError, OverflowError, TypeError, ValueError):
        return str(index)


@contextlib.contextmanager
def reaching(host: str, port: int) -> Iterator[None]:
    """Around resolving `host` and connecting a client's socket to `host:port`: a socket error
    raised again naming what failed, same type and errno (an `UnusableAddress`, a subclass,
    for an address naming no usable interface). The resolver's `socket.gaierror`
    names nothing ("Name or service not known"): "cannot resolve gw.example: Name or service
    not known"; an IPv6 address whose zone names no interface of this host fails there too,
    and is named as such: "cannot reach [fe80::1%nosuch]:5684: the network interface nosuch
    is unknown". The kernel refuses a link-local IPv6 address without its interface with a bare
    "Invalid argument": the message says to add it instead, "cannot reach [fe80::1]:5684: a
    link-local address needs %interface, as in [fe80::1%eth0]:5684"."""
    try:
        yield
    except socket.gaierror as exc:
        if unknown := unknown_interface(host):
            text = f"cannot reach {format_hostport(host, port)}: {unknown}"
            raise UnusableName(exc.errno, text) from None
        raise socket.gaierror(exc.errno, f"cannot resolve {host}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise _named(exc, f"cannot reach {format_hostport(host, port)}", host, port) from None


@contextlib.contextmanager
def listening_on(host: str, port: int) -> Iterator[None]:
    """Around resolving `host` and binding a server's socket to `host:port`: a socket error
    raised again naming the address, same type and errno ("cannot listen on 127.0.0.1:5684:
    Address already in use"; for a link-local address without its interface, what to write
    instead, as `reaching` says, an `UnusableAddress` as there)."""
    try:
        yield
    except OSError as exc:
        raise _named(exc, f"cannot listen on {format_hostport(host, port)}", host, port) from None


def _named(exc: OSError, doing: str, host: str, port: int) -> OSError:
    """`exc` made again with `doing` and what went wrong (`socket_error`), same errno; same
    type, or for an address naming no usable interface (`address_mistake`), an
    `UnusableAddress` (`UnusableName` for a `socket.gaierror`)."""
    kind: type[OSError] = type(exc)
    if address_mistake(exc, host, port):
        kind = UnusableName if isinstance(exc, socket.gaierror) else UnusableAddress
    text = f"{doing}: {socket_error(exc, host, port)}"
    return kind(text) if exc.errno is None else kind(exc.errno, text)


def check_usable(host: str, port: int) -> None:
    """An `UnusableAddress` when the IPv6 address `host` names no usable interface, a
    link-local one without its zone or a zone naming no interface (what `reaching` would
    raise on the first datagram: "cannot reach [fe80::1]:5684: a link-local address needs
    %interface, as in [fe80::1%eth0]:5684"), for the commands that would otherwise only see
    it as every association failing (`iotdtls perf`) or in another library's words (`coap`
    requests); nothing for any other host."""
    where = format_hostport(host, port)
    if needed := zone_needed(host, port):
        raise UnusableAddress(errno.EINVAL, f"cannot reach {where}: {needed}")
    if unknown := unknown_interface(host):
        raise UnusableAddress(errno.ENODEV, f"cannot reach {where}: {unknown}")


def socket_to(target: tuple[Any, ...], host: str, port: int) -> socket.socket:
    """A UDP socket connected to `target`, one of getaddrinfo's answers for `host:port`, for
    the adapters' clients trying each address in turn (`aio.connect`, `sync.connect`): an
    `OSError` (named by `reaching`, the socket closed) moves them on to the next address."""
    family, kind, proto, _, address = target
    sock = socket.socket(family, kind, proto)
    try:
        with reaching(host, port):
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def sockets_in_turn(
    targets: list[tuple[Any, ...]], host: str, port: int
) -> Iterator[socket.socket]:
    """For a client trying getaddrinfo's answers for `host:port` in turn before the last one
    (IPv6 and IPv4 of one name, `aio.connect`, `sync.connect`): a socket connected to each of
    `targets`; one whose socket cannot connect (`socket_to`) is passed over, logged."""
    for target in targets:
        try:
            sock = socket_to(target, host, port)
        except OSError as exc:
            logger.info("%s; trying the next address of %s", exc, host)
            continue
        yield sock


def socket_error(exc: OSError, host: str, port: int) -> str:
    """What went wrong using `host:port`: the error's text, or for the kernel's "Invalid
    argument" about a link-local IPv6 address without its interface, what to write instead;
    for an IPv6 address whose zone names no interface (`unknown_interface`), that."""
    return address_mistake(exc, host, port) or exc.strerror or str(exc)


def address_mistake(exc: OSError, host: str, port: int) -> str:
    """What `socket_error` says when `exc` came of an address naming no usable interface (the
    kernel's "Invalid argument" for a link-local IPv6 address without its interface; a zone
    naming no interface, whatever the error), else ""."""
    if exc.errno == errno.EINVAL and (needed := zone_needed(host, port)):
        return needed
    return unknown_interface(host)


def unknown_interface(host: str) -> str:
    """For an IPv6 address whose zone (RFC 4007 §11) names no network interface of this host,
    by name, `fe80::1%nosuch` (which the resolver refuses with "Name or service not known",
    and Python's with UnicodeError for a name longer than 63 characters, `resolve`), or by
    index, `fe80::1%99` (the kernel: "Network is unreachable"; index 0, no interface at all:
    "Invalid argument"), "the network interface nosuch is unknown"; "" for any other host."""
    address, _, zone = host.partition("%")
    if not zone or ":" not in address:
        return ""
    try:
        if zone.isdigit():
            socket.if_indextoname(int(zone))
        else:
            socket.if_nametoindex(zone)
    except (OSError, OverflowError):
        return f"the network interface {zone} is unknown"
    return ""


def resolve(host: str, port: int, flags: int = 0, proto: int = 0) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo(host, port)` for UDP, where every address is resolved (clients,
    servers, the proxy, the workers), as the `reaching` and `listening_on` blocks around it
    name its errors. A host that cannot be a name, for the labels Python's idna codec refuses
    (longer than 63 characters or empty, RFC 1035 §2.3.4; a zone is encoded with its
    address, `fe80::1%` and 64 characters), raised UnicodeError, and a traceback: it is a
    `socket.gaierror` (EAI_NONAME) as a name that does not resolve, "not a valid host name
    (label too long)"; `reaching` then names a zone as an unknown interface."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=proto, flags=flags)
    except UnicodeError as exc:
        reason = exc.__cause__ or exc
        raise socket.gaierror(socket.EAI_NONAME, f"not a valid host name ({reason})") from None


def zone_needed(host: str, port: int) -> str:
    """For a link-local IPv6 address without its interface (which the kernel refuses with a
    bare "Invalid argument"), what to write instead, its zone after "%" (RFC 4007 §11): "a
    link-local address needs %interface, as in [fe80::1%eth0]:5684"; so too for a multicast
    address of link-local or interface-local scope (ff02::/16, ff01::/16: RFC 4291 §2.7,
    scopes 2 and 1), "a link-local multicast address needs ..."; "" for any other host."""
    kind = _scoped_without_zone(host)
    if not kind:
        return ""
    return f"{kind} address needs %interface, as in {format_hostport(f'{host}%eth0', port)}"


#: The scope field (RFC 4291 §2.7) of the multicast addresses that need a zone, and their name.
_MULTICAST_SCOPES = {1: "an interface-local multicast", 2: "a link-local multicast"}


def _scoped_without_zone(host: str) -> str:
    """What `host` is, when it is an IPv6 address the kernel needs a zone for and it has
    none ("a link-local", "a link-local multicast"); else ""."""
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return ""
    if address.scope_id is not None:
        return ""
    if address.is_link_local:
        return "a link-local"
    if address.is_multicast:
        return _MULTICAST_SCOPES.get(address.packed[1] & 0x0F, "")
    return ""
