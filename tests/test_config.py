"""Configuration objects validate themselves and explain mistakes in one line (CFG-1)."""

from __future__ import annotations

import pytest

from iotdtls.config import (
    CONSTRAINED_RETRANSMIT,
    RFC6347_RETRANSMIT,
    ClientConfig,
    RetransmitPolicy,
    ServerConfig,
)
from iotdtls.errors import ConfigError
from tests.peers import PSK as KEY


@pytest.mark.req("CFG-1")
def test_client_is_provisioned_per_server_with_identity_and_key() -> None:
    a = ClientConfig(psk_identity="device-7", psk=KEY)
    given = bytearray(b"other key")
    b = ClientConfig(psk_identity=b"\x00\xffopaque", psk=given)
    assert a.identity == b"device-7"  # a str identity is its UTF-8 bytes
    assert b.identity == b"\x00\xffopaque"  # opaque bytes are kept as they are
    # The key is kept as an immutable copy: changing the caller's buffer later changes nothing.
    given[:] = b"changed!!"
    assert type(b.psk) is bytes and b.psk == b"other key"
    assert a.psk == KEY


@pytest.mark.req("CFG-1")
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"psk_identity": "x", "psk": b""}, "psk is empty"),
        ({"psk_identity": "x", "psk": KEY, "mtu": 20}, "mtu must be an integer"),
        ({"psk_identity": "x", "psk": KEY, "mtu": "big"}, "mtu must be an integer"),
        ({"psk_identity": "x", "psk": KEY, "handshake_timeout": 0}, "handshake_timeout"),
        ({"psk_identity": "x" * 70000, "psk": KEY}, "psk_identity is longer"),
        ({"psk_identity": 5, "psk": KEY}, "psk_identity must be bytes or str"),
        # A bad server name is refused at once, not when the server's certificate arrives.
        ({"psk_identity": "x", "psk": KEY, "server_name": "bad name!"},
         "server name 'bad name!' is neither a DNS name nor an IP address"),
        ({"psk_identity": "x", "psk": KEY, "server_name": b"localhost"},
         "server_name must be a DNS name or an IP address"),
    ],
)
def test_client_config_mistakes_are_one_line(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClientConfig(**kwargs)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.req("CFG-1")
def test_server_needs_a_psk_source() -> None:
    with pytest.raises(ConfigError, match="psk_store"):
        ServerConfig()
    with pytest.raises(ConfigError, match="psk in psk_store"):
        ServerConfig(psk_store={b"id": b""})
    with pytest.raises(ConfigError, match="cookie_rotation"):
        ServerConfig(psk_store={b"id": KEY}, cookie_rotation=0)
    with pytest.raises(ConfigError, match="cookie_secret must be at least 16"):
        ServerConfig(psk_store={b"id": KEY}, cookie_secret=bytes(15))


@pytest.mark.req("CFG-1", "PSK-2")
def test_server_lookup_is_exact_bytes() -> None:
    config = ServerConfig(psk_store={"abc": KEY})
    assert config.lookup_psk(b"abc") == KEY
    assert config.lookup_psk(b"abc ") is None
    assert config.lookup_psk(b"ABC") is None
    calls: list[bytes] = []

    def lookup(identity: bytes) -> bytes | None:
        calls.append(identity)
        return KEY if identity == b"\x00\x01" else None

    by_callback = ServerConfig(psk_lookup=lookup)
    assert by_callback.lookup_psk(b"\x00\x01") == KEY
    assert by_callback.lookup_psk(b"\x00") is None
    assert calls == [b"\x00\x01", b"\x00"]


@pytest.mark.req("HS-4")
def test_retransmit_policies() -> None:
    assert (RFC6347_RETRANSMIT.initial, RFC6347_RETRANSMIT.maximum) == (1.0, 60.0)
    assert (CONSTRAINED_RETRANSMIT.initial, CONSTRAINED_RETRANSMIT.maximum) == (9.0, 60.0)
    with pytest.raises(ConfigError, match="must be >= initial"):
        RetransmitPolicy(initial=5, maximum=1)
    with pytest.raises(ConfigError, match="> 0"):
        RetransmitPolicy(initial=0)


@pytest.mark.req("SEC-1")
def test_repr_hides_keys() -> None:
    client = ClientConfig(psk_identity="id", psk=KEY)
    server = ServerConfig(psk_store={b"id": KEY}, cookie_secret=KEY * 2)
    for text in (repr(client), repr(server), str(client)):
        assert KEY.hex() not in text
        assert repr(KEY) not in text
