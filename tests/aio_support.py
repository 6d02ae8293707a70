"""What the asyncio adapter's tests share: the test credentials with a quick retransmission
timer and a 5 s handshake bound, a bounded run of a coroutine, an echoing handler; and for
the sync adapter's and the workers' tests too, the wrong arguments `connect` and `serve` refuse,
the messages both adapters' clients give, and a record of the UDP sockets a test makes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from array import array
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any

import pytest

from iotdtls import aio
from iotdtls.errors import ConfigError
from tests import interop_support
from tests.interop_support import FAST

server_config = partial(interop_support.server_config, retransmit=FAST, handshake_timeout=5.0)
client_config = partial(interop_support.client_config, retransmit=FAST, handshake_timeout=5.0)


def run(coro: Coroutine[Any, Any, None], limit: float = 20.0) -> None:
    """Run `coro` in a fresh loop with an overall bound."""
    asyncio.run(asyncio.wait_for(coro, limit))


async def eventually(condition: Callable[[], object], timeout: float = 1.0) -> bool:
    """Poll `condition` every 10 ms, letting the loop run, until it holds or `timeout` seconds
    pass; return whether it held (for what a server does after the client has its answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def log_to_file(path: str) -> None:
    """A worker's initializer: its log lines, INFO and above, to the file `path`."""
    logging.basicConfig(filename=path, level=logging.INFO, format="%(name)s: %(message)s")


async def echo(session: aio.ServerSession) -> None:
    async for datagram in session:
        session.send(datagram)


@contextlib.contextmanager
def signal_fallback(sig: signal.Signals) -> Iterator[list[int]]:
    """A handler of `sig` recording what reaches it, for a test that sends itself `sig` to stop
    a server: the server's own handler takes the signal; when it has none (a bug, a mutant),
    the test fails on the recorded signal instead of the test run dying of it."""
    caught: list[int] = []
    previous = signal.signal(sig, lambda number, frame: caught.append(number))
    try:
        yield caught
    finally:
        signal.signal(sig, previous)


#: Arguments `aio.connect` and `sync.connect` refuse (one wrong, the rest right) and the
#: message of the `TypeError` each gives.
WRONG_CLIENT_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"config": None}, "config must be a ClientConfig, got None"),
    ({"config": server_config()}, "config must be a ClientConfig, got ServerConfig"),
    ({"session": b"saved"},
     "session must be a SessionState (SessionState.from_bytes(saved)), got bytes"),
    ({"chain_cache": "cache/"},
     "chain_cache must be a ChainCache (ChainCache(directory)), got str"),
    ({"sock": 3}, "sock must be a socket, got int"),
    ({"host": None}, "host must be a str, got None"),
]


#: What `aio.connect` and `sync.connect` say of an empty host, of a host that does not resolve
#: (the start of the message: the resolver's own reason follows) and of a link-local address
#: without its interface (the kernel's EINVAL said only "Invalid argument"; Linux refuses it
#: whatever interfaces the machine has).
EMPTY_HOST = "host is empty: give the server's name or IP address"
UNRESOLVED = "cannot resolve nonexistent.invalid: "
NEEDS_INTERFACE = (
    "cannot reach [fe80::1]:5684: a link-local address needs %interface, "
    "as in [fe80::1%eth0]:5684"
)

#: Data `send` refuses, on a client of either adapter or a server's session, and the message
#: of the `TypeError` of each.
NOT_BYTES: list[tuple[Any, str]] = [
    ("text", "data must be bytes-like (bytes, bytearray, memoryview), got str"),
    (None, "data must be bytes-like (bytes, bytearray, memoryview), got None"),
    ([1, 2], "data must be bytes-like (bytes, bytearray, memoryview), got list of int"),
    ((b"a", "b", 1), "data must be bytes-like (bytes, bytearray, memoryview), "
     "got tuple of bytes/int/str"),
]

#: Memoryviews `send` takes as their bytes (a view's len() counts its items, and the cipher
#: refused one of another format than bytes: probe CE F1), with the bytes that arrive.
VIEWS: list[tuple[memoryview, bytes]] = [
    (memoryview(array("H", [0x4141, 0x4242])), b"AABB"),
    (memoryview(b"abcd").cast("I"), b"abcd"),
    (memoryview(b"abcdef").cast("B", [2, 3]), b"abcdef"),
]
#: A view that is not contiguous, which `send` refuses, and the message of its `TypeError`.
NOT_CONTIGUOUS = (
    memoryview(b"abcdef")[::2],
    "data is a memoryview that is not contiguous: pass bytes(data), or a contiguous view",
)


def _released_view() -> memoryview:
    view = memoryview(b"abcd")
    view.release()
    return view


#: A view released already, which `send` refuses (Python's own error was a ValueError,
#: "operation forbidden on released memoryview object"), and the message of its `TypeError`.
RELEASED = (
    _released_view(),
    "data is a released memoryview: pass bytes(data) before releasing it, or a view that is "
    "not released",
)

