"""Every datagram fits the configured MTU (HS-3, RFC 6347 §4.1.1 and §4.2.3), whatever the MTU
and whatever the sizes of the messages: a property over MTUs from the minimum up, identity
lengths from empty to several MTUs, both directions, with losses that force retransmissions
(re-cut flights), application data of every size that fits, and the alerts at the end.

Application data that cannot fit one datagram is refused by `send()` with `DatagramTooLarge`
(RFC 6347 §4.1.1: "If the application attempts to send a record larger than the MTU, the DTLS
implementation SHOULD generate an error"); `max_send_size` is exactly what fits.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotdtls.config import MIN_MTU
from iotdtls.connection import ConnectionState
from iotdtls.errors import DatagramTooLarge
from iotdtls.events import DataReceived
from iotdtls.messages import HandshakeType
from iotdtls.record import MAX_PLAINTEXT_LENGTH, ContentType
from tests.memory_link import (
    CLIENT_ADDR,
    KEY,
    Direction,
    Fate,
    MemoryLink,
    established,
    events_of,
    make_link,
    plain_handshake,
    records,
    wire_from,
)

#: Record header (13) + CCM_8 explicit nonce and tag (16): what one application record adds.
APPLICATION_OVERHEAD = 29


def link_with(mtus: tuple[int, int], identity: bytes, drops: frozenset[int]) -> MemoryLink:
    """Datagram `index` of a direction is lost during the handshake when `2 * index (+1 for
    the server)` is in `drops`."""

    def fate(direction: Direction, index: int, data: bytes) -> Fate:
        lost = (index * 2 + (direction == "server")) in drops
        return "drop" if lost and not established(link) else "deliver"

    client_mtu, server_mtu = mtus
    link = make_link(
        fate,
        client={"psk_identity": identity, "mtu": client_mtu},
        server={"psk_store": {identity: KEY}, "mtu": server_mtu},
    )
    return link


def assert_wire_fits(link: MemoryLink, mtus: tuple[int, int]) -> None:
    for direction, mtu in zip(("client", "server"), mtus, strict=True):
        sizes = [len(d) for d in wire_from(link, direction)]
        assert sizes and max(sizes) <= mtu, (direction, mtu, sizes)


def identity_length(mtu: int, shape: tuple[int, int] | int) -> int:
    """An arbitrary length, or one whose ClientKeyExchange ends `slack` bytes short of filling
    its `k`-th datagram (each carries mtu - 25 bytes of body in epoch 0): the boundary where
    the ChangeCipherSpec and Finished behind it must move to the next datagram."""
    if isinstance(shape, int):
        return shape
    k, slack = shape
    return max(1, k * (mtu - 25) - 2 - slack)


@pytest.mark.req("HS-3", "PSK-2")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mtus=st.tuples(st.integers(MIN_MTU, 1500), st.integers(MIN_MTU, 1500)),
    shape=st.one_of(
        st.integers(1, 40),  # an empty identity is refused (RFC 4279 §5)
        st.integers(40, 3000),
        st.tuples(st.integers(1, 3), st.integers(-16, 40)),
    ),
    drops=st.frozensets(st.integers(2, 14), max_size=3),
)
def test_every_datagram_of_every_flight_fits_the_mtu(
    mtus: tuple[int, int], shape: tuple[int, int] | int, drops: frozenset[int]
) -> None:
    length = identity_length(mtus[0], shape)
    identity = bytes(i % 251 for i in range(length))
    link = link_with(mtus, identity, drops)
    link.handshake(until=100.0)
    assert established(link), (link.client.state, link.client.error)
    assert_wire_fits(link, mtus)
    # The ClientKeyExchange (the identity) arrived whole, however it was cut.
    cke = [
        hs
        for d in wire_from(link, "client")
        for hs, _ in plain_handshake(d)
        if hs.msg_type == HandshakeType.client_key_exchange
    ]
    assert cke and cke[0].length == 2 + length
    # Our ChangeCipherSpec always travels with the Finished behind it (PSK-4: the server
    # concludes a wrong key only from a Finished that comes with the flight that moved it).
    for datagram in wire_from(link, "client") + wire_from(link, "server"):
        types = [(h.content_type, h.epoch) for h, _ in records(datagram)]
        if (ContentType.change_cipher_spec, 0) in types:
            assert types[-1] == (ContentType.handshake, 1), types
    server_conn = link.server_conn
    assert server_conn is not None and server_conn.psk_identity == identity
    # The largest application datagrams each side may send, then the close: all fit too.
    link.client.send(b"c" * link.client.max_send_size)
    link.server.send(CLIENT_ADDR, b"s" * server_conn.max_send_size)
    link.step()
    link.client.close()
    link.step()
    assert_wire_fits(link, mtus)
    assert [len(e.data) for e in events_of(link, "server", DataReceived)] == [mtus[0] - 29]


@pytest.mark.parametrize("mtu", [MIN_MTU, 200, 1232, 1500, 16413, 65507])
def test_max_send_size_is_exactly_what_fits(mtu: int) -> None:
    link = make_link(client={"mtu": mtu})
    link.handshake()
    client = link.client
    limit = min(mtu - APPLICATION_OVERHEAD, MAX_PLAINTEXT_LENGTH)
    assert client.max_send_size == limit
    client.send(bytes(limit))
    (datagram,) = client.datagrams_to_send(link.now)
    assert len(datagram) == limit + APPLICATION_OVERHEAD <= mtu
    with pytest.raises(DatagramTooLarge) as refused:
        client.send(bytes(limit + 1))
    assert refused.value.size == limit + 1 and refused.value.limit == limit
    # The bound named is the one that applies: past mtu 16413 (2^14 + 29), the record's.
    reason = (
        "a DTLS record carries at most 16384 bytes (2^14, RFC 5246 §6.2.1), whatever the MTU"
        if limit == MAX_PLAINTEXT_LENGTH
        else f"at most {limit} bytes fit the MTU of {mtu} bytes"
    )
    assert str(refused.value) == (
        f"{limit + 1} bytes of application data do not fit one datagram: {reason}"
    )
    # Nothing was sent, and the association goes on.
    assert client.datagrams_to_send(link.now) == []
    assert client.state is ConnectionState.ESTABLISHED
    client.send(b"after the refusal")
    link.step()
    assert events_of(link, "server", DataReceived)[-1] == DataReceived(b"after the refusal")


def test_server_send_too_large_raises_through_the_endpoint() -> None:
    link = make_link(server={"mtu": 300})
    link.handshake()
    with pytest.raises(DatagramTooLarge):
        link.server.send(CLIENT_ADDR, bytes(300 - APPLICATION_OVERHEAD + 1))
    assert link.server.datagrams_to_send(link.now) == []
    link.server.send(CLIENT_ADDR, bytes(300 - APPLICATION_OVERHEAD))
    ((datagram, _),) = link.server.datagrams_to_send(link.now)
    assert len(datagram) == 300
