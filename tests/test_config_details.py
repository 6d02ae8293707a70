"""Every configuration check at its edges (CFG-1): the first value refused gives its one-line
message, the last value accepted passes, and each mode's extras are refused in the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iotdtls import config as config_module
from iotdtls.config import (
    MAX_MTU,
    MAX_PSK_LENGTH,
    MIN_MTU,
    ClientConfig,
    FileKeyLog,
    RetransmitPolicy,
    RetryPolicy,
    ServerConfig,
)
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.crypto.x509 import MAX_CHAIN_DEPTH_LIMIT
from iotdtls.errors import ConfigError
from tests.peers import PSK as KEY
from tests.pki import root, server_leaf

pytestmark = pytest.mark.req("CFG-1")

PSK_CLIENT: dict[str, Any] = {"psk_identity": "device", "psk": KEY}
PSK_SERVER: dict[str, Any] = {"psk_store": {b"device": KEY}}
SERVER_KEY = PrivateKey.generate()
ANCHOR = root()
LEAF = server_leaf(ANCHOR, "gw.example")
CERTIFIED = CertifiedKey((LEAF.der,), PrivateKey(LEAF.key))
X509_CLIENT: dict[str, Any] = {"trust_anchors": [ANCHOR.der], "server_name": "gw.example"}

EXACTLY_ONE_MODE = (
    "give exactly one of psk_identity+psk (PSK), server_public_keys (raw public keys) or "
    "trust_anchors (certificates)"
)
X509_EXTRAS = (
    "cached_server_chain, indicate_trusted_cas and certificate_urls are for certificate mode: "
    "add trust_anchors"
)
URLS_PER_CERTIFICATE = (
    "certificate_urls needs a certificate and one URL per certificate of its chain"
)


def refusal(make: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        make(**kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


COMMON_EDGES = [
    # (setting, first value refused, its message, last value accepted)
    ("mtu", MIN_MTU - 1, f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got 127", MIN_MTU),
    ("mtu", MAX_MTU + 1, f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got 65508",
     MAX_MTU),
    ("handshake_timeout", 0, "handshake_timeout must be > 0 seconds, got 0", 0.001),
    ("receive_queue", 0, "receive_queue must be at least 1, got 0", 1),
    ("max_handshake_message", 255, "max_handshake_message must be at least 256 bytes", 256),
    ("integrity_limit", 0, "integrity_limit must be a whole number >= 1 (or None), got 0", 1),
    ("integrity_limit", 1.5, "integrity_limit must be a whole number >= 1 (or None), got 1.5",
     None),
]


@pytest.mark.parametrize("role", [ClientConfig, ServerConfig])
@pytest.mark.parametrize(("setting", "refused", "message", "accepted"), COMMON_EDGES)
def test_common_settings_at_their_edges(
    role: Any, setting: str, refused: object, message: str, accepted: object
) -> None:
    base = PSK_CLIENT if role is ClientConfig else PSK_SERVER
    assert refusal(role, **base, **{setting: refused}) == message
    assert getattr(role(**base, **{setting: accepted}), setting) == accepted


def test_keepalive_needs_heartbeats_and_a_second() -> None:
    assert refusal(ClientConfig, **PSK_CLIENT, keepalive_interval=5.0) == (
        "keepalive_interval needs heartbeat=True (RFC 6520 heartbeats)"
    )
    assert refusal(ClientConfig, **PSK_CLIENT, heartbeat=True, keepalive_interval=0.999) == (
        "keepalive_interval must be at least 1 s, got 0.999"
    )
    accepted = ClientConfig(**PSK_CLIENT, heartbeat=True, keepalive_interval=1.0)
    assert accepted.keepalive_interval == 1.0
    assert ClientConfig(**PSK_CLIENT, heartbeat=True).keepalive_interval is None


def test_a_key_log_file_becomes_a_callback_appending_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    keylog = ClientConfig(**PSK_CLIENT, keylog_file=str(path)).keylog
    assert isinstance(keylog, FileKeyLog) and repr(keylog) == f"FileKeyLog({str(path)!r})"
    keylog("CLIENT_RANDOM 00 11")
    keylog("CLIENT_RANDOM 22 33")
    assert path.read_text("ascii") == "CLIENT_RANDOM 00 11\nCLIENT_RANDOM 22 33\n"
    assert config_module.file_keylog(path).path == str(path)  # a PathLike is fine too
    lines: list[str] = []
    given = ClientConfig(**PSK_CLIENT, keylog=lines.append, keylog_file=str(path)).keylog
    assert given == lines.append  # an explicit callback wins


def test_retransmit_policy_edges() -> None:
    assert RetransmitPolicy(initial=2.0, maximum=2.0).maximum == 2.0
    with pytest.raises(ConfigError, match=r"retransmit maximum \(1.5 s\) must be >= initial"):
        RetransmitPolicy(initial=2.0, maximum=1.5)


def test_retry_policy_edges() -> None:
    assert RetryPolicy(attempts=1).attempts == 1
    assert RetryPolicy(initial=3.0, maximum=3.0).initial == 3.0
    assert RetryPolicy(initial=0.001).initial == 0.001
    for attempts in (0, 2.0, "3"):
        with pytest.raises(ConfigError, match="retry attempts must be an integer >= 1"):
            RetryPolicy(attempts=attempts)
    for initial, maximum in ((0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)):
        assert refusal(RetryPolicy, initial=initial, maximum=maximum) == (
            "retry needs 0 < initial <= maximum (seconds)"
        )


@pytest.mark.parametrize(("drawn", "fraction"), [(0, 0.5), (1000, 1.0), (500, 0.75)])
def test_retry_delay_doubles_to_its_cap_with_jitter_from_half_to_all(
    monkeypatch: pytest.MonkeyPatch, drawn: int, fraction: float
) -> None:
    asked: list[int] = []

    def randbelow(bound: int) -> int:
        asked.append(bound)
        return drawn

    monkeypatch.setattr(config_module.secrets, "randbelow", randbelow)
    policy = RetryPolicy(attempts=10, initial=1.5, maximum=10.0)
    delays = [policy.delay(failures) for failures in range(1, 6)]
    assert delays == [ceiling * fraction for ceiling in (1.5, 3.0, 6.0, 10.0, 10.0)]
    assert set(asked) == {1001}


def test_client_modes_are_exclusive_and_psk_needs_both_halves() -> None:
    assert refusal(ClientConfig) == EXACTLY_ONE_MODE
    assert refusal(ClientConfig, **PSK_CLIENT, server_public_keys=[SERVER_KEY.spki]) == (
        EXACTLY_ONE_MODE
    )
    assert refusal(ClientConfig, **PSK_CLIENT, **X509_CLIENT) == EXACTLY_ONE_MODE
    for half in ({"psk": KEY}, {"psk_identity": "device"}):
        assert refusal(ClientConfig, **half) == "PSK mode needs both psk_identity and psk"


def test_psk_identity_and_key_lengths_at_the_protocol_limit() -> None:
    longest = "i" * MAX_PSK_LENGTH
    assert ClientConfig(psk_identity=longest, psk=KEY).identity == longest.encode()
    assert refusal(ClientConfig, psk_identity=longest + "i", psk=KEY) == (
        f"psk_identity is longer than {MAX_PSK_LENGTH} bytes"
    )
    assert ClientConfig(psk_identity="d", psk=bytes(MAX_PSK_LENGTH)).psk_key == bytes(
        MAX_PSK_LENGTH
    )
    assert refusal(ClientConfig, psk_identity="d", psk=bytes(MAX_PSK_LENGTH + 1)) == (
        f"psk is {MAX_PSK_LENGTH + 1} bytes; at most {MAX_PSK_LENGTH} fit the protocol"
    )
    assert refusal(ServerConfig, psk_store={"d": ""}) == (
        "a psk in psk_store is empty: give the pre-shared key bytes"
    )
    assert ServerConfig(psk_store={"d": "text key"}).lookup_psk(b"d") == b"text key"


def test_each_modes_credentials_are_refused_in_the_others() -> None:
    assert refusal(ClientConfig, **PSK_CLIENT, raw_public_key=SERVER_KEY) == (
        "raw_public_key is for raw-public-key mode: add server_public_keys"
    )
    assert refusal(ClientConfig, **PSK_CLIENT, certificate=CERTIFIED) == (
        "certificate is for certificate mode: add trust_anchors"
    )
    for extra in ({"cached_server_chain": [LEAF.der]}, {"indicate_trusted_cas": True},
                  {"certificate_urls": ["http://ca.example/leaf.der"]}):
        assert refusal(ClientConfig, **PSK_CLIENT, **extra) == X509_EXTRAS
        assert refusal(ClientConfig, server_public_keys=[SERVER_KEY.spki], **extra) == (
            X509_EXTRAS
        )
        ClientConfig(**X509_CLIENT, certificate=CERTIFIED, **extra)


def test_certificates_given_as_pem_are_kept_as_der_and_junk_is_named() -> None:
    config = ClientConfig(trust_anchors=[ANCHOR.pem], cached_server_chain=[LEAF.pem])
    assert config.trust_anchors == (ANCHOR.der,)
    assert config.cached_server_chain == (LEAF.der,)
    server = ServerConfig(certificates=[CERTIFIED], client_trust_anchors=[ANCHOR.pem])
    assert server.client_trust_anchors == (ANCHOR.der,)
    for setting in ("trust_anchors", "cached_server_chain"):
        given = {"trust_anchors": [ANCHOR.der], setting: [b"junk"]}
        assert refusal(ClientConfig, **given) == (
            f"{setting}: not a PEM or DER X.509 certificate"
        )
    assert refusal(ClientConfig, psk_identity="d", psk=5) == "psk must be bytes or str, got int"
    assert refusal(ClientConfig, **PSK_CLIENT, server_name=b"gw.example") == (
        "server_name must be a DNS name or an IP address (a str)"
    )


def test_certificate_urls_are_strings_one_per_certificate() -> None:
    url = "http://ca.example/leaf.der"
    config = ClientConfig(**X509_CLIENT, certificate=CERTIFIED, certificate_urls=[url])
    assert config.certificate_urls == (url,)
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED, certificate_urls=url) == (
        "certificate_urls must be a list of URL strings"
    )
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED,
                   certificate_urls=[url.encode()]) == (
        "certificate_urls must be a list of URL strings"
    )
    assert refusal(ClientConfig, **X509_CLIENT, certificate_urls=[url]) == URLS_PER_CERTIFICATE
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED,
                   certificate_urls=[url, url]) == URLS_PER_CERTIFICATE


def test_fragment_length_and_chain_depth_edges() -> None:
    for length in (512, 4096, None):
        assert ClientConfig(**PSK_CLIENT, max_fragment_length=length).max_fragment_length == length
    assert refusal(ClientConfig, **PSK_CLIENT, max_fragment_length=513) == (
        "max_fragment_length must be 512, 1024, 2048 or 4096, got 513"
    )
    for role, base in ((ClientConfig, X509_CLIENT), (ServerConfig, {"certificates": [CERTIFIED]})):
        for depth in (0, MAX_CHAIN_DEPTH_LIMIT):
            assert role(**base, max_chain_depth=depth).max_chain_depth == depth
        for depth in (-1, MAX_CHAIN_DEPTH_LIMIT + 1, 2.0):
            assert refusal(role, **base, max_chain_depth=depth) == (
                f"max_chain_depth must be an integer from 0 to {MAX_CHAIN_DEPTH_LIMIT}, "
                f"got {depth!r}"
            )


def test_server_credentials_and_what_needs_them() -> None:
    assert refusal(ServerConfig) == (
        "server needs credentials: psk_store or psk_lookup (PSK), raw_public_key (raw public "
        "keys) or certificates (X.509)"
    )
    ServerConfig(psk_lookup=lambda identity: None)
    ServerConfig(raw_public_key=SERVER_KEY)
    ServerConfig(certificates=[CERTIFIED])
    needs_key = "client_public_keys needs raw_public_key (the server's own key)"
    assert refusal(ServerConfig, **PSK_SERVER, client_public_keys=[SERVER_KEY.spki]) == needs_key
    assert refusal(ServerConfig, **PSK_SERVER, client_key_lookup=lambda key: True) == needs_key
    assert refusal(ServerConfig, **PSK_SERVER, client_trust_anchors=[ANCHOR.der]) == (
        "client_trust_anchors needs certificates (the server's own chain)"
    )
    assert refusal(ServerConfig, **PSK_SERVER, client_trust_anchors=[b"junk"]) == (
        "client_trust_anchors: not a PEM or DER X.509 certificate"
    )


SERVER_EDGES = [
    ("cookie_rotation", 0, "cookie_rotation must be > 0 seconds, got 0", 0.5),
    ("cookie_secret", bytes(15), "cookie_secret must be at least 16 random bytes (32 recommended)",
     bytes(16)),
    ("session_cache_size", -1, "session_cache_size must be an integer >= 0 (0: no resumption)",
     0),
    ("session_cache_size", 1.0, "session_cache_size must be an integer >= 0 (0: no resumption)",
     1),
    ("session_lifetime", 0, "session_lifetime must be > 0 seconds, got 0", 0.5),
    ("idle_timeout", 0, "idle_timeout must be > 0 seconds (or None: never), got 0", 0.5),
    ("idle_timeout", -1, "idle_timeout must be > 0 seconds (or None: never), got -1", None),
]


@pytest.mark.parametrize(("setting", "refused", "message", "accepted"), SERVER_EDGES)
def test_server_settings_at_their_edges(
    setting: str, refused: object, message: str, accepted: object
) -> None:
    assert refusal(ServerConfig, **PSK_SERVER, **{setting: refused}) == message
    assert getattr(ServerConfig(**PSK_SERVER, **{setting: accepted}), setting) == accepted


def test_handshakes_in_progress_are_bounded_by_the_associations() -> None:
    assert refusal(ServerConfig, **PSK_SERVER, max_connections=0, max_handshakes=1) == (
        "max_connections must be at least 1"
    )
    message = "max_handshakes must be from 1 to max_connections"
    assert refusal(ServerConfig, **PSK_SERVER, max_handshakes=0) == message
    assert refusal(ServerConfig, **PSK_SERVER, max_connections=8, max_handshakes=9) == message
    assert ServerConfig(**PSK_SERVER, max_connections=8, max_handshakes=8).max_handshakes == 8
    assert ServerConfig(**PSK_SERVER, max_connections=1, max_handshakes=1).max_handshakes == 1
