"""`iotdtls.coap` from its front door (`client_context`, `server_context`): one fixed
`ClientConfig` / `ServerConfig` instead of aiocoap's credentials map, the bind address, plain
`coap://` beside coaps, the chain cache, and the life of a client association: closed with the
context, failed with its cause, forgotten when its handshake fails (COAP-1)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any, cast

import aiocoap
import pytest
from aiocoap import error, interfaces, resource

from iotdtls import aio
from iotdtls.chaincache import ChainCache
from iotdtls.coap import (
    AssociationClosed,
    AssociationFailed,
    ClientRemote,
    add_client_transport,
    client_context,
)
from iotdtls.coap import server_context as coap_server_context
from iotdtls.config import ClientConfig
from iotdtls.credentials import CertifiedKey, load_certificate_file
from iotdtls.errors import ConfigError, PeerUnresponsive
from iotdtls.identity import PskIdentity
from iotdtls.proxy import Impairment
from tests.aio_support import client_config, server_config
from tests.coap_support import (
    CLIENT_CREDENTIALS,
    SERVER_CREDENTIALS,
    CoapSite,
    coaps_client,
    coaps_server,
    get,
    run,
    uri,
    x509_server_credentials,
)
from tests.interop_support import FAST, proxied
from tests.peers import CLIENT_IDENTITY, LOCALHOST, Pki, free_udp_port

IDENTITY = PskIdentity(CLIENT_IDENTITY.encode())


def transports_of(context: aiocoap.Context) -> list[Any]:
    """The message-layer transports of an aiocoap context (aiocoap keeps them two levels
    down: request interface, then its message interface)."""
    found = []
    for interface in context.request_interfaces:
        manager = getattr(interface, "token_interface", None)
        transport = getattr(manager, "message_interface", None)
        if transport is not None:
            found.append(transport)
    return found


@pytest.mark.req("COAP-1")
def test_fixed_configurations_on_both_sides_on_the_port_asked_for() -> None:
    """config= instead of a credentials map: every request uses it, the server authenticates
    against it (no labels to add to the claims), and it listens where `bind` says."""
    site = CoapSite()
    port = free_udp_port()

    async def main() -> None:
        server = await coap_server_context(
            site.site, (LOCALHOST, port), config=server_config()
        )
        try:
            client = await client_context(config=client_config(), plain_coap=False)
            try:
                response = await get(client, f"coaps://{LOCALHOST}:{port}/whoami")
                assert response.payload == str(IDENTITY).encode()
                assert response.remote.peer == IDENTITY
            finally:
                await client.shutdown()
            [transport] = transports_of(server)
            assert transport.address[:2] == (LOCALHOST, port)
        finally:
            await server.shutdown()
        [(_remote, claims)] = site.whoami.seen
        assert claims == (IDENTITY,)

    run(main())


class Plain(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"plain")


def test_plain_coap_goes_beside_coaps_unless_turned_off() -> None:
    site = resource.Site()
    site.add_resource(["plain"], Plain())
    port = free_udp_port()

    async def main() -> None:
        plain_server = await aiocoap.Context.create_server_context(site, bind=(LOCALHOST, port))
        try:
            both = await client_context(config=client_config())
            try:
                response = await get(both, f"coap://{LOCALHOST}:{port}/plain")
                assert response.payload == b"plain"
            finally:
                await both.shutdown()
            coaps_only = await client_context(config=client_config(), plain_coap=False)
            try:
                with pytest.raises(error.NoRequestInterface):
                    await get(coaps_only, f"coap://{LOCALHOST}:{port}/plain")
            finally:
                await coaps_only.shutdown()
        finally:
            await plain_server.shutdown()

    run(main())


@pytest.mark.req("COAP-1")
def test_the_chain_cache_keeps_the_servers_chain(pki: Pki, tmp_path: Path) -> None:
    """chain_cache= reaches the associations: after one request the server's chain is in the
    cache (RFC 7924 cached_info then spares sending it again)."""
    cache = ChainCache(tmp_path)

    async def main() -> None:
        async with coaps_server(credentials=x509_server_credentials(pki)) as server:
            config = ClientConfig(trust_anchors=load_certificate_file(pki.ca_crt),
                                  certificate=CertifiedKey.load(pki.client_crt, pki.client_key),
                                  retransmit=FAST, handshake_timeout=5.0)
            client = await client_context(config=config, plain_coap=False, chain_cache=cache)
            try:
                response = await get(client, uri(("localhost", server.address[1]), "hello"))
                assert response.code == aiocoap.CONTENT
            finally:
                await client.shutdown()
        assert list(tmp_path.iterdir()), "nothing was cached"

    run(main())


@pytest.mark.req("COAP-1")
def test_shutting_the_client_down_closes_its_association_with_close_notify(
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = CoapSite()
    caplog.set_level(logging.INFO, "iotdtls")

    async def main() -> None:
        async with coaps_server(site) as server:
            async with coaps_client() as client:
                response = await get(client, uri(server.address, "whoami"))
                remote = response.remote
                assert isinstance(remote, ClientRemote) and not remote.ended
            assert remote.ended
            [(server_remote, _claims)] = site.whoami.seen
            for _ in range(100):  # the server hears the close_notify at once
                if server_remote.ended:
                    break
                await asyncio.sleep(0.01)
            assert server_remote.ended

    run(main())
    # The server's side of the association ended cleanly, its handler without an error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.req("COAP-1")
def test_a_remote_being_closed_is_not_used_for_the_next_request() -> None:
    """`ClientRemote.close()` marks the remote ended at once: a request made while its
    close_notify is on the way opens a new association instead of using the closing one."""
    async def main() -> None:
        async with coaps_server() as server, coaps_client() as client:
            first = await get(client, uri(server.address, "hello"))
            remote = first.remote
            assert isinstance(remote, ClientRemote)
            closing = asyncio.ensure_future(remote.close())
            await asyncio.sleep(0)  # close() has started, its close_notify not yet answered
            assert remote.ended and not closing.done()
            second = await asyncio.wait_for(get(client, uri(server.address, "hello")), 5.0)
            assert second.remote is not remote
            await closing

    run(main())


@pytest.mark.req("COAP-1")
def test_shutting_down_during_the_handshake_fails_the_request_at_once() -> None:
    """A request waiting for a handshake that cannot complete (nobody answers) ends with the
    context: aiocoap's LibraryShutdown, without waiting for the handshake deadline."""
    async def main(port: int) -> None:
        client = await client_context(config=client_config(), plain_coap=False)
        request = client.request(aiocoap.Message(
            code=aiocoap.GET, uri=f"coaps://{LOCALHOST}:{port}/hello"))
        await asyncio.sleep(0.3)  # the handshake has started
        await asyncio.wait_for(client.shutdown(), 2.0)
        with pytest.raises(error.LibraryShutdown):
            await asyncio.wait_for(request.response, 2.0)

    # A socket that reads nothing: no ICMP port unreachable ends the handshake first.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        run(main(silent.getsockname()[1]), limit=10.0)


