"""Bad input gets a clear outcome, never a crash (RFC 6347 §4.1.2.7, HS-5, ERR-1).

Hypothesis mutates the datagrams of a real in-memory handshake (bit flips, truncation,
insertion, splicing) and feeds them to both sides, and throws arbitrary bytes at a server
endpoint and at a client in every handshake state. Nothing may raise; every association ends
established, still handshaking, or closed with a typed `DtlsError`.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import DtlsError
from tests.memory_link import IDENTITY, KEY, Direction, Fate, MemoryLink, make_link

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def clean_wire() -> list[tuple[Direction, bytes]]:
    link = make_link()
    link.handshake()
    link.client.send(b"ping")
    link.step()
    return [(d, data) for d, _, data in link.wire]


WIRE = clean_wire()


def mutate(data: bytes, how: int, where: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    i = where % len(data)
    if how == 0:  # flip bits of one byte
        return data[:i] + bytes([data[i] ^ (value or 1)]) + data[i + 1 :]
    if how == 1:  # truncate
        return data[:i]
    if how == 2:  # insert a byte
        return data[:i] + bytes([value]) + data[i:]
    return data + data[i:]  # splice a tail on


def assert_sane(conn: DtlsConnection | None) -> None:
    if conn is None:
        return
    assert conn.state in (
        ConnectionState.HANDSHAKING,
        ConnectionState.ESTABLISHED,
        ConnectionState.CLOSED,
    )
    if conn.state is ConnectionState.CLOSED and conn.error is not None:
        assert isinstance(conn.error, DtlsError)
        assert "\n" not in str(conn.error)


@pytest.mark.req("REC-3", "HS-5")
@FUZZ
@given(
    target=st.integers(min_value=0, max_value=len(WIRE) - 1),
    how=st.integers(min_value=0, max_value=3),
    where=st.integers(min_value=0, max_value=2000),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_handshake_never_crashes(target: int, how: int, where: int, value: int) -> None:
    """One datagram of a handshake is corrupted on the way; both sides stay sane."""

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        position = sum(1 for d, _ in WIRE[:target] if d == direction) + 1
        if WIRE[target][0] == direction and index == position:
            return mutate(data, how, where, value)
        return "deliver"

    link: MemoryLink = make_link(fate)
    link.handshake(until=120)
    assert_sane(link.client)
    assert_sane(link.server_conn)
    assert link.client.state is not ConnectionState.HANDSHAKING  # done or failed, not hung


@pytest.mark.req("REC-3", "HS-2")
@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=12))
def test_arbitrary_datagrams_at_a_server_endpoint(datagrams: list[bytes]) -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    for i, data in enumerate(datagrams):
        endpoint.receive_datagram(data, ("192.0.2.9", 1000 + i % 3), float(i))
        endpoint.handle_timer(float(i))
    for _, conn in endpoint.connections.items():
        assert_sane(conn)
    for data, _ in endpoint.datagrams_to_send(0.0):
        assert len(data) <= endpoint.config.mtu


@pytest.mark.req("REC-3", "HS-5")
@FUZZ
@given(
    steps=st.integers(min_value=0, max_value=len(WIRE)),
    junk=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
)
def test_arbitrary_datagrams_at_a_client_in_any_state(steps: int, junk: list[bytes]) -> None:
    """Deliver the first `steps` datagrams of a clean handshake, then arbitrary bytes."""
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    server = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    client.connect(0.0)
    addr = ("192.0.2.1", 40000)
    for _ in range(steps):
        for data in client.datagrams_to_send(0.0):
            server.receive_datagram(data, addr, 0.0)
        for data, _ in server.datagrams_to_send(0.0):
            client.receive_datagram(data, 0.0)
    for data in junk:
        client.receive_datagram(data, 0.0)
        client.handle_timer(1000.0)
    assert_sane(client)
