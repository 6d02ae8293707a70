"""coaps with iotdtls next to plain CoAP (aiocoap over UDP) and next to libcoap, over loopback.

Run with ``make bench-coap`` (or ``.venv/bin/python benchmarks/bench_coap.py [--requests N]``).

(a) Steady state: N sequential confirmable GETs of a short text resource over one established
    association, an aiocoap client and an aiocoap server in one process: `coap://` over
    aiocoap's UDP transport next to `coaps://` over iotdtls. Requests per second, median and
    p99 latency. The DTLS overhead per request in time is the difference of the medians; in
    bytes, the datagrams of one request and its response on the wire, with and without DTLS
    (seen through `iotdtls.proxy.LossyProxy` without impairment).
(b) One request on a new association, the way libcoap's `coap-client` works (one process per
    request): libcoap's client against our server and against libcoap's own server (coaps, and
    coap as the baseline of process start-up), and our client library (a new context per
    request, in-process) against our server. Median wall time per request. Once with PSK, once
    with mutual certificates (ECDHE-ECDSA, a P-256 CA, the Certificate mode of RFC 7252
    §9.1.3.3; libcoap between its own builds picks its preferred AES-256-GCM suite, with us
    CCM_8).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap import resource
from bench_pubkey import make_pki

from iotdtls.coap import add_server_transport, client_context
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.proxy import LossyProxy

HOST = "127.0.0.1"
IDENTITY = "Client_identity"
#: libcoap takes the key as ASCII text.
KEY = b"secretPSK"
SERVER = ServerConfig(psk_store={IDENTITY.encode(): KEY})
CLIENT = ClientConfig(psk_identity=IDENTITY, psk=KEY)
PAYLOAD = b"Hello, CoAP!"


@dataclass(frozen=True)
class Credentials:
    """One security mode: our configs and libcoap's flags for it."""

    name: str
    server: ServerConfig
    client: ClientConfig
    libcoap_server: tuple[str, ...]
    libcoap_client: tuple[str, ...]


PSK = Credentials("PSK", SERVER, CLIENT, ("-k", KEY.decode()),
                  ("-k", KEY.decode(), "-u", IDENTITY))


def certificates(directory: Path) -> Credentials:
    """Mutual certificates of a fresh P-256 CA (server: CN and SAN localhost)."""
    pki = make_pki(directory)

    def flags(role: str) -> tuple[str, ...]:
        return ("-c", pki.path(f"{role}.crt"), "-j", pki.path(f"{role}.key"),
                "-C", pki.path("ca.crt"))

    return Credentials(
        "certificates",
        ServerConfig(certificates=[pki.server], client_trust_anchors=[pki.ca_der]),
        ClientConfig(trust_anchors=[pki.ca_der], certificate=pki.client, server_name="localhost"),
        flags("server"), flags("client"))


class Text(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=PAYLOAD)


def site() -> resource.Site:
    s = resource.Site()
    s.add_resource(["hello"], Text())
    return s


