"""Server endpoint: one socket, many peers, stateless cookies first (RFC 6347 §4.2.1, HS-2).

Datagrams from an address without an association go through a stateless gate: only an
unfragmented epoch-0 ClientHello is looked at; without a valid cookie the answer is a
HelloVerifyRequest computed from the datagram alone (HMAC over the client's address and the
ClientHello without its cookie, and the rotation period, so that cookies change at each
rotation, the previous period's still valid). No
per-peer state, no public-key operation and no allocation that outlives the call happen before
the cookie verifies. A HelloVerifyRequest is never larger than the ClientHello that caused it.

A cookie starts with when it was issued (covered by its MAC), so that a ClientHello with a valid
cookie replaces the association of its address (RFC 6347 §4.2.8) only when the cookie is newer
than that association: a replayed copy of an earlier hello demonstrates no reachability, and is
dropped (`GateOutcome.STALE_COOKIE`) without the endpoint remembering any cookie.

With cookie exchange off (`ServerConfig.cookie_exchange`), a ClientHello from an address
without an established association starts one at once (replacing a half-open one, which was
made without proof either); a new ClientHello from an address with an established association
still goes through the cookie exchange, as above: RFC 6347 §4.2.8 forbids destroying the
association before its client "has demonstrated reachability", so that one forged ClientHello
cannot end it.

A ClientHello in fragments (RFC 6347 §4.2.3) cannot be judged without keeping its parts, so
where a cookie is asked for the gate drops it, counted as `GateOutcome.FRAGMENTED_CLIENT_HELLO`
(OpenSSL's DTLSv1_listen and Mbed TLS refuse one too): under cookie exchange, and without it
from an address with an established association, whose client can connect again once that one
has ended. Without cookie exchange, from any other address, the server keeps state from the
first datagram anyway, and a fragment starts an association that reassembles the hello.

A handshake that fails on our fatal alert leaves, for its address, only fresh copies of that
alert (`DtlsConnection.alert_repeats`), so that the peer's flight coming again gets the alert
again if it was lost (RFC 6347 §4.2.7: an implementation that would issue an alert "SHOULD
generate a new alert message if the offending record is received again"): at most
`ServerConfig.max_handshakes` addresses, the oldest failure forgotten first, each for
`ServerConfig.handshake_timeout` (as long as its peer may go on repeating), with no key and no
association kept (`GateOutcome.ALERT_REPEATED`).

A half-open handshake evicted to make room for another (`ServerConfig.max_handshakes`, oldest
first) is remembered in the same table, with copies of a fatal internal_error alert (RFC 5246
§7.2.2: an error "unrelated to the peer or the correctness of the protocol"): its client, which
goes on sending into an association that is gone, gets that alert at its next datagram instead
of waiting out its handshake timeout or talking into nothing (`GateOutcome.EVICTION_ALERT_SENT`),
and can start again at once. A client in a full handshake repeats its flight. A client in an
abbreviated one (RFC 5246 §7.3) sent the last flight and is established: if that flight was
lost, it sends application data of epoch 1, which the alert (sealed in epoch 1 with the
session's keys) answers too, and the client, which authenticates the alert, ends its
association. A new ClientHello from that address, and a copy of the evicted one (whose cookie
may still let it in), go through the gate as any other.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import struct
from collections import Counter, deque
from collections.abc import Hashable
from enum import auto
from typing import Any, NamedTuple

from iotdtls._arguments import check_bytes_like, check_session_store, check_type
from iotdtls._enum import IdentityHashEnum
from iotdtls._failures import SummedFailures
from iotdtls.config import ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import constant_time_equal, random_bytes
from iotdtls.crypto.prf import HmacSha256
from iotdtls.errors import (
    AlertDescription,
    AlertLevel,
    AssociationEvicted,
    AssociationReplaced,
    DecodeError,
    DtlsError,
    IdleTimeout,
    LocalProtocolError,
    ProtocolError,
)
from iotdtls.events import CertificateUrlsReceived, Event
from iotdtls.handshake.server import check_client_version
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    HANDSHAKE_HEADER_LEN,
    Alert,
    HandshakeType,
)
from iotdtls.record import (
    CCS_CONTENT,
    DATA_CONTENT,
    HANDSHAKE_CONTENT,
    MAX_PLAINTEXT_LENGTH,
    RECORD_HEADER_LEN,
    ContentType,
    RecordHeader,
    split_datagram,
)
from iotdtls.sessions import (
    MemorySessionStore,
    SessionState,
    SessionStore,
    not_a_session,
    store_failure,
)

logger = logging.getLogger("iotdtls")

__all__ = ["CookieJar", "GateOutcome", "ServerEndpoint"]

#: A peer address: any hashable value (asyncio gives (host, port) tuples).
Address = Any
#: A cookie: its issue time (`COOKIE_TIME`), then the MAC over that time, the address and the
#: ClientHello (RFC 6347 §4.2.1: small, so the HelloVerifyRequest stays below the hello).
COOKIE_TIME = struct.Struct(">I")
COOKIE_MAC_LENGTH = 12
COOKIE_LENGTH = COOKIE_TIME.size + COOKIE_MAC_LENGTH
#: Issue times count milliseconds of the endpoint's clock, modulo 2^32 (49 days).
COOKIE_TICKS_PER_SECOND = 1000
COOKIE_TIME_RANGE = 1 << (8 * COOKIE_TIME.size)
#: How far ahead of the clock an issue time may be (clocks of processes sharing a secret).
COOKIE_FUTURE_TICKS = COOKIE_TICKS_PER_SECOND
SECRET_LENGTH = 32
#: Domain separation of the cookie MAC's input under the master secret (which may be shared
#: with the workers of one server, not with anything else).
COOKIE_LABEL = b"iotdtls cookie"
#: Superseded entries the timer heap may hold beyond twice its live ones before a rebuild.
TIMER_HEAP_SLACK = 64


class GateOutcome(IdentityHashEnum):
    """What the stateless gate did with a datagram from an unknown address (counted)."""

    NOT_A_CLIENT_HELLO = auto()
    #: A part of an epoch-0 ClientHello (RFC 6347 §4.2.3): dropped where a cookie is asked for
    #: (HS-2: no state before a valid cookie; with cookie exchange off, from an address that has
    #: an established association, RFC 6347 §4.2.8), else the start of an association that
    #: reassembles it, then also counted `HELLO_ACCEPTED_WITHOUT_COOKIE` (this one counts the
    #: form it came in).
    FRAGMENTED_CLIENT_HELLO = auto()
    HELLO_VERIFY_SENT = auto()
    HELLO_VERIFY_TOO_LARGE = auto()
    #: A ClientHello with a valid cookie (RFC 6347 §4.2.1) that starts an association; one
    #: left to wait is `HOST_HANDSHAKES_WAIT` instead, counted here when a later copy is taken.
    COOKIE_ACCEPTED = auto()
    #: A ClientHello that starts an association with cookie exchange off (no cookie asked for;
    #: RFC 6347 §4.2.1 allows a server to skip it), whole or its first part; one from an
    #: address with a half-open association replaces it. Never one from an address with an
    #: established association: that one goes through the cookie exchange (RFC 6347 §4.2.8),
    #: and is counted `HELLO_VERIFY_SENT`, then `COOKIE_ACCEPTED` or `STALE_COOKIE`.
    HELLO_ACCEPTED_WITHOUT_COOKIE = auto()
    VERSION_REFUSED = auto()
    #: The oldest half-open association, let go for a new one when `ServerConfig.max_handshakes`
    #: are in progress and no host (`host_of`) has more than `ServerConfig.max_handshakes_per_host`
    #: of them (silently: its peer never authenticated).
    HANDSHAKE_EVICTED = auto()
    #: The oldest half-open association of the host with the most of them, beyond its
    #: `ServerConfig.max_handshakes_per_host` (taken while the table had room), let go when
    #: `ServerConfig.max_handshakes` are in progress for a new one of a host under its cap:
    #: another host's handshakes take the place of the crowding host's, never the reverse.
    OVER_CAP_HANDSHAKE_EVICTED = auto()
    #: A host's own oldest half-open association, stalled (`ServerEndpoint._stalled`), let go
    #: when that host (`host_of`: an IPv4 address, an IPv6 /64, a link-local one's with its
    #: zone) at or over `ServerConfig.max_handshakes_per_host` starts one more while
    #: `ServerConfig.max_handshakes` are in progress: one host completing cookie exchanges
    #: fast cannot push other hosts' handshakes out of the table.
    HOST_HANDSHAKE_EVICTED = auto()
    #: A ClientHello with a valid cookie dropped unanswered, `ServerConfig.max_handshakes` in
    #: progress and its host at or over `ServerConfig.max_handshakes_per_host` with none of its
    #: own stalled: its client sends it again (RFC 6347 §4.2.4), and it is taken once a
    #: handshake has ended (then counted `COOKIE_ACCEPTED`). Counted at every copy that waits,
    #: so a client may be counted here several times. With cookie exchange off, the same for a
    #: ClientHello without a cookie and for each fragment of one (`HELLO_ACCEPTED_WITHOUT_COOKIE`
    #: once taken).
    HOST_HANDSHAKES_WAIT = auto()
    #: An established association let go, with close_notify, when a completed handshake would
    #: take the table beyond `ServerConfig.max_connections` (never for a half-open one); the
    #: idle timeout's closes are `ServerEndpoint.idle_expired`.
    EVICTED_WHEN_FULL = auto()
    #: A ClientHello with a valid cookie issued before the association of its address last
    #: heard from its peer (or began, while half-open): a replay, dropped, the association kept
    #: (RFC 6347 §4.2.8: a replayed cookie demonstrates no reachability).
    STALE_COOKIE = auto()
    #: A datagram from an address whose handshake failed lately on our fatal alert, holding
    #: a handshake or ChangeCipherSpec record (its peer repeats its flight: the alert was
    #: lost), answered with that alert again in a new record (RFC 6347 §4.2.7). At most
    #: `iotdtls.connection.ALERT_REPEATS` times per failure, once per quarter of the initial
    #: retransmission interval, never with more bytes than the datagram, and for
    #: `ServerConfig.handshake_timeout` after the failure; at most
    #: `ServerConfig.max_handshakes` failures are remembered, the oldest forgotten first.
    #: A copy of the ClientHello that failed (the same client random, which an off-path
    #: stranger cannot know) counts here when it gets the alert, `FAILED_HELLO_DROPPED` when
    #: not; another datagram from such an address is `NOT_A_CLIENT_HELLO`; a ClientHello with
    #: another random goes through the gate as any other.
    ALERT_REPEATED = auto()
    #: A copy of the ClientHello of a handshake that failed lately on our fatal alert (its
    #: client random), from its address, that gets no alert again (too soon after the last):
    #: dropped, where it would have started a new association that fails the same way,
    #: counted and logged as a second failed handshake (GnuTLS repeats its ClientHello
    #: after our alert). Once the failure's copies of the alert are all sent it is
    #: forgotten, and a later copy of its hello takes the gate again.
    FAILED_HELLO_DROPPED = auto()
    #: A datagram from an address whose half-open handshake was evicted lately (counted
    #: `HANDSHAKE_EVICTED`, `OVER_CAP_HANDSHAKE_EVICTED` or `HOST_HANDSHAKE_EVICTED`), holding
    #: a handshake or ChangeCipherSpec record (its client repeats its flight into an
    #: association that is gone), answered with a fatal internal_error alert in the epoch the
    #: handshake wrote in (epoch 0, in the clear, for a full handshake; RFC 5246 §7.2.2), so
    #: that the client fails at once and may start again instead of waiting out its handshake
    #: timeout. When that epoch is 1 (an abbreviated handshake, RFC 5246 §7.3, whose client
    #: may be established, its last flight lost), an application-data record of epoch 1
    #: is answered too, or the client would talk into nothing. Within the bounds of
    #: `ALERT_REPEATED`, in the same table of at most
    #: `ServerConfig.max_handshakes` addresses. A ClientHello from that address, a copy of
    #: the evicted one included, goes through the gate as any other.
    EVICTION_ALERT_SENT = auto()


#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_HELLO_VERIFY_SENT = GateOutcome.HELLO_VERIFY_SENT
_COOKIE_ACCEPTED = GateOutcome.COOKIE_ACCEPTED
_HELLO_ACCEPTED_WITHOUT_COOKIE = GateOutcome.HELLO_ACCEPTED_WITHOUT_COOKIE
_HANDSHAKING = ConnectionState.HANDSHAKING
_ESTABLISHED = ConnectionState.ESTABLISHED
_CLOSED = ConnectionState.CLOSED
_CLIENT_HELLO = HandshakeType.client_hello
_HELLO_VERIFY_REQUEST = HandshakeType.hello_verify_request
_BYTES_LIKE = (bytes, bytearray, memoryview)
_FLIGHT_CONTENT = (HANDSHAKE_CONTENT, CCS_CONTENT)
_RECORD_VERSIONS = (DTLS_1_0, DTLS_1_2)
#: The epoch of the keys a handshake derives (RFC 6347 §4.1), the last a half-open
#: association reads or writes in: a full handshake's client sends its Finished in it, an
#: abbreviated handshake's server (RFC 5246 §7.3) its Finished and then the eviction's alert.
_KEYED_EPOCH = 1


def _prompts_alert(header: RecordHeader, answers_data: bool) -> bool:
    """Whether a record with `header`, from an address whose failed or evicted handshake's
    alert is kept, shows its peer still there (RFC 6347 §4.2.7): a record of its flight
    (handshake or ChangeCipherSpec, DTLS 1.0 or 1.2, epoch 0 or 1), or, when `answers_data`
    (an evicted abbreviated handshake, RFC 5246 §7.3), application data of epoch 1 from a
    client that sent its last flight and is established."""
    if header.version not in _RECORD_VERSIONS:
        return False
    if header.content_type in _FLIGHT_CONTENT:
        return header.epoch <= _KEYED_EPOCH
    return (
        answers_data
        and header.content_type == DATA_CONTENT
        and header.epoch == _KEYED_EPOCH
    )


class _FailedHandshake(NamedTuple):
    """What the endpoint keeps of a handshake that failed on our fatal alert, to send that
    alert again (RFC 6347 §4.2.7): the alert's copies still to send, each sealed in its own
    record (`DtlsConnection.alert_repeats`), when the next may go, until when any may, and
    the client random of its ClientHello (public), to know a copy of that hello; or of a
    half-open handshake we evicted, the internal_error alert that tells its client so
    (`outcome` `GateOutcome.EVICTION_ALERT_SENT`, and no client random: a copy of its hello
    takes the gate again). `answers_data`: application data of epoch 1 gets the alert too
    (an evicted abbreviated handshake, whose alerts are sealed in epoch 1)."""

    alerts: tuple[bytes, ...]
    not_before: float
    expires: float
    client_random: bytes
    outcome: GateOutcome
    answers_data: bool = False


class _CountedStore:
    """An application's `SessionStore` (RES-1). A call that raises, or a `get` that returns
    neither a SessionState nor None (`not_a_session`), is counted (`session_store_errors`),
    logged and taken as a miss: `get` gives None (a full handshake); a session `put` is not
    kept, one `remove`d not forgotten. A store that keeps failing (a full or read-only disk)
    fails at every handshake: the first failure of each kind is logged at once, the later ones
    summed up in one line a minute at most (`SummedFailures`)."""

    __slots__ = ("_failures", "_now", "errors", "store")

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.errors = 0
        self._failures = SummedFailures("session store")
        #: The latest time given to `get` or `put` (`remove` is given none).
        self._now = 0.0

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        self._now = now
        try:
            session = self.store.get(session_id, now)
        except Exception as exc:
            self._failed(f"get raised {store_failure(exc)}")
            return None
        if not_a_session(session):  # its value is never logged: key material
            self._failed(f"get returned {type(session).__name__}, not a SessionState or None")
            return None
        return session

    def put(self, state: SessionState, now: float) -> None:
        self._now = now
        try:
            self.store.put(state, now)
        except Exception as exc:
            self._failed(f"put raised {store_failure(exc)}")

    def remove(self, session_id: bytes) -> None:
        try:
            self.store.remove(session_id)
        except Exception as exc:
            self._failed(f"remove raised {store_failure(exc)}")

    def _failed(self, what: str) -> None:
        """Count a failure; log it if it is the first of its kind, or sum up those not logged
        once the interval since the last summary has passed."""
        self.errors += 1
        line = self._failures.failed(what, self._now)
        if line is not None:
            logger.warning("%s", line)


class CookieJar:
    """Stateless cookies: 4 bytes of issue time, then HMAC-SHA256 (over the rotation period's
    number, that time, the address and the ClientHello) truncated to 12 bytes (96 bits, beyond
    guessing in the two periods a cookie lives): 16 bytes in all.

    A cookie verifies for two periods at most (made in the current or the previous one), and
    only while its issue time is neither ahead of the clock (beyond `COOKIE_FUTURE_TICKS`) nor
    older than two periods; `cookie_time` reads that time, which says whether the cookie is
    newer than an association (`issued_since`). The period's number in the MAC changes every
    cookie at each rotation (RFC 6347 §4.2.1: "change the Secret value frequently"), also for
    an issue time that has wrapped around, under one key: processes given the same master
    secret (`ServerConfig.cookie_secret`, e.g. the workers of `iotdtls.workers`) make and
    accept the same cookies and rotate in step. Without a master, a random one is drawn:
    cookies then hold for this jar only. One key for every period costs one HMAC key set-up
    per jar, not one derivation per period."""

    def __init__(self, rotation: float, master_secret: bytes | None = None) -> None:
        self._rotation = rotation
        master = master_secret if master_secret is not None else random_bytes(SECRET_LENGTH)
        self._mac = HmacSha256(master)
        #: The oldest a cookie may be, in ticks: two periods, below half the range of the time
        #: field so that an age modulo that range is never ambiguous.
        self._max_age = min(
            int(2 * rotation * COOKIE_TICKS_PER_SECOND), COOKIE_TIME_RANGE // 2 - 1
        )

    def __repr__(self) -> str:
        return f"<CookieJar rotation={self._rotation}s>"

    def _cookie(self, index: int, issued: bytes, address: bytes, hello: bytes) -> bytes:
        period = COOKIE_LABEL + index.to_bytes(8, "big", signed=True)
        return issued + self._mac.digest(period + issued + address + hello)[:COOKIE_MAC_LENGTH]

    def make(self, now: float, address: bytes, hello_without_cookie: bytes) -> bytes:
        issued = COOKIE_TIME.pack(_ticks(now))
        return self._cookie(int(now // self._rotation), issued, address, hello_without_cookie)

    def verify(
        self, now: float, address: bytes, hello_without_cookie: bytes, cookie: bytes
    ) -> bool:
        """The cookie's issue time is neither ahead of `now` nor older than two periods, and
        its MAC verifies: a constant-time check against the current, then the previous
        period's (SEC-2). The length, the issue time and which period a cookie belongs to are
        no secret: the previous one is tried only for a cookie the current one refuses."""
        if len(cookie) != COOKIE_LENGTH:  # no MAC for a first hello, nor an old-format cookie
            return False
        age = (_ticks(now) - cookie_time(cookie)) % COOKIE_TIME_RANGE
        if self._max_age < age < COOKIE_TIME_RANGE - COOKIE_FUTURE_TICKS:
            return False
        index = int(now // self._rotation)
        issued = cookie[: COOKIE_TIME.size]
        return constant_time_equal(
            self._cookie(index, issued, address, hello_without_cookie), cookie
        ) or constant_time_equal(
            self._cookie(index - 1, issued, address, hello_without_cookie), cookie
        )


def _ticks(when: float) -> int:
    """`when` (seconds of the endpoint's clock) in cookie ticks, modulo the time field."""
    return int(when * COOKIE_TICKS_PER_SECOND) % COOKIE_TIME_RANGE


def cookie_time(cookie: bytes) -> int:
    """The issue time (ticks modulo 2^32) at the head of a `COOKIE_LENGTH`-byte cookie."""
    return int(COOKIE_TIME.unpack_from(cookie)[0])


def issued_since(cookie: bytes, when: float, now: float) -> bool:
    """A cookie verified at `now` was issued at or after `when` (within the tick: a cookie made
    at `when` is newer). Its age at `now` is small beside the range of the time field (two
    periods at most, or up to `COOKIE_FUTURE_TICKS` ahead), so it is read modulo that range
    from `now`, and compared with `when` on the clock itself: `when` may lie weeks back, for an
    association silent without an idle timeout, further than the time field's range."""
    age = (_ticks(now) - cookie_time(cookie)) % COOKIE_TIME_RANGE
    if age >= COOKIE_TIME_RANGE // 2:  # issued ahead of this clock
        age -= COOKIE_TIME_RANGE
    return int(now * COOKIE_TICKS_PER_SECOND) - age >= int(when * COOKIE_TICKS_PER_SECOND)


#: Where a ClientHello body holds its random: behind client_version (2 bytes), 32 bytes long
#: (RFC 5246 §7.4.1.2, RFC 6347 §4.2.1).
_RANDOM_AT = 2
_RANDOM_END = _RANDOM_AT + 32


def _split_cookie(body: bytes) -> tuple[bytes, bytes]:
    """(ClientHello body without the cookie vector, cookie) from the raw body (RFC 6347 §4.2.1):
    client_version (2), random (32), session_id<0..32>, then cookie<0..2^8-1>. Two length
    bytes read in place (the gate runs this for every first datagram of a peer)."""
    session_id_at = _RANDOM_END
    if len(body) <= session_id_at:
        raise DecodeError("ClientHello truncated before its session_id")
    cookie_at = session_id_at + 1 + body[session_id_at]
    if len(body) <= cookie_at:
        raise DecodeError("ClientHello truncated before its cookie")
    cookie_end = cookie_at + 1 + body[cookie_at]
    if cookie_end > len(body):
        raise DecodeError("ClientHello cookie longer than the message")
    return body[:cookie_at] + body[cookie_end:], body[cookie_at + 1 : cookie_end]


class ServerEndpoint:
    """Sans-I/O server side of one socket: demultiplexes by peer address.

    Sessions for resumption (RES-1) live in one store per endpoint, found by session_id and
    never by address: a client whose address or port changed (NAT rebinding) makes a new
    association through the cookie gate and resumes its session there (RES-2)."""

    def __init__(self, config: ServerConfig, *, session_store: SessionStore | None = None) -> None:
        """`session_store` replaces the default in-memory cache (`config.session_cache_size`
        sessions for `config.session_lifetime` seconds; none when the size is 0). Arguments of
        the wrong type raise `TypeError` naming them."""
        check_type("config", config, ServerConfig)
        check_session_store(session_store)
        self.config = config
        if session_store is None and config.session_cache_size > 0:
            session_store = MemorySessionStore(config.session_cache_size, config.session_lifetime)
        #: Where this endpoint's sessions are cached (None: no resumption).
        self.sessions = session_store
        #: What the associations are given: an application's store behind a count of its
        #: misuses (`session_store_errors`); our own in memory as it is.
        self._store: SessionStore | None = session_store
        if session_store is not None and type(session_store) is not MemorySessionStore:
            self._store = _CountedStore(session_store)
        self._cookies = CookieJar(config.cookie_rotation, config.cookie_secret)
        self.connections: dict[Address, DtlsConnection] = {}
        #: Its associations log their failures at DEBUG, as a lone `DtlsConnection` does; an
        #: adapter that logs each `ConnectionClosed` itself (`iotdtls.aio`'s server, with the
        #: peer's address and identity) sets it False: one line for one failure. Each
        #: association is made with it (`DtlsConnection(log_failures=...)`).
        self.log_failures = True
        #: Handshakes in progress, when each started and its host (`host_of`, computed once),
        #: oldest first (`ServerConfig.max_handshakes`).
        self._handshaking: dict[Address, tuple[float, Hashable]] = {}
        #: The same by host (`host_of`), oldest first (`ServerConfig.max_handshakes_per_host`);
        #: `_start_handshake` and `_end_handshake` keep both in step.
        self._handshakes_by_host: dict[Hashable, dict[Address, None]] = {}
        #: The hosts with more than `ServerConfig.max_handshakes_per_host` of them (possible
        #: while the table has room), kept in step by the same two.
        self._over_cap: set[Hashable] = set()
        #: Associations with a pending timer: handshakes, and established ones with a
        #: keep-alive or a final flight held for their peer.
        self._timed: dict[Address, DtlsConnection] = {}
        #: Their timers as a heap of (deadline, tie-break, address); an entry is current only
        #: while `_deadlines[address]` equals its deadline (others are skipped lazily), so the
        #: earliest timer costs O(log n) however many handshakes are in progress.
        self._timer_heap: list[tuple[float, int, Address]] = []
        self._deadlines: dict[Address, float] = {}
        self._tie_break = itertools.count()
        #: Established associations and their last activity, oldest first (idle timeout).
        self._activity: dict[Address, float] = {}
        #: The latest time the endpoint was given (for application data sent, which has none).
        self._clock = 0.0
        #: Established associations let go by `ServerConfig.idle_timeout`.
        self.idle_expired = 0
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[tuple[Address, Event]] = deque()
        self.gate: Counter[GateOutcome] = Counter()
        #: Records silently discarded by associations that have ended, by reason (RFC 6347
        #: §4.1.2.7): each adds its `DtlsConnection.discards` here as it leaves `connections`.
        self.ended_discards: Counter[IdentityHashEnum] = Counter()
        #: Addresses whose last association failed its handshake on our fatal alert, or was
        #: evicted half-open, oldest first (the order of expiry), with what it takes to send
        #: the alert again (`_remember_failure`, `GateOutcome.ALERT_REPEATED`;
        #: `_remember_eviction`, `GateOutcome.EVICTION_ALERT_SENT`).
        self._failed: dict[Address, _FailedHandshake] = {}

    def __repr__(self) -> str:
        return f"<ServerEndpoint connections={len(self.connections)}>"

    @property
    def handshakes_in_progress(self) -> int:
        """Associations whose handshake has begun (their ClientHello let in by the gate, RFC
        6347 §4.2.1) and has neither completed nor ended: the half-open ones."""
        return len(self._handshaking)

    @property
    def session_store_errors(self) -> int:
        """Calls to the application's session store that raised, or `get`s that returned
        neither a SessionState nor None: each was logged and taken as a miss (get: a full
        handshake; put, remove: the session not kept, or not forgotten)."""
        return self._store.errors if isinstance(self._store, _CountedStore) else 0

    def _advance_clock(self, now: float) -> None:
        """The latest time the endpoint was given: a caller's older clock never moves it back
        (a comparison, not max(): this runs for every datagram)."""
        if now > self._clock:
            self._clock = now

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        """Route a datagram to its association, or through the stateless cookie gate; data
        that is not bytes-like raises `TypeError`."""
        if not isinstance(data, _BYTES_LIKE):
            check_bytes_like(data)
        self._advance_clock(now)
        conn = self.connections.get(address)
        # A ClientHello with a new random from a known address is a restarted client (RFC 6347
        # §4.2.8): it goes through the cookie gate, and replaces the old association (complete
        # or half-open) only once the cookie proves the address.
        if conn is not None and not _is_new_hello(data, conn):
            conn.receive_datagram(data, now)
            self._collect(address, conn)
            return
        self._gate(data, address, now)

    def _gate(self, data: bytes, address: Address, now: float) -> None:
        hello = _hello_record(data)
        if hello is None or not (hello.whole or hello.part):
            self._not_a_hello(data, address, now)
            return
        if self._failed and self._repeats_failed_hello(data, hello, address, now):
            return
        if hello.part:
            self.gate[GateOutcome.FRAGMENTED_CLIENT_HELLO] += 1
            if not self.config.cookie_exchange and self._no_proven_association(address):
                self._associate(data, address, now, _HELLO_ACCEPTED_WITHOUT_COOKIE)
            return
        body = hello.fragment(data)
        try:
            without_cookie, cookie = _split_cookie(body)
        except DecodeError:
            self.gate[GateOutcome.NOT_A_CLIENT_HELLO] += 1
            return
        record_seq, message_seq = hello.record_seq, hello.message_seq
        try:
            check_client_version(int.from_bytes(body[:2], "big"))
        except ProtocolError as exc:  # protocol_version, sent statelessly (REC-5)
            self.gate[GateOutcome.VERSION_REFUSED] += 1
            alert = Alert(AlertLevel.FATAL, exc.alert).encode()
            self._outgoing.append(
                (_plain_record(ContentType.alert, DTLS_1_0, record_seq, alert), address)
            )
            return
        addr_bytes = repr(address).encode()
        if not self.config.cookie_exchange and self._no_proven_association(address):
            accepted = _HELLO_ACCEPTED_WITHOUT_COOKIE
        elif self._cookies.verify(now, addr_bytes, without_cookie, cookie):
            old = self.connections.get(address)
            if old is not None and not issued_since(cookie, self._heard_since(address, old), now):
                self.gate[GateOutcome.STALE_COOKIE] += 1
                return
            accepted = _COOKIE_ACCEPTED
        else:
            new_cookie = self._cookies.make(now, addr_bytes, without_cookie)
            self._hello_verify(data, record_seq, message_seq, new_cookie, address)
            return
        self._associate(data, address, now, accepted)

    def _no_proven_association(self, address: Address) -> bool:
        """With cookie exchange off, whether a ClientHello from `address` starts an association
        without a cookie: unless the address has an established association, which RFC 6347
        §4.2.8 forbids destroying before the new hello's client "has demonstrated
        reachability" (so that one forged hello cannot end it): that hello goes through the
        cookie exchange. A half-open association made without a cookie proves no more than
        the new hello does (and forged epoch-0 records can end it anyway): the new hello
        replaces it, so that a spoofer holding one cannot keep its address's client out.
        (The callers test `cookie_exchange` first: with it on, the gate's path has no call.)"""
        return address not in self.connections or address in self._handshaking

    def _not_a_hello(self, data: bytes, address: Address, now: float) -> None:
        """A datagram from an address without an association that starts with no ClientHello:
        dropped, unless its address's handshake failed lately on our alert and the datagram
        repeats the peer's flight (`_repeat_alert`)."""
        if self._failed:
            told = self._repeat_alert(data, address, now)
            if told is not None:
                self.gate[told] += 1
                return
        self.gate[GateOutcome.NOT_A_CLIENT_HELLO] += 1

    def _repeats_failed_hello(
        self, data: bytes, hello: _HelloRecord, address: Address, now: float
    ) -> bool:
        """Whether `data` repeats the ClientHello (or its first part) of `address`'s handshake
        that failed lately on our alert: the same client random. It gets the alert again
        within `_repeat_alert`'s bounds, or is dropped; it never starts a new association,
        which would fail the same way and count a second failure for one attempt. A new
        handshake has a new random (RFC 5246 §7.4.1.2), which an off-path stranger cannot
        copy to hold the address's client off: it takes the gate as any other."""
        self._expire_failures(now)
        failed = self._failed.get(address)
        if failed is None or hello.client_random(data) != failed.client_random:
            return False
        told = self._repeat_alert(data, address, now)
        self.gate[GateOutcome.FAILED_HELLO_DROPPED if told is None else told] += 1
        return True

    def _repeat_alert(self, data: bytes, address: Address, now: float) -> GateOutcome | None:
        """Send `address`'s failed (or evicted) handshake's alert again if `data` holds a
        handshake or ChangeCipherSpec record of DTLS 1.0 or 1.2 in epoch 0 or 1 (read by its
        framing: the keys are gone, and a stranger could forge it anyway, which the bounds
        make harmless; RFC 6347 §4.2.7), or an application-data record of epoch 1 for an
        evicted abbreviated handshake (`_FailedHandshake.answers_data`), is at least as large
        as the alert, and the last one went a quarter of the initial retransmission interval
        ago (`DtlsConnection._repeat_alert` is the same for a connection kept). The outcome
        to count when sent (`_FailedHandshake.outcome`), else None."""
        self._expire_failures(now)
        failed = self._failed.get(address)
        if failed is None or now < failed.not_before or len(data) < len(failed.alerts[0]):
            return None
        records, _ = split_datagram(data)
        if not any(_prompts_alert(header, failed.answers_data) for header, _ in records):
            return None
        alert, *rest = failed.alerts
        if rest:
            not_before = now + self.config.retransmit.triggered_spacing
            self._failed[address] = failed._replace(alerts=tuple(rest), not_before=not_before)
        else:
            del self._failed[address]
        self._outgoing.append((alert, address))
        return failed.outcome

    def _remember_failure(self, address: Address, conn: DtlsConnection) -> None:
        """`conn`, `address`'s association, has left `connections`: if its handshake failed on
        our fatal alert, keep the alert's copies for the peer's repeated flight, newest last,
        within `ServerConfig.max_handshakes` addresses (the oldest failure goes) for
        `ServerConfig.handshake_timeout`; after any other end, forget an older failure of
        that address."""
        failed = self._failed
        alerts = conn.alert_repeats
        if not alerts:
            if failed:
                failed.pop(address, None)
            return
        not_before = self._clock + self.config.retransmit.triggered_spacing
        self._remember(address, alerts, not_before, conn.client_random)

    def _remember_eviction(self, address: Address, conn: DtlsConnection) -> None:
        """`conn`, `address`'s half-open association, was evicted without a word: keep
        copies of a fatal internal_error alert for its client's next flight (RFC 5246 §7.2.2:
        the server's own limit, nothing the peer did), within the bounds of the failures
        (`_remember`), to send from the first datagram that repeats its flight (no rest of a
        failing flight to wait out). No client random: a copy of its ClientHello is a
        client starting over, which the gate may let in again."""
        alerts = conn.seal_fatal_alerts(AlertDescription.internal_error)
        if alerts:
            self._remember(
                address,
                alerts,
                self._clock,
                b"",
                GateOutcome.EVICTION_ALERT_SENT,
                answers_data=RecordHeader.decode(alerts[0]).epoch == _KEYED_EPOCH,
            )

    def _remember(
        self,
        address: Address,
        alerts: tuple[bytes, ...],
        not_before: float,
        client_random: bytes,
        outcome: GateOutcome = GateOutcome.ALERT_REPEATED,
        *,
        answers_data: bool = False,
    ) -> None:
        """Keep `alerts` to send `address` from `not_before` for
        `ServerConfig.handshake_timeout` (as long as its peer may go on repeating), newest
        last, within `ServerConfig.max_handshakes` addresses (the oldest goes): a flood of
        failures or evictions grows nothing (`_FailedHandshake`)."""
        failed = self._failed
        now = self._clock
        failed.pop(address, None)  # a newer failure goes last, in the order of expiry
        expires = now + self.config.handshake_timeout
        failed[address] = _FailedHandshake(
            alerts, not_before, expires, client_random, outcome, answers_data
        )
        self._expire_failures(now)
        while len(failed) > self.config.max_handshakes:
            del failed[next(iter(failed))]

    def _expire_failures(self, now: float) -> None:
        """Forget the failures whose time to repeat their alert is over (oldest first)."""
        failed = self._failed
        while failed:
            oldest = next(iter(failed))
            if failed[oldest].expires > now:
                return
            del failed[oldest]

    def _associate(
        self, data: bytes, address: Address, now: float, accepted: GateOutcome
    ) -> None:
        """A new association from `address` (its cookie verified, or none asked), given `data`,
        the datagram that starts its ClientHello (whole, or its first part without cookie
        exchange); counted as `accepted` once it is made, so that a ClientHello left to wait
        (`GateOutcome.HOST_HANDSHAKES_WAIT`) is not: the associations counted are those that
        complete, fail or are unfinished at the stop (`ServerStats.handshakes_unfinished`)."""
        if self._failed:  # a new handshake from the address (`_hello_verify`)
            self._failed.pop(address, None)
        host = host_of(address)
        if not self._make_room(address, host, now):
            return
        self.gate[accepted] += 1
        conn = DtlsConnection(
            self.config, session_store=self._store, log_failures=self.log_failures
        )
        self.connections[address] = conn
        self._start_handshake(address, host, now)
        conn.accept(now)
        conn.receive_datagram(data, now)
        self._collect(address, conn)

    def _heard_since(self, address: Address, conn: DtlsConnection) -> float:
        """When `conn`'s peer last showed itself: when its cookie verified while half-open,
        else its last authenticated record (`DtlsConnection.last_activity`). A restarted
        client gets its new cookie after that; a replayed ClientHello carries an older one
        (RFC 6347 §4.2.8), and no cookie table is needed to tell them apart."""
        half_open = self._handshaking.get(address)
        return conn.last_activity if half_open is None else half_open[0]

    def _make_room(self, address: Address, host: Hashable, now: float) -> bool:
        """Before a new association from `address` (whose cookie proved it), of `host`: end
        the old one of that address (RFC 6347 §4.2.8), then keep the half-open ones within
        `ServerConfig.max_handshakes`. While the table has room, any host's is taken, however
        many its host has: a host's burst (a NAT's devices after a power cut, a load
        generator) costs no other host anything then. In a full table, a host at or over
        `ServerConfig.max_handshakes_per_host` makes room with its own oldest only once that
        one has stalled (`_stalled`); while its handshakes are all under way, False: the new
        one waits (its ClientHello dropped, its client sends it again), so the burst completes
        in turns instead of pushing its own handshakes out before they can finish. A host
        under its cap takes the place of the oldest of the host with the most beyond its cap
        (O(hosts over their cap), and only in a full table), else of the oldest of all: one
        host completing cookie exchanges fast never makes another host's handshake go.
        Half-open associations count on top of the established ones: only a completed
        handshake lets an established one go (`_keep_established_within_cap`)."""
        old = self.connections.get(address)
        if old is not None:
            self._drop(address, old, AssociationReplaced())
        if len(self._handshaking) < self.config.max_handshakes:
            return True
        own = self._handshakes_by_host.get(host)
        if own is not None and len(own) >= self.config.max_handshakes_per_host:
            oldest = next(iter(own))
            if not self._stalled(oldest, now):
                self.gate[GateOutcome.HOST_HANDSHAKES_WAIT] += 1
                return False
            self._evict(oldest, "too many handshakes from its host")
            self.gate[GateOutcome.HOST_HANDSHAKE_EVICTED] += 1
        elif self._over_cap:
            by_host = self._handshakes_by_host
            crowding = max(self._over_cap, key=lambda other: len(by_host[other]))
            self._evict(next(iter(by_host[crowding])), "too many handshakes from its host")
            self.gate[GateOutcome.OVER_CAP_HANDSHAKE_EVICTED] += 1
        else:
            self._evict(next(iter(self._handshaking)), "too many handshakes")
            self.gate[GateOutcome.HANDSHAKE_EVICTED] += 1
        return True

    def _evict(self, address: Address, reason: str) -> None:
        """Let `address`'s half-open handshake go (`AssociationEvicted(reason)`), sending
        nothing now (a flood of cookie exchanges must not make us send), and tell its client
        with internal_error if it repeats its flight (`_remember_eviction`)."""
        evicted = self.connections[address]
        self._drop(address, evicted, AssociationEvicted(reason))
        self._remember_eviction(address, evicted)

    def _stalled(self, address: Address, now: float) -> bool:
        """Whether `address`'s half-open handshake has stalled: begun (its cookie verified)
        more than two initial retransmission intervals ago (`ServerConfig.retransmit`, 1 s by
        default, RFC 6347 §4.2.4.1), by when a client that is still there has answered our
        flight or sent its own again."""
        started, _ = self._handshaking[address]
        return now - started > 2 * self.config.retransmit.initial

    def _start_handshake(self, address: Address, host: Hashable, now: float) -> None:
        """`address`'s association is half-open from `now`: in `_handshaking`, and among its
        `host`'s."""
        self._handshaking[address] = (now, host)
        own = self._handshakes_by_host.setdefault(host, {})
        own[address] = None
        if len(own) > self.config.max_handshakes_per_host:
            self._over_cap.add(host)

    def _end_handshake(self, address: Address) -> None:
        """`address`'s association is no longer half-open (established, or gone), if it was."""
        half_open = self._handshaking.pop(address, None)
        if half_open is None:
            return
        host = half_open[1]
        own = self._handshakes_by_host[host]
        del own[address]
        if len(own) <= self.config.max_handshakes_per_host:
            self._over_cap.discard(host)
            if not own:
                del self._handshakes_by_host[host]

    def _keep_established_within_cap(self) -> None:
        """A handshake just completed (its peer authenticated, RFC 5246 §7.4.9): beyond
        `ServerConfig.max_connections` established associations, the least recently active
        one goes, by its last activity as the idle timeout counts it (`_activity`, oldest
        first: an authenticated record from its peer; neither data sent to it nor a datagram
        that fails authentication protects an association). It gets close_notify first, so
        its peer learns that the association is gone."""
        if len(self.connections) - len(self._handshaking) > self.config.max_connections:
            idlest = next(iter(self._activity))
            evicted = self.connections[idlest]
            self._drop(idlest, evicted, AssociationEvicted("server full"), notify=True)
            self.gate[GateOutcome.EVICTED_WHEN_FULL] += 1

    def _drop(
        self, address: Address, conn: DtlsConnection, error: DtlsError, notify: bool = False
    ) -> None:
        """Forget `conn`. `notify`: send it close_notify first (RFC 5246 §7.2.1), so an
        established peer whose slot another took learns that its association is gone instead
        of sending into the void; never for an address whose peer started over (the alert would
        reach the new association)."""
        if notify:
            conn.close(error)
            for datagram in conn.datagrams_to_send(self._clock):
                self._outgoing.append((datagram, address))
        else:
            conn.terminate(error)
        self._untime(address)
        self._end_handshake(address)
        self._activity.pop(address, None)
        self.connections.pop(address, None)
        self._ended(address, conn)
        while (event := conn.next_event()) is not None:
            self._events.append((address, event))

    def _ended(self, address: Address, conn: DtlsConnection) -> None:
        """`conn` has left `connections`: its discards outlive it in `ended_discards`, and the
        alert of a failed handshake in `_failed` (`_remember_failure`)."""
        conn.add_discards(self.ended_discards)
        self._remember_failure(address, conn)

    def discards(self) -> Counter[IdentityHashEnum]:
        """Records silently discarded (RFC 6347 §4.1.2.7) by the associations that ended and by
        the live ones, by reason: a walk of every association, for reading counters, not for
        every datagram."""
        total = Counter(self.ended_discards)
        for conn in self.connections.values():
            conn.add_discards(total)
        return total

    def _hello_verify(
        self,
        data: bytes,
        record_seq: int,
        message_seq: int,
        cookie: bytes,
        address: Address,
    ) -> None:
        # RFC 6347 §4.2.1: record version 1.0 is safest; reuse the ClientHello's record sequence.
        datagram = _hello_verify_datagram(record_seq, message_seq, cookie)
        if len(datagram) > len(data):
            # Never amplify (HS-2). With the 16-byte cookie the answer is 44 bytes and the
            # smallest ClientHello that gets here 61: a guard for a longer cookie, not a case.
            self.gate[GateOutcome.HELLO_VERIFY_TOO_LARGE] += 1
            return
        self.gate[_HELLO_VERIFY_SENT] += 1
        self._outgoing.append((datagram, address))
        if self._failed:
            # A new handshake from the address: the failed one's alert is no longer owed, and
            # a late copy of its flight must not end this one with it. Only a ClientHello the
            # gate takes (answered here, or starting an association) forgets it: one it drops
            # (a part, a malformed one) does not.
            self._failed.pop(address, None)

    def _collect(self, address: Address, conn: DtlsConnection) -> None:
        """Take what `conn` has to send and to tell, and keep the tables in step with it."""
        for datagram in conn.datagrams_to_send(self._clock):
            self._outgoing.append((datagram, address))
        while (event := conn.next_event()) is not None:
            self._events.append((address, event))
        if self.connections.get(address) is not conn:
            return
        ended = conn.state is not _HANDSHAKING and address in self._handshaking
        if ended:
            self._end_handshake(address)
        if conn.state is _CLOSED:
            del self.connections[address]
            self._ended(address, conn)
            self._activity.pop(address, None)
        elif conn.state is _ESTABLISHED:
            self._note_activity(address, conn.last_activity)
            if ended:
                self._keep_established_within_cap()
        # Only associations with a pending timer (handshakes, heartbeats and keep-alives) are
        # kept with their timers, so an endpoint with many established peers without a
        # keep-alive pays nothing per datagram for them.
        timer = conn.get_timer()
        if timer is None:
            self._untime(address)
            return
        self._timed[address] = conn
        if self._deadlines.get(address) != timer:
            self._deadlines[address] = timer
            heapq.heappush(self._timer_heap, (timer, next(self._tie_break), address))
            if len(self._timer_heap) > 2 * len(self._deadlines) + TIMER_HEAP_SLACK:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Rebuild the heap from the current timers (superseded entries of a flood of
        handshakes must not pile up until their deadlines pass)."""
        self._timer_heap = [
            (deadline, next(self._tie_break), address)
            for address, deadline in self._deadlines.items()
        ]
        heapq.heapify(self._timer_heap)

    def _untime(self, address: Address) -> None:
        self._timed.pop(address, None)
        self._deadlines.pop(address, None)

    def _note_activity(self, address: Address, when: float) -> None:
        """Keep `_activity` in order of last activity: a newer time moves `address` last."""
        last = self._activity.get(address)
        if last is None or when > last:
            self._activity.pop(address, None)
            self._activity[address] = when

    def _idle_deadline(self) -> float | None:
        """When the least recently active established association idles out, if ever."""
        idle = self.config.idle_timeout
        if idle is None or not self._activity:
            return None
        return next(iter(self._activity.values())) + idle

    def _expire_idle(self, now: float) -> None:
        """close_notify to, and forget, every established association idle for longer than
        `ServerConfig.idle_timeout`; each ends with `ConnectionClosed(IdleTimeout)`."""
        idle = self.config.idle_timeout
        if idle is None:
            return
        while self._activity and now >= next(iter(self._activity.values())) + idle:
            address = next(iter(self._activity))
            del self._activity[address]
            conn = self.connections[address]
            conn.close(IdleTimeout(idle))
            self.idle_expired += 1
            self._collect(address, conn)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram waiting to leave, each with the address it goes to, oldest first
        (the list is handed over: the endpoint keeps none of them)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> tuple[Address, Event] | None:
        """The oldest event of any association with its address, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest timer of any association (absolute seconds): a retransmission, a
        handshake deadline, a heartbeat, or the next idle timeout; None when there is none."""
        heap = self._timer_heap
        earliest = None
        while heap:
            deadline, _, address = heap[0]
            if self._deadlines.get(address) == deadline:
                earliest = deadline
                break
            heapq.heappop(heap)  # superseded by a later timer of its association, or ended
        idle = self._idle_deadline()
        if idle is not None and (earliest is None or idle < earliest):
            return idle
        return earliest

    def handle_timer(self, now: float) -> None:
        """Run every timer due by `now` (`get_timer`): retransmissions, handshake deadlines,
        heartbeats, idle timeouts."""
        self._advance_clock(now)
        heap = self._timer_heap
        due = []
        while heap and heap[0][0] <= now:
            deadline, _, address = heapq.heappop(heap)
            if self._deadlines.get(address) == deadline:
                del self._deadlines[address]
                due.append(address)
        for address in due:
            conn = self._timed.get(address)
            if conn is not None:
                conn.handle_timer(now)
                self._collect(address, conn)
        self._expire_idle(now)

    def send(
        self, address: Address, data: bytes | bytearray | memoryview, now: float | None = None
    ) -> None:
        """Send application data to an established peer, at `now` or at the latest time the
        endpoint was given: traffic for the keep-alive (RFC 6520 §5.2), not for the idle
        timeout, which only the peer's authenticated records reset (`_activity`: what we send
        to a peer that has gone proves nothing, and a server pushing to it, a CoAP observer
        whose NAT binding moved, would keep it for ever). Raises `DatagramTooLarge` for data
        that does not fit one datagram (`DtlsConnection.max_send_size`)."""
        conn = self.connections.get(address)
        if conn is None:
            raise LocalProtocolError(f"no association with {address!r}")
        conn.send(data)
        if now is not None:
            self._advance_clock(now)
        self._collect(address, conn)

    def send_heartbeat(self, address: Address, now: float) -> None:
        """Send a heartbeat request to an established peer (see
        `DtlsConnection.send_heartbeat`)."""
        conn = self.connections.get(address)
        if conn is None:
            raise LocalProtocolError(f"no association with {address!r}")
        self._advance_clock(now)
        conn.send_heartbeat(now)
        self._collect(address, conn)

    def supply_certificate_chain(
        self,
        address: Address,
        chain: tuple[bytes, ...] | ProtocolError,
        now: float,
        *,
        request: CertificateUrlsReceived,
    ) -> None:
        """Answer `request`, the `CertificateUrlsReceived` event of `address`'s association (see
        `DtlsConnection.supply_certificate_chain`); ignored if that association has gone, even
        when a new one from the same address (RFC 6347 §4.2.8) waits for a chain of its own."""
        self._advance_clock(now)
        conn = self.connections.get(address)
        if conn is not None:
            conn.supply_certificate_chain(chain, now, request)
            self._collect(address, conn)

    def close(self, address: Address) -> None:
        """Close the association of `address`, if any, with close_notify (RFC 5246 §7.2.1)."""
        conn = self.connections.get(address)
        if conn is not None:
            conn.close()
            self._collect(address, conn)


def host_of(address: Address) -> Hashable:
    """The host whose half-open handshakes `address`'s counts among
    (`ServerConfig.max_handshakes_per_host`). For a socket address (host, port, ...): the IPv4
    address; for IPv6 its /64 prefix (RFC 4291 §2.5.4: one subnet, the least an end site is
    given, RFC 6177 §2), so one subscriber cannot pass for many hosts by changing its low
    bits; a link-local one's /64 with its zone, the scope id (or the "%zone" of its host),
    since fe80::/64 on another interface is another link (RFC 4007 §5); an IPv4-mapped IPv6
    address (RFC 4291 §2.5.5.2) as its IPv4 address. NAT64 addresses (64:ff9b::/96, RFC 6052
    §2.1) are left in their /64: every IPv4 client behind one NAT64 counts as one host. Any
    other tuple (the sans-I/O core takes whatever addresses an adapter gives) by its first
    element; anything else as it is."""
    host: Hashable = address[0] if type(address) is tuple and address else address
    if type(host) is not str or ":" not in host:  # an IPv4 address is its own host
        return host
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    prefix = ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
    if ip.is_link_local:
        scope = address[3] if type(address) is tuple and len(address) >= 4 else 0
        return (prefix, scope or ip.scope_id)
    return prefix


def _starts_with_hello(data: bytes) -> bool:
    """An epoch-0 handshake record carrying a ClientHello starts this datagram."""
    return (
        len(data) > RECORD_HEADER_LEN
        and data[0] == HANDSHAKE_CONTENT
        and data[3:5] == b"\0\0"
        and data[RECORD_HEADER_LEN] == _CLIENT_HELLO
    )


def _is_new_hello(data: bytes, conn: DtlsConnection) -> bool:
    """An epoch-0 ClientHello starting a new handshake (RFC 6347 §4.2.8), not a late copy of
    the one that began `conn`'s: a delayed or retransmitted copy must not replace it."""
    if not _starts_with_hello(data):
        return False
    hello = _hello_record(data)
    if hello is None or not (hello.whole or hello.part):
        return True
    random = hello.client_random(data)
    if hello.part:
        # A part of a ClientHello goes to the association unless it is a first part with a
        # random other than the association's: without cookie exchange the association may be
        # reassembling its own hello from its parts, and a later part shows no random at all.
        known = conn.client_random
        return bool(known) and random is not None and random != known
    return random is None or random != conn.client_random


