"""Server memory per established association: heap (tracemalloc) and resident memory.

Run with ``make bench-memory`` (or ``.venv/bin/python benchmarks/bench_memory.py``). Clients
are sans-I/O `DtlsConnection`s that complete a full PSK handshake with the cookie exchange in
memory against the server, one after the other, each from its own address (addresses are only
dictionary keys here: nothing goes on a network), send one 16-byte datagram (a device's first
reading: it also tells the server that its final flight arrived, so the server lets go of the
handshake, RFC 6347 §4.2.4) and are dropped, so what stays is the server's state:

(a) heap per association, measured with tracemalloc over 10,000 associations, for the sans-I/O
    `ServerEndpoint` alone and for the asyncio server (`iotdtls.aio`: the endpoint plus a
    `ServerSession`), once with a task per peer (its receive queue and the echo handler task
    waiting on it) and once with a `DatagramHandler` (no task, as `iotdtls server` runs), with
    the allocation sites that hold the most;
(b) resident memory (VmRSS) of one server process holding 100,000 established associations,
    each layer in a fresh process (target of issue 9: under 300 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotdtls import aio
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint

IDENTITY = b"Client_identity"
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
CLIENT = ClientConfig(psk_identity=IDENTITY, psk=KEY)
WARM_UP = 200
READING = bytes(16)
#: Handshakes between two turns of the event loop.
LOOP_TURN = 20
NOW = 0.0
#: A server exchange: deliver one client datagram, return the server's answers to it.
Exchange = Callable[[bytes, Any], list[bytes]]


def server_config(capacity: int) -> ServerConfig:
    return ServerConfig(psk_store={IDENTITY: KEY}, max_connections=capacity + 10)


def address(n: int) -> tuple[str, int]:
    """A distinct peer address for association `n` (a dictionary key, never contacted)."""
    return (f"127.{1 + n // 60000}.{(n // 250) % 240}.{n % 250}", 1024 + n % 60000)


def handshake(exchange: Exchange, n: int) -> None:
    """One client completes its handshake against the server (in memory), sends one datagram,
    then is dropped."""
    client = DtlsConnection(CLIENT)
    client.connect(NOW)
    peer = address(n)
    for _ in range(10):
        for datagram in client.datagrams_to_send(NOW):
            for answer in exchange(datagram, peer):
                client.receive_datagram(answer, NOW)
        while client.next_event() is not None:
            pass
        if client.state is ConnectionState.ESTABLISHED:
            client.send(READING)
            for datagram in client.datagrams_to_send(NOW):
                exchange(datagram, peer)
            return
    raise RuntimeError(f"handshake {n} did not complete")


def endpoint_exchange(capacity: int) -> tuple[Exchange, Callable[[], int]]:
    """The sans-I/O endpoint: (exchange, number of associations)."""
    endpoint = ServerEndpoint(server_config(capacity))

    def exchange(datagram: bytes, peer: Any) -> list[bytes]:
        endpoint.receive_datagram(datagram, peer, NOW)
        while endpoint.next_event() is not None:
            pass
        return [data for data, _ in endpoint.datagrams_to_send(NOW)]

    return exchange, lambda: len(endpoint.connections)


class MemoryTransport(asyncio.DatagramTransport):
    """Collects what the asyncio server sends (instead of a socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5684) if name == "sockname" else default


async def echo(session: aio.ServerSession) -> None:
    async for datagram in session:
        session.send(datagram)


class Echo(aio.DatagramHandler):
    def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
        session.send(data)


def asyncio_exchange(capacity: int, handler: aio.Handler | aio.DatagramHandler = echo) -> tuple[
    Exchange, Callable[[], int]
]:
    """The asyncio server's protocol on a memory transport (call inside a running loop), with
    a task-per-peer handler (`echo`) or a `DatagramHandler`."""
    protocol = aio._ServerProtocol(handler, server_config(capacity), session_store=None)
    transport = MemoryTransport()
    protocol.connection_made(transport)

    def exchange(datagram: bytes, peer: Any) -> list[bytes]:
        protocol.datagram_received(datagram, peer)
        out, transport.sent = transport.sent, []
        return out

    return exchange, lambda: len(protocol.sessions)


