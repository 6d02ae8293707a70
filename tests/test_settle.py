"""After the handshake: the sender of the last flight keeps it for a peer that may not have it
(RFC 6347 §4.2.4: answer a repeat of the peer's last flight for twice TCP's MSL), then both
sides let go of every handshake-only state (memory per idle association, issue 9)."""

from __future__ import annotations

import pytest

from iotdtls.connection import FINAL_FLIGHT_HOLD, ConnectionState, DtlsConnection
from iotdtls.errors import LocalProtocolError
from iotdtls.events import DataReceived
from tests.memory_link import (
    CLIENT_ADDR,
    Direction,
    Fate,
    MemoryLink,
    established,
    events_of,
    make_link,
    next_link,
    record_layer,
    wire_from,
)

NO_IDLE = {"idle_timeout": None}


def server_conn(link: MemoryLink) -> DtlsConnection:
    conn = link.server_conn
    assert conn is not None
    return conn


def holds_final_flight(conn: DtlsConnection) -> bool:
    return conn._flight is not None and conn._hold_until is not None


def settled(conn: DtlsConnection) -> bool:
    """No flight, no retransmission timer, no buffered fragment, no epoch-0 write state."""
    try:
        record_layer(conn).overhead(0)
    except LocalProtocolError:
        epoch0_gone = True
    else:
        epoch0_gone = False
    return (
        conn._flight is None
        and conn._hold_until is None
        and conn._timer is None
        and conn._reassembler.buffered_bytes == 0
        and conn._reassembler._partials is None
        and epoch0_gone
    )


def lost_final_flight_link() -> tuple[MemoryLink, list[bytes]]:
    """The server completes at t=0 but its final flight never arrives; the client's two
    retransmissions of its last flight (t=1 and t=3) are kept back for the test to deliver."""

    def fate(direction: Direction, index: int, data: bytes) -> Fate:
        if direction == "server" and index >= 3:
            return "drop"
        return "drop" if direction == "client" and index >= 4 else "deliver"

    link = make_link(fate, server=NO_IDLE)
    link.handshake(until=4.0)
    repeats = wire_from(link, "client")[3:5]
    assert len(repeats) == 2
    return link, repeats


def answers(link: MemoryLink, datagram: bytes) -> int:
    """Deliver a client datagram; how many datagrams the server sent in answer."""
    link.server.datagrams_to_send(link.now)  # nothing else pending
    link.server.receive_datagram(datagram, CLIENT_ADDR, link.now)
    return len(link.server.datagrams_to_send(link.now))


@pytest.mark.req("HS-4")
def test_full_handshake_server_holds_its_final_flight_client_settles() -> None:
    link = make_link(server=NO_IDLE)
    link.handshake()
    server = server_conn(link)
    assert established(link)
    assert holds_final_flight(server)
    assert link.server.get_timer() == link.now + FINAL_FLIGHT_HOLD
    assert settled(link.client)  # the server sends the last flight of a full handshake
    assert link.client.get_timer() is None


@pytest.mark.req("HS-4")
def test_the_peers_first_record_under_the_new_keys_ends_the_hold() -> None:
    link = make_link(server=NO_IDLE)
    link.handshake()
    link.client.send(b"reading 1")
    link.step()
    server = server_conn(link)
    assert events_of(link, "server", DataReceived) == [DataReceived(b"reading 1")]
    assert settled(server)
    assert link.server.get_timer() is None
    assert server.state is ConnectionState.ESTABLISHED
    link.server.send(CLIENT_ADDR, b"still here")
    link.step()
    assert events_of(link, "client", DataReceived) == [DataReceived(b"still here")]


@pytest.mark.req("HS-4")
def test_a_repeat_of_the_peers_finished_does_not_end_the_hold() -> None:
    """The client's last flight comes again (our final flight was lost): its Finished is
    authenticated under the new keys, but it says the client lacks our flight, so the flight
    goes out again, as often as the client asks."""
    link, repeats = lost_final_flight_link()
    server = server_conn(link)
    assert server.state is ConnectionState.ESTABLISHED
    for n, repeat in enumerate(repeats, start=1):
        link.now = 1.0 + n
        assert answers(link, repeat) == 1
        assert holds_final_flight(server)
        assert server.retransmissions == n


@pytest.mark.req("HS-4")
def test_the_hold_ends_after_twice_the_msl() -> None:
    link, repeats = lost_final_flight_link()
    server = server_conn(link)
    end = FINAL_FLIGHT_HOLD  # the server completed at t=0
    assert link.server.get_timer() == end
    link.now = end - 1.0
    link.server.handle_timer(link.now)
    assert holds_final_flight(server)
    assert answers(link, repeats[0]) == 1  # still answered just before the end
    link.now = end
    link.server.handle_timer(link.now)
    assert settled(server)
    assert link.server.get_timer() is None
    link.now = end + 1.0
    assert answers(link, repeats[1]) == 0  # after it: nothing to answer with
    assert server.state is ConnectionState.ESTABLISHED
    assert server.retransmissions == 1


@pytest.mark.req("HS-4", "RES-1")
def test_resumption_client_holds_server_settles() -> None:
    """In an abbreviated handshake the client sends the last flight: the roles swap."""
    first = make_link(server=NO_IDLE)
    first.handshake()
    link = next_link(first)
    link.handshake()
    assert established(link) and link.client.resumed
    assert settled(server_conn(link))
    assert holds_final_flight(link.client)
    assert link.client.get_timer() == link.now + FINAL_FLIGHT_HOLD
    link.server.send(link.address, b"resumed")
    link.step()
    assert settled(link.client)
    assert link.client.get_timer() is None


def test_a_closed_association_keeps_no_handshake_state() -> None:
    link = make_link(server=NO_IDLE)
    link.handshake()
    server = server_conn(link)
    link.client.close()
    link.step()
    assert server.state is ConnectionState.CLOSED
    assert server._flight is None and server._timer is None and server._hold_until is None