@pytest.mark.req("COAP-1")
def test_a_failed_handshake_leaves_no_association_behind() -> None:
    async def main() -> None:
        async with coaps_server() as server:
            wrong = ClientConfig(psk_identity=CLIENT_IDENTITY, psk=b"\x00" * 16,
                                 retransmit=FAST, handshake_timeout=5.0)
            client = await client_context(config=wrong, plain_coap=False)
            try:
                with pytest.raises(AssociationFailed):
                    await get(client, uri(server.address, "hello"))
                [transport] = transports_of(client)
                assert repr(transport) == "<CoapsClientInterface associations=0>"
            finally:
                await client.shutdown()

    run(main())


def test_a_request_to_port_0_ends_with_a_malformed_uri_error() -> None:
    """Port 0 is no port to send to: the request ends with the error of a URI whose port is
    above 65535 (it used to go to 5684), and no association is made."""

    async def main() -> None:
        async with coaps_client() as client:
            with pytest.raises(error.MalformedUrlError, match="port must be a number from 1 to"):
                await get(client, f"coaps://{LOCALHOST}:0/hello")
            [transport] = transports_of(client)
            assert repr(transport) == "<CoapsClientInterface associations=0>"

    run(main())


@pytest.mark.req("COAP-1")
def test_an_association_that_dies_fails_its_pending_request_with_the_cause() -> None:
    """The server goes silent with a request pending; the client's heartbeats go unanswered
    (RFC 6520), the association ends with PeerUnresponsive, and the request fails with an
    AssociationClosed whose cause is that error."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site, heartbeat=True) as server:
            with proxied(server.address[1]) as proxy:
                config = client_config(heartbeat=True, keepalive_interval=1.0,
                                             handshake_timeout=1.0)
                client = await client_context(config=config, plain_coap=False)
                try:
                    await get(client, uri(proxy.address, "hello"))
                    pending = client.request(aiocoap.Message(
                        code=aiocoap.GET, uri=uri(proxy.address, "slow"))).response
                    await asyncio.wait_for(site.slow.started.wait(), 5.0)
                    proxy.impairments["server"] = Impairment(loss=1.0)
                    with pytest.raises(AssociationClosed) as caught:
                        await asyncio.wait_for(pending, 10.0)
                    assert isinstance(caught.value.__cause__, PeerUnresponsive)
                    assert "ended: the peer did not answer heartbeats" in str(caught.value)
                    [transport] = transports_of(client)  # the dead association is forgotten
                    assert repr(transport) == "<CoapsClientInterface associations=0>"
                finally:
                    site.slow.release.set()
                    await client.shutdown()

    run(main())



def test_a_server_recognizes_only_its_own_live_remotes() -> None:
    """aiocoap asks before it sends to a remote (a notification, say): only a remote of this
    server's live associations is one it can send to (RFC 7252 §9.1)."""
    site, other_site = CoapSite(), CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, coaps_server(other_site) as other:
            async with coaps_client() as client:
                ours = (await get(client, uri(server.address, "whoami"))).remote
                await get(client, uri(other.address, "whoami"))
                [(remote, _claims)] = site.whoami.seen
                [(foreign, _claims)] = other_site.whoami.seen
                assert await server.recognize_remote(remote)
                assert not await server.recognize_remote(foreign)
                assert isinstance(ours, ClientRemote)  # the client's end of the same one
                assert not await server.recognize_remote(ours)
                # aiocoap asks every transport about every remote, a plain UDP one too.
                other_transports = cast(interfaces.EndpointAddress, object())
                assert not await server.recognize_remote(other_transports)
            for _ in range(100):  # the client's close_notify ends the association
                if remote.ended:
                    break
                await asyncio.sleep(0.01)
            assert not await server.recognize_remote(remote)

    run(main())


