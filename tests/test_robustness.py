"""Bad input gets a clear outcome, never a crash (RFC 6347 §4.1.2.7, HS-5, ERR-1).

Hypothesis mutates the datagrams of a real in-memory handshake (bit flips, truncation,
insertion, splicing) and feeds them to both sides, and throws arbitrary bytes (and mutated
ClientHellos) at a server endpoint and arbitrary bytes at a client in every handshake state;
deterministic sweeps next to them make sure every kind of answer and every state is really
reached. Nothing may raise; every association ends established, still handshaking, or closed
with a typed `DtlsError` (without one only after a close_notify). Before a valid cookie a
server endpoint keeps no state and answers only with a HelloVerifyRequest or a protocol_version
alert, never larger than the datagram that caused it (HS-2).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertLevel, DtlsError
from iotdtls.messages import Alert, HandshakeType
from iotdtls.record import ContentType, split_datagram
from tests.memory_link import (
    IDENTITY,
    KEY,
    Direction,
    Fate,
    MemoryLink,
    make_link,
    plain_alert,
    plain_handshake,
)

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


def has_plain_close_notify(datagram: bytes) -> bool:
    """Whether a datagram holds an epoch-0 close_notify alert record (framing only)."""
    recs, _ = split_datagram(datagram)
    return any(
        h.content_type == ContentType.alert and h.epoch == 0 and payload[1:2] == b"\x00"
        and len(payload) == 2
        for h, payload in recs
    )


def assert_sane(conn: DtlsConnection | None, delivered: list[bytes]) -> None:
    """`conn` is handshaking, established or closed; closed without an error only after a
    close_notify it was given (RFC 5246 §7.2.1), and otherwise with a typed `DtlsError` whose
    message is one line. (Any exception escaping the stack fails the test by itself.)

    Only a plaintext close_notify can be among fuzzed datagrams: a protected one cannot be
    forged without the keys."""
    if conn is None:
        return
    assert conn.state in (
        ConnectionState.HANDSHAKING,
        ConnectionState.ESTABLISHED,
        ConnectionState.CLOSED,
    )
    if conn.state is not ConnectionState.CLOSED:
        assert conn.error is None
    elif conn.error is None:
        assert any(has_plain_close_notify(d) for d in delivered), "closed without a reason"
    else:
        assert isinstance(conn.error, DtlsError)
        assert type(conn.error) is not DtlsError  # a specific subclass
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
    delivered: dict[Direction, list[bytes]] = {"client": [], "server": []}

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        position = sum(1 for d, _ in WIRE[:target] if d == direction) + 1
        out = data
        if WIRE[target][0] == direction and index == position:
            out = mutate(data, how, where, value)
        delivered[direction].append(out)
        return out

    link: MemoryLink = make_link(fate)
    link.handshake(until=120)
    assert_sane(link.client, delivered["server"])
    assert_sane(link.server_conn, delivered["client"])
    assert link.client.state is not ConnectionState.HANDSHAKING  # done or failed, not hung
    event(f"client {link.client.state.name}")


# -- a server endpoint: nothing but a HelloVerifyRequest before a valid cookie (HS-2) ---------

HELLO = WIRE[0][1]  # the client's first ClientHello, as sent
assert WIRE[0][0] == "client"


def reply_kind(reply: bytes) -> str:
    """"hello_verify_request" or "protocol_version" (the only answers allowed before a
    cookie); fails on anything else."""
    if plain_alert(reply) == Alert(AlertLevel.FATAL, AlertDescription.protocol_version):
        return "protocol_version"
    types = [hs.msg_type for hs, _ in plain_handshake(reply)]
    assert types == [HandshakeType.hello_verify_request], reply.hex()
    return "hello_verify_request"


def feed_endpoint(endpoint: ServerEndpoint, datagrams: list[bytes]) -> Counter[str]:
    """Feed `datagrams` from three addresses; check every answer; count the answers' kinds."""
    kinds: Counter[str] = Counter()
    for i, data in enumerate(datagrams):
        now = 0.5 * i
        endpoint.receive_datagram(data, ("192.0.2.9", 1000 + i % 3), now)
        endpoint.handle_timer(now)
        replies = endpoint.datagrams_to_send(now)
        assert len(replies) <= 1
        for reply, _ in replies:
            assert len(reply) <= len(data)  # no amplification (RFC 6347 §4.2.1)
            kinds[reply_kind(reply)] += 1
        kinds["silence"] += not replies
    assert endpoint.connections == {}
    assert endpoint.get_timer() is None
    return kinds