#: What holds the associations: the sans-I/O endpoint; the asyncio server with a task per peer
#: (`serve(echo)`, the handler awaiting `recv`); the asyncio server with a `DatagramHandler`
#: (no task per peer, what `iotdtls server` runs).
LAYERS: dict[str, Callable[[int], tuple[Exchange, Callable[[], int]]]] = {
    "endpoint": endpoint_exchange,
    "asyncio-task": asyncio_exchange,
    "asyncio-datagram": lambda capacity: asyncio_exchange(capacity, Echo()),
}


async def fill(exchange: Exchange, first: int, count: int, progress: bool = False) -> None:
    """Associations `first` .. `first + count - 1`, one after the other; the event loop gets a
    turn every few (as a serving loop would: asyncio frees cancelled timers there)."""
    started = time.monotonic()
    for n in range(first, first + count):
        handshake(exchange, n)
        if n % LOOP_TURN == 0:
            await asyncio.sleep(0)
        if progress and (n + 1 - first) % 20000 == 0:
            print(f"    {n + 1 - first} associations, {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)


# -- (a) heap -----------------------------------------------------------------------------------


def heap_per_association(layer: str, count: int) -> None:
    async def run() -> None:
        exchange, associations = LAYERS[layer](count + WARM_UP)
        await fill(exchange, 0, WARM_UP)
        await asyncio.sleep(0)  # handler tasks start and wait on their queue
        gc.collect()
        tracemalloc.start(3)
        before = tracemalloc.take_snapshot()
        base = tracemalloc.get_traced_memory()[0]
        await fill(exchange, WARM_UP, count)
        await asyncio.sleep(0)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        assert associations() == count + WARM_UP, associations()
        print(f"{layer:<16} {count:>7} associations: {used / count:8.0f} B "
              f"({used / count / 1024:.2f} KiB) per association")
        top = after.compare_to(before, "lineno")[:8]
        for stat in top:
            frame = stat.traceback[0]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"          {stat.size_diff / count:7.0f} B  {where}")

    asyncio.run(run())


# -- (b) resident memory --------------------------------------------------------------------------


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def resident_child(layer: str, count: int, conn: Any) -> None:
    """In a fresh process: hold `count` associations and report VmRSS before and after."""

    async def run() -> tuple[int, int, float]:
        exchange, associations = LAYERS[layer](count)
        gc.collect()
        before = resident_kib()
        started = time.monotonic()
        await fill(exchange, 0, count, progress=True)
        await asyncio.sleep(0)
        gc.collect()
        assert associations() == count
        return before, resident_kib(), time.monotonic() - started

    conn.send(asyncio.run(run()))


def resident(layer: str, count: int) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=resident_child, args=(layer, count, child))
    process.start()
    before, after, seconds = parent.recv()
    process.join()
    print(f"{layer:<16} {count:>7} associations: resident {after / 1024:6.1f} MiB "
          f"(empty server {before / 1024:.1f} MiB; {1024 * (after - before) / count:.0f} B "
          f"per association; filled in {seconds:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heap", type=int, default=10000, help="associations for tracemalloc")
    parser.add_argument("--resident", type=int, default=100000,
                        help="associations for the resident-memory figure (0: skip)")
    parser.add_argument("--layers", default=",".join(LAYERS),
                        help=f"some of {', '.join(LAYERS)}, comma-separated")
    args = parser.parse_args()
    layers = args.layers.split(",")
    print(f"bench_memory: Python {sys.version.split()[0]}, full PSK handshakes in memory")
    print("(a) server heap per established association (tracemalloc)")
    for layer in layers:
        heap_per_association(layer, args.heap)
    if args.resident:
        print("(b) resident memory of one server process")
        for layer in layers:
            resident(layer, args.resident)


if __name__ == "__main__":
    main()
