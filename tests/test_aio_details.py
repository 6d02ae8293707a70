"""`iotdtls.aio` in detail: heartbeats that go unanswered or come too late, what the server's
handshake log line says, how `DtlsServer.close` ends its peers and handlers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import functools
import gc
import logging
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from iotdtls import aio, sync, trace
from iotdtls._addresses import format_address
from iotdtls._arguments import attach_socket, check_port, check_sock, check_type
from iotdtls._unreachable import RefusedHandshake
from iotdtls.certurl import default_fetcher
from iotdtls.chaincache import ChainCache
from iotdtls.config import ClientConfig, RetransmitPolicy, RetryPolicy, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    AssociationEnded,
    ConfigError,
    DtlsError,
    HandshakeTimeout,
    IdleTimeout,
    LocalProtocolError,
    PathMtuExceeded,
    PeerUnresponsive,
    PortUnreachable,
    SequenceNumbersExhausted,
)
from iotdtls.identity import CertificateIdentity, PskIdentity
from iotdtls.loop import run as run_on_loop
from iotdtls.proxy import LossyProxy
from iotdtls.record import MAX_SEQUENCE_NUMBER
from iotdtls.sessions import MemorySessionStore
from tests import pki
from tests.aio_support import (
    EMPTY_HOST,
    FAMILY_MISMATCHES,
    NEEDS_INTERFACE,
    NOT_BYTES,
    NOT_CONTIGUOUS,
    RELEASED,
    UNRESOLVED,
    VIEWS,
    WRONG_CLIENT_ARGUMENTS,
    WRONG_HANDLERS,
    WRONG_SOCKETS,
    EchoHandler,
    client_config,
    echo,
    eventually,
    run,
    server_config,
    udp_sockets_made,
    wrong_socket,
)
from tests.interop_support import SameAddressClient
from tests.local_http import LocalHttpServer, Route
from tests.memory_link import record_layer
from tests.peers import (
    CLIENT_EUI64,
    LOCALHOST,
    TakesAnyAddress,
    V6OnlyByDefault,
    answers_once_then_goes,
    free_udp_port,
    v6only,
)
from tests.pubkey_support import x509_configs, x509_pki

#: Every server datagram after the handshake's three (the HelloVerifyRequest and two flights).
AFTER_THE_HANDSHAKE = {("server", index) for index in range(4, 60)}


@pytest.mark.req("EXT-5")
def test_an_unanswered_heartbeat_gives_false_after_its_timeout() -> None:
    async def main() -> None:
        config = server_config(heartbeat=True)
        async with await aio.serve(echo, LOCALHOST, 0, config) as server:
            with LossyProxy(server.address, seed=1, drop=AFTER_THE_HANDSHAKE, lifetime=20) as p:
                async with aio.connect(*p.address, client_config(heartbeat=True)) as client:
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    assert await client.heartbeat(0.3) is False
                    assert 0.3 <= loop.time() - started < 2.0
                    assert client.connection.heartbeat_in_flight

    run(main())


@pytest.mark.parametrize("timeout", [10**400, Fraction(5, 2)], ids=["int-beyond-float", "fraction"])
def test_a_heartbeat_timeout_may_be_any_real_number(timeout: Any) -> None:
    """An int beyond any float raised a bare "OverflowError: int too large to convert to
    float", a Fraction "timeout must be a number of seconds" (probe AV): any `numbers.Real`
    but a bool is a timeout, as what `wall_clock` answers."""

    async def main() -> None:
        config = server_config(heartbeat=True)
        async with (
            await aio.serve(echo, LOCALHOST, 0, config) as server,
            aio.connect(*server.address, client_config(heartbeat=True)) as client,
        ):
            assert await asyncio.wait_for(client.heartbeat(timeout), 5.0) is True

    run(main())


@pytest.mark.parametrize(("timeout", "refused"), [
    (float("nan"), ValueError), (-1.0, ValueError), ("1", TypeError), (None, TypeError)])
def test_a_heartbeat_timeout_that_is_no_number_of_seconds_is_refused_before_sending(
    timeout: Any, refused: type[Exception]
) -> None:
    """As the blocking API's: a NaN or negative timeout (or no number) is refused in one line,
    before any request is sent, on both sides."""
    refusals: list[str] = []

    async def beat(session: aio.ServerSession) -> None:
        with pytest.raises(refused, match=r"^timeout must ") as caught:
            await session.heartbeat(timeout)
        refusals.append(str(caught.value))

    async def main() -> None:
        config = server_config(heartbeat=True)
        async with (
            await aio.serve(beat, LOCALHOST, 0, config) as server,
            aio.connect(*server.address, client_config(heartbeat=True)) as client,
        ):
            with pytest.raises(refused, match=r"^timeout must "):
                await client.heartbeat(timeout)
            assert not client.connection.heartbeat_in_flight
            assert await eventually(lambda: refusals, 2)

    run(main())


@pytest.mark.req("EXT-5")
def test_a_heartbeat_after_a_clean_close_is_refused() -> None:
    async def main() -> None:
        config = server_config(heartbeat=True)
        async with await aio.serve(echo, LOCALHOST, 0, config) as server:
            client = await aio.connect(*server.address, client_config(heartbeat=True))
            await client.close()
            with pytest.raises(LocalProtocolError, match="the association has ended"):
                await client.heartbeat(1.0)

    run(main())


def test_send_after_the_server_closed_says_so_and_is_a_dtls_error() -> None:
    """It said "cannot send application data in state CLOSED", a `LocalProtocolError` only: a
    client catching `DtlsError` to connect again missed it (as with sync)."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with aio.connect(*server.address, client_config()) as client:
            await server.close()
            assert await asyncio.wait_for(client.recv(), 5.0) is None
            with pytest.raises(DtlsError) as late:
                client.send(b"reading")
            assert isinstance(late.value, AssociationEnded)
            assert str(late.value) == (
                "cannot send application data: the peer closed the association (close_notify)"
            )

    run(main())


def test_close_ends_every_peer_cleanly_and_waits_for_the_handlers() -> None:
    """close() sends each peer close_notify (its recv gives None at once) and returns only once
    every handler has run to its end, even one that takes a while to clean up."""
    cleaned_up: list[str] = []

    async def slow_to_clean_up(session: aio.ServerSession) -> None:
        try:
            async for datagram in session:
                session.send(datagram)
        finally:
            await asyncio.sleep(0.1)
            cleaned_up.append("done")

    async def main() -> None:
        server = await aio.serve(slow_to_clean_up, LOCALHOST, 0, server_config())
        clients = [await aio.connect(*server.address, client_config()) for _ in range(2)]
        for client in clients:
            client.send(b"ping")
            assert await client.recv() == b"ping"
        await server.close()
        assert cleaned_up == ["done", "done"]
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 2.0) is None
            await client.close()

    run(main())


def test_the_handshake_log_line_names_server_name_resumption_and_fragment_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            config = client_config(server_name="iot.example", max_fragment_length=1024)
            async with aio.connect(*server.address, config) as first:
                saved = first.session
                port = first.local_address[1]
            async with aio.connect(*server.address, config, session=saved) as second:
                assert second.resumed
                second_port = second.local_address[1]
        lines = [r.getMessage() for r in caplog.records if "handshake complete" in r.getMessage()]
        assert lines == [
            f"handshake complete: peer 127.0.0.1:{port} psk identity b'Client_identity' "
            "(server_name iot.example, max_fragment_length 1024)",
            f"handshake complete: peer 127.0.0.1:{second_port} psk identity b'Client_identity' "
            "(server_name iot.example, resumed, max_fragment_length 1024)",
        ]

    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        run(main())


def test_close_ends_the_peers_of_a_datagram_handler_cleanly() -> None:
    """No task per peer here: close() itself sends every peer close_notify."""
    ended: list[object] = []

    class Echo(aio.DatagramHandler):
        def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
            session.send(data)

        def session_ended(self, session: aio.ServerSession, error: object) -> None:
            ended.append(error)

    async def main() -> None:
        server = await aio.serve(Echo(), LOCALHOST, 0, server_config())
        async with aio.connect(*server.address, client_config()) as client:
            client.send(b"ping")
            assert await client.recv() == b"ping"
            await server.close()
            assert await asyncio.wait_for(client.recv(), 2.0) is None
        assert ended == [None]

    run(main())


@pytest.mark.req("EXT-5")
def test_a_peer_that_stops_answering_ends_with_peer_unresponsive_on_both_sides() -> None:
    """Through the proxy, every datagram after the handshake is dropped both ways: each side's
    heartbeat goes unanswered until its handshake_timeout, then the association ends with
    PeerUnresponsive, which the waiting heartbeat() and every later recv() raise. The client's
    retry policy is for handshakes (RPK-4): an established association that ends is not
    retried."""
    drop = AFTER_THE_HANDSHAKE | {("client", index) for index in range(4, 60)}
    server_errors: list[BaseException] = []

    async def beat(session: aio.ServerSession) -> None:
        for wait in (session.heartbeat(10.0), session.recv()):
            try:
                await wait
            except PeerUnresponsive as exc:
                server_errors.append(exc)

    async def main() -> None:
        config = server_config(heartbeat=True, handshake_timeout=1.0)
        async with await aio.serve(beat, LOCALHOST, 0, config) as server:
            with LossyProxy(server.address, seed=1, drop=drop, lifetime=20) as p:
                retry = RetryPolicy(attempts=3, initial=0.05, maximum=0.1)
                config = client_config(heartbeat=True, handshake_timeout=1.0, retry=retry)
                async with aio.connect(*p.address, config) as client:
                    with pytest.raises(PeerUnresponsive) as ended:
                        await client.heartbeat(10.0)
                    with pytest.raises(PeerUnresponsive):
                        await client.recv()
                    # It said "cannot send application data in state CLOSED", as sync now.
                    with pytest.raises(AssociationEnded) as late:
                        client.send(b"reading")
                    assert late.value.__cause__ is ended.value
                    assert str(late.value) == (
                        "cannot send application data: the association ended with "
                        f"PeerUnresponsive: {ended.value}"
                    )
                await eventually(lambda: len(server_errors) == 2, 5)
        assert [type(e) for e in server_errors] == [PeerUnresponsive, PeerUnresponsive]

    run(main())


@pytest.mark.req("EXT-5")
def test_a_heartbeat_waiting_when_the_peer_closes_cleanly_gives_false() -> None:
    async def main() -> None:
        config = server_config(heartbeat=True)
        server = await aio.serve(echo, LOCALHOST, 0, config)
        # The answer to the heartbeat (the server's fourth datagram) is lost; the server's
        # close_notify (its fifth) arrives while the client still waits for it.
        with LossyProxy(server.address, seed=1, drop={("server", 4)}, lifetime=20) as p:
            async with aio.connect(*p.address, client_config(heartbeat=True)) as client:
                loop = asyncio.get_running_loop()
                waiting = asyncio.ensure_future(client.heartbeat(10.0))
                assert await loop.run_in_executor(None, p.wait_for_count, "server", 4, 2.0)
                await server.close()
                started = loop.time()
                assert await waiting is False
                assert loop.time() - started < 2.0

    run(main())


