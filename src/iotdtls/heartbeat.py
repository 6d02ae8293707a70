"""Heartbeats of one established association (RFC 6520, EXT-5), sans I/O.

Both hellos carry the heartbeat extension or heartbeats are off (RFC 6520 §2). Each side says
whether the peer may send it requests (peer_allowed_to_send) or not; we never send a request
to a peer that refused them, and we drop, unanswered, every request we did not allow.

* Requests: at most one in flight (RFC 6520 §3), a fresh random payload and at least 16 bytes of
  random padding (§4), retransmitted on the handshake's doubling timer (RFC 6347 §4.2.4.1) until
  the response with the same payload arrives. Unanswered for `handshake_timeout` seconds, the
  threshold of handshake flights (RFC 6520 §3), the peer counts as gone.
* Responses: to every well-formed, authenticated request in the association's epoch (the
  connection hands over only those), carrying an exact copy of its payload (§4: a MUST unless
  the requests were refused, §2), so as large as the request even beyond our `mtu`: a peer
  probes the path MTU with requests (§5.1). §4's "payload_length too large: discard" is a
  payload_length beyond what the record holds (below), not a size we would not send. The
  connection packs the responses to the requests of one datagram, in order, into datagrams of
  at most its `mtu` (`answers`): a datagram of N requests is not answered by N datagrams.
* Dropped silently and counted (`dropped`): a payload_length the record cannot hold and padding
  under 16 bytes (§4, the Heartbleed check, `HeartbeatMessage.decode`), an unknown type, a
  response nobody asked for or with the wrong payload, a request we did not allow.
* Keep-alive (optional, `keepalive_interval`): when either direction has been silent that long,
  a request goes out (it refreshes NAT bindings and proves the peer alive, RFC 6520 §5.2).

Times are the connection's `now`; nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum, auto

from iotdtls._enum import IdentityHashEnum
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.crypto import random_bytes
from iotdtls.errors import DecodeError, LocalProtocolError
from iotdtls.handshake.flight import RetransmitTimer
from iotdtls.messages import (
    HEARTBEAT_MIN_PADDING,
    HeartbeatMessage,
    HeartbeatMessageType,
    HeartbeatMode,
)

__all__ = ["HeartbeatDrop", "Heartbeats", "TimerOutcome"]

#: Bytes of random payload in our requests (echoed by the peer, compared on return).
REQUEST_PAYLOAD_LENGTH = 16


class HeartbeatDrop(IdentityHashEnum):
    """Heartbeat messages dropped without an answer (counted in `Heartbeats.dropped`)."""

    NOT_NEGOTIATED = auto()
    DURING_HANDSHAKE = auto()
    MALFORMED = auto()
    REQUEST_NOT_ALLOWED = auto()
    UNEXPECTED_RESPONSE = auto()


class TimerOutcome(Enum):
    """What `Heartbeats.on_timer` asks of the connection."""

    NOTHING = auto()
    SEND = auto()  # send `Heartbeats.request_message` (a new request or a retransmission)
    PEER_GONE = auto()  # the request went unanswered past the threshold


@dataclass(slots=True)
class _Request:
    payload: bytes
    first_sent: float
    give_up: float


class Heartbeats:
    """The heartbeat state of one association (inactive until `start`). Its retransmission
    timer and drop counter are made when first needed: most associations never send one."""

    __slots__ = (
        "_answer",
        "_dropped",
        "_interval",
        "_request",
        "_retransmit",
        "_threshold",
        "_timer",
        "answers",
        "last_heard",
        "last_sent",
        "may_send",
        "negotiated",
    )

    def __init__(self, config: ClientConfig | ServerConfig) -> None:
        self._answer = config.answer_heartbeats
        self._interval = config.keepalive_interval
        self._threshold = config.handshake_timeout
        self._retransmit = config.retransmit
        self._timer: RetransmitTimer | None = None
        self._request: _Request | None = None
        self._dropped: Counter[HeartbeatDrop] | None = None
        #: Heartbeats were negotiated by both hellos.
        self.negotiated = False
        #: The peer accepts our requests (it said peer_allowed_to_send).
        self.may_send = False
        self.last_sent = 0.0
        self.last_heard = 0.0
        #: The connection's datagram of our responses to the requests of the datagram being
        #: received, still queued and last, which more responses may join (None otherwise).
        self.answers: bytes | None = None

    @property
    def dropped(self) -> Counter[HeartbeatDrop]:
        """Heartbeat messages dropped, by reason."""
        if self._dropped is None:
            self._dropped = Counter()
        return self._dropped

    def add_dropped(self, total: Counter[IdentityHashEnum]) -> None:
        """Add `dropped` to `total` (without making a counter)."""
        if self._dropped is not None:
            total.update(self._dropped)

    def __repr__(self) -> str:
        return f"<Heartbeats negotiated={self.negotiated} in_flight={self.in_flight}>"

    def start(self, peer_mode: int | None, now: float) -> None:
        """The handshake completed; `peer_mode` is the peer's HeartbeatMode, None when the
        extension was not agreed on by both hellos."""
        self.negotiated = peer_mode is not None
        self.may_send = peer_mode == HeartbeatMode.peer_allowed_to_send
        self.last_sent = self.last_heard = now

    @property
    def _pending_timer(self) -> RetransmitTimer:
        """The retransmission timer of the request in flight (made with the first one)."""
        assert self._timer is not None, "a request is in flight"
        return self._timer

    @property
    def in_flight(self) -> bool:
        return self._request is not None

    # -- our requests ------------------------------------------------------------------------
    def send_request(self, now: float) -> bytes:
        """Start a request and return the message to send (RFC 6520 §3: one in flight)."""
        if not self.may_send:
            raise LocalProtocolError(
                "heartbeats were not negotiated, or the peer does not accept requests"
            )
        if self._request is not None:
            raise LocalProtocolError("a heartbeat request is already in flight")
        self._request = _Request(random_bytes(REQUEST_PAYLOAD_LENGTH), now, now + self._threshold)
        if self._timer is None:
            self._timer = RetransmitTimer(self._retransmit)
        self._timer.start(now)
        return self.request_message()

    def request_message(self) -> bytes:
        """The pending request, with fresh random padding (RFC 6520 §4)."""
        assert self._request is not None
        return _message(HeartbeatMessageType.heartbeat_request, self._request.payload)

    # -- the peer's messages -------------------------------------------------------------------
    def on_message(self, data: bytes, now: float) -> tuple[bytes | None, float | None]:
        """A heartbeat record's payload, authenticated in the association's epoch.

        Returns (our response to send or None, the seconds a pending request of ours took to
        be answered, or None)."""
        if not self.negotiated:
            self.dropped[HeartbeatDrop.NOT_NEGOTIATED] += 1
            return None, None
        try:
            message = HeartbeatMessage.decode(data)
        except DecodeError:
            self.dropped[HeartbeatDrop.MALFORMED] += 1  # RFC 6520 §4: discarded silently
            return None, None
        if message.type not in (
            HeartbeatMessageType.heartbeat_request,
            HeartbeatMessageType.heartbeat_response,
        ):
            self.dropped[HeartbeatDrop.MALFORMED] += 1  # an unknown type (RFC 6520 §3)
            return None, None
        if message.type == HeartbeatMessageType.heartbeat_request:
            if not self._answer:
                self.dropped[HeartbeatDrop.REQUEST_NOT_ALLOWED] += 1  # RFC 6520 §2
                return None, None
            return _message(HeartbeatMessageType.heartbeat_response, message.payload), None
        request = self._request
        if request is None or message.payload != request.payload:
            self.dropped[HeartbeatDrop.UNEXPECTED_RESPONSE] += 1  # RFC 6520 §4
            return None, None
        self._request = None
        self._pending_timer.stop()
        return None, now - request.first_sent

    # -- time --------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When `on_timer` should run next: a retransmission or the give-up time of the
        pending request, or the next keep-alive."""
        request = self._request
        if request is not None:
            deadline = self._pending_timer.deadline
            assert deadline is not None
            return min(deadline, request.give_up)
        if self._interval is None or not self.may_send:
            return None
        return min(self.last_sent, self.last_heard) + self._interval

    def on_timer(self, now: float) -> TimerOutcome:
        request = self._request
        if request is not None:
            timer = self._pending_timer
            if now >= request.give_up:
                self._request = None
                timer.stop()
                return TimerOutcome.PEER_GONE
            if timer.expired(now):
                timer.back_off(now)
                return TimerOutcome.SEND
            return TimerOutcome.NOTHING
        due = self.get_timer()
        if due is not None and now >= due:
            self.send_request(now)
            return TimerOutcome.SEND
        return TimerOutcome.NOTHING


def _message(kind: HeartbeatMessageType, payload: bytes) -> bytes:
    return HeartbeatMessage(kind, payload, random_bytes(HEARTBEAT_MIN_PADDING)).encode()
