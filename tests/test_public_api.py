"""What users import and read where the README says: the errors an application catches and
`ChainCache` at top level (`from iotdtls import ...`), the core's events by their module
(`iotdtls.events`), and on both clients (asyncio and blocking) and a server's session the
authenticated `peer`, `max_send_size` and `dropped_datagrams` themselves, not only on the
sans-I/O connection underneath."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import iotdtls
from iotdtls import aio, chaincache, errors, sync
from iotdtls.identity import PskIdentity
from tests.aio_support import client_config, echo, server_config
from tests.interop_support import ServerThread

README = Path(__file__).resolve().parent.parent / "README.md"
#: A core event named in README without its module.
BARE_EVENT = re.compile(r"(?<![.\w])(HandshakeComplete|ConnectionClosed|DataReceived)\b")
#: What `client_config()` leaves the MTU at, and the record overhead of its CCM_8 suite.
PSK_ROOM = client_config().mtu - 29


@pytest.mark.parametrize("name", ["ChainCache", "PathMtuExceeded", "IntegrityLimitReached",
                                  "IdleTimeout", "ForeignEventLoop"])
def test_the_names_readme_uses_import_from_iotdtls(name: str) -> None:
    source = chaincache if name == "ChainCache" else errors
    assert getattr(iotdtls, name) is getattr(source, name)
    assert name in iotdtls.__all__


def test_every_error_an_application_may_catch_is_at_top_level() -> None:
    caught = (errors.DtlsError, errors.LocalProtocolError, errors.ConfigError)
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, caught):
            assert getattr(iotdtls, name, None) is value, name
            assert name in iotdtls.__all__, name


def test_readme_names_the_events_by_their_module() -> None:
    bare = [line for line in README.read_text(encoding="utf-8").splitlines()
            if BARE_EVENT.search(line)]
    assert bare == []


def test_asyncio_client_and_session_show_peer_and_max_send_size() -> None:
    sessions: list[aio.ServerSession] = []

    async def keep(session: aio.ServerSession) -> None:
        sessions.append(session)
        await echo(session)

    async def main() -> None:
        async with await aio.serve(keep, "127.0.0.1", 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as conn:
                assert conn.peer == conn.connection.peer == PskIdentity(b"Client_identity")
                assert conn.max_send_size == conn.connection.max_send_size == PSK_ROOM
                assert conn.dropped_datagrams == 0
                conn.send(b"x" * conn.max_send_size)
                assert await conn.recv() == b"x" * PSK_ROOM
                (session,) = sessions
                assert session.max_send_size == PSK_ROOM
                assert session.peer == conn.peer
            for _ in range(100):  # bounded wait for the server to see the close_notify
                if session.ended:
                    break
                await asyncio.sleep(0.01)
            assert session.ended
            assert session.max_send_size == 0

    asyncio.run(asyncio.wait_for(main(), 10.0))


def test_blocking_client_shows_peer_max_send_size_and_dropped_datagrams() -> None:
    with ServerThread(server_config()) as server:
        client = sync.DtlsClient(*server.address, client_config())
        try:
            assert client.peer is None  # no handshake yet
            client.handshake()
            assert client.peer == client.connection.peer == PskIdentity(b"Client_identity")
            assert client.max_send_size == client.connection.max_send_size == PSK_ROOM
            client.send(b"y" * client.max_send_size)
            assert client.recv(timeout=5.0) == b"y" * PSK_ROOM
            assert client.dropped_datagrams == client.dropped == 0
        finally:
            client.close()