#: The record header (RFC 6347 §4.1: type, version, epoch, 48-bit sequence number as u16 + u32,
#: length) and the handshake header behind it (§4.2.2: type and length as one u32,
#: message_seq, fragment_offset as u16 + the top byte of a u32 whose low three bytes are
#: fragment_length): the first 25 bytes of a datagram that opens a handshake, in one unpack.
_INITIAL_HEADERS = struct.Struct(">BHHHIHIHHI")


class _HelloRecord(NamedTuple):
    """The headers of a datagram's first record when it carries (a part of) an epoch-0
    ClientHello (RFC 6347 §4.1, §4.2.2)."""

    record_seq: int
    message_seq: int
    length: int
    fragment_offset: int
    fragment_length: int

    @property
    def whole(self) -> bool:
        """The ClientHello in one fragment, which its record holds whole."""
        return self.fragment_offset == 0 and self.fragment_length == self.length

    @property
    def part(self) -> bool:
        """A part, not the whole, of the ClientHello (RFC 6347 §4.2.3), inside its message."""
        return 0 < self.fragment_length < self.length and (
            self.fragment_offset + self.fragment_length <= self.length
        )

    def fragment(self, data: bytes) -> bytes:
        """The fragment this record of `data` carries (the whole body when `whole`)."""
        return data[_INITIAL_HEADERS.size : _INITIAL_HEADERS.size + self.fragment_length]

    def client_random(self, data: bytes) -> bytes | None:
        """The client random this record of `data` shows (RFC 5246 §7.4.1.2: behind the
        client_version) when it carries the hello's first part, far enough; else None."""
        if self.fragment_offset:
            return None
        fragment = self.fragment(data)
        return fragment[_RANDOM_AT:_RANDOM_END] if len(fragment) >= _RANDOM_END else None


