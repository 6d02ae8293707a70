"""Server endpoint limits and hostile inputs: nothing a peer sends can crash the endpoint, grow
its table without bound, or end a good association (HS-2, REC-3, EXT-4, RFC 6347 §4.2.8); the
alerts of failed handshakes kept to send again (RFC 6347 §4.2.7) are bounded."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import NullProtector
from iotdtls.endpoint import GateOutcome, ServerEndpoint, host_of
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    AssociationEvicted,
    AssociationReplaced,
)
from iotdtls.events import AlertReceived as AlertEvent
from iotdtls.events import ConnectionClosed, DataReceived, Event, HandshakeComplete
from iotdtls.messages import DTLS_1_2, HandshakeType
from iotdtls.record import ContentType, DiscardReason, RecordHeader, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    handshake_record,
    make_link,
    plain_alert,
    record_layer,
)

Address = tuple[str, int]


class Net:
    """Several in-memory clients (by address) and one server endpoint, at a fixed time."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = ServerEndpoint(server)
        self.clients: dict[Address, DtlsConnection] = {}
        self.server_events: list[tuple[Address, Event]] = []
        self.now = 0.0

    def client(self, address: Address, **config: Any) -> DtlsConnection:
        conn = DtlsConnection(ClientConfig(**{"psk_identity": IDENTITY, "psk": KEY, **config}))
        self.clients[address] = conn
        conn.connect(self.now)
        return conn

    def pump(self, drop_to: Callable[[Address], bool] = lambda a: False) -> None:
        for _ in range(50):
            moved = False
            for address, conn in self.clients.items():
                for data in conn.datagrams_to_send(self.now):
                    moved = True
                    self.server.receive_datagram(data, address, self.now)
            for data, address in self.server.datagrams_to_send(self.now):
                moved = True
                if address in self.clients and not drop_to(address):
                    self.clients[address].receive_datagram(data, self.now)
            while (item := self.server.next_event()) is not None:
                self.server_events.append(item)
            if not moved:
                return

    def established(self, address: Address) -> None:
        """A client at `address` completes its handshake."""
        self.client(address)
        self.pump()
        assert self.clients[address].state is ConnectionState.ESTABLISHED

    def half_open(self, address: Address) -> None:
        """A client at `address` gets its HelloVerifyRequest, but no later flight of the
        server's: its handshake stays in progress at the server."""
        self.client(address)
        delivered = 0

        def drop_after_hello_verify(to: Address) -> bool:
            nonlocal delivered
            delivered += 1
            return delivered > 1

        self.pump(drop_to=drop_after_hello_verify)

    def closed_events(self, address: Address) -> list[ConnectionClosed]:
        return [
            e for a, e in self.server_events if a == address and isinstance(e, ConnectionClosed)
        ]


def server_config(**overrides: Any) -> ServerConfig:
    return ServerConfig(psk_store={IDENTITY: KEY}, **overrides)


@pytest.mark.req("HS-2")
def test_half_open_cap_evicts_with_a_typed_event() -> None:
    net = Net(server_config(max_handshakes=2))
    addresses = [("198.51.100.2", 2000 + i) for i in range(3)]
    for address in addresses:
        net.half_open(address)
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 1
    assert len(net.server.connections) == 2
    evicted = net.closed_events(addresses[0])
    assert len(evicted) == 1 and isinstance(evicted[0].error, AssociationEvicted)
    assert addresses[0] not in net.server.connections


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("keepalive", [False, True])
def test_established_associations_with_timers_are_not_half_open(keepalive: bool) -> None:
    """max_handshakes caps handshakes in progress only: an established association that keeps
    a timer (a keep-alive, or its final flight held for the peer) is never evicted as one."""
    settings: dict[str, Any] = {"heartbeat": True, "keepalive_interval": 30.0} if keepalive else {}
    net = Net(server_config(max_handshakes=2, **settings))
    addresses = [("198.51.100.9", 4000 + i) for i in range(5)]
    for address in addresses:
        net.client(address, heartbeat=keepalive)
        net.pump()
        assert net.clients[address].state is ConnectionState.ESTABLISHED
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 0
    assert set(net.server.connections) == set(addresses)
    assert all(net.server.connections[a].get_timer() is not None for a in addresses)


@pytest.mark.req("HS-2")
def test_full_table_evicts_the_least_recently_active() -> None:
    net = Net(server_config(max_connections=2, max_handshakes=1))
    a, b, c = (("198.51.100.3", 3000 + i) for i in range(3))
    for address in (a, b):
        net.established(address)
    net.now += 1.0
    net.clients[a].send(b"a is active")  # b is now the least recently active
    net.pump()
    net.established(c)
    assert set(net.server.connections) == {a, c}
    assert net.server.gate[GateOutcome.EVICTED_WHEN_FULL] == 1
    (closed,) = net.closed_events(b)
    assert isinstance(closed.error, AssociationEvicted)
    # b was told with close_notify (a clean close on its side), not left sending into the void.
    assert net.clients[b].state is ConnectionState.CLOSED and net.clients[b].error is None
    assert net.clients[a].state is ConnectionState.ESTABLISHED


@pytest.mark.req("HS-2")
def test_full_table_counts_activity_as_the_idle_timeout_does() -> None:
    """Only the peer's authenticated records are activity: neither data the server sends (to a
    peer that may have gone) nor a datagram that fails authentication (a forger's) keeps an
    association from being the one a full table lets go."""
    net = Net(server_config(max_connections=3, max_handshakes=3))
    a, b, c, d, e = (("198.51.100.7", 7000 + i) for i in range(5))
    for address in (a, b, c):
        net.established(address)
        net.now += 1.0
    net.now = 10.0
    net.server.send(a, b"notification", net.now)  # the server pushes to a: no sign of a
    net.pump()
    net.now = 11.0
    # A whole epoch-1 application_data record of a fresh sequence number: it fails its tag.
    forged = RecordHeader(ContentType.application_data, DTLS_1_2, 1, 1000, 24).encode()
    net.server.receive_datagram(forged + b"\xaa" * 24, b, net.now)
    assert net.server.connections[b].discards[DiscardReason.BAD_TAG] == 1
    net.now = 11.5
    net.clients[c].send(b"still here")  # c's peer speaks: c is the most recently active
    net.pump()
    net.now = 12.0
    net.established(d)
    assert set(net.server.connections) == {b, c, d}
    (closed,) = net.closed_events(a)
    assert isinstance(closed.error, AssociationEvicted)
    net.now = 13.0
    net.established(e)
    assert set(net.server.connections) == {c, d, e}
    (closed,) = net.closed_events(b)
    assert isinstance(closed.error, AssociationEvicted)


@pytest.mark.req("HS-2")
def test_half_open_handshakes_never_evict_established_associations() -> None:
    """A cookie proves an address, not a peer: handshakes that stop after it (no credentials
    needed) are capped apart by `max_handshakes` and never take an established slot."""
    net = Net(server_config(max_connections=3, max_handshakes=2))
    established = [("198.51.100.5", 5000 + i) for i in range(3)]
    for address in established:
        net.established(address)
    for i in range(20):
        net.half_open(("203.0.113.5", 6000 + i))
    assert net.server.gate[GateOutcome.EVICTED_WHEN_FULL] == 0
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 18
    assert all(net.clients[a].state is ConnectionState.ESTABLISHED for a in established)
    assert len(net.server.connections) == 3 + 2  # max_connections + max_handshakes
    assert set(established) <= set(net.server.connections)


