"""A peer cannot grow an application's memory by sending faster than it reads: the adapters
queue at most `config.receive_queue` datagrams, and `config.receive_queue_bytes` bytes of
them, and drop (and count) the rest, like UDP."""

from __future__ import annotations

import asyncio
import time

import pytest

from iotdtls import aio, sync
from iotdtls.config import DEFAULT_MTU, ClientConfig, ServerConfig
from iotdtls.errors import ConfigError
from iotdtls.events import DataReceived
from tests.aio_support import server_config
from tests.interop_support import FAST, ServerThread
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


#: Datagrams a server session queues in the byte-bound tests: 64 x 1232 = 78848 bytes.
BYTES_QUEUE = 64


@pytest.mark.parametrize(("size", "sent", "kept"), [(1000, 80, 64), (4000, 40, 19),
                                                    (16384, 10, 4)])
def test_server_session_queue_is_bounded_in_bytes_too(size: int, sent: int, kept: int) -> None:
    """A peer sending records larger than the server's mtu (a client with mtu 65507; ours
    bounds only what we send) filled the queue of a handler that does not read with
    `receive_queue` of them: 1024 x 16 KiB, 16 MiB per association (probe BF, finding 4).
    Now the queue holds `receive_queue` x `mtu` bytes at most, the rest dropped and counted;
    datagrams within the mtu still get the full count."""

    async def scenario() -> tuple[int, int, int, int]:
        sessions: list[aio.ServerSession] = []
        never = asyncio.Event()

        async def never_reads(session: aio.ServerSession) -> None:
            sessions.append(session)
            await never.wait()

        config = ServerConfig(psk_store={CLIENT_IDENTITY.encode(): PSK},
                              receive_queue=BYTES_QUEUE)
        server = await aio.serve(never_reads, LOCALHOST, 0, config)
        try:
            client = ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK, handshake_timeout=10,
                                  mtu=65507)
            async with aio.connect(LOCALHOST, server.address[1], client) as conn:
                for _ in range(sent):
                    conn.send(b"B" * size)
                    await asyncio.sleep(0.002)  # paced: the kernel's buffers lose none
                for _ in range(300):  # bounded wait until every datagram was handled
                    if sessions and sessions[0].inbox.dropped + len(sessions[0].inbox) >= sent:
                        break
                    await asyncio.sleep(0.01)
                assert sessions, "the handshake completed but no session started"
                inbox = sessions[0].inbox
                assert inbox is not None
                held = sum(map(len, inbox._items or ()))
                return len(inbox), sessions[0].dropped_datagrams, inbox.size, held
        finally:
            await server.close()

    queued, dropped, counted, held = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert (queued, dropped) == (kept, sent - kept)
    assert counted == held == kept * size <= BYTES_QUEUE * DEFAULT_MTU


class _BurstServer(ServerThread):
    """Answers each datagram, a count, with that many records of `BIG` bytes."""

    async def _echo(self, session: aio.ServerSession) -> None:
        while (data := await session.recv()) is not None:
            for _ in range(int(data)):
                session.send(b"B" * BIG)


#: A record larger than the sync client's mtu (the default, 1232), 8 x 1232 = 9856 bytes of
#: queue holding two of them.
BIG = 4000


def test_blocking_client_queue_is_bounded_in_bytes_too() -> None:
    """The sync client's queue, filled while `heartbeat()` waits for its answer, holds
    `receive_queue_bytes` at most (probe BF, finding 4); what `recv` takes frees room."""
    config = server_config(mtu=65507, heartbeat=True)
    with _BurstServer(config) as server:
        client_config = ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK, retransmit=FAST,
                                     handshake_timeout=5.0, heartbeat=True, receive_queue=QUEUE)
        with sync.connect(*server.address, client_config) as client:
            for burst, kept, dropped in [(6, 2, 4), (2, 2, 4)]:
                client.send(b"%d" % burst)
                time.sleep(0.2)  # the burst waits in the socket's buffer
                assert client.heartbeat(5.0)  # reads it all before the answer
                assert (len(client._received), client.dropped_datagrams) == (kept, dropped)
                assert client._received_bytes == kept * BIG <= QUEUE * DEFAULT_MTU
                assert [client.recv(1.0) for _ in range(kept)] == [b"B" * BIG] * kept
                assert client._received_bytes == 0


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


def test_blocking_client_queue_fills_to_its_bytes_exactly() -> None:
    """`receive_queue_bytes` is the most the queue holds: datagrams that fill it to the byte
    are kept, one byte more is dropped and counted (M14: the bound is inclusive)."""
    config = ClientConfig(psk_identity="x", psk=PSK, receive_queue=QUEUE)
    client = sync.DtlsClient(LOCALHOST, free_udp_port(), config)
    half = config.receive_queue_bytes // 2
    try:
        for data in [b"A" * half, b"B" * (config.receive_queue_bytes - half), b"C"]:
            client._on_event(DataReceived(data))
        assert (len(client._received), client.dropped_datagrams) == (2, 1)
        assert client._received_bytes == config.receive_queue_bytes == QUEUE * DEFAULT_MTU
    finally:
        client.close()


def test_receive_queue_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="receive_queue"):
        ClientConfig(psk_identity="x", psk=PSK, receive_queue=0)
