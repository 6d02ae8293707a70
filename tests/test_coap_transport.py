"""`iotdtls.coap`: aiocoap's client and server over iotdtls associations, both ends ours, over
loopback (RFC 7252 §9: coaps; RFC 7959 block-wise; RFC 7641 observe)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap import error, resource
from aiocoap.messagemanager import MessageManager

from iotdtls.coap import (
    AssociationClosed,
    AssociationFailed,
    AssociationTimeout,
    ClientRemote,
    MessageTooLarge,
    block_size_exp,
)
from iotdtls.coap.client import REQUESTS_KEPT, _size_bound, credentials_of
from iotdtls.coap.credentials import CredentialsMap
from iotdtls.config import ClientConfig, Mode, file_keylog
from iotdtls.credentials import CertifiedKey, PrivateKey, load_certificate_file, public_key_pin
from iotdtls.endpoint import GateOutcome
from iotdtls.errors import DtlsError
from iotdtls.identity import PskIdentity, RawPublicKeyIdentity
from tests.coap_support import (
    CLIENT_CREDENTIALS,
    LARGE,
    PSK_ENTRY,
    SERVER_CREDENTIALS,
    CoapSite,
    coaps_client,
    coaps_server,
    get,
    make_rpk_files,
    raw_request,
    reply,
    rpk_client_credentials,
    rpk_server_credentials,
    run,
    uri,
    x509_client_credentials,
    x509_server_credentials,
)
from tests.interop_support import (
    APPLICATION_DATA,
    AnsweringServer,
    SameAddressClient,
    assert_datagrams_fit,
    assert_encrypted,
    client_config,
    proxied,
    records,
)
from tests.peers import CLIENT_IDENTITY, LOCALHOST, Pki
from tests.test_coap_contexts import transports_of


@pytest.mark.req("COAP-1")
def test_get_over_coaps_and_the_identity_reaches_the_handler() -> None:
    site = CoapSite()
    async def main() -> None:
        async with coaps_server(site) as server, coaps_client() as client:
            with proxied(server.address[1]) as proxy:
                response = await get(client, uri(proxy.address, "whoami"))
                assert response.code == aiocoap.CONTENT
                assert response.payload == b"psk identity b'Client_identity'"
                assert isinstance(response.remote, ClientRemote)
                assert response.remote.peer == PskIdentity(CLIENT_IDENTITY.encode())
                assert response.remote.scheme == "coaps"
                hello = await get(client, uri(proxy.address, "hello"))
                assert hello.payload == b"Hello, Client_identity!"
                assert hello.remote is response.remote  # one association for both
            # CoAP went inside DTLS records only (RFC 7252 §9.1.1).
            assert_encrypted(proxy.snapshot(), b"whoami", b"Hello")
        [(remote, claims)] = site.whoami.seen
        assert remote.peer == PskIdentity(CLIENT_IDENTITY.encode())
        assert claims == (PskIdentity(CLIENT_IDENTITY.encode()), ":client")

    run(main())


@pytest.mark.req("COAP-1")
def test_blockwise_4_kib_both_ways_at_mtu_256() -> None:
    site = CoapSite()
    async def main() -> None:
        async with coaps_server(site, mtu=256) as server, coaps_client(mtu=256) as client:
            with proxied(server.address[1]) as proxy:
                response = await get(client, uri(proxy.address, "large"))
                assert response.payload == LARGE
                assert response.opt.block2 is not None  # it came in blocks (RFC 7959 §2.2)
                put = aiocoap.Message(code=aiocoap.PUT, uri=uri(proxy.address, "large"),
                                      payload=LARGE[::-1])
                changed = await client.request(put).response
                assert changed.code == aiocoap.CHANGED and changed.payload == b"4096"
            log = proxy.snapshot()
        assert site.large.stored == LARGE[::-1]
        # Each block, sealed in one record, fits the 256-byte datagrams of both sides.
        assert_datagrams_fit(log, "client", 256)
        assert_datagrams_fit(log, "server", 256)
        blocks = 4096 // 2 ** (block_size_exp(256) + 4)
        for direction in ("client", "server"):
            app = [d for d in log if d.direction == direction
                   and any(r[0] == APPLICATION_DATA for r in records(d.data))]
            assert len(app) >= 2 * blocks, (direction, len(app))

    run(main())


def test_block_size_follows_the_mtu() -> None:
    # RFC 7252 §4.6: 128 bytes of headroom for header and options, 37 for the record.
    assert [block_size_exp(mtu) for mtu in (128, 256, 300, 1232, 1500)] == [0, 2, 3, 6, 6]


def test_a_request_too_large_for_the_mtu_fails_at_once_and_the_association_stays() -> None:
    """RFC 6347 §4.1.1: a request whose options cannot fit one datagram of the mtu fails at
    once, saying so (it was dropped at each retransmission, failed after 93 s, and the
    association was then replaced as unresponsive); the next request goes over the same
    association, and a large payload still goes block-wise (RFC 7959)."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, coaps_client(mtu=128) as client:
            first = await get(client, uri(server.address, "hello"))
            started = time.monotonic()
            with pytest.raises(MessageTooLarge) as raised:
                await get(client, uri(server.address, "a" * 250))
            assert time.monotonic() - started < 1.0
            assert raised.value.mtu == 128 and raised.value.size > raised.value.limit
            too_large = raised.value
            assert too_large.args == (
                f"127.0.0.1:{server.address[1]}", too_large.size, too_large.limit, 128
            )  # as made: a copy (pickle) makes it again from them
            assert str(pickle.loads(pickle.dumps(too_large))) == str(too_large)
            assert str(raised.value) == (
                f"coaps: a request of {raised.value.size} bytes to 127.0.0.1:"
                f"{server.address[1]} was not sent: at most {raised.value.limit} bytes of CoAP "
                "message fit one DTLS record in a datagram of the mtu, 128 bytes"
            )
            assert isinstance(raised.value, error.NetworkError)
            second = await get(client, uri(server.address, "hello"))
            assert second.remote is first.remote and not first.remote.ended
            put = aiocoap.Message(code=aiocoap.PUT, uri=uri(server.address, "large"),
                                  payload=LARGE)
            changed = await client.request(put).response
            assert changed.code == aiocoap.CHANGED and site.large.stored == LARGE
            assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main(), 20.0)