mutated_hellos = st.builds(
    mutate, st.just(HELLO), st.integers(0, 3), st.integers(0, 2000), st.integers(0, 255)
)


@pytest.mark.req("REC-3", "HS-2")
@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), mutated_hellos), min_size=1, max_size=12))
def test_arbitrary_datagrams_at_a_server_endpoint(datagrams: list[bytes]) -> None:
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    for kind in feed_endpoint(endpoint, datagrams):
        event(kind)


@pytest.mark.req("HS-2")
def test_every_byte_of_a_hello_flipped_at_a_server_endpoint() -> None:
    """A deterministic sweep: each byte of a ClientHello flipped three ways. Each kind of
    answer happens, and none is larger than its datagram."""
    datagrams = [mutate(HELLO, 0, i, v) for i in range(len(HELLO)) for v in (0x01, 0x80, 0xFF)]
    kinds = feed_endpoint(ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY})), datagrams)
    assert kinds["hello_verify_request"] > 0, kinds
    assert kinds["protocol_version"] > 0, kinds
    assert kinds["silence"] > 0, kinds


# -- a client in every handshake state ---------------------------------------------------------

#: How far the clean handshake goes before the junk: whole exchanges, and one that stops after
#: the first record of the server's last datagram (its ChangeCipherSpec).
STAGES = [0, 1, 2, 2.5, 3]


def client_at(stage: float) -> tuple[DtlsConnection, list[bytes]]:
    """A client after `stage` clean exchanges with a server endpoint; what it was given."""
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    server = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}))
    client.connect(0.0)
    addr = ("192.0.2.1", 40000)
    given: list[bytes] = []
    for step in range(int(stage + 0.5)):
        for data in client.datagrams_to_send(0.0):
            server.receive_datagram(data, addr, 0.0)
        for data, _ in server.datagrams_to_send(0.0):
            if step + 1 > stage:  # the half step: only the first record
                header, _ = split_datagram(data)[0][0]
                data = data[: 13 + header.length]
            given.append(data)
            client.receive_datagram(data, 0.0)
    return client, given


def junk_at(client: DtlsConnection, given: list[bytes], junk: list[bytes]) -> str:
    """Deliver `junk` in small time steps (well within the handshake timeout) with the timer
    handled after each; check sanity; the handshake state the junk met."""
    met = client._handshake.state.name
    now = 0.0
    for data in junk:
        now += 0.1
        given.append(data)
        client.receive_datagram(data, now)
        client.handle_timer(now)
        client.datagrams_to_send(now)
    assert_sane(client, given)
    return met


@pytest.mark.req("REC-3", "HS-5")
@FUZZ
@given(
    stage=st.sampled_from(STAGES),
    junk=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
)
def test_arbitrary_datagrams_at_a_client_in_any_state(stage: float, junk: list[bytes]) -> None:
    """Deliver the first part of a clean handshake, then arbitrary bytes."""
    client, given = client_at(stage)
    event(f"junk met {junk_at(client, given, junk)}, client {client.state.name}")


@pytest.mark.req("REC-3", "HS-5")
def test_mutated_server_datagrams_at_a_client_in_every_state() -> None:
    """A deterministic sweep: every stage gets mutations of every server datagram of the clean
    handshake. The junk meets every client handshake state, and leaves clients in every
    connection state, each time sane."""
    server_datagrams = [data for d, data in WIRE if d == "server"]
    rng = random.Random(7)
    met: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for stage in STAGES:
        for _ in range(40):
            junk = [mutate(rng.choice(server_datagrams), rng.randrange(4), rng.randrange(200),
                           rng.randrange(256)) for _ in range(3)]
            client, given = client_at(stage)
            met[junk_at(client, given, junk)] += 1
            outcomes[client.state.name] += 1
    assert set(met) == {"WAIT_SERVER_HELLO", "WAIT_CCS", "WAIT_FINISHED", "ESTABLISHED"}, met
    assert set(outcomes) == {"HANDSHAKING", "ESTABLISHED", "CLOSED"}, outcomes