@pytest.mark.req("HS-2")
def test_a_completed_handshake_evicts_the_least_recently_active_and_no_half_open() -> None:
    """Only a handshake that completes into a full table lets an established association go
    (with close_notify); the half-open one waiting beside them is left alone."""
    net = Net(server_config(max_connections=2, max_handshakes=2))
    a, b, c, d = (("198.51.100.6", 5000 + i) for i in range(4))
    net.half_open(a)
    for address in (b, c):
        net.established(address)
        net.now += 1.0
    assert set(net.server.connections) == {a, b, c}
    net.established(d)
    assert set(net.server.connections) == {a, c, d}
    assert net.server.gate[GateOutcome.EVICTED_WHEN_FULL] == 1
    (closed,) = net.closed_events(b)
    assert isinstance(closed.error, AssociationEvicted)
    assert net.clients[b].state is ConnectionState.CLOSED and net.clients[b].error is None
    assert net.closed_events(a) == []
    assert net.server.connections[a].state is ConnectionState.HANDSHAKING


def test_restarted_client_ends_the_old_association_with_an_event() -> None:
    net = Net(server_config())
    address = ("198.51.100.4", 4000)
    net.client(address)
    net.pump()
    old = net.server.connections[address]
    net.client(address)  # the device rebooted: same address, new handshake
    net.pump()
    assert net.server.connections[address] is not old
    assert net.server.connections[address].state is ConnectionState.ESTABLISHED
    (closed,) = net.closed_events(address)
    assert isinstance(closed.error, AssociationReplaced)
    assert closed.psk_identity == IDENTITY


def hello_with_cookie(net: Net, address: Address) -> bytes:
    """A client at `address` starts; its ClientHello with the cookie, delivered to the server,
    is returned (what a passive observer could replay)."""
    client = net.client(address)
    for data in client.datagrams_to_send(net.now):
        net.server.receive_datagram(data, address, net.now)
    for data, _ in net.server.datagrams_to_send(net.now):
        client.receive_datagram(data, net.now)  # the HelloVerifyRequest
    (hello,) = client.datagrams_to_send(net.now)
    net.server.receive_datagram(hello, address, net.now)
    return hello


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("cookie", [True, False])
@pytest.mark.parametrize("half_open", [False, True])
def test_replayed_hello_with_cookie_leaves_a_newer_association(
    half_open: bool, cookie: bool
) -> None:
    """RFC 6347 §4.2.8: only a cookie exchange demonstrates that a restarted client is at the
    address. A completed and closed, B connected from its address, then a copy of A's
    ClientHello with its cookie (still valid, 600 s) from that address ended B's association
    without telling B and sent server flights to B. The cookie predates B's association:
    dropped, counted, B untouched. With cookie exchange off, A got its cookie restarting
    beside an association of its own (the only hello asked for one there): the same."""
    net = Net(server_config(cookie_exchange=cookie))
    address = ("198.51.100.5", 5000)
    if not cookie:
        net.established(address)
    replay = hello_with_cookie(net, address)
    net.pump()
    net.clients[address].close()
    net.pump()
    assert address not in net.server.connections
    net.now = 1.0
    if half_open:
        net.half_open(address)
    else:
        net.established(address)
    newer = net.server.connections[address]
    net.server_events.clear()
    net.now = 2.0
    net.server.receive_datagram(replay, address, net.now)
    net.server.receive_datagram(replay, address, net.now)  # each copy is counted
    assert net.server.connections[address] is newer
    assert net.server.datagrams_to_send(net.now) == []
    assert net.server.next_event() is None
    assert net.server.gate[GateOutcome.STALE_COOKIE] == 2
    if not half_open:
        net.clients[address].send(b"still here")
        net.pump()
        assert [e.data for a, e in net.server_events if isinstance(e, DataReceived)] == [
            b"still here"
        ]


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("cookie", [True, False])
@pytest.mark.parametrize("half_open", [False, True])
def test_restarted_client_with_a_fresh_cookie_replaces_the_association(
    half_open: bool, cookie: bool
) -> None:
    """RFC 6347 §4.2.8: a client that restarted gets its cookie after its old association
    began and last heard from it, so the new handshake replaces that association. With
    cookie exchange off too: its new ClientHello gets a HelloVerifyRequest all the same,
    because its address has an association (which it may not destroy unproven)."""
    net = Net(server_config(cookie_exchange=cookie))
    address = ("198.51.100.6", 6000)
    net.now = 1.0
    if half_open:
        net.half_open(address)
    else:
        net.established(address)
        net.now = 5.0
        net.clients[address].send(b"reading")
        net.pump()
    old = net.server.connections[address]
    net.now = 9.0
    net.established(address)  # the device rebooted: same address, new handshake
    assert net.server.connections[address] is not old
    assert net.server.connections[address].state is ConnectionState.ESTABLISHED
    (closed,) = net.closed_events(address)
    assert isinstance(closed.error, AssociationReplaced)
    assert net.server.gate[GateOutcome.STALE_COOKIE] == 0
    gate = net.server.gate
    without = 0 if cookie else 1  # the first handshake, from an address without one
    assert (gate[GateOutcome.HELLO_VERIFY_SENT], gate[GateOutcome.COOKIE_ACCEPTED],
            gate[GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE]) == (2 - without, 2 - without, without)


def forged_hello(net: Net, fragment: bool) -> bytes:
    """The first datagram of a ClientHello with a new random: whole, or the first part of one
    cut to an mtu of 200 (a long server name)."""
    long_name = {"mtu": 200, "server_name": ".".join(["a" * 60] * 4)} if fragment else {}
    forger = DtlsConnection(ClientConfig(psk_identity=b"x", psk=bytes(16), **long_name))
    forger.connect(net.now)
    forged = forger.datagrams_to_send(net.now)[0]
    assert (forged[13 + 1 : 13 + 4] != forged[13 + 9 : 13 + 12]) == fragment  # a part, or whole
    return forged


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("fragment", [False, True])
def test_without_cookie_exchange_a_forged_hello_leaves_the_association(fragment: bool) -> None:
    """RFC 6347 §4.2.8: the server "MUST NOT destroy the existing association until the client
    has demonstrated reachability", also with cookie exchange off. One spoofed ClientHello with
    a new random from the address of an association ended it at once (AssociationReplaced) and
    started a half-open one that dropped the genuine client's next record. Now such a hello
    gets a HelloVerifyRequest, as under cookie exchange, and a part of one is dropped
    (`fragmented_client_hello`): the association goes on untouched."""
    net = Net(server_config(cookie_exchange=False))
    address = ("198.51.100.12", 12000)
    net.established(address)
    old = net.server.connections[address]
    state = old.state
    net.server_events.clear()
    before = Counter(net.server.gate)
    forged = forged_hello(net, fragment)
    net.now = 1.0
    net.server.receive_datagram(forged, address, net.now)
    assert net.server.connections[address] is old and old.state is state and old.error is None
    assert net.server.next_event() is None
    answer = net.server.datagrams_to_send(net.now)
    outcome = GateOutcome.FRAGMENTED_CLIENT_HELLO if fragment else GateOutcome.HELLO_VERIFY_SENT
    assert net.server.gate - before == Counter({outcome: 1})
    assert [
        data[13] for data, to in answer if to == address and data[0] == ContentType.handshake
    ] == ([] if fragment else [HandshakeType.hello_verify_request])
    assert len(answer) == (0 if fragment else 1)
    net.clients[address].send(b"still here")
    net.pump()
    assert [e.data for a, e in net.server_events if isinstance(e, DataReceived)] == [
        b"still here"
    ]
    assert net.server.connections[address] is old and old.state is ConnectionState.ESTABLISHED
    assert net.closed_events(address) == []


