"""Configuration of a DTLS client or server (validated on construction).

Every mistake raises `ConfigError` with one line saying what to fix, when the configuration is
built: each setting's type is checked first (a bool is neither a number nor a count here), so a
wrong one is named at once instead of failing later in the event loop. The role follows from the
class: `ClientConfig` or `ServerConfig`. A client is provisioned per server in one of the
profile's three modes (PSK, raw public keys, certificates: profile §3, CFG-1); a server may hold
all three at once and picks by what the client offers.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from os import PathLike, fspath
from typing import Any, ClassVar

from iotdtls._enum import IdentityHashEnum
from iotdtls._failures import SummedFailures
from iotdtls._files import (
    RefusedFile,
    append_lock,
    is_readable,
    open_private_append,
    path_problem,
)
from iotdtls.credentials import (
    CertifiedKey,
    PrivateKey,
    WallClockFailed,
    as_der_sequence,
    own_credential_digest,
    psk_digest,
    public_key_pins,
    read_wall_clock,
    warn_if_out_of_validity,
)
from iotdtls.crypto.keys import psk_premaster_secret
from iotdtls.crypto.x509 import (
    DEFAULT_MAX_CHAIN_DEPTH,
    MAX_CHAIN_DEPTH_LIMIT,
    VALIDATED_CHAINS_KEPT,
    TrustStore,
)
from iotdtls.crypto.x509names import reference_identity
from iotdtls.errors import ConfigError
from iotdtls.identity import PskIdentity, RawPublicKeyIdentity, shown_identity
from iotdtls.messages import CertChainType, CertificateUrl, UrlAndHash
from iotdtls.messages.extensions import SHA1_LEN
from iotdtls.messages.keyexchange import ClientKeyExchangePsk

__all__ = [
    "CONSTRAINED_RETRANSMIT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_INTEGRITY_LIMIT",
    "DEFAULT_MAX_CHAIN_DEPTH",
    "DEFAULT_MAX_HANDSHAKE_MESSAGE",
    "DEFAULT_MAX_PSK_IDENTITY",
    "DEFAULT_MTU",
    "RFC6347_RETRANSMIT",
    "CertificateFetcher",
    "ClientConfig",
    "ClientKeyLookup",
    "Mode",
    "PskLookup",
    "RetransmitPolicy",
    "RetryPolicy",
    "ServerConfig",
    "ServerNameLookup",
    "check_whole_setting",
    "file_keylog",
    "shown_value",
    "type_name",
]

#: Largest UDP payload we send by default: the IPv6 minimum link MTU (1280) less 40 bytes of
#: IPv6 header and 8 of UDP header, so a datagram never needs IP fragmentation (RFC 6347 §4.1.1).
DEFAULT_MTU = 1232
MIN_MTU = 128
MAX_MTU = 65507
#: Records of one epoch that may fail authentication (RFC 9147 Appendix B.3, AES-128-CCM-8).
DEFAULT_INTEGRITY_LIMIT = 2**7
#: How long a server keeps an established association without traffic (seconds).
DEFAULT_IDLE_TIMEOUT = 3600.0
#: RFC 4279 §2 encodes identities and keys with a 2-byte length: the only limit (profile, PSK-2).
MAX_PSK_LENGTH = 0xFFFF
#: Largest handshake message reassembled by default (`max_handshake_message`, HS-3).
DEFAULT_MAX_HANDSHAKE_MESSAGE = 16384
#: The longest PSK identity a server with the default `max_handshake_message` takes: its
#: ClientKeyExchange has 2 + its length bytes (RFC 4279 §2).
DEFAULT_MAX_PSK_IDENTITY = DEFAULT_MAX_HANDSHAKE_MESSAGE - 2
#: Shortest master secret of the stateless cookies we accept (128 bits).
MIN_COOKIE_SECRET = 16
#: The max_fragment_length values a client may ask for (RFC 6066 §4, EXT-1).
MAX_FRAGMENT_LENGTHS = (512, 1024, 2048, 4096)
#: RFC 6520 §5.2: the idle period before a heartbeat goes down to one second.
MIN_KEEPALIVE_INTERVAL = 1.0
#: Server sessions kept for resumption by default (RES-1), and for how long: RFC 5246
#: §7.4.1.2 suggests 24 hours as the upper limit.
DEFAULT_SESSION_CACHE_SIZE = 1024
DEFAULT_SESSION_LIFETIME = 24 * 3600.0

#: identity -> its key (bytes-like), or None, or a raised LookupError (KeyError...), for an
#: unknown identity, which then fails like a wrong key (PSK-4).
PskLookup = Callable[[bytes], bytes | None]
#: (url, size limit in bytes, timeout in seconds) -> the bytes at that URL (see
#: `iotdtls.certurl.default_fetcher`; RFC 6066 §5).
CertificateFetcher = Callable[[str, int, float], bytes]
KeyLogCallback = Callable[[str], None]


#: What a setting must be: its words in the error, and the test of a value.
_Kind = tuple[str, Callable[[object], bool]]


def _is_int(value: object) -> bool:
    """An integer, but not a bool (True is an int to Python, never a count or a size here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _instance(what: str, *types: type) -> _Kind:
    return what, lambda value: isinstance(value, types)


def _optional(kind: _Kind) -> _Kind:
    what, accepts = kind
    return f"{what} (or None)", lambda value: value is None or accepts(value)


def _is_list_of(value: object, *items: type) -> bool:
    """A list or tuple (not one str or bytes value), of `items` when given (otherwise the
    setting's own normalisation checks each item, naming it)."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
        return False
    return not items or all(isinstance(item, items) for item in value)


def _list_of(what: str, *items: type) -> _Kind:
    return what, lambda value: _is_list_of(value, *items)


_SECONDS: _Kind = ("a number of seconds", _is_seconds)
_COUNT: _Kind = ("an integer", _is_int)
_FLAG = _instance("True or False", bool)
_FUNCTION: _Kind = ("callable", callable)


def type_name(value: object) -> str:
    """How an error message names what it was given: None, the type's name, and a list's item
    types too ("list of str"). Shared with the adapters' argument checks (`_arguments`)."""
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, list | tuple) and value:
        return f"{name} of {'/'.join(sorted({type(item).__name__ for item in value}))}"
    return name


#: Widest integer an error writes out (a wider one is told by its size: the repr of 10**5000
#: raises ValueError, and thousands of digits make no one-line message).
_SHOWN_INT_BITS = 64


def shown_value(value: object) -> str:
    """A value in an error: a number as itself (an integer wider than 64 bits by its size),
    anything else by its type (whose repr may run to many lines)."""
    if isinstance(value, int) and value.bit_length() > _SHOWN_INT_BITS:
        return f"an int of {value.bit_length()} bits"
    return repr(value) if isinstance(value, int | float) else type_name(value)


