"""What the two sides agree on, and what each refuses to agree on.

REC-4 / PSK-1: only TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655) and null compression (RFC 5246
§7.4.1.2, RFC 7925 §5) are ever chosen; a ClientHello without them is refused by the server and
a ServerHello choosing anything else is refused by the client (RFC 5246 §7.4.1.3: a suite or
compression method the client did not offer is illegal_parameter). RES-3: the extended master
secret (RFC 7627 §5) is required by default on both sides and may be switched off on both.
EXT-3: truncated_hmac (RFC 6066 §7) is never echoed by our server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest

import iotdtls.connection
from iotdtls.config import ServerConfig
from iotdtls.connection import ConnectionState
from iotdtls.crypto import extended_master_secret, master_secret, psk_premaster_secret
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertLevel, AlertReceived, AlertSent
from iotdtls.events import ConnectionClosed, HandshakeComplete
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import (
    DTLS_1_2,
    CipherSuite,
    ClientHello,
    ExtendedMasterSecret,
    Extension,
    ExtensionType,
    HandshakeType,
    RenegotiationInfo,
    ServerHello,
    UnknownExtension,
    find_extension,
)
from iotdtls.record import ContentType, RecordHeader, RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    Fate,
    FateFn,
    LegacyClient,
    MemoryLink,
    established,
    events_of,
    handshake_record,
    make_link,
    plain_alert,
    plain_handshake,
    records,
    wire_from,
)

CCM_8 = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8
PSK_WITH_AES_128_CBC_SHA256 = 0x00AE  # RFC 5487: MAC-then-encrypt CBC, not AEAD
PSK_WITH_NULL_SHA256 = 0x00B0  # RFC 5487: no encryption at all
DEFLATE = 1  # RFC 3749


def hello(
    suites: tuple[int, ...] = (CCM_8,),
    compression: tuple[int, ...] = (0,),
    extensions: tuple[Extension, ...] = (RenegotiationInfo(b""), ExtendedMasterSecret()),
) -> ClientHello:
    return ClientHello(
        client_version=DTLS_1_2,
        random=bytes(range(32)),
        session_id=b"",
        cookie=b"",
        cipher_suites=suites,
        compression_methods=compression,
        extensions=extensions,
    )


def answer(msg: ClientHello, require_ems: bool = True) -> tuple[list[bytes], ServerEndpoint]:
    """What a server (cookie exchange off: the hello reaches the handshake) sends back."""
    config = ServerConfig(
        psk_store={IDENTITY: KEY},
        cookie_exchange=False,
        require_extended_master_secret=require_ems,
    )
    endpoint = ServerEndpoint(config)
    datagram = handshake_record(RecordLayer(), HandshakeType.client_hello, 0, msg.encode())
    endpoint.receive_datagram(datagram, CLIENT_ADDR, 0.0)
    return [d for d, _ in endpoint.datagrams_to_send(0.0)], endpoint


def assert_refused(msg: ClientHello, alert: AlertDescription) -> None:
    """The server answers `msg` with exactly one fatal `alert`, keeps no association and reports
    the failure as AlertSent naming it (ERR-1)."""
    out, endpoint = answer(msg)
    assert len(out) == 1, [d.hex() for d in out]
    sent = plain_alert(out[0])
    assert sent is not None and (sent.level, sent.description) == (AlertLevel.FATAL, alert)
    assert plain_handshake(out[0]) == []  # no ServerHello went out
    assert endpoint.connections == {}
    item = endpoint.next_event()
    assert item is not None and isinstance(item[1], ConnectionClosed)
    assert isinstance(item[1].error, AlertSent) and item[1].error.alert is alert


def server_hello_of(datagrams: list[bytes]) -> ServerHello:
    (body,) = [b for d in datagrams for h, b in plain_handshake(d) if h.msg_type == 2]
    return ServerHello.decode(body)


def extension_types(extensions: tuple[Extension, ...]) -> set[int]:
    return {e.ext_type if isinstance(e, UnknownExtension) else e.TYPE for e in extensions}


# -- the server refuses what is not in the profile (REC-4, PSK-1) --------------------------------


@pytest.mark.req("REC-4", "ERR-1")
@pytest.mark.parametrize("compression", [(DEFLATE,), (DEFLATE, 64), (64,)])
def test_server_refuses_hello_without_null_compression(compression: tuple[int, ...]) -> None:
    assert_refused(hello(compression=compression), AlertDescription.illegal_parameter)


@pytest.mark.req("REC-4", "PSK-1", "ERR-1")
@pytest.mark.parametrize(
    "suites",
    [
        (PSK_WITH_AES_128_CBC_SHA256,),
        (PSK_WITH_AES_128_CBC_SHA256, PSK_WITH_NULL_SHA256),
        (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,),  # AEAD, but not a PSK suite
        (CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV,),
    ],
)
def test_server_refuses_hello_without_the_psk_ccm8_suite(suites: tuple[int, ...]) -> None:
    assert_refused(hello(suites=suites), AlertDescription.handshake_failure)


@pytest.mark.req("REC-4", "PSK-1")
def test_server_picks_ccm8_and_null_among_other_offers() -> None:
    offer = hello(
        suites=(PSK_WITH_AES_128_CBC_SHA256, PSK_WITH_NULL_SHA256, CCM_8),
        compression=(DEFLATE, 0),
    )
    out, endpoint = answer(offer)
    sh = server_hello_of(out)
    assert sh.cipher_suite == CCM_8 == 0xC0A8
    assert sh.compression_method == 0
    assert CLIENT_ADDR in endpoint.connections


# -- the client refuses a ServerHello it did not ask for (REC-4, PSK-1) -------------------------


def rewrite_server_hello(change: Callable[[ServerHello], ServerHello]) -> FateFn:
    """A fate that rewrites the ServerHello (plaintext, unfragmented) with `change`."""

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction != "server" or 2 not in [h.msg_type for h, _ in plain_handshake(data)]:
            return "deliver"
        out = b""
        for header, fragment in records(data):
            if header.content_type == ContentType.handshake and fragment[0] == 2:
                sh = ServerHello.decode(fragment[12:])
                body = change(sh).encode()
                seq = int.from_bytes(fragment[4:6], "big")
                fragment = handshake_header(2, seq, len(body), 0, len(body)) + body
                header = header._replace(length=len(fragment))
            out += RecordHeader(*header).encode() + fragment
        return out

    return fate


def assert_link_failed(link: MemoryLink, sender: Direction, alert: AlertDescription) -> None:
    """`sender` sent the fatal `alert` (plaintext, on the wire) and the peer got it (ERR-1)."""
    receiver: Direction = "server" if sender == "client" else "client"
    (mine,) = events_of(link, sender, ConnectionClosed)
    (theirs,) = events_of(link, receiver, ConnectionClosed)
    assert isinstance(mine.error, AlertSent) and mine.error.alert is alert
    assert isinstance(theirs.error, AlertReceived) and theirs.error.alert is alert
    last = plain_alert(wire_from(link, sender)[-1])
    assert last is not None and (last.level, last.description) == (AlertLevel.FATAL, alert)
    assert HandshakeComplete not in {type(e) for e in link.client_events + link.server_events}


@pytest.mark.req("REC-4", "PSK-1", "ERR-1")
@pytest.mark.parametrize(
    "change",
    [
        lambda sh: replace(sh, compression_method=DEFLATE),
        lambda sh: replace(sh, cipher_suite=PSK_WITH_AES_128_CBC_SHA256),
        lambda sh: replace(sh, cipher_suite=CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
        lambda sh: replace(sh, cipher_suite=PSK_WITH_NULL_SHA256),
    ],
    ids=["deflate", "cbc-suite", "ecdhe-suite", "null-cipher-suite"],
)
def test_client_refuses_server_hello_choosing_what_it_did_not_offer(
    change: Callable[[ServerHello], ServerHello],
) -> None:
    link = make_link(fate=rewrite_server_hello(change))
    link.handshake()
    assert_link_failed(link, "client", AlertDescription.illegal_parameter)
    assert link.client.handshake_state.name == "WAIT_SERVER_HELLO"


# -- extended master secret (RES-3, RFC 7627) ----------------------------------------------------


@pytest.mark.req("RES-3", "ERR-1")
def test_default_server_refuses_client_without_ems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    link = make_link()
    link.handshake()
    hellos = [
        ClientHello.decode(b) for d in wire_from(link, "client") for h, b in plain_handshake(d)
    ]
    assert len(hellos) == 2  # the cookie exchange happened, then the refusal
    assert all(find_extension(h.extensions, ExtendedMasterSecret) is None for h in hellos)
    assert_link_failed(link, "server", AlertDescription.handshake_failure)


@pytest.mark.req("RES-3", "ERR-1")
def test_forged_hello_without_ems_is_refused() -> None:
    no_ems = hello(extensions=(RenegotiationInfo(b""),))
    assert_refused(no_ems, AlertDescription.handshake_failure)
    out, _ = answer(no_ems, require_ems=False)  # a server that allows it answers without EMS
    sh = server_hello_of(out)
    assert ExtensionType.extended_master_secret not in extension_types(sh.extensions)


def run_with_keylog(
    monkeypatch: pytest.MonkeyPatch, ems_client: bool, ems_server: bool
) -> tuple[MemoryLink, bytes]:
    """A handshake between a client that offers EMS or a legacy one, and a server that
    requires it or accepts legacy clients; the master secret from the key log."""
    lines: list[str] = []
    if not ems_client:
        monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    link = make_link(
        client={"keylog": lines.append, "require_extended_master_secret": ems_client},
        server={"require_extended_master_secret": ems_server},
    )
    link.handshake()
    assert established(link)
    (line,) = lines
    label, random_hex, master_hex = line.split()
    assert label == "CLIENT_RANDOM" and bytes.fromhex(random_hex) == link.client.client_random
    return link, bytes.fromhex(master_hex)


def rfc5246_master(link: MemoryLink) -> bytes:
    """The master secret of RFC 5246 §8.1, from the randoms seen on the wire."""
    server_random = server_hello_of(wire_from(link, "server")).random
    return master_secret(psk_premaster_secret(KEY), link.client.client_random, server_random)


@pytest.mark.req("RES-3")
def test_both_sides_without_ems_complete_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    link, master = run_with_keylog(monkeypatch, ems_client=False, ems_server=False)
    for side in ("client", "server"):
        (done,) = events_of(link, side, HandshakeComplete)
        assert done.extended_master_secret is False
    sh = server_hello_of(wire_from(link, "server"))
    assert ExtensionType.extended_master_secret not in extension_types(sh.extensions)
    assert master == rfc5246_master(link)  # the RFC 5246 §8.1 derivation, not RFC 7627 §4


@pytest.mark.req("RES-3")
@pytest.mark.parametrize("ems_server", [True, False])
def test_ems_is_used_whenever_the_client_offers_it(
    monkeypatch: pytest.MonkeyPatch, ems_server: bool
) -> None:
    link, master = run_with_keylog(monkeypatch, ems_client=True, ems_server=ems_server)
    for side in ("client", "server"):
        (done,) = events_of(link, side, HandshakeComplete)
        assert done.extended_master_secret is True
    sh = server_hello_of(wire_from(link, "server"))
    assert ExtensionType.extended_master_secret in extension_types(sh.extensions)
    assert master != rfc5246_master(link)
    assert master == extended_master_secret(psk_premaster_secret(KEY), session_hash(link))


def session_hash(link: MemoryLink) -> bytes:
    """RFC 7627 §3 over the wire: SHA-256 of the handshake messages from the ClientHello that
    carried the cookie up to the ClientKeyExchange, in DTLS form (RFC 6347 §4.2.6: the first
    ClientHello and the HelloVerifyRequest are left out; whole-message headers)."""
    messages = [(h, b) for _, _, d in link.wire for h, b in plain_handshake(d)]
    types = [h.msg_type for h, _ in messages]
    assert types[:2] == [HandshakeType.client_hello, HandshakeType.hello_verify_request]
    end = types.index(HandshakeType.client_key_exchange) + 1
    digest = hashlib.sha256()
    for h, body in messages[2:end]:
        assert h.fragment_offset == 0 and h.fragment_length == h.length == len(body)
        digest.update(bytes([h.msg_type]) + h.length.to_bytes(3, "big"))
        digest.update(h.message_seq.to_bytes(2, "big") + bytes(3) + h.length.to_bytes(3, "big"))
        digest.update(body)
    return digest.digest()


def without_ems(sh: ServerHello) -> ServerHello:
    kept = tuple(e for e in sh.extensions if not isinstance(e, ExtendedMasterSecret))
    assert len(kept) == len(sh.extensions) - 1
    return replace(sh, extensions=kept)


@pytest.mark.req("RES-3", "ERR-1")
def test_client_refuses_server_hello_without_ems() -> None:
    link = make_link(fate=rewrite_server_hello(without_ems))
    link.handshake()
    assert_link_failed(link, "client", AlertDescription.handshake_failure)
    assert link.client.state is ConnectionState.CLOSED


# -- EXT-3: truncated_hmac is never agreed to ---------------------------------------------------


@pytest.mark.req("EXT-3")
def test_server_does_not_echo_truncated_hmac() -> None:
    offered = (
        RenegotiationInfo(b""),
        UnknownExtension(ExtensionType.truncated_hmac, b""),
        ExtendedMasterSecret(),
        UnknownExtension(0xFF00, b"\x00"),  # a private-use type: not echoed either
    )
    out, endpoint = answer(hello(extensions=offered))
    assert CLIENT_ADDR in endpoint.connections  # the hello was accepted
    sh = server_hello_of(out)
    assert extension_types(sh.extensions) == {
        ExtensionType.renegotiation_info,
        ExtensionType.extended_master_secret,
    }
    assert 4 not in extension_types(sh.extensions)