@pytest.mark.req("HS-2")
def test_without_cookie_exchange_a_spoofed_half_open_association_does_not_lock_its_address_out(
) -> None:
    """With cookie exchange off, a spoofer's ClientHello from a device's address starts a
    half-open association there, as the device's own would. Were it kept as an established one
    is (RFC 6347 §4.2.8), the device's ClientHello in fragments, which cannot get a cookie,
    would be dropped for as long as the spoofer renews it (probe BC: locked out 60 s, then
    again). A half-open association proves no more than the new hello: it is replaced, and the
    device connects."""
    net = Net(server_config(cookie_exchange=False))
    address = ("198.51.100.13", 13000)
    net.server.receive_datagram(forged_hello(net, fragment=False), address, net.now)
    spoofed = net.server.connections[address]
    assert spoofed.state is ConnectionState.HANDSHAKING
    net.server.datagrams_to_send(net.now)  # flight 4, to the device, which ignores it
    net.now = 0.5
    net.client(address, mtu=200, server_name=".".join(["a" * 60] * 4))
    net.pump()
    assert net.clients[address].state is ConnectionState.ESTABLISHED
    assert net.server.connections[address] is not spoofed
    assert net.server.gate[GateOutcome.HELLO_VERIFY_SENT] == 0
    assert net.server.gate[GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE] == 2
    (closed,) = net.closed_events(address)
    assert isinstance(closed.error, AssociationReplaced)


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("days", [20, 30, 60])
def test_a_device_silent_for_weeks_replaces_its_association_when_it_restarts(days: int) -> None:
    """Without an idle timeout an association may stay silent for weeks. A cookie's issue time
    counts milliseconds modulo 2^32 (49.7 days): a restart 30 days later was read as a cookie
    issued before the association last heard from its device, dropped as STALE_COOKIE, and the
    device locked out until the count wrapped. The cookie is fresh: it replaces the association."""
    net = Net(server_config(idle_timeout=None))
    address = ("198.51.100.7", 7000)
    net.now = 1.0
    net.established(address)
    old = net.server.connections[address]
    net.now = 1.0 + days * 86400.0
    net.established(address)
    assert net.server.connections[address] is not old
    assert net.server.gate[GateOutcome.STALE_COOKIE] == 0
    (closed,) = net.closed_events(address)
    assert isinstance(closed.error, AssociationReplaced)


@pytest.mark.req("HS-2")
def test_a_cookie_from_a_process_whose_clock_runs_ahead_replaces_the_association() -> None:
    """Processes sharing a cookie secret (`iotdtls.workers`) accept each other's cookies up to
    1 s ahead of their own clock: a restarted device whose cookie came from such a process is
    as fresh as any, and its new handshake replaces its old association."""
    secret = bytes(range(32))
    net = Net(server_config(cookie_secret=secret))
    address = ("198.51.100.8", 8000)
    net.now = 1.0
    net.established(address)
    old = net.server.connections[address]
    ahead = ServerEndpoint(server_config(cookie_secret=secret))
    net.now = 10.0
    client = net.client(address)
    for data in client.datagrams_to_send(net.now):
        ahead.receive_datagram(data, address, net.now + 0.5)
    (hello_verify,) = ahead.datagrams_to_send(net.now + 0.5)
    client.receive_datagram(hello_verify[0], net.now)
    net.pump()  # the ClientHello with that cookie goes to the first process
    assert client.state is ConnectionState.ESTABLISHED
    assert net.server.connections[address] is not old
    assert net.server.gate[GateOutcome.STALE_COOKIE] == 0


@pytest.mark.req("HS-2")
def test_a_replay_stays_stale_under_a_long_cookie_rotation() -> None:
    """A cookie verifies for two periods: with a rotation of ten days, a ClientHello copied 18
    days earlier still verifies, and is still older than the association begun since."""
    day = 86400.0
    net = Net(server_config(cookie_rotation=10 * day, idle_timeout=None))
    address = ("198.51.100.9", 9000)
    replay = hello_with_cookie(net, address)
    net.pump()
    net.clients[address].close()
    net.pump()
    net.now = day
    net.established(address)
    newer = net.server.connections[address]
    net.now = 18 * day
    net.server.receive_datagram(replay, address, net.now)
    assert net.server.connections[address] is newer
    assert net.server.gate[GateOutcome.STALE_COOKIE] == 1


@pytest.mark.req("REC-3")
def test_hostile_record_sequence_number_in_client_hello() -> None:
    """A ClientHello whose record sequence number is 2^48 - 1 (cookie still valid: the cookie
    covers the hello, not the record header) neither crashes nor exhausts the server."""

    def max_sequence(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction == "client" and data[0] == ContentType.handshake and data[3:5] == b"\0\0":
            return data[:5] + b"\xff" * 6 + data[11:]
        return "deliver"

    link = make_link(max_sequence)
    link.handshake()
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.server_conn is not None and link.server_conn.state is ConnectionState.ESTABLISHED


@pytest.mark.req("REC-3")
@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        (ContentType.change_cipher_spec, b"\x02"),
        (ContentType.handshake, b"\x01\x00"),  # truncated handshake header
        (ContentType.alert, b"\x02"),  # truncated alert
        (ContentType.alert, b"\x02\x28"),  # a well-formed fatal alert, but unauthenticated
        (ContentType.application_data, b"forged"),
    ],
)
def test_forged_plaintext_records_never_end_an_established_association(
    content_type: ContentType, payload: bytes
) -> None:
    link = make_link()
    link.handshake()
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=1000)
    link.client.receive_datagram(forger.seal(content_type, payload, 0), link.now)
    link.server.receive_datagram(forger.seal(content_type, payload, 0), CLIENT_ADDR, link.now)
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.server_conn is not None and link.server_conn.state is ConnectionState.ESTABLISHED
    link.client.send(b"still fine")
    link.step()
    assert DataReceived(b"still fine") in link.server_events


@pytest.mark.req("HS-3", "REC-3")
def test_forged_plaintext_stub_cannot_block_the_real_finished() -> None:
    """A forged epoch-0 fragment for the message_seq of the server's Finished is replaced when
    the authenticated (epoch-1) fragments arrive."""
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=500)
    stub = handshake_record(forger, HandshakeType.finished, 3, b"\x00" * 5)
    injected = {"done": False}

    def fate(direction: Direction, index: int, data: bytes) -> Fate:
        if direction == "client" and index == 3 and not injected["done"]:
            injected["done"] = True
            link.client.receive_datagram(stub, link.now)  # lands before the server's flight 6
        return "deliver"

    link = make_link(fate)
    link.handshake(until=5.0)
    assert injected["done"]
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.now < 1.0  # no retransmission was needed


@pytest.mark.req("EXT-4")
def test_renegotiation_request_restarting_at_message_seq_0_is_refused() -> None:
    """RFC 6347 §4.2.2: a renegotiation starts again at message_seq 0."""
    link = make_link()
    link.handshake()
    server_conn = link.server_conn
    assert server_conn is not None
    hello_request = handshake_record(
        record_layer(server_conn), HandshakeType.hello_request, 0, b"", epoch=1
    )
    link.client.receive_datagram(hello_request, link.now)
    link.step()
    assert AlertEvent(AlertDescription.no_renegotiation) in link.server_events
    assert link.client.state is ConnectionState.ESTABLISHED


