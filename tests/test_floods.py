"""Floods against a server endpoint, in memory (HS-2, HS-3; `benchmarks/bench_flood.py` runs
the same over real sockets and reports the figures).

* ClientHellos from thousands of spoofed addresses: no state per unverified address (the
  endpoint's memory stays flat), every answer a HelloVerifyRequest no larger than the datagram
  that caused it (RFC 6347 §4.2.1), and real clients complete their handshakes meanwhile.
* Handshakes that stop half-way (valid cookie, then silence): at most `max_handshakes` kept,
  the oldest make room, each ends with a typed event, real clients complete.
* Fragments of future handshake messages on a server that is still handshaking: held within
  the reassembly budget at its real limit (two maximal messages), those furthest ahead make
  room for the message expected next, and the real flight completes.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import iotdtls
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import NullProtector
from iotdtls.endpoint import GateOutcome, ServerEndpoint
from iotdtls.errors import AssociationEvicted
from iotdtls.events import ConnectionClosed, DataReceived
from iotdtls.handshake.reassembly import MAX_MESSAGES_AHEAD
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import HandshakeType
from iotdtls.record import ContentType, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    MemoryLink,
    established,
    make_link,
    plain_handshake,
)

Address = tuple[str, int]


def spoofed(i: int) -> Address:
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i % 60000)


def first_hello() -> bytes:
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(0.0)
    (hello,) = client.datagrams_to_send(0.0)
    return hello


def library_memory() -> int:
    """Bytes allocated by the library's own code and still alive (tracemalloc running)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"{Path(iotdtls.__file__).parent}/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


class RealClients:
    """Real clients handshaking with `endpoint` while a flood goes on (one step per call)."""

    def __init__(self, endpoint: ServerEndpoint, count: int) -> None:
        self.endpoint = endpoint
        self.clients = {
            (f"192.0.2.{i + 1}", 5000 + i): DtlsConnection(
                ClientConfig(psk_identity=IDENTITY, psk=KEY)
            )
            for i in range(count)
        }
        for client in self.clients.values():
            client.connect(0.0)
        #: Once established, each step sends a datagram of data from every client.
        self.chatting = False
        #: Datagrams of data the clients received (echoes are not needed: the server sends).
        self.received = 0

    def step(self, now: float) -> None:
        for address, client in self.clients.items():
            if self.chatting:
                client.send(b"during the flood")
                self.endpoint.send(address, b"to the client")
            for data in client.datagrams_to_send(now):
                self.endpoint.receive_datagram(data, address, now)

    def deliver(self, data: bytes, address: Address, now: float) -> bool:
        client = self.clients.get(address)
        if client is not None:
            client.receive_datagram(data, now)
            while (event := client.next_event()) is not None:
                self.received += isinstance(event, DataReceived)
        return client is not None

    def all_established(self) -> bool:
        return all(c.state is ConnectionState.ESTABLISHED for c in self.clients.values())


@pytest.mark.req("HS-2")
def test_spoofed_hello_flood_keeps_no_state_and_real_clients_complete() -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    hello = first_hello()
    real = RealClients(endpoint, 10)
    answered = 0

    def flood(start: int, count: int, now: float) -> None:
        """Spoofed hellos; every 500 of them the real clients take a step (handshake, then a
        datagram of data each)."""
        nonlocal answered
        for i in range(start, start + count):
            endpoint.receive_datagram(hello, spoofed(i), now)
            if i % 500 == 0:
                real.step(now)
            for data, address in endpoint.datagrams_to_send(now):
                if not real.deliver(data, address, now):
                    assert len(data) <= len(hello)  # never an amplifier
                    answered += 1
            while endpoint.next_event() is not None:
                pass

    flood(0, 1000, 0.0)  # warm up: the cookie secret, counters, caches
    flood(1000, 5000, 1.0)  # the real clients handshake during the flood
    assert real.all_established()
    assert set(endpoint.connections) == set(real.clients)  # nothing for the spoofed ones
    tracemalloc.start()
    try:
        before = library_memory()
        real.chatting = True
        flood(6000, 20000, 2.0)  # 20000 more addresses, the real clients exchanging data
        grown = library_memory() - before
    finally:
        tracemalloc.stop()
    assert answered == 26000
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 26000 + 10
    assert set(endpoint.connections) == set(real.clients)
    assert real.received >= 10 * 20000 // 500 - 10
    # Flat: under one byte per spoofed address (the real associations' churn is a few KB);
    # any state kept per unverified address would be megabytes here.
    assert grown < 16 * 1024, grown


def half_open(endpoint: ServerEndpoint, address: Address, now: float) -> DtlsConnection:
    """A client that answers the HelloVerifyRequest (its cookie is valid) and then goes
    silent: it never sends flight 5."""
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(now)
    for _ in range(2):
        for data in client.datagrams_to_send(now):
            endpoint.receive_datagram(data, address, now)
        for data, to in endpoint.datagrams_to_send(now):
            assert to == address
            if plain_handshake(data)[0][0].msg_type == HandshakeType.hello_verify_request:
                client.receive_datagram(data, now)
    return client


