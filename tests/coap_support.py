"""Helpers of the coaps tests: credentials in aiocoap's layout, our coaps server and clients in
the test's event loop, test resources, and libcoap's binaries (peers.md: ASCII keys, `-B 5`,
coaps on the server's port + 1, `-A` to bind loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiocoap
from aiocoap import resource
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotdtls import aio
from iotdtls.coap import CoapsServerInterface, add_server_transport, client_context, demo_site
from iotdtls.coap.credentials import load_credentials
from tests.interop_support import FAST, client_config
from tests.peers import (
    CLIENT_EUI64,
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK_HEX,
    PeerProcess,
    Pki,
    free_udp_port,
)

T = TypeVar("T")
#: The test credentials in aiocoap's layout.
PSK_ENTRY = {"psk": {"hex": PSK_HEX}, "client-identity": {"ascii": CLIENT_IDENTITY}}
SERVER_CREDENTIALS = {":client": {"dtls": PSK_ENTRY}}
CLIENT_CREDENTIALS = {"coaps://*": {"dtls": PSK_ENTRY}}
#: Quick DTLS timers for loopback, and a bounded handshake.
SETTINGS: dict[str, Any] = {"retransmit": FAST, "handshake_timeout": 5.0}
#: libcoap takes its key as ASCII text (peers.md).
LIBCOAP_KEY = "secretPSK"
LIBCOAP_KEY_HEX = LIBCOAP_KEY.encode().hex()
#: A 4 KiB resource body that shows any reordering or loss of blocks.
LARGE = b"".join(b"%04d:" % n + b"abcdefghijk" for n in range(256))
assert len(LARGE) == 4096


def run(coro: Coroutine[Any, Any, None], limit: float = 30.0) -> None:
    """Run `coro` in a fresh loop with an overall bound."""
    asyncio.run(asyncio.wait_for(coro, limit))


def run_for(coro: Coroutine[Any, Any, T], limit: float = 30.0) -> T:
    """`run`, returning what `coro` returns."""
    return asyncio.run(asyncio.wait_for(coro, limit))


def uri(address: tuple[Any, ...], path: str) -> str:
    return f"coaps://{address[0]}:{address[1]}/{path}"


class WhoAmI(resource.Resource):
    """GET: records and names who asked (`request.remote.peer` and the claims)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, tuple[object, ...]]] = []

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        remote = request.remote
        self.seen.append((remote, tuple(remote.authenticated_claims)))
        return aiocoap.Message(payload=str(getattr(remote, "peer", None)).encode())


class Large(resource.Resource):
    """GET: `LARGE`; PUT: keeps the payload (both block-wise above one block, RFC 7959)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored = b""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=LARGE)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        self.stored = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"%d" % len(request.payload))


class Slow(resource.Resource):
    """GET: answers only once `release` is set (a request left pending)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.started.set()
        await self.release.wait()
        return aiocoap.Message(payload=b"late")


@dataclass
class CoapSite:
    """The demo site plus `/whoami`, `/large` and `/slow`, with handles on those three."""

    counter_interval: float = 1.0
    whoami: WhoAmI = field(default_factory=WhoAmI)
    large: Large = field(default_factory=Large)
    slow: Slow = field(default_factory=Slow)
    site: resource.Site = field(init=False)

    def __post_init__(self) -> None:
        self.site = demo_site(self.counter_interval)
        self.site.add_resource(["whoami"], self.whoami)
        self.site.add_resource(["large"], self.large)
        self.site.add_resource(["slow"], self.slow)


def raw_request(mid: int, token: bytes, path: str) -> bytes:
    """A confirmable GET with a given message ID and token, encoded (for hand-made clients)."""
    message = aiocoap.Message(code=aiocoap.GET, uri_path=(path,))
    message.mtype, message.mid, message.token = aiocoap.CON, mid, token
    return message.encode()


def put_block(
    mid: int, num: int, more: bool, payload: bytes, *, path: str = "large", szx: int = 6,
    mtype: aiocoap.numbers.types.Type = aiocoap.CON, token: bytes = b"up", size1: int | None = None,
    query: tuple[str, ...] = (),
) -> bytes:
    """A PUT of `path` carrying Block1 block `num` (RFC 7959 §2.2), encoded."""
    message = aiocoap.Message(code=aiocoap.PUT, uri_path=(path,), uri_query=query,
                              payload=payload)
    message.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(num, more, szx)
    if size1 is not None:
        message.opt.size1 = size1
    message.mtype, message.mid, message.token = mtype, mid, token
    return message.encode()


class Device:
    """A hand-made coaps client: one association, raw CoAP messages."""

    def __init__(self, connection: aio.ClientConnection) -> None:
        self.connection = connection

    async def ask(self, data: bytes, wait: float = 2.0) -> aiocoap.Message | None:
        self.connection.send(data)
        return await self.answer(wait)

    async def answer(self, wait: float = 2.0) -> aiocoap.Message | None:
        try:
            data = await asyncio.wait_for(self.connection.recv(), wait)
        except TimeoutError:
            return None
        return None if data is None else aiocoap.Message.decode(data)


@contextlib.asynccontextmanager
async def device(address: tuple[Any, ...]) -> AsyncIterator[Device]:
    """A device whose datagrams may be large (as the probe's), which the server takes."""
    async with aio.connect(LOCALHOST, address[1], client_config(mtu=4000)) as connection:
        yield Device(connection)


def reply(request: aiocoap.Message, response: aiocoap.Message) -> bytes:
    """`response` piggybacked on the ACK to `request` (RFC 7252 §5.2.1), encoded."""
    response.mtype, response.mid, response.token = aiocoap.ACK, request.mid, request.token
    return response.encode()