def test_the_session_tells_the_handler_server_name_and_resumption_and_stats_count() -> None:
    seen: list[tuple[str, bool]] = []

    async def note(session: aio.ServerSession) -> None:
        seen.append((session.server_name, session.resumed))
        await echo(session)

    async def main() -> None:
        async with await aio.serve(note, LOCALHOST, 0, server_config()) as server:
            config = client_config(server_name="iot.example")
            async with aio.connect(*server.address, config) as first:
                saved = first.session
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            async with aio.connect(*server.address, config, sock=sock, session=saved) as again:
                assert again.resumed
            async with aio.connect(*server.address, client_config()):
                pass
            assert server.stats.handshakes_completed == 3
        assert seen == [("iot.example", False), ("iot.example", True), ("", False)]

    run(main())


@pytest.mark.req("CRT-2")
def test_the_chain_cache_is_filled_then_offered(tmp_path: Path) -> None:
    p = x509_pki()
    client, server = x509_configs(client={"handshake_timeout": 10.0})
    cache = ChainCache(tmp_path)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            port = running.address[1]
            async with aio.connect(LOCALHOST, port, client, chain_cache=cache) as first:
                assert tuple(first.connection.config.cached_server_chain) == ()
            chain = cache.load(f"localhost:{port}")
            assert chain == pki.chain_der(p.server, p.ca)
            async with aio.connect(LOCALHOST, port, client, chain_cache=cache) as second:
                assert tuple(second.connection.config.cached_server_chain) == chain
                second.send(b"cached")
                assert await second.recv() == b"cached"

    run(main())


def server_for_the_address() -> dict[str, Any]:
    """Server settings: a certificate for the address LOCALHOST (an iPAddress SAN) alone."""
    p = x509_pki()
    return {"certificates": [p.certified(pki.server_leaf(p.ca, san=pki.ip(LOCALHOST)))]}


@pytest.mark.req("CRT-2")
def test_without_a_server_name_the_chain_is_cached_under_the_host(tmp_path: Path) -> None:
    """The cache files a chain under the name the client checks, which is the host it
    connected to when the configuration names none (`chaincache.cache_key`)."""
    client, server = x509_configs(
        client={"handshake_timeout": 10.0, "server_name": None}, server=server_for_the_address()
    )
    cache = ChainCache(tmp_path)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            port = running.address[1]
            async with aio.connect(LOCALHOST, port, client, chain_cache=cache):
                pass
            assert cache.load(f"{LOCALHOST}:{port}") is not None

    run(main())


def test_a_closed_port_ends_the_handshake_at_the_second_refusal() -> None:
    """Nothing listens: the network answers the ClientHello and its retransmission with ICMP
    port unreachable, and `connect` raises `PortUnreachable` then, not after the handshake
    deadline (here 30 s)."""
    port = free_udp_port()
    started = time.monotonic()
    with pytest.raises(PortUnreachable) as refused:
        run(aio.connect(LOCALHOST, port, client_config(handshake_timeout=30.0)))
    assert time.monotonic() - started < 10.0
    assert refused.value.refusals == 2
    assert str(refused.value) == (
        f"nothing listens on {LOCALHOST}:{port}: the network reported the port unreachable "
        "2 times (ICMP)"
    )


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_handshake_deadline_before_the_second_refusal_says_the_port_was_refused(
    loop_choice: str,
) -> None:
    """A deadline below the first retransmission (1 s, the default): the ClientHello's one ICMP
    report does not make `PortUnreachable` (that takes two), and the timeout said only
    "handshake timed out after 0.5 s", sending the user after a slow server rather than a
    missing one (probe BG, F5). It says the network reported the port unreachable."""
    port = free_udp_port()
    with pytest.raises(HandshakeTimeout) as timed_out:
        config = client_config(retransmit=RetransmitPolicy(), handshake_timeout=0.5)
        run_on_loop(aio.connect(LOCALHOST, port, config), loop_choice)
    assert timed_out.value.unreachable_reports == 1
    assert str(timed_out.value) == (
        "handshake timed out after 0.5 s; the network reported the port unreachable 1 time "
        "(ICMP): nothing may listen there"
    )


