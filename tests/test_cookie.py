"""The stateless cookie exchange (RFC 6347 §4.2.1; HS-2 server side, HS-1 client side).

Before a valid cookie the server endpoint keeps no per-peer state and answers no more bytes
than it got; a cookie binds the client's address and ClientHello; the secret rotates and the
previous one stays valid; cookies are compared in constant time (SEC-2). The client answers
every HelloVerifyRequest, a second one included, and stops after a few.
"""

from __future__ import annotations

import dataclasses
import hmac

import pytest

import iotdtls.endpoint
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import COOKIE_LENGTH, CookieJar, GateOutcome, ServerEndpoint
from iotdtls.errors import AlertDescription, AlertSent, DecodeError
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    CipherSuite,
    ClientHello,
    ExtendedMasterSecret,
    HandshakeType,
    HelloVerifyRequest,
    UnknownExtension,
)
from iotdtls.messages.handshake import encode_message_header
from iotdtls.record import MAX_PLAINTEXT_LENGTH, ContentType, RecordHeader, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    established,
    handshake_record,
    make_link,
    message_types,
    plain_handshake,
    records,
    wire_from,
)


def server(rotation: float = 300.0) -> ServerEndpoint:
    return ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}, cookie_rotation=rotation))


def hello(
    cookie: bytes = b"", random: bytes = bytes(32), suites: int = 1, ems: bool = True
) -> ClientHello:
    """A small ClientHello: one or two suites, null compression, at most EMS (RFC 7627)."""
    offered = (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8, 0xC0AE)[:suites]
    exts = (ExtendedMasterSecret(),) if ems else ()
    return ClientHello(DTLS_1_2, random, b"", cookie, offered, (0,), exts)


def hello_datagram(msg: ClientHello, seq: int = 0) -> bytes:
    return handshake_record(RecordLayer(), HandshakeType.client_hello, seq, msg.encode())


def ask(endpoint: ServerEndpoint, datagram: bytes, addr: object, now: float = 0.0) -> list[bytes]:
    endpoint.receive_datagram(datagram, addr, now)
    return [data for data, to in endpoint.datagrams_to_send(now) if to == addr]


def cookie_of(answer: list[bytes]) -> bytes:
    """The cookie of a one-datagram HelloVerifyRequest answer."""
    assert len(answer) == 1, answer
    ((hs, body),) = plain_handshake(answer[0])
    assert hs.msg_type == HandshakeType.hello_verify_request
    hvr = HelloVerifyRequest.decode(body)
    assert hvr.server_version in (DTLS_1_0, DTLS_1_2)
    return hvr.cookie


@pytest.mark.req("HS-2")
def test_no_state_before_a_valid_cookie() -> None:
    endpoint = server()
    for n in range(3000):
        addr = (f"10.{n // 250}.{n % 250}.1", 1000 + n)
        random = n.to_bytes(32, "big")
        cookie_of(ask(endpoint, hello_datagram(hello(random=random)), addr))
        # A wrong cookie does not help either.
        cookie_of(ask(endpoint, hello_datagram(hello(cookie=bytes(16), random=random)), addr))
    assert endpoint.connections == {}
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 6000
    assert endpoint.get_timer() is None


@pytest.mark.req("HS-2")
@pytest.mark.parametrize("suites", [1, 2])
def test_hello_verify_request_never_larger_than_the_hello(suites: int) -> None:
    endpoint = server()
    minimal = hello_datagram(hello(suites=suites, ems=False))  # the smallest there is
    answer = ask(endpoint, minimal, CLIENT_ADDR)
    assert len(cookie_of(answer)) >= 16
    assert len(answer[0]) <= len(minimal)
    # Our own client's ClientHello too.
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(0.0)
    (ours,) = client.datagrams_to_send(0.0)
    assert len(ask(endpoint, ours, CLIENT_ADDR)[0]) <= len(ours)
    # The HelloVerifyRequest reuses the ClientHello's record sequence number (RFC 6347 §4.2.1).
    assert records(answer[0])[0][0].sequence_number == records(minimal)[0][0].sequence_number


@pytest.mark.req("HS-2")
def test_garbage_from_unknown_addresses_gets_no_answer() -> None:
    endpoint = server()
    good = hello_datagram(hello())
    for junk in [b"", b"\x16", good[:20], good[:-5], b"\x17" + good[1:], bytes(200)]:
        assert ask(endpoint, junk, CLIENT_ADDR) == []
    assert endpoint.connections == {}


