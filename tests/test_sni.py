"""Server Name Indication (RFC 6066 §3, EXT-2), in memory: what the client sends, how a server
picks its PSK store, raw key or certificate by the name, unknown names (unrecognized_name or the
default credentials), a lookup that fails, and resumption with names."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iotdtls import aio
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.errors import AlertDescription, AlertReceived, AlertSent, ConfigError
from iotdtls.events import ConnectionClosed, HandshakeComplete
from iotdtls.identity import CertificateIdentity
from iotdtls.messages import (
    Alert,
    ClientHello,
    HandshakeType,
    ServerHello,
    ServerName,
    find_extension,
)
from tests import pki
from tests.aio_support import echo
from tests.memory_link import (
    IDENTITY,
    KEY,
    MemoryLink,
    established,
    events_of,
    make_link,
    next_link,
    plain_alert,
    plain_handshake,
    wire_from,
)
from tests.pubkey_support import rpk_link, server_key, stranger_key, x509_link, x509_pki

OTHER_KEY = bytes(range(16))


def hello_of(link: MemoryLink, msg_type: int) -> bytes:
    side = "client" if msg_type == HandshakeType.client_hello else "server"
    return next(
        body
        for d in wire_from(link, side)  # type: ignore[arg-type]
        for h, body in plain_handshake(d)
        if h.msg_type == msg_type
    )


def sent_name(link: MemoryLink) -> ServerName | None:
    hello = ClientHello.decode(hello_of(link, HandshakeType.client_hello))
    return find_extension(hello.extensions, ServerName)


def answered_name(link: MemoryLink) -> ServerName | None:
    hello = ServerHello.decode(hello_of(link, HandshakeType.server_hello))
    return find_extension(hello.extensions, ServerName)


def lookup(names: dict[str, ServerConfig]) -> Any:
    return lambda name: names.get(name)


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize(
    ("server_name", "sent"),
    [
        ("iot.example", "iot.example"),
        ("IoT.Example.", "iot.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", None),
        ("::1", None),
        (None, None),
    ],
)
def test_client_names_dns_names_only(server_name: str | None, sent: str | None) -> None:
    """RFC 6066 §3: a HostName is an A-label DNS name without trailing dot; "Literal IPv4 and
    IPv6 addresses are not permitted"."""
    link = make_link(client={"server_name": server_name})
    link.handshake()
    assert established(link)
    assert sent_name(link) == (None if sent is None else ServerName(sent))
    (done,) = events_of(link, "server", HandshakeComplete)
    assert done.server_name == (sent or "")
    assert answered_name(link) is None  # no lookup: the name guided nothing


@pytest.mark.req("EXT-2")
def test_a_bad_server_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="neither a DNS name nor an IP address"):
        ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name="bad name!")


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize(
    "name",
    [
        "127.1", "10", "256.1.1.1", "1.2.3.4.5",
        # inet_aton's other spellings of 127.0.0.1, which the resolver connects to
        "0x7f.1", "0x7f000001", "0X7F.0.0.1", "127.0.0.0x1", "0177.0.0.1", "0x7f.1.",
    ],
)
def test_digits_and_dots_that_make_no_address_are_no_server_name(name: str) -> None:
    """Never sent as a DNS name in server_name (RFC 6066 §3 allows no address there, and
    RFC 1123 §2.1 no all-numeric host name): refused, saying how to write an address."""
    with pytest.raises(ConfigError, match=r"write an IPv4 address in full"):
        ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name=name)
    assert ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name="127.0.0.1").sni_name is None


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize("name", ["a.1", "host.123", "iot.example.42."])
def test_a_numeric_last_label_is_no_server_name(name: str) -> None:
    """RFC 3696 §2: a top-level domain is not all digits, so no host name ends in one."""
    with pytest.raises(ConfigError, match=r"last label of a DNS name is not all digits"):
        ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name=name)


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize("name", ["1.example", "0x7f.example", "a.0x1", "cafe", "host-1.b2"])
def test_numbers_elsewhere_in_a_name_are_sent(name: str) -> None:
    assert ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name=name).sni_name == name


def psk_server(**extra: Any) -> dict[str, Any]:
    names = {
        "a.example": ServerConfig(psk_store={IDENTITY: KEY}),
        "b.example": ServerConfig(psk_store={IDENTITY: OTHER_KEY}),
    }
    return {"psk_store": {IDENTITY: KEY}, "server_name_lookup": lookup(names), **extra}


@pytest.mark.req("EXT-2")
@pytest.mark.parametrize("name", ["a.example", "B.example"])
def test_server_picks_the_psk_store_of_the_name(name: str) -> None:
    link = make_link(client={"server_name": name, "psk": OTHER_KEY if name != "a.example" else KEY},
                     server=psk_server())
    link.handshake()
    assert established(link)
    (done,) = events_of(link, "server", HandshakeComplete)
    assert done.server_name == name.lower()
    assert answered_name(link) == ServerName("")  # the name chose the credentials