def check_whole_setting(name: str, value: object, *, least: int, unit: str) -> int:
    """`value` as the setting `name`, a whole number of `unit`, `least` or more; a
    `ConfigError` otherwise, naming an integer as itself (`shown_value`), anything else by its
    type: "max_body_size must be a whole number of bytes, at least 1, got 0"."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        shown = shown_value(value) if isinstance(value, int) else type_name(value)
        bound = "0 or more" if least == 0 else f"at least {least}"
        raise ConfigError(f"{name} must be a whole number of {unit}, {bound}, got {shown}")
    return value


def _clock_reading(wall_clock: Callable[[], float]) -> float:
    """`wall_clock` read at construction (for our own certificate's validity warning): one
    line naming it when it raises or answers no time (`read_wall_clock`)."""
    try:
        return read_wall_clock(wall_clock)
    except WallClockFailed as exc:
        raise ConfigError(str(exc)) from None


#: A client's settings of certificate mode only (`ClientConfig._check_x509_extras`).
_CERTIFICATE_SETTINGS = ("cached_server_chain", "indicate_trusted_cas", "certificate_urls")


def _certificate_urls(value: object) -> tuple[str, ...]:
    """`certificate_urls` as a tuple, checked (`_check_certificate_urls`)."""
    if not isinstance(value, Sequence) or not _is_list_of(value, str):
        raise ConfigError("certificate_urls must be a list of URL strings")
    urls = tuple(value)
    _check_certificate_urls(urls)
    return urls


def _check_certificate_urls(urls: Sequence[str]) -> None:
    """What a CertificateURL can carry (RFC 6066 §5): the message our URLs make must encode
    (`CertificateUrl.encode`: each url<1..2^16-1> in printable ASCII, all with their hashes in
    url_and_hash_list<1..2^16-1>), checked here rather than in a handshake. Its refusal names
    a URL by its number, never its text (which could hold user information)."""
    if not urls:
        return
    entries = tuple(UrlAndHash(url, bytes(SHA1_LEN)) for url in urls)
    try:
        CertificateUrl(CertChainType.individual_certs, entries).encode()
    except ValueError as exc:
        raise ConfigError(f"certificate_urls: {exc} (RFC 6066 §5)") from None


def _check_types(settings: object, kinds: Mapping[str, _Kind], prefix: str = "") -> None:
    """ConfigError in one line for the first of `kinds` whose value has the wrong type: at
    construction, rather than an AttributeError where the event loop first uses it."""
    for name, (what, accepts) in kinds.items():
        value = getattr(settings, name)
        if not accepts(value):
            raise ConfigError(f"{prefix}{name} must be {what}, got {type_name(value)}")


_POLICY_KINDS = {"initial": _SECONDS, "maximum": _SECONDS}


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """Handshake retransmission timer (RFC 6347 §4.2.4.1): start, doubling, cap. The RFC's cap
    is "no less than 60 seconds"; a smaller `maximum` is taken (a test or a simulation may want
    a fast timer), the CLI never sets one."""

    initial: float = 1.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        _check_types(self, _POLICY_KINDS, "retransmit ")
        if not self.initial > 0:
            raise ConfigError(f"retransmit initial must be > 0 seconds, got {self.initial}")
        if not self.maximum >= self.initial:
            raise ConfigError(
                f"retransmit maximum ({self.maximum} s) must be >= initial ({self.initial} s)"
            )

    @property
    def triggered_spacing(self) -> float:
        """The least time between two sends the peer triggers rather than the timer (our
        flight resent early on evidence of loss, a lost fatal alert sent again): a quarter of
        `initial`, so that no run of the peer's records, forged or not, makes us an amplifier
        (RFC 6347 §4.2.4, §4.2.7)."""
        return self.initial / 4


#: RFC 6347 §4.2.4.1: 1 s initial, doubling up to 60 s.
RFC6347_RETRANSMIT = RetransmitPolicy(1.0, 60.0)
#: RFC 7925 §11: constrained networks start at 9 s to avoid spurious retransmissions.
CONSTRAINED_RETRANSMIT = RetransmitPolicy(9.0, 60.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Whole-handshake retries of a client (profile "Raw Public Key Use", RPK-4: a device that
    cannot log an error tries again). After the n-th failure the client waits a random time
    between half and all of `initial * 2**(n-1)` (at most `maximum`) before a fresh handshake;
    `attempts` counts every handshake, the first included."""

    attempts: int = 3
    initial: float = 1.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        _check_types(self, _POLICY_KINDS, "retry ")
        if not _is_int(self.attempts) or self.attempts < 1:
            raise ConfigError(
                f"retry attempts must be an integer >= 1, got {shown_value(self.attempts)}"
            )
        if not 0 < self.initial <= self.maximum:
            raise ConfigError("retry needs 0 < initial <= maximum (seconds)")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failed handshakes (jittered from the OS CSPRNG, so
        a fleet that failed together does not retry in step)."""
        ceiling = min(self.initial * 2.0 ** (failures - 1), self.maximum)
        fraction: float = 0.5 + secrets.randbelow(1001) / 2000
        return ceiling * fraction


class FileKeyLog:
    """A key-log callback appending NSS `CLIENT_RANDOM` lines to a file (SEC-1: only on request).

    An object rather than a closure so that a configuration carrying it can be pickled (the
    worker processes of `iotdtls.workers` receive their `ServerConfig` that way). What is at
    the path when it is made must be fit to hold secrets (`iotdtls._files.path_problem`: no
    symlink, FIFO or device, no file of another user's or that others can read, and no
    symlink of another user's on the way in a directory others can write, `resolve_links`),
    or `ConfigError`; each line checks it again (`open_private_append`), never blocking.

    Each line is appended whole by one write call (O_APPEND), so that the lines of processes
    appending to one file (workers) never mix; one cut short (a full disk) is not completed,
    and the next line, whichever process writes it, starts on a line of its own (unless the
    file is write-only, mode 0200: its last byte cannot be read). That check and the write
    are done under a lock (`append_lock`), so that no writer of ours sees another's line
    half appended. A file that
    keeps failing (replaced by one others can read, its disk full) fails at every handshake:
    `KeyLogFailed.shown` is the first failure of each kind, then a line a minute at most
    summing up the others (`SummedFailures`), None in between; those not summed up yet are
    as the process exits (`log_unlogged_failures`)."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = fspath(path)
        # Here, not at the first handshake: a FIFO there blocked the event loop in opening it.
        problem = path_problem(self.path)
        if problem is not None:
            raise ConfigError(f"keylog_file {self.path!r} {problem}")
        self._failures = SummedFailures(f"key log {self.path!r}")

    def __repr__(self) -> str:
        return f"FileKeyLog({self.path!r})"

    def __call__(self, line: str) -> None:
        """Append `line`; `KeyLogFailed` naming the file and why when it cannot."""
        data = (line + "\n").encode("ascii")
        # Created readable by its owner only, like a private key: it holds master secrets. Not
        # through a symlink, nor into a file another user owns or can read (`RefusedFile`).
        try:
            fd = open_private_append(self.path)
            # Locked, so that no writer of ours is seen halfway through its line (which
            # gave spurious empty lines): size, last byte and write are one among them.
            try:
                with append_lock(fd):
                    end = os.fstat(fd).st_size
                    # A write-only file (mode 0200) cannot be read: no check there.
                    if end and is_readable(fd) and os.pread(fd, 1, end - 1) != b"\n":
                        data = b"\n" + data  # after a line cut short, by any process
                    written = os.write(fd, data)
            finally:
                os.close(fd)
        except RefusedFile as exc:
            raise self._failed(str(exc)) from None
        except OSError as exc:
            raise self._failed(f"cannot be written: {exc.strerror or exc}") from None
        if written < len(data):
            raise self._failed("cannot be written whole: a line was cut short (a full disk?)")

    def _failed(self, kind: str) -> KeyLogFailed:
        failed = KeyLogFailed(f"key log {self.path!r} {kind}")
        failed.shown = self._failures.failed(kind, time.monotonic())
        if failed.shown is None:  # counted: summed up later, at the latest as we exit
            _UNLOGGED_KEY_LOGS.add(self)
        return failed

    def log_unlogged_failures(self) -> None:
        """Log the line summing up the failures not logged yet (`SummedFailures.unlogged`),
        if any: else a run shorter than a minute never says how many lines it lost. Done
        for every `FileKeyLog` as the process exits (`atexit`: server workers and perf
        generators too, which exit through it)."""
        _UNLOGGED_KEY_LOGS.discard(self)
        line = self._failures.unlogged()
        if line is not None:
            logging.getLogger("iotdtls").warning("%s", line)


#: The `FileKeyLog`s of this process with failures counted but not logged yet; held until
#: then, as the configuration holding one is often gone by the time the process exits.
_UNLOGGED_KEY_LOGS: set[FileKeyLog] = set()


@atexit.register
def _log_unlogged_key_log_failures() -> None:
    """`FileKeyLog.log_unlogged_failures` for each key log that has some, as we exit (before
    logging's own exit handler, registered before this one: atexit runs them in reverse)."""
    for keylog in list(_UNLOGGED_KEY_LOGS):
        keylog.log_unlogged_failures()


class KeyLogFailed(Exception):
    """`FileKeyLog` could not append a line: the message names the file and why (never a
    key), so the handshake's warning can show it where another callback's error shows only
    its type. The handshake logs `shown` (by default the message), when it is not None:
    `FileKeyLog` sets it so that a file failing at every handshake does not flood the log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.shown: str | None = message


def file_keylog(path: str | PathLike[str]) -> KeyLogCallback:
    """A key-log callback appending NSS `CLIENT_RANDOM` lines to `path` (SEC-1: only on request)."""
    return FileKeyLog(path)


def _identity_bytes(name: str, value: bytes | str) -> bytes:
    """A PSK identity as bytes: a str is its UTF-8 encoding (RFC 4279 §5.1)."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate (os.fsdecode of undecodable bytes)
            raise ConfigError(
                f"{name} is a str with no UTF-8 form (a lone surrogate at index {exc.start}): "
                "give the identity as bytes"
            ) from None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ConfigError(f"{name} must be bytes or str, got {type(value).__name__}")


def _key_bytes(name: str, value: object) -> bytes:
    """A pre-shared key as immutable bytes. A str is refused, not encoded: keys are entered as
    text or in hex (RFC 4279 §5.3; `iotdtls keygen psk` prints hex), and which one a str
    means cannot be told, so a hex key would silently become another key."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    hint = " (a hex key? bytes.fromhex(...))" if isinstance(value, str) else ""
    raise ConfigError(f"{name} must be bytes, got {type(value).__name__}{hint}")


def _check_psk(name: str, key: bytes) -> None:
    if not key:
        raise ConfigError(f"{name} is empty: give the pre-shared key bytes")
    if len(key) > MAX_PSK_LENGTH:
        raise ConfigError(f"{name} is {len(key)} bytes; at most {MAX_PSK_LENGTH} fit the protocol")


def check_psk_pair(
    identity_name: str, identity: bytes, key_name: str, key: bytes, known_by: str
) -> None:
    """A PSK identity and its key as every configuration takes them, a one-line `ConfigError`
    otherwise: the identity not empty and within 2^16 - 1 bytes (`_check_identity_length`),
    the key 1 to 2^16 - 1 bytes (`_check_psk`; RFC 4279 §2, §5). `known_by` ends the empty
    identity's message."""
    _check_identity_length(identity_name, identity, known_by)
    _check_psk(key_name, key)


def _check_identity_length(name: str, identity: bytes, known_by: str) -> None:
    """A PSK identity names whose key it is (RFC 4279 §5: the server picks the key by it), so
    it is not empty, and it must fit the ClientKeyExchange's 2-byte length (RFC 4279 §2).
    `known_by` ends the empty one's message: how the identity is meant."""
    if not identity:
        raise ConfigError(f"{name} is empty: give the identity {known_by} (RFC 4279 §5)")
    if len(identity) > MAX_PSK_LENGTH:
        raise ConfigError(f"{name} is longer than {MAX_PSK_LENGTH} bytes")


def _check_stored_identity(identity: bytes, max_handshake_message: int) -> None:
    """An identity of `psk_store` must fit the ClientKeyExchange (a 2-byte length, RFC 4279
    §2) and that message (2 + its length bytes) our `max_handshake_message`, or no client
    could ever use it."""
    _check_identity_length(
        "an identity in psk_store", identity, "the client names its key by"
    )
    if len(identity) + 2 > max_handshake_message:
        raise ConfigError(
            f"an identity in psk_store is {len(identity)} bytes; at most "
            f"{max_handshake_message - 2} fit max_handshake_message={max_handshake_message} "
            f"(its ClientKeyExchange has 2 more bytes): raise max_handshake_message to at least "
            f"{len(identity) + 2}"
        )


#: The callbacks a handshake calls synchronously, on the event loop or the sync client's
#: thread, and never awaits: each must be a plain function.
_CALLBACKS = (
    "keylog",
    "wall_clock",
    "psk_lookup",
    "client_key_lookup",
    "server_name_lookup",
    "certificate_fetcher",
)


def is_async_callback(callback: object) -> bool:
    """Whether calling `callback` only makes a coroutine: an async def function (also one
    marked by `inspect.markcoroutinefunction`, or wrapped in `functools.partial`), or an object
    whose `__call__` is async def."""
    called = callback
    while isinstance(called, functools.partial):
        called = called.func
    if inspect.iscoroutinefunction(called):
        return True
    if not callable(called) or inspect.isroutine(called):
        return False
    return inspect.iscoroutinefunction(type(called).__call__)


def _check_plain_callbacks(settings: object) -> None:
    """ConfigError in one line for an async callback (`_CALLBACKS`): called and never awaited,
    it would fail every handshake (or lose the key log) without a word until then."""
    for name in _CALLBACKS:
        check_plain_callback(name, getattr(settings, name, None))


def check_plain_callback(name: str, callback: object) -> None:
    """ConfigError in one line, naming it, when `callback` is async (`is_async_callback`)."""
    if is_async_callback(callback):
        raise ConfigError(
            f"{name} is async def: it is called synchronously (never awaited), so it "
            "would only make a coroutine: make it a plain def"
        )


_PATH = _instance("a str or os.PathLike path", str, PathLike)
_CERTIFICATE_LIST = _list_of("a list of certificates (DER or PEM bytes)")
_KEY_LIST = _list_of("a list of public keys or their SHA-256 (bytes or str)")
_OWN_KEY = _optional(_instance("a PrivateKey", PrivateKey))

# The type of every setting, checked before any value. Those left out check their type with
# their value: mtu, integrity_limit, max_chain_depth, max_fragment_length, session_cache_size,
# validated_chains, psk_identity, psk, psk_store's items, server_name and certificate_urls.
_COMMON_KINDS: dict[str, _Kind] = {
    "retransmit": _instance("a RetransmitPolicy", RetransmitPolicy),
    "handshake_timeout": _SECONDS,
    "require_extended_master_secret": _FLAG,
    "max_handshake_message": _COUNT,
    "receive_queue": _COUNT,
    "keylog": _optional(_FUNCTION),
    "keylog_file": _optional(_PATH),
    "heartbeat": _FLAG,
    "answer_heartbeats": _FLAG,
    "keepalive_interval": _optional(_SECONDS),
}
_CLIENT_KINDS: dict[str, _Kind] = {
    **_COMMON_KINDS,
    "server_public_keys": _KEY_LIST,
    "raw_public_key": _OWN_KEY,
    "trust_anchors": _CERTIFICATE_LIST,
    "certificate": _optional(_instance("a CertifiedKey", CertifiedKey)),
    "wall_clock": _FUNCTION,
    "retry": _optional(_instance("a RetryPolicy", RetryPolicy)),
    "cached_server_chain": _CERTIFICATE_LIST,
    "indicate_trusted_cas": _FLAG,
}
_SERVER_KINDS: dict[str, _Kind] = {
    **_COMMON_KINDS,
    "psk_store": _optional(_instance("a mapping of identity to key", Mapping)),
    "psk_lookup": _optional(_FUNCTION),
    "raw_public_key": _OWN_KEY,
    "client_public_keys": _KEY_LIST,
    "client_key_lookup": _optional(_FUNCTION),
    "certificates": _list_of("a list of CertifiedKey", CertifiedKey),
    "client_trust_anchors": _CERTIFICATE_LIST,
    "certificate_fetcher": _optional(_FUNCTION),
    "certificate_url_size_limit": _COUNT,
    "certificate_url_timeout": _SECONDS,
    "wall_clock": _FUNCTION,
    "cookie_exchange": _FLAG,
    "cookie_rotation": _SECONDS,
    "max_connections": _COUNT,
    "max_handshakes": _COUNT,
    "max_handshakes_per_host": _COUNT,
    "cookie_secret": _optional(_instance("bytes", bytes)),
    "session_lifetime": _SECONDS,
    "server_name_lookup": _optional(_FUNCTION),
    "reject_unknown_server_names": _FLAG,
    "idle_timeout": _optional(_SECONDS),
}


@dataclass(frozen=True, kw_only=True)
class _CommonConfig:
    """Settings both roles share."""

    is_client: ClassVar[bool]
    #: The type of each setting (`_check_types`), checked before any value.
    _kinds: ClassVar[Mapping[str, _Kind]] = _COMMON_KINDS

    #: Largest UDP payload to send, headers of DTLS included (HS-3). It bounds what we
    #: originate: a heartbeat response carries an exact copy of the request's payload (RFC 6520
    #: §4; requests probe the path MTU, §5.1), so it is as large as the peer's request.
    mtu: int = DEFAULT_MTU
    #: Handshake retransmission timer (HS-4); `CONSTRAINED_RETRANSMIT` for RFC 7925 §11.
    retransmit: RetransmitPolicy = RFC6347_RETRANSMIT
    #: Overall deadline of a handshake in seconds; past it the handshake fails with a timeout.
    #: A server endpoint also keeps the alert of a handshake that failed on ours this long, to
    #: send it again if the peer repeats its flight (RFC 6347 §4.2.7).
    handshake_timeout: float = 60.0
    #: RFC 7627 / RFC 7925 §16: the extended master secret is always offered (client) and
    #: accepted (server); True refuses a peer without it, False lets a legacy peer through
    #: (such a session is never resumed, RES-3, and the adapters' log line says so).
    require_extended_master_secret: bool = True
    #: Largest handshake message we reassemble (bounded memory per peer, HS-3). A server
    #: takes PSK identities of up to this less 2 bytes (the ClientKeyExchange, RFC 4279 §2).
    max_handshake_message: int = DEFAULT_MAX_HANDSHAKE_MESSAGE
    #: Records of one epoch that may fail authentication before the association is closed
    #: (REC-6). Default 2^7 = 128: RFC 9147 §4.5.3 asks for such a limit and Appendix B.3
    #: derives 2^7 for AES-128-CCM-8 (its 64-bit tag) to keep the margins of the other AEADs,
    #: noting that a limit this low lets anyone who can reach the peer's address end the
    #: association cheaply. None: no limit (only where other safeguards stop forgeries).
    integrity_limit: int | None = DEFAULT_INTEGRITY_LIMIT
    #: Received datagrams the adapters queue for an application that does not read, and
    #: `receive_queue_bytes` (this many times `mtu`) bytes of them at most: a peer sending
    #: records larger than our `mtu` (up to 2^14 bytes, RFC 5246 §6.2.1) fills it sooner. One
    #: that would pass either bound is dropped like any UDP datagram and counted
    #: (`dropped_datagrams`), so a peer cannot grow memory; one is always taken into an empty
    #: queue, however large.
    receive_queue: int = 1024
    #: Called with NSS key-log lines; only when the user asked (SEC-1). See `file_keylog`.
    #: Like every callback of a configuration (`wall_clock`, `psk_lookup`,
    #: `client_key_lookup`, `server_name_lookup`, `certificate_fetcher`), a plain function:
    #: it is called synchronously and never awaited, so an async one is refused.
    keylog: KeyLogCallback | None = field(default=None, repr=False)
    #: Convenience: a path to append the key log to (turned into `keylog`).
    keylog_file: str | PathLike[str] | None = None
    #: Negotiate heartbeats (RFC 6520, EXT-5) with a peer that offers them too.
    heartbeat: bool = False
    #: With `heartbeat`: answer the peer's heartbeat requests (mode peer_allowed_to_send);
    #: False announces peer_not_allowed_to_send, and we only send requests (RFC 6520 §2).
    answer_heartbeats: bool = True
    #: With `heartbeat`: after this many seconds in which either direction was silent, send a
    #: heartbeat request (keep-alive: it refreshes NAT bindings and checks the peer, RFC 6520
    #: §5.2). A request unanswered (retransmitted per `retransmit`) for `handshake_timeout`
    #: seconds, the threshold of handshake flights (RFC 6520 §3), ends the association with
    #: `PeerUnresponsive`. None: no keep-alive.
    keepalive_interval: float | None = None

    @property
    def receive_queue_bytes(self) -> int:
        """The most bytes of received application data the adapters queue unread:
        `receive_queue` times `mtu` (see `receive_queue`)."""
        return self.receive_queue * self.mtu

    def __post_init__(self) -> None:
        _check_types(self, self._kinds)
        _check_plain_callbacks(self)
        _check_heartbeat(self.heartbeat, self.keepalive_interval)
        if not _is_int(self.mtu) or not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ConfigError(
                f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got {shown_value(self.mtu)}"
            )
        if not self.handshake_timeout > 0:
            raise ConfigError(
                f"handshake_timeout must be > 0 seconds, got {self.handshake_timeout}"
            )
        if self.receive_queue < 1:
            raise ConfigError(f"receive_queue must be at least 1, got {self.receive_queue}")
        if self.max_handshake_message < 256:
            raise ConfigError("max_handshake_message must be at least 256 bytes")
        if self.integrity_limit is not None and not (
            _is_int(self.integrity_limit) and self.integrity_limit >= 1
        ):
            raise ConfigError(
                "integrity_limit must be a whole number >= 1 (or None), "
                f"got {shown_value(self.integrity_limit)}"
            )
        if self.keylog_file is not None and self.keylog is None:
            object.__setattr__(self, "keylog", file_keylog(self.keylog_file))


def _check_heartbeat(heartbeat: bool, interval: float | None) -> None:
    if interval is None:
        return
    if not heartbeat:
        raise ConfigError("keepalive_interval needs heartbeat=True (RFC 6520 heartbeats)")
    if not interval >= MIN_KEEPALIVE_INTERVAL:
        raise ConfigError(
            f"keepalive_interval must be at least {MIN_KEEPALIVE_INTERVAL:g} s, got {interval}"
        )


def keepalive_outlasts_idle(
    keepalive_interval: float | None, handshake_timeout: float, idle_timeout: float | None
) -> bool:
    """Whether a server's keep-alive heartbeat, sent after `keepalive_interval` and sent again
    until `handshake_timeout` (RFC 6520 §3), could still be unanswered when `idle_timeout`,
    which only the peer's records reset, lets a peer that only listens go."""
    return (
        keepalive_interval is not None
        and idle_timeout is not None
        and keepalive_interval + handshake_timeout > idle_timeout
    )


class Mode(IdentityHashEnum):
    """The profile's three credential kinds (profile §3, CFG-1; CoAP's security modes)."""

    PSK = "psk"
    RAW_PUBLIC_KEY = "rpk"
    X509 = "x509"


def _pins(values: Sequence[bytes | str]) -> tuple[bytes, ...]:
    """Pins as `__post_init__` normalised them (`public_key_pins`)."""
    return tuple(v for v in values if isinstance(v, bytes))


def _check_depth(depth: int) -> None:
    if not _is_int(depth) or not 0 <= depth <= MAX_CHAIN_DEPTH_LIMIT:
        raise ConfigError(
            f"max_chain_depth must be an integer from 0 to {MAX_CHAIN_DEPTH_LIMIT}, "
            f"got {shown_value(depth)}"
        )


#: Hosts whose `ClientConfig.for_host` configuration is kept; all are dropped when full.
_FOR_HOST_KEPT = 64


def _trust_store(
    anchors: Sequence[bytes], validated_chains: int = VALIDATED_CHAINS_KEPT
) -> TrustStore | None:
    """The trust store of `anchors` (certificates `as_der_sequence` checked), remembering
    `validated_chains` chains it validated; None for no anchors."""
    return TrustStore(anchors, validated_chains=validated_chains) if anchors else None


@dataclass(frozen=True, kw_only=True)
class ClientConfig(_CommonConfig):
    """A client provisioned for the one server it talks to (profile §3, CFG-1), in one mode:

    * PSK: `psk_identity` and `psk`; an identity over 16382 bytes needs a server whose
      `max_handshake_message` was raised (its ClientKeyExchange has 2 + its length bytes);
    * raw public keys (RFC 7250): `server_public_keys` (the server's key, or its SHA-256) and,
      for mutual authentication, `raw_public_key` (our own `PrivateKey`);
    * certificates: `trust_anchors` (CA certificates, DER or PEM), `server_name` (checked
      against the server's certificate, RFC 6125) and, for mutual authentication,
      `certificate` (our `CertifiedKey`)."""

    is_client: ClassVar[bool] = True
    _kinds: ClassVar[Mapping[str, _Kind]] = _CLIENT_KINDS

    psk_identity: bytes | str | None = None
    psk: bytes | None = field(default=None, repr=False)
    #: Provisioned server keys: SubjectPublicKeyInfo (DER or PEM) or its SHA-256 (RPK-3): 32
    #: bytes, or 64 hex digits optionally after "sha256:" as the logs print it.
    server_public_keys: Sequence[bytes | str] = ()
    #: Our own key pair in raw-public-key mode (mutual authentication).
    raw_public_key: PrivateKey | None = None
    #: Trust anchors for the server's certificate chain (CRT-1); no OCSP or CRL (CRT-5).
    trust_anchors: Sequence[bytes] = ()
    #: Our certificate chain and key, for servers that ask for one.
    certificate: CertifiedKey | None = None
    #: The server's name: matched against its certificate (RFC 6125, CRT-3) and, when it is a
    #: DNS name (not an IP address), sent as server_name (SNI, RFC 6066 §3, EXT-2). Without
    #: it, `aio.connect`, `sync.connect` and the CoAP client check the host they are given
    #: (`for_host`); a bare `DtlsConnection` then checks no name.
    server_name: str | None = None
    #: Ask the server for smaller records: 512, 1024, 2048 or 4096 bytes of plaintext at most
    #: (max_fragment_length, RFC 6066 §4, EXT-1). None: the 2^14 of RFC 5246.
    max_fragment_length: int | None = None
    #: Most certificates between the server's leaf and the trust anchor (CRT-6).
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    #: Seconds since the epoch for certificate validity (a device without a clock can pin it),
    #: as any `numbers.Real` but a bool, taken by float(). Raising, answering anything else or
    #: a number of no date: `ConfigError` when read here (for `certificate`), and
    #: internal_error ending a handshake (`credentials.read_wall_clock`). A plain function:
    #: async def is refused.
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    #: Retry a failed handshake with back-off (RPK-4); None: fail at the first error.
    retry: RetryPolicy | None = None
    #: The server's chain from an earlier handshake: offered in cached_info so the server can
    #: leave it out (RFC 7924, CRT-2). See `iotdtls.chaincache.ChainCache`.
    cached_server_chain: Sequence[bytes] = ()
    #: Name our trust anchors in trusted_ca_keys (RFC 6066 §6, CRT-8; off by default).
    indicate_trusted_cas: bool = False
    #: URLs of our certificates, one per certificate of `certificate`'s chain in order, sent
    #: instead of the chain when the server accepts them (RFC 6066 §5, CRT-7).
    certificate_urls: Sequence[str] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        modes = [
            m
            for m, given in (
                (Mode.PSK, self.psk is not None or self.psk_identity is not None),
                (Mode.RAW_PUBLIC_KEY, bool(self.server_public_keys)),
                (Mode.X509, bool(self.trust_anchors)),
            )
            if given
        ]
        if not modes:
            _check_own_credential_has_its_mode(self)
        if len(modes) != 1:
            raise ConfigError(
                "give exactly one of psk_identity+psk (PSK), server_public_keys (raw public "
                "keys) or trust_anchors (certificates)"
            )
        if modes[0] is Mode.PSK:
            if self.psk_identity is None or self.psk is None:
                raise ConfigError("PSK mode needs both psk_identity and psk")
            object.__setattr__(
                self, "psk_identity", _identity_bytes("psk_identity", self.psk_identity)
            )
            object.__setattr__(self, "psk", _key_bytes("psk", self.psk))
            check_psk_pair(
                "psk_identity", self.identity, "psk", self.psk, "the server knows the key by"
            )
        if self.raw_public_key is not None and modes[0] is not Mode.RAW_PUBLIC_KEY:
            raise ConfigError("raw_public_key is for raw-public-key mode: add server_public_keys")
        if self.certificate is not None and modes[0] is not Mode.X509:
            raise ConfigError("certificate is for certificate mode: add trust_anchors")
        if self.certificate is not None:
            warn_if_out_of_validity(self.certificate, _clock_reading(self.wall_clock))
        self._check_x509_extras(modes[0])
        pins = public_key_pins(self.server_public_keys, "server_public_keys")
        object.__setattr__(self, "server_public_keys", pins)
        object.__setattr__(
            self, "trust_anchors", as_der_sequence("trust_anchors", self.trust_anchors)
        )
        object.__setattr__(self, "_store", _trust_store(self.trust_anchors))
        _check_depth(self.max_chain_depth)
        length = self.max_fragment_length
        if length is not None and not (_is_int(length) and length in MAX_FRAGMENT_LENGTHS):
            raise ConfigError(
                f"max_fragment_length must be 512, 1024, 2048 or 4096, got {shown_value(length)}"
            )
        sni = None if self.server_name is None else reference_identity(self.server_name)
        object.__setattr__(self, "_sni", sni if isinstance(sni, str) else None)

    @classmethod
    def check_certificate_settings(cls, settings: Mapping[str, Any]) -> None:
        """A `ConfigError` in one line for a value of `cached_server_chain`,
        `indicate_trusted_cas` or `certificate_urls` among `settings` that no configuration
        takes, checked by itself: their rules tying them to certificate mode and to our chain
        are the configuration's (`iotdtls.coap` checks a client's settings before its map has
        the entries they go with)."""
        for name in _CERTIFICATE_SETTINGS:
            kind = cls._kinds.get(name)
            if kind is not None and name in settings and not kind[1](settings[name]):
                raise ConfigError(f"{name} must be {kind[0]}, got {type_name(settings[name])}")
        if "cached_server_chain" in settings:
            as_der_sequence("cached_server_chain", settings["cached_server_chain"])
        if "certificate_urls" in settings:
            _certificate_urls(settings["certificate_urls"])

    def _check_x509_extras(self, mode: Mode) -> None:
        extras = self.cached_server_chain or self.indicate_trusted_cas or self.certificate_urls
        if extras and mode is not Mode.X509:
            raise ConfigError(
                "cached_server_chain, indicate_trusted_cas and certificate_urls are for "
                "certificate mode: add trust_anchors"
            )
        object.__setattr__(
            self,
            "cached_server_chain",
            as_der_sequence("cached_server_chain", self.cached_server_chain),
        )
        urls = _certificate_urls(self.certificate_urls)
        if urls and (self.certificate is None or len(urls) != len(self.certificate.chain)):
            sent = 0 if self.certificate is None else len(self.certificate.chain)
            raise ConfigError(
                "certificate_urls needs a certificate and one URL per certificate of its chain "
                f"as sent ({sent}: a self-signed root at its end is not sent), got {len(urls)}"
            )
        object.__setattr__(self, "certificate_urls", urls)
        if self.server_name is not None:
            # Checked here, not first when the server's certificate arrives (RFC 6125 §6.2).
            if not isinstance(self.server_name, str):
                raise ConfigError("server_name must be a DNS name or an IP address (a str)")
            reference_identity(self.server_name)

    @cached_property
    def mode(self) -> Mode:
        """The credential kind this client uses with its server (exactly one, checked above);
        worked out once per configuration, since every handshake asks several times."""
        if self.psk is not None:
            return Mode.PSK
        return Mode.RAW_PUBLIC_KEY if self.server_public_keys else Mode.X509

    @cached_property
    def psk_peer(self) -> PskIdentity:
        """The `peer` of this client's every PSK association: its identity (RFC 4279 §2), one
        value per configuration, not one per handshake (PSK mode only)."""
        return PskIdentity(self.identity)

    @cached_property
    def psk_key_exchange(self) -> tuple[bytes, bytes]:
        """The ClientKeyExchange body (psk_identity) and the premaster secret of this client's
        every PSK handshake (RFC 4279 §2): the same each time, worked out once (PSK mode
        only)."""
        return ClientKeyExchangePsk(self.identity).encode(), psk_premaster_secret(self.psk_key)

    @cached_property
    def credential_digest(self) -> bytes:
        """What a session keeps of our own credential (`SessionState.credential_digest`): the
        digest of the PSK (RFC 4279 §2), of our raw key's SubjectPublicKeyInfo (RFC 7250 §3) or
        of our leaf certificate (RFC 5246 §7.4.6), whichever we authenticate with; empty for
        none. Worked out once per configuration, not at every handshake. A session made
        without sending our credential keeps the empty digest."""
        if self.mode is Mode.PSK:
            return psk_digest(self.psk_key)
        if self.raw_public_key is not None:
            return own_credential_digest(self.raw_public_key.spki)
        if self.certificate is not None:
            return own_credential_digest(self.certificate.chain[0])
        return b""

    def for_host(self, host: str) -> ClientConfig:
        """This configuration for a server reached as `host`, when it names no `server_name` of
        its own: `host` is sent as server_name when it is a DNS name, in every mode (EXT-2, RFC
        6066 §3: a client that connects by name names it, and the server may choose its
        credentials by it), and in certificate mode the server's certificate is checked against
        it, since a client always checks the server's identity (RFC 7925 §4.4.1, RFC 6125
        §6.2). A configuration with a `server_name` is returned as it is.

        Each host's configuration is made once and kept (up to `_FOR_HOST_KEPT` hosts), so
        connections to one host share it and the chains its trust store validated."""
        if self.server_name is not None:
            return self
        kept: dict[str, ClientConfig] = self.__dict__.setdefault("_for_host", {})
        config = kept.get(host)
        if config is None:
            if len(kept) >= _FOR_HOST_KEPT:
                kept.clear()
            config = kept[host] = replace(self, server_name=host)
        return config

    @property
    def trust_store(self) -> TrustStore:
        """The validated `trust_anchors` (certificate mode only)."""
        store: TrustStore | None = self.__dict__["_store"]
        assert store is not None, "certificate mode has trust anchors"
        return store

    @property
    def sni_name(self) -> str | None:
        """The server_name to send (RFC 6066 §3): `server_name` as a lower-case A-label DNS
        name without trailing dot; None when there is none or it is an IP address ("Literal
        IPv4 and IPv6 addresses are not permitted")."""
        name: str | None = self.__dict__["_sni"]
        return name

    @property
    def server_key_pins(self) -> tuple[bytes, ...]:
        """`server_public_keys` as SHA-256 digests of their SubjectPublicKeyInfo."""
        return _pins(self.server_public_keys)

    @property
    def psk_key(self) -> bytes:
        """The PSK (PSK mode only)."""
        assert self.psk is not None
        return self.psk

    @property
    def identity(self) -> bytes:
        """The PSK identity as bytes (compared bit by bit by the server, PSK-2)."""
        assert isinstance(self.psk_identity, bytes)
        return self.psk_identity


#: Decides whether an authenticated raw public key may connect (RPK-3).
ClientKeyLookup = Callable[[RawPublicKeyIdentity], bool]
#: server_name -> the configuration whose credentials serve it, or None (RFC 6066 §3).
ServerNameLookup = Callable[[str], "ServerConfig | None"]


def _check_own_credential_has_its_mode(config: ClientConfig) -> None:
    """A client given its own credential but nothing to check the server with: name what its
    mode needs (the server is always authenticated, CFG-1), not the three modes."""
    if config.certificate is not None:
        raise ConfigError(
            "certificate needs trust_anchors (the CAs or certificates to check the server's "
            "chain with)"
        )
    if config.raw_public_key is not None:
        raise ConfigError(
            "raw_public_key needs server_public_keys (the server's raw public keys or their "
            "SHA-256)"
        )


@dataclass(frozen=True, kw_only=True)
class ServerConfig(_CommonConfig):
    """A server's credentials, in any mix (it picks by what the client offers):

    * PSK: `psk_store` ({identity: key}, copied: later changes to the dict are not seen) or
      `psk_lookup` (identity -> key, or None or a LookupError for an unknown identity; asked
      at each handshake with a non-empty identity (an empty one is unknown unasked, RFC 4279
      §5), on the server's event loop, so a plain function: async def is
      refused, as for every callback here), not both;
    * raw public keys: `raw_public_key` (our `PrivateKey`); clients must present a key from
      `client_public_keys` (or one `client_key_lookup` accepts) when either is given;
    * certificates: `certificates` (our `CertifiedKey`s; the first is the default); clients
      must present a chain to `client_trust_anchors` when it is given, its leaf naming the
      client by an EUI-64 (in a dNSName subjectAltName or the CN, see the field)."""

    is_client: ClassVar[bool] = False
    _kinds: ClassVar[Mapping[str, _Kind]] = _SERVER_KINDS

    psk_store: Mapping[bytes, bytes] | None = field(default=None, repr=False)
    psk_lookup: PskLookup | None = field(default=None, repr=False)
    raw_public_key: PrivateKey | None = None
    #: Provisioned client keys: SubjectPublicKeyInfo (DER or PEM) or its SHA-256 (RPK-3): 32
    #: bytes, or 64 hex digits optionally after "sha256:" as the logs print it.
    client_public_keys: Sequence[bytes | str] = ()
    #: Decides about raw public keys beyond `client_public_keys` (RPK-3): a plain function,
    #: called synchronously in the handshake (async def is refused).
    client_key_lookup: ClientKeyLookup | None = field(default=None, repr=False)
    certificates: Sequence[CertifiedKey] = ()
    #: Trust anchors for client certificates (CRT-1); when given, clients must present a chain
    #: to one, whose leaf names the client by an EUI-64 (CRT-4, the profile's client identity;
    #: RFC 7252 §9.1.3.3): in a dNSName subjectAltName, or else in the subject's most specific
    #: CN (when the subjectAltName holds no DNS-ID, SRV-ID or URI-ID, RFC 6125 §6.4.4); 16 hex
    #: digits, or 8 octets separated throughout by "-" or throughout by ":", either case. A
    #: leaf without one, or with two different ones, is bad_certificate. The identity is its
    #: canonical form, 01-23-45-67-89-AB-CD-EF (`CertificateIdentity.name`).
    client_trust_anchors: Sequence[bytes] = ()
    #: Fetches client certificates from the URLs a client sends instead of its chain (RFC 6066
    #: §5, CRT-7); None refuses the extension. A fetcher reaches wherever a client points it,
    #: before the client is authenticated (`default_fetcher`: http and https, not file):
    #: restrict it (`iotdtls.certurl.make_fetcher`) on a server facing untrusted clients.
    #: A plain function (called synchronously: async def is refused). The asyncio server runs
    #: `aio.MAX_CONCURRENT_FETCHES` at once, `aio.MAX_WAITING_FETCHES` more waiting, at most
    #: `aio.MAX_FETCHES_PER_HOST` of them a host's; past them, certificate_unobtainable.
    certificate_fetcher: CertificateFetcher | None = field(default=None, repr=False)
    #: Bytes accepted per fetched certificate, and seconds for all the URLs of one client.
    certificate_url_size_limit: int = 16384
    certificate_url_timeout: float = 10.0
    #: Most certificates between a client's leaf and the trust anchor (CRT-6).
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    #: Client chains remembered as validated (least recently used dropped): a client that
    #: comes back with the same chain skips the path validation (while the chain is valid).
    #: Set it to the number of devices that reconnect in turn; each kept chain costs its bytes
    #: and one parsed leaf (README: "certificate mode at scale"). 0: every chain validated.
    #: `ServerStats.validated_chain_hits` / `_misses` show how it does.
    validated_chains: int = VALIDATED_CHAINS_KEPT
    #: Seconds since the epoch for certificate validity, as any `numbers.Real` but a bool,
    #: taken by float(). Raising, answering anything else or a number of no date:
    #: `ConfigError` when read here (for `certificates`), and internal_error ending a
    #: handshake (`credentials.read_wall_clock`). A plain function: async def is refused.
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    #: Stateless cookie exchange before any per-peer state (RFC 6347 §4.2.1, HS-2). Off, a
    #: ClientHello from an address without an established association starts one at once
    #: (in fragments too; a half-open one there is replaced); one from an address with an
    #: established association still needs a cookie, issued after that association last
    #: heard from its peer, to replace it (RFC 6347 §4.2.8: no forged ClientHello may
    #: destroy it), and one in fragments is dropped there. Off is unsafe where anyone can
    #: send to the server: ClientHellos from forged source addresses, which need no answer,
    #: each take a `max_handshakes` place, and a flood of them evicts every honest handshake
    #: before it can complete (one success in 7.3 s measured under such a flood).
    cookie_exchange: bool = True
    #: Seconds of a cookie period: every cookie changes at each, the previous period's still
    #: accepted (RFC 6347 §4.2.1).
    cookie_rotation: float = 300.0
    #: Most established associations a server endpoint keeps at once; when a handshake
    #: completes into a full table, the least recently active one gets close_notify and makes
    #: room. A handshake in progress never does: half-open associations count apart, within
    #: `max_handshakes`, so a server holds at most `max_connections + max_handshakes`.
    max_connections: int = 4096
    #: Most handshakes in progress (half-open associations) at once, on top of
    #: `max_connections`; when full, the oldest is dropped (RFC 6347 §4.2.1: a cookie proves
    #: an address, not a peer, so these cannot crowd out established associations), and its
    #: client gets internal_error when its next flight comes (RFC 5246 §7.2.2). It also
    #: bounds the handshakes that failed on our fatal alert, or were evicted, whose alert the
    #: endpoint keeps to send again, for `handshake_timeout` (RFC 6347 §4.2.7; the oldest goes
    #: first; three sealed alert records each, no keys).
    max_handshakes: int = 256
    #: Of those `max_handshakes`, the most one host (an IPv4 address, or an IPv6 /64 prefix: one
    #: subscriber's allocation) keeps once the table is full; while it has room, a host takes
    #: any number. In a full table, a host at or beyond its cap that starts one more loses its
    #: own oldest once that one has stalled (two initial retransmission intervals), never
    #: another host's, and otherwise waits (its ClientHello dropped; its client sends it
    #: again); a host under its cap takes the place of the oldest of the host furthest beyond
    #: its cap. A value of `max_handshakes` or more sets no cap of its own.
    max_handshakes_per_host: int = 64
    #: Master secret of the stateless cookies (at least 16 bytes; None: a random one per
    #: endpoint). Give several server processes on one host the same secret and they accept
    #: each other's cookies, rotating in step (`iotdtls.workers` does this for its workers).
    cookie_secret: bytes | None = field(default=None, repr=False)
    #: Sessions kept for resumption (RES-1; only those with the extended master secret,
    #: RES-3), least recently used evicted; 0 turns resumption off. A `ServerEndpoint` may be
    #: given its own store instead (`iotdtls.sessions.SessionStore`).
    session_cache_size: int = DEFAULT_SESSION_CACHE_SIZE
    #: Seconds a session can be resumed after the full handshake that created it, in the
    #: default store only: a `SessionStore` given instead keeps sessions as long as it decides.
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    #: Server Name Indication (RFC 6066 §3, EXT-2): the server_name a client sent (lower-case)
    #: -> the `ServerConfig` whose credentials serve that name (PSK store or lookup, raw keys,
    #: certificates, client trust anchors and key pins, certificate fetcher, chain depth, clock),
    #: or None for a name we do not serve. Every other setting stays this configuration's.
    #: Clients that send no name get this configuration's credentials. A plain function
    #: (called synchronously in the handshake: async def is refused).
    server_name_lookup: ServerNameLookup | None = field(default=None, repr=False)
    #: With `server_name_lookup`: a name it does not know ends the handshake with
    #: unrecognized_name (True) or is served with this configuration's credentials (False).
    reject_unknown_server_names: bool = True
    #: Seconds an established association may go without an authenticated record from the
    #: peer (data we send it does not count: it proves nothing of a peer that has gone)
    #: before the server sends close_notify and forgets it; the application sees
    #: `ConnectionClosed(IdleTimeout)`. None: never. A peer's answer to our heartbeat
    #: (`keepalive_interval`) counts, so keep-alive keeps a peer that only listens; it must
    #: be over within it: `keepalive_interval` plus `handshake_timeout` at most.
    #: Default one hour: far beyond the two minutes or more a NAT keeps an idle UDP binding
    #: (RFC 4787 REQ-5), after which the peer would come back from another port anyway.
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.psk_store is not None:
            store: dict[bytes, bytes] = {}
            for name, value in self.psk_store.items():
                identity = _identity_bytes("an identity in psk_store", name)
                if identity in store:  # "a" and b"a": one identity on the wire (RFC 4279 §5.1)
                    raise ConfigError(
                        f"psk_store has the identity {shown_identity(identity)} twice, as str "
                        "and as bytes: keep one"
                    )
                store[identity] = _key_bytes("a psk in psk_store", value)
            for identity, key in store.items():
                _check_stored_identity(identity, self.max_handshake_message)
                _check_psk("a psk in psk_store", key)
            object.__setattr__(self, "psk_store", store)
        pins = public_key_pins(self.client_public_keys, "client_public_keys")
        object.__setattr__(self, "client_public_keys", pins)
        object.__setattr__(
            self,
            "client_trust_anchors",
            as_der_sequence("client_trust_anchors", self.client_trust_anchors),
        )
        if not _is_int(self.validated_chains) or self.validated_chains < 0:
            raise ConfigError(
                "validated_chains must be an integer >= 0 (0: every client chain validated), "
                f"got {shown_value(self.validated_chains)}"
            )
        object.__setattr__(
            self, "_store", _trust_store(self.client_trust_anchors, self.validated_chains)
        )
        object.__setattr__(self, "certificates", tuple(self.certificates))
        if self.psk_store is not None and self.psk_lookup is not None:
            raise ConfigError(
                "psk_store and psk_lookup are both given: give one (psk_lookup would be asked "
                "for every identity and psk_store never read)"
            )
        if self.client_authenticates_rpk and self.raw_public_key is None:
            raise ConfigError("client_public_keys needs raw_public_key (the server's own key)")
        if self.client_trust_anchors and not self.certificates:
            raise ConfigError("client_trust_anchors needs certificates (the server's own chain)")
        if not (self.psk_store or self.psk_lookup is not None or self.raw_public_key is not None
                or self.certificates):
            # An empty store (copied above, so never filled later) authenticates no one.
            empty = " (psk_store is empty)" if self.psk_store is not None else ""
            raise ConfigError(
                f"server needs credentials{empty}: psk_store or psk_lookup (PSK), raw_public_key "
                "(raw public keys) or certificates (X.509)"
            )
        for certified in self.certificates:
            warn_if_out_of_validity(certified, _clock_reading(self.wall_clock))
        _check_depth(self.max_chain_depth)
        if not self.cookie_rotation > 0:
            raise ConfigError(f"cookie_rotation must be > 0 seconds, got {self.cookie_rotation}")
        if self.cookie_secret is not None and len(self.cookie_secret) < MIN_COOKIE_SECRET:
            raise ConfigError(
                f"cookie_secret must be at least {MIN_COOKIE_SECRET} random bytes "
                "(32 recommended)"
            )
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if self.max_handshakes < 1:
            raise ConfigError("max_handshakes must be at least 1")
        if self.max_handshakes_per_host < 1:
            raise ConfigError("max_handshakes_per_host must be at least 1")
        if not _is_int(self.session_cache_size) or self.session_cache_size < 0:
            raise ConfigError("session_cache_size must be an integer >= 0 (0: no resumption)")
        if not self.session_lifetime > 0:
            raise ConfigError(f"session_lifetime must be > 0 seconds, got {self.session_lifetime}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ConfigError(
                f"idle_timeout must be > 0 seconds (or None: never), got {self.idle_timeout}"
            )
        if keepalive_outlasts_idle(
            self.keepalive_interval, self.handshake_timeout, self.idle_timeout
        ):
            # One lost datagram must not let a live peer go.
            raise ConfigError(
                f"keepalive_interval ({self.keepalive_interval:g} s) plus handshake_timeout "
                f"({self.handshake_timeout:g} s, while a heartbeat is sent again) must not exceed "
                f"idle_timeout ({self.idle_timeout:g} s): a peer that only listens would be let "
                "go before its heartbeat is answered"
            )
        if self.certificate_url_size_limit < 1:
            raise ConfigError(
                "certificate_url_size_limit must be at least 1 byte, "
                f"got {self.certificate_url_size_limit}"
            )
        if not self.certificate_url_timeout > 0:
            raise ConfigError(
                f"certificate_url_timeout must be > 0 seconds, got {self.certificate_url_timeout}"
            )

    @property
    def has_psk(self) -> bool:
        """Whether PSK clients can be served (a `psk_store` or a `psk_lookup`)."""
        return self.psk_store is not None or self.psk_lookup is not None

    @property
    def client_key_pins(self) -> tuple[bytes, ...]:
        """`client_public_keys` as SHA-256 digests of their SubjectPublicKeyInfo."""
        return _pins(self.client_public_keys)

    @property
    def client_trust_store(self) -> TrustStore | None:
        """The validated `client_trust_anchors`, or None when client certificates are not
        asked for."""
        store: TrustStore | None = self.__dict__["_store"]
        return store

    @property
    def client_authenticates_rpk(self) -> bool:
        """The server requires a provisioned client raw key (`client_public_keys` or
        `client_key_lookup` given: mutual RPK, RPK-3). Once configured, client authentication
        (this, or `client_trust_anchors` for certificates) applies to every client that gets
        the ECDHE_ECDSA suite, not to raw-key clients only: an X.509 client without a
        certificate (no client_certificate_type: X.509 alone, RFC 7250 §4.1) fails with
        unsupported_certificate, "the client offers no certificate type we can authenticate"
        (RFC 7250 §4.2), as a raw-key client without a key does (tests/test_rpk.py). PSK
        clients are never asked for a certificate."""
        return bool(self.client_public_keys) or self.client_key_lookup is not None

    def lookup_psk(self, identity: bytes) -> bytes | None:
        """The key for `identity` (exact byte comparison, PSK-2), or None when unknown."""
        if self.psk_lookup is not None:
            return self.psk_lookup(identity)
        if self.psk_store is None:
            return None
        return self.psk_store.get(identity)