@pytest.mark.req("HS-2")
def test_a_hello_not_whole_in_its_record_gets_no_answer() -> None:
    """The gate answers only a ClientHello in one fragment (offset 0, fragment_length ==
    length) that its record holds whole; each header field that says otherwise, bytes 13-24 of
    the datagram (RFC 6347 §4.2.2), is refused on its own."""
    endpoint = server()
    good = hello_datagram(hello())
    assert len(cookie_of(ask(endpoint, good, CLIENT_ADDR))) == COOKIE_LENGTH

    def with_bytes(at: int, new: bytes) -> bytes:
        return good[:at] + new + good[at + len(new) :]

    body_length = len(good) - 25
    longer = bytearray(good)  # whole, and longer than what is sent
    longer[14:17] = longer[22:25] = (body_length + 1).to_bytes(3, "big")
    longer[11:13] = (12 + body_length + 1).to_bytes(2, "big")  # the record claims it too
    variants = [
        with_bytes(13, bytes([HandshakeType.server_hello])),  # not a ClientHello
        with_bytes(19, b"\x01\x00\x00"),  # fragment_offset 65536, fragment_length == length
        with_bytes(19, b"\x00\x01\x00"),  # fragment_offset 256 (its middle byte)
        with_bytes(19, b"\x00\x00\x01"),  # fragment_offset 1
        with_bytes(22, (body_length - 1).to_bytes(3, "big")),  # a first fragment only
        # a later part: at offset 256 of a message 256 bytes longer than this fragment
        with_bytes(14, (body_length + 256).to_bytes(3, "big") + good[17:19] + b"\x00\x01\x00"),
        bytes(longer),
        with_bytes(11, (12 + body_length - 1).to_bytes(2, "big")),  # record cuts it short
        with_bytes(3, b"\x00\x01"),  # epoch 1
    ]
    for n, variant in enumerate(variants):
        assert len(variant) == len(good)
        assert ask(endpoint, variant, ("192.0.2.50", 1000 + n)) == [], n
    # The first fragment and the later part are a ClientHello in parts (RFC 6347 §4.2.3), the
    # rest malformed.
    assert endpoint.gate[GateOutcome.FRAGMENTED_CLIENT_HELLO] == 2
    assert endpoint.gate[GateOutcome.NOT_A_CLIENT_HELLO] == len(variants) - 2
    assert endpoint.connections == {}


def padded_hello(pad: int, cookie: bytes = b"") -> bytes:
    """A whole ClientHello in one epoch-0 record, padded by an unknown extension of `pad`
    bytes (the record made by hand: `RecordLayer.seal` refuses one over 2^14 bytes)."""
    msg = hello(cookie)
    padding = UnknownExtension(0xFFEE, bytes(pad))
    body = dataclasses.replace(msg, extensions=(*msg.extensions, padding)).encode()
    payload = encode_message_header(HandshakeType.client_hello, len(body), 0) + body
    return RecordHeader(ContentType.handshake, DTLS_1_2, 0, 0, len(payload)).encode() + payload


