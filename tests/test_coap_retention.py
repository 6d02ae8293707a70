"""What an ended coaps association leaves behind: aiocoap's duplicate detection (RFC 7252 §4.5)
keeps each received request's (remote, message ID) for EXCHANGE_LIFETIME (§4.8.2, 247 s), with
the response sent to it; once the association has ended, the remote is released of its session
or connection and the stored responses are dropped at once, not 247 s later (probe AT)."""

from __future__ import annotations

import asyncio
import gc
import types
import weakref
from typing import Any

import aiocoap
import pytest
from aiocoap import resource
from aiocoap.messagemanager import MessageManager

from iotdtls import aio
from iotdtls.coap import ClientRemote
from iotdtls.coap.addresses import CoapsAddress, CoapsInterface
from iotdtls.coap.server import CoapsServerInterface, ServerRemote
from iotdtls.connection import DtlsConnection
from tests.aio_support import eventually
from tests.coap_support import CoapSite, coaps_client, coaps_server, get, raw_request, run, uri
from tests.interop_support import SameAddressClient, client_config

#: What an ended remote must not hold on to.
HEAVY = (aio.ServerSession, aio.ClientConnection, aio.DtlsServer, DtlsConnection,
         CoapsInterface, aiocoap.Message, asyncio.BaseTransport)
#: Not followed when looking for what a remote holds (shared, not the remote's).
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           asyncio.AbstractEventLoop)


def heavy_parts(remote: CoapsAddress) -> list[object]:
    """The objects of `HEAVY` types reachable from `remote` (without going through classes,
    modules, functions and the event loop)."""
    seen: set[int] = {id(remote)}
    found: list[object] = []
    todo: list[object] = [remote]
    while todo:
        for obj in gc.get_referents(todo.pop()):
            if id(obj) in seen or isinstance(obj, _SHARED):
                continue
            seen.add(id(obj))
            if isinstance(obj, HEAVY):
                found.append(obj)
            else:
                todo.append(obj)
    return found


class Recorder(resource.Resource):
    """GET: answers, keeping the remote and weak references to the request and the response."""

    def __init__(self) -> None:
        super().__init__()
        self.remotes: list[CoapsAddress] = []
        self.messages: list[weakref.ref[aiocoap.Message]] = []

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        response = aiocoap.Message(payload=b"recorded")
        self.remotes.append(request.remote)
        self.messages += [weakref.ref(request), weakref.ref(response)]
        return response


def test_an_ended_server_association_leaves_no_session_and_no_stored_response() -> None:
    """Clients each make an association, send confirmable GETs and close it: once it has
    ended, its remote (which aiocoap's duplicate detection still keys on, until
    EXCHANGE_LIFETIME) holds no session, transport or message any more, and the responses
    stored for duplicates are gone, requests too."""
    site = CoapSite()
    recorder = Recorder()
    site.site.add_resource(["recorded"], recorder)

    async def main() -> None:
        async with coaps_server(site) as server:
            for _ in range(3):
                async with coaps_client() as client:
                    for _ in range(2):
                        response = await get(client, uri(server.address, "recorded"))
                        assert response.code.is_successful()
                    del response
            assert await eventually(lambda: all(r.ended for r in recorder.remotes), 5.0)
            await asyncio.sleep(0.05)  # the handlers return
            gc.collect()
            assert len(recorder.remotes) == 6 and len(set(recorder.remotes)) == 3
            for remote in recorder.remotes:
                assert isinstance(remote, ServerRemote)
                assert heavy_parts(remote) == [], remote
                assert remote.request_mids == {}
                assert remote.local_address == server.address
                assert "ended" in repr(remote)
            assert [ref() for ref in recorder.messages] == [None] * 12
            # aiocoap still knows the message IDs (a duplicate is still recognised)
            recent = recent_messages(server)
            assert sum(1 for remote, _ in recent if remote in recorder.remotes) == 6

    run(main())


def remote_mid(recent: dict[tuple[Any, int], Any], remote: CoapsAddress) -> int:
    """The one message ID aiocoap keeps of `remote`."""
    [mid] = [mid for key_remote, mid in recent if key_remote is remote]
    return mid


def recent_messages(server: CoapsServerInterface) -> dict[tuple[Any, int], Any]:
    mman = server._mman
    assert isinstance(mman, MessageManager)
    recent = mman._recent_messages
    assert isinstance(recent, dict)
    assert server._duplicates is recent
    return recent


