"""Idle associations on a server (`ServerConfig.idle_timeout`): an established association
without traffic for that long gets a close_notify (RFC 5246 §7.2.1) and is forgotten; the
application sees `ConnectionClosed(IdleTimeout)`, the client a clean close. Traffic is an
authenticated record from the peer: neither data sent to it (a peer that has gone receives it
as well) nor datagrams anybody can forge from the peer's address (RFC 6347 §4.1.2.7) keep an
association alive."""

from __future__ import annotations

import asyncio

import pytest

from iotdtls import aio
from iotdtls.config import DEFAULT_IDLE_TIMEOUT, ServerConfig
from iotdtls.connection import FINAL_FLIGHT_HOLD, ConnectionState
from iotdtls.crypto import NullProtector
from iotdtls.errors import ConfigError, IdleTimeout
from iotdtls.events import ConnectionClosed, DataReceived
from iotdtls.record import ContentType, RecordLayer
from tests.interop_support import FAST, client_config, server_config
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    MemoryLink,
    established,
    events_of,
    make_link,
    plain_alert,
    wire_from,
)

IDLE = 30.0


def idle_link(idle: float | None = IDLE) -> MemoryLink:
    link = make_link(server={"idle_timeout": idle})
    link.handshake()
    assert established(link)
    return link


def advance(link: MemoryLink, to: float) -> None:
    """Move the clock to `to` and fire whatever timers are due, then deliver what they sent."""
    link.now = to
    link.client.handle_timer(to)
    link.server.handle_timer(to)
    while link.step():
        pass


def test_default_is_documented_and_positive() -> None:
    assert ServerConfig(psk_store={IDENTITY: KEY}).idle_timeout == DEFAULT_IDLE_TIMEOUT == 3600
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="idle_timeout"):
            ServerConfig(psk_store={IDENTITY: KEY}, idle_timeout=bad)


def test_idle_association_gets_close_notify_and_a_typed_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="iotdtls.connection")
    link = idle_link()
    start = link.now
    assert link.server.get_timer() == start + IDLE
    advance(link, start + IDLE - 0.001)
    assert established(link)
    advance(link, start + IDLE)
    assert link.server.connections == {}
    assert link.server.idle_expired == 1
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(closed.error, IdleTimeout) and closed.error.seconds == IDLE
    assert str(closed.error) == "association idle for 30 s, closed"
    assert closed.psk_identity == IDENTITY
    # The client learnt of it from a close_notify: a clean close on its side.
    assert link.client.state is ConnectionState.CLOSED and link.client.error is None
    assert events_of(link, "client", ConnectionClosed) == [ConnectionClosed(None)]
    assert link.server.get_timer() is None
    # A close of the server's choosing, not a failure, in its debug line too.
    assert "association closed: association idle for 30 s, closed" in caplog.messages
    assert not [m for m in caplog.messages if m.startswith("association failed")]


def test_the_peers_records_move_the_deadline_and_data_sent_to_it_does_not() -> None:
    """Only what the peer sends shows that it is still there: a server pushing data to a peer
    that has gone (an observer whose NAT binding moved) must not keep its association."""
    link = idle_link()
    start = link.now
    advance(link, start + 20)
    link.client.send(b"still here")  # an authenticated record from the peer
    link.step()
    assert link.server.get_timer() == start + 20 + IDLE
    advance(link, start + 45)
    link.server.send(CLIENT_ADDR, b"and you?")  # application data sent to the peer
    link.step()
    assert link.server.get_timer() == start + 20 + IDLE
    advance(link, start + 20 + IDLE - 1)
    assert established(link)
    advance(link, start + 20 + IDLE)
    assert link.server.connections == {}
    assert events_of(link, "server", DataReceived) == [DataReceived(b"still here")]


