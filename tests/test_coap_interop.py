"""coaps between iotdtls (with aiocoap) and libcoap 4.3.1 (`libcoap3-bin`), both of its DTLS
builds (GnuTLS and OpenSSL), in both roles, PSK (RFC 7252 §9.1.3.1)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiocoap
import pytest

from iotdtls.coap import AssociationTimeout
from iotdtls.connection import ConnectionState
from iotdtls.credentials import PrivateKey
from iotdtls.endpoint import GateOutcome
from iotdtls.identity import PskIdentity, RawPublicKeyIdentity
from tests.coap_support import (
    LARGE,
    LIBCOAP_KEY,
    CoapSite,
    coaps_client,
    coaps_server,
    get,
    libcoap_client,
    libcoap_server,
    make_rpk_files,
    rpk_client_credentials,
    rpk_server_credentials,
    run,
    run_for,
    uri,
)
from tests.peers import CLIENT_IDENTITY, LOCALHOST, PeerProcess, require_peer

pytestmark = pytest.mark.interop

BUILDS = ["gnutls", "openssl"]
#: Our credentials for libcoap: the same identity, libcoap's ASCII key.
LIBCOAP_CREDENTIALS = {"coaps://*": {"dtls": {
    "psk": {"ascii": LIBCOAP_KEY}, "client-identity": {"ascii": CLIENT_IDENTITY}}}}
SERVER_CREDENTIALS = {":client": LIBCOAP_CREDENTIALS["coaps://*"]}
#: A handshake bound that covers libcoap's start-up (our client retransmits meanwhile).
HANDSHAKE_TIMEOUT = 10.0


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_our_client_against_libcoap_server(build: str) -> None:
    require_peer(f"coap-server-{build}")

    async def main(port: int) -> None:
        async with coaps_client(credentials=LIBCOAP_CREDENTIALS,
                                handshake_timeout=HANDSHAKE_TIMEOUT) as client:
            banner = await get(client, uri((LOCALHOST, port), ""))
            assert banner.code == aiocoap.CONTENT
            assert b"libcoap" in banner.payload
            assert banner.remote.peer == PskIdentity(CLIENT_IDENTITY.encode())
            # Its example resource is larger than a block: block-wise (RFC 7959) over coaps.
            example = await get(client, uri((LOCALHOST, port), "example_data"))
            assert len(example.payload) > 1024 and example.opt.block2 is not None
            # /time notifies every second (RFC 7641), over the same association.
            request = client.request(aiocoap.Message(
                code=aiocoap.GET, uri=uri((LOCALHOST, port), "time"), observe=0))
            first = await request.response
            assert request.observation is not None
            notes = []
            async for note in request.observation:
                notes.append(note)
                if len(notes) == 2:
                    break
            request.observation.cancel()
            assert {id(m.remote) for m in [banner, example, first, *notes]} == {id(first.remote)}

    with libcoap_server(build) as (port, server):
        run(main(port), limit=40.0)
        assert server.returncode is None, server.output


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_libcoap_client_against_our_server(build: str) -> None:
    require_peer(f"coap-client-{build}")
    site = CoapSite(counter_interval=0.5)

    async def client(*args: str, target: str) -> str:
        peer = libcoap_client(build, target, *args)
        with peer:
            status = await asyncio.to_thread(peer.wait, 20.0)
        assert status is not None, f"coap-client did not end: {peer.output}"
        return peer.output

    async def main() -> None:
        async with coaps_server(site, credentials=SERVER_CREDENTIALS) as server:
            hello = await client(target=uri(server.address, "hello"))
            assert "Hello, Client_identity!" in hello
            await client(target=uri(server.address, "whoami"))
            # 64-byte blocks chosen by libcoap (RFC 7959 §2.4, early negotiation).
            large = await client("-b", "64", target=uri(server.address, "large"))
            assert LARGE.decode() in large.replace("\n", "")
            # Observe for 2 s: about four notifications of the counter.
            observed = await client("-s", "2", target=uri(server.address, "counter"))
            assert len(observed.strip()) >= 3, observed
        [(_, claims)] = site.whoami.seen
        assert claims == (PskIdentity(CLIENT_IDENTITY.encode()), ":client")

    run(main(), limit=60.0)


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_libcoap_client_puts_block_wise_to_our_server(build: str, tmp_path: Path) -> None:
    """`coap-client -m put -b 64 -f FILE`: 4 KiB in 64 Block1 blocks (RFC 7959 §2.5), each
    taken by the server's bound and its check of the blocks' order (`iotdtls.coap.uploads`),
    reach the resource whole; so does a body of exactly the bound, and one byte more is
    refused with 4.13."""
    require_peer(f"coap-client-{build}")
    site = CoapSite()
    body = tmp_path / "body"

    async def put(target: str, payload: bytes) -> str:
        body.write_bytes(payload)
        peer = libcoap_client(build, target, "-m", "put", "-b", "64", "-f", str(body))
        with peer:
            status = await asyncio.to_thread(peer.wait, 20.0)
        assert status is not None, f"coap-client did not end: {peer.output}"
        return peer.output

    async def main() -> None:
        async with coaps_server(site, credentials=SERVER_CREDENTIALS,
                                max_body_size=4096) as server:
            await put(uri(server.address, "large"), LARGE)
            assert site.large.stored == LARGE
            site.large.stored = b""
            refused = await put(uri(server.address, "large"), LARGE + b"!")
            assert "4.13" in refused, refused
            assert site.large.stored == b""

    run(main(), limit=60.0)


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_libcoap_client_with_a_wrong_key_gets_nothing(build: str) -> None:
    require_peer(f"coap-client-{build}")

    async def main() -> None:
        async with coaps_server(credentials=SERVER_CREDENTIALS) as server:
            peer = libcoap_client(build, uri(server.address, "hello"), key="wrongPSK")
            with peer:
                assert await asyncio.to_thread(peer.wait, 20.0) is not None
            assert "Hello" not in peer.output
            endpoint = server.endpoint_server.endpoint
            assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] >= 1  # it did try
            # No association came of it. Usually the server has already ended the handshake
            # with decrypt_error (PSK-4); when libcoap's GnuTLS client sends its Finished in a
            # datagram of its own, the server drops it as a possible forgery (RFC 6347
            # §4.1.2.7) and the half-open handshake waits for its deadline.
            assert not any(
                conn.state is ConnectionState.ESTABLISHED for conn in endpoint.connections.values()
            )

    run(main(), limit=30.0)


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_our_client_with_a_wrong_key_fails_within_its_deadline(build: str) -> None:
    require_peer(f"coap-server-{build}")
    wrong = {"coaps://*": {"dtls": {"psk": {"ascii": "wrongPSK"},
                                    "client-identity": {"ascii": CLIENT_IDENTITY}}}}

    async def main(port: int) -> None:
        async with coaps_client(credentials=wrong, handshake_timeout=2.0) as client:
            started = time.monotonic()
            # libcoap answers a Finished it cannot verify with silence (peers.md).
            with pytest.raises(AssociationTimeout):
                await get(client, uri((LOCALHOST, port), ""))
            assert time.monotonic() - started < 4.0

    with libcoap_server(build) as (port, _):
        run(main(port), limit=20.0)


@pytest.mark.req("COAP-1")
def test_raw_public_keys_with_libcoap_gnutls_both_ways(tmp_path: Path) -> None:
    """RawPublicKey mode with the GnuTLS builds (the OpenSSL build has no raw keys, peers.md):
    our client against `coap-server-gnutls -M`, `coap-client-gnutls -M` against our server."""
    require_peer("coap-server-gnutls")
    require_peer("coap-client-gnutls")
    files = make_rpk_files(tmp_path)
    site = CoapSite()

    async def our_client(port: int) -> None:
        async with coaps_client(credentials=rpk_client_credentials(files),
                                handshake_timeout=HANDSHAKE_TIMEOUT) as client:
            banner = await get(client, uri((LOCALHOST, port), ""))
            assert b"libcoap" in banner.payload
            assert banner.remote.peer == RawPublicKeyIdentity(
                PrivateKey.load(files.server_key).spki)

    async def their_client() -> str:
        async with coaps_server(site, credentials=rpk_server_credentials(files)) as server:
            peer = PeerProcess(["coap-client-gnutls", "-B", "5", "-M", str(files.client_key),
                                uri(server.address, "whoami")], time_limit=30.0)
            with peer:
                assert await asyncio.to_thread(peer.wait, 20.0) is not None
            return peer.output

    with libcoap_server("gnutls", "-M", str(files.server_key)) as (port, server):
        run(our_client(port), limit=30.0)
        assert server.returncode is None, server.output
    output = run_for(their_client(), limit=30.0)
    client_key = RawPublicKeyIdentity(PrivateKey.load(files.client_key).spki)
    assert str(client_key) in output
    [(_, claims)] = site.whoami.seen
    assert claims == (client_key, ":dev2")