def test_failing_psk_lookup_is_an_internal_error_not_a_crash() -> None:
    def broken(identity: bytes) -> bytes | None:
        raise RuntimeError("database down")

    cases = ((broken, "psk_lookup failed"), (lambda identity: "not bytes", "invalid key"),
             (lambda identity: b"", "invalid key"))
    for lookup, reason in cases:
        link = make_link(server={"psk_store": None, "psk_lookup": lookup})
        link.handshake(until=5.0)
        server_conn_error = [e.error for e in link.server_events if isinstance(e, ConnectionClosed)]
        assert len(server_conn_error) == 1
        assert isinstance(server_conn_error[0], AlertSent)
        assert server_conn_error[0].alert is AlertDescription.internal_error
        assert reason in server_conn_error[0].reason  # the typed error names what went wrong
        assert "database down" not in str(server_conn_error[0])  # the application's text stays out
        assert isinstance(link.client.error, AlertReceived)


def test_failing_keylog_callback_does_not_break_the_handshake() -> None:
    def broken(line: str) -> None:
        raise OSError("disk full")

    link = make_link(client={"keylog": broken}, server={"keylog": broken})
    link.handshake()
    assert link.client.state is ConnectionState.ESTABLISHED
    assert any(isinstance(e, HandshakeComplete) for e in link.server_events)


@pytest.mark.req("HS-4")
def test_endpoint_timer_is_the_earliest_of_many_handshakes() -> None:
    """With many handshakes in progress, the endpoint's timer is always the earliest of its
    associations' (RFC 6347 §4.2.4.1: retransmissions fire on time, then the handshake
    deadline), associations that end leave it, and superseded timers do not pile up."""
    net = Net(server_config())
    served: Counter[Address] = Counter()

    def drop_after_cookie(address: Address) -> bool:
        served[address] += 1  # the HelloVerifyRequest arrives, the server's flight 4 never
        return served[address] > 1

    for n in range(100):
        net.now = n * 0.013
        net.client((f"192.0.2.{n}", 1000 + n))
        net.pump(drop_to=drop_after_cookie)
    assert len(net.server.connections) == 100
    for n in range(0, 100, 3):  # the application ends some, the earliest among them
        net.server.close((f"192.0.2.{n}", 1000 + n))
    assert len(net.server.connections) == 66

    def earliest() -> float | None:
        timers = [t for c in net.server.connections.values() if (t := c.get_timer()) is not None]
        return min(timers, default=None)

    resent = 0
    for _ in range(2000):
        when = net.server.get_timer()
        assert when == earliest()
        if when is None:
            break
        net.now = when
        net.server.handle_timer(net.now)
        resent += len(net.server.datagrams_to_send(net.now))
        assert len(net.server._timer_heap) <= 2 * len(net.server.connections) + 64
    assert net.server.get_timer() is None
    assert net.server.connections == {}  # every other handshake reached its deadline
    assert resent >= 66 * 5  # flight 4 resent at 1, 3, 7, 15, 31 s ... for each


EVICTIONS_AND_WAITS = (
    GateOutcome.HANDSHAKE_EVICTED,
    GateOutcome.OVER_CAP_HANDSHAKE_EVICTED,
    GateOutcome.HOST_HANDSHAKE_EVICTED,
    GateOutcome.HOST_HANDSHAKES_WAIT,
)


def test_a_host_may_exceed_its_cap_while_the_table_has_room() -> None:
    """`max_handshakes_per_host` binds only in a full table: below `max_handshakes`, a host
    (one IP, many ports: a NAT, a load generator) has as many half-open handshakes as it
    starts, none waiting and none evicted."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=3))
    burst = [("203.0.113.7", 9000 + i) for i in range(8)]
    for address in burst:
        net.half_open(address)
    assert set(net.server.connections) == set(burst)
    assert net.server._handshakes_by_host == {"203.0.113.7": dict.fromkeys(burst)}
    assert sum(net.server.gate[o] for o in EVICTIONS_AND_WAITS) == 0


@pytest.mark.req("HS-2")
def test_in_a_full_table_another_host_takes_the_place_of_the_host_over_its_cap() -> None:
    """A table full of one host's handshakes (taken while it had room): another host's
    ClientHellos take the places of that host's oldest until that other host reaches its own
    cap; then each host's next ClientHello waits, and evicts only its own oldest once that one
    has stalled."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=3))
    crowd = [("203.0.113.6", 9000 + i) for i in range(8)]
    for address in crowd:
        net.half_open(address)
    others = [("198.51.100.6", 9000 + i) for i in range(4)]
    for address in others[:3]:
        net.half_open(address)
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 3
    assert set(net.server.connections) == {*others[:3], *crowd[3:]}
    for address in crowd[:3]:
        (closed,) = net.closed_events(address)
        assert isinstance(closed.error, AssociationEvicted)
    # Both hosts at or over their cap, nothing stalled: their next ones wait.
    late = ("203.0.113.6", 9100)
    for address in (others[3], late):
        net.half_open(address)
        assert address not in net.server.connections
    assert net.server.gate[GateOutcome.HOST_HANDSHAKES_WAIT] == 2
    net.now += 2.5  # all stalled: the crowding host's next one evicts its own oldest
    net.half_open(("203.0.113.6", 9101))
    assert net.server.gate[GateOutcome.HOST_HANDSHAKE_EVICTED] == 1
    assert set(net.server.connections) == {*others[:3], *crowd[4:], ("203.0.113.6", 9101)}
    (closed,) = net.closed_events(crowd[3])
    assert isinstance(closed.error, AssociationEvicted)
    assert str(closed.error) == "association evicted: too many handshakes from its host"
    net.half_open(("203.0.113.6", 9102))  # its next oldest, stalled too: each eviction counts
    assert net.server.gate[GateOutcome.HOST_HANDSHAKE_EVICTED] == 2
    assert crowd[4] not in net.server.connections
    assert all(net.closed_events(address) == [] for address in others)
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 0
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 3


@pytest.mark.req("HS-2")
def test_with_no_host_over_its_cap_a_full_table_lets_the_oldest_of_all_go() -> None:
    """Hosts at their cap but none beyond it: a new host's handshake in a full table takes the
    place of the oldest of all, whichever host it is from."""
    net = Net(server_config(max_handshakes=4, max_handshakes_per_host=2))
    first = [("198.51.100.4", 4400), ("198.51.100.5", 4500)]
    rest = [("198.51.100.5", 4501), ("198.51.100.4", 4401)]
    for address in (*first, *rest, ("192.0.2.44", 1)):
        net.half_open(address)
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 1
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 0
    assert set(net.server.connections) == {first[1], *rest, ("192.0.2.44", 1)}