@pytest.mark.req("EXT-2", "PSK-4")
def test_the_other_names_key_does_not_serve_this_name() -> None:
    link = make_link(client={"server_name": "b.example"}, server=psk_server())  # KEY is a's
    link.handshake()
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.decrypt_error


@pytest.mark.req("EXT-2", "RPK-3")
@pytest.mark.parametrize(("name", "ok"), [("right.example", True), ("wrong.example", False)])
def test_server_picks_its_raw_key_by_name(name: str, ok: bool) -> None:
    names = {
        "right.example": ServerConfig(raw_public_key=server_key()),
        "wrong.example": ServerConfig(raw_public_key=stranger_key()),
    }
    link = rpk_link(
        client={"server_name": name, "raw_public_key": None},
        server={"client_public_keys": (), "server_name_lookup": lookup(names)},
    )
    link.handshake()
    assert established(link) is ok  # the client pins server_key() only


@pytest.mark.req("EXT-2", "CRT-3")
def test_server_picks_its_certificate_by_name() -> None:
    p = x509_pki()
    other = pki.server_leaf(p.ca, "other.example")
    names = {"other.example": ServerConfig(certificates=[p.certified(other)])}
    link = x509_link(
        client={"server_name": "other.example", "certificate": None},
        server={"client_trust_anchors": (), "server_name_lookup": lookup(names)},
    )
    link.handshake()
    assert established(link)
    (done,) = events_of(link, "client", HandshakeComplete)
    assert done.peer == CertificateIdentity("other.example")


@pytest.mark.req("EXT-2", "ERR-1")
def test_an_unknown_name_gets_unrecognized_name() -> None:
    link = make_link(client={"server_name": "nobody.example"}, server=psk_server())
    link.handshake()
    (mine,) = events_of(link, "server", ConnectionClosed)
    (theirs,) = events_of(link, "client", ConnectionClosed)
    assert isinstance(mine.error, AlertSent)
    assert mine.error.alert is AlertDescription.unrecognized_name
    assert isinstance(theirs.error, AlertReceived)
    assert plain_alert(wire_from(link, "server")[-1]) == Alert(2, 112)


@pytest.mark.req("EXT-2")
def test_an_unknown_name_can_get_the_default_credentials() -> None:
    link = make_link(
        client={"server_name": "nobody.example"},
        server=psk_server(reject_unknown_server_names=False),
    )
    link.handshake()
    assert established(link)
    assert answered_name(link) is None  # the default credentials owe nothing to the name


@pytest.mark.req("EXT-2")
def test_a_client_without_a_name_gets_the_default_credentials() -> None:
    link = make_link(server=psk_server())
    link.handshake()
    assert established(link)


@pytest.mark.req("EXT-2", "ERR-1")
@pytest.mark.parametrize(
    "broken", [lambda name: 1 / 0, lambda name: {"psk_store": {}}], ids=["raises", "not-config"]
)
def test_a_broken_lookup_is_an_internal_error(broken: Any) -> None:
    link = make_link(client={"server_name": "a.example"}, server={"server_name_lookup": broken})
    link.handshake()
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.internal_error


@pytest.mark.req("EXT-2", "RES-1")
def test_resumption_keeps_the_name_and_answers_none() -> None:
    """RFC 6066 §3: "When resuming a session, the server MUST NOT include a server_name
    extension in the server hello"; the session stays bound to its name."""
    first = make_link(client={"server_name": "a.example"}, server=psk_server())
    first.handshake()
    assert first.client.session is not None
    assert first.client.session.server_name == "a.example"
    second = next_link(first)
    second.handshake()
    assert established(second) and second.client.resumed
    assert sent_name(second) == ServerName("a.example")
    assert answered_name(second) is None
    (done,) = events_of(second, "server", HandshakeComplete)
    assert done.server_name == "a.example" and done.resumed


@pytest.mark.req("EXT-2")
def test_connect_by_name_sends_it_in_psk_mode_too() -> None:
    """`connect` to a host name sends it as server_name in every mode, not only with
    certificates: a server that keys its PSKs by name serves a PSK client that gave none."""
    names = {"localhost": ServerConfig(psk_store={IDENTITY: OTHER_KEY})}
    server_config = ServerConfig(
        psk_store={IDENTITY: KEY}, server_name_lookup=lookup(names)
    )

    async def main() -> bytes:
        server = await aio.serve(echo, "localhost", 0, server_config)
        try:
            config = ClientConfig(psk_identity=IDENTITY, psk=OTHER_KEY, handshake_timeout=10)
            async with aio.connect("localhost", server.address[1], config) as conn:
                conn.send(b"by name")
                return await asyncio.wait_for(conn.recv(), 10)
        finally:
            await server.close()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"by name"
