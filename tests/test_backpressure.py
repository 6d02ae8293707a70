"""A peer cannot grow an application's memory by sending faster than it reads: the adapters
queue at most `config.receive_queue` datagrams and drop (and count) the rest, like UDP."""

from __future__ import annotations

import asyncio

import pytest

from iotdtls import aio, sync
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.errors import ConfigError
from iotdtls.events import DataReceived
from tests.peers import CLIENT_IDENTITY, LOCALHOST, PSK, free_udp_port

QUEUE = 8
SENT = 40


def test_server_session_queue_is_bounded() -> None:
    async def scenario() -> tuple[int, int]:
        sessions: list[aio.ServerSession] = []
        never = asyncio.Event()

        async def never_reads(session: aio.ServerSession) -> None:
            sessions.append(session)
            await never.wait()

        config = ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK}, receive_queue=QUEUE)
        server = await aio.serve(never_reads, LOCALHOST, 0, config)
        try:
            client = ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK, handshake_timeout=10)
            async with aio.connect(LOCALHOST, server.address[1], client) as conn:
                for i in range(SENT):
                    conn.send(b"%d" % i)
                for _ in range(300):  # bounded wait until every datagram was handled
                    if sessions and sessions[0].inbox.dropped + QUEUE >= SENT:
                        break
                    await asyncio.sleep(0.01)
                assert sessions, "the handshake completed but no session started"
                return len(sessions[0].inbox), sessions[0].dropped_datagrams
        finally:
            await server.close()

    queued, dropped = asyncio.run(scenario())
    assert (queued, dropped) == (QUEUE, SENT - QUEUE)


def test_blocking_client_queue_is_bounded() -> None:
    # No handshake: the datagrams are handed to the client directly; the port is never used.
    client = sync.DtlsClient(
        LOCALHOST, free_udp_port(), ClientConfig(psk_identity="x", psk=PSK, receive_queue=QUEUE)
    )
    try:
        for i in range(SENT):
            client._on_event(DataReceived(b"%d" % i))
        assert client.dropped_datagrams == SENT - QUEUE  # the name aio's clients use
        assert client.dropped == SENT - QUEUE  # its earlier name, the same counter
        assert len(client._received) == QUEUE
    finally:
        client.close()


def test_receive_queue_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="receive_queue"):
        ClientConfig(psk_identity="x", psk=PSK, receive_queue=0)