def test_the_server_context_logs_as_coap_server() -> None:
    """aiocoap's own log lines of the server context come under `coap-server` (as in
    aiocoap's servers), apart from a client context's in the same process."""
    async def main() -> None:
        server = await coap_server_context(
            CoapSite().site, (LOCALHOST, 0), config=server_config()
        )
        try:
            assert server.log.name == "coap-server"
        finally:
            await server.shutdown()

    run(main())


def test_a_client_recognizes_only_the_remotes_in_its_pool() -> None:
    async def main() -> None:
        async with coaps_server() as server, coaps_client() as client:
            [transport] = transports_of(client)
            remote = (await get(client, uri(server.address, "hello"))).remote
            assert await transport.recognize_remote(remote)
            assert not await transport.recognize_remote(cast(Any, object()))
            await remote.close()  # ended: the next request makes a new remote
            newer = (await get(client, uri(server.address, "hello"))).remote
            assert await transport.recognize_remote(newer)
            assert not await transport.recognize_remote(remote)

    run(main())


def test_settings_of_either_side_are_accepted_and_not_beside_a_config() -> None:
    async def main() -> None:
        # max_fragment_length is a client setting only, cookie_exchange a server one.
        client = await client_context(credentials=CLIENT_CREDENTIALS, plain_coap=False,
                                      max_fragment_length=512, retransmit=FAST)
        await client.shutdown()
        context = aiocoap.Context()  # no transport: nothing to shut down (aiocoap refuses to)
        with pytest.raises(ConfigError) as caught:
            await add_client_transport(context, config=client_config(), mtu=300)
        assert str(caught.value) == "give the DTLS settings inside config=, not beside it"

    run(main())