@contextlib.asynccontextmanager
async def coaps_server(
    site: CoapSite | None = None,
    *,
    credentials: Any = None,
    bind: tuple[str, int] = (LOCALHOST, 0),
    **settings: Any,
) -> AsyncIterator[CoapsServerInterface]:
    """Our coaps server (test credentials, quick timers) on loopback; yields its transport."""
    served = (site or CoapSite()).site
    context = aiocoap.Context(serversite=served, loggername="coap-server")
    context.server_credentials = load_credentials(credentials or SERVER_CREDENTIALS)
    transport = await add_server_transport(context, bind, **{**SETTINGS, **settings})
    try:
        yield transport
    finally:
        await context.shutdown()


@contextlib.asynccontextmanager
async def coaps_client(*, credentials: Any = None, **settings: Any) -> AsyncIterator[Any]:
    """An aiocoap client context (coaps only) with the test credentials; yields the context."""
    context = await client_context(
        credentials=credentials or CLIENT_CREDENTIALS, plain_coap=False, **{**SETTINGS, **settings}
    )
    try:
        yield context
    finally:
        await context.shutdown()


async def get(context: Any, target: str, **options: Any) -> aiocoap.Message:
    message = aiocoap.Message(code=aiocoap.GET, uri=target, **options)
    response: aiocoap.Message = await context.request(message).response
    return response


# -- libcoap ----------------------------------------------------------------------------------


def _free_pair() -> int:
    """A port P with P + 1 free as well (libcoap serves coap on P and coaps on P + 1)."""
    for _ in range(20):
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOCALHOST, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of UDP ports")


@contextlib.contextmanager
def libcoap_server(build: str, *extra: str) -> Iterator[tuple[int, PeerProcess]]:
    """`coap-server-<build>` on loopback with the test key; yields (coaps port, process)."""
    port = _free_pair()
    argv = [f"coap-server-{build}", "-A", LOCALHOST, "-p", str(port), "-k", LIBCOAP_KEY,
            "-v", "6", *extra]
    with PeerProcess(argv, time_limit=60.0) as server:
        yield port + 1, server


def libcoap_client(
    build: str,
    target: str,
    *args: str,
    key: str = LIBCOAP_KEY,
    credentials: Sequence[str] | None = None,
) -> PeerProcess:
    """`coap-client-<build>` (unstarted), bounded by `-B 5`, with `key` and the test identity,
    or with `credentials` (its flags) instead."""
    if credentials is None:
        credentials = ["-k", key, "-u", CLIENT_IDENTITY]
    argv = [f"coap-client-{build}", "-B", "5", *credentials, *args, target]
    return PeerProcess(argv, time_limit=30.0)


def libcoap_pki(pki: Pki, *, ours: str = "server") -> list[str]:
    """libcoap's certificate flags (peers.md): `ours`' certificate and key, the test CA."""
    cert, key = (pki.server_crt, pki.server_key) if ours == "server" else (
        pki.client_crt, pki.client_key)
    return ["-c", str(cert), "-j", str(key), "-C", str(pki.ca_crt)]


# -- raw public keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class RpkFiles:
    """P-256 keys for raw-public-key tests: SEC1 "EC PRIVATE KEY" PEM (what libcoap's `-M`
    reads, and iotdtls too) and SubjectPublicKeyInfo PEM; every attribute is a path."""

    server_key: Path
    server_pub: Path
    client_key: Path
    client_pub: Path
    stranger_key: Path


def make_rpk_files(directory: Path) -> RpkFiles:
    paths: dict[str, Path] = {}
    for name in ("server", "client", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        paths[f"{name}_key"].chmod(0o600)  # as a private key is kept (the CLI warns of others)
        paths[f"{name}_pub"] = directory / f"{name}.pub"
        paths[f"{name}_pub"].write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    del paths["stranger_pub"]
    return RpkFiles(**paths)


def rpk_server_credentials(files: RpkFiles) -> dict[str, Any]:
    """The server's own key, one raw-public-key client (`:dev2`) and the PSK client."""
    return {":server": {"dtls-rpk": {"private-key": str(files.server_key)}},
            ":dev2": {"dtls-rpk": {"peer-public-key": str(files.client_pub)}},
            **SERVER_CREDENTIALS}


def rpk_client_credentials(files: RpkFiles, key: Path | None = None) -> dict[str, Any]:
    """Mutual raw-public-key credentials of a client (`key`: ours, the client key by default)."""
    return {"coaps://*": {"dtls-rpk": {"private-key": str(key or files.client_key),
                                       "peer-public-key": str(files.server_pub)}}}


# -- certificates -----------------------------------------------------------------------------


def x509_server_credentials(pki: Pki) -> dict[str, Any]:
    """The server's chain and the CA of client certificates, a label for the test client's
    EUI-64 (`:dev3`), and the PSK client."""
    return {":server": {"dtls-x509": {"certificate": str(pki.server_crt),
                                      "private-key": str(pki.server_key),
                                      "trust-anchors": str(pki.ca_crt)}},
            ":dev3": {"dtls-x509": {"client-eui64": CLIENT_EUI64}},
            **SERVER_CREDENTIALS}


def x509_client_credentials(pki: Pki, *, anchors: Path | None = None, **extra: str,
                            ) -> dict[str, Any]:
    """Mutual certificate credentials of a client (`anchors`: the test CA by default)."""
    return {"coaps://*": {"dtls-x509": {"trust-anchors": str(anchors or pki.ca_crt),
                                        "certificate": str(pki.client_crt),
                                        "private-key": str(pki.client_key), **extra}}}