def _hello_record(data: bytes) -> _HelloRecord | None:
    """The headers of the first record of `data` if it is an epoch-0 handshake record of a
    DTLS 1.0/1.2 ClientHello whose fragment lies inside both the record and the datagram; None
    for anything else, malformed input included (the gate runs this for every first datagram
    of a peer). A record longer than 2^14 bytes is malformed (RFC 6347 §4.1, RFC 5246 §6.2.1:
    its length "MUST NOT exceed 2^14"; the record layer discards it as bad_length, RFC 6347
    §4.1.2.7): no HelloVerifyRequest, no association and no MAC over it."""
    if len(data) < _INITIAL_HEADERS.size:
        return None
    (
        content_type,
        version,
        epoch,
        seq_high,
        seq_low,
        record_length,
        type_and_length,
        message_seq,
        offset_high,
        offset_low_and_fragment_length,
    ) = _INITIAL_HEADERS.unpack_from(data)
    fragment_length = offset_low_and_fragment_length & 0xFFFFFF
    end = _INITIAL_HEADERS.size + fragment_length
    if (
        content_type != HANDSHAKE_CONTENT
        or epoch != 0
        or version not in (DTLS_1_0, DTLS_1_2)
        or type_and_length >> 24 != _CLIENT_HELLO
        or end > len(data)
        or end > RECORD_HEADER_LEN + record_length
        or record_length > MAX_PLAINTEXT_LENGTH
    ):
        return None
    return _HelloRecord(
        (seq_high << 32) | seq_low,
        message_seq,
        type_and_length & 0xFFFFFF,
        (offset_high << 8) | (offset_low_and_fragment_length >> 24),
        fragment_length,
    )


