"""A UDP transport for servers that reads every waiting datagram at each wake-up.

asyncio's own datagram transport reads one datagram per turn of the event loop, so a server
under load pays one poll and one loop turn for every datagram it receives. `DrainingTransport`
reads up to `READ_BATCH` datagrams each time the socket becomes readable, then gives the loop
back. Sending works as in asyncio: straight to the socket, and when the kernel's buffer is full,
into a bounded queue flushed when the socket is writable (beyond the bound datagrams are dropped,
as the network may drop them: DTLS retransmits, RFC 6347 §4.2.4).

It runs on any event loop with `add_reader` (asyncio's selector loop, uvloop);
`open_server_transport` falls back to the loop's own transport where there is none.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
from typing import Any

from iotdtls._addresses import resolve

__all__ = [
    "READ_BATCH",
    "SEND_QUEUE_LIMIT",
    "DrainingTransport",
    "bind_udp",
    "dual_stack",
    "open_server_transport",
    "resolve_udp",
]

#: Datagrams read per wake-up before the loop runs its other callbacks and timers.
READ_BATCH = 64
#: Datagrams kept while the socket's send buffer is full; more are dropped.
SEND_QUEUE_LIMIT = 1024
#: Largest datagram read (the UDP maximum).
MAX_DATAGRAM = 65535


class DrainingTransport(asyncio.DatagramTransport):
    """A datagram transport over a bound, non-blocking UDP socket (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._pending: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._closing = False
        #: One buffer every datagram is read into, then copied out at its own size: reading
        #: each with `recvfrom(MAX_DATAGRAM)` allocated 64 KiB and shrank it, and the small
        #: long-lived allocations between (associations, cached sessions) left the heap with
        #: holes no later 64 KiB read could reuse: a server's resident size grew by about
        #: 24 kB a minute under steady churn with nothing kept (glibc's free heap space).
        self._buffer = memoryview(bytearray(MAX_DATAGRAM))
        #: Datagrams dropped because the send queue was full.
        self.send_drops = 0
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._read_ready)
        protocol.connection_made(self)

    def _read_ready(self) -> None:
        recvfrom_into = self._sock.recvfrom_into
        buffer = self._buffer
        received = self._protocol.datagram_received
        for _ in range(READ_BATCH):
            if self._closing:
                return
            try:
                size, address = recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error reported on the socket
                self._protocol.error_received(exc)
                continue
            received(bytes(buffer[:size]), address)

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram now, or queue it while the kernel's buffer is full."""
        if self._closing:
            return
        if self._pending:
            self._queue(bytes(data), addr)
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._queue(bytes(data), addr)
            self._loop.add_writer(self._sock.fileno(), self._write_ready)
        except OSError as exc:
            self._protocol.error_received(exc)

    def _queue(self, data: bytes, addr: Any) -> None:
        if len(self._pending) >= SEND_QUEUE_LIMIT:
            self.send_drops += 1
            return
        self._pending.append((data, addr))

    def _write_ready(self) -> None:
        while self._pending:
            data, addr = self._pending[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._pending.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data, _ in self._pending)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, send what is queued if the kernel takes it now, close the socket and
        tell the protocol (on the next loop turn, as asyncio does)."""
        if self._closing:
            return
        self._closing = True
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        if self._pending:
            self._write_ready()  # what the kernel takes now; the rest is dropped
            self._pending.clear()
            self._loop.remove_writer(fd)
        self._loop.call_soon(self._finish_close)

    def abort(self) -> None:
        self._pending.clear()
        self.close()

    def _finish_close(self) -> None:
        self._sock.close()
        self._protocol.connection_lost(None)


async def open_server_transport(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.DatagramProtocol,
    sock: socket.socket,
) -> asyncio.DatagramTransport:
    """Serve `protocol` on the bound UDP socket `sock`: a `DrainingTransport` where the loop
    can watch the socket, else the loop's own datagram transport."""
    try:
        return DrainingTransport(loop, sock, protocol)
    except NotImplementedError:  # a loop without add_reader (asyncio's proactor on Windows)
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        return transport


async def resolve_udp(
    loop: asyncio.AbstractEventLoop, host: str, port: int, flags: int = 0
) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo` for UDP (`iotdtls._addresses.resolve`), run in the loop's default
    executor. Not
    `loop.getaddrinfo`: uvloop's drops the scope id of a link-local IPv6 address
    ("fe80::1%eth0" comes back with scope id 0, which no socket can bind or reach)."""
    return await loop.run_in_executor(None, functools.partial(resolve, host, port, flags))


def dual_stack(sock: socket.socket, address: Any) -> None:
    """Before a server binds `sock` to `address`: for the IPv6 unspecified address `::`, take
    IPv4 too (IPV6_V6ONLY off, IPv4 peers seen as ::ffff:a.b.c.d, RFC 4291 §2.5.5.2), so that
    `[::]:PORT` is every address whatever the host's default (Linux's net.ipv6.bindv6only,
    the BSDs' and Windows' IPv6 only). A specific IPv6 address is left as it is."""
    if sock.family == socket.AF_INET6 and str(address[0]).partition("%")[0] == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


async def bind_udp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A UDP socket bound to the first address `host:port` resolves to that can be bound (`::`
    dual-stack, `dual_stack`)."""
    infos = await resolve_udp(loop, host, port, socket.AI_PASSIVE)
    failure: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            dual_stack(sock, address)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure or OSError(f"{host}:{port} resolves to no address")