@pytest.mark.req("HS-2")
def test_a_clienthello_record_over_2_14_bytes_is_dropped_before_any_cookie_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record longer than 2^14 bytes is malformed (RFC 6347 §4.1, RFC 5246 §6.2.1: the
    length "MUST NOT exceed 2^14") and is discarded silently (RFC 6347 §4.1.2.7): the gate
    neither answers it with a HelloVerifyRequest nor, with a valid cookie, starts an
    association that would drop it as bad_length and hold a slot until its timeout (probe BY
    t15), and it computes no MAC over it. One of exactly 2^14 bytes is a ClientHello."""
    endpoint = server()
    pad = MAX_PLAINTEXT_LENGTH + 13 - len(padded_hello(0))
    largest = padded_hello(pad)
    assert len(largest) == 13 + MAX_PLAINTEXT_LENGTH
    assert len(cookie_of(ask(endpoint, largest, CLIENT_ADDR))) == COOKIE_LENGTH
    too_long = padded_hello(pad + 1)
    without_cookie, _ = iotdtls.endpoint._split_cookie(too_long[25:])
    cookie = endpoint._cookies.make(0.0, repr(CLIENT_ADDR).encode(), without_cookie)
    with_cookie = padded_hello(pad + 1, cookie)  # one the gate would let in
    macs = []
    cookie_mac = CookieJar._cookie
    monkeypatch.setattr(CookieJar, "_cookie", lambda *a: macs.append(1) or cookie_mac(*a))
    for datagram in (too_long, with_cookie):
        assert ask(endpoint, datagram, CLIENT_ADDR) == []
    assert macs == []
    assert endpoint.connections == {}
    assert endpoint.gate[GateOutcome.NOT_A_CLIENT_HELLO] == 2
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 1


@pytest.mark.req("HS-2")
def test_the_hello_verify_request_reuses_a_large_record_sequence_number() -> None:
    """RFC 6347 §4.2.1: the HelloVerifyRequest carries the ClientHello's record sequence
    number, all 48 bits of it (a client restarting its numbering need not start at 0)."""
    good = hello_datagram(hello())
    for seq in (5, (1 << 32) + 5, (1 << 48) - 2):
        datagram = good[:5] + seq.to_bytes(6, "big") + good[11:]
        answer = ask(server(), datagram, CLIENT_ADDR)
        assert len(cookie_of(answer)) == COOKIE_LENGTH
        assert records(answer[0])[0][0].sequence_number == seq


def test_the_gate_finds_the_cookie_by_its_length_bytes() -> None:
    """The gate reads a ClientHello body only up to its cookie (RFC 6347 §4.2.1:
    client_version, random, session_id<0..32>, cookie<0..2^8-1>): a body cut before a length
    byte, or whose cookie runs past its end, is a DecodeError; one that ends right after the
    cookie splits (the handshake checks the rest)."""
    split = iotdtls.endpoint._split_cookie
    head = bytes(2 + 32)
    session_id, cookie, rest = b"\x11" * 4, b"\xcc" * 16, b"\x00\x02\xc0\xa8\x01\x00"
    body = head + bytes([len(session_id)]) + session_id + bytes([len(cookie)]) + cookie + rest
    without = head + bytes([len(session_id)]) + session_id + rest
    assert split(body) == (without, cookie)
    at_cookie = 2 + 32 + 1 + len(session_id)
    assert split(body[: at_cookie + 1 + len(cookie)]) == (body[:at_cookie], cookie)
    for cut in (0, 34, at_cookie, at_cookie + len(cookie)):
        with pytest.raises(DecodeError):
            split(body[:cut])


@pytest.mark.req("HS-2")
def test_cookie_binds_address_and_hello() -> None:
    endpoint = server()
    cookie = cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR))
    other_addr = ("192.0.2.1", 40001)
    # Another address: refused with a fresh HelloVerifyRequest, no state.
    assert cookie_of(ask(endpoint, hello_datagram(hello(cookie=cookie)), other_addr)) != cookie
    # The ClientHello altered after the cookie (other random, other suites): refused.
    altered = [hello(cookie=cookie, random=b"\x01" * 32), hello(cookie=cookie, suites=2)]
    for msg in altered:
        assert cookie_of(ask(endpoint, hello_datagram(msg), CLIENT_ADDR)) != cookie
    assert endpoint.connections == {}
    # The same ClientHello with its cookie, from its address: accepted.
    ask(endpoint, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR)
    assert CLIENT_ADDR in endpoint.connections
    assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1


@pytest.mark.req("HS-2")
def test_rotating_secret() -> None:
    endpoint = server(rotation=10.0)
    cookie = cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR, now=9.9))
    # The same address and ClientHello at the same time get the same cookie ...
    assert cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR, now=9.9)) == cookie
    # ... and after a rotation, at the same issue time modulo 2^32 ms, another one: only the
    # secret changed.
    wrapped = 9.9 + 2**32 / 1000
    rotated = cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR, now=wrapped))
    assert rotated[:4] == cookie[:4] and rotated != cookie
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 3
    # After one rotation the previous secret's cookie is still accepted.
    ask(endpoint, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR, now=10.5)
    assert CLIENT_ADDR in endpoint.connections
    assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1
    # After two rotations (a cookie made at 9.9 s, the secret used since at 10 s and 20 s):
    # refused with a new cookie, and no state.
    later = server(rotation=10.0)
    cookie = cookie_of(ask(later, hello_datagram(hello()), CLIENT_ADDR, now=9.9))
    answer = ask(later, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR, now=20.5)
    assert cookie_of(answer) != cookie
    assert later.connections == {}
    assert later.gate[GateOutcome.HELLO_VERIFY_SENT] == 2
    assert later.gate[GateOutcome.COOKIE_ACCEPTED] == 0


@pytest.mark.req("HS-2", "SEC-2")
def test_cookie_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = iotdtls.endpoint.constant_time_equal

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(iotdtls.endpoint, "constant_time_equal", spy)
    endpoint = server()
    cookie = cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR))
    calls.clear()
    ask(endpoint, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR)
    assert CLIENT_ADDR in endpoint.connections
    assert calls and any(b == cookie for _, b in calls)


@pytest.mark.req("HS-2")
def test_cookie_jar_rejects_wrong_lengths() -> None:
    jar = CookieJar(60.0)
    good = jar.make(1.0, b"addr", b"hello")
    assert jar.verify(1.0, b"addr", b"hello", good)
    for bad in (b"", good[:-1], good + b"\x00", bytes(len(good))):
        assert not jar.verify(1.0, b"addr", b"hello", bad)
    assert not jar.verify(1.0, b"addr2", b"hello", good)


@pytest.mark.req("HS-2")
def test_cookie_carries_its_issue_time_under_the_mac() -> None:
    """A cookie starts with its issue time (ms of the endpoint's clock, mod 2^32), which the
    MAC covers: a cookie of the old format (the MAC alone), one whose time was altered, and
    one issued later than the clock allows (1 s of slack) are refused (RFC 6347 §4.2.8: the
    time tells a restarted client's cookie from a replayed one)."""
    master = bytes(range(32))
    jar = CookieJar(60.0, master)
    good = jar.make(10.0, b"addr", b"hello")
    assert len(good) == COOKIE_LENGTH <= 32
    assert good[:4] == (10_000).to_bytes(4, "big")
    assert jar.verify(10.0, b"addr", b"hello", good)
    # The old format: HMAC-SHA256 over the address and the hello, 16 bytes, no time.
    old_format = hmac.digest(master, b"addr" + b"hello", "sha256")[:16]
    assert not jar.verify(10.0, b"addr", b"hello", old_format)
    assert not jar.verify(10.0, b"addr", b"hello", bytes(4) + old_format)
    # The time altered (earlier, later, by one tick): the MAC no longer verifies.
    for issued in (9_000, 10_001, 11_000):
        assert not jar.verify(11.0, b"addr", b"hello", issued.to_bytes(4, "big") + good[4:])
    # Issued ahead of the clock (same period, valid MAC): beyond 1 s refused, within accepted.
    assert not jar.verify(8.5, b"addr", b"hello", good)
    assert jar.verify(9.5, b"addr", b"hello", good)
    # Through the endpoint: a tampered time gets a new HelloVerifyRequest, and no state.
    endpoint = server()
    cookie = cookie_of(ask(endpoint, hello_datagram(hello()), CLIENT_ADDR, now=5.0))
    tampered = (int.from_bytes(cookie[:4], "big") + 1).to_bytes(4, "big") + cookie[4:]
    answer = ask(endpoint, hello_datagram(hello(cookie=tampered), seq=1), CLIENT_ADDR, now=6.0)
    assert cookie_of(answer) != tampered
    assert endpoint.connections == {}
    assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 0


@pytest.mark.req("HS-2", "HS-1")
def test_cookie_exchange_can_be_switched_off() -> None:
    link = make_link(cookie=False)
    link.handshake()
    assert established(link)
    assert message_types(wire_from(link, "server"))[0] == HandshakeType.server_hello
    assert len(wire_from(link, "client")) == 2  # ClientHello, then flight 5


def test_without_cookie_exchange_the_gate_counts_no_cookie_accepted() -> None:
    """`--no-cookie` logged "cookie_accepted" for associations where no cookie was exchanged:
    they are counted as what happened, a ClientHello accepted without a cookie."""
    endpoint = ServerEndpoint(ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=False))
    ask(endpoint, hello_datagram(hello()), CLIENT_ADDR)
    assert CLIENT_ADDR in endpoint.connections
    assert endpoint.gate == {GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE: 1}
    ask(endpoint, hello_datagram(hello()), ("192.0.2.60", 6000))  # each one counted
    assert endpoint.gate == {GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE: 2}


def client_hellos(datagrams: list[bytes]) -> list[tuple[int, bytes]]:
    return [
        (hs.message_seq, ClientHello.decode(body).cookie)
        for d in datagrams
        for hs, body in plain_handshake(d)
        if hs.msg_type == HandshakeType.client_hello
    ]


@pytest.mark.req("HS-1")
def test_client_answers_a_second_hello_verify_request() -> None:
    endpoint = server(rotation=10.0)
    client = DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY))
    client.connect(0.0)
    sent: list[bytes] = []
    now = 0.0
    for _ in range(10):  # bounded: a handful of round trips
        out = client.datagrams_to_send(now)
        if not out:
            break
        sent += out
        for data in out:
            endpoint.receive_datagram(data, CLIENT_ADDR, now)
        for data, _ in endpoint.datagrams_to_send(now):
            client.receive_datagram(data, now)
        now = 25.0  # the second ClientHello arrives two rotations later: its cookie is stale
    assert client.state is ConnectionState.ESTABLISHED
    hellos = client_hellos(sent)
    assert [seq for seq, _ in hellos] == [0, 1, 2]
    assert hellos[0][1] == b"" and hellos[1][1] and hellos[2][1]
    assert hellos[1][1] != hellos[2][1]
    assert endpoint.gate[GateOutcome.HELLO_VERIFY_SENT] == 2
    assert endpoint.gate[GateOutcome.COOKIE_ACCEPTED] == 1