@pytest.mark.req("HS-2")
def test_half_open_handshakes_are_bounded_and_the_oldest_make_room() -> None:
    cap = 64
    endpoint = ServerEndpoint(
        ServerConfig(psk_store={IDENTITY: KEY}, max_handshakes=cap, max_connections=1000)
    )
    events: list[tuple[Any, Any]] = []
    real = RealClients(endpoint, 1)
    (real_address,) = real.clients
    real.step(0.0)  # the real client's ClientHello ...
    for data, address in endpoint.datagrams_to_send(0.0):
        real.deliver(data, address, 0.0)
    real.step(0.0)  # ... and its cookie: half-open until its flight 5
    in_flight = endpoint.datagrams_to_send(0.0)  # flight 4, on its way to the real client
    for i in range(2000):
        half_open(endpoint, spoofed(i), 0.001 * i)
        while (item := endpoint.next_event()) is not None:
            events.append(item)
        assert len(endpoint.connections) <= cap + 1
        if i == cap // 2:  # the real client's flight 4 arrives, its flight 5 goes out
            for data, address in in_flight:
                real.deliver(data, address, 1.0)
            real.step(1.0)
            for data, address in endpoint.datagrams_to_send(1.0):
                real.deliver(data, address, 1.0)
    assert real.all_established()
    assert endpoint.connections[real_address].state is ConnectionState.ESTABLISHED
    assert endpoint.gate[GateOutcome.HANDSHAKE_EVICTED] == 2000 - cap
    evicted = [a for a, e in events if isinstance(e, ConnectionClosed)]
    assert evicted == [spoofed(i) for i in range(2000 - cap)]  # the oldest, in order
    closed = [e for _, e in events if isinstance(e, ConnectionClosed)]
    assert all(isinstance(e.error, AssociationEvicted) for e in closed)
    survivors = {spoofed(i) for i in range(2000 - cap, 2000)}
    assert set(endpoint.connections) == survivors | {real_address}


def server_waiting_for_key_exchange(mtu: int = 1232) -> MemoryLink:
    """A link whose server has sent flight 4 and waits for the client's flight 5 (held)."""

    def hold_flight_5(direction: Direction, index: int, data: bytes) -> Fate:
        return "drop" if direction == "client" and index >= 3 else "deliver"

    link = make_link(hold_flight_5, client={"mtu": mtu}, server={"mtu": mtu})
    link.client.connect(0.0)
    link.run(until=0.5, stop=lambda lk: lk.sent["client"] >= 3)
    assert link.server_conn is not None
    assert link.server_conn.handshake_state.name == "WAIT_CLIENT_FLIGHT"
    return link


def forged_fragment(forger: RecordLayer, seq: int, length: int, offset: int = 0) -> bytes:
    body = b"f" * 40
    header = handshake_header(HandshakeType.client_key_exchange, seq, length, offset, len(body))
    return forger.seal(ContentType.handshake, header + body, 0)


@pytest.mark.req("HS-3", "REC-3")
def test_future_fragment_flood_on_a_handshaking_server_at_the_real_limit() -> None:
    link = server_waiting_for_key_exchange()
    server_conn = link.server_conn
    assert server_conn is not None
    reassembler = server_conn._reassembler
    limit = 2 * server_conn.config.max_handshake_message  # the reassembly budget
    biggest = server_conn.config.max_handshake_message
    next_seq = reassembler.next_seq
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=10_000)
    seen = 0
    for n in range(3000):
        # Every future slot, furthest first, over and over: each pass fills the budget with
        # the furthest and then brings nearer ones that make room.
        seq = next_seq + MAX_MESSAGES_AHEAD - 1 - n % (MAX_MESSAGES_AHEAD - 1)
        offset = (n * 40) % (biggest - 40)
        forged = forged_fragment(forger, seq, biggest, offset)
        link.server.receive_datagram(forged, CLIENT_ADDR, 0)
        assert reassembler.buffered_bytes <= limit
        seen = max(seen, reassembler.buffered_bytes)
    assert seen == limit  # the bound was reached, not just approached
    assert server_conn.state is ConnectionState.HANDSHAKING
    evicted = reassembler.evicted
    assert evicted > 0  # nearer forged messages pushed the furthest ones out
    # The real flight 5 arrives: the message expected next always finds room.
    link.fate = lambda d, i, data: "deliver"
    link.run(until=10.0, stop=established)
    assert established(link)
    assert reassembler.evicted > evicted  # it made room by dropping the furthest ahead


@pytest.mark.req("HS-3")
def test_the_furthest_ahead_make_room_and_the_next_message_always_fits() -> None:
    from iotdtls.handshake.reassembly import HandshakeFragment, Reassembler

    r = Reassembler(1000)
    r.next_seq = 5
    for seq in (7, 8):  # two maximal future messages fill the budget
        r.add(HandshakeFragment(11, 1000, seq, 0, b"x", 0))
    assert r.buffered_bytes == 2000
    r.add(HandshakeFragment(11, 1000, 9, 0, b"x", 0))  # further still: refused
    assert r.buffered_bytes == 2000 and r.evicted == 0
    r.add(HandshakeFragment(11, 10, 6, 0, b"y" * 10, 0))  # nearer: 8 makes room
    assert r.evicted == 1 and r.buffered_bytes == 1010
    r.add(HandshakeFragment(11, 1000, 5, 0, b"z" * 1000, 0))  # the next one: 7 makes room
    assert r.evicted == 2
    message = r.peek()
    assert message is not None and message.body == b"z" * 1000
