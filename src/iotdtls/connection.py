"""`DtlsConnection`: the sans-I/O DTLS 1.2 association (design: aioquic / h11 style).

Datagrams and the current time go in; datagrams, events and one timer come out. The core reads
no clock and touches no socket. Everything the peer does wrong ends, at one point
(`_fail`), in a fatal alert and a `ConnectionClosed` event naming it; invalid records are
dropped and counted by the record layer (RFC 6347 §4.1.2.7) and never raise.

Once the hellos negotiated a max_fragment_length (RFC 6066 §4, EXT-1), every record we send
holds at most that much plaintext, handshake fragments included, and a datagram at most one
such record and its overhead; `send` refuses a larger datagram. A received record over the
limit: unprotected, it is dropped silently (RFC 6347 §4.1.2.7; RFC 6066 §4 forbids an alert in
DTLS for what did not authenticate), but for the client's ClientHello at a server, sent before
the client could know the limit and repeated when our flight is lost (RFC 6347 §4.2.4);
protected and authentic, the peer broke the agreement and the association ends with
record_overflow (RFC 6066 §4, RFC 5246 §6.2.3). Heartbeats (RFC 6520,
EXT-5) run in `iotdtls.heartbeat` once the handshake is complete.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from enum import Enum, auto

from iotdtls._arguments import check_bytes_like, check_session, check_session_store, sealable
from iotdtls._enum import IdentityHashEnum
from iotdtls.config import ClientConfig, ServerConfig, type_name
from iotdtls.credentials import WallClockFailed, read_wall_clock, validity_problem
from iotdtls.crypto.suites import EpochKeys
from iotdtls.errors import (
    AlertDescription,
    AlertLevel,
    AlertReceived,
    AlertSent,
    AssociationEnded,
    DatagramTooLarge,
    DecodeError,
    DtlsError,
    HandshakeTimeout,
    IntegrityLimitReached,
    LocalProtocolError,
    PeerUnresponsive,
    ProtocolError,
    SequenceNumbersExhausted,
)
from iotdtls.events import (
    AlertReceived as AlertEvent,
)
from iotdtls.events import (
    CertificateUrlsReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    HeartbeatAnswered,
)
from iotdtls.handshake.alerts import CERTIFICATE_TYPE_ALERTS, permitted_alert
from iotdtls.handshake.client import ClientHandshake, ClientState
from iotdtls.handshake.flight import (
    Flight,
    OutgoingCcs,
    OutgoingMessage,
    RetransmitTimer,
    cut_flight,
)
from iotdtls.handshake.machine import HandshakeMachine
from iotdtls.handshake.negotiation import NoCertificateType
from iotdtls.handshake.reassembly import HandshakeFragment, Reassembler, fragments_of
from iotdtls.handshake.server import ServerHandshake
from iotdtls.heartbeat import HeartbeatDrop, Heartbeats, TimerOutcome
from iotdtls.identity import PeerIdentity, PskIdentity
from iotdtls.messages import Alert, HandshakeType, HeartbeatMode
from iotdtls.messages.ccs import check_change_cipher_spec
from iotdtls.record import (
    ALERT_CONTENT,
    CCS_CONTENT,
    DATA_CONTENT,
    HANDSHAKE_CONTENT,
    MAX_PLAINTEXT_LENGTH,
    ContentType,
    PlainRecord,
    RecordLayer,
)
from iotdtls.sessions import SessionState, SessionStore

__all__ = ["ConnectionState", "DropReason", "DtlsConnection"]

logger = logging.getLogger("iotdtls")

#: The epoch the (only) handshake of an association switches to.
HANDSHAKE_EPOCH = 1
#: A ClientHello's record sequence number we continue from only if far below 2^48 - 1, so a
#: hostile number cannot exhaust our epoch-0 sequence space (RFC 6347 §4.1).
ADOPTABLE_SEQUENCE_LIMIT = 1 << 40
#: How long the sender of a handshake's last flight keeps it to answer a repeat of the peer's
#: last flight, unless the peer shows sooner that it has it (RFC 6347 §4.2.4: at least twice
#: TCP's maximum segment lifetime of two minutes). Then the handshake state goes.
FINAL_FLIGHT_HOLD = 240.0
#: Application records of the handshake's new epoch that reach us before the peer's Finished,
#: held to deliver once it is verified (RFC 6347 §4.1: of packets of a new epoch that arrive
#: before the handshake has completed, "implementations MAY either buffer or discard such
#: packets"): at most this many, and this many bytes of data, per
#: association; the rest are dropped as `DropReason.DATA_BEFORE_HANDSHAKE`.
EARLY_DATA_RECORDS = 8
EARLY_DATA_BYTES = MAX_PLAINTEXT_LENGTH
#: After a handshake failed on a fatal alert of ours, how many more times the alert is sent if
#: the peer repeats its flight (RFC 6347 §4.2.7; `DtlsConnection.alert_repeats`).
ALERT_REPEATS = 3
#: How many of the peer's latest epoch-0 handshake records a connection keeps the numbers of
#: (epoch, sequence number), to tell a repeat of its flight in a record not seen before
#: (answered with ours, RFC 6347 §4.2.4) from a network duplicate of one seen (not answered;
#: epoch 0 has no replay window, the protected epochs' drop a duplicate). A bounded set, not
#: a high-water mark: epoch 0 is unauthenticated, and one forged record numbered 2^48 - 1
#: raised such a mark above every genuine repeat for the rest of the handshake. A forger's
#: records push the oldest numbers out instead; the rate limit of early resends
#: (`_resend_flight_early`) bounds what a duplicate of one pushed out can cause.
RECENT_HANDSHAKE_RECORDS = 32
#: The numbers kept when one is added: the last of them (one slice made once, issue 9).
_KEPT_BEFORE_NEXT = slice(1 - RECENT_HANDSHAKE_RECORDS, None)
_NEVER = float("-inf")


class ConnectionState(Enum):
    IDLE = auto()
    HANDSHAKING = auto()
    ESTABLISHED = auto()
    CLOSED = auto()


#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_IDLE = ConnectionState.IDLE
_HANDSHAKING = ConnectionState.HANDSHAKING
_ESTABLISHED = ConnectionState.ESTABLISHED
_CLOSED = ConnectionState.CLOSED
_CLOSE_NOTIFY = AlertDescription.close_notify
_WARNING = AlertLevel.WARNING
_CLIENT_HELLO = HandshakeType.client_hello
_HELLO_REQUEST = HandshakeType.hello_request
#: What `receive_datagram` takes (an isinstance check per datagram; the message is
#: `check_bytes_like`'s).
_BYTES_LIKE = (bytes, bytearray, memoryview)


class DropReason(IdentityHashEnum):
    """Authenticated records the connection ignores (counted in `DtlsConnection.dropped`;
    heartbeat messages in `iotdtls.heartbeat.HeartbeatDrop`)."""

    DATA_BEFORE_HANDSHAKE = auto()
    PLAINTEXT_AFTER_HANDSHAKE = auto()
    UNEXPECTED_CCS = auto()
    HELLO_REQUEST_DURING_HANDSHAKE = auto()


class DtlsConnection:
    """One DTLS association with one peer, client or server by the type of `config`."""

    # Slots: a server holds one of these per association (memory per association, issue 9).
    __slots__ = (
        "_alert_repeats",
        "_bad_tags_at_progress",
        "_datagrams_since_ccs",
        "_datagrams_since_progress",
        "_deadline",
        "_deferred_ccs",
        "_dropped",
        "_early_data",
        "_events",
        "_flight",
        "_fragment_limit",
        "_handshake",
        "_heartbeats",
        "_hold_until",
        "_log_failures",
        "_lone_bad_finished",
        "_max_send_size",
        "_next_triggered_retransmit",
        "_numbering_adopted",
        "_outgoing",
        "_peer_closed",
        "_reassembler",
        "_recent_handshake_records",
        "_records",
        "_refused_renegotiation",
        "_timer",
        "_unreachable_after_answer",
        "_unreachable_reports",
        "_write_epoch",
        "config",
        "error",
        "is_client",
        "last_activity",
        "retransmissions",
        "state",
    )
    #: Set by `_close` (and `_fail`), read only once closed, so that the successful handshake
    #: never pays for it (`alert_repeats`).
    _alert_repeats: tuple[bytes, ...]
    #: Set by `port_unreachable_after_answer` only (read with a default of 0), for the same
    #: reason: a handshake that had no such report never pays for it.
    _unreachable_after_answer: int

    def __init__(
        self,
        config: ClientConfig | ServerConfig,
        *,
        session: SessionState | None = None,
        session_store: SessionStore | None = None,
        log_failures: bool = True,
    ) -> None:
        """A client offers `session` for resumption (RES-1; see `session` after the
        handshake); a server caches and looks up sessions in `session_store` (None: no
        resumption; a `ServerEndpoint` passes its own). A failure is logged at DEBUG
        ("association failed: ...") unless not `log_failures` (an adapter that logs each
        `ConnectionClosed` itself, naming the peer). Arguments of the wrong type raise
        `TypeError` naming them."""
        if not isinstance(config, ClientConfig | ServerConfig):
            raise TypeError(
                f"config must be a ClientConfig or a ServerConfig, got {type_name(config)}"
            )
        self.config = config
        self.is_client = isinstance(config, ClientConfig)
        self._log_failures = log_failures
        self.state = _IDLE
        # Epoch 0 is unauthenticated: a forged record with a high sequence number would push
        # a replay window past the genuine handshake records (RFC 6347 §4.1.2.6 makes the
        # check optional). Handshake messages are deduplicated by message_seq instead, and
        # a repeated record cannot trigger a retransmission (`_recent_handshake_records`).
        self._records = RecordLayer(
            integrity_limit=config.integrity_limit, epoch0_replay_check=False
        )
        #: The (epoch, sequence number) of the peer's latest epoch-0 handshake records, oldest
        #: first, `RECENT_HANDSHAKE_RECORDS` at most (`_maybe_retransmit`); a tuple, so that a
        #: settled association keeps the shared empty one.
        self._recent_handshake_records: tuple[tuple[int, int], ...] = ()
        #: Datagrams since the peer's flight last moved the handshake, and the count of
        #: records that had failed authentication then (PSK-4, `_check_finished_authenticates`);
        #: datagrams since the peer's ChangeCipherSpec (taken or repeated), and how many
        #: datagrams right after one failed authentication.
        self._datagrams_since_progress = 2
        self._bad_tags_at_progress = 0
        self._datagrams_since_ccs = 2
        self._lone_bad_finished = 0
        self._next_triggered_retransmit = _NEVER
        #: ICMP port-unreachable reports of a client's handshake with nothing heard from the
        #: server (`port_unreachable_reported`), for its `HandshakeTimeout`.
        self._unreachable_reports = 0
        self._handshake: HandshakeMachine
        if isinstance(config, ClientConfig):
            if session_store is not None:
                raise LocalProtocolError("session_store is for servers; a client takes session=")
            check_session(session)
            self._handshake = ClientHandshake(config, session)
        else:
            if session is not None:
                raise LocalProtocolError("session= is for clients; a server takes session_store")
            check_session_store(session_store)
            self._handshake = ServerHandshake(config, session_store)
        self._reassembler = Reassembler(config.max_handshake_message)
        #: The retransmission timer (RFC 6347 §4.2.4.1); None once the handshake is settled.
        self._timer: RetransmitTimer | None = RetransmitTimer(config.retransmit)
        self._flight: Flight | None = None
        #: Until when our final flight is kept for a peer that may not have it (`_settle`).
        self._hold_until: float | None = None
        self._write_epoch = 0
        self._deadline: float | None = None
        #: Datagrams to send and events to report: None while empty (an empty list each
        #: would cost 112 bytes per idle association).
        self._outgoing: list[bytes] | None = None
        # A list, not a deque: an empty deque costs 600 bytes per association, and a
        # connection's events are drained after every datagram (a handful at most).
        self._events: list[Event] | None = None
        self._dropped: Counter[DropReason] | None = None
        #: The peer's data held until its Finished is verified (`_on_application_data`).
        self._early_data: list[bytes] | None = None
        self.error: DtlsError | None = None
        #: The peer's warning-level close_notify ended the association (`AssociationEnded`).
        self._peer_closed = False
        #: Flights resent early on evidence of loss (RFC 6347 §4.2.4), as many as the rate
        #: limit of `_resend_flight_early` let out: the peer repeated its previous flight
        #: (ours was lost; a held final flight's resends included), or sent data under the
        #: new keys while its Finished is missing (its last flight was lost). Resends on our
        #: own retransmission timer (§4.2.4.1) are not counted: this says how often the
        #: peer showed a loss.
        self.retransmissions = 0
        self._numbering_adopted = self.is_client
        #: A ChangeCipherSpec that arrived while its flight waited for a fetched chain.
        self._deferred_ccs = False
        #: We answered the peer's renegotiation with no_renegotiation (`_on_alert` says so).
        self._refused_renegotiation = False
        #: Largest record plaintext either side may send (RFC 6066 §4), 2^14 by default.
        self._fragment_limit = MAX_PLAINTEXT_LENGTH
        #: RFC 6520 state: made when both hellos agreed on heartbeats (or a peer sends one
        #: anyway, to count the drop); most associations never have one.
        self._heartbeats: Heartbeats | None = None
        self._max_send_size = 0
        #: When the peer last sent an authenticated record of the current epoch (or the
        #: handshake completed): what a server's idle timeout measures (`ServerConfig`).
        self.last_activity = 0.0

    def __repr__(self) -> str:
        role = "client" if self.is_client else "server"
        return f"<DtlsConnection {role} {self.state.name}>"

    # -- public surface -----------------------------------------------------------------------
    @property
    def dropped(self) -> Counter[DropReason]:
        """Authenticated records the connection ignored, by reason (made on the first one)."""
        if self._dropped is None:
            self._dropped = Counter()
        return self._dropped

    @property
    def discards(self) -> Counter[IdentityHashEnum]:
        """Records dropped by the record layer and by the connection, by reason."""
        total: Counter[IdentityHashEnum] = Counter()
        self.add_discards(total)
        return total

    def add_discards(self, total: Counter[IdentityHashEnum]) -> None:
        """Add `discards` to `total` without making a counter in the connection (a server
        sums those of its associations, RFC 6347 §4.1.2.7)."""
        self._records.add_discards(total)
        if self._dropped is not None:
            total.update(self._dropped)
        if self._heartbeats is not None:
            self._heartbeats.add_dropped(total)

    @property
    def session(self) -> SessionState | None:
        """The session of this association, for a later resumption (RES-1): set once the
        handshake completed with a session_id and the extended master secret (RES-3); None
        otherwise, and again after a fatal alert (RFC 5246 §7.2.2). A client saves it
        (`SessionState.to_bytes`, a secret) and offers it with `session=`."""
        return self._handshake.resumable_session()

    @property
    def extended_master_secret(self) -> bool:
        """True once the handshake negotiated the extended master secret (RFC 7627), False
        before and without it: such a session is never resumed (RFC 7627 §5.3, RES-3), so
        `session` stays None even when the server gave a session_id. A flag, no secret."""
        return self._handshake.keys.extended_master_secret

    @property
    def resumed(self) -> bool:
        """True when the handshake resumed a session (the abbreviated handshake)."""
        return self._handshake.resumed

    @property
    def max_fragment_length(self) -> int | None:
        """The negotiated max_fragment_length in bytes (RFC 6066 §4), None for none."""
        return self._handshake.fragment_limit

    @property
    def heartbeats_negotiated(self) -> bool:
        """Both hellos agreed on heartbeats (RFC 6520 §2); `send_heartbeat` further needs the
        peer to accept requests."""
        return self._heartbeats is not None and self._heartbeats.negotiated

    @property
    def heartbeat_requests_accepted(self) -> bool:
        """Heartbeats were negotiated and the peer accepts our requests: it said
        peer_allowed_to_send (RFC 6520 §2), so `send_heartbeat` and keep-alive can work."""
        return self._heartbeats is not None and self._heartbeats.may_send

    @property
    def heartbeat_in_flight(self) -> bool:
        """A heartbeat request of ours awaits its response (RFC 6520 §3: one at a time)."""
        return self._heartbeats is not None and self._heartbeats.in_flight

    @property
    def closed(self) -> bool:
        """True once the association has ended, cleanly or not."""
        return self.state is _CLOSED

    @property
    def alert_repeats(self) -> tuple[bytes, ...]:
        """After a handshake that failed on our fatal alert, the datagrams still kept to send
        that alert again, each a new record (RFC 6347 §4.2.7: an implementation that would
        issue an alert "SHOULD generate a new alert message if the offending record is
        received again (e.g., as a retransmitted handshake message)"). The connection sends
        one when a datagram of the peer's flight comes again (`receive_datagram`); a
        `ServerEndpoint`, which forgets the connection, keeps these instead. Empty otherwise:
        while the association lives, and after any other end."""
        return self._alert_repeats if self.state is _CLOSED else ()

    @property
    def peer(self) -> PeerIdentity | None:
        """Who the peer is: claimed during the handshake, authenticated once it completes."""
        return self._handshake.peer

    @property
    def psk_identity(self) -> bytes:
        """The PSK identity the client named (empty outside PSK mode or before it)."""
        peer = self._handshake.peer
        return peer.identity if isinstance(peer, PskIdentity) else b""

    @property
    def client_random(self) -> bytes:
        """The client's random of this association's handshake (public, sent in clear)."""
        return self._handshake.client_random

    @property
    def handshake_state(self) -> Enum:
        """Where the handshake machine is (a `ClientState` or `ServerState`), for logs and
        tests."""
        return self._handshake.state

    def connect(self, now: float) -> None:
        """Client: start the handshake (flight 1)."""
        if (
            not isinstance(self._handshake, ClientHandshake)
            or self.state is not _IDLE
        ):
            raise LocalProtocolError("connect() is for a new client connection")
        self._begin(now)
        self._send_flight(self._handshake.start(), now)

    def accept(self, now: float) -> None:
        """Server: expect a ClientHello (the endpoint calls this before the first datagram)."""
        if self.is_client or self.state is not _IDLE:
            raise LocalProtocolError("accept() is for a new server connection")
        self._begin(now)

    def _begin(self, now: float) -> None:
        self.state = _HANDSHAKING
        self._deadline = now + self.config.handshake_timeout

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Process one datagram from the peer. Never raises for anything the peer sent; data
        that is not bytes-like raises `TypeError`. An answer that needs a record number past
        the last of its epoch ends the association with `SequenceNumbersExhausted`."""
        if not isinstance(data, _BYTES_LIKE):
            check_bytes_like(data)
        try:
            if self.state is _ESTABLISHED:
                self._receive_established(data, now)
            else:
                self._unreachable_reports = 0  # the server is heard: the reports were stale
                self._receive_handshaking(data, now)
        except SequenceNumbersExhausted as exc:
            self._abandon(exc)

    def port_unreachable_reported(self, reports: int) -> None:
        """For a client's adapter (`iotdtls._unreachable`): the network has answered this
        handshake's flights with `reports` ICMP port-unreachable reports, no datagram having
        come from the server. The core never sees them (they come from the socket); a
        `HandshakeTimeout` then names them, nothing may listen there. A datagram received
        forgets them."""
        self._unreachable_reports = reports

    def port_unreachable_after_answer(self) -> None:
        """For a client's adapter (`iotdtls._unreachable`): one more ICMP port-unreachable
        report in this handshake after a datagram had come from the server. It does not end the
        handshake (ICMP is soft, RFC 8085 §5.2, and a report that follows an answer may be
        forged or stale); a `HandshakeTimeout` names them (the server may have gone away)."""
        self._unreachable_after_answer = getattr(self, "_unreachable_after_answer", 0) + 1

    def _abandon(self, exc: SequenceNumbersExhausted) -> None:
        """RFC 6347 §4.1: a sequence number must not wrap, so an association whose write epoch
        ran out is abandoned, without an alert (there is no number left to send one with).
        Every public method that seals records ends the association so."""
        if self.state is not _CLOSED:
            self._close(exc)

    def _receive_handshaking(self, data: bytes, now: float) -> None:
        if self.state is _IDLE and not self.is_client:
            self._begin(now)
        if self.state in (_IDLE, _CLOSED):
            if self.state is _CLOSED and self._alert_repeats:
                self._repeat_alert(data, now)
            return
        self._datagrams_since_progress += 1
        self._datagrams_since_ccs += 1
        # Only the datagram right after the peer's ChangeCipherSpec may hold a lone Finished.
        bad_tags_before = (
            self._records.bad_tags(HANDSHAKE_EPOCH) if self._datagrams_since_ccs == 1 else 0
        )
        try:
            for record in self._records.open_records(data):
                # (An unprotected record over the limit is a server's ClientHello, which the
                # record layer lets through: `RecordLayer.client_hello_exempt`.)
                if len(record.payload) > self._fragment_limit and record.epoch:
                    raise _record_overflow(len(record.payload), self._fragment_limit)
                if (
                    record.epoch < self._handshake.peer_epoch
                    and record.content_type is not CCS_CONTENT
                ):
                    # After its ChangeCipherSpec the genuine peer sends under its new keys: a
                    # record of the epoch it left is a forgery or a stale copy, dropped unread
                    # (it cannot end the handshake: RFC 6347 §4.1.2.7, REC-3), as once
                    # established. A repeated ChangeCipherSpec is counted as unexpected.
                    self.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] += 1
                    continue
                self._dispatch(record, now)
                if self.state is _CLOSED:
                    return
            self._check_finished_authenticates(bad_tags_before)
        except ProtocolError as exc:
            self._fail(exc, now)
            return
        self._check_integrity_limit()

    def _repeat_alert(self, data: bytes, now: float) -> None:
        """The handshake failed on our fatal alert, and a datagram came from the peer: if it
        holds a handshake or ChangeCipherSpec record that opens (the peer repeats its flight:
        our alert was lost), send the alert again, in a new record (RFC 6347 §4.2.7). Never
        an amplifier: one alert per datagram at most, only for a datagram at least as large
        as the alert, at most once per quarter of the initial retransmission interval (as
        `_resend_flight_early`, whose deadline this reuses: the handshake is over), and
        `ALERT_REPEATS` times in all. Application data and alerts trigger nothing."""
        repeats = self._alert_repeats
        if now < self._next_triggered_retransmit or len(data) < len(repeats[0]):
            return
        for record in self._records.open_records(data):
            if record.content_type is HANDSHAKE_CONTENT or record.content_type is CCS_CONTENT:
                break
        else:
            return
        self._next_triggered_retransmit = now + self.config.retransmit.triggered_spacing
        self._alert_repeats = repeats[1:]
        self._queue([repeats[0]])

    def _note_progress(self) -> None:
        """The peer's flight moved the handshake (a message handled, its ChangeCipherSpec
        taken): remember when, for `_check_finished_authenticates`."""
        self._datagrams_since_progress = 0
        self._bad_tags_at_progress = self._records.bad_tags(HANDSHAKE_EPOCH)

    def _check_finished_authenticates(self, bad_tags_before: int) -> None:
        """PSK-4: a wrong key (or an unknown identity, which the server turned into a random
        key) shows as the client's Finished failing to authenticate: decrypt_error. In an
        abbreviated handshake (RFC 5246 §7.3) the server's Finished comes first: failing at a
        resuming client, it shows that the two sides hold the session with different master
        secrets (a session file edited or damaged), decrypt_error too (RFC 5246 §7.4.9).

        Only a side waiting for that Finished (`awaits_authenticated_finished`: a server in a
        full handshake, a resuming client) concludes so, and only from a record that arrives
        with the peer's own flight: in the datagram whose messages moved the handshake;
        or, for peers that send one record per datagram (GnuTLS), alone in the datagram right
        after the peer's ChangeCipherSpec, the second time it happens (the peer repeats its
        flight when we do not answer it). Any other record that fails authentication is
        dropped (RFC 6347 §4.1.2.7): an attacker off the path cannot end a handshake with
        forged records, unless it forges the peer's flight itself in epoch 0 (for a resuming
        client, a ServerHello naming the session_id its ClientHello showed), which spoils the
        handshake anyway, as a forged epoch-0 alert ends one; a single lone record is what it
        could slip in otherwise."""
        if not self._handshake.awaits_authenticated_finished():
            return
        bad_tags = self._records.bad_tags(HANDSHAKE_EPOCH)
        if self._datagrams_since_progress == 0:
            failed = bad_tags > self._bad_tags_at_progress
        elif self._datagrams_since_ccs == 1 and bad_tags > bad_tags_before:
            self._lone_bad_finished += 1
            failed = self._lone_bad_finished > 1
        else:
            failed = False
        if failed:
            raise ProtocolError(
                "the peer's Finished record does not authenticate",
                AlertDescription.decrypt_error,
            )

    def _check_integrity_limit(self) -> None:
        """REC-6: once `config.integrity_limit` records of one epoch failed authentication, the
        association ends (RFC 9147 §4.5.3 and Appendix B.3: more forgery attempts than that
        against AES-128-CCM-8's 64-bit tag give an attacker too good a chance). The peer gets a
        fatal bad_record_mac alert (RFC 6347 §4.1.2.7), the application an
        `IntegrityLimitReached` error."""
        epoch = self._records.integrity_exhausted
        if epoch is None or self.closed:
            return
        count = self._records.bad_tag_by_epoch[epoch]
        self._send_alert(AlertLevel.FATAL, AlertDescription.bad_record_mac)
        self._close(IntegrityLimitReached(epoch, count))

    def _receive_established(self, data: bytes, now: float) -> None:
        """The per-record hot path once established: application data in the peer's epoch goes
        straight to the user; every other record takes the general dispatch."""
        data_epoch = self._handshake.peer_epoch
        app = DATA_CONTENT
        handshake = HANDSHAKE_CONTENT
        limit = self._fragment_limit
        beats = self._heartbeats
        if beats is not None:
            beats.answers = None  # a new datagram: its answers start their own
        try:
            for record in self._records.open_records(data):
                if record.epoch != data_epoch:
                    # Unauthenticated leftovers of the handshake (or forgeries): never parsed,
                    # so they cannot end a good association (RFC 6347 §4.1.2.7, REC-3).
                    self.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] += 1
                    continue
                if beats is not None:
                    beats.last_heard = now
                if len(record.payload) > limit:
                    raise _record_overflow(len(record.payload), limit)
                self.last_activity = now
                if self._hold_until is not None and record.content_type is not handshake:
                    # Past its own handshake flight (a repeat of its Finished is the one record
                    # that says otherwise): the peer has our last flight.
                    self._settle()
                if record.content_type is app:
                    self._emit(DataReceived(record.payload))
                    continue
                self._dispatch(record, now)
                if self.state is _CLOSED:
                    return
        except ProtocolError as exc:
            self._fail(exc, now)
            return
        self._check_integrity_limit()

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Datagrams queued for the peer (handshake datagrams fit `config.mtu`)."""
        out = self._outgoing
        if out is None:
            return []
        self._outgoing = None
        beats = self._heartbeats
        if beats is not None:  # (a caller without a clock passes 0: never move it back)
            beats.last_sent = max(beats.last_sent, now)
            beats.answers = None  # sent: nothing joins it (and it is not kept)
        return out

    def get_timer(self) -> float | None:
        """When `handle_timer` should next be called (absolute seconds), or None."""
        timer = self._timer
        earliest = self._deadline
        if timer is not None:
            earliest = _earlier(earliest, timer.deadline)
        if self.state is _ESTABLISHED:
            earliest = _earlier(earliest, self._hold_until)
            beats = self._heartbeats
            if beats is not None:
                earliest = _earlier(earliest, beats.get_timer())
        return earliest

    def handle_timer(self, now: float) -> None:
        """Retransmit on timer expiry (RFC 6347 §4.2.4.1) or fail past the handshake deadline;
        once established, the end of the final flight's hold (§4.2.4) and the heartbeat timers
        (RFC 6520 §3). A resend past the last record number of its epoch ends the association
        with `SequenceNumbersExhausted`."""
        try:
            self._on_timer(now)
        except SequenceNumbersExhausted as exc:
            self._abandon(exc)

    def _on_timer(self, now: float) -> None:
        if self.state is _ESTABLISHED:
            if self._hold_until is not None and now >= self._hold_until:
                self._settle()
            self._heartbeat_timer(now)
            return
        if self.state is not _HANDSHAKING:
            return
        if self._deadline is not None and now >= self._deadline:
            self._close(self._handshake_timeout())
            return
        timer = self._timer
        if timer is not None and timer.expired(now) and self._flight is not None:
            timer.back_off(now)
            self._transmit_flight()

    def _handshake_timeout(self) -> HandshakeTimeout:
        """The error of a handshake past its deadline. A client still waiting for a ServerHello
        whose ClientHello did not fit `config.mtu` sent it in fragments (RFC 6347 §4.2.3), which
        servers with stateless cookies drop (§4.2.1): the error names the size and the mtu. A
        client whose adapter had ICMP port-unreachable reports and no datagram from the server
        (`port_unreachable_reported`) has them named too, and so has one that had them only
        after the server had answered (`port_unreachable_after_answer`)."""
        seconds = self.config.handshake_timeout
        flight = self._flight
        if (
            self._handshake.state is ClientState.WAIT_SERVER_HELLO
            and flight is not None
            and isinstance(hello := flight.items[0], OutgoingMessage)
        ):
            size = self._records.overhead(hello.epoch) + len(hello.encoded)
            if size > self.config.mtu:
                return HandshakeTimeout(
                    seconds, hello_size=size, mtu=self.config.mtu,
                    unreachable_reports=self._unreachable_reports,
                )
        return HandshakeTimeout(
            seconds,
            unreachable_reports=self._unreachable_reports,
            unreachable_after_answer=getattr(self, "_unreachable_after_answer", 0),
        )

    def next_event(self) -> Event | None:
        """The oldest event not yet taken (handshake complete, data, alerts, closure), or None."""
        events = self._events
        if events is None:
            return None
        event = events.pop(0)
        if not events:
            self._events = None
        return event

    def _emit(self, event: Event) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def _queue(self, datagrams: list[bytes]) -> None:
        """Datagrams for `datagrams_to_send`."""
        if self._outgoing is None:
            self._outgoing = datagrams
        else:
            self._outgoing += datagrams

    def _beats(self) -> Heartbeats:
        """The heartbeat state, made (inactive) on first need."""
        if self._heartbeats is None:
            self._heartbeats = Heartbeats(self.config)
        return self._heartbeats

    @property
    def record_overhead(self) -> int:
        """Bytes a record of ours adds to its data in the current write epoch (header, explicit
        nonce and tag: 29 with CCM_8): an application datagram of n bytes leaves as n + this."""
        return self._records.overhead(self._write_epoch)

    @property
    def max_send_size(self) -> int:
        """The largest application datagram `send()` accepts once established: what one record
        in one datagram of `config.mtu` bytes carries (RFC 6347 §4.1.1), at most 2^14 and at
        most a negotiated max_fragment_length (RFC 6066 §4)."""
        room = self.config.mtu - self.record_overhead
        return min(room, self._fragment_limit)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one application datagram as one record in one UDP datagram of at most
        `config.mtu` bytes (RFC 6347 §4.1.1: a record never spans datagrams, and we never hand
        IP a datagram it must fragment), nor more than a negotiated max_fragment_length (RFC
        6066 §4). Larger data raises `DatagramTooLarge` naming the limit; nothing is sent.
        `max_send_size` says what fits. Data is bytes-like: bytes, a bytearray, or a memoryview
        of any format, sent as its bytes (`nbytes` of them); anything else, or a view that is
        not contiguous or is released, raises `TypeError` saying what to pass. Past
        the last record number of the epoch it raises `SequenceNumbersExhausted`, which has
        ended the association (RFC 6347 §4.1). Once the association has ended it raises
        `AssociationEnded`, saying how (the error that ended it, the peer's close_notify or
        `close()`); before the handshake completed, `LocalProtocolError`."""
        if self.state is _CLOSED:
            raise AssociationEnded(self.error, by_peer=self._peer_closed)
        if self.state is not _ESTABLISHED:
            raise LocalProtocolError(f"cannot send application data in state {self.state.name}")
        if data.__class__ is not bytes:  # one check on the path of bytes, the common case
            data = sealable(data)  # a view's len() counts items; the cipher takes bytes only
        try:
            if len(data) > self._max_send_size:
                raise self._too_large(len(data))
            record = self._records.seal(DATA_CONTENT, data, self._write_epoch)
        except SequenceNumbersExhausted as exc:
            self._abandon(exc)
            raise
        self._queue([record])

    def _too_large(self, size: int) -> DatagramTooLarge:
        fragment_limit = self._fragment_limit
        return DatagramTooLarge(
            size,
            self._max_send_size,
            self.config.mtu,
            max_fragment_length=(
                fragment_limit
                if size > fragment_limit and fragment_limit < MAX_PLAINTEXT_LENGTH
                else None
            ),
            record_limit=self._max_send_size == MAX_PLAINTEXT_LENGTH,
        )

    def send_heartbeat(self, now: float) -> None:
        """Send a heartbeat request (RFC 6520 §3, EXT-5); `HeartbeatAnswered` reports the
        response. It is retransmitted on the handshake timer; unanswered for
        `config.handshake_timeout` seconds, the association ends with `PeerUnresponsive`.
        `LocalProtocolError` unless established with heartbeats the peer accepts, or while
        another request is in flight (one at a time); `SequenceNumbersExhausted`, which has
        ended the association, past the last record number of the epoch (RFC 6347 §4.1)."""
        if self.state is not _ESTABLISHED:
            raise LocalProtocolError(f"cannot send a heartbeat in state {self.state.name}")
        try:
            self._send_heartbeat_message(self._beats().send_request(now))
        except SequenceNumbersExhausted as exc:
            self._abandon(exc)
            raise

    def supply_certificate_chain(
        self,
        chain: tuple[bytes, ...] | ProtocolError,
        now: float,
        request: CertificateUrlsReceived | None = None,
    ) -> None:
        """Answer a `CertificateUrlsReceived` event: the fetched chain (hashes checked), or the
        error that ended the fetch (RFC 6066 §5: certificate_unobtainable or
        bad_certificate_hash_value). The handshake then goes on, or ends with that alert.
        Given `request`, the event answered, an answer to another association's event is
        ignored. An answer past the last record number of its epoch ends the association with
        `SequenceNumbersExhausted` (as in `receive_datagram`)."""
        if self.state is not _HANDSHAKING or not self._handshake.waiting_for_chain:
            return  # the association ended (or moved on) while the fetch ran
        if request is not None and not self._asked(request):
            return
        try:
            self._go_on_with_chain(chain, now)
        except SequenceNumbersExhausted as exc:
            self._abandon(exc)

    def _go_on_with_chain(self, chain: tuple[bytes, ...] | ProtocolError, now: float) -> None:
        try:
            if isinstance(chain, ProtocolError):
                raise chain
            self._handshake.supply_client_chain(chain)
            self._process_messages(now)
        except ProtocolError as exc:
            self._fail(exc, now)

    def _asked(self, request: CertificateUrlsReceived) -> bool:
        """Whether this association's handshake raised `request`: its URLs are the handshake's
        own tuple, not an equal one parsed by an association that came before."""
        return request.urls_and_hashes is self._handshake.pending_certificate_urls

    def terminate(self, error: DtlsError) -> None:
        """End the association without sending anything (the peer has lost its state)."""
        if self.state is not _CLOSED:
            self._close(error)

    def seal_fatal_alerts(self, alert: AlertDescription) -> tuple[bytes, ...]:
        """`ALERT_REPEATS` records of the fatal `alert`, each sealed now in the current write
        epoch with its own record number (in the clear during a full handshake, epoch 0), for
        an owner that ended this association without a word (`terminate`) and tells its peer
        only if that peer shows itself again (RFC 6347 §4.2.7): a `ServerEndpoint` evicting a
        half-open handshake keeps these as it keeps `alert_repeats`. Nothing is queued."""
        return self._seal_alert_repeats(alert)

    def close(self, reason: DtlsError | None = None) -> None:
        """Send close_notify and end the association (RFC 5246 §7.2.1). `reason` is what the
        closing event tells the application (None: a plain close; e.g. `IdleTimeout` when a
        server lets an idle association go)."""
        if self.state is _CLOSED:
            return
        if self.state is not _IDLE:
            # With no record number left for it (RFC 6347 §4.1), the association ends silent.
            with contextlib.suppress(SequenceNumbersExhausted):
                self._send_alert(_WARNING, _CLOSE_NOTIFY)
        if reason is not None:
            logger.debug("association closed: %s", reason)
        self._close(reason, failed=False)

    # -- records ------------------------------------------------------------------------------
    def _dispatch(self, record: PlainRecord, now: float) -> None:
        ctype = record.content_type
        if ctype is HANDSHAKE_CONTENT:
            self._on_handshake_record(record, now)
        elif ctype is CCS_CONTENT:
            self._on_change_cipher_spec(record, now)
        elif ctype is ALERT_CONTENT:
            self._on_alert(record)
        elif ctype is DATA_CONTENT:
            self._on_application_data(record, now)
        else:
            self._on_heartbeat(record, now)

    def _on_heartbeat(self, record: PlainRecord, now: float) -> None:
        """RFC 6520 §3: heartbeats only on an established association, in its epoch (the
        fast path hands over only those): during the handshake they are dropped."""
        beats = self._beats()
        if self.state is not _ESTABLISHED:
            beats.dropped[HeartbeatDrop.DURING_HANDSHAKE] += 1
            return
        response, elapsed = beats.on_message(record.payload, now)
        if response is not None:
            self._answer_heartbeat(beats, response)
        if elapsed is not None:
            self._emit(HeartbeatAnswered(elapsed))

    def _send_heartbeat_message(self, message: bytes) -> None:
        self._queue([self._records.seal(ContentType.heartbeat, message, self._write_epoch)])

    def _answer_heartbeat(self, beats: Heartbeats, response: bytes) -> None:
        """RFC 6520 §4: every request is answered; the responses to the requests of one
        datagram leave packed into datagrams of at most `_datagram_room` bytes, as a flight's
        records are (RFC 6347 §4.1.1), so a datagram of N requests is not answered by N
        datagrams (probe CH: 30 at 1440 bytes). A response joins only the last datagram
        queued, so records leave in the order of their sequence numbers; one too large to
        join leaves on its own (a peer probing the path MTU, §5.1, gets its copy)."""
        record = self._records.seal(ContentType.heartbeat, response, self._write_epoch)
        out = self._outgoing
        last = beats.answers
        if (
            last is not None
            and out
            and out[-1] is last
            and len(last) + len(record) <= self._datagram_room(self.record_overhead)
        ):
            out[-1] = last = last + record
        else:
            self._queue([record])
            last = record
        beats.answers = last

    def _heartbeat_timer(self, now: float) -> None:
        beats = self._heartbeats
        if beats is None:
            return
        outcome = beats.on_timer(now)
        if outcome is TimerOutcome.SEND:
            self._send_heartbeat_message(beats.request_message())
        elif outcome is TimerOutcome.PEER_GONE:
            self._close(PeerUnresponsive(self.config.handshake_timeout))

    def _on_application_data(self, record: PlainRecord, now: float) -> None:
        """Reached in a datagram that began before completion (`_receive_established` delivers
        the rest): HS-5, application data is never accepted before the handshake completes;
        behind the peer's Finished in the same datagram, it is delivered.

        Once we sent our ChangeCipherSpec and Finished, the peer may have completed (the
        client of a full handshake, the server of a resumed one, RFC 5246 §7.4) and sent data
        that overtook its own ChangeCipherSpec or Finished, or came while they were lost. Such
        a record, authenticated under the new epoch's keys (and so through its replay window),
        is held, up to `EARLY_DATA_RECORDS` and `EARLY_DATA_BYTES`, and delivered in arrival
        order once the peer's Finished is verified (`_complete`; RFC 6347 §4.1), or dropped
        and counted if the handshake ends without it. Any other is dropped and counted.

        Such a record also shows that the peer completed and sent its last flight, which has
        not come: lost, most likely. Nothing else brings it again before our timer fires (1 s,
        2 s, 4 s on) and the held data waits as long, so our flight goes out again at once,
        within the rate limit of `_resend_flight_early`: the peer answers a repeat of our
        flight with its last flight (`_maybe_retransmit`, RFC 6347 §4.2.4). Only a holder of
        the new epoch's keys can make a record authenticate, so no stranger can cause it."""
        if self.state is _ESTABLISHED:
            self._emit(DataReceived(record.payload))
            return
        if record.epoch == HANDSHAKE_EPOCH and self._write_epoch == HANDSHAKE_EPOCH:
            self._resend_flight_early(now)
            held = self._early_data or []
            payload = record.payload
            if (
                len(held) < EARLY_DATA_RECORDS
                and sum(map(len, held)) + len(payload) <= EARLY_DATA_BYTES
            ):
                held.append(payload)
                self._early_data = held
                return
        self.dropped[DropReason.DATA_BEFORE_HANDSHAKE] += 1

    def _on_alert(self, record: PlainRecord) -> None:
        alert = Alert.decode(record.payload)
        if alert.level == AlertLevel.FATAL:
            # Whatever its description, close_notify included: the association ends at once
            # and its session can no longer be resumed (RFC 5246 §7.2).
            self._close(AlertReceived(alert.description, self._alert_context(alert.description)))
        elif alert.description == _CLOSE_NOTIFY:
            if self.state is not _CLOSED:
                self._send_alert(_WARNING, _CLOSE_NOTIFY)
                # Before the handshake completed, the peer's close_notify fails it, and says
                # so; being no fatal alert, it leaves a session being resumed resumable (RFC
                # 5246 §7.2.1, §7.2.2): a forged one cannot evict it from the cache.
                error = (
                    AlertReceived(_CLOSE_NOTIFY, self._close_before_finished(record))
                    if self.state is _HANDSHAKING
                    else None
                )
                self._peer_closed = True
                self._close(error, keep_session=True)
        else:
            self._emit(AlertEvent(alert.description))

    def _close_before_finished(self, record: PlainRecord) -> str:
        """What a close_notify during our handshake tells beyond itself, for `AlertReceived`.

        Under the new keys after our ChangeCipherSpec, it comes from a peer that completed and
        sent its last flight before closing (the resumed client, or the server of a full
        handshake, RFC 5246 §7.3), and that flight was lost: nothing acknowledges it, so a peer
        that closes at once leaves us no Finished to verify, and the data it sent, held for
        that Finished (`_on_application_data`), is dropped and counted as
        DATA_BEFORE_HANDSHAKE by `_close`. The line the server logs says so."""
        if record.epoch != HANDSHAKE_EPOCH or self._write_epoch != HANDSHAKE_EPOCH:
            return ""
        held = len(self._early_data or ())
        dropped = f"; {held} held record{'' if held == 1 else 's'} of its data dropped"
        return "before its Finished arrived" + (dropped if held else "")

    def _alert_context(self, description: int) -> str:
        """What we know of why the peer sends a fatal alert, for `AlertReceived`. After our
        no_renegotiation "the original requester can decide whether to proceed" (RFC 5246
        §7.2.2; RFC 5746 §4.2): OpenSSL ends the association with handshake_failure, an alert
        that does not say why, so we say what we did. certificate_expired while our own
        certificate is out of its validity period: most likely ours it is about."""
        if self._refused_renegotiation:
            return "after we refused the peer's renegotiation with no_renegotiation, RFC 5746"
        if description == AlertDescription.certificate_expired:
            expired = self._own_certificate_out_of_validity()
            if expired:
                return expired
        return self._handshake.alert_context(description)

    def _own_certificate_out_of_validity(self) -> str:
        """How our certificate (any of a server's) is out of its validity period by our
        clock, or "" (`credentials.validity_problem`)."""
        config = self.config
        own = (config.certificate,) if isinstance(config, ClientConfig) else config.certificates
        try:
            now = read_wall_clock(config.wall_clock)
        except WallClockFailed:
            return ""  # the peer's alert is told without our certificate's validity
        problems = (validity_problem(c, now) for c in own if c is not None)
        return next((p for p in problems if p is not None), "")

    def _on_change_cipher_spec(self, record: PlainRecord, now: float) -> None:
        hs = self._handshake
        if record.epoch == hs.peer_epoch and hs.waiting_for_chain:
            # The peer's flight is all here, but we hold its messages until its certificate
            # chain is fetched: keep the ChangeCipherSpec for when its turn comes.
            check_change_cipher_spec(record.payload)
            self._deferred_ccs = True
            return
        self._datagrams_since_ccs = 0
        if record.epoch != hs.peer_epoch or not hs.expects_change_cipher_spec():
            # Early (reordered ahead of a lost message) or repeated: ignore, the peer resends.
            self.dropped[DropReason.UNEXPECTED_CCS] += 1
            return
        check_change_cipher_spec(record.payload)
        hs.change_cipher_spec()
        self._note_progress()
        self._process_messages(now)

    def _on_handshake_record(self, record: PlainRecord, now: float) -> None:
        record_id = (record.epoch, record.sequence_number)
        for frag in fragments_of(record.payload, record.epoch):
            if not self._numbering_adopted:
                self._adopt_client_numbering(record, frag)
            self._on_fragment(frag, record_id, now)
            if self.state is _CLOSED:
                return
        if not record.epoch:
            # Its number joins the latest kept, a copy's again: no membership test on the path
            # of every handshake record (issue 9); `_maybe_retransmit` makes the one it needs.
            # A protected epoch's replay window drops a copy before it gets here, so only epoch
            # 0's are kept, and nothing is once established (only epoch 1 is read then).
            self._recent_handshake_records = self._recent_handshake_records[
                _KEPT_BEFORE_NEXT
            ] + (record_id,)
        self._process_messages(now)

    def _adopt_client_numbering(self, record: PlainRecord, header: HandshakeFragment) -> None:
        """Server: after a stateless cookie exchange, continue the client's numbering.

        Our first message_seq is that of the ClientHello (RFC 6347 §4.2.2) and our epoch-0
        record sequence continues from its record (the HelloVerifyRequest reused the first
        ClientHello's, §4.2.1), so a client's replay window never sees a number twice."""
        self._numbering_adopted = True
        if header.msg_type != _CLIENT_HELLO or record.epoch != 0:
            return
        self._reassembler.next_seq = header.message_seq
        if record.sequence_number < ADOPTABLE_SEQUENCE_LIMIT:
            self._records.set_next_sequence_number(0, record.sequence_number)

    def _on_fragment(self, frag: HandshakeFragment, record_id: tuple[int, int], now: float) -> None:
        if self.state is _ESTABLISHED:
            self._post_handshake_fragment(frag, record_id, now)
        elif frag.msg_type == _HELLO_REQUEST and self.is_client:
            self._hello_request_during_handshake(frag)
        elif frag.message_seq >= self._reassembler.next_seq:
            self._reassembler.add(frag)
        else:
            self._maybe_retransmit(frag, record_id, now)

    def _hello_request_during_handshake(self, frag: HandshakeFragment) -> None:
        """A client "currently negotiating" ignores a HelloRequest (RFC 5246 §7.4.1.1): it is
        counted and dropped before reassembly, so it takes no message_seq (a server sends one
        only on an established association, RFC 6347 §4.2.2) and the ServerHello numbered
        where it claimed to be is still taken. Unauthenticated in epoch 0, a well-formed one
        must not end the handshake; one with a body is malformed (`_check_empty_hello_request`)
        and ends it with decode_error, as any malformed message in epoch 0 does (HS-5: a
        forger off the path can end a handshake so, as with a forged alert)."""
        _check_empty_hello_request(frag)
        self.dropped[DropReason.HELLO_REQUEST_DURING_HANDSHAKE] += 1

    def _maybe_retransmit(
        self, frag: HandshakeFragment, record_id: tuple[int, int], now: float
    ) -> None:
        """An old message: the peer repeats its previous flight, so ours was lost (§4.2.4).

        Answered only in a record not among the latest seen (`RECENT_HANDSHAKE_RECORDS`: a
        duplicated datagram gets no answer), within the rate limit of `_resend_flight_early`,
        so forged repeats cannot turn us into an amplifier."""
        if (
            frag.message_seq == self._handshake.peer_flight_last_seq
            and frag.fragment_offset == 0
            and record_id not in self._recent_handshake_records
        ):
            self._resend_flight_early(now)

    def _resend_flight_early(self, now: float) -> None:
        """Resend our flight before its timer on evidence of loss (RFC 6347 §4.2.4: the timer
        sets the least an implementation retransmits, not the most), at most once per
        quarter of the initial timer whatever the evidence, so no run of the peer's records
        can turn us into an amplifier. The resent flight restarts the retransmission timer,
        its interval kept (`RetransmitTimer.restart`): the old deadline would send it again
        at once."""
        if self._flight is None or now < self._next_triggered_retransmit:
            return
        self._next_triggered_retransmit = now + self.config.retransmit.triggered_spacing
        self.retransmissions += 1
        self._transmit_flight()
        if self._timer is not None:
            self._timer.restart(now)

    def _post_handshake_fragment(
        self, frag: HandshakeFragment, record_id: tuple[int, int], now: float
    ) -> None:
        """After the handshake: refuse renegotiation (EXT-4), reject anything else (HS-5).

        A renegotiation starts again at message_seq 0 (RFC 6347 §4.2.2), so the request is
        recognised by its type whatever its number; the replay window drops duplicates. The
        refusal is remembered for the fatal alert the peer may answer it with (`_alert_context`).
        A HelloRequest with a body is malformed, not refused (`_check_empty_hello_request`)."""
        renegotiation = (
            HandshakeType.hello_request if self.is_client else HandshakeType.client_hello
        )
        if frag.msg_type == renegotiation:
            if self.is_client:
                _check_empty_hello_request(frag)
            if frag.fragment_offset == 0:
                self._send_alert(AlertLevel.WARNING, AlertDescription.no_renegotiation)
                self._refused_renegotiation = True
            return
        if frag.message_seq < self._reassembler.next_seq:
            self._maybe_retransmit(frag, record_id, now)
            return
        raise ProtocolError(
            f"handshake message {frag.msg_type} after the handshake",
            AlertDescription.unexpected_message,
        )

    def _process_messages(self, now: float) -> None:
        """Feed complete in-order messages to the state machine (HS-5: epochs must match)."""
        hs = self._handshake
        hs.now = now
        while self.state is _HANDSHAKING:
            if self._deferred_ccs and hs.expects_change_cipher_spec():
                self._deferred_ccs = False
                hs.change_cipher_spec()
            msg = self._reassembler.peek()
            if msg is None:
                if hs.peer_epoch:
                    self._check_no_message_skipped()
                return
            if hs.holds(msg.msg_type):
                return
            if hs.expects_change_cipher_spec():
                if msg.epoch > hs.peer_epoch:
                    return  # the Finished overtook the ChangeCipherSpec: wait for it
                # What follows the peer's ChangeCipherSpec comes under the new keys: a complete
                # message in the old epoch here is a forgery, dropped unread (RFC 6347 §4.1.2.7).
                self._reassembler.discard()
                self.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] += 1
                return
            if msg.epoch < hs.peer_epoch:
                # Plaintext after the peer's ChangeCipherSpec: a genuine peer sends nothing
                # there, so it is a forgery; dropped unread, it cannot end the handshake
                # (RFC 6347 §4.1.2.7).
                self._reassembler.discard()
                self.dropped[DropReason.PLAINTEXT_AFTER_HANDSHAKE] += 1
                return
            if msg.epoch > hs.peer_epoch:
                # Authenticated under the next epoch's keys where we still need a message of
                # this one: the peer left a message out (a Certificate without its
                # CertificateVerify, say; HS-5).
                raise ProtocolError(
                    f"handshake message in epoch {msg.epoch} where epoch {hs.peer_epoch} "
                    f"is due (state {hs.state.name})",
                    AlertDescription.unexpected_message,
                )
            self._reassembler.pop()
            self._note_progress()
            was_waiting = hs.pending_certificate_urls
            outcome = hs.handle(msg)
            if hs.pending_certificate_urls and not was_waiting:
                self._emit(CertificateUrlsReceived(hs.pending_certificate_urls))
            if hs.max_fragment_length:
                self._apply_fragment_limit()
            if outcome.restart:
                # A stale ServerHello flight (for a previous client on this address) held for
                # message_seq 1 would be taken for the answer to our next ClientHello.
                self._reassembler.clear()
            if outcome.keys is not None:
                self._install_keys(outcome.keys)
            if outcome.flight is not None:
                self._send_flight(outcome.flight, now)
            if hs.complete():
                self._complete(now)

    def _check_no_message_skipped(self) -> None:
        """A message authenticated under the peer's new epoch (from its ChangeCipherSpec on)
        whose message_seq lies past the one due shows that the peer numbered a message we did
        not take: one in the old epoch where its ChangeCipherSpec was due (a repeated
        CertificateVerify, say), dropped as unauthenticated above. RFC 5246 §7.4: "Sending
        handshake messages in an unexpected order results in a fatal error"; waiting for that
        message_seq would stall both sides until the handshake timeout."""
        epoch = self._handshake.peer_epoch
        later = self._reassembler.later_message_seq(epoch)
        if later is not None:
            raise ProtocolError(
                f"handshake message {later} in epoch {epoch} where message "
                f"{self._reassembler.next_seq} is due: the peer sent a message out of turn "
                f"(state {self._handshake.state.name})",
                AlertDescription.unexpected_message,
            )

    def _apply_fragment_limit(self) -> None:
        """RFC 6066 §4: from the hello that negotiated it on, both directions keep to the
        max_fragment_length (our next flight is cut to it, unprotected records above it are
        dropped). But for the client's ClientHello, at a server: the client cannot know the
        limit before our ServerHello, and repeats the same hello when our flight was lost
        (RFC 6347 §4.2.4), which we answer with our flight again."""
        limit = self._handshake.fragment_limit
        if limit is not None and limit != self._fragment_limit:
            self._fragment_limit = limit
            self._records.plaintext_limit = limit
            self._records.client_hello_exempt = not self.is_client

    # -- our side -----------------------------------------------------------------------------
    def _install_keys(self, keys: EpochKeys) -> None:
        """Pending next-epoch protection in both directions (RFC 6347 §4.1: the epoch moves at
        each side's ChangeCipherSpec)."""
        epoch = self._handshake.peer_epoch + 1
        self._records.install_read_epoch(epoch, keys.read)
        self._records.install_write_epoch(epoch, keys.write)

    def _send_flight(self, flight: Flight, now: float) -> None:
        self._flight = flight
        for item in flight.items:
            if isinstance(item, OutgoingCcs):
                self._write_epoch = item.epoch + 1
        self._transmit_flight()
        timer = self._timer
        if timer is None:
            return
        if flight.final:
            timer.stop()
        else:
            timer.start(now)

    def _transmit_flight(self) -> None:
        assert self._flight is not None
        records = self._records
        items = self._flight.items
        limit = self._fragment_limit
        if limit < MAX_PLAINTEXT_LENGTH:
            mtu = self._datagram_room(max(records.overhead(item.epoch) for item in items))
        else:
            mtu = self.config.mtu
        self._queue(cut_flight(items, mtu, records.overhead, records.seal, limit))

    def _datagram_room(self, overhead: int) -> int:
        """The largest datagram of records we pack (a flight's, heartbeat responses): `mtu`,
        and, to a peer that asked for small records (RFC 6066 §4), one full record of them
        (of `overhead` bytes more), so it never needs a larger receive buffer."""
        limit = self._fragment_limit
        if limit < MAX_PLAINTEXT_LENGTH:
            return min(self.config.mtu, limit + overhead)
        return self.config.mtu

    def _send_alert(
        self,
        level: AlertLevel,
        description: AlertDescription,
        allowed: frozenset[AlertDescription] | None = None,
    ) -> None:
        """`description`, or the nearest alert in `allowed` (by default the handshake's set:
        its mode's, ERR-1)."""
        if allowed is None:
            allowed = self._handshake.allowed_alerts
        payload = Alert(level, permitted_alert(description, allowed)).encode()
        self._queue([self._records.seal(ALERT_CONTENT, payload, self._write_epoch)])

    def _complete(self, now: float) -> None:
        self.state = _ESTABLISHED
        self.last_activity = now
        self._max_send_size = self.max_send_size
        self._deadline = None
        hs = self._handshake
        complete = hs.completion()
        hs.release()
        if self._flight is not None and self._flight.final:
            self._hold_until = now + FINAL_FLIGHT_HOLD
        else:
            self._settle()
        peer_mode = hs.peer_heartbeat_mode if self.config.heartbeat else None
        logger.debug(
            "handshake complete: suite %#06x, ems=%s, resumed=%s%s%s",
            complete.cipher_suite,
            complete.extended_master_secret,
            complete.resumed,
            _fragment_note(complete.max_fragment_length),
            _heartbeat_note(peer_mode) if self.config.heartbeat else "",
        )
        if peer_mode is not None or self._heartbeats is not None:
            self._beats().start(peer_mode, hs.now)
        if self.config.keepalive_interval is not None and self.is_client:
            self._warn_if_keepalive_off()
        self._emit(complete)
        if self._early_data:
            self._deliver_early_data()

    def _warn_if_keepalive_off(self) -> None:
        """A client asked for keep-alive (`keepalive_interval`), and the server's hello left
        heartbeats out or refused our requests (peer_not_allowed_to_send, RFC 6520 §2): no
        request will go, so a vanished server is noticed only when a send fails; one warning
        per association (a client has one), not a silent no-op."""
        if self.heartbeat_requests_accepted:
            return
        if self.heartbeats_negotiated:
            why = "the server accepts no heartbeat requests (peer_not_allowed_to_send, RFC 6520)"
        else:
            why = "the server did not agree to heartbeats (RFC 6520)"
        logger.warning("%s: no keep-alive heartbeat will go on this association", why)

    def _deliver_early_data(self) -> None:
        """The peer's data that came before its Finished, now verified, in arrival order
        (`_on_application_data`, RFC 6347 §4.1)."""
        for payload in self._early_data or ():
            self._emit(DataReceived(payload))
        self._early_data = None

    def _settle(self) -> None:
        """The handshake is behind both sides: our final flight is no longer needed (the peer
        has it, or the hold of RFC 6347 §4.2.4 is over), nor is any handshake-only state: the
        retransmission timer, buffered fragments, and our epoch-0 write state (reading epoch 0
        costs nothing: that state is shared, and keeps counting plaintext leftovers as
        PLAINTEXT_AFTER_HANDSHAKE). What a server keeps per idle association (issue 9).
        Repeats of the peer's messages are still recognised and dropped (`_post_handshake_
        fragment` keeps the message numbering)."""
        self._forget_handshake()
        self._recent_handshake_records = ()
        if self._write_epoch != 0:
            self._records.drop_write_epoch(0)

    def _forget_handshake(self) -> None:
        """No more flights to send or fragments to collect (settled or closed)."""
        self._flight = None
        self._hold_until = None
        self._timer = None
        self._reassembler.clear()

    def _fail(self, exc: ProtocolError, now: float) -> None:
        """The one place a protocol violation becomes a fatal alert and a closed association.
        The alert is one the handshake's mode may send (ERR-1); with no certificate type in
        common no mode was agreed, and it is unsupported_certificate (RFC 7250 §4.2).

        A handshake that fails so keeps `ALERT_REPEATS` more copies of the alert, each sealed
        in a new record now (`alert_repeats`), for the peer's flight that comes again if this
        one is lost (RFC 6347 §4.2.7): the first no sooner than a quarter of the initial
        retransmission interval from now, so the rest of the flight that failed, arriving
        behind it, takes none. Not after an established association failed (the peer
        repeats no flight then), nor at the integrity limit (`_check_integrity_limit`: the
        records at fault are forgeries, not the peer's flight)."""
        if self.state is _CLOSED:
            return
        handshaking = self.state is _HANDSHAKING
        allowed = (
            CERTIFICATE_TYPE_ALERTS
            if isinstance(exc, NoCertificateType)
            else self._handshake.allowed_alerts
        )
        alert = permitted_alert(exc.alert, allowed)
        self._send_alert(AlertLevel.FATAL, alert, allowed)
        self._close(AlertSent(alert, str(exc)))
        if handshaking:
            self._alert_repeats = self._seal_alert_repeats(alert)
            self._next_triggered_retransmit = now + self.config.retransmit.triggered_spacing

    def _seal_alert_repeats(self, alert: AlertDescription) -> tuple[bytes, ...]:
        """`ALERT_REPEATS` records of the fatal `alert` in the current write epoch, each with
        its own record number (fewer if the epoch runs out of them, RFC 6347 §4.1)."""
        payload = Alert(AlertLevel.FATAL, alert).encode()
        sealed = []
        with contextlib.suppress(SequenceNumbersExhausted):
            for _ in range(ALERT_REPEATS):
                sealed.append(self._records.seal(ALERT_CONTENT, payload, self._write_epoch))
        return tuple(sealed)

    def _close(
        self, error: DtlsError | None, failed: bool = True, *, keep_session: bool = False
    ) -> None:
        """End the association; `error` is what the closing event tells. `failed`: a debug
        line says the association failed (False for a close of our own choosing). A fatal
        alert, sent or received, makes the session unresumable (RFC 5246 §7.2.2);
        `keep_session`: the alert was a warning-level close_notify. A session is forgotten
        only once the peer sent a record under the keys it derives (epoch 1): before that,
        in an abbreviated handshake, the failure may be anyone's who saw the session_id (in
        clear in the hellos): a forged plaintext alert, or a plaintext message that makes us
        send one, must not evict the session from the server's cache (RFC 6347 §4.1.2.7)."""
        if failed and error is not None and self._log_failures:
            logger.debug("association failed: %s", error)
        if error is not None and self.state is _HANDSHAKING and self._handshake.resumed:
            error.resuming = True  # the session offered may be what failed
        if (
            isinstance(error, AlertSent | AlertReceived)
            and not keep_session
            and self._records.authenticated_in(1)
        ):
            self._handshake.forget_session()  # RFC 5246 §7.2.2
        self.state = _CLOSED
        self.error = error
        self._alert_repeats = ()
        if self._early_data is not None:  # never delivered: the Finished was not verified
            self.dropped[DropReason.DATA_BEFORE_HANDSHAKE] += len(self._early_data)
            self._early_data = None
        self._forget_handshake()
        self._deadline = None
        self._emit(ConnectionClosed(error, self._handshake.peer))