@pytest.mark.req("HS-2")
def test_a_host_back_at_its_cap_is_no_longer_counted_over_it() -> None:
    """A host beyond its cap (taken while the table had room) whose handshake completes is
    back at its cap, not beyond it: in a full table a new host's handshake then takes the
    place of the oldest of all, not of that host's oldest."""
    net = Net(server_config(max_handshakes=4, max_handshakes_per_host=2))
    crowd = [("203.0.113.12", 14000 + i) for i in range(3)]
    for address in crowd:
        net.half_open(address)
    assert net.server._over_cap == {"203.0.113.12"}
    client = net.clients[crowd[2]]
    timer = client.get_timer()
    assert timer is not None
    net.now = timer
    client.handle_timer(net.now)  # its flight 3 again: the server repeats flight 4
    net.pump()
    assert client.state is ConnectionState.ESTABLISHED
    assert net.server._over_cap == set()
    others = [("198.51.100.12", 14000), ("198.51.100.13", 14000), ("192.0.2.12", 14000)]
    for address in others:
        net.half_open(address)  # the table full, then one more
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 1
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 0
    assert set(net.server._handshaking) == {crowd[1], *others}


@pytest.mark.req("HS-2")
def test_one_host_flooding_cookie_exchanges_never_evicts_another_hosts_handshake() -> None:
    """One host (one IP, many ports) completing cookie exchanges fast and never going further
    fills the table while it has room, then can only wait or make room with its own stalled
    oldest (two initial retransmission intervals): the handshakes of other hosts with a long
    round trip, begun before the table filled or after, take the flood's places and are never
    evicted; each completes once its client retransmits."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=3))
    reals = [("198.51.100.8", 8000), ("198.51.100.18", 8000), ("198.51.100.28", 8000)]
    flood = [("203.0.113.8", 10000 + i) for i in range(200)]
    net.half_open(reals[0])  # its flight 4 lost on the way: a long round trip
    for i, address in enumerate(flood):
        net.now = 0.02 * i
        net.half_open(address)
        if i in (20, 150):  # the table full, the flood over its cap; then long after
            net.half_open(reals[1 if i == 20 else 2])
    gate = net.server.gate
    assert gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 2  # each real one's place
    assert gate[GateOutcome.HANDSHAKE_EVICTED] == 0
    assert gate[GateOutcome.HOST_HANDSHAKE_EVICTED] > 0
    assert gate[GateOutcome.HOST_HANDSHAKES_WAIT] > 0
    assert len(net.server._handshaking) == 8
    assert all(net.closed_events(real) == [] for real in reals)
    for real in reals:
        timer = net.clients[real].get_timer()
        assert timer is not None
        net.now = max(net.now, timer)
        net.clients[real].handle_timer(net.now)  # flight 3 again: the server repeats flight 4
        net.pump()
        assert net.clients[real].state is ConnectionState.ESTABLISHED
    assert all(isinstance(e.error, AssociationEvicted) for e in net.closed_events(flood[0]))
    assert net.server._handshakes_by_host.keys() == {"203.0.113.8"}


def test_a_hosts_burst_beyond_the_table_completes_in_turns_none_evicted() -> None:
    """A NAT's devices after a power cut, a load generator: one host starts more handshakes
    than the table holds at once. While its handshakes are under way, the ones beyond wait
    (dropped, retransmitted by their clients) instead of pushing the others out before they
    finish: every handshake completes, none is evicted."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=3))
    burst = [("203.0.113.9", 11000 + i) for i in range(12)]
    for address in burst:
        net.client(address)
    net.pump()  # all twelve at once: eight associations, four ClientHellos dropped to wait
    assert net.server.gate[GateOutcome.HOST_HANDSHAKES_WAIT] == 4
    assert sum(c.state is ConnectionState.ESTABLISHED for c in net.clients.values()) == 8
    net.now += 1.0  # their retransmission timers
    for client in net.clients.values():
        client.handle_timer(net.now)
    net.pump()
    assert all(c.state is ConnectionState.ESTABLISHED for c in net.clients.values())
    assert net.server.gate[GateOutcome.HOST_HANDSHAKE_EVICTED] == 0
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 0


def test_a_cookie_accepted_is_counted_once_its_association_is_made() -> None:
    """A ClientHello with a valid cookie left to wait was counted `cookie_accepted` as well
    as `host_handshakes_wait`, so `cookie_accepted` (16 here) exceeded the associations made
    (12), which README says completed + failed + unfinished add up to. A wait is now counted
    only as a wait, and the copy taken later as accepted."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=3))
    burst = [("203.0.113.10", 12000 + i) for i in range(12)]
    for address in burst:
        net.client(address)
    net.pump()
    gate = net.server.gate
    assert (gate[GateOutcome.COOKIE_ACCEPTED], gate[GateOutcome.HOST_HANDSHAKES_WAIT]) == (8, 4)
    net.now += 1.0
    for client in net.clients.values():
        client.handle_timer(net.now)
    net.pump()
    completed = sum(c.state is ConnectionState.ESTABLISHED for c in net.clients.values())
    assert gate[GateOutcome.COOKIE_ACCEPTED] == completed == 12


def test_without_cookie_exchange_waits_are_counted_per_client_hello_and_per_fragment() -> None:
    """With cookie exchange off, a ClientHello without a cookie that waits is counted
    `host_handshakes_wait`, and a ClientHello in fragments (RFC 6347 §4.2.3) once per fragment
    (each may start the association); README described only "a ClientHello with a valid cookie
    dropped to wait": it says both."""
    net = Net(server_config(cookie_exchange=False, max_handshakes=2, max_handshakes_per_host=1))

    def hello(port: int, **config: Any) -> int:
        address = ("203.0.113.11", port)
        datagrams = net.client(address, **config).datagrams_to_send(net.now)
        for data in datagrams:
            net.server.receive_datagram(data, address, net.now)
        return len(datagrams)

    hello(13000)
    hello(13001)  # the table full of the host's handshakes, none stalled
    assert hello(13002) == 1
    assert hello(13003, mtu=200, server_name=".".join(["a" * 60] * 4)) == 2
    gate = net.server.gate
    assert (gate[GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE], gate[GateOutcome.HOST_HANDSHAKES_WAIT],
            gate[GateOutcome.FRAGMENTED_CLIENT_HELLO]) == (2, 3, 2)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    bullet = " ".join(readme.partition("`host_handshakes_wait` (")[2].partition("),")[0].split())
    assert "with cookie exchange off, a ClientHello without a cookie too, and each fragment" in (
        bullet
    )


@pytest.mark.parametrize(
    ("address", "host"),
    [
        (("192.0.2.1", 5684), "192.0.2.1"),
        (("::ffff:192.0.2.1", 5684, 0, 0), "192.0.2.1"),  # IPv4-mapped: its IPv4 address
        (("2001:db8:1:2:aaaa::1", 5684, 0, 0), ipaddress.IPv6Network("2001:db8:1:2::/64")),
        (("2001:db8:1:2:ffff::9", 1, 0, 0), ipaddress.IPv6Network("2001:db8:1:2::/64")),
        # A link-local address: its /64 and its zone, each link its own (RFC 4007 §5).
        (("fe80::1%eth0", 5684, 0, 2), (ipaddress.IPv6Network("fe80::/64"), 2)),
        (("fe80::1", 5684, 0, 4), (ipaddress.IPv6Network("fe80::/64"), 4)),
        (("fe80::2", 5684, 0, 5), (ipaddress.IPv6Network("fe80::/64"), 5)),
        (("fe80::1%eth1", 5684), (ipaddress.IPv6Network("fe80::/64"), "eth1")),
        (("64:ff9b::c000:201", 1, 0, 0), ipaddress.IPv6Network("64:ff9b::/64")),  # NAT64
        (("client-a", 1), "client-a"),  # a test's or an adapter's own address: its first element
        (("not:an:address", 1), "not:an:address"),
        ((b"\x01\x02", 7), b"\x01\x02"),
        ("peer", "peer"),
        ((), ()),
        (7, 7),
    ],
)
def test_host_of_groups_an_ipv6_64_and_v4_mapped_addresses(address: Any, host: Any) -> None:
    assert host_of(address) == host


