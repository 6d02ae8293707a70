"""Configuration of a DTLS client or server (validated on construction).

Every mistake raises `ConfigError` with one line saying what to fix. The role follows from the
class: `ClientConfig` or `ServerConfig`. Credentials here are PSK only (RFC 4279, profile
"Pre-Shared Secret Authentication"); a client is provisioned per server (profile §3, CFG-1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import ClassVar

from iotdtls.errors import ConfigError

__all__ = [
    "CONSTRAINED_RETRANSMIT",
    "DEFAULT_MTU",
    "RFC6347_RETRANSMIT",
    "ClientConfig",
    "PskLookup",
    "RetransmitPolicy",
    "ServerConfig",
    "file_keylog",
]

#: Largest UDP payload we send by default: the IPv6 minimum link MTU (1280) less 40 bytes of
#: IPv6 header and 8 of UDP header, so a datagram never needs IP fragmentation (RFC 6347 §4.1.1).
DEFAULT_MTU = 1232
MIN_MTU = 128
MAX_MTU = 65507
#: RFC 4279 §2 encodes identities and keys with a 2-byte length: the only limit (profile, PSK-2).
MAX_PSK_LENGTH = 0xFFFF

PskLookup = Callable[[bytes], bytes | None]
KeyLogCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """Handshake retransmission timer (RFC 6347 §4.2.4.1): start, doubling, cap."""

    initial: float = 1.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ConfigError(f"retransmit initial must be > 0 seconds, got {self.initial}")
        if self.maximum < self.initial:
            raise ConfigError(
                f"retransmit maximum ({self.maximum} s) must be >= initial ({self.initial} s)"
            )


#: RFC 6347 §4.2.4.1: 1 s initial, doubling up to 60 s.
RFC6347_RETRANSMIT = RetransmitPolicy(1.0, 60.0)
#: RFC 7925 §11: constrained networks start at 9 s to avoid spurious retransmissions.
CONSTRAINED_RETRANSMIT = RetransmitPolicy(9.0, 60.0)


def file_keylog(path: str | PathLike[str]) -> KeyLogCallback:
    """A key-log callback appending NSS `CLIENT_RANDOM` lines to `path` (SEC-1: only on request)."""
    target = fspath(path)

    def write(line: str) -> None:
        with open(target, "a", encoding="ascii") as fh:
            fh.write(line + "\n")

    return write


def _as_bytes(name: str, value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ConfigError(f"{name} must be bytes or str, got {type(value).__name__}")


def _check_psk(name: str, key: bytes) -> None:
    if not key:
        raise ConfigError(f"{name} is empty: give the pre-shared key bytes")
    if len(key) > MAX_PSK_LENGTH:
        raise ConfigError(f"{name} is {len(key)} bytes; at most {MAX_PSK_LENGTH} fit the protocol")


@dataclass(frozen=True, kw_only=True)
class _CommonConfig:
    """Settings both roles share."""

    is_client: ClassVar[bool]

    #: Largest UDP payload to send, headers of DTLS included (HS-3).
    mtu: int = DEFAULT_MTU
    #: Handshake retransmission timer (HS-4); `CONSTRAINED_RETRANSMIT` for RFC 7925 §11.
    retransmit: RetransmitPolicy = RFC6347_RETRANSMIT
    #: Overall deadline of a handshake in seconds; past it the handshake fails with a timeout.
    handshake_timeout: float = 60.0
    #: RFC 7627 / RFC 7925 §16: negotiate the extended master secret and refuse a peer without.
    require_extended_master_secret: bool = True
    #: Largest handshake message we reassemble (bounded memory per peer, HS-3).
    max_handshake_message: int = 16384
    #: Received datagrams the adapters queue for an application that does not read; beyond
    #: this they are dropped like any UDP datagram and counted, so a peer cannot grow memory.
    receive_queue: int = 1024
    #: Called with NSS key-log lines; only when the user asked (SEC-1). See `file_keylog`.
    keylog: KeyLogCallback | None = field(default=None, repr=False)
    #: Convenience: a path to append the key log to (turned into `keylog`).
    keylog_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mtu, int) or not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ConfigError(f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got {self.mtu}")
        if not self.handshake_timeout > 0:
            raise ConfigError(
                f"handshake_timeout must be > 0 seconds, got {self.handshake_timeout}"
            )
        if self.receive_queue < 1:
            raise ConfigError(f"receive_queue must be at least 1, got {self.receive_queue}")
        if self.max_handshake_message < 256:
            raise ConfigError("max_handshake_message must be at least 256 bytes")
        if self.keylog_file is not None and self.keylog is None:
            object.__setattr__(self, "keylog", file_keylog(self.keylog_file))


@dataclass(frozen=True, kw_only=True)
class ClientConfig(_CommonConfig):
    """A client provisioned with one PSK identity and key for the server it talks to (CFG-1)."""

    is_client: ClassVar[bool] = True

    psk_identity: bytes | str
    psk: bytes = field(repr=False)
    #: Host name the client looked up (SNI, RFC 6066 §3); not sent yet.
    server_name: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "psk_identity", _as_bytes("psk_identity", self.psk_identity))
        object.__setattr__(self, "psk", _as_bytes("psk", self.psk))
        if len(self.identity) > MAX_PSK_LENGTH:
            raise ConfigError(f"psk_identity is longer than {MAX_PSK_LENGTH} bytes")
        _check_psk("psk", self.psk)

    @property
    def identity(self) -> bytes:
        """The PSK identity as bytes (compared bit by bit by the server, PSK-2)."""
        assert isinstance(self.psk_identity, bytes)
        return self.psk_identity


@dataclass(frozen=True, kw_only=True)
class ServerConfig(_CommonConfig):
    """A server with a PSK store or lookup callback (identity -> key or None)."""

    is_client: ClassVar[bool] = False

    psk_store: Mapping[bytes, bytes] | None = field(default=None, repr=False)
    psk_lookup: PskLookup | None = field(default=None, repr=False)
    #: Stateless cookie exchange before any per-peer state (RFC 6347 §4.2.1, HS-2).
    cookie_exchange: bool = True
    #: Seconds a cookie secret is used before rotating; the previous one is still accepted.
    cookie_rotation: float = 300.0
    #: Most associations (established or in progress) a server endpoint keeps at once; when
    #: full, the least recently active one makes room for a peer that proved its address.
    max_connections: int = 4096
    #: Most handshakes in progress at once; when full, the oldest is dropped. Kept below
    #: `max_connections` so half-open associations cannot crowd out established ones.
    max_handshakes: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.psk_store is None and self.psk_lookup is None:
            raise ConfigError("server needs psk_store={identity: key} or psk_lookup=callable")
        if self.psk_store is not None:
            store = {
                _as_bytes("psk identity", k): _as_bytes("psk", v) for k, v in self.psk_store.items()
            }
            for key in store.values():
                _check_psk("a psk in psk_store", key)
            object.__setattr__(self, "psk_store", store)
        if not self.cookie_rotation > 0:
            raise ConfigError(f"cookie_rotation must be > 0 seconds, got {self.cookie_rotation}")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if not 1 <= self.max_handshakes <= self.max_connections:
            raise ConfigError("max_handshakes must be from 1 to max_connections")

    def lookup_psk(self, identity: bytes) -> bytes | None:
        """The key for `identity` (exact byte comparison, PSK-2), or None when unknown."""
        if self.psk_lookup is not None:
            return self.psk_lookup(identity)
        assert self.psk_store is not None
        return self.psk_store.get(identity)
