"""coaps in the Certificate security mode (RFC 7252 §9.1.3.3): aiocoap's client and server over
iotdtls with "dtls-x509" credentials, in process and against libcoap 4.3.1's GnuTLS and OpenSSL
builds in both roles. The client's EUI-64 reaches the resource handler (CRT-4); the client
checks the server's certificate for the URI's host; a wrong CA fails the request at once."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiocoap
import pytest

from iotdtls.coap import AssociationFailed
from iotdtls.errors import AlertDescription, AlertReceived, AlertSent
from iotdtls.identity import CertificateIdentity
from tests.coap_support import (
    CoapSite,
    coaps_client,
    coaps_server,
    get,
    libcoap_client,
    libcoap_pki,
    libcoap_server,
    run,
    uri,
    x509_client_credentials,
    x509_server_credentials,
)
from tests.peers import CLIENT_EUI64, LOCALHOST, Pki, make_test_pki, require_peer

BUILDS = ["gnutls", "openssl"]
#: A handshake bound that covers libcoap's start-up (our client retransmits meanwhile).
HANDSHAKE_TIMEOUT = 10.0
CLIENT = CertificateIdentity(CLIENT_EUI64)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA with its own certificates: trusting it is trusting the wrong CA."""
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.mark.req("COAP-1", "CRT-4")
def test_mutual_certificates_and_the_eui64_reaches_the_handler(pki: Pki) -> None:
    site = CoapSite()

    credentials = x509_server_credentials(pki)

    async def main() -> None:
        # "localhost" may resolve to ::1 first: that server listens where the client goes.
        async with coaps_server(site, credentials=credentials) as by_ip, \
                coaps_server(site, credentials=credentials, bind=(_localhost(), 0)) as by_name, \
                coaps_client(credentials=x509_client_credentials(pki)) as client:
            # The certificate names both (SAN IP and DNS): each is the URI's host (RFC 6125).
            for host, server in ((LOCALHOST, by_ip), ("localhost", by_name)):
                response = await get(client, f"coaps://{host}:{server.address[1]}/whoami")
                assert response.code == aiocoap.CONTENT
                assert response.payload == f"certificate {CLIENT_EUI64}".encode()
                assert response.remote.peer == CertificateIdentity(host)
            hello = await get(client, uri(by_ip.address, "hello"))
            assert hello.payload == f"Hello, certificate {CLIENT_EUI64}!".encode()
        claims = [claims for _, claims in site.whoami.seen]
        assert claims == [(CLIENT, ":dev3"), (CLIENT, ":dev3")]
        assert [remote.peer.name for remote, _ in site.whoami.seen] == [CLIENT_EUI64] * 2

    run(main())


@pytest.mark.req("COAP-1")
def test_the_server_certificate_must_name_the_server(pki: Pki) -> None:
    async def main() -> None:
        async with coaps_server(credentials=x509_server_credentials(pki)) as server:
            named = x509_client_credentials(pki, **{"server-name": "sensor.example"})
            async with coaps_client(credentials=named) as client:
                with pytest.raises(AssociationFailed) as info:
                    await get(client, uri(server.address, "hello"))
            cause = info.value.__cause__
            assert isinstance(cause, AlertSent)
            assert cause.alert == AlertDescription.bad_certificate
            assert "not valid for sensor.example" in str(info.value)
            assert "server name" in (info.value.extra_help() or "")
        # without a server-name, the URI's host: ::1, which the certificate does not name (M15)
        async with coaps_server(credentials=x509_server_credentials(pki),
                                bind=("::1", 0)) as server, \
                coaps_client(credentials=x509_client_credentials(pki)) as client:
            with pytest.raises(AssociationFailed) as info:
                await get(client, f"coaps://[::1]:{server.address[1]}/hello")
            cause = info.value.__cause__
            assert isinstance(cause, AlertSent)
            assert cause.alert == AlertDescription.bad_certificate
            assert "not valid for ::1" in str(info.value)

    run(main())


@pytest.mark.req("COAP-1")
def test_a_client_without_a_certificate_only_where_none_is_required(pki: Pki) -> None:
    server_only = x509_client_credentials(pki)
    del server_only["coaps://*"]["dtls-x509"]["certificate"]
    del server_only["coaps://*"]["dtls-x509"]["private-key"]
    lenient = {":server": {"dtls-x509": {"certificate": str(pki.server_crt),
                                         "private-key": str(pki.server_key)}}}
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(credentials=x509_server_credentials(pki)) as strict, \
                coaps_server(site, credentials=lenient) as server, \
                coaps_client(credentials=server_only) as client:
            with pytest.raises(AssociationFailed) as info:
                await get(client, uri(strict.address, "hello"))
            assert isinstance(info.value.__cause__, AlertReceived)
            assert strict.endpoint_server.endpoint.connections == {}
            # Server-only authentication: the handler hears of no claim at all.
            response = await get(client, uri(server.address, "whoami"))
            assert response.payload == b"unauthenticated client"
        assert [claims for _, claims in site.whoami.seen] == [()]

    run(main())


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("build", BUILDS)
def test_our_client_against_libcoap_server_with_certificates(build: str, pki: Pki,
                                                             other_pki: Pki) -> None:
    require_peer(f"coap-server-{build}")

    async def main(port: int) -> None:
        async with coaps_client(credentials=x509_client_credentials(pki),
                                handshake_timeout=HANDSHAKE_TIMEOUT) as client:
            banner = await get(client, uri((LOCALHOST, port), ""))
            assert banner.code == aiocoap.CONTENT and b"libcoap" in banner.payload
            assert banner.remote.peer == CertificateIdentity(LOCALHOST)
        # Trusting another CA: refused at the server's Certificate, long before the deadline.
        wrong_ca = x509_client_credentials(pki, anchors=other_pki.ca_crt)
        async with coaps_client(credentials=wrong_ca,
                                handshake_timeout=HANDSHAKE_TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(AssociationFailed) as info:
                await get(client, uri((LOCALHOST, port), ""))
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT / 2
            assert "sent fatal alert bad_certificate" in str(info.value)
            assert "trust anchors" in (info.value.extra_help() or "")

    with libcoap_server(build, *libcoap_pki(pki)) as (port, server):
        run(main(port), limit=40.0)
        assert server.returncode is None, server.output


@pytest.mark.req("COAP-1", "CRT-4")
@pytest.mark.parametrize("build", BUILDS)
def test_libcoap_client_with_certificates_against_our_server(build: str, pki: Pki) -> None:
    require_peer(f"coap-client-{build}")
    site = CoapSite()

    async def main() -> str:
        async with coaps_server(site, credentials=x509_server_credentials(pki)) as server:
            peer = libcoap_client(build, uri(server.address, "whoami"),
                                  credentials=libcoap_pki(pki, ours="client"))
            with peer:
                assert await asyncio.to_thread(peer.wait, 20.0) is not None
            return peer.output

    output = asyncio.run(asyncio.wait_for(main(), 30.0))
    assert f"certificate {CLIENT_EUI64}" in output
    [(remote, claims)] = site.whoami.seen
    assert claims == (CLIENT, ":dev3")
    assert remote.peer.chain and remote.peer.chain[0] == _der(pki.client_der)


def _der(path: Path) -> bytes:
    return path.read_bytes()


def _localhost() -> str:
    """The address a client reaches for "localhost" (the first one the resolver gives)."""
    return str(socket.getaddrinfo("localhost", None, type=socket.SOCK_DGRAM)[0][4][0])