def test_link_local_peers_on_two_links_are_two_hosts() -> None:
    """fe80::1 on interface 4 and fe80::1 on interface 5 are on two links (RFC 4007 §5):
    they counted as one host, so one link's burst made the other link's peers wait; each
    link's peers now count apart, and those of one link together."""
    net = Net(server_config(max_handshakes=4, max_handshakes_per_host=2))
    for i in range(4):
        net.half_open((f"fe80::{i + 1:x}", 4000 + i, 0, 4))
    net.half_open(("fe80::1", 5000, 0, 5))  # another link: under its cap, not left to wait
    assert net.server.gate[GateOutcome.HOST_HANDSHAKES_WAIT] == 0
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 1
    net.half_open(("fe80::99", 5001, 0, 4))  # the crowded link: waits
    assert net.server.gate[GateOutcome.HOST_HANDSHAKES_WAIT] == 1


@pytest.mark.req("HS-2")
def test_an_ipv6_64_is_one_host_and_v4_mapped_counts_as_ipv4() -> None:
    """Ports and interface identifiers of one /64 are one host; another /64 is another; an
    IPv4-mapped address counts as its IPv4 address: so the caps count in a full table."""
    net = Net(server_config(max_handshakes=8, max_handshakes_per_host=2))
    one_subnet = [(f"2001:db8:0:1::{i:x}", 6000 + i, 0, 0) for i in range(1, 5)]
    other = ("2001:db8:0:2::1", 6000, 0, 0)
    mapped = [("::ffff:192.0.2.9", 7000, 0, 0), ("192.0.2.9", 7001), ("192.0.2.9", 7002)]
    for address in (other, *one_subnet, *mapped):
        net.half_open(address)
        net.now += 2.5  # each stalled before the next
    subnet = ipaddress.IPv6Network("2001:db8:0:1::/64")
    assert net.server._handshakes_by_host == {
        ipaddress.IPv6Network("2001:db8:0:2::/64"): {other: None},
        subnet: dict.fromkeys(one_subnet),
        "192.0.2.9": dict.fromkeys(mapped),
    }
    assert net.server._over_cap == {subnet, "192.0.2.9"}
    # The table full: one more of the /64 evicts its own oldest ...
    net.half_open(("2001:db8:0:1:ffff::1", 6099, 0, 0))
    assert net.server.gate[GateOutcome.HOST_HANDSHAKE_EVICTED] == 1
    assert one_subnet[0] not in net.server.connections
    # ... a new IPv4 host (mapped) takes the place of the oldest of the host with the most.
    net.half_open(("::ffff:192.0.2.10", 7000, 0, 0))
    assert net.server.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] == 1
    assert one_subnet[1] not in net.server.connections
    assert net.server._over_cap == {subnet, "192.0.2.9"}  # 3 each, beyond 2
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 0


# -- the alerts of failed handshakes (RFC 6347 §4.2.7) --------------------------------------------


def fail_with_lost_alert(net: Net, address: Address) -> bytes:
    """A client at `address` with a wrong key: the server ends the handshake with
    decrypt_error (PSK-4), which is lost. Returns the client's flight 5, which the client
    repeats while it waits."""
    client = net.client(address, psk=bytes(16))
    sent: list[bytes] = []
    for _ in range(10):
        for data in client.datagrams_to_send(net.now):
            sent.append(data)
            net.server.receive_datagram(data, address, net.now)
        for data, to in net.server.datagrams_to_send(net.now):
            alert = plain_alert(data)
            if alert is not None:
                assert to == address and alert.description is AlertDescription.decrypt_error
                return sent[-1]
            client.receive_datagram(data, net.now)
    raise AssertionError("the handshake did not fail")


def alert_again(net: Net, address: Address, data: bytes) -> bool:
    """`data` from `address` made the server send a decrypt_error alert (and nothing else)."""
    net.server.receive_datagram(data, address, net.now)
    out = net.server.datagrams_to_send(net.now)
    assert all(to == address for _, to in out) and len(out) <= 1
    if not out:
        return False
    alert = plain_alert(out[0][0])
    assert alert is not None and alert.description is AlertDescription.decrypt_error
    return True


@pytest.mark.req("HS-2")
def test_failed_handshakes_remembered_are_capped_the_oldest_forgotten_first() -> None:
    """The endpoint keeps the alerts of at most `max_handshakes` failed handshakes: a flood of
    failures (each needed a valid cookie) cannot grow it, and the oldest goes first."""
    net = Net(server_config(max_handshakes=2))
    addresses = [("198.51.100.30", 5000 + i) for i in range(3)]
    flights = [fail_with_lost_alert(net, address) for address in addresses]
    assert net.server.connections == {}
    assert len(net.server._failed) == 2
    net.now += 1.0
    assert [alert_again(net, a, f) for a, f in zip(addresses, flights, strict=True)] == [
        False,
        True,
        True,
    ]
    assert net.server.gate[GateOutcome.ALERT_REPEATED] == 2
    assert net.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 1


@pytest.mark.req("HS-2")
def test_a_failed_handshakes_alert_is_repeated_until_the_handshake_timeout_only() -> None:
    net = Net(server_config(handshake_timeout=10.0))
    first, second = ("198.51.100.31", 5100), ("198.51.100.31", 5101)
    flight_1 = fail_with_lost_alert(net, first)
    flight_2 = fail_with_lost_alert(net, second)
    net.now = 9.9
    assert alert_again(net, first, flight_1)
    net.now = 10.0
    assert not alert_again(net, second, flight_2)
    assert net.server._failed == {}  # expired entries are forgotten, not only ignored
    assert net.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 1


@pytest.mark.req("HS-2")
def test_a_failed_handshakes_alert_goes_out_at_most_three_times_spaced_and_never_larger() -> None:
    net = Net(server_config())
    address = ("198.51.100.32", 5200)
    flight = fail_with_lost_alert(net, address)
    # The rest of the failing flight, right behind it: no alert within 0.25 s of the failure.
    assert not alert_again(net, address, flight)
    net.now = 1.0
    ccs = RecordHeader(ContentType.change_cipher_spec, DTLS_1_2, 0, 90, 1).encode() + b"\1"
    assert not alert_again(net, address, ccs)  # 14 bytes, the alert 15: never an amplifier
    header, fragment = split_first(flight)
    data = header._replace(content_type=ContentType.application_data).encode() + fragment
    assert not alert_again(net, address, data)  # not the peer's flight
    data = header._replace(content_type=ContentType.application_data, epoch=1).encode() + fragment
    assert not alert_again(net, address, data)  # epoch 1's data: an evicted resumption's only
    for version in (0xFEFC, 0x0303):  # DTLS 1.3's, TLS 1.2's: not a DTLS 1.0/1.2 record
        other = header._replace(version=version).encode() + fragment
        assert not alert_again(net, address, other)
    assert alert_again(net, address, flight)
    assert not alert_again(net, address, flight)  # a burst: one alert
    net.now = 1.25
    assert alert_again(net, address, flight)
    net.now = 2.0
    assert alert_again(net, address, flight)
    net.now = 3.0
    assert not alert_again(net, address, flight)  # three repeats at most
    assert net.server.gate[GateOutcome.ALERT_REPEATED] == 3
    assert net.server._failed == {}


