"""What client and server handshakes share: the table-driven state machine.

A handshake is a state machine written as tables `(state, message type) -> Transition(handler,
next state)` (h11 style). The peer's ChangeCipherSpec is an entry too, under the pseudo type
`CHANGE_CIPHER_SPEC`. A handshake starts with its hello table; the handler of the hello that
fixes the cipher suite and certificate types switches to the table of that flow (PSK, ECDHE
with or without client authentication, later the abbreviated handshake). Anything not in the
current table is an unexpected_message (RFC 5246 §7.2.2, HS-5), raised in one place. Handlers
consume whole, reassembled messages and return the next flight together with the keys of the
next epoch (`Outcome`); they never touch sockets, clocks or the record layer, and they never
set the state: the table does.

A session resumed from its session_id (RFC 5246 §7.3) runs the abbreviated flow, one more table
in each role: the server's flight is ServerHello, ChangeCipherSpec, Finished, and the client's
ChangeCipherSpec and Finished end it (the client then sends the last flight). A completed
handshake with a session_id and the extended master secret yields the `SessionState` for the
next resumption (`resumable_session`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from iotdtls._values import plainly_built
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.crypto.suites import EpochKeys, SuiteInfo
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.events import HandshakeComplete
from iotdtls.handshake.alerts import BASE_ALERTS
from iotdtls.handshake.flight import Flight, OutgoingCcs, OutgoingMessage
from iotdtls.handshake.keyschedule import KeySchedule
from iotdtls.handshake.reassembly import HandshakeFragment, HandshakeMessage
from iotdtls.identity import PeerIdentity
from iotdtls.messages import HandshakeType, MaxFragmentLengthCode
from iotdtls.sessions import SessionState

__all__ = [
    "CHANGE_CIPHER_SPEC",
    "NOTHING",
    "Handler",
    "HandshakeMachine",
    "Outcome",
    "Table",
    "Transition",
]

#: Pseudo message type of the peer's ChangeCipherSpec in the tables (it has no message_seq).
CHANGE_CIPHER_SPEC = -1
#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_FINISHED = HandshakeType.finished
#: `SessionState(...)`, made without its field-by-field frozen stores (`plainly_built`).
_session_state = plainly_built(SessionState)
#: `HandshakeComplete(...)`, made the same way.
_handshake_complete = plainly_built(HandshakeComplete)


@dataclass(slots=True)
class Outcome:
    """What a handler hands back: our next flight, the keys of the next epoch (installed
    before the flight is cut, so a Finished in it is protected), and whether the peer restarted
    the exchange (a HelloVerifyRequest, RFC 6347 §4.2.1): then what was held for later
    message_seqs came before our next ClientHello and cannot answer it, so it is forgotten."""

    flight: Flight | None = None
    keys: EpochKeys | None = None
    restart: bool = False


NOTHING = Outcome()

Handler = Callable[[Any, HandshakeMessage], Outcome | None]


@dataclass(frozen=True, slots=True)
class Transition:
    """One table entry: run `handler` (if any), then enter `next_state`. The handler is called
    as the method of that name on the machine, so subclasses may override it."""

    handler: Handler | None
    next_state: Enum


Table = Mapping[tuple[Enum, int], Transition]


class HandshakeMachine:
    """Base of `ClientHandshake` and `ServerHandshake`."""

    # Slots: a server keeps one per association (memory per association, issue 9).
    __slots__ = (
        "allowed_alerts",
        "config",
        "keys",
        "max_fragment_length",
        "mode",
        "now",
        "peer",
        "peer_epoch",
        "peer_flight_last_seq",
        "peer_heartbeat_mode",
        "pending_certificate_urls",
        "resumed",
        "send_seq",
        "server_name",
        "session_id",
        "state",
        "suite",
        "table",
    )

    #: The table a handshake starts with (hellos); flows replace it once the suite is known.
    HELLO_TABLE: ClassVar[Table] = {}
    #: The state of a completed handshake.
    ESTABLISHED: ClassVar[Enum]
    is_client: ClassVar[bool]

    def __init__(self, config: ClientConfig | ServerConfig, initial_state: Enum) -> None:
        self.config = config
        self.state: Enum = initial_state
        self.table: Table = self.HELLO_TABLE
        self.keys = KeySchedule(config.keylog)
        self.send_seq = 0
        #: The epoch the peer's handshake messages must be protected under right now.
        self.peer_epoch = 0
        #: message_seq of the last message of the peer's previous complete flight.
        self.peer_flight_last_seq: int | None = None
        #: The negotiated suite (None until the hellos fixed it).
        self.suite: SuiteInfo | None = None
        #: Who the peer is (claimed until the handshake completes, then authenticated).
        self.peer: PeerIdentity | None = None
        #: Alerts this association may send (ERR-1): narrowed to the mode once it is known.
        self.allowed_alerts: frozenset[AlertDescription] = BASE_ALERTS
        #: (url, SHA-1) of a peer's CertificateURL whose chain is still to be fetched.
        self.pending_certificate_urls: tuple[tuple[str, bytes], ...] = ()
        #: The connection's clock at the message being handled (the core reads no clock).
        self.now = 0.0
        #: The credential mode of the association, once the hellos fixed it.
        self.mode: Mode | None = None
        #: The session of this association: its id (empty: never resumable) and whether this
        #: handshake resumed it.
        self.session_id = b""
        self.resumed = False
        #: Negotiated max_fragment_length code (RFC 6066 §4), 0 for none.
        self.max_fragment_length = 0
        #: The server_name the client sent (RFC 6066 §3), "" for none.
        self.server_name = ""
        #: The peer's heartbeat mode (RFC 6520 §2) once both sides agreed on heartbeats.
        self.peer_heartbeat_mode: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self.state.name}>"

    @property
    def client_random(self) -> bytes:
        return self.keys.client_random

    # Methods, not properties, here and below: the connection asks for each message, and a
    # property costs a call from C in Python 3.11 (an inlined call for a method).
    def complete(self) -> bool:
        return self.state is self.ESTABLISHED

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, msg: HandshakeMessage) -> Outcome:
        """Run the transition for `msg` in the current state, or fail with unexpected_message."""
        transition = self.table.get((self.state, msg.msg_type))
        if transition is None:
            raise ProtocolError(
                f"{_type_name(msg.msg_type)} not expected in state {self.state.name}",
                AlertDescription.unexpected_message,
            )
        outcome = NOTHING
        if transition.handler is not None:
            # Looked up by name, so a subclass (or a test) can replace a handler.
            outcome = getattr(self, transition.handler.__name__)(msg) or NOTHING
        self.state = transition.next_state
        if outcome.flight is not None:
            self.peer_flight_last_seq = msg.message_seq
        return outcome

    def expects_change_cipher_spec(self) -> bool:
        """True when the peer's ChangeCipherSpec is the next thing the table allows (HS-5)."""
        return (self.state, CHANGE_CIPHER_SPEC) in self.table

    def change_cipher_spec(self) -> None:
        """The peer's ChangeCipherSpec arrived while expected: its messages move one epoch on."""
        self.state = self.table[(self.state, CHANGE_CIPHER_SPEC)].next_state
        self.peer_epoch += 1

    @property
    def waiting_for_chain(self) -> bool:
        """True while the handshake waits for the adapter to fetch the peer's chain (a server
        given a CertificateURL, RFC 6066 §5); messages queue meanwhile."""
        return bool(self.pending_certificate_urls)

    def holds(self, msg_type: int) -> bool:
        """True when a message of `msg_type` must wait for the fetched chain: the
        CertificateVerify, whose signature the chain's key checks. The ClientKeyExchange before
        it goes on, so the next epoch's keys are there for the Finished behind it."""
        return bool(self.pending_certificate_urls) and msg_type == HandshakeType.certificate_verify

    def supply_client_chain(self, chain: tuple[bytes, ...]) -> None:
        """Hand over a chain the handshake waits for (see `waiting_for_chain`)."""
        raise ProtocolError("no certificate chain is awaited", AlertDescription.internal_error)

    def awaits_authenticated_finished(self) -> bool:
        """True while a record that fails authentication can only be the peer's Finished under
        a different key: a server's in a full handshake (the client's key is wrong, PSK-4), a
        resuming client's (the two sides hold the session with different master secrets, RFC
        5246 §7.3); never a resumed server's, nor a client's in a full handshake, whose peer
        sends its Finished only once ours verified. `DtlsConnection._check_finished_authenticates`
        decides from which records."""
        return False

    # -- building our messages ----------------------------------------------------------------
    def outgoing(self, msg_type: HandshakeType, body: bytes, epoch: int = 0) -> OutgoingMessage:
        """Number a message of ours, add it to the transcript and return it for the flight."""
        message = OutgoingMessage(msg_type, self.send_seq, body, epoch)
        self.send_seq += 1
        self.keys.transcript.add_encoded(message.encoded)
        return message

    def record(self, msg: HandshakeMessage) -> None:
        """Add a received message to the transcript (RFC 6347 §4.2.6): one that came whole in
        one fragment as it came (`HandshakeFragment.encoded`), one put together from pieces
        behind the header of a single fragment."""
        if type(msg) is HandshakeFragment and msg.encoded:
            self.keys.transcript.add_encoded(msg.encoded)
        else:
            self.keys.transcript.add(msg.msg_type, msg.message_seq, msg.body)

    def derive(self, premaster: bytes) -> EpochKeys:
        """The next epoch's record keys from the premaster secret (after ClientKeyExchange)."""
        assert self.suite is not None, "the hellos fix the suite before any key exchange"
        return self.keys.derive(premaster, self.suite, self.is_client)

    def finished(self, epoch: int) -> OutgoingMessage:
        """Our Finished over the transcript so far (RFC 5246 §7.4.9): its body is the
        verify_data, as it is (`Finished.encode`), so no `Finished` is made for it."""
        verify = self.keys.verify_data(from_client=self.is_client)
        return self.outgoing(_FINISHED, verify, epoch)

    def check_finished(self, msg: HandshakeMessage) -> None:
        """Verify the peer's Finished in constant time (SEC-2); decrypt_error otherwise. Its
        whole body is the verify_data (`Finished.decode`), compared as it came."""
        received = msg.body
        self.keys.check_verify_data(received, from_client=not self.is_client)
        self.record(msg)

    def _on_finished(self, msg: HandshakeMessage) -> None:
        """The peer's Finished ends a handshake whose last flight is the peer's."""
        self.check_finished(msg)

    def _on_finished_then_ours(self, msg: HandshakeMessage) -> Outcome:
        """The peer's Finished verified, our ChangeCipherSpec and Finished end the handshake:
        the last flight (RFC 6347 §4.2.4: no timer; kept to answer a repeated peer flight).
        The server's in a full handshake, the client's in an abbreviated one."""
        self.check_finished(msg)
        return Outcome(Flight((OutgoingCcs(0), self.finished(epoch=1)), final=True))

    @property
    def fragment_limit(self) -> int | None:
        """The negotiated max_fragment_length in bytes, None for none (RFC 6066 §4)."""
        code = self.max_fragment_length
        return MaxFragmentLengthCode(code).length if code else None

    def completion(self) -> HandshakeComplete:
        """What the completed handshake agreed on, as the event that tells it (no secrets)."""
        assert self.peer is not None and self.suite is not None, "a completed handshake"
        return _handshake_complete(
            self.suite.code,
            self.peer,
            self.keys.extended_master_secret,
            self.resumed,
            self.server_name,
            self.fragment_limit,
        )

    def resumable_session(self) -> SessionState | None:
        """The state a later handshake can resume (RES-1): only a completed handshake with a
        session_id and the extended master secret (RES-3)."""
        if not (self.complete() and self.session_id and self.keys.extended_master_secret):
            return None
        return self.session_state()

    def session_state(self) -> SessionState:
        """The session of this handshake, whose hellos and key exchange are done."""
        assert self.suite is not None and self.peer is not None and self.mode is not None
        return _session_state(
            self.session_id,
            self.suite.code,
            self.mode,
            self.keys.master_secret,
            self.peer,
            self.max_fragment_length,
            self.server_name,
            self.credential_digest(),
        )

    def credential_digest(self) -> bytes:
        """The digest of our side's credential that the session keeps (`SessionState`)."""
        return b""

    def alert_context(self, description: int) -> str:
        """What our side knows of why the peer may end this handshake with the fatal alert
        `description`, for `AlertReceived` ("" for nothing)."""
        return ""

    def release(self) -> None:
        """The handshake completed (its session cached): drop what only the handshake needed,
        so an established association keeps as little as it can (subclasses add theirs)."""
        self.keys.release()

    def forget_session(self) -> None:
        """RFC 5246 §7.2.2: a connection that ended with a fatal alert must not be resumed."""
        self.session_id = b""


def _type_name(msg_type: int) -> str:
    if msg_type == CHANGE_CIPHER_SPEC:
        return "ChangeCipherSpec"
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"handshake type {msg_type}"