#: Sockets `sock=` refuses (made by `wrong_socket`), with the error and message of each.
WRONG_SOCKETS: list[tuple[str, type[Exception], str]] = [
    ("tcp", TypeError, "sock must be a UDP socket (SOCK_DGRAM), got SOCK_STREAM"),
    ("closed", ConfigError, "sock is closed: pass an open UDP socket (SOCK_DGRAM)"),
    # Passed, then failed in aio.serve with IndexError, in both connects with "TypeError: a
    # bytes-like object is required, not 'tuple'" (probe BK F3).
    ("unix", TypeError, "sock must be an AF_INET or AF_INET6 UDP socket, got AF_UNIX"),
]

#: Linux's IP_RECVERR and IPV6_RECVERR (missing from Python's socket module): a socket with
#: either set queues each ICMP error on its error queue, which the adapters do not read, so
#: poll kept reporting POLLERR and both adapters spun (probe BH #2): such a `sock=` is refused.
RECVERR_SOCKETS: dict[str, tuple[socket.AddressFamily, int, int]] = {
    "ip-recverr": (socket.AF_INET, socket.IPPROTO_IP, 11),
    "ipv6-recverr": (socket.AF_INET6, socket.IPPROTO_IPV6, 25),
    "ip-recverr-on-ipv6": (socket.AF_INET6, socket.IPPROTO_IP, 11),
}

if sys.platform.startswith("linux"):
    WRONG_SOCKETS += [
        (kind, ConfigError, f"sock has {name} set: the adapters do not read its error queue;"
         f" clear it (setsockopt {name} 0)")
        for kind, name in [("ip-recverr", "IP_RECVERR"), ("ipv6-recverr", "IPV6_RECVERR"),
                           ("ip-recverr-on-ipv6", "IP_RECVERR")]
    ]


#: A `sock=` of one IP family and a host address of the other, with the message refusing it.
FAMILY_MISMATCHES: list[tuple[socket.AddressFamily, str, str]] = [
    (socket.AF_INET, "::1", "sock is an AF_INET (IPv4) socket but ::1 is an IPv6 address: pass "
     "an AF_INET6 socket, or an IPv4 address"),
    (socket.AF_INET6, "127.0.0.1", "sock is an AF_INET6 (IPv6) socket but 127.0.0.1 is an IPv4 "
     "address: pass an AF_INET socket, or an IPv6 address"),
]


@contextlib.contextmanager
def wrong_socket(kind: str) -> Iterator[socket.socket]:
    """A TCP socket, a closed UDP one, an AF_UNIX datagram one, or one with IP_RECVERR or
    IPV6_RECVERR set (`RECVERR_SOCKETS`), closed at the end either way."""
    family, level, option = RECVERR_SOCKETS.get(kind, (socket.AF_INET, 0, 0))
    if kind == "unix":
        family = socket.AF_UNIX
    with socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
                       ) as sock:
        if kind == "closed":
            sock.close()
        if option:
            sock.setsockopt(level, option, 1)
        yield sock


def udp_sockets_made(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """From now on, every UDP socket made (by the library or asyncio) is added to the list
    returned, to check that those of a failed set-up are closed."""
    made: list[socket.socket] = []

    class Recorded(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.type == socket.SOCK_DGRAM:
                made.append(self)

    monkeypatch.setattr(socket, "socket", Recorded)
    return made


class EchoHandler(aio.DatagramHandler):
    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        session.send(data)


async def _echo_later(self: object, session: aio.ServerSession, data: bytes) -> None:
    session.send(data)


#: A `DatagramHandler` written with `async def` (made with `type`, as a class statement would
#: not type-check): the server would call its method and never await it (the data would
#: vanish, with a "never awaited" warning).
AsyncMethodsHandler = type(
    "AsyncMethodsHandler", (aio.DatagramHandler,), {"datagram_received": _echo_later}
)


def plain_handler(session: aio.ServerSession) -> None:
    """A plain function: every peer would log "object NoneType can't be used in 'await'"."""


#: Handlers `aio.serve` and `workers.serve` refuse, and the message of the `TypeError` of each.
WRONG_HANDLERS: list[tuple[object, str]] = [
    (plain_handler, "handler plain_handler is not a coroutine function: the server awaits "
     "handler(session) for every peer: write it as async def (or pass a DatagramHandler "
     "instance)"),
    (lambda session: None, "handler <lambda> is not a coroutine function: the server awaits "
     "handler(session) for every peer: write it as async def (or pass a DatagramHandler "
     "instance)"),
    (AsyncMethodsHandler(), "handler method AsyncMethodsHandler.datagram_received is async def: "
     "the server calls DatagramHandler methods without awaiting them: make it a plain def "
     "(and start a task for async work)"),
    (EchoHandler,
     "handler EchoHandler is a DatagramHandler class: pass an instance: EchoHandler()"),
    (None, "handler must be a coroutine function taking a ServerSession or a DatagramHandler "
           "instance, got None"),
    ("echo", "handler must be a coroutine function taking a ServerSession or a DatagramHandler "
             "instance, got str"),
]