def free_port_pair() -> int:
    """A port P with P + 1 also free (libcoap: coap on P, coaps on P + 1)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind((HOST, 0))
            port = int(a.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind((HOST, port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port pair")


# -- servers and clients ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def coaps_server(config: ServerConfig = SERVER) -> AsyncIterator[tuple[str, int]]:
    context = aiocoap.Context(serversite=site(), loggername="bench-server")
    transport = await add_server_transport(context, (HOST, 0), config=config)
    try:
        yield HOST, int(transport.address[1])
    finally:
        await context.shutdown()


#: aiocoap's UDP transports for plain CoAP: (client, server). udp6 is its default; simple6 and
#: simplesocketserver are its lighter ones (no ancillary data, one socket per peer).
PLAIN = {"coap": ("udp6", "udp6"), "coap-simple": ("simple6", "simplesocketserver")}


@contextlib.asynccontextmanager
async def plain_server(scheme: str) -> AsyncIterator[tuple[str, int]]:
    port = free_port_pair()
    context = await aiocoap.Context.create_server_context(
        site(), bind=(HOST, port), transports=[PLAIN[scheme][1]])
    try:
        yield HOST, port
    finally:
        await context.shutdown()


@contextlib.asynccontextmanager
async def client(scheme: str, config: ClientConfig = CLIENT) -> AsyncIterator[aiocoap.Context]:
    if scheme == "coaps":
        context = await client_context(config=config, plain_coap=False)
    else:
        context = await aiocoap.Context.create_client_context(transports=[PLAIN[scheme][0]])
    try:
        yield context
    finally:
        await context.shutdown()


async def get(context: aiocoap.Context, uri: str) -> aiocoap.Message:
    response: aiocoap.Message = await context.request(
        aiocoap.Message(code=aiocoap.GET, uri=uri)).response
    assert response.payload == PAYLOAD, response
    return response


# -- (a) steady state -------------------------------------------------------------------------


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "rps": len(times) / sum(times),
        "median_ms": statistics.median(times) * 1e3,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
    }


async def steady(scheme: str, requests: int) -> dict[str, float]:
    server = coaps_server() if scheme == "coaps" else plain_server(scheme)
    async with server as (host, port), client(scheme) as context:
        uri = f"{scheme.split('-')[0]}://{host}:{port}/hello"
        for _ in range(max(20, requests // 10)):  # warm up (and handshake)
            await get(context, uri)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            await get(context, uri)
            times.append(time.perf_counter() - started)
    return summary(times)


async def wire_bytes(scheme: str) -> tuple[int, int]:
    """UDP payload bytes of one GET and of its response, once the association is up."""
    server = coaps_server() if scheme == "coaps" else plain_server(scheme)
    async with server as address, client(scheme) as context:
        with LossyProxy(address, seed=0) as proxy:
            uri = f"{scheme}://{HOST}:{proxy.address[1]}/hello"
            await get(context, uri)  # handshake (coaps) and a first exchange
            before = len(proxy.snapshot())
            await get(context, uri)
            await asyncio.sleep(0.1)
            last = proxy.snapshot()[before:]
    sizes = {d.direction: len(d.data) for d in last}
    assert len(last) == 2, last
    return sizes["client"], sizes["server"]


# -- (b) a new association per request --------------------------------------------------------


async def timed(run_once: Callable[[], Awaitable[None]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await run_once()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def libcoap_request(
    build: str, uri: str, flags: tuple[str, ...] = PSK.libcoap_client
) -> Callable[[], Awaitable[None]]:
    async def once() -> None:
        process = await asyncio.create_subprocess_exec(
            f"coap-client-{build}", "-B", "5", *flags, uri,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), 10.0)
        assert PAYLOAD in output or b"libcoap" in output, output
    return once


@contextlib.asynccontextmanager
async def libcoap_server(build: str, flags: tuple[str, ...]) -> AsyncIterator[int]:
    port = free_port_pair()
    process = await asyncio.create_subprocess_exec(
        f"coap-server-{build}", "-A", HOST, "-p", str(port), *flags,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.3)
    try:
        yield port
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 5.0)


async def our_client_new_association(uri: str, config: ClientConfig) -> None:
    async with client("coaps", config) as context:
        await get(context, uri)


async def cold(mode: Credentials, runs: int) -> dict[str, float]:
    results: dict[str, float] = {}
    async with coaps_server(mode.server) as (host, port):
        uri = f"coaps://{host}:{port}/hello"
        results["iotdtls client (library) -> iotdtls server"] = await timed(
            lambda: our_client_new_association(uri, mode.client), runs)
        for build in ("gnutls", "openssl"):
            if shutil.which(f"coap-client-{build}"):
                results[f"coap-client-{build} -> iotdtls server"] = await timed(
                    libcoap_request(build, uri, mode.libcoap_client), runs)
    for build in ("gnutls", "openssl"):
        if not shutil.which(f"coap-server-{build}"):
            continue
        async with libcoap_server(build, mode.libcoap_server) as port:
            results[f"coap-client-{build} -> coap-server-{build} (coaps)"] = await timed(
                libcoap_request(build, f"coaps://{HOST}:{port + 1}/", mode.libcoap_client), runs)
            if mode is PSK:
                results[f"coap-client-{build} -> coap-server-{build} (coap, no DTLS)"] = (
                    await timed(libcoap_request(build, f"coap://{HOST}:{port}/"), runs))
    return results


# -- report -----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    print(f"(a) {args.requests} sequential CON GETs over one association, client and server "
          "in one process")
    plain = await steady("coap", args.requests)
    simple = await steady("coap-simple", args.requests)
    secure = await steady("coaps", args.requests)
    for name, r in (("coap  (aiocoap udp6)", plain), ("coap  (aiocoap simple6)", simple),
                    ("coaps (iotdtls)", secure)):
        print(f"    {name:24s} {r['rps']:8.0f} req/s   median {r['median_ms']:.3f} ms   "
              f"p99 {r['p99_ms']:.3f} ms")
    plain_bytes, secure_bytes = await wire_bytes("coap"), await wire_bytes("coaps")
    print(f"    DTLS overhead per request: {secure['median_ms'] - plain['median_ms']:+.3f} ms "
          f"(median, {secure['median_ms'] / plain['median_ms']:.2f}x udp6), "
          f"{secure['median_ms'] - simple['median_ms']:+.3f} ms "
          f"({secure['median_ms'] / simple['median_ms']:.2f}x simple6); "
          f"{secure_bytes[0] - plain_bytes[0]} + {secure_bytes[1] - plain_bytes[1]} bytes "
          f"(request {plain_bytes[0]} -> {secure_bytes[0]}, "
          f"response {plain_bytes[1]} -> {secure_bytes[1]} bytes of UDP payload)")
    print(f"(b) one GET on a new association, median of {args.runs} (libcoap: a process each)")
    cold_results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for mode in (PSK, certificates(Path(directory))):
            print(f"    {mode.name}")
            cold_results[mode.name] = await cold(mode, args.runs)
            for name, ms in cold_results[mode.name].items():
                print(f"      {name:58s} {ms:6.1f} ms")
    return {"steady": {"coap": plain, "coap-simple": simple, "coaps": secure},
            "bytes": {"coap": plain_bytes, "coaps": secure_bytes}, "cold": cold_results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests in (a)")
    parser.add_argument("--runs", type=int, default=20, help="requests in (b), each")
    asyncio.run(main(parser.parse_args()))