def test_a_server_context_shut_down_keeps_no_stored_response() -> None:
    """The server stops while a client's association is up: the association ends at the
    shutdown, after which the stored responses are dropped all the same."""
    site = CoapSite()
    recorder = Recorder()
    site.site.add_resource(["recorded"], recorder)

    async def main() -> None:
        async with coaps_client() as client:
            async with coaps_server(site) as server:
                response = await get(client, uri(server.address, "recorded"))
                recent = recent_messages(server)
            [remote] = recorder.remotes
            assert remote.ended and (remote, response.mid) in recent
            del response
            gc.collect()
            assert [ref() for ref in recorder.messages] == [None, None]
            assert recent[remote, remote_mid(recent, remote)] is None
            assert remote.request_mids == {}
            assert heavy_parts(remote) == []

    run(main())


def test_aiocoaps_duplicate_store_is_where_it_was() -> None:
    """iotdtls reaches into aiocoap's (0.4.17) `MessageManager._recent_messages`, a dict keyed
    by (remote, message ID) holding None or the response (see `CoapsInterface`): a version
    that changes it must fail here, not silently keep responses for EXCHANGE_LIFETIME."""

    async def main() -> None:
        async with coaps_server() as server:
            async with coaps_client() as client:
                response = await get(client, uri(server.address, "hello"))
            recent = recent_messages(server)
            [(remote, mid)] = [key for key in recent if isinstance(key[0], ServerRemote)]
            assert isinstance(mid, int)
            stored = recent[remote, mid]
            assert stored is None or stored.mid == mid
            assert response.mid == mid  # a piggy-backed response (RFC 7252 §5.2.1)

    run(main())


def test_an_ended_client_association_leaves_no_connection_in_its_remote() -> None:
    """A long-lived client context makes one association after another (each server stops,
    with close_notify): the remote of an ended one, still reachable from a response the
    application keeps, holds no connection, socket or transport any more."""

    async def main() -> None:
        kept: list[aiocoap.Message] = []
        async with coaps_client() as client:
            for _ in range(2):
                async with coaps_server() as server:
                    kept.append(await get(client, uri(server.address, "hello")))
                    address = server.address
            assert await eventually(lambda: all(m.remote.ended for m in kept), 5.0)
            await asyncio.sleep(0.05)
            gc.collect()
            for response in kept:
                remote = response.remote
                assert isinstance(remote, ClientRemote)
                assert heavy_parts(remote) == [], remote
                assert remote.local_address[0] == address[0]
                assert remote.local_address[1] != 0

    run(main())


def test_an_empty_ack_sent_after_the_end_is_not_kept_either() -> None:
    """A request still being rendered when its association ends: aiocoap stops the rendering,
    but its empty ACK (RFC 7252 §5.2.2, after EMPTY_ACK_DELAY) still goes out, through the
    duplicate store, to the ended remote: it is dropped from the store too."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                device.send(raw_request(7, b"slow", "slow"))
                await asyncio.wait_for(site.slow.started.wait(), 5.0)
                assert device.connection is not None
                device.connection.close()
                device._flush()
                recent = recent_messages(server)
                [remote] = [key[0] for key in recent if key[1] == 7]
                assert await eventually(lambda: remote.ended, 5.0)
                await asyncio.sleep(0.3)  # past EMPTY_ACK_DELAY (0.1 s)
                assert recent[remote, 7] is None
                assert heavy_parts(remote) == []
            finally:
                device.close()

    run(main())


def test_the_message_ids_noted_are_those_aiocoap_still_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote notes the message IDs of the requests received over it only as long as
    aiocoap's duplicate detection keeps them (EXCHANGE_LIFETIME, shortened here): a live
    association does not collect IDs without end."""
    monkeypatch.setattr(aiocoap.numbers.TransportTuning, "EXCHANGE_LIFETIME", 0.2)

    async def main() -> None:
        async with coaps_server() as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                for mid in (1, 2, 3):
                    device.send(raw_request(mid, b"t%d" % mid, "hello"))
                    assert await device.recv(2.0) is not None
                [remote] = {key[0] for key in recent_messages(server)}
                assert list(remote.request_mids) == [1, 2, 3]
                await asyncio.sleep(0.3)  # aiocoap forgets 1 to 3
                device.send(raw_request(4, b"t4", "hello"))
                assert await device.recv(2.0) is not None
                assert list(remote.request_mids) == [4]
            finally:
                device.close()

    run(main())