def test_a_handshake_deadline_with_no_refusal_says_nothing_of_one() -> None:
    """A server that is there but silent: no report, the timeout's text as it was. A report
    before the server was heard is forgotten once it is (`receive_datagram`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        with pytest.raises(HandshakeTimeout) as timed_out:
            run(aio.connect(*silent.getsockname(), client_config(handshake_timeout=0.3)))
    assert timed_out.value.unreachable_reports == 0
    assert str(timed_out.value) == "handshake timed out after 0.3 s"
    connection = DtlsConnection(client_config(handshake_timeout=1.0))
    connection.connect(0.0)
    refused = RefusedHandshake()
    assert not refused.refused(connection, (LOCALHOST, 5684))
    connection.receive_datagram(b"\x00not a record", 0.1)  # heard: whatever it was
    connection.handle_timer(2.0)
    assert str(connection.error) == "handshake timed out after 1 s"
    assert isinstance(connection.error, HandshakeTimeout)
    assert connection.error.unreachable_reports == 0  # a number still (M14), not None


def test_refusals_after_the_server_was_heard_do_not_end_the_handshake() -> None:
    """The rule both adapters share (`RefusedHandshake`): two reports end a handshake that has
    heard nothing from its server, never one that has (its ICMP may be a stale one)."""
    peer = (LOCALHOST, 5684)
    for heard, ended in ((False, True), (True, False)):
        connection = DtlsConnection(client_config())
        connection.connect(0.0)
        refused = RefusedHandshake()
        refused.heard = heard
        assert not refused.refused(connection, peer)
        assert refused.refused(connection, peer) is ended
        assert (connection.state is ConnectionState.CLOSED) is ended
        assert isinstance(connection.error, PortUnreachable) is ended


def test_a_timeout_after_the_server_answered_counts_the_reports_that_followed() -> None:
    """A server that answered (a HelloVerifyRequest, say) and then went away: every
    retransmission draws a report, which ends nothing once the server was heard (ICMP is soft;
    one after an answer may be forged), but the timeout says how many came, and no longer
    reads as a slow server (probe CE F8)."""
    connection = DtlsConnection(client_config(handshake_timeout=10.0))
    connection.connect(0.0)
    refused = RefusedHandshake()
    refused.heard = True
    for _ in range(3):
        assert not refused.refused(connection, (LOCALHOST, 5684))
    assert connection.state is ConnectionState.HANDSHAKING
    connection.handle_timer(11.0)
    assert isinstance(connection.error, HandshakeTimeout)
    assert connection.error.unreachable_reports == 0
    assert connection.error.unreachable_after_answer == 3
    assert str(connection.error) == (
        "handshake timed out after 10 s; the network reported the port unreachable 3 times "
        "(ICMP) after the server had answered: it may have gone away"
    )


def test_a_timeout_after_the_server_answered_and_went_away_counts_its_reports() -> None:
    """End to end on asyncio: the server answers the first ClientHello and closes its port."""
    config = client_config(retransmit=RetransmitPolicy(0.2, 1.0), handshake_timeout=2.0)
    with answers_once_then_goes() as address, pytest.raises(HandshakeTimeout) as timed_out:
        run(aio.connect(*address, config))
    assert timed_out.value.unreachable_reports == 0
    assert timed_out.value.unreachable_after_answer >= 1
    assert "after the server had answered: it may have gone away" in str(timed_out.value)


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_each_address_of_a_name_is_tried_while_the_one_before_is_unreachable(
    loop_choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with an IPv6 and an IPv4 address, the server on IPv4 only: the handshake to
    [::1] ends with `PortUnreachable` (before any answer) and the next address is tried, where
    only the first was and `connect` raised PortUnreachable. With every address unreachable,
    the last one's error is raised."""
    real = socket.getaddrinfo

    def dual(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":
            return real("::1", *args, **kwargs) + real(LOCALHOST, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dual)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            port = server.address[1]
            async with aio.connect("dual.test", port, client_config()) as client:
                assert client.connection.peer is not None
                client.send(b"over IPv4")
                assert await asyncio.wait_for(client.recv(), 5.0) == b"over IPv4"
        with pytest.raises(PortUnreachable, match=rf"^nothing listens on {LOCALHOST}:{port}: "):
            await aio.connect("dual.test", port, client_config())

    run_on_loop(asyncio.wait_for(main(), 20.0), loop_choice)


def test_a_refusal_before_the_server_starts_is_retried_within_the_handshake() -> None:
    """One refusal alone does not end the handshake: a server that starts between the first
    flight and its retransmission gets the client."""

    async def main() -> None:
        port = free_udp_port()
        config = client_config(retransmit=RetransmitPolicy(1.0, 2.0))
        connecting = asyncio.ensure_future(aio.connect(LOCALHOST, port, config))
        await asyncio.sleep(0.3)  # the ClientHello refused once; retransmitted after 1 s
        async with await aio.serve(echo, LOCALHOST, port, server_config()):
            client = await asyncio.wait_for(connecting, 5.0)
            await client.close()

    run(main())


@pytest.mark.req("CRT-3")
def test_without_a_server_name_the_certificate_must_name_the_host() -> None:
    """A client always checks the server's identity (RFC 7925 §4.4.1): with no `server_name`,
    the host given to `connect` is the name the certificate must carry. A certificate for
    "localhost" alone does not do for 127.0.0.1; one for 127.0.0.1 does."""
    client, server = x509_configs(client={"handshake_timeout": 10.0, "server_name": None})

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            with pytest.raises(AlertSent, match="bad_certificate"):
                await aio.connect(LOCALHOST, running.address[1], client)
        _, by_address = x509_configs(server=server_for_the_address())
        async with await aio.serve(echo, LOCALHOST, 0, by_address) as running:
            conn = await aio.connect(LOCALHOST, running.address[1], client)
            assert conn.connection.peer == CertificateIdentity(LOCALHOST)
            await conn.close()

    run(main())


# -- client certificate URLs (RFC 6066 §5, CRT-7) --------------------------------------------


def url_configs(fetcher: Any, urls: Any = None) -> tuple[ServerConfig, ClientConfig]:
    """Mutual certificates, the client sending URLs of its chain instead of the chain (those of
    `SERVED`, or `urls`)."""
    # A slow retransmission timer: a flight left waiting would show in the time taken.
    slow = RetransmitPolicy(3.0, 6.0)
    client, server = x509_configs(
        cookie=False,
        client={
            "handshake_timeout": 10.0,
            "certificate_urls": list(SERVED) if urls is None else urls,
            "retransmit": slow,
        },
        server={"certificate_fetcher": fetcher, "retransmit": slow, "certificate_url_timeout": 4.0},
    )
    return server, client


SERVED = {
    "http://certs.example/client.der": x509_pki().client.der,
    "http://certs.example/ca.der": x509_pki().ca.der,
}


def noting(peers: list[object]) -> aio.Handler:
    """An echo handler that first notes who its peer is in `peers`."""

    async def note(session: aio.ServerSession) -> None:
        peers.append(session.peer)
        await echo(session)

    return note


@pytest.mark.req("CRT-7")
def test_certificate_urls_are_fetched_a_bounded_number_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six clients send URLs; a slow fetcher (given the configured size limit and what is left
    of the time limit) sees at most MAX_CONCURRENT_FETCHES chains being fetched at once, and
    every handshake completes with the client's identity, each as soon as its chain is in."""
    monkeypatch.setattr(aio, "MAX_FETCHES_PER_HOST", 7)  # all seven come from 127.0.0.1
    lock = threading.Lock()
    running = [0]
    most = [0]
    limits: set[tuple[int, bool]] = set()

    def slow_fetcher(url: str, limit: int, timeout: float) -> bytes:
        with lock:
            limits.add((limit, 0 < timeout <= 4.0))
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return SERVED[url]

    peers: list[object] = []

    async def main() -> None:
        server_config, client_config = url_configs(slow_fetcher)
        async with await aio.serve(noting(peers), LOCALHOST, 0, server_config) as server:
            clients = await asyncio.gather(
                *(aio.connect(*server.address, client_config) for _ in range(6))
            )
            started = time.monotonic()
            async with aio.connect(*server.address, client_config):
                # The server's next flight leaves as soon as the chain is in, not when a
                # timer or another peer's datagram wakes the server (3 s here).
                assert time.monotonic() - started < 2.5
            for client in clients:
                await client.close()
        assert peers == [CertificateIdentity(CLIENT_EUI64)] * 7
        assert most[0] == aio.MAX_CONCURRENT_FETCHES
        assert server_config.certificate_url_size_limit == 16384
        assert limits == {(16384, True)}

    run(main())


def failing_fetcher(url: str, limit: int, timeout: float) -> bytes:
    raise OSError("404")


def broken_fetcher(url: str, limit: int, timeout: float) -> bytes:
    raise RuntimeError("a bug in the application's fetcher")


@pytest.mark.req("CRT-7", "ERR-1")
@pytest.mark.parametrize(
    ("fetcher", "alert", "warnings"),
    [
        # A URL that cannot be fetched: RFC 6066 §5's alert, nothing to warn about.
        (failing_fetcher, AlertDescription.certificate_unobtainable, []),
        # A fetcher that breaks is the application's bug: logged, and internal_error; as
        # every handshake sending a URL may make it raise, the first of each kind, the
        # others summed up (here at the stop).
        (broken_fetcher, AlertDescription.internal_error,
         ["certificate fetcher raised RuntimeError",
          "certificate fetcher raised: 1 more failure (the latest: RuntimeError)"]),
    ],
    ids=["unobtainable", "broken-fetcher"],
)  # fmt: skip
def test_a_failed_fetch_ends_the_handshake_with_its_alert(
    fetcher: Any, alert: AlertDescription, warnings: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        server_config, client_config = url_configs(fetcher)
        async with await aio.serve(echo, LOCALHOST, 0, server_config) as server:
            for _ in range(2):
                with pytest.raises(AlertReceived) as failed:
                    await aio.connect(*server.address, client_config)
            # The fetch's task is let go once done.
            await eventually(lambda: not server._protocol.tasks, 1)
            assert not server._protocol.tasks
        assert failed.value.alert is alert

    with caplog.at_level(logging.WARNING, logger="iotdtls.aio"):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == warnings


@pytest.mark.req("CRT-7")
def test_a_fetch_for_a_replaced_association_does_not_answer_the_new_one() -> None:
    """A device restarts from the same address (RFC 6347 §4.2.8) while the server fetches its
    chain: the first fetch's outcome (here a failure, coming while the new association waits
    for its own fetch) is not the new association's; the new handshake completes on its own
    chain."""
    first_started, first_may_end = threading.Event(), threading.Event()
    second_started, second_may_end = threading.Event(), threading.Event()

    def fetcher(url: str, limit: int, timeout: float) -> bytes:
        if not first_started.is_set():
            first_started.set()
            first_may_end.wait(5.0)
            raise OSError("the first fetch fails, late")
        second_started.set()
        second_may_end.wait(5.0)
        return SERVED[url]

    peers: list[object] = []

    async def main() -> None:
        server_config, client_config = url_configs(fetcher)
        async with await aio.serve(noting(peers), LOCALHOST, 0, server_config) as server:
            device = await SameAddressClient.open(server.address)
            first = asyncio.ensure_future(device.handshake(client_config, timeout=10.0))
            try:
                assert await eventually(first_started.is_set, 5.0), "no first fetch"
                second = asyncio.ensure_future(device.handshake(client_config, timeout=3.0))
                assert await eventually(second_started.is_set, 5.0), "no second fetch"
                first_may_end.set()
                await asyncio.sleep(0.2)  # the first fetch's failure reaches the server
                second_may_end.set()
                await second
                device.send(b"ping")
                assert await device.recv(5.0) == b"ping"
            finally:
                first.cancel()
                first_may_end.set()
                second_may_end.set()
                device.close()
        assert peers == [CertificateIdentity(CLIENT_EUI64)]

    run(main())


async def finish(*futures: asyncio.Future[Any]) -> None:
    """Cancel the client handshakes a test left, and wait for them to go."""
    for future in futures:
        future.cancel()
    await asyncio.gather(*futures, return_exceptions=True)


def blocking_fetcher(leaves: list[str], may_end: threading.Event) -> Any:
    """A fetcher noting each chain it fetches (its leaf URL) in `leaves`, and holding each
    until `may_end` is set (5 s at most)."""

    def fetcher(url: str, limit: int, timeout: float) -> bytes:
        if url.endswith("/client.der"):
            leaves.append(url)
            may_end.wait(5.0)
        return SERVED[url]

    return fetcher


class FetchLine(NamedTuple):
    """What `one_fetch_running_one_waiting` gives a test."""

    server: aio.DtlsServer
    client_config: ClientConfig
    leaves: list[str]  # the leaf URL of each chain fetched so far
    may_end: threading.Event  # set: the fetches held by the fetcher return
    first: asyncio.Future[Any]  # the handshake of the client whose fetch runs
    second: asyncio.Future[Any]  # and of the one whose fetch waits for the slot
    second_address: Any  # the second client's, as the server knows it


@contextlib.asynccontextmanager
async def one_fetch_running_one_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[FetchLine]:
    """A server fetching one certificate chain at a time (RFC 6066 §5, CRT-7) and two clients:
    the first's fetch running, held by the fetcher until `may_end` is set, the second's
    waiting for the slot. On leaving, `may_end` is set and both handshakes are let go."""
    monkeypatch.setattr(aio, "MAX_CONCURRENT_FETCHES", 1)
    leaves: list[str] = []
    may_end = threading.Event()
    server_config, client_config = url_configs(blocking_fetcher(leaves, may_end))
    async with await aio.serve(echo, LOCALHOST, 0, server_config) as server:
        protocol = server._protocol
        first = asyncio.ensure_future(aio.connect(*server.address, client_config))
        second: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(0))
        try:
            assert await eventually(lambda: leaves, 5.0), "no first fetch"
            (first_address,) = server.endpoint.connections
            second = asyncio.ensure_future(aio.connect(*server.address, client_config))
            assert await eventually(lambda: len(protocol.tasks) == 2, 5.0), "no second fetch"
            (second_address,) = set(server.endpoint.connections) - {first_address}
            yield FetchLine(server, client_config, leaves, may_end, first, second, second_address)
        finally:
            may_end.set()
            await finish(first, second)


@pytest.mark.req("CRT-7")
def test_the_waiting_fetch_of_an_ended_association_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fetch at a time: a second client's fetch waits for the first; its association ends
    meanwhile (closed by the server; evicted, replaced or timed out alike). Its fetch leaves
    the line: the fetcher is never called for it once the slot is free."""

    async def main() -> None:
        async with one_fetch_running_one_waiting(monkeypatch) as line:
            protocol = line.server._protocol
            protocol.close_peer(line.second_address)
            line.may_end.set()
            await (await asyncio.wait_for(line.first, 5.0)).close()
            await asyncio.sleep(0.3)  # time for a waiting fetch to run
            assert not protocol.tasks
        assert line.leaves == ["http://certs.example/client.der"]

    run(main())


@pytest.mark.req("CRT-7")
def test_the_running_fetch_of_an_ended_association_frees_its_slot_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fetch at a time; a client's certificate server trickles its headers (the fetch
    would hold the slot for the whole certificate_url_timeout, 4 s). Its association ends: the
    fetch stops, its connection is shut, and the next client's chain is fetched at once."""
    monkeypatch.setattr(aio, "MAX_CONCURRENT_FETCHES", 1)
    routes = {
        "/client.der": Route(SERVED["http://certs.example/client.der"]),
        "/ca.der": Route(SERVED["http://certs.example/ca.der"]),
        "/slow/client.der": Route(trickle_headers=0.05),
    }

    async def main() -> None:
        with LocalHttpServer(routes) as web:
            server_config, fast = url_configs(
                default_fetcher, [web.url("/client.der"), web.url("/ca.der")]
            )
            _, slow = url_configs(
                default_fetcher, [web.url("/slow/client.der"), web.url("/ca.der")]
            )
            async with await aio.serve(echo, LOCALHOST, 0, server_config) as server:
                stuck = asyncio.ensure_future(aio.connect(*server.address, slow))
                try:
                    assert await eventually(lambda: web.hits, 5.0), "no slow fetch"
                    (slow_address,) = server.endpoint.connections
                    server._protocol.close_peer(slow_address)
                    started = time.monotonic()
                    client = await asyncio.wait_for(aio.connect(*server.address, fast), 5.0)
                    assert time.monotonic() - started < 1.5
                    await client.close()
                    assert await eventually(lambda: web.hung_up, 2.0), "connection kept"
                finally:
                    await finish(stuck)
            assert web.hung_up == ["/slow/client.der"]

    run(main())


@pytest.mark.req("CRT-7")
def test_past_the_waiting_fetches_a_handshake_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fetch running and one waiting, the most allowed here: a third client's handshake
    fails at once with certificate_unobtainable (RFC 6066 §5) instead of joining the line."""
    monkeypatch.setattr(aio, "MAX_WAITING_FETCHES", 1)
    monkeypatch.setattr(aio, "MAX_FETCHES_PER_HOST", 3)  # the line is full, not the host's share

    async def main() -> None:
        async with one_fetch_running_one_waiting(monkeypatch) as line:
            started = time.monotonic()
            with pytest.raises(AlertReceived) as failed:
                await asyncio.wait_for(aio.connect(*line.server.address, line.client_config), 2.0)
            assert failed.value.alert is AlertDescription.certificate_unobtainable
            assert time.monotonic() - started < 1.5
            line.may_end.set()
            for waited in (line.first, line.second):
                await (await asyncio.wait_for(waited, 5.0)).close()
        assert len(line.leaves) == 2

    run(main())


@pytest.mark.req("CRT-7")
def test_one_host_cannot_take_every_fetch_slot(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6066 §5: one host (127.0.0.1) whose URLs never answer starts as many handshakes as
    the server fetches chains for at once; only `MAX_FETCHES_PER_HOST` of them get a fetch (the
    others fail at once with certificate_unobtainable, the server's line saying why), and a
    client from another address (127.0.0.2) still completes at once (probe BW #3: it was
    refused while the host held every slot)."""
    monkeypatch.setattr(aio, "MAX_WAITING_FETCHES", 0)  # the line: the 4 running slots
    hung: list[str] = []
    may_end = threading.Event()

    def fetcher(url: str, limit: int, timeout: float) -> bytes:
        if url.startswith("http://hang.example/"):
            hung.append(url)
            may_end.wait(5.0)
            raise OSError("never answered")
        return SERVED[url]

    async def main() -> None:
        server_config, honest = url_configs(fetcher)
        _, hostile = url_configs(fetcher, ["http://hang.example/c.der", "http://hang.example/ca"])
        async with await aio.serve(echo, LOCALHOST, 0, server_config) as server:
            attacks = [
                asyncio.ensure_future(aio.connect(*server.address, hostile))
                for _ in range(aio.MAX_CONCURRENT_FETCHES)
            ]
            try:
                assert await eventually(lambda: len(hung) >= 2, 5.0), "no hanging fetch"
                await asyncio.sleep(0.3)  # time for the other handshakes to ask for theirs
                assert len(hung) == aio.MAX_FETCHES_PER_HOST == 2
                refused = [a for a in attacks if a.done()]
                assert len(refused) == len(attacks) - aio.MAX_FETCHES_PER_HOST
                for attack in refused:
                    with pytest.raises(AlertReceived) as failed:
                        attack.result()
                    assert failed.value.alert is AlertDescription.certificate_unobtainable
                other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                other.bind(("127.0.0.2", 0))
                started = time.monotonic()
                client = await asyncio.wait_for(
                    aio.connect(*server.address, honest, sock=other), 5.0
                )
                assert time.monotonic() - started < 1.5
                await client.close()
            finally:
                may_end.set()
                await finish(*attacks)

    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        run(main())
    refusals = [r.getMessage() for r in caplog.records if "too many" in r.getMessage()]
    assert len(refusals) == aio.MAX_CONCURRENT_FETCHES - aio.MAX_FETCHES_PER_HOST
    for line in refusals:  # M18: `_start_fetch` 12 gave the refusal no text
        assert line.endswith(
            ": sent fatal alert certificate_unobtainable: too many certificate URL fetches from"
            " this host (2 running or waiting, 2 allowed): try again later"
        ), line


# -- DEBUG trace lines -------------------------------------------------------------------------


def test_each_datagram_is_traced_at_debug_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    addresses: list[tuple[str, int]] = []

    async def main() -> None:
        async with (
            await aio.serve(echo, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as client,
        ):
            addresses.extend([server.address, client.local_address])
            client.send(b"traced")
            assert await client.recv() == b"traced"

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    server, client = (f"{host}:{port}" for host, port in addresses)
    lines = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    for expected in (
        rf"-> {server} \d+ B Handshake\(e0/s0: client_hello#0\)",  # the client's line
        rf"<- {client} \d+ B Handshake\(e0/s0: client_hello#0\)",  # the server's
        rf"-> {client} 44 B Handshake\(e0/s0: hello_verify_request#0\)",
        rf"-> {server} 35 B ApplicationData\(e1/s1, 22 B protected\)",
        rf"<- {server} 35 B ApplicationData\(e1/s1, 22 B protected\)",
    ):
        assert re.search(f"^{expected}$", lines, re.MULTILINE), expected
    assert "not sent" not in lines  # the echo went out: no line says it was dropped


def test_a_malformed_datagram_is_traced_as_such(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=server.address
            )
            transport.sendto(b"\x16\xfe\xfd" + bytes(8) + b"\x00\x50" + b"x")
            await eventually(lambda: server.stats.datagrams_received, 1)
            transport.close()

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    assert any(
        r.getMessage().endswith(" 14 B <a record of 80 B cut short at 1 B>") for r in caplog.records
    )


def test_addresses_in_log_lines() -> None:
    """A scope id names the interface (logs of peers on two links told them apart only by
    port: "peer [fe80::1]:36267"), by index when no interface has it."""
    lo = socket.if_nametoindex("lo")
    assert format_address(("192.0.2.1", 5684)) == "192.0.2.1:5684"
    assert format_address(("::1", 5684, 0, 0)) == "[::1]:5684"
    assert format_address(("fe80::1%eth0", 5684, 0, 2)) == "[fe80::1%eth0]:5684"
    assert format_address(("fe80::1", 5684, 0, lo)) == "[fe80::1%lo]:5684"
    unused = max(index for index, _ in socket.if_nameindex()) + 1000
    assert format_address(("fe80::1", 5684, 0, unused)) == f"[fe80::1%{unused}]:5684"
    # An IPv4 client of a server on [::] (RFC 4291 §2.5.5.2) is written as IPv4, as it sent.
    assert format_address(("::ffff:127.0.0.1", 41652, 0, 0)) == "127.0.0.1:41652"
    assert format_address(("::FFFF:192.0.2.1", 5684, 0, 0)) == "192.0.2.1:5684"
    assert format_address(("::ffff:c000:201", 5684, 0, 0)) == "192.0.2.1:5684"
    assert format_address(("0:0:0:0:0:ffff:c000:201", 5684)) == "192.0.2.1:5684"
    assert format_address(("64:ff9b::c000:201", 5684, 0, 0)) == "[64:ff9b::c000:201]:5684"  # NAT64
    # "ffff" in an address that is no IPv4-mapped one: written as it is.
    assert format_address(("2001:db8::ffff:1", 5684, 0, 0)) == "[2001:db8::ffff:1]:5684"
    assert format_address(("192.0.2.1",)) == "('192.0.2.1',)"
    assert format_address("/run/peer") == "'/run/peer'"
    assert str(aio._PeerLabel(("fe80::1", 5684, 0, lo), None)) == (
        "peer [fe80::1%lo]:5684 before any identity"
    )


def test_a_psk_identity_in_log_lines_is_cut_short() -> None:
    """A client names any identity of up to 65535 bytes before proving anything (RFC 4279
    §2): each failed handshake logged it whole, 260 KB of escapes for 65535 NULs. Log lines,
    event text and reprs show 64 bytes and the length; `identity` itself stays whole."""
    address = ("192.0.2.1", 5684)
    short = PskIdentity(b"dev\n1")
    label = aio._PeerLabel(address, short, True)
    assert str(label) == "peer 192.0.2.1:5684 psk identity b'dev\\n1'"
    assert repr(short) == "PskIdentity(identity=b'dev\\n1')"
    exact = PskIdentity(b"i" * 64)
    assert str(exact) == "psk identity b'" + "i" * 64 + "'"
    flood = PskIdentity(b"\x00" * 65535)
    shown = "b'" + "\\x00" * 64 + "'... (65535 bytes)"
    assert str(aio._PeerLabel(address, flood, True)) == f"peer 192.0.2.1:5684 psk identity {shown}"
    assert repr(flood) == f"PskIdentity(identity={shown})"
    assert flood.identity == b"\x00" * 65535


def test_a_trace_that_fails_does_not_cost_the_datagram(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing must never lose a datagram: were the describer to fail on some input, the line
    says "undecodable" and the datagram is processed as usual."""

    def broken(data: bytes) -> str:
        raise ValueError("a describer bug")

    monkeypatch.setattr(trace, "describe_datagram", broken)

    async def main() -> None:
        async with (
            await aio.serve(echo, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as client,
        ):
            client.send(b"still delivered")
            assert await client.recv() == b"still delivered"

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    assert any(r.getMessage().endswith(" B undecodable (ValueError)") for r in caplog.records)


# -- a server's sessions ---------------------------------------------------------------------


def test_a_handler_closing_its_session_ends_the_client_cleanly() -> None:
    async def once(session: aio.ServerSession) -> None:
        data = await session.recv()
        assert data is not None
        session.send(data)
        session.close()
        await asyncio.sleep(30)  # still running: the close is the session's, not the handler's end

    async def main() -> None:
        async with (
            await aio.serve(once, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config()) as client,
        ):
            client.send(b"only one")
            assert await client.recv() == b"only one"
            assert await asyncio.wait_for(client.recv(), 2.0) is None

    run(main())


def test_iterating_a_session_ends_quietly_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    """`async for` over a session stops at its end, a failed one included (here the server's
    idle timeout); recv() then raises the error, and no handler failure is logged."""
    outcomes: list[object] = []

    async def iterate(session: aio.ServerSession) -> None:
        async for _ in session:
            pass
        try:
            await session.recv()
        except IdleTimeout as exc:
            outcomes.append(type(exc))

    async def main() -> None:
        config = server_config(idle_timeout=0.3)
        async with await aio.serve(iterate, LOCALHOST, 0, config) as server:
            async with aio.connect(*server.address, client_config()) as client:
                assert await asyncio.wait_for(client.recv(), 3.0) is None  # its close_notify
            await eventually(lambda: outcomes, 2)

    with caplog.at_level(logging.ERROR, logger="iotdtls.aio"):
        run(main())
    assert outcomes == [IdleTimeout]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.req("EXT-5")
def test_an_unanswered_server_heartbeat_gives_false_after_its_timeout() -> None:
    results: list[tuple[bool, float]] = []

    async def beat(session: aio.ServerSession) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answered = await session.heartbeat(0.3)
        results.append((answered, loop.time() - started))

    async def main() -> None:
        drop = {("client", index) for index in range(4, 60)}  # all after the handshake
        async with await aio.serve(beat, LOCALHOST, 0, server_config(heartbeat=True)) as server:
            with LossyProxy(server.address, seed=1, drop=drop, lifetime=20) as p:
                async with aio.connect(*p.address, client_config(heartbeat=True)):
                    await eventually(lambda: results, 2)
        ((answered, took),) = results
        assert answered is False and 0.3 <= took < 2.0

    run(main())


def test_a_handshake_retried_after_a_failure_completes_and_closes_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server is not there for the first attempt (the network refuses its flights, or its
    timeout passes), it is for a retry; that association then works and closes like any
    other."""
    port = free_udp_port()
    retry = RetryPolicy(attempts=3, initial=0.05, maximum=0.1)

    async def main() -> None:
        config = client_config(handshake_timeout=0.5, retry=retry)
        connecting = asyncio.ensure_future(aio.connect(LOCALHOST, port, config))
        await asyncio.sleep(0.6)
        async with await aio.serve(echo, LOCALHOST, port, server_config()):
            client = await asyncio.wait_for(connecting, 5.0)
            client.send(b"second attempt")
            assert await client.recv() == b"second attempt"
            await client.close()

    with caplog.at_level(logging.INFO):
        run(main())
    assert any(
        r.getMessage().startswith(
            ("handshake failed (handshake timed out", "handshake failed (nothing listens on")
        )
        and r.getMessage().endswith(" s")
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.req("RES-1")
def test_a_retry_after_a_failed_resumption_still_says_the_session_was_resumed() -> None:
    """A retry is a full handshake: when the first attempt resumed the session offered and
    failed (its secret damaged), the error that ends the last attempt (here: the server gone)
    still says `resuming`, so an application drops the saved session."""
    retry = RetryPolicy(attempts=2, initial=1.0, maximum=1.0)  # the retry 0.5-1 s later

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with aio.connect(*server.address, client_config()) as first:
            saved = first.session
        assert saved is not None
        damaged = dataclasses.replace(saved, master_secret=bytes(48))
        config = client_config(handshake_timeout=0.5, retry=retry)
        loop = asyncio.get_running_loop()
        started = loop.time()
        connecting = asyncio.ensure_future(aio.connect(*server.address, config, session=damaged))
        # The resumed attempt has failed (at once: the server's Finished does not authenticate,
        # decrypt_error); the retry, 0.5 s on at least, not begun.
        await asyncio.sleep(0.25)
        await server.close()
        with pytest.raises(DtlsError) as failed:
            await asyncio.wait_for(connecting, 10.0)
        # The error is the retry's (back-off of 0.5 s at least, 0.5 s attempt, its server
        # gone), not the first attempt's, which says `resuming` on its own.
        assert isinstance(failed.value, HandshakeTimeout)
        assert loop.time() - started >= 0.95
        assert failed.value.resuming is True

    run(main())


def test_a_failed_full_handshake_does_not_say_resuming() -> None:
    """A connect given no session makes a full handshake: its failure (a wrong PSK, the
    server's alert) says not `resuming`, so an application keeps no session to drop (M20:
    `_ClientProtocol.__init__` 13, the first attempt taken for a resumed one)."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        try:
            config = client_config(psk=b"another key", handshake_timeout=5.0)
            with pytest.raises(DtlsError) as failed:
                await asyncio.wait_for(aio.connect(*server.address, config), 10.0)
            assert not isinstance(failed.value, HandshakeTimeout)
            assert failed.value.resuming is False
        finally:
            await server.close()

    run(main())


def test_a_server_that_only_sends_does_not_keep_a_silent_peer() -> None:
    """Data the server sends is no activity for the idle timeout: a handler pushing a datagram
    every 0.1 s to a client that never speaks (a vanished CoAP observer would not either)
    still sees the association end 0.6 s after its handshake; the client gets close_notify
    (its recv returns None) long before the 40 pushes are through."""

    async def push(session: aio.ServerSession) -> None:
        for n in range(40):
            session.send(b"push %d" % n)
            await asyncio.sleep(0.1)

    async def main() -> None:
        config = server_config(idle_timeout=0.6)
        async with await aio.serve(push, LOCALHOST, 0, config) as server:
            loop = asyncio.get_running_loop()
            async with aio.connect(*server.address, client_config()) as client:
                started, received = loop.time(), 0
                while await asyncio.wait_for(client.recv(), 3.0) is not None:
                    received += 1
                assert 0.5 <= loop.time() - started < 2.0
                assert 1 <= received < 20

    run(main())


def test_keep_alive_keeps_a_peer_that_only_listens() -> None:
    """With keep-alive (RFC 6520 §5.2), the client's answers to the server's heartbeats are
    its authenticated records: a handler pushing for 4 s to a client that sends nothing else
    outlives an idle timeout of 2 s (a heartbeat a second: a second of margin for a loaded
    machine), and every push arrives."""

    async def push(session: aio.ServerSession) -> None:
        for n in range(16):
            session.send(b"push %d" % n)
            await asyncio.sleep(0.25)
        await echo(session)

    async def main() -> None:
        config = server_config(
            idle_timeout=2.0, heartbeat=True, keepalive_interval=1.0, handshake_timeout=1.0
        )
        async with (
            await aio.serve(push, LOCALHOST, 0, config) as server,
            aio.connect(*server.address, client_config(heartbeat=True)) as client,
        ):
            for n in range(16):
                assert await asyncio.wait_for(client.recv(), 2.0) == b"push %d" % n

    run(main())


def test_a_client_keeps_at_most_receive_queue_unread_datagrams() -> None:
    async def burst(session: aio.ServerSession) -> None:
        for n in range(5):
            session.send(bytes([n]))
        await echo(session)

    async def main() -> None:
        async with (
            await aio.serve(burst, LOCALHOST, 0, server_config()) as server,
            aio.connect(*server.address, client_config(receive_queue=2)) as client,
        ):
            client.send(b"after the burst")  # its echo comes behind the five
            await eventually(lambda: client.dropped_datagrams == 4, 1)
            assert client.dropped_datagrams == 4
            assert [await client.recv(), await client.recv()] == [b"\0", b"\1"]

    run(main())


# -- answers that come after the peer has closed -----------------------------------------------


def test_a_peer_closing_behind_its_last_datagram_is_no_error_of_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that sends and closes at once (`async with connect(...)`) has usually gone
    before the handler answers: the answer is dropped, and the handler goes on (what it does
    after its send still runs); the server logs no error."""
    noted: list[bytes] = []

    async def answer_then_note(session: aio.ServerSession) -> None:
        async for datagram in session:
            session.send(b"thanks")
            noted.append(datagram)

    async def main() -> None:
        async with await aio.serve(answer_then_note, LOCALHOST, 0, server_config()) as server:
            for n in range(10):
                async with aio.connect(*server.address, client_config()) as client:
                    client.send(b"reading %d" % n)
            await eventually(lambda: len(noted) == 10, 1)

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    assert noted == [b"reading %d" % n for n in range(10)]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    dropped = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert dropped  # the race this test is about did happen
    assert all(
        re.fullmatch(r"datagram to 127\.0\.0\.1:\d+ not sent: the association has ended", line)
        for line in dropped
    ), dropped


def test_data_and_close_notify_in_one_datagram_reach_a_datagram_handler_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler hears the data, answers it (dropped: the close came in the same datagram,
    RFC 6347 §4.1.1 lets records share one) and then hears the clean end; no error."""
    calls: list[tuple[str, object]] = []

    class Answering(aio.DatagramHandler):
        def datagram_received(self, session: aio.ServerSession, data: bytes) -> None:
            session.send(b"answer to " + data)
            calls.append(("datagram", data))

        def session_ended(self, session: aio.ServerSession, error: Any) -> None:
            calls.append(("ended", error))

    async def main() -> None:
        async with await aio.serve(Answering(), LOCALHOST, 0, server_config()) as server:
            device = await SameAddressClient.open(server.address)
            try:
                await device.handshake(client_config())
                assert device.connection is not None and device.transport is not None
                device.connection.send(b"last words")
                device.connection.close()
                records = device.connection.datagrams_to_send(asyncio.get_running_loop().time())
                assert len(records) == 2
                device.transport.sendto(b"".join(records))
                await eventually(lambda: calls, 1)
            finally:
                device.close()

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run(main())
    assert calls == [("datagram", b"last words"), ("ended", None)]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("not sent: the association has ended" in r.getMessage()
               for r in caplog.records) == 1


# -- what the server keeps and how it is set up ------------------------------------------------


def test_the_server_socket_gets_the_large_receive_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` asks for `SERVER_RECEIVE_BUFFER` on the socket it makes, up to what the kernel
    allows (net.core.rmem_max; Linux reports it doubled), so a burst of ClientHellos waits."""
    allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
    enlarged: list[socket.socket] = []
    enlarge = aio.enlarge_receive_buffer

    def noted(sock: socket.socket) -> None:
        enlarged.append(sock)
        enlarge(sock)

    monkeypatch.setattr(aio, "enlarge_receive_buffer", noted)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            sock = server._transport.get_extra_info("socket")
            assert enlarged == [sock]
            buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert buffer >= 2 * min(aio.SERVER_RECEIVE_BUFFER, allowed)

    run(main())


def test_servers_sharing_a_session_store_resume_each_others_sessions() -> None:
    """`serve(session_store=...)`: two servers (say, behind one name) keep their sessions in
    one store, so a client resumes on the second the session the first made (RES-1)."""
    store = MemorySessionStore()

    async def main() -> None:
        async with (
            await aio.serve(echo, LOCALHOST, 0, server_config(), session_store=store) as first,
            await aio.serve(echo, LOCALHOST, 0, server_config(), session_store=store) as second,
        ):
            async with aio.connect(*first.address, client_config()) as client:
                saved = client.session
            assert len(store) == 1
            async with aio.connect(*second.address, client_config(), session=saved) as again:
                assert again.resumed

    run(main())


def test_a_finished_handler_task_is_let_go() -> None:
    """The server holds a task per peer only while its handler runs: a fleet of peers that
    came and went leaves nothing behind."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            for _ in range(3):
                async with aio.connect(*server.address, client_config()) as client:
                    client.send(b"ping")
                    assert await client.recv() == b"ping"
            await eventually(lambda: not server._protocol.tasks, 1)
            assert not server._protocol.tasks and not server._protocol.sessions

    run(main())


# -- what connect and serve are given ----------------------------------------------------------


def no_socket(*args: object, **kwargs: object) -> socket.socket:
    raise AssertionError("a socket was made for arguments that were refused")


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_connect_refuses_a_port_out_of_range_before_making_a_socket(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket layer would take 70000 for 4464 (or raise OverflowError from deep inside
    asyncio); `connect` says what is wrong when it is called."""
    monkeypatch.setattr(socket, "socket", no_socket)
    with pytest.raises(ValueError, match=rf"^port must be from 1 to 65535, got {port}$"):
        aio.connect(LOCALHOST, port, client_config())
    text: Any = "5684"
    with pytest.raises(TypeError, match=r"^port must be an int, got str$"):
        aio.connect(LOCALHOST, text, client_config())


def test_the_ends_of_the_port_range_are_taken() -> None:
    """1 and 65535 (and 0 for a server, "any free port") are ports; the refusals above start
    one past them."""
    for port in (1, 65535):
        check_port(port)
    check_port(0, any_port=True)
    check_port(65535, any_port=True)


def test_a_port_of_an_int_subclass_is_used_as_a_plain_int() -> None:
    """An `IntEnum`'s member passes the check of a port, but the resolver refuses anything but
    a plain int ("cannot reach 127.0.0.1:P: Int or String expected", probe CF F3): `serve`,
    `connect` and `sync.connect` use it as the int it is."""
    any_port = enum.IntEnum("Port", {"ANY": 0}).ANY
    assert type(check_port(any_port, any_port=True)) is int

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, any_port, server_config()) as server:
            port = enum.IntEnum("Port", {"SERVER": server.address[1]}).SERVER
            async with aio.connect(LOCALHOST, port, client_config()) as conn:
                conn.send(b"aio")
                assert await asyncio.wait_for(conn.recv(), 5.0) == b"aio"

            def blocking() -> bytes | None:
                with sync.connect(LOCALHOST, port, client_config()) as client:
                    client.send(b"sync")
                    return client.recv(timeout=5.0)

            assert await asyncio.to_thread(blocking) == b"sync"

    run(main())


def test_a_caller_s_socket_is_connected_or_bound_naming_what_failed() -> None:
    """`attach_socket`, the step `aio.connect`, `aio.serve` and `sync.connect` share for a
    `sock=`: to its address of the socket's family, a socket error naming the host and port
    as the client ("cannot reach") or the server ("cannot listen on") says it."""
    port = free_udp_port()
    infos = socket.getaddrinfo(LOCALHOST, port, type=socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        attach_socket(sock, infos, LOCALHOST, port)
        assert sock.getpeername() == (LOCALHOST, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        attach_socket(sock, infos, LOCALHOST, port, bind=True)
        assert sock.getsockname() == (LOCALHOST, port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
            with pytest.raises(OSError) as raised:
                attach_socket(second, infos, LOCALHOST, port, bind=True)
            assert raised.value.errno == errno.EADDRINUSE
            assert str(raised.value) == (
                f"[Errno {errno.EADDRINUSE}] cannot listen on {LOCALHOST}:{port}: "
                f"{os.strerror(errno.EADDRINUSE)}"
            )
    broadcast = "255.255.255.255"  # refused without SO_BROADCAST
    infos = socket.getaddrinfo(broadcast, port, type=socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as raised:
            attach_socket(sock, infos, broadcast, port)
        assert str(raised.value).startswith(
            f"[Errno {raised.value.errno}] cannot reach {broadcast}:{port}: "
        )


def test_a_type_named_with_a_vowel_takes_an() -> None:
    """The line reads "an Event", "an int", "a str", whatever the case of the type's name."""

    class Event:
        pass

    with pytest.raises(TypeError, match=r"^handler must be an Event, got int$"):
        check_type("handler", 1, Event)
    with pytest.raises(TypeError, match=r"^count must be an int, got str$"):
        check_type("count", "1", int)
    with pytest.raises(TypeError, match=r"^name must be a str, got None$"):
        check_type("name", None, str)


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_serve_refuses_a_port_out_of_range_before_making_a_socket(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        with pytest.raises(ValueError, match=rf"^port must be from 0 to 65535, got {port}$"):
            await aio.serve(echo, LOCALHOST, port, server_config())

    run(main())


@pytest.mark.parametrize(("wrong", "message"), WRONG_CLIENT_ARGUMENTS)
def test_connect_refuses_an_argument_of_the_wrong_type_before_making_a_socket(
    wrong: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line naming the argument and what to pass, raised by the call itself (not by the
    library deep inside, after a socket was made and left open)."""
    monkeypatch.setattr(socket, "socket", no_socket)
    arguments = {"host": LOCALHOST, "port": 5684, "config": client_config(), **wrong}
    with pytest.raises(TypeError) as refused:
        aio.connect(**arguments)
    assert str(refused.value) == message


class AsyncSessionStore:
    """An aiosqlite-style store: its get is a coroutine function, which the handshake (calling
    the store synchronously) would never await."""

    async def get(self, session_id: bytes, now: float) -> None:
        return None

    def put(self, state: object, now: float) -> None:
        pass

    def remove(self, session_id: bytes) -> None:
        pass


@pytest.mark.parametrize(("wrong", "message"), [
    ({"config": client_config()}, "config must be a ServerConfig, got ClientConfig"),
    ({"config": None}, "config must be a ServerConfig, got None"),
    ({"sock": "0.0.0.0:5684"}, "sock must be a socket, got str"),
    ({"host": 5}, "host must be a str, got int"),
    ({"session_store": {}},
     "session_store must be a SessionStore (with get, put and remove), got dict"),
    ({"session_store": MemorySessionStore},
     "session_store must be a SessionStore instance, got the class MemorySessionStore: pass "
     "MemorySessionStore()"),
    ({"session_store": AsyncSessionStore()},
     "session_store.get must be a plain function, not async def: the store is called "
     "synchronously on the event loop; keep a slow store's data in memory (see README, "
     "Session resumption)"),
])
def test_serve_refuses_an_argument_of_the_wrong_type_before_making_a_socket(
    wrong: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        arguments = {"host": LOCALHOST, "port": 0, "config": server_config(), **wrong}
        with pytest.raises(TypeError) as refused:
            aio.serve(echo, **arguments)  # by serve() itself, not once awaited (M21)
        assert str(refused.value) == message

    run(main())


@pytest.mark.parametrize(("kind", "error", "message"), WRONG_SOCKETS)
def test_connect_and_serve_refuse_a_socket_that_is_not_an_open_udp_one(
    kind: str, error: type[Exception], message: str
) -> None:
    """A TCP socket was served and never received anything (and made a client fail with a raw
    ConnectionRefusedError); a closed one failed with "Bad file descriptor"."""

    async def main() -> None:
        with wrong_socket(kind) as sock:
            with pytest.raises(error) as refused:
                aio.connect(LOCALHOST, 5684, client_config(), sock=sock)
            assert str(refused.value) == message
            with pytest.raises(error) as refused:
                await aio.serve(echo, LOCALHOST, 0, server_config(), sock=sock)
            assert str(refused.value) == message

    run(main())


def test_a_datagram_socket_of_a_family_python_has_no_name_for_is_refused_by_its_number() -> None:
    """`sock=` of another family than AF_INET and AF_INET6 is refused naming the family: by
    its name (AF_UNIX, in the WRONG_SOCKETS tests) or, for a number Python's AddressFamily
    has no member for, by the number (M14: `_family_name`)."""

    class Unnamed(socket.socket):
        @property
        def family(self) -> Any:  # what socket.family gives for a family it cannot name
            return 99

    with Unnamed(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(
        TypeError, match=r"^sock must be an AF_INET or AF_INET6 UDP socket, got 99$"
    ):
        check_sock(sock)


@pytest.mark.parametrize(("family", "host", "message"), FAMILY_MISMATCHES)
def test_connect_refuses_a_socket_of_the_other_family_than_the_address_in_one_line(
    family: socket.AddressFamily, host: str, message: str
) -> None:
    """Both said "cannot resolve HOST: Address family for hostname not supported"."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        with pytest.raises(ConfigError) as refused:
            aio.connect(host, 5684, client_config(), sock=sock)
        assert str(refused.value) == message
        assert sock.fileno() != -1


def test_an_empty_host_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """"" made the resolver raise socket.gaierror "Name or service not known"; a server is told
    how to serve on every address instead: "::" is every address, IPv4 too (`dual_stack`; it
    said "every IPv6 address", as if IPv4 needed a second server: probe BG, F3)."""

    async def main() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        with pytest.raises(ConfigError) as refused:
            aio.connect("", 5684, client_config())
        assert str(refused.value) == EMPTY_HOST
        with pytest.raises(ConfigError) as refused:
            await aio.serve(echo, "", 0, server_config())
        assert str(refused.value) == (
            'host is empty: give "0.0.0.0" (every IPv4 address), "::" (every address, IPv4 '
            "too) or the address to serve on"
        )

    run(main())


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
@pytest.mark.parametrize("own_socket", [False, True], ids=["new-socket", "given-socket"])
def test_a_host_that_does_not_resolve_is_named(loop_choice: str, own_socket: bool) -> None:
    """The resolver's socket.gaierror said only "Name or service not known"; it now names the
    host, still a socket.gaierror with its errno (.invalid fails without any network)."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            given = sock if own_socket else None
            with pytest.raises(socket.gaierror) as failed:
                await aio.connect("nonexistent.invalid", 5684, client_config(), sock=given)
        assert failed.value.errno is not None and failed.value.errno < 0  # an EAI_ code
        assert str(failed.value.strerror).startswith(UNRESOLVED)

    run_on_loop(main(), loop_choice)


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
@pytest.mark.parametrize("own_socket", [False, True], ids=["new-socket", "given-socket"])
def test_a_link_local_address_without_its_interface_is_named(
    loop_choice: str, own_socket: bool
) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            given = sock if own_socket else None
            with pytest.raises(OSError) as failed:
                await aio.connect("fe80::1", 5684, client_config(), sock=given)
        assert (failed.value.errno, failed.value.strerror) == (errno.EINVAL, NEEDS_INTERFACE)

    run_on_loop(main(), loop_choice)


class _Connected(Exception):
    """Raised by `RecordsConnect.connect` once it has the address (no link to reach)."""


class RecordsConnect(socket.socket):
    """A socket that records the address it is connected to instead of connecting."""

    def connect(self, address: Any) -> None:
        raise _Connected(address)


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_given_socket_keeps_the_zone_of_a_link_local_address(loop_choice: str) -> None:
    """connect("fe80::1%eth0", sock=) and serve(sock=) used (host, port), scope id 0: "cannot
    reach [fe80::1%eth0]:P: Invalid argument" where sync.connect and the calls without sock=
    worked; the socket now gets the resolver's address with its scope id (RFC 4007 §11). A
    name with no address of the socket's family is refused as sync.connect refuses it (it
    said "cannot resolve localhost: Name or service not known")."""
    lo = socket.if_nametoindex("lo")
    port = free_udp_port()

    async def main() -> None:
        with RecordsConnect(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            with pytest.raises(_Connected) as connected:
                await aio.connect("fe80::1%lo", port, client_config(), sock=sock)
            assert connected.value.args[0] == ("fe80::1", port, 0, lo)
        with TakesAnyAddress(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bound = ("::", 0, 0, 0)
            server = await aio.serve(echo, "fe80::1%lo", port, server_config(), sock=sock)
            assert sock.bound == ("fe80::1", port, 0, lo)
            await server.close()
        with (
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
            pytest.raises(ConfigError) as refused,
        ):
            await aio.connect("v4.example", port, client_config(), sock=sock)
        assert str(refused.value) == (
            "sock is an AF_INET6 (IPv6) socket but v4.example has no address of that family: "
            "pass an AF_INET socket, or an IPv6 address"
        )

    resolved = [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (LOCALHOST, port))]
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        return resolved if host == "v4.example" else real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        run_on_loop(asyncio.wait_for(main(), 20.0), loop_choice)


def test_a_server_on_the_ipv6_unspecified_address_takes_ipv4_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`[::]:PORT` is every address, as README says, only where IPv6 sockets take IPv4 by
    default (Linux's net.ipv6.bindv6only=0): elsewhere a server on "::" never heard an IPv4
    client. It now turns IPV6_V6ONLY off itself; a specific IPv6 address and a socket given
    with sock= are left as they are. Its log names the IPv4 client as IPv4 ("peer
    127.0.0.1:41652", not "[::ffff:127.0.0.1]:41652"); the handler still sends to the
    address the socket gave."""
    addresses: list[Any] = []

    async def echo_noting(session: aio.ServerSession) -> None:
        addresses.append(session.address)
        await echo(session)

    async def main() -> None:
        port = free_udp_port()
        async with await aio.serve(echo_noting, "::", port, server_config()) as server:
            assert v6only(server._transport.get_extra_info("socket")) == 0
            async with aio.connect(LOCALHOST, port, client_config()) as client:
                client.send(b"over IPv4")
                assert await asyncio.wait_for(client.recv(), 5.0) == b"over IPv4"
                client_port = client.local_address[1]
        assert addresses[0][:2] == (f"::ffff:{LOCALHOST}", client_port)
        assert any(
            r.name == "iotdtls.aio" and f"peer {LOCALHOST}:{client_port} " in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        async with await aio.serve(echo, "::1", 0, server_config()) as server:
            assert v6only(server._transport.get_extra_info("socket")) == 1
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as given:
            server = await aio.serve(echo, "::", 0, server_config(), sock=given)
            assert v6only(given) == 1
            await server.close()

    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.INFO, "iotdtls.aio"):
        patch.setattr(socket, "socket", V6OnlyByDefault)
        run(main())


NONE_HOST = (
    'host is None: give "0.0.0.0" (every IPv4 address), "::" (every address, IPv4 too) or the '
    "address to serve on"
)


def test_a_server_on_host_none_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve(handler, None, ...) bound every address (getaddrinfo's passive lookup) though its
    host is typed str: a variable left unset exposed the server on every interface (probe CA).
    It is a TypeError saying how to ask for every address, before any socket is made."""

    async def main() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        unset: Any = None
        with pytest.raises(TypeError) as refused:
            await aio.serve(echo, unset, 0, server_config())
        assert str(refused.value) == NONE_HOST
        with pytest.raises(TypeError) as refused:
            aio.connect(unset, 5684, client_config())
        assert str(refused.value) == "host must be a str, got None"

    run(main())


def test_a_server_on_host_none_with_a_bound_sock_serves_it() -> None:
    """With `sock=` bound already, serve() uses neither host nor port (a host string is taken
    and unused), but a host of None was refused (probe CB): it is served where it is bound.
    A `sock` not bound yet would be bound to the host: None is refused there as without one,
    the socket left unbound."""

    async def main() -> None:
        unset: Any = None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as given:
            given.bind((LOCALHOST, 0))
            where = given.getsockname()
            async with aio.serve(echo, unset, 0, server_config(), sock=given) as server:
                assert server.address == where
                async with aio.connect(*where, client_config()) as conn:
                    conn.send(b"ping")
                    assert await asyncio.wait_for(conn.recv(), 5.0) == b"ping"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unbound:
            with pytest.raises(TypeError) as refused:
                aio.serve(echo, unset, 0, server_config(), sock=unbound)
            assert str(refused.value) == (
                'host is None and sock is not bound: bind it, or give "0.0.0.0", "::" or the '
                "address to bind it to"
            )
            assert unbound.getsockname() == ("0.0.0.0", 0)

    run(main())


def test_a_host_or_port_that_disagrees_with_a_bound_sock_is_refused() -> None:
    """serve(host, port, sock=s) with `s` bound already served on s's address whatever the
    host and port said, even a host of the other IP family (probe CK). A host or port that
    disagrees is a one-line ConfigError naming both, the socket left open and as it was; a
    name is refused unresolved; None, the bound address itself and port 0 or the bound port
    agree and serve."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as given:
            given.bind((LOCALHOST, 0))
            bound = given.getsockname()
            where = f"{LOCALHOST}:{bound[1]}"
            fix = f"give host None (served where it is bound) or {LOCALHOST!r}, and port 0 or " \
                  f"{bound[1]}"
            other_port = 1 if bound[1] != 1 else 2
            refusals: list[tuple[str | None, int, str]] = [
                ("::1", bound[1], f"host '::1' disagrees with sock, bound to {where}: {fix}"),
                ("0.0.0.0", 0, f"host '0.0.0.0' disagrees with sock, bound to {where}: {fix}"),
                ("127.0.0.2", 0, f"host '127.0.0.2' disagrees with sock, bound to {where}: {fix}"),
                ("localhost", bound[1], f"host 'localhost' is a name and sock is bound already, "
                 f"to {where}: a name is not resolved to compare; {fix}"),
                (LOCALHOST, other_port,
                 f"port {other_port} disagrees with sock, bound to {where}: {fix}"),
                (None, other_port,
                 f"port {other_port} disagrees with sock, bound to {where}: {fix}"),
            ]
            for host, port, message in refusals:
                with pytest.raises(ConfigError) as refused:
                    aio.serve(echo, host, port, server_config(), sock=given)
                assert str(refused.value) == message, (host, port)
                assert given.fileno() != -1 and given.getsockname() == bound
        agreeing: list[tuple[str | None, bool]] = [
            (None, False), (LOCALHOST, False), (LOCALHOST, True), (None, True)]
        for host, its_port in agreeing:
            served = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # closed with the server
            served.bind((LOCALHOST, 0))
            at = served.getsockname()
            async with aio.serve(echo, host, at[1] if its_port else 0, server_config(),
                                 sock=served) as server:
                assert server.address == at

    run(main())


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_serve_names_the_address_it_cannot_listen_on(loop_choice: str) -> None:
    """A bind that fails raised the kernel's or the resolver's bare words ("[Errno 98] Address
    already in use", "Name or service not known", "Invalid argument" for a link-local address
    without its interface); it now names the address, and the fix where there is one, as
    `connect` and the CLI do. Same type and errno, so `except OSError` still catches it."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind((LOCALHOST, 0))
            busy = holder.getsockname()[1]
            port = free_udp_port()
            cases: list[tuple[str, int, int | None, str]] = [
                (LOCALHOST, busy, errno.EADDRINUSE, "Address already in use"),
                ("192.0.2.1", port, errno.EADDRNOTAVAIL, "Cannot assign requested address"),
                ("fe80::1", port, errno.EINVAL,
                 f"a link-local address needs %interface, as in [fe80::1%eth0]:{port}"),
                ("nonexistent.invalid", port, None, ""),
            ]
            for host, at, code, reason in cases:
                with pytest.raises(OSError) as failed:
                    await aio.serve(echo, host, at, server_config())
                where = f"[{host}]:{at}" if ":" in host else f"{host}:{at}"
                assert str(failed.value.strerror).startswith(f"cannot listen on {where}: ")
                if code is None:
                    assert isinstance(failed.value, socket.gaierror)
                else:
                    assert failed.value.errno == code
                    assert failed.value.strerror == f"cannot listen on {where}: {reason}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as given, \
                    pytest.raises(OSError) as failed:
                await aio.serve(echo, LOCALHOST, busy, server_config(), sock=given)
            assert failed.value.strerror == (
                f"cannot listen on {LOCALHOST}:{busy}: Address already in use"
            )
            # A host that does not resolve, for a socket given unbound (M21: `_Serve._bind`
            # 21, 22: the resolver's error named None for the host or for the port).
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as given, \
                    pytest.raises(socket.gaierror) as failed:
                await aio.serve(echo, "nonexistent.invalid", port, server_config(), sock=given)
            assert str(failed.value.strerror).startswith(
                f"cannot listen on nonexistent.invalid:{port}: "
            )

    run_on_loop(asyncio.wait_for(main(), 20.0), loop_choice)


def narrow_path_socket() -> socket.socket:
    """An IPv6 UDP socket whose path MTU is 1280 bytes (IPV6_MTU) and that never fragments
    (IPV6_DONTFRAG): the kernel refuses a larger datagram at once with EMSGSIZE, as for a path
    narrower than `config.mtu`."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, 62, 1)  # IPV6_DONTFRAG (Linux)
    sock.setsockopt(socket.IPPROTO_IPV6, 24, 1280)  # IPV6_MTU (Linux)
    return sock


#: What `send` says when the kernel refused its datagram (RFC 6347 §4.1.1).
REFUSED_BY_THE_PATH = (
    "the network path refused a datagram of 1429 bytes (1400 bytes of application data) as "
    "too large (EMSGSIZE): lower mtu (now 1500) to the path's MTU"
)


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_datagram_the_path_refuses_raises_datagram_too_large(
    loop_choice: str, caplog: pytest.LogCaptureFixture
) -> None:
    """config.mtu above the path's: the kernel refuses the datagram (EMSGSIZE) and `send`
    raises `PathMtuExceeded` (a `DatagramTooLarge`) saying so (RFC 6347 §4.1.1), where it
    returned as if sent and the datagram was lost, and the DEBUG line said the retransmission
    timer would retry it. The association goes on; a server's session raises the same."""
    refusals: list[str] = []

    async def narrow_echo(session: aio.ServerSession) -> None:
        async for datagram in session:
            try:
                session.send(datagram)
            except PathMtuExceeded as exc:
                refusals.append(str(exc))
                session.send(b"refused")

    async def main() -> None:
        sock = narrow_path_socket()
        sock.bind(("::1", 0))
        config = server_config(mtu=1500)
        async with await aio.serve(narrow_echo, "::1", 0, config, sock=sock) as server:
            port = server.address[1]
            config = client_config(mtu=1500)
            async with aio.connect("::1", port, config, sock=narrow_path_socket()) as client:
                with pytest.raises(PathMtuExceeded) as refused:
                    client.send(b"q" * 1400)
                assert str(refused.value) == REFUSED_BY_THE_PATH
                # application data, as DatagramTooLarge counts it; the datagram: + CCM_8's 29
                assert (refused.value.size, refused.value.limit) == (1400, 1399)
                assert refused.value.datagram_size == 1400 + 29
                client.send(b"small")
                assert await asyncio.wait_for(client.recv(), 5.0) == b"small"
            async with aio.connect("::1", port, config) as client:  # a path without the limit
                client.send(b"w" * 1400)
                assert await asyncio.wait_for(client.recv(), 5.0) == b"refused"
        assert refusals == [REFUSED_BY_THE_PATH]

    with caplog.at_level(logging.DEBUG, logger="iotdtls.aio"):
        run_on_loop(asyncio.wait_for(main(), 20.0), loop_choice)
    errors = [r.getMessage() for r in caplog.records if "socket error" in r.getMessage()]
    assert errors and all(line.endswith(
        "(a datagram was lost: handshake flights are retransmitted, application data is not)"
    ) for line in errors)


class Broken(Exception):
    """What a test makes part of the set-up raise."""


def broken(*args: object, **kwargs: object) -> Any:
    raise Broken


@pytest.mark.parametrize("where", ["DtlsConnection", "DtlsConnection.connect", "remember_chain"])
def test_a_failed_connect_closes_the_socket_whatever_failed(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises while `connect` sets up (making the connection, which asyncio would call
    after making its socket; starting the handshake, in a loop callback; noting the chain
    after it) reaches the caller, at once, and the socket is closed."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            if where == "DtlsConnection":
                monkeypatch.setattr(aio, "DtlsConnection", broken)
            elif where == "DtlsConnection.connect":
                monkeypatch.setattr(aio.DtlsConnection, "connect", broken)
            else:
                monkeypatch.setattr(aio, "remember_chain", broken)
            made = udp_sockets_made(monkeypatch)
            with pytest.raises(Broken):
                await aio.connect(*server.address, client_config())
            assert [sock.fileno() for sock in made] in ([], [-1])

    run(main(), limit=5.0)


@pytest.mark.parametrize(("handler", "message"), WRONG_HANDLERS)
def test_serve_refuses_a_handler_that_cannot_handle_a_peer(
    handler: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At `serve` time, not from every peer's handler after its handshake."""

    async def main() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)  # the loop has its own already
        with pytest.raises(TypeError) as refused:
            await aio.serve(handler, LOCALHOST, 0, server_config())
        assert str(refused.value) == message

    run(main())


class AsyncCallable:
    async def __call__(self, session: aio.ServerSession) -> None:
        await echo(session)


def test_serve_takes_a_datagram_handler_instance_or_any_coroutine_function() -> None:
    """Also a partial of one, a bound async method and an object whose __call__ is async."""

    async def main() -> None:
        for handler in (EchoHandler(), echo, functools.partial(echo), AsyncCallable(),
                        AsyncCallable().__call__, functools.partial(AsyncCallable())):
            async with (
                await aio.serve(handler, LOCALHOST, 0, server_config()) as server,
                aio.connect(*server.address, client_config()) as client,
            ):
                client.send(b"ping")
                assert await client.recv() == b"ping"

    run(main())


def test_connect_is_a_coroutine_and_an_async_context_manager() -> None:
    """`await connect(...)`, `async with connect(...)`, and `connect(...)` given to
    `create_task`, `ensure_future` or `asyncio.run` as any coroutine; none of them (nor a
    `connect(...)` never used) leaves a coroutine that was never awaited, or a socket."""

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server_config()) as server:
            address = server.address
            opened = [
                await aio.connect(*address, client_config()),
                await asyncio.create_task(aio.connect(*address, client_config())),
                await asyncio.ensure_future(aio.connect(*address, client_config())),
            ]
            async with aio.connect(*address, client_config()) as within:
                opened.append(within)
                for number, conn in enumerate(opened):
                    conn.send(b"%d" % number)
                    assert await conn.recv() == b"%d" % number
            for conn in opened:
                await conn.close()
            unused = aio.connect(*address, client_config())
            del unused

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main())
        with pytest.raises((HandshakeTimeout, PortUnreachable)):  # nobody serves that port
            asyncio.run(aio.connect(LOCALHOST, free_udp_port(),
                                    client_config(handshake_timeout=0.5)))
        gc.collect()
    assert [w.message for w in caught if w.category in (RuntimeWarning, ResourceWarning)] == []


def test_connect_cancelled_while_making_its_socket_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An application that gives up on `connect` at once (shutting down; `asyncio.timeout`
    around `async with connect(...)`) cancels it while asyncio makes the socket: the socket
    closing then must not log "Future exception was never retrieved ... socket closed during
    the handshake" once the future is collected."""

    async def main() -> None:
        task = asyncio.create_task(aio.connect(LOCALHOST, free_udp_port(), client_config()))
        await asyncio.sleep(0)  # it is now inside create_datagram_endpoint
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # the transport's connection_lost runs
        del task
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(main(), limit=5.0)
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def refusal(send: Any, data: Any) -> str:
    """The message of the `TypeError` `send(data)` raises, checked to stand alone (not chained
    to the error from inside the cipher)."""
    with pytest.raises(TypeError) as refused:
        send(data)
    assert refused.value.__suppress_context__ or refused.value.__context__ is None
    return str(refused.value)


def test_a_send_past_the_last_record_number_ends_the_association_and_recv() -> None:
    """RFC 6347 §4.1: send() with the epoch's record numbers used up raises
    `SequenceNumbersExhausted`, and a recv waiting meanwhile ends with it at once."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        async with server, aio.connect(*server.address, client_config()) as client:
            waiting = asyncio.ensure_future(client.recv())
            conn = client.connection
            record_layer(conn).set_next_sequence_number(1, MAX_SEQUENCE_NUMBER - 1)
            conn.send(b"last")
            conn.datagrams_to_send(0.0)  # not sent: no echo to wake the recv
            with pytest.raises(SequenceNumbersExhausted) as info:
                client.send(b"one too many")
            assert conn.state is ConnectionState.CLOSED
            with pytest.raises(SequenceNumbersExhausted) as ended:
                await asyncio.wait_for(waiting, 2.0)
            assert ended.value is info.value

    run(main())


def test_send_refuses_data_that_is_not_bytes_like_in_one_line() -> None:
    """`send("text")` on a client or a server's session (even one that has ended) says what to
    pass; nothing is sent and the association goes on."""
    server_refusals: list[str] = []
    ended: list[aio.ServerSession] = []

    async def handler(session: aio.ServerSession) -> None:
        async for datagram in session:
            server_refusals.extend(refusal(session.send, data) for data, _ in NOT_BYTES)
            session.send(datagram)
        ended.append(session)

    async def main() -> None:
        async with await aio.serve(handler, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as client:
                assert [refusal(client.send, data) for data, _ in NOT_BYTES] == [
                    message for _, message in NOT_BYTES
                ]
                client.send(memoryview(b"ping"))
                assert await client.recv() == b"ping"
            assert await eventually(lambda: ended)
            assert refusal(ended[0].send, "late") == NOT_BYTES[0][1]

    run(main())
    assert server_refusals == [message for _, message in NOT_BYTES]


def test_send_takes_a_memoryview_of_any_format_as_its_bytes() -> None:
    """A client's and a session's `send` send a view of 2- or 4-byte items whole (the cipher
    refused it) and refuse one that is not contiguous in one line, a session's once its
    association has ended too (probe CE F1), and one released already likewise (Python's
    ValueError, probe CF F4)."""
    echoed: list[bytes] = []
    refused: list[str] = []
    ended: list[aio.ServerSession] = []

    async def handler(session: aio.ServerSession) -> None:
        async for datagram in session:
            refused.append(refusal(session.send, NOT_CONTIGUOUS[0]))
            refused.append(refusal(session.send, RELEASED[0]))
            session.send(memoryview(bytearray(datagram)).cast("H"))  # 4 bytes: 2 items
        ended.append(session)

    async def main() -> None:
        async with await aio.serve(handler, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as client:
                assert refusal(client.send, NOT_CONTIGUOUS[0]) == NOT_CONTIGUOUS[1]
                assert refusal(client.send, RELEASED[0]) == RELEASED[1]
                for view, _ in VIEWS[:2]:
                    client.send(view)
                    data = await asyncio.wait_for(client.recv(), 5.0)
                    assert data is not None
                    echoed.append(data)
            assert await eventually(lambda: ended)
            assert refusal(ended[0].send, NOT_CONTIGUOUS[0]) == NOT_CONTIGUOUS[1]
            assert refusal(ended[0].send, RELEASED[0]) == RELEASED[1]

    run(main())
    assert echoed == [sent for _, sent in VIEWS[:2]]
    assert refused == [NOT_CONTIGUOUS[1], RELEASED[1]] * 2


def test_a_wake_up_due_at_once_on_uvloop_does_not_break_the_next_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop hands back a plain `Handle` (no `when()`) for a time under 1 ms away: the server
    keeps the time it asked for itself, so the flush after such a wake-up (here with a later
    deadline, which keeps the earlier wake-up) does not fail, and the wake-up still fires."""

    async def main() -> None:
        server = await aio.serve(echo, LOCALHOST, 0, server_config())
        try:
            protocol = server._protocol
            now = asyncio.get_running_loop().time()
            deadlines: list[float] = [now, now + 5.0]
            monkeypatch.setattr(
                protocol.endpoint, "get_timer", lambda: deadlines.pop(0) if deadlines else None
            )
            protocol.flush()
            assert type(protocol._timer) is not asyncio.TimerHandle  # uvloop's plain Handle
            protocol.flush()  # a later deadline: the armed wake-up stays
            assert await eventually(lambda: protocol._timer is None)  # it fired
            assert deadlines == []
        finally:
            await server.close()

    assert run_on_loop(main(), "uvloop") is None


def test_a_failed_handshake_names_a_certificate_as_claimed_only(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client whose CertificateVerify does not verify (RFC 5246 §7.4.8) never proved the
    certificate it sent: the server's log line calls it claimed, not the peer's identity."""
    from iotdtls.handshake import client as client_handshake

    client, server = x509_configs(client={"handshake_timeout": 3.0})
    assert client.certificate is not None
    key, real = client.certificate.private_key, client_handshake.CertificateVerify

    def forged(scheme: Any, signature: bytes) -> Any:
        return real(scheme, key.sign_digest(bytes(32)))  # a signature over another transcript

    monkeypatch.setattr(client_handshake, "CertificateVerify", forged)

    async def main() -> None:
        async with await aio.serve(echo, LOCALHOST, 0, server) as running:
            with pytest.raises(DtlsError):
                async with aio.connect(LOCALHOST, running.address[1], client):
                    pass
            assert await eventually(lambda: running.stats.handshakes_failed, 2.0)

    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        run(main())
    (line,) = [r.getMessage() for r in caplog.records if "handshake failed:" in r.getMessage()]
    assert re.match(rf"handshake failed: peer 127\.0\.0\.1:\d+ claimed certificate {CLIENT_EUI64}: "
                    "sent fatal alert decrypt_error", line), line


@pytest.mark.req("RES-1")
def test_a_resumed_client_closing_before_its_lost_finished_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resumed client sends and closes at once while its ChangeCipherSpec and Finished are
    lost (inherent to DTLS: nothing acknowledges its last flight). The server's log line says
    why the data it held went, and the counters still add up: one failed handshake, one
    DATA_BEFORE_HANDSHAKE record, the gate's accepted associations all accounted for."""
    got: list[bytes] = []

    async def collect(session: aio.ServerSession) -> None:
        async for data in session:
            got.append(data)

    async def main() -> None:
        async with await aio.serve(collect, LOCALHOST, 0, server_config()) as server:
            async with aio.connect(*server.address, client_config()) as first:
                session = first.session
            with LossyProxy(server.address, seed=0, drop={("client", 3)}, lifetime=20) as p:
                async with aio.connect(*p.address, client_config(), session=session) as again:
                    assert again.resumed
                    again.send(b"reading 42")
                assert await eventually(lambda: server.stats.handshakes_failed, 2.0)
                stats = server.stats
            assert (stats.handshakes_completed, stats.handshakes_failed) == (1, 1)
            accepted = stats.gate["COOKIE_ACCEPTED"]
            assert accepted == stats.handshakes_completed + stats.handshakes_failed
            assert stats.discards["DATA_BEFORE_HANDSHAKE"] == 1
            assert got == []

    with caplog.at_level(logging.INFO, logger="iotdtls.aio"):
        run(main())
    failed = [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].endswith(
        "the peer closed the association (close_notify) (before its Finished arrived; "
        "1 held record of its data dropped)"
    )