#: A HelloVerifyRequest's record header (DTLS 1.0, epoch 0), handshake header (the whole
#: message in one fragment) and server_version with the cookie's length byte (RFC 6347 §4.1,
#: §4.2.2, §4.2.1), in one pack: the gate's answer to a first ClientHello, the counterpart of
#: `_INITIAL_HEADERS` (one value and one write for each, not a message, a writer and a record
#: header made and encoded for every hello of a flood).
_HELLO_VERIFY_HEADERS = struct.Struct(_INITIAL_HEADERS.format + "HB")
#: server_version (2) and the cookie's length (1) before the cookie.
_HELLO_VERIFY_FIXED = 3


def _hello_verify_datagram(record_seq: int, message_seq: int, cookie: bytes) -> bytes:
    """The datagram of one HelloVerifyRequest (server_version DTLS 1.0, RFC 6347 §4.2.1) in
    record `record_seq`, handshake message `message_seq`, with `cookie` (up to 255 bytes)."""
    length = _HELLO_VERIFY_FIXED + len(cookie)
    return (
        _HELLO_VERIFY_HEADERS.pack(
            HANDSHAKE_CONTENT,
            DTLS_1_0,
            0,
            record_seq >> 32,
            record_seq & 0xFFFFFFFF,
            HANDSHAKE_HEADER_LEN + length,
            (_HELLO_VERIFY_REQUEST << 24) | length,
            message_seq,
            0,
            length,
            DTLS_1_0,
            len(cookie),
        )
        + cookie
    )


def _plain_record(content_type: int, version: int, seq: int, payload: bytes) -> bytes:
    return RecordHeader(content_type, version, 0, seq, len(payload)).encode() + payload