@pytest.mark.req("HS-1")
def test_client_gives_up_after_endless_hello_verify_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CookieJar, "verify", lambda self, *args: False)
    link = make_link()
    link.handshake()
    assert link.client.state is ConnectionState.CLOSED
    assert isinstance(link.client.error, AlertSent)
    assert link.client.error.alert is AlertDescription.handshake_failure
    assert len(client_hellos(wire_from(link, "client"))) == 5
    assert link.server.connections == {}


@pytest.mark.req("HS-1", "HS-2")
def test_hello_verify_request_is_answered_with_the_same_hello() -> None:
    link = make_link()
    link.handshake()
    first, second = (
        ClientHello.decode(body)
        for d in wire_from(link, "client")[:2]
        for _, body in plain_handshake(d)
    )
    assert second.cookie and not first.cookie
    assert second.random == first.random
    assert second.cipher_suites == first.cipher_suites
    assert second.extensions == first.extensions
    hvr_header = records(wire_from(link, "server")[0])[0][0]
    assert hvr_header.content_type == ContentType.handshake
    assert hvr_header.version == DTLS_1_0  # RFC 6347 §4.2.1: the safe record version


@pytest.mark.req("HS-2")
def test_restarted_client_replaces_a_half_open_flow_after_the_cookie() -> None:
    """RFC 6347 §4.2.8: a new ClientHello from a known address goes through the cookie gate;
    the old flow is replaced only once the new cookie proves the address."""
    link = make_link(fate=lambda d, i, data: "drop" if d == "server" and i >= 2 else "deliver")
    link.client.connect(0.0)
    link.run(stop=lambda lk: lk.server_conn is not None)
    old = link.server_conn
    assert old is not None
    restarted = make_link()
    restarted.server = link.server
    restarted.now = link.now
    restarted.handshake()
    assert restarted.client.state is ConnectionState.ESTABLISHED
    assert link.server.connections[CLIENT_ADDR] is not old
    assert link.server.connections[CLIENT_ADDR].state is ConnectionState.ESTABLISHED


