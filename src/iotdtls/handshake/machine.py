"""What client and server handshakes share: transcript, key schedule, message numbering.

A handshake is a state machine written as a table `(state, message type) -> handler`
(`HandshakeMachine.TABLE`). Anything not in the table is an unexpected_message (RFC 5246 §7.2.2,
HS-5), raised in one place. Handlers consume whole, reassembled messages and return the next
flight as data; they never touch sockets, clocks or the record layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.crypto import (
    KeyBlock,
    constant_time_equal,
    derive_key_block,
    extended_master_secret,
    finished_verify_data,
    keylog_line,
    master_secret,
    psk_premaster_secret,
)
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.flight import Flight, OutgoingMessage
from iotdtls.handshake.reassembly import ReassembledMessage
from iotdtls.handshake.transcript import Transcript
from iotdtls.identity import PeerIdentity
from iotdtls.messages import Finished, HandshakeType

__all__ = ["HandshakeMachine", "NegotiatedSession"]

logger = logging.getLogger("iotdtls")


@dataclass(frozen=True, slots=True)
class NegotiatedSession:
    """What a completed handshake agreed on (no secrets here: safe to log and repr)."""

    cipher_suite: int
    peer: PeerIdentity
    extended_master_secret: bool


Handler = Callable[[Any, ReassembledMessage], Flight | None]


class HandshakeMachine:
    """Base of `ClientHandshake` and `ServerHandshake`."""

    TABLE: ClassVar[dict[tuple[Enum, int], Handler]] = {}
    #: State in which the peer's ChangeCipherSpec is expected (HS-5).
    WAIT_CCS_STATE: ClassVar[Enum]
    #: State entered once the peer's ChangeCipherSpec has been processed.
    AFTER_CCS_STATE: ClassVar[Enum]

    def __init__(self, config: ClientConfig | ServerConfig, initial_state: Enum) -> None:
        self.config = config
        self.state: Enum = initial_state
        self.transcript = Transcript()
        self.send_seq = 0
        #: The epoch the peer's handshake messages must be protected under right now.
        self.peer_epoch = 0
        #: message_seq of the last message of the peer's previous complete flight.
        self.peer_flight_last_seq: int | None = None
        self.client_random = b""
        self.server_random = b""
        self.cipher_suite = 0
        self.use_extended_master_secret = False
        #: Who the peer is (claimed until the handshake completes, then authenticated).
        self.peer: PeerIdentity | None = None
        self._master_secret = b""
        #: Set by a handler when new record keys exist; taken by the connection.
        self.new_keys: KeyBlock | None = None
        self.complete = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self.state.name}>"

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, msg: ReassembledMessage) -> Flight | None:
        """Run the handler for `msg` in the current state, or fail with unexpected_message."""
        handler = self.TABLE.get((self.state, msg.msg_type))
        if handler is None:
            name = _type_name(msg.msg_type)
            raise ProtocolError(
                f"{name} not expected in state {self.state.name}",
                AlertDescription.unexpected_message,
            )
        flight = handler(self, msg)
        if flight is not None:
            self.peer_flight_last_seq = msg.message_seq
        return flight

    def change_cipher_spec(self) -> bool:
        """The peer's ChangeCipherSpec arrived; True when it was expected now (HS-5)."""
        if self.state is not self.WAIT_CCS_STATE:
            return False
        self.state = self.AFTER_CCS_STATE
        self.peer_epoch += 1
        return True

    @property
    def awaits_authenticated_finished(self) -> bool:
        """True while a record that fails authentication can only be the peer's Finished under
        a different key (the server's view, PSK-4); the client never concludes that."""
        return False

    # -- building our messages ----------------------------------------------------------------
    def outgoing(self, msg_type: HandshakeType, body: bytes, epoch: int) -> OutgoingMessage:
        """Number a message of ours, add it to the transcript and return it for the flight."""
        message = OutgoingMessage(msg_type, self.send_seq, body, epoch)
        self.send_seq += 1
        self.transcript.add(msg_type, message.message_seq, body)
        return message

    def record(self, msg: ReassembledMessage) -> None:
        """Add a received message to the transcript."""
        self.transcript.add(msg.msg_type, msg.message_seq, msg.body)

    # -- key schedule -------------------------------------------------------------------------
    def derive_keys(self, psk: bytes) -> None:
        """Master secret (RFC 7627 §4 when negotiated, else RFC 5246 §8.1) and key block.

        Called right after the ClientKeyExchange entered the transcript, so the session hash
        covers it (RFC 7627 §3)."""
        premaster = psk_premaster_secret(psk)
        if self.use_extended_master_secret:
            master = extended_master_secret(premaster, self.transcript.digest())
        else:
            master = master_secret(premaster, self.client_random, self.server_random)
        self._master_secret = master
        self.new_keys = derive_key_block(master, self.client_random, self.server_random)
        if self.config.keylog is not None:
            try:
                self.config.keylog(keylog_line(self.client_random, master))
            except Exception as exc:  # the key log is a debugging aid: never fatal
                logger.warning("key log callback failed: %s", type(exc).__name__)

    def finished(self, from_client: bool, epoch: int) -> OutgoingMessage:
        """Our Finished over the transcript so far (RFC 5246 §7.4.9)."""
        verify = finished_verify_data(self._master_secret, from_client, self.transcript.digest())
        return self.outgoing(HandshakeType.finished, Finished(verify).encode(), epoch)

    def check_finished(self, msg: ReassembledMessage, from_client: bool) -> None:
        """Verify the peer's Finished in constant time (SEC-2); decrypt_error otherwise."""
        expected = finished_verify_data(self._master_secret, from_client, self.transcript.digest())
        received = Finished.decode(msg.body).verify_data
        if not constant_time_equal(expected, received):
            raise ProtocolError("peer Finished does not verify", AlertDescription.decrypt_error)
        self.record(msg)

    def session(self) -> NegotiatedSession:
        assert self.peer is not None, "a completed handshake has authenticated its peer"
        return NegotiatedSession(self.cipher_suite, self.peer, self.use_extended_master_secret)


def _type_name(msg_type: int) -> str:
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"handshake type {msg_type}"