@pytest.mark.parametrize(
    "length", [0, 10, 16, 100], ids=["no-payload", "in-one-block", "one-whole-block", "block-wise"]
)
def test_a_request_is_copied_to_be_measured_only_near_the_limit(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    """`check_size` copies and encodes a request (its first block, with Block1 and Size1, and
    the longest token) only when a bound taken from its options and payload says it may not
    fit (`_size_bound`, a bound equal to the limit fits): a small request is not copied, and
    near the limit a request fails exactly when its first datagram is larger than the limit;
    a payload of exactly one block goes whole, without Block1 (RFC 7959 §2.3)."""
    payload = b"x" * length
    real_copy = aiocoap.Message.copy
    copies: list[object] = []

    def counted(self: aiocoap.Message, **changes: Any) -> aiocoap.Message:
        copies.append(self)
        return real_copy(self, **changes)

    async def main() -> None:
        async with coaps_server(CoapSite()) as server, coaps_client(mtu=128) as client:
            remote = (await get(client, uri(server.address, "hello"))).remote
            assert isinstance(remote, ClientRemote) and remote._connection is not None
            limit = remote._connection.connection.max_send_size
            monkeypatch.setattr(aiocoap.Message, "copy", counted)
            remote.check_size(aiocoap.Message(code=aiocoap.PUT, uri_path=("s",),
                                              payload=payload))
            assert copies == []
            assert remote.maximum_payload_size == 16  # at mtu 128
            block: dict[str, Any] = {}
            if len(payload) > remote.maximum_payload_size:
                block = {"payload": payload[: remote.maximum_payload_size],
                         "block1": (0, True, remote.maximum_block_size_exp),
                         "size1": len(payload)}
            sizes, bounds = [], []
            for path in range(1, 100):
                request = aiocoap.Message(code=aiocoap.PUT, uri_path=("a" * path,),
                                          payload=payload)
                size = len(real_copy(request, mtype=aiocoap.CON, mid=0, token=bytes(8),
                                     **block).encode())
                sizes.append(size)
                bound = _size_bound(request, remote.maximum_payload_size)
                bounds.append(bound)
                copies.clear()
                if size <= limit:
                    remote.check_size(request)
                else:
                    with pytest.raises(MessageTooLarge) as raised:
                        remote.check_size(request)
                    assert raised.value.size == size
                assert copies == ([] if bound <= limit else [request])
            assert limit in sizes and limit + 1 in sizes  # the limit itself was tried
            assert limit in bounds

    run(main())


@pytest.mark.parametrize(
    ("length", "block_options"),
    [(0, 0), (10, 0), (64, 0), (65, 13 + 1), (255, 13 + 1), (256, 13 + 2), (65535, 13 + 2),
     (65536, 13 + 3)],
)
def test_a_requests_size_bound_is_its_first_datagram_at_the_most(
    length: int, block_options: int
) -> None:
    """`_size_bound`: the header, the longest token and the payload marker (13 bytes), the
    options as they are and one block of payload (64 bytes here); beyond one block (RFC 7959
    §2.3) a Block1 and a Size1 option at their longest header (5 bytes each), Block1's value
    at its longest (3 bytes) and Size1's, the payload's length in as few bytes as it takes
    (RFC 7252 §3.2). Never below the size `check_size` measures, so a request too large is
    never let through unmeasured."""
    request = aiocoap.Message(code=aiocoap.PUT, uri_path=("a" * 20,), payload=b"x" * length)
    options = len(request.opt.encode())
    assert _size_bound(request, 64) == 13 + options + min(length, 64) + block_options
    block: dict[str, Any] = {}
    if length > 64:
        block = {"payload": request.payload[:64], "block1": (0, True, 2), "size1": length}
    size = len(request.copy(mtype=aiocoap.CON, mid=0, token=bytes(8), **block).encode())
    assert size <= _size_bound(request, 64) <= size + 10


@pytest.mark.req("COAP-1")
def test_observe_over_one_association_for_seconds() -> None:
    async def main() -> None:
        async with coaps_server(CoapSite(counter_interval=0.4)) as server, \
                coaps_client() as client:
            request = client.request(aiocoap.Message(
                code=aiocoap.GET, uri=uri(server.address, "counter"), observe=0))
            first = await request.response
            assert first.opt.observe is not None  # the server accepted the observation
            assert request.observation is not None
            values, remotes = [int(first.payload)], {id(first.remote)}
            started = time.monotonic()
            async for note in request.observation:
                values.append(int(note.payload))
                remotes.add(id(note.remote))
                if time.monotonic() - started > 3.0:
                    break
            request.observation.cancel()
            assert len(values) >= 6 and values == sorted(values) and len(set(values)) == len(values)
            assert len(remotes) == 1  # every notification over the one association
            assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main())


@pytest.mark.req("COAP-1")
def test_ten_clients_at_once_each_with_its_identity() -> None:
    keys = {f"dev{n}": bytes([n + 1]) * 16 for n in range(10)}
    server_credentials = {
        f":dev{n}": {"dtls": {"psk": keys[f"dev{n}"], "client-identity": f"dev{n}".encode()}}
        for n in range(10)}
    site = CoapSite()

    async def one(address: tuple[Any, ...], name: str) -> bytes:
        credentials = {"coaps://*": {"dtls": {"psk": keys[name],
                                              "client-identity": name.encode()}}}
        async with coaps_client(credentials=credentials) as client:
            response = await get(client, uri(address, "whoami"))
            return bytes(response.payload)

    async def main() -> None:
        async with coaps_server(site, credentials=server_credentials) as server:
            answers = await asyncio.gather(*(one(server.address, f"dev{n}") for n in range(10)))
            assert answers == [b"psk identity b'dev%d'" % n for n in range(10)]
            gate = server.endpoint_server.endpoint.gate
            assert gate[GateOutcome.COOKIE_ACCEPTED] == 10
        seen = site.whoami.seen
        assert sorted(claims[1] for _, claims in seen) == sorted(server_credentials)
        assert len({id(remote) for remote, _ in seen}) == 10

    run(main())


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("entry", [
    {"psk": {"hex": "0102030405060708090a0b0c0d0e0f11"},
     "client-identity": {"ascii": CLIENT_IDENTITY}},
    {"psk": {"hex": PSK_ENTRY["psk"]["hex"]}, "client-identity": {"ascii": "nobody"}},
], ids=["wrong-key", "unknown-identity"])
def test_wrong_credentials_fail_the_request_at_once(entry: dict[str, Any]) -> None:
    async def main() -> None:
        async with coaps_server() as server, \
                coaps_client(credentials={"coaps://*": {"dtls": entry}}) as client:
            started = time.monotonic()
            with pytest.raises(AssociationFailed) as info:
                await get(client, uri(server.address, "hello"))
            assert time.monotonic() - started < 2.0  # an alert, not a timeout
            assert isinstance(info.value, error.NetworkError)
            assert isinstance(info.value.__cause__, DtlsError)
            assert str(info.value).startswith(
                f"coaps: DTLS handshake with {LOCALHOST}:{server.address[1]} failed: ")
            assert "credentials" in (info.value.extra_help() or "")

    run(main())


def test_silent_server_gives_a_timeout_error_within_the_deadline() -> None:
    async def main() -> None:
        silent = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(LOCALHOST, 0))
        address = silent[0].get_extra_info("sockname")
        try:
            async with coaps_client(handshake_timeout=1.0) as client:
                started = time.monotonic()
                with pytest.raises(AssociationTimeout) as info:
                    await get(client, uri(address, "hello"))
                assert 0.9 <= time.monotonic() - started < 3.0
                assert isinstance(info.value, error.TimeoutError)
        finally:
            silent[0].close()

    run(main())


@pytest.mark.req("COAP-1")
def test_pending_request_fails_when_its_association_ends() -> None:
    site = CoapSite()
    slow = site.slow

    async def main() -> None:
        async with coaps_client() as client:
            async with coaps_server(site) as server:
                pending = client.request(aiocoap.Message(
                    code=aiocoap.GET, uri=uri(server.address, "slow"))).response
                await asyncio.wait_for(slow.started.wait(), 5.0)
                started = time.monotonic()
            # The server closed (close_notify): the request fails now, not after CoAP's 93 s.
            with pytest.raises(AssociationClosed):
                await asyncio.wait_for(pending, 5.0)
            assert time.monotonic() - started < 2.0

    run(main())