@pytest.mark.req("HS-1")
def test_restarted_client_drops_a_server_hello_held_from_before_its_cookie() -> None:
    """RFC 6347 §4.2.1: a HelloVerifyRequest restarts the exchange. The server's flight for a
    previous client on the same address (ServerHello message_seq 1, ServerHelloDone 2) reaches
    the restarted client before its own HelloVerifyRequest: held for later, it must not answer
    the ClientHello sent after the cookie (it did: decrypt_error, both sides blamed the key)."""
    endpoint = server()
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY)
    first = DtlsConnection(config)
    first.connect(0.0)
    for data in first.datagrams_to_send(0.0):
        endpoint.receive_datagram(data, CLIENT_ADDR, 0.0)
    for data, _ in endpoint.datagrams_to_send(0.0):
        first.receive_datagram(data, 0.0)  # the HelloVerifyRequest
    for data in first.datagrams_to_send(0.0):
        endpoint.receive_datagram(data, CLIENT_ADDR, 0.0)  # the ClientHello with the cookie
    stale = [data for data, _ in endpoint.datagrams_to_send(0.0)]
    assert message_types(stale) == [
        HandshakeType.server_hello,
        HandshakeType.server_hello_done,
    ]
    client = DtlsConnection(config)  # the first client restarted, same address
    client.connect(0.0)
    hello_out = client.datagrams_to_send(0.0)
    for data in stale:
        client.receive_datagram(data, 0.0)
    assert client.datagrams_to_send(0.0) == []
    out = hello_out
    for _ in range(10):  # bounded: a handful of round trips
        for data in out:
            endpoint.receive_datagram(data, CLIENT_ADDR, 0.0)
        for data, _ in endpoint.datagrams_to_send(0.0):
            client.receive_datagram(data, 0.0)
        out = client.datagrams_to_send(0.0)
        if not out:
            break
    assert client.state is ConnectionState.ESTABLISHED, client.error
    assert endpoint.connections[CLIENT_ADDR].state is ConnectionState.ESTABLISHED