@pytest.mark.req("HS-2")
def test_an_association_that_ends_otherwise_keeps_another_addresss_failure() -> None:
    """An association that ends without an alert to repeat (closed here) forgets only a
    failure of its own address, if any: another address's is still answered."""
    net = Net(server_config())
    failed, other = ("198.51.100.34", 5400), ("198.51.100.34", 5401)
    flight = fail_with_lost_alert(net, failed)
    net.established(other)
    net.server.close(other)
    net.pump()
    assert net.server.connections == {}
    net.now = 1.0
    assert alert_again(net, failed, flight)


def split_first(datagram: bytes) -> tuple[RecordHeader, bytes]:
    header = RecordHeader.decode(datagram)
    return header, datagram[13 : 13 + header.length]


@pytest.mark.req("HS-2")
def test_a_new_client_hello_from_a_failed_address_takes_the_cookie_gate() -> None:
    """A failed address gets its alert again, nothing more: a ClientHello from it is answered
    by a HelloVerifyRequest as any other, and once an association of that address has come
    and gone the old failure is forgotten."""
    net = Net(server_config())
    address = ("198.51.100.33", 5300)
    flight = fail_with_lost_alert(net, address)
    net.now = 1.0
    net.established(address)
    assert net.server.gate[GateOutcome.HELLO_VERIFY_SENT] == 2
    assert net.server.gate[GateOutcome.COOKIE_ACCEPTED] == 2
    net.server.close(address)
    net.pump()
    assert net.server.connections == {}
    assert not alert_again(net, address, flight)
    assert net.server._failed == {}


@pytest.mark.req("HS-2")
def test_a_late_copy_of_a_failed_flight_does_not_end_the_next_handshake_from_its_address() -> (
    None
):
    """A client failed (wrong key), and the same address starts again (a device restarted on
    its port, a retry on the same socket). A late copy of the failed flight, arriving after the
    new ClientHello, got the old alert (probe BC), which the new client took as its own fatal
    alert. A ClientHello from the address forgets the old failure: the copy is dropped."""
    net = Net(server_config())
    address = ("198.51.100.34", 5400)
    flight = fail_with_lost_alert(net, address)
    net.now = 1.0
    client = net.client(address)
    for data in client.datagrams_to_send(net.now):
        net.server.receive_datagram(data, address, net.now)
    for data, _ in net.server.datagrams_to_send(net.now):  # the HelloVerifyRequest
        client.receive_datagram(data, net.now)
    assert not alert_again(net, address, flight)
    assert net.server._failed == {}
    net.pump()
    assert client.state is ConnectionState.ESTABLISHED


@pytest.mark.req("HS-2")
def test_without_cookie_exchange_a_new_hello_from_a_failed_address_forgets_its_failure() -> None:
    """With cookie exchange off, a failed address's new ClientHello starts an association at
    once, with no HelloVerifyRequest to forget the failure at: the association forgets it
    (`_associate`). Kept, it took a place among the `max_handshakes` failures remembered, and
    a later failure pushed out another address's, whose client got no alert again (M13)."""
    net = Net(server_config(cookie_exchange=False, max_handshakes=2))
    other, restarted, third = [("198.51.100.36", 5600 + i) for i in range(3)]
    other_flight = fail_with_lost_alert(net, other)
    fail_with_lost_alert(net, restarted)
    del net.clients[other]
    net.established(restarted)
    assert net.server.gate[GateOutcome.HELLO_VERIFY_SENT] == 0
    assert list(net.server._failed) == [other]
    fail_with_lost_alert(net, third)
    assert list(net.server._failed) == [other, third]
    net.now = 1.0
    assert alert_again(net, other, other_flight)


@pytest.mark.req("HS-2")
def test_a_client_hello_the_gate_drops_leaves_a_failed_handshakes_alert_owed() -> None:
    """Only a ClientHello the gate takes (answered with a HelloVerifyRequest, or starting an
    association) forgets its address's failed handshake: a part of one, or a hello header
    with junk behind it, from a spoofer at that address, left the failed client without its
    alert again (probe BE)."""
    net = Net(server_config())
    address = ("198.51.100.35", 5500)
    flight = fail_with_lost_alert(net, address)
    net.now = 1.0
    part = forged_hello(net, fragment=True)
    whole = forged_hello(net, fragment=False)
    junk = whole[:25] + b"\xff" * (len(whole) - 25)  # a whole hello's header, then no hello
    for dropped in (part, junk):
        net.server.receive_datagram(dropped, address, net.now)
        assert net.server.datagrams_to_send(net.now) == []
    assert net.server.gate[GateOutcome.FRAGMENTED_CLIENT_HELLO] == 1
    assert net.server.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 1
    assert alert_again(net, address, flight)


def two_round_trips(net: Net, client: DtlsConnection, address: Address) -> None:
    """`client`, at `address`, and the server answer each other twice, nothing lost: the
    cookie exchange, then the ClientHello with its cookie and the server's flight."""
    for _ in range(2):
        for data in client.datagrams_to_send(net.now):
            net.server.receive_datagram(data, address, net.now)
        for data, to in net.server.datagrams_to_send(net.now):
            assert to == address
            client.receive_datagram(data, net.now)


def stalled_after_flight_5(net: Net, address: Address) -> DtlsConnection:
    """A client at `address` (kept out of `net.clients`, so `pump` leaves it alone) whose
    flight 5 (ClientKeyExchange, ChangeCipherSpec, Finished) is lost: it waits for the
    server's Finished, half-open at the server."""
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(net.now)
    two_round_trips(net, client, address)  # ClientHello, HelloVerifyRequest; again, flight 4
    assert client.datagrams_to_send(net.now)  # flight 5, lost
    assert address in net.server._handshaking
    return client


def retransmit_into_the_server(net: Net, address: Address, client: DtlsConnection) -> None:
    """`client`'s retransmission timer fires and its flight reaches the server; what the
    server answers reaches the client."""
    timer = client.get_timer()
    assert timer is not None
    net.now = max(net.now, timer)
    client.handle_timer(net.now)
    for data in client.datagrams_to_send(net.now):
        net.server.receive_datagram(data, address, net.now)
    for data, to in net.server.datagrams_to_send(net.now):
        assert to == address
        header = RecordHeader.decode(data)
        alert = plain_alert(data)
        assert header.epoch == 0 and alert is not None  # in the clear, RFC 5246 §7.2.2
        assert alert.description is AlertDescription.internal_error
        client.receive_datagram(data, net.now)


def evict_by_oldest_of_all(net: Net) -> None:
    net.half_open(("192.0.2.50", 1))


def evict_by_over_cap(net: Net) -> None:
    net.half_open(("192.0.2.51", 1))


def evict_by_own_host(net: Net) -> None:
    net.now += 2.5  # the evicted one has stalled
    net.half_open(("198.51.100.40", 9))