@pytest.mark.req("COAP-1")
def test_a_new_association_is_a_new_remote() -> None:
    async def main() -> None:
        async with coaps_server() as server, coaps_client() as client:
            first = await get(client, uri(server.address, "hello"))
            remote = first.remote
            assert isinstance(remote, ClientRemote)
            await remote.close()  # close_notify; the association is gone
            second = await get(client, uri(server.address, "hello"))
            assert second.remote is not remote and second.remote != remote
            assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 2

    run(main())


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


OTHER_ENTRY = {"psk": {"hex": "aa" * 16}, "client-identity": {"ascii": "other"}}


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("kind", ["psk", "rpk", "x509", "keylog"])
def test_a_map_read_again_with_the_same_credentials_keeps_the_association(
    kind: str, pki: Pki, tmp_path: Path
) -> None:
    """The client map is read at each request: loaded again with the same credentials (new
    entry objects and keys, as from its JSON file read again) it keeps the one association,
    in each mode and with a key log file (one per configuration). It made a new one per reload
    (20 reloads: 20 associations, sockets and server slots) (probe BM)."""
    files = make_rpk_files(tmp_path)
    server_map, client_map = SERVER_CREDENTIALS, CLIENT_CREDENTIALS
    settings: dict[str, Any] = {}
    if kind == "rpk":
        server_map, client_map = rpk_server_credentials(files), rpk_client_credentials(files)
    elif kind == "x509":
        server_map, client_map = x509_server_credentials(pki), x509_client_credentials(pki)
    elif kind == "keylog":
        settings["keylog_file"] = tmp_path / "keys.log"

    async def main() -> None:
        async with coaps_server(credentials=server_map) as server, \
                coaps_client(credentials=client_map, **settings) as client:
            first = (await get(client, uri(server.address, "hello"))).remote
            descriptors = _open_descriptors()
            for _ in range(20):
                client.client_credentials.load_from_dict(client_map)
                response = await get(client, uri(server.address, "hello"))
                assert response.remote is first
            [transport] = transports_of(client)
            assert repr(transport) == "<CoapsClientInterface associations=1>"
            assert _open_descriptors() == descriptors
            assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main())


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("by_label", [False, True], ids=["entry", "label"])
def test_changed_credentials_replace_the_association(by_label: bool) -> None:
    """The request's entry now gives other credentials (changed in place, or in the labelled
    entry a pattern refers to): the next request makes a new association with them, the old
    one is closed with close_notify, and a request pending on it fails with
    AssociationClosed at once. The old one stayed open (probe BM)."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}
    client_map: dict[str, Any] = (
        {"coaps://*": ":dev", ":dev": {"dtls": PSK_ENTRY}} if by_label
        else {"coaps://*": {"dtls": PSK_ENTRY}}
    )

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server, \
                coaps_client(credentials=client_map) as client:
            old = (await get(client, uri(server.address, "whoami"))).remote
            pending = client.request(aiocoap.Message(
                code=aiocoap.GET, uri=uri(server.address, "slow"))).response
            await asyncio.wait_for(site.slow.started.wait(), 5.0)
            changed = ":dev" if by_label else "coaps://*"
            client.client_credentials.load_from_dict({changed: {"dtls": OTHER_ENTRY}})
            response = await get(client, uri(server.address, "whoami"))
            assert response.payload == b"psk identity b'other'"
            assert response.remote is not old and old.ended
            with pytest.raises(AssociationClosed):
                await asyncio.wait_for(pending, 2.0)
            [transport] = transports_of(client)
            assert repr(transport) == "<CoapsClientInterface associations=1>"
            [(old_server_end, _), (new_server_end, _)] = site.whoami.seen
            for _ in range(100):  # our close_notify ends the server's end too
                if old_server_end.ended:
                    break
                await asyncio.sleep(0.01)
            assert old_server_end.ended and not new_server_end.ended
            site.slow.release.set()

    run(main())


@pytest.mark.req("COAP-1")
def test_credentials_changed_during_the_handshake_fail_its_request_as_closed() -> None:
    """A request waits for a handshake (nobody answers) when the credentials change: the
    next request's association replaces that one, and the waiting request fails with
    AssociationClosed at once (not with aiocoap's LibraryShutdown, as at a shutdown)."""

    async def main(port: int) -> None:
        async with coaps_client(handshake_timeout=1.0) as client:
            target = f"coaps://{LOCALHOST}:{port}/hello"
            waiting = client.request(aiocoap.Message(code=aiocoap.GET, uri=target)).response
            await asyncio.sleep(0.2)  # its handshake has started
            client.client_credentials.load_from_dict({"coaps://*": {"dtls": OTHER_ENTRY}})
            newer = client.request(aiocoap.Message(code=aiocoap.GET, uri=target)).response
            with pytest.raises(AssociationClosed) as info:
                await asyncio.wait_for(waiting, 0.5)
            assert info.value.peer == f"{LOCALHOST}:{port}"  # M15: None
            with pytest.raises(AssociationTimeout):
                await newer

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        run(main(silent.getsockname()[1]), limit=10.0)


@pytest.mark.req("COAP-1")
def test_an_association_whose_entry_was_removed_is_closed_by_the_next_new_one(
        caplog: pytest.LogCaptureFixture) -> None:
    """The entry that made an association leaves the map: the next association made to that
    server closes it (its credentials are no longer the map's), saying so in a debug line,
    and the new one stays pooled: one handshake each."""
    caplog.set_level(logging.DEBUG, "iotdtls.coap")
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server:
            whoami = f"coaps://{LOCALHOST}:{server.address[1]}/whoami"
            client_map = {whoami: {"dtls": OTHER_ENTRY},
                          f"coaps://{LOCALHOST}:{server.address[1]}/hello": {"dtls": PSK_ENTRY}}
            async with coaps_client(credentials=client_map) as client:
                old = (await get(client, whoami)).remote
                client.client_credentials.load_from_dict({whoami: None})  # removed
                hello = await get(client, uri(server.address, "hello"))
                assert hello.remote is not old and old.ended
                [transport] = transports_of(client)
                assert repr(transport) == "<CoapsClientInterface associations=1>"
                # M15: the pool lost the new one with the old, and the request made a third
                assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 2
                assert (await get(client, uri(server.address, "hello"))).remote is hello.remote
        assert ("%r: the credentials changed, closing the association", (old,)) in [
            (r.msg, r.args) for r in caplog.records]

    run(main())


@pytest.mark.req("COAP-1")
def test_entries_with_other_credentials_for_one_server_keep_an_association_each() -> None:
    """Two URI patterns of one server with credentials of their own: one association each,
    both kept while the map gives them (a new one closes only those whose credentials the map
    no longer gives)."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server:
            client_map = {
                f"coaps://{LOCALHOST}:{server.address[1]}/whoami": {"dtls": OTHER_ENTRY},
                "coaps://*": {"dtls": PSK_ENTRY},
            }
            async with coaps_client(credentials=client_map) as client:
                hello = (await get(client, uri(server.address, "hello"))).remote
                whoami = await get(client, uri(server.address, "whoami"))
                assert whoami.payload == b"psk identity b'other'"
                assert (await get(client, uri(server.address, "hello"))).remote is hello
                assert (await get(client, uri(server.address, "whoami"))).remote is whoami.remote
                assert not hello.ended and not whoami.remote.ended
                [transport] = transports_of(client)
                assert repr(transport) == "<CoapsClientInterface associations=2>"

    run(main())


@pytest.mark.req("COAP-1")
def test_a_response_never_crosses_to_a_newer_association() -> None:
    """RFC 7252 §9.1: a client restarts from the same address while a request is pending; the
    response of the old association is not sent over the new one, which works normally."""
    site = CoapSite()
    slow = site.slow

    async def main() -> None:
        async with coaps_server(site) as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                device.send(raw_request(1, b"old", "slow"))
                await asyncio.wait_for(slow.started.wait(), 5.0)
                await device.handshake(client_config())  # same port, new association
                slow.release.set()
                device.send(raw_request(2, b"new", "hello"))
                answers = []
                while (data := await device.recv(1.0)) is not None:
                    answers.append(aiocoap.Message.decode(data))
                assert [m.token for m in answers] == [b"new"]
                assert answers[0].payload.startswith(b"Hello, ")
            finally:
                device.close()

    run(main())


class Oversized(resource.Resource):
    """GET: a 2.05 whose Location-Path (180 bytes) fits no datagram of a 128-byte mtu."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, location_path=["x" * 60, "y" * 60, "z" * 60])


def test_a_response_too_large_for_the_mtu_is_answered_with_5_00(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 6347 §4.1.1: a response that cannot fit one datagram of the server's mtu becomes a
    bare 5.00 Internal Server Error, piggybacked on the ACK, with one warning line; the
    retransmitted request gets the same 5.00 and no second warning, and the next request on
    the association is answered at once. (aiocoap got the DatagramTooLarge: a traceback, a
    separate 5.00 never sent either, the request never ACKed, each retransmission replaying
    the oversized response, the next request failing after 88 s.)"""
    caplog.set_level(logging.WARNING)
    site = CoapSite()
    site.site.add_resource(["oversized"], Oversized())

    async def main() -> None:
        async with coaps_server(site, mtu=128) as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                answers = []
                for mid, token, path in ((1, b"big", "oversized"), (1, b"big", "oversized"),
                                         (2, b"next", "hello")):
                    device.send(raw_request(mid, token, path))
                    data = await device.recv(2.0)
                    assert data is not None, (mid, path)
                    answers.append(aiocoap.Message.decode(data))
            finally:
                device.close()
        for answer in answers[:2]:
            assert (answer.code, answer.mtype, answer.mid, answer.token) == (
                aiocoap.INTERNAL_SERVER_ERROR, aiocoap.ACK, 1, b"big")
            assert answer.opt.location_path == () and answer.payload == b""
        assert answers[2].code == aiocoap.CONTENT and answers[2].payload.startswith(b"Hello, ")

    run(main())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.exc_info) for r in warnings] == [("iotdtls.coap", None)]
    assert warnings[0].getMessage().endswith(
        "a 2.05 Content response was not sent: 193 bytes of application data do not fit one "
        "datagram: at most 99 bytes fit the MTU of 128 bytes; sending 5.00 Internal Server "
        "Error in its place"
    )


@pytest.mark.req("COAP-1")
def test_raw_public_keys_from_credentials_maps(tmp_path: Path) -> None:
    """RawPublicKey mode (RFC 7252 §9.1.3.2) beside PSK on one server: the client's key hash
    reaches the handler with the label of its entry; a key nobody listed is refused."""
    files = make_rpk_files(tmp_path)
    site = CoapSite()
    client_spki = PrivateKey.load(files.client_key).spki
    server_spki = PrivateKey.load(files.server_key).spki

    async def main() -> None:
        async with coaps_server(site, credentials=rpk_server_credentials(files)) as server:
            async with coaps_client(credentials=rpk_client_credentials(files)) as client:
                response = await get(client, uri(server.address, "whoami"))
                assert response.payload.decode() == str(RawPublicKeyIdentity(client_spki))
                assert response.remote.peer == RawPublicKeyIdentity(server_spki)
            async with coaps_client() as psk_client:  # PSK on the same server still works
                assert (await get(psk_client, uri(server.address, "hello"))).code.is_successful()
            stranger = rpk_client_credentials(files, key=files.stranger_key)
            async with coaps_client(credentials=stranger) as client:
                started = time.monotonic()
                with pytest.raises(AssociationFailed) as info:
                    await get(client, uri(server.address, "whoami"))
                assert time.monotonic() - started < 2.0
                assert info.value.mode is Mode.RAW_PUBLIC_KEY  # for the advice
        [(_, claims)] = site.whoami.seen
        assert claims == (RawPublicKeyIdentity(client_spki), ":dev2")

    run(main())


def test_a_raw_key_client_without_a_key_is_told_to_give_one(tmp_path: Path) -> None:
    """A raw-public-key client without a private key, to a server that requires client keys:
    unsupported_certificate (RFC 7250 §4.2), and the advice is about raw keys, naming
    "private-key" (it was certificate advice, "... does not trust their CA") (probe BM)."""
    files = make_rpk_files(tmp_path)
    keyless = {"coaps://*": {"dtls-rpk": {"peer-public-key": str(files.server_pub)}}}

    async def main() -> None:
        async with coaps_server(credentials=rpk_server_credentials(files)) as server, \
                coaps_client(credentials=keyless) as client:
            with pytest.raises(AssociationFailed) as info:
                await get(client, uri(server.address, "whoami"))
        assert "received fatal alert unsupported_certificate" in str(info.value)
        advice = info.value.extra_help()
        assert advice is not None and advice.startswith("Check our raw public key")
        assert '"private-key"' in advice and "certificate" not in advice

    run(main())


@pytest.mark.req("COAP-1")
def test_client_entries_added_to_a_server_map_later_are_enforced(tmp_path: Path) -> None:
    """The server's map is read at each handshake: a raw-key server made with no client key
    listed (so asking none) requires a listed key once one is added, and identifies its
    client; PSK entries added to a server made without any are looked up. Both rules were
    fixed when the context was made: every client got in unidentified, and PSK never."""
    files = make_rpk_files(tmp_path)
    site = CoapSite()
    client_spki = PrivateKey.load(files.client_key).spki
    stranger_sha256 = PrivateKey.load(files.stranger_key).spki_sha256.hex()
    served = CredentialsMap()
    served.load_from_dict({":server": {"dtls-rpk": {"private-key": str(files.server_key)}}})
    keyless = {"coaps://*": {"dtls-rpk": {"peer-public-key": str(files.server_pub)}}}

    async def refused(credentials: Any, target: str) -> str:
        async with coaps_client(credentials=credentials) as client:
            with pytest.raises(AssociationFailed) as info:
                await get(client, target)
        return str(info.value)

    async def main() -> None:
        async with coaps_server(site, credentials=served) as server:
            target = uri(server.address, "whoami")
            async with coaps_client(credentials=keyless) as client:  # no key asked yet
                assert (await get(client, target)).payload == b"unauthenticated client"
            served.load_from_dict({":A": {"dtls-rpk": {"peer-public-key": str(files.client_pub)}}})
            async with coaps_client(credentials=rpk_client_credentials(files)) as client:
                response = await get(client, target)
                assert response.payload.decode() == str(RawPublicKeyIdentity(client_spki))
            stranger = rpk_client_credentials(files, key=files.stranger_key)
            assert (await refused(stranger, target)).endswith(
                "received fatal alert handshake_failure (the server did not accept our raw "
                f"public key, SHA-256 {stranger_sha256}: is it provisioned there?)")
            assert (await refused(keyless, target)).endswith(
                "received fatal alert unsupported_certificate (the server refused our hello's "
                "certificate types: it may require a client raw public key, and none is "
                "configured here, no raw_public_key)")
            async with coaps_client() as psk_client:  # no "dtls" entry: no PSK suite chosen
                with pytest.raises(AssociationFailed, match=r"handshake_failure$"):
                    await get(psk_client, uri(server.address, "hello"))
            served.load_from_dict({":client": {"dtls": PSK_ENTRY}})
            async with coaps_client() as psk_client:
                assert (await get(psk_client, target)).payload.decode() == str(
                    PskIdentity(CLIENT_IDENTITY.encode()))
        assert [claims for _, claims in site.whoami.seen] == [
            (), (RawPublicKeyIdentity(client_spki), ":A"),
            (PskIdentity(CLIENT_IDENTITY.encode()), ":client")]

    run(main())


@pytest.mark.req("COAP-1")
def test_a_server_that_lost_the_association_without_close_notify_gets_a_new_one() -> None:
    """The server crashes (no close_notify) and a new one serves the same port, knowing nothing
    of the old association: once a confirmable request has used up its retransmissions with
    nothing heard from the server, the next request makes a new association and completes."""
    quick = aiocoap.TransportTuning()
    quick.ACK_TIMEOUT, quick.MAX_RETRANSMIT = 0.2, 1

    async def main() -> None:
        async with coaps_client() as client:
            async with coaps_server() as crashed:
                address = crashed.address
                first = await get(client, uri(address, "hello"))
                crashed.endpoint_server._transport.abort()  # gone, no close_notify sent
            async with coaps_server(bind=address) as restarted:
                with pytest.raises(error.ConRetransmitsExceeded):
                    await get(client, uri(address, "hello"), transport_tuning=quick)
                # two requests at once: the first closes the old association, the second
                # makes a new one meanwhile, which the first then shares (M15)
                second, third = await asyncio.gather(
                    get(client, uri(address, "hello"), transport_tuning=quick),
                    get(client, uri(address, "hello/2"), transport_tuning=quick))
                assert second.payload.startswith(b"Hello, ")
                assert second.remote is not first.remote and first.remote.ended
                assert third.remote is second.remote
                assert restarted.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main(), 15.0)


def test_keep_alive_ends_an_association_the_restarted_server_lost() -> None:
    """With heartbeats negotiated and a keep-alive (RFC 6520 §5.2), an association the server
    lost without close_notify ends once a heartbeat request goes unanswered: a request pending
    on it fails with AssociationClosed within keepalive_interval + handshake_timeout, not
    after CoAP's retransmissions (about 60 s), and the next request makes a new association."""

    async def main() -> None:
        async with coaps_client(heartbeat=True, keepalive_interval=1.0,
                                handshake_timeout=1.0) as client:
            async with coaps_server(heartbeat=True) as crashed:
                address = crashed.address
                await get(client, uri(address, "hello"))
                crashed.endpoint_server._transport.abort()  # gone, no close_notify sent
            async with coaps_server(bind=address, heartbeat=True):
                started = time.monotonic()
                with pytest.raises(AssociationClosed):
                    await get(client, uri(address, "hello"))
                assert time.monotonic() - started < 6.0
                second = await get(client, uri(address, "hello"))
                assert second.payload.startswith(b"Hello, ")

    run(main(), 20.0)


@pytest.mark.req("COAP-1")
def test_an_exception_of_aiocoaps_message_layer_leaves_the_association_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """aiocoap may raise while it takes a received message (InvalidStateError: a block of the
    response to a request that timed out, set on its cancelled future). The receive loop logs
    it and goes on: the association every request shares stays up (it ended, and the next
    request made a new handshake, with "Task exception was never retrieved")."""
    caplog.set_level(logging.DEBUG, "iotdtls.coap")
    quick = aiocoap.TransportTuning()
    quick.ACK_TIMEOUT = 0.2
    dispatch = MessageManager.dispatch_message
    raised: list[aiocoap.Message] = []

    def fail_once(self: MessageManager, message: aiocoap.Message) -> None:
        if message.code.is_response() and not raised:
            raised.append(message)
            raise asyncio.InvalidStateError("invalid state")
        dispatch(self, message)

    async def main() -> None:
        async with coaps_server() as server, coaps_client() as client:
            first = await get(client, uri(server.address, "hello"))
            monkeypatch.setattr(MessageManager, "dispatch_message", fail_once)
            # The response is lost to the exception; the retransmitted request's comes.
            second = await get(client, uri(server.address, "hello"), transport_tuning=quick)
            assert raised and second.payload.startswith(b"Hello, ")
            assert second.remote is first.remote and not first.remote.ended
            assert server.endpoint_server.endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1

    run(main())
    assert "aiocoap failed on a received message (InvalidStateError: invalid state)" in (
        caplog.text
    )


#: Option bytes of a Uri-Path (11) and of a Location-Path (8) that are the byte 0xff: not
#: UTF-8, which a text option is (RFC 7252 §3.2, §5.10.1, §5.10.7).
URI_PATH_NOT_UTF8 = bytes([0xB1, 0xFF])
LOCATION_PATH_NOT_UTF8 = bytes([0x81, 0xFF])


@pytest.mark.req("COAP-1")
def test_a_request_with_a_text_option_not_utf8_is_ignored_and_the_association_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A confirmable request whose Uri-Path is not UTF-8 is rejected with a matching Reset
    (RFC 7252 §4.2) over its association, with a warning, and the next request on the
    association is answered (aiocoap's decoding raised UnicodeDecodeError: the handler failed
    with a traceback and the association ended unanswered, probe AS; then it was dropped
    silently and the client retransmitted it until it gave up, probe AU)."""
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with coaps_server() as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                device.send(bytes([0x41, 0x01, 0x00, 0x01]) + b"b" + URI_PATH_NOT_UTF8)
                device.send(raw_request(2, b"good", "hello"))
                replies = [await device.recv(2.0), await device.recv(2.0)]
                assert replies[0] is not None and replies[1] is not None
                reset, answer = (aiocoap.Message.decode(data) for data in replies)
                assert (reset.mtype, reset.code, reset.mid, reset.token) == (
                    aiocoap.RST, aiocoap.EMPTY, 1, b"")
                assert (answer.mid, answer.token) == (2, b"good")
                assert answer.payload.startswith(b"Hello, ")
                assert await device.recv(0.3) is None  # one Reset only
            finally:
                device.close()

    run(main())
    assert [r.getMessage().partition(": ")[2] for r in caplog.records] == [
        "ignoring a datagram that is not a CoAP message (any more are logged at debug level)"]


@pytest.mark.req("COAP-1")
def test_a_response_with_a_text_option_not_utf8_is_ignored_and_the_association_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server sends a NON 2.05 whose Location-Path is not UTF-8, then the response: the
    first is ignored, the response comes (the association ended at the first: "was closed",
    "Task exception was never retrieved ... UnicodeDecodeError"; probe AS)."""
    caplog.set_level(logging.WARNING)

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        stray = bytes([0x54, 0x45, 0x12, 0x34]) + b"zzzz" + LOCATION_PATH_NOT_UTF8 + b"\xffzz"
        return [stray, reply(request, aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok"))]

    async def main() -> None:
        async with coaps_client() as client:
            target = uri((LOCALHOST, server.port), "hello")
            first = await get(client, target)
            second = await get(client, target)
            assert (first.payload, second.payload) == (b"ok", b"ok")
            assert second.remote is first.remote and not first.remote.ended
            assert first.remote.not_coap == 2

    with AnsweringServer(answer) as server:
        run(main())
    assert [r.getMessage().partition(": ")[2] for r in caplog.records] == [
        "ignoring a datagram that is not a CoAP message (any more are logged at debug level)"]


@pytest.mark.req("COAP-1")
def test_a_confirmable_message_not_utf8_from_a_server_is_rejected_with_a_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server sends a CON 2.05 whose Location-Path is not UTF-8 (MID 0x1234), then the
    response: the client rejects the first with a matching Reset over the association (RFC
    7252 §4.2; it was dropped silently, probe AU), and takes the response."""
    caplog.set_level(logging.WARNING)
    received: list[bytes] = []

    def answer(data: bytes) -> list[bytes]:
        received.append(data)
        request = aiocoap.Message.decode(data)
        if request.mtype == aiocoap.RST:
            return []
        stray = bytes([0x44, 0x45, 0x12, 0x34]) + b"zzzz" + LOCATION_PATH_NOT_UTF8 + b"\xffzz"
        return [stray, reply(request, aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok"))]

    async def main() -> None:
        async with coaps_client() as client:
            response = await get(client, uri((LOCALHOST, server.port), "hello"))
            assert response.payload == b"ok"
            for _ in range(50):
                if len(received) == 2:
                    break
                await asyncio.sleep(0.02)

    with AnsweringServer(answer) as server:
        run(main())
    assert received[1:] == [bytes([0x70, 0x00, 0x12, 0x34])]  # RST 0.00, MID 0x1234
    assert [r.getMessage().partition(": ")[2] for r in caplog.records] == [
        "ignoring a datagram that is not a CoAP message (any more are logged at debug level)"]


def test_a_request_and_close_notify_together_leave_no_unawaited_rendering() -> None:
    """A client sends its last request and close_notify in one datagram (libcoap does): the
    server reads both at one wake-up; the request is served or dropped, and no rendering
    coroutine of aiocoap is left never awaited."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                assert device.connection is not None
                device.connection.send(raw_request(1, b"last", "whoami"))
                device.connection.close()
                device._flush()  # both records in one datagram
                await asyncio.sleep(0.3)
            finally:
                device.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main())
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
    assert len(site.whoami.seen) == 1  # served; its response dropped with the association


def test_credentials_compared_for_sharing_hold_the_psk_by_its_digest_only() -> None:
    """Associations are shared by `credentials_of` their configs: two PSKs tell apart, equal
    ones share, and the tuple compared (and kept on each association) never holds the key
    itself, so no secret is compared with `==` or kept twice."""
    key, other = bytes(range(16)), bytes(range(1, 17))

    def config(psk: bytes) -> ClientConfig:
        return ClientConfig(psk_identity=b"dev1", psk=psk)

    assert credentials_of(config(key)) == credentials_of(config(bytes(key)))
    assert credentials_of(config(key)) != credentials_of(config(other))
    assert key not in credentials_of(config(key))
    assert key.hex() not in repr(credentials_of(config(key)))


def test_credentials_compared_for_sharing_tell_keys_chains_and_key_logs_apart(
        pki: Pki, tmp_path: Path) -> None:
    """`credentials_of` compares a raw public key by its public half, a certificate by its
    chain and key, and a key log (`file_keylog`) by its file: the same ones loaded again
    share an association, other ones do not (M15: each held as None shared every key, chain
    or key-log file)."""
    files = make_rpk_files(tmp_path)
    pin = public_key_pin(files.server_pub.read_bytes())

    def rpk(key: Path) -> ClientConfig:
        return ClientConfig(raw_public_key=PrivateKey.load(key), server_public_keys=[pin])

    def x509(crt: Path, key: Path) -> ClientConfig:
        return ClientConfig(trust_anchors=load_certificate_file(pki.ca_crt),
                            certificate=CertifiedKey.load(crt, key))

    def keylog(name: str) -> ClientConfig:  # a key log of its file given as the callback
        return ClientConfig(psk_identity=b"dev1", psk=bytes(16),
                            keylog=file_keylog(tmp_path / name))

    pairs = [
        (lambda: rpk(files.client_key), lambda: rpk(files.stranger_key)),
        (lambda: x509(pki.client_crt, pki.client_key),
         lambda: x509(pki.server_crt, pki.server_key)),
        (lambda: keylog("a.log"), lambda: keylog("b.log")),
    ]
    for make, make_other in pairs:
        assert credentials_of(make()) == credentials_of(make())
        assert credentials_of(make()) != credentials_of(make_other())


def _before_block(client: Any, number: int, action: Any) -> list[aiocoap.Message]:
    """Make `client` run `action()` (once) just before aiocoap routes block `number` of a
    block-wise transfer (RFC 7959: Block2 of a GET, Block1 of a PUT): between two blocks,
    where aiocoap binds the next block to the remote of the response before. Returns the
    block requests routed (`find_remote_and_interface`, which aiocoap calls for each)."""
    routed: list[aiocoap.Message] = []
    original = client.find_remote_and_interface
    done = False

    async def hooked(message: aiocoap.Message) -> Any:
        nonlocal done
        block = message.opt.block1 if message.opt.block1 is not None else message.opt.block2
        if block is not None:
            if not done and block.block_number == number:
                done = True
                await action()
            routed.append(message)
        return await original(message)

    client.find_remote_and_interface = hooked
    return routed


async def end_association(
    end: str, client: Any, old: ClientRemote, server: Any, *,
    running: contextlib.AsyncExitStack, restarted: contextlib.AsyncExitStack,
    site: CoapSite, server_map: dict[str, Any],
) -> None:
    """End `old`, `client`'s association with `server` (its transport, in `running`), one of
    three ways: "replaced" (the client's map changed to other credentials, whose new
    association closes it), "closed by the server" (close_notify, then a server of `site` on
    the same port in `restarted`) or "unresponsive" (the server gone without close_notify, a
    new one in its place, and a confirmable request unanswered over the old association)."""
    address = server.address
    if end == "replaced":
        client.client_credentials.load_from_dict({"coaps://*": {"dtls": OTHER_ENTRY}})
        other = await get(client, uri(address, "whoami"))
        assert other.payload == b"psk identity b'other'" and old.ended
        return
    if end == "closed by the server":
        await running.aclose()  # close_notify; then a server on the same port
    else:
        server.endpoint_server._transport.abort()  # gone, no close_notify
    await restarted.enter_async_context(coaps_server(site, credentials=server_map, bind=address))
    if end == "unresponsive":
        quick = aiocoap.TransportTuning()
        quick.ACK_TIMEOUT, quick.MAX_RETRANSMIT = 0.2, 1
        with pytest.raises(error.ConRetransmitsExceeded):
            await get(client, uri(address, "hello"), transport_tuning=quick)
        assert old.unresponsive
        return
    for _ in range(100):
        if old.ended:
            break
        await asyncio.sleep(0.01)


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("end", ["replaced", "closed by the server", "unresponsive"])
def test_a_blockwise_transfer_never_goes_on_over_another_association(
    end: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7959 §2.4 / RFC 7252 §9.1: the blocks of one transfer go over one association. When
    it ends between two blocks (replaced by a change of credentials, closed by the server,
    found unresponsive and closed), the transfer fails with AssociationClosed; its next
    block is not sent over a new association (with other credentials: the server answered
    4.08 or served the rest under the new identity; probe BN #1). A new request after that
    makes a new association, as documented."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with contextlib.AsyncExitStack() as first, contextlib.AsyncExitStack() as second, \
                coaps_client() as client:
            server = await first.enter_async_context(coaps_server(site, credentials=server_map))
            address = server.address
            target = uri(address, "large")
            old = (await get(client, uri(address, "hello"))).remote
            assert isinstance(old, ClientRemote)
            caplog.set_level(logging.INFO, "iotdtls.coap")

            async def end_it() -> None:
                await end_association(end, client, old, server, running=first, restarted=second,
                                       site=site, server_map=server_map)

            routed = _before_block(client, 1, end_it)
            request = aiocoap.Message(code=getattr(aiocoap, method), uri=target)
            if method == "PUT":
                request.payload = LARGE
            with pytest.raises(AssociationClosed):
                await asyncio.wait_for(client.request(request).response, 5.0)
            assert old.ended
            assert routed and all(m.remote is old for m in routed)  # none went elsewhere
            if end == "unresponsive":  # closed by the block's routing, which says so
                assert ("%r: no answer to a confirmable message, closing the association",
                        (old,)) in [(r.msg, r.args) for r in caplog.records]
            response = await client.request(aiocoap.Message(
                code=getattr(aiocoap, method), uri=target, payload=LARGE if method == "PUT"
                else b"")).response
            assert response.code.is_successful() and response.remote is not old
            if method == "GET":
                assert response.payload == LARGE

    run(main())


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("how", ["sent again", "copied", "bound to the response's remote",
                                 "sent again, asking for small blocks"])
@pytest.mark.parametrize("end", ["replaced", "closed by the server", "unresponsive"])
def test_a_request_bound_to_an_ended_association_makes_a_new_one(end: str, how: str) -> None:
    """aiocoap binds the request Message it sends to its remote (`message.remote`), so a
    polling loop that sends one Message again, a copy of it, or a request given
    `remote = response.remote` comes bound to the association of the last exchange. Once that
    has ended (replaced by a change of credentials, closed by the server, found unresponsive),
    such a request is no next block of a transfer (RFC 7959 §2.4): the map chooses, and it
    makes a new association, as the README says of the next request; a first request for
    Block2 number 0 with a smaller size (RFC 7959 §2.4) is one too. Each failed with
    AssociationClosed for good (probe BO #1)."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with contextlib.AsyncExitStack() as first, contextlib.AsyncExitStack() as second, \
                coaps_client() as client:
            server = await first.enter_async_context(coaps_server(site, credentials=server_map))
            address = server.address
            small = how.endswith("small blocks")
            message = aiocoap.Message(code=aiocoap.GET, uri=uri(
                address, "large" if small else "whoami"), block2=(0, False, 2) if small else None)
            old = (await asyncio.wait_for(client.request(message).response, 5.0)).remote
            assert isinstance(old, ClientRemote) and message.remote is old  # bound by aiocoap
            await end_association(end, client, old, server, running=first, restarted=second,
                                  site=site, server_map=server_map)
            identity = b"psk identity b'" + (b"other" if end == "replaced" else
                                             b"Client_identity") + b"'"
            assert old.ended or old.unresponsive
            if how == "copied":
                again = message.copy()
            elif how == "bound to the response's remote":
                again = aiocoap.Message(code=aiocoap.GET, uri_path=["whoami"])
                again.remote = old
            else:
                again = message
            newer = []
            for _ in range(2):
                answer = await asyncio.wait_for(client.request(again).response, 5.0)
                assert answer.code == aiocoap.CONTENT
                assert answer.payload == (LARGE if small else identity)
                assert answer.remote is not old and not answer.remote.ended
                newer.append(answer.remote)
            assert newer[0] is newer[1] and old.ended  # one new association, the old one gone

    run(main())


@pytest.mark.req("COAP-1")
def test_a_changed_entry_keeps_an_association_another_request_still_gets() -> None:
    """Two patterns give one server the same credentials: `/a/*` makes the association, a
    request to `/slow` (matched by `coaps://*`) then shares it. `/a/*` changes: its next
    request makes a new association, and the shared one stays, since the map still gives its
    credentials to `/slow`; the request pending on it completes. It was closed, as only the
    request that made it was asked (probe BN #2, an observation ended with AssociationClosed)."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server:
            base = f"coaps://{LOCALHOST}:{server.address[1]}"
            client_map = {f"{base}/a/*": {"dtls": PSK_ENTRY}, "coaps://*": {"dtls": PSK_ENTRY}}
            async with coaps_client(credentials=client_map) as client:
                shared = (await get(client, f"{base}/a/x")).remote
                pending = client.request(aiocoap.Message(
                    code=aiocoap.GET, uri=f"{base}/slow")).response
                await asyncio.wait_for(site.slow.started.wait(), 5.0)
                client.client_credentials.load_from_dict({f"{base}/a/*": {"dtls": OTHER_ENTRY}})
                other = await get(client, f"{base}/a/whoami")
                assert other.remote is not shared and not shared.ended
                site.slow.release.set()
                assert (await asyncio.wait_for(pending, 2.0)).payload == b"late"
                assert (await get(client, f"{base}/hello")).remote is shared
                [transport] = transports_of(client)
                assert repr(transport) == "<CoapsClientInterface associations=2>"

    run(main())


@pytest.mark.req("COAP-1")
def test_a_request_whose_entry_is_gone_does_not_end_the_search_for_one_still_given() -> None:
    """An association chosen by `/a/x` then `/b/x` (one credentials): the `/a/*` entry
    removed (asking the map for `/a/x` fails), it still serves `/b/x`, so a new association
    made for other credentials does not close it (M15: the first request the map had no entry
    for ended the search). The requests it notes are kept without their payloads."""
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(credentials=server_map) as server:
            base = f"coaps://{LOCALHOST}:{server.address[1]}"
            client_map = {f"{base}/a/*": {"dtls": PSK_ENTRY}, f"{base}/b/*": {"dtls": PSK_ENTRY}}
            async with coaps_client(credentials=client_map) as client:
                shared = (await get(client, f"{base}/a/x")).remote
                put = aiocoap.Message(code=aiocoap.PUT, uri=f"{base}/b/x", payload=b"reading")
                assert (await client.request(put).response).remote is shared
                assert list(shared.chosen_for) == [f"{base}/a/x", f"{base}/b/x"]
                assert all(noted.payload == b"" for noted in shared.chosen_for.values())
                del client.client_credentials[f"{base}/a/*"]
                client.client_credentials.load_from_dict({f"{base}/c/*": {"dtls": OTHER_ENTRY}})
                other = await get(client, f"{base}/c/whoami")
                assert other.remote is not shared and not shared.ended
                assert (await get(client, f"{base}/b/y")).remote is shared

    run(main())


@pytest.mark.req("COAP-1")
def test_a_block_sent_while_its_association_closes_fails_as_closed() -> None:
    """The next block of a transfer routed while its association is being closed (replaced
    by a change of credentials, its close_notify under way) fails with AssociationClosed,
    as the rest of the transfer would (M15: `_failure` read before the association's task
    had set it)."""
    site = CoapSite()
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server, \
                coaps_client() as client:
            address = server.address
            old = (await get(client, uri(address, "hello"))).remote
            replacing: list[asyncio.Future[aiocoap.Message]] = []

            async def replace() -> None:
                client.client_credentials.load_from_dict({"coaps://*": {"dtls": OTHER_ENTRY}})
                replacing.append(asyncio.ensure_future(get(client, uri(address, "whoami"))))
                for _ in range(10_000):
                    if old.ended:
                        return  # closing: the block goes now
                    await asyncio.sleep(0)

            routed = _before_block(client, 1, replace)
            with pytest.raises(AssociationClosed):
                await asyncio.wait_for(client.request(aiocoap.Message(
                    code=aiocoap.GET, uri=uri(address, "large"))).response, 5.0)
            assert routed and all(m.remote is old for m in routed)
            other = await asyncio.wait_for(replacing[0], 5.0)
            assert other.payload == b"psk identity b'other'"

    run(main())


@pytest.mark.req("COAP-1")
def test_a_block_after_its_association_failed_gets_the_error_it_ended_with() -> None:
    """The next block of a transfer whose association ended with an error (a heartbeat
    unanswered, RFC 6520 §5.2: the server lost it) fails with AssociationClosed naming the
    server and caused by that error, as the requests pending on it were (M15: the cause
    dropped, or the server named None)."""

    async def main() -> None:
        async with coaps_client(heartbeat=True, keepalive_interval=1.0,
                                handshake_timeout=1.0) as client, \
                coaps_server(heartbeat=True) as lost:
            address = lost.address
            old = (await get(client, uri(address, "hello"))).remote

            async def lose() -> None:
                lost.endpoint_server._transport.abort()  # gone, no close_notify
                for _ in range(500):
                    if old.ended:
                        return
                    await asyncio.sleep(0.01)

            _before_block(client, 1, lose)
            with pytest.raises(AssociationClosed) as info:
                await asyncio.wait_for(client.request(aiocoap.Message(
                    code=aiocoap.GET, uri=uri(address, "large"))).response, 10.0)
        assert old.ended and info.value.peer == old.peer_name
        assert isinstance(info.value.__cause__, DtlsError)
        assert str(info.value) == (
            f"coaps: the DTLS association with {old.peer_name} ended: {info.value.__cause__}")

    run(main(), 20.0)


@pytest.mark.req("COAP-1")
def test_a_block_bound_to_another_contexts_association_leaves_it_alone() -> None:
    """A request for a next block bound to an association of another client context (live,
    or found unresponsive there) is routed by this context's map, over an association of its
    own; the other context's association is neither closed nor failed here (M15: it was
    closed, and the block failed with AssociationClosed)."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, coaps_client() as first, \
                coaps_client() as second:
            theirs = (await get(first, uri(server.address, "hello"))).remote
            for unresponsive in (False, True):
                theirs.unresponsive = unresponsive
                block = aiocoap.Message(code=aiocoap.GET, uri=uri(server.address, "large"),
                                        block2=(1, False, 6))
                block.remote = theirs
                response = await asyncio.wait_for(
                    second.request(block, handle_blockwise=False).response, 5.0)
                assert response.remote is not theirs and not theirs.ended  # answered

    run(main())


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("distinct", [REQUESTS_KEPT, REQUESTS_KEPT + 1])
def test_an_association_used_for_more_requests_than_it_notes_is_kept_open(distinct: int) -> None:
    """An association notes the distinct requests (URIs without their query) that chose it, up
    to REQUESTS_KEPT: with that many, a change that gives none of them its credentials closes
    it (at the next new association to that server); with more, it cannot tell whether one it
    did not note still gets them, and stays open."""
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(credentials=server_map) as server, coaps_client() as client:
            first = (await get(client, uri(server.address, "hello/0"))).remote
            for n in range(1, distinct):
                assert (await get(client, uri(server.address, f"hello/{n}"))).remote is first
            # a request after the bound notes nothing more: it cannot make the rest told (M15)
            assert (await get(client, uri(server.address, "hello/0"))).remote is first
            client.client_credentials.load_from_dict({"coaps://*": {"dtls": OTHER_ENTRY}})
            assert (await get(client, uri(server.address, "hello"))).remote is not first
            assert first.ended is (distinct <= REQUESTS_KEPT)

    run(main())


@pytest.mark.req("COAP-1")
def test_polling_with_changing_queries_stays_within_the_requests_an_association_notes() -> None:
    """A client polls one path with a new query each time (`/hello?n=0`, `?n=1`, ...) while an
    observation runs on the same association: the association notes the path once (a request
    per URI without its query), so after more polls than REQUESTS_KEPT a change of
    credentials still closes it, and the observation ends with AssociationClosed instead of
    going on under the old identity. Each query counted: after 16 polls the association was
    kept open, the observation running over it (probe BO, many.py)."""
    site = CoapSite(counter_interval=0.2)
    server_map = {":client": {"dtls": PSK_ENTRY}, ":other": {"dtls": OTHER_ENTRY}}

    async def main() -> None:
        async with coaps_server(site, credentials=server_map) as server, \
                coaps_client() as client:
            observed = client.request(aiocoap.Message(
                code=aiocoap.GET, uri=uri(server.address, "counter"), observe=0))
            first = (await observed.response).remote
            assert observed.observation is not None
            for n in range(2 * REQUESTS_KEPT):
                polled = await get(client, uri(server.address, f"hello?n={n}"))
                assert polled.remote is first
            assert not first.chosen_for_more and len(first.chosen_for) == 2
            client.client_credentials.load_from_dict({"coaps://*": {"dtls": OTHER_ENTRY}})
            other = await get(client, uri(server.address, "whoami"))
            assert other.payload == b"psk identity b'other'" and other.remote is not first
            assert first.ended
            with pytest.raises(AssociationClosed):
                async for _note in observed.observation:
                    pass

    run(main())
