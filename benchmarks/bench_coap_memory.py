"""What a coaps association leaves in memory once it has ended, on the server and the client.

Run with ``make bench-coap-memory`` (or ``.venv/bin/python benchmarks/bench_coap_memory.py
[--associations N] [--requests K]``). Over loopback, in this process but for (b)'s server:

(a) server: an aiocoap server context served by iotdtls; N clients one after the other, each a
    fresh client context that makes one association, sends one confirmable GET of a short
    resource (and in a second run K, 5 by default), and closes it (close_notify);
(b) client: one long-lived client context sends N confirmable GETs one after the other to a
    server in another process, which closes each association (close_notify) once it has been
    idle for 50 ms: each GET makes a new association;
(c) server, live: one client sends N confirmable GETs over one association, measured while it
    lives (what each request costs for EXCHANGE_LIFETIME).

Once every association has ended (and the clients that took part in (a) are gone), the
heap that stays (tracemalloc, after a collection) is divided by N, and the ended remotes still
alive are counted, with the transport objects still alive (`ServerSession`, `ClientConnection`,
`DtlsConnection`). The heap leaves out the list of warm cipher contexts of
`iotdtls.crypto.aead` (bounded by WARM_CIPHERS, not by associations). CoAP's duplicate
detection (RFC 7252 §4.5) keeps the (remote, message ID) of each request received for
EXCHANGE_LIFETIME (§4.8.2, 247 s), so part of what stays is bounded by that time, not freed at
once: this measures right after the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import multiprocessing
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiocoap

from iotdtls import aio
from iotdtls.coap import add_server_transport, client_context, demo_site
from iotdtls.coap.client import ClientRemote
from iotdtls.coap.server import CoapsServerInterface, ServerRemote
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.crypto import aead

HOST = "127.0.0.1"
IDENTITY = b"Client_identity"
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
#: No session cache for resumption (`session_cache_size`): its entries, bounded by that size,
#: would count here.
SERVER = ServerConfig(psk_store={IDENTITY: KEY}, session_cache_size=0)
CLIENT = ClientConfig(psk_identity=IDENTITY, psk=KEY)
WARM_UP = 20
#: The objects counted alive after the associations ended.
COUNTED = (ServerRemote, ClientRemote, aio.ServerSession, aio.ClientConnection, DtlsConnection)
#: Bounded whatever the number of associations (`aead.WARM_CIPHERS`).
NOT_COUNTED = [tracemalloc.Filter(False, aead.__file__)]


async def _get(context: aiocoap.Context, port: int) -> ClientRemote:
    """A confirmable GET of /hello; returns the remote it went to."""
    request = aiocoap.Message(code=aiocoap.GET, uri=f"coaps://{HOST}:{port}/hello")
    response = await asyncio.wait_for(context.request(request).response, 10.0)
    assert response.code.is_successful(), response
    assert isinstance(response.remote, ClientRemote)
    return response.remote


async def _serve(
    port: int, config: ServerConfig = SERVER
) -> tuple[aiocoap.Context, CoapsServerInterface]:
    context = aiocoap.Context(serversite=demo_site(), loggername="coap-server")
    transport = await add_server_transport(context, (HOST, port), config=config)
    return context, transport


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the associations did not end")


async def _measure(title: str, n: int, one: Callable[[], Awaitable[None]],
                   settle: Callable[[], Awaitable[None]], per: str = "ended association") -> None:
    for _ in range(WARM_UP):
        await one()
    await settle()
    gc.collect()
    counted_before = _count()  # first: counting fills isinstance's caches
    before = tracemalloc.take_snapshot()
    for _ in range(n):
        await one()
    await settle()
    gc.collect()
    after = tracemalloc.take_snapshot()
    before, after = (snapshot.filter_traces(NOT_COUNTED) for snapshot in (before, after))
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    alive = {name: count - counted_before[name] for name, count in _count().items()}
    shown = ", ".join(f"{count} {name}" for name, count in alive.items())
    print(f"{title}: {grown / n:,.0f} B per {per} ({n}); alive since: {shown}")
    for stat in after.compare_to(before, "lineno")[:8]:
        print(f"    {stat.size_diff / n:8,.0f} B  {stat.traceback[0]}")


def _count() -> dict[str, int]:
    counts = {kind.__name__: 0 for kind in COUNTED}
    for obj in gc.get_objects():
        if isinstance(obj, COUNTED):
            counts[type(obj).__name__] += 1
    return counts


async def server_side(n: int, port: int, requests: int) -> None:
    context, transport = await _serve(port)
    bound = transport.address[1]
    connections = transport.endpoint_server.endpoint.connections

    async def one() -> None:
        client = await client_context(config=CLIENT, plain_coap=False)
        try:
            for _ in range(requests):
                await _get(client, bound)
        finally:
            await client.shutdown()

    async def settle() -> None:
        await _until(lambda: not connections)
        await asyncio.sleep(0.05)  # the server's handler tasks end

    try:
        await _measure(f"(a) server, {requests} GET(s) each", n, one, settle)
    finally:
        await context.shutdown()


def _serve_forever(port: int, ready: Any) -> None:
    async def serve() -> None:
        config = dataclasses.replace(SERVER, idle_timeout=0.05)
        _, transport = await _serve(port, config)
        ready.send(transport.address[1])
        await asyncio.Event().wait()  # until terminated

    asyncio.run(serve())


async def live_requests(n: int, port: int) -> None:
    context, transport = await _serve(port)
    client = await client_context(config=CLIENT, plain_coap=False)

    async def one() -> None:
        await _get(client, transport.address[1])

    async def settle() -> None:
        await asyncio.sleep(0.05)

    try:
        await _measure("(c) server, one live association", n, one, settle, "request")
    finally:
        await client.shutdown()
        await context.shutdown()


async def client_side(n: int, port: int) -> None:
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve_forever, args=(port, theirs), daemon=True)
    server.start()
    try:
        if not ours.poll(30.0):
            raise TimeoutError("the server process did not start")
        bound = ours.recv()
        client = await client_context(config=CLIENT, plain_coap=False)

        async def one() -> None:
            remote = await _get(client, bound)
            await _until(lambda: remote.ended)  # the server's idle timeout

        async def settle() -> None:
            await asyncio.sleep(0.05)  # the client's receive task ends

        try:
            await _measure("(b) client", n, one, settle)
        finally:
            await client.shutdown()
    finally:
        server.terminate()
        server.join(10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=300)
    parser.add_argument("--port", type=int, default=0, help="the servers' port (0: any)")
    parser.add_argument("--requests", type=int, default=5,
                        help="(a): GETs per association, measured after 1 GET each")
    args = parser.parse_args()
    tracemalloc.start(1)
    for requests in sorted({1, args.requests}):
        asyncio.run(server_side(args.associations, args.port, requests))
    asyncio.run(client_side(args.associations, args.port))
    asyncio.run(live_requests(args.associations, args.port))


if __name__ == "__main__":
    main()