def _check_empty_hello_request(frag: HandshakeFragment) -> None:
    """RFC 5246 §7.4.1.1: a HelloRequest is empty (`struct { } HelloRequest`); one with a body
    is malformed, decode_error, during the handshake and after it alike."""
    if frag.length:
        raise DecodeError(f"HelloRequest with a {frag.length}-byte body (it is empty)")


def _earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two optional times (None: no time)."""
    if a is None:
        return b
    if b is None or a <= b:
        return a
    return b


def _record_overflow(length: int, limit: int) -> ProtocolError:
    """An authenticated record over the negotiated max_fragment_length (RFC 6066 §4)."""
    return ProtocolError(
        f"a {length}-byte record exceeds the negotiated max_fragment_length of {limit} bytes",
        AlertDescription.record_overflow,
    )


def _fragment_note(max_fragment_length: int | None) -> str:
    """For the "handshake complete" line (what -v shows a client): the max_fragment_length
    the hellos negotiated (RFC 6066 §4), named as the server's line names it."""
    if max_fragment_length is None:
        return ""
    return f", max_fragment_length {max_fragment_length}"


def _heartbeat_note(peer_mode: int | None) -> str:
    """For the "handshake complete" line when we asked for heartbeats (RFC 6520 §2): whether
    the peer agreed, and whether it accepts our requests."""
    if peer_mode is None:
        return ", heartbeats: not negotiated by the peer"
    if peer_mode == HeartbeatMode.peer_allowed_to_send:
        return ", heartbeats: negotiated"
    return ", heartbeats: negotiated, but the peer accepts no requests"