def test_forged_datagrams_from_the_peer_address_do_not_keep_it_alive() -> None:
    link = idle_link()
    start = link.now
    server_conn = link.server_conn
    assert server_conn is not None
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=77)
    protected = bytearray(link.client._records.seal(ContentType.application_data, b"x", 1))
    protected[-1] ^= 1  # fails authentication
    for t in range(1, int(IDLE)):
        link.now = start + t
        plain = forger.seal(ContentType.alert, b"\x01\x00", 0)
        link.server.receive_datagram(plain, CLIENT_ADDR, link.now)
        link.server.receive_datagram(bytes(protected), CLIENT_ADDR, link.now)
        link.server.receive_datagram(b"garbage", CLIENT_ADDR, link.now)
    assert link.server.get_timer() == start + IDLE
    advance(link, start + IDLE)
    assert link.server.connections == {}
    assert server_conn.discards.total() >= 3 * (int(IDLE) - 1)


def test_only_the_idle_ones_expire_oldest_first() -> None:
    links = [make_link(server={"idle_timeout": IDLE}) for _ in range(3)]
    server = links[0].server
    addresses = [CLIENT_ADDR, ("192.0.2.2", 40001), ("192.0.2.3", 40002)]
    for i, link in enumerate(links):
        link.server = server
        link.now = float(i)
        client = link.client
        client.connect(link.now)
        for _ in range(6):  # a hand-driven exchange: this link's client has its own address
            for data in client.datagrams_to_send(link.now):
                server.receive_datagram(data, addresses[i], link.now)
            for data, to in server.datagrams_to_send(link.now):
                assert to == addresses[i]
                client.receive_datagram(data, link.now)
        assert client.state is ConnectionState.ESTABLISHED
    links[0].client.send(b"keep me")  # the oldest is active again at t=10
    for data in links[0].client.datagrams_to_send(10.0):
        server.receive_datagram(data, addresses[0], 10.0)
    server.handle_timer(1 + IDLE)
    assert set(server.connections) == {addresses[0], addresses[2]}
    server.handle_timer(2 + IDLE)
    assert set(server.connections) == {addresses[0]}
    assert server.get_timer() == 10 + IDLE
    assert server.idle_expired == 2
    closes = [d for d, to in server.datagrams_to_send(2 + IDLE)]
    assert len(closes) == 2 and all(plain_alert(d) is None for d in closes)  # protected


def test_no_idle_timeout_means_no_timer() -> None:
    """Only the final flight's hold (RFC 6347 §4.2.4) is left, then no timer at all."""
    link = idle_link(None)
    assert link.server.get_timer() == link.now + FINAL_FLIGHT_HOLD
    advance(link, link.now + FINAL_FLIGHT_HOLD)
    assert link.server.get_timer() is None
    advance(link, link.now + 10 * DEFAULT_IDLE_TIMEOUT)
    assert established(link)
    assert len(wire_from(link, "server")) == 3  # no close_notify went out


def test_aio_session_sees_the_idle_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """Through the asyncio adapter: the handler's recv raises IdleTimeout, the server logs one
    line, and the client's recv returns None (a clean close)."""
    caplog.set_level("INFO", logger="iotdtls.aio")

    async def main() -> tuple[BaseException | None, bytes | None]:
        seen: list[BaseException | None] = []

        async def handler(session: aio.ServerSession) -> None:
            try:
                while await session.recv() is not None:
                    pass
                seen.append(None)
            except IdleTimeout as exc:
                seen.append(exc)

        config = server_config(idle_timeout=0.3, retransmit=FAST)
        async with await aio.serve(handler, "127.0.0.1", 0, config) as server:
            host, port = server.address
            async with aio.connect(host, port, client_config(retransmit=FAST)) as conn:
                reply = await asyncio.wait_for(conn.recv(), 5.0)
        return seen[0] if seen else None, reply

    error, reply = asyncio.run(main())
    assert isinstance(error, IdleTimeout)
    assert reply is None
    assert any("idle for 0.3 s" in r.getMessage() for r in caplog.records)