@pytest.mark.req("HS-2")
def test_endpoints_sharing_a_cookie_secret_accept_each_others_cookies() -> None:
    """Server processes given one master secret (`iotdtls.workers`) make the same cookies,
    rotate in step and accept the previous period's; another secret does not verify them."""
    secret = bytes(range(32))

    def endpoint(master: bytes) -> ServerEndpoint:
        config = ServerConfig(psk_store={IDENTITY: KEY}, cookie_rotation=10.0,
                              cookie_secret=master)
        return ServerEndpoint(config)

    first, second, stranger = endpoint(secret), endpoint(secret), endpoint(bytes(32))
    cookie = cookie_of(ask(first, hello_datagram(hello()), CLIENT_ADDR, now=9.0))
    assert cookie_of(ask(second, hello_datagram(hello()), CLIENT_ADDR, now=9.0)) == cookie
    assert cookie_of(ask(stranger, hello_datagram(hello()), CLIENT_ADDR, now=9.0)) != cookie
    # The previous period's cookie, made by `first`, is accepted by `second` after a rotation.
    ask(second, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR, now=15.0)
    assert second.gate[GateOutcome.COOKIE_ACCEPTED] == 1
    answer = ask(stranger, hello_datagram(hello(cookie=cookie), seq=1), CLIENT_ADDR, now=15.0)
    assert cookie_of(answer) != cookie
    assert stranger.connections == {}
    # Rotated in step: the next period's cookie is the same at both, and a new one.
    other = ("192.0.2.9", 1)
    rotated = cookie_of(ask(first, hello_datagram(hello()), other, now=15.0))
    assert cookie_of(ask(second, hello_datagram(hello()), other, now=15.0)) == rotated
    wrapped = 15.0 - 2**32 / 1000  # the same issue time modulo 2^32 ms, the period before
    assert rotated != cookie_of(ask(first, hello_datagram(hello()), other, now=wrapped))


@pytest.mark.req("HS-2")
def test_cookie_jars_without_a_master_secret_differ() -> None:
    one, two = CookieJar(60.0), CookieJar(60.0)
    assert one.make(1.0, b"addr", b"hello") != two.make(1.0, b"addr", b"hello")
    assert not two.verify(1.0, b"addr", b"hello", one.make(1.0, b"addr", b"hello"))


@pytest.mark.parametrize(
    ("record_seq", "message_seq", "cookie"),
    [(0, 0, b""), (5, 1, bytes(range(COOKIE_LENGTH))), ((1 << 48) - 2, 0xFFFF, b"c" * 255)],
)
def test_the_gate_s_hello_verify_request_is_the_message_in_its_record(
    record_seq: int, message_seq: int, cookie: bytes
) -> None:
    """The gate packs its HelloVerifyRequest in one go: the same bytes as the message encoded
    behind its handshake header in a DTLS 1.0 record of epoch 0 (RFC 6347 §4.2.1, §4.2.2)."""
    body = HelloVerifyRequest(DTLS_1_0, cookie).encode()
    payload = encode_message_header(HandshakeType.hello_verify_request, len(body), message_seq)
    payload += body
    header = RecordHeader(ContentType.handshake, DTLS_1_0, 0, record_seq, len(payload))
    datagram = iotdtls.endpoint._hello_verify_datagram(record_seq, message_seq, cookie)
    assert datagram == header.encode() + payload