@pytest.mark.req("HS-2")
@pytest.mark.parametrize(
    ("settings", "crowd", "evict", "outcome"),
    [
        ({"max_handshakes": 1}, 0, evict_by_oldest_of_all, GateOutcome.HANDSHAKE_EVICTED),
        (
            {"max_handshakes": 2, "max_handshakes_per_host": 1},
            1,
            evict_by_over_cap,
            GateOutcome.OVER_CAP_HANDSHAKE_EVICTED,
        ),
        (
            {"max_handshakes": 1, "max_handshakes_per_host": 1},
            0,
            evict_by_own_host,
            GateOutcome.HOST_HANDSHAKE_EVICTED,
        ),
    ],
    ids=["oldest-of-all", "over-cap", "own-host"],
)
def test_an_evicted_handshakes_client_is_told_with_internal_error_at_its_next_flight(
    settings: dict[str, Any], crowd: int, evict: Callable[[Net], None], outcome: GateOutcome
) -> None:
    """A half-open handshake evicted to make room (any of the three ways) leaves its client
    repeating its flight into nothing; the server answers that flight with a fatal
    internal_error alert in epoch 0 (RFC 5246 §7.2.2: the server's own limit), so the client
    fails at once, instead of at its handshake timeout (probe BY: 60 s under a flood)."""
    net = Net(server_config(**settings))
    address = ("198.51.100.40", 8)
    client = stalled_after_flight_5(net, address)
    for port in range(crowd):  # the same host, beyond its cap while the table had room
        net.half_open(("198.51.100.40", 100 + port))
    evict(net)
    assert net.server.gate[outcome] == 1
    assert address not in net.server.connections
    retransmit_into_the_server(net, address, client)
    assert client.state is ConnectionState.CLOSED
    assert isinstance(client.error, AlertReceived)
    assert client.error.alert is AlertDescription.internal_error
    assert net.server.gate[GateOutcome.EVICTION_ALERT_SENT] == 1
    assert net.server.gate[GateOutcome.ALERT_REPEATED] == 0


@pytest.mark.req("HS-2")
def test_an_evicted_handshakes_address_starts_afresh_with_a_clienthello() -> None:
    """What an eviction leaves answers only the evicted client's later flights: a ClientHello
    from that address (a new one, or a copy of the evicted one with its cookie) goes through
    the gate as any other, and a new handshake there completes."""
    net = Net(server_config(max_handshakes=1))
    address = ("198.51.100.41", 8)
    net.half_open(address)  # retransmits its ClientHello with cookie at its timer
    evict_by_oldest_of_all(net)
    assert address in net.server._failed
    net.now += 1.0
    net.clients[address].handle_timer(net.now)
    net.pump()  # the copy of the hello with its (still valid) cookie takes the gate again
    assert net.server.gate[GateOutcome.EVICTION_ALERT_SENT] == 0
    assert net.clients[address].state is ConnectionState.ESTABLISHED
    assert net.server.gate[GateOutcome.COOKIE_ACCEPTED] == 3
    assert address not in net.server._failed


@pytest.mark.req("HS-2")
def test_evictions_remembered_are_bounded_as_failures_are() -> None:
    """A flood of half-open handshakes that evict each other grows nothing: at most
    `max_handshakes` evictions are remembered (the oldest forgotten first), each for the
    handshake timeout, no key and no association kept."""
    net = Net(server_config(max_handshakes=2, handshake_timeout=10.0))
    flood = [("203.0.113.40", 7000 + i) for i in range(20)]
    for address in flood:
        net.half_open(address)
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 18
    assert list(net.server._failed) == flood[16:18]
    assert len(net.server.connections) == 2
    net.now = 10.0
    net.server.receive_datagram(b"\x16" + bytes(40), flood[16], net.now)
    assert net.server._failed == {}


def resumed_with_last_flight_lost(net: Net, address: Address) -> DtlsConnection:
    """A client at `address` (kept out of `net.clients`) that resumes its session in an
    abbreviated handshake (RFC 5246 §7.3): the server's ServerHello, ChangeCipherSpec and
    Finished reach it, its own ChangeCipherSpec and Finished are lost. It is established;
    the server's association is half-open, its write epoch 1."""
    net.established(address)
    session = net.clients[address].session
    assert session is not None
    net.clients.pop(address).close()  # its close_notify never sent: the server keeps it
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY), session=session)
    client.connect(net.now)
    two_round_trips(net, client, address)  # ClientHello, HelloVerifyRequest; again, flight 2
    assert client.datagrams_to_send(net.now)  # ChangeCipherSpec and Finished, lost
    assert client.state is ConnectionState.ESTABLISHED
    assert address in net.server._handshaking
    return client


def data_datagrams(client: DtlsConnection, count: int, now: float) -> list[bytes]:
    """`count` datagrams of application data from `client`, each of one record of epoch 1."""
    datagrams = []
    for i in range(count):
        client.send(b"reading %d" % i)
        datagrams += client.datagrams_to_send(now)
    assert len(datagrams) == count
    assert {RecordHeader.decode(d)[:3] for d in datagrams} == {(23, DTLS_1_2, 1)}
    return datagrams


@pytest.mark.req("HS-2")
def test_an_evicted_resumed_handshakes_established_client_is_told_at_its_application_data() -> (
    None
):
    """A resumed handshake's client sends the last flight and is established: when that
    flight is lost and the server evicts the half-open association, the client's next
    datagrams are application data of epoch 1, not a repeated flight (probe CB). The
    eviction's internal_error, sealed in epoch 1 with the session's keys (RFC 5246 §7.2.2),
    answers them too, so the client, which authenticates it, ends its association instead
    of talking into nothing; within the bounds of a failure's alerts: as many as the entry
    has, spaced, never larger than the datagram."""
    net = Net(server_config(max_handshakes=1))
    address = ("198.51.100.42", 8)
    client = resumed_with_last_flight_lost(net, address)
    evict_by_oldest_of_all(net)
    assert net.server.gate[GateOutcome.HANDSHAKE_EVICTED] == 1
    copies = data_datagrams(client, 5, net.now)  # the first reaches the client's peer
    net.server.receive_datagram(copies[0], address, net.now)
    answers = net.server.datagrams_to_send(net.now)
    assert [to for _, to in answers] == [address]
    alert = answers[0][0]
    assert RecordHeader.decode(alert)[:3] == (ContentType.alert, DTLS_1_2, 1)
    assert len(alert) <= len(copies[0])
    client.receive_datagram(alert, net.now)
    assert client.state is ConnectionState.CLOSED
    assert isinstance(client.error, AlertReceived)
    assert client.error.alert is AlertDescription.internal_error
    net.server.receive_datagram(copies[1], address, net.now)  # too soon after the last
    assert net.server.datagrams_to_send(net.now) == []
    alerts = 1
    for data in copies[2:]:
        net.now += 1.0
        net.server.receive_datagram(data, address, net.now)
        alerts += len(net.server.datagrams_to_send(net.now))
    assert alerts == net.server.gate[GateOutcome.EVICTION_ALERT_SENT] == 3  # ALERT_REPEATS
    assert address not in net.server._failed


@pytest.mark.req("HS-2")
def test_an_evicted_full_handshake_leaves_application_data_unanswered() -> None:
    """A full handshake's eviction (its alerts in epoch 0, in the clear) answers only a
    repeated flight: its client is not established, and a record of application data from
    its address is a stranger's, dropped as before."""
    net = Net(server_config(max_handshakes=1))
    address = ("198.51.100.43", 8)
    stalled_after_flight_5(net, address)
    evict_by_oldest_of_all(net)
    data = RecordHeader(ContentType.application_data, DTLS_1_2, 1, 0, 40).encode() + bytes(40)
    net.server.receive_datagram(data, address, net.now)
    assert net.server.datagrams_to_send(net.now) == []
    assert net.server.gate[GateOutcome.EVICTION_ALERT_SENT] == 0
    assert address in net.server._failed