def test_the_server_context_hands_its_settings_and_bound_to_its_transport() -> None:
    """`server_context`'s DTLS settings (beside a credentials map) and `max_body_size` reach
    the server transport."""

    async def main() -> None:
        server = await coap_server_context(None, (LOCALHOST, 0), credentials=SERVER_CREDENTIALS,
                                           cookie_exchange=False, mtu=600, max_body_size=100)
        try:
            [transport] = transports_of(server)
            assert (transport.config.cookie_exchange, transport.config.mtu) == (False, 600)
            assert transport.max_body_size == 100
        finally:
            await server.shutdown()

    run(main())


def test_bind_without_a_port_takes_the_coaps_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7252 §12.7: coaps is 5684 when the bind address names no port. The port asked for
    is recorded and a fresh one bound instead: 5684 may be in use on the machine running the
    tests (another coaps server, a parallel run)."""
    asked: list[int] = []
    real_serve = aio.serve

    async def serve(handler: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        asked.append(port)
        return await real_serve(handler, host, 0, *args, **kwargs)

    monkeypatch.setattr(aio, "serve", serve)

    async def main() -> None:
        server = await coap_server_context(None, (LOCALHOST, None), config=server_config())
        try:
            [transport] = transports_of(server)
            assert transport.address[0] == LOCALHOST and transport.address[1] not in (0, 5684)
        finally:
            await server.shutdown()

    run(main())
    assert asked == [5684]


def test_a_server_shut_down_under_a_live_association_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        # The server goes first, with close_notify to the live association; then the client.
        async with coaps_client() as client, coaps_server() as server:
            await get(client, uri(server.address, "hello"))

    run(main())
    problems = [f"{r.name}: {r.getMessage()}" for r in caplog.records
                if r.levelno >= logging.ERROR]
    assert problems == []


@pytest.mark.parametrize("bind", ["127.0.0.1:5684", ("127.0.0.1",), ("127.0.0.1", 5684, 0),
                                  (5684, "127.0.0.1"), ("127.0.0.1", "5684")])
def test_a_bind_address_of_another_form_is_refused_in_one_line(bind: Any) -> None:
    """"127.0.0.1:5684" gave "ValueError: too many values to unpack (expected 2)"."""

    async def main() -> None:
        await coap_server_context(None, bind, config=server_config())

    with pytest.raises(TypeError) as refused:
        run(main())
    assert str(refused.value).startswith(
        'bind must be a (host, port) tuple such as ("127.0.0.1", 5684) (port None: 5684), got ')


@pytest.mark.parametrize(("settings", "message"), [
    ({"certificate_urls": 5}, "certificate_urls must be a list of URL strings"),
    ({"certificate_urls": ["http://a/\0"]},
     "certificate_urls: URL 1 must be printable ASCII without spaces"),
    ({"indicate_trusted_cas": "yes"}, "indicate_trusted_cas must be True or False, got str"),
    ({"cached_server_chain": "not a chain"},
     "cached_server_chain must be a list of certificates (DER or PEM bytes), got str"),
    ({"cached_server_chain": [b"not a certificate"]},
     "cached_server_chain: not a PEM or DER X.509 certificate"),
])
def test_certificate_settings_are_checked_when_the_client_is_made(
        settings: dict[str, Any], message: str, pki: Pki) -> None:
    """Their types and values, whatever the map holds (probe BN #7, cert_settings.py: each was
    taken, then every request failed with UnusableCredentials); their certificate-mode rule
    is still left to the entries (an empty map takes well-formed ones)."""

    async def main() -> None:
        with pytest.raises(ConfigError) as info:
            await client_context(credentials={}, plain_coap=False, **settings)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
        chain = [pki.ca_crt.read_bytes()]
        fine = {"indicate_trusted_cas": True, "cached_server_chain": chain}
        context = await client_context(credentials={}, plain_coap=False, **fine)
        await context.shutdown()

    run(main())
