"""Flights: the unit of retransmission (RFC 6347 §4.2.4), and their cutting into datagrams.

A flight is kept as data (messages with their message_seq and epoch, and ChangeCipherSpec
markers), so a retransmission re-cuts and re-seals it with fresh record sequence numbers. The
cutting packs the records of a flight into datagrams of at most the MTU (RFC 6347 §4.1.1); a
message that does not fit the room left but fits whole in an empty datagram starts a new one,
and only a message larger than a datagram is split, into fragments whose record (header,
handshake header, body and AEAD overhead) fits the room left (§4.2.3 allows both ways; whole
messages leave a peer fewer fragments to reassemble, as OpenSSL and GnuTLS send them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from iotdtls.config import RetransmitPolicy
from iotdtls.messages import HANDSHAKE_HEADER_LEN, ChangeCipherSpec
from iotdtls.messages.handshake import encode_handshake_header, encode_message_header
from iotdtls.record import CCS_CONTENT, HANDSHAKE_CONTENT, MAX_PLAINTEXT_LENGTH

__all__ = ["Flight", "OutgoingCcs", "OutgoingMessage", "RetransmitTimer", "cut_flight"]

#: Smallest first fragment body of a message larger than a datagram worth starting in the tail
#: of one: below it, its 25 or more bytes of record and handshake headers would carry almost
#: nothing, and the peer would have one more piece to reassemble for it.
MIN_FRAGMENT = 16
_CCS_BODY = ChangeCipherSpec().encode()


@dataclass(slots=True)
class OutgoingMessage:
    """A whole handshake message of ours with its message_seq and the epoch it is sent in.

    `encoded` is the message behind its header as one fragment (RFC 6347 §4.2.2), made once:
    the form the transcript hashes (§4.2.6) and the record payload of a message that fits a
    record whole, the usual case. A slotted dataclass, not frozen but never changed once made,
    like the other values a handshake makes and only the core reads: why, in
    docs/internals.md."""

    msg_type: int
    message_seq: int
    body: bytes
    epoch: int = 0
    encoded: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        body = self.body
        self.encoded = (
            encode_message_header(self.msg_type, len(body), self.message_seq) + body
        )

    def __repr__(self) -> str:
        # Without the body: a Finished carries verify_data.
        return (
            f"OutgoingMessage(msg_type={self.msg_type}, message_seq={self.message_seq}, "
            f"epoch={self.epoch})"
        )


@dataclass(slots=True)
class OutgoingCcs:
    """A ChangeCipherSpec record, sent in `epoch`; what follows it uses epoch + 1."""

    epoch: int


FlightItem = OutgoingMessage | OutgoingCcs


@dataclass(slots=True)
class Flight:
    """The messages of one flight; `final` flights start no timer (RFC 6347 §4.2.4, Figure 3)."""

    items: tuple[FlightItem, ...]
    final: bool = False


Sealer = Callable[[int, bytes, int], bytes]
"""seal(content_type, payload, epoch) -> one protected record."""


def cut_flight(
    items: Sequence[FlightItem],
    mtu: int,
    overhead: Callable[[int], int],
    seal: Sealer,
    max_payload: int = MAX_PLAINTEXT_LENGTH,
) -> list[bytes]:
    """Fragment and pack a flight into datagrams of at most `mtu` bytes each, with no record
    plaintext (handshake header and fragment) over `max_payload` bytes: the negotiated
    max_fragment_length (RFC 6066 §4) or 2^14. Only a message that fits no empty datagram in
    one record is cut into fragments (RFC 6347 §4.2.3)."""
    datagrams: list[bytes] = []
    current = bytearray()
    for index, item in enumerate(items):
        if isinstance(item, OutgoingCcs):
            record = seal(CCS_CONTENT, _CCS_BODY, item.epoch)
            # With the Finished after it when both fit a datagram (PSK-4: the peer concludes
            # a wrong key only from a Finished in the datagram that moved its handshake).
            together = len(record) + _next_record_size(items[index + 1 : index + 2], overhead)
            if current and len(current) + (together if together <= mtu else len(record)) > mtu:
                datagrams.append(bytes(current))
                current = bytearray()
            current += record
            continue
        fixed = overhead(item.epoch) + HANDSHAKE_HEADER_LEN
        if mtu - fixed < 1:
            raise ValueError(f"mtu {mtu} leaves no room for a handshake fragment")
        body, offset = item.body, 0
        largest = max_payload - HANDSHAKE_HEADER_LEN  # fragment body in one record
        while True:
            room = mtu - len(current) - fixed
            left = len(body) - offset
            # A message that fits whole in an empty datagram starts one rather than being split
            # (fewer fragments, fewer ways for a peer's reassembly to fail); a larger one
            # starts in the tail when MIN_FRAGMENT bytes of it fit there.
            if current and room < left and (
                room < MIN_FRAGMENT or (not offset and left <= mtu - fixed and left <= largest)
            ):
                datagrams.append(bytes(current))
                current = bytearray()
                room = mtu - fixed
            take = min(left, room, largest)
            if take == left and not offset:
                fragment = item.encoded  # the whole message in one record
            else:
                header = encode_handshake_header(
                    item.msg_type, len(body), item.message_seq, offset, take
                )
                fragment = header + body[offset : offset + take]
            current += seal(HANDSHAKE_CONTENT, fragment, item.epoch)
            offset += take
            if offset >= len(body):
                break
    if current:
        datagrams.append(bytes(current))
    return datagrams


def _next_record_size(following: Sequence[FlightItem], overhead: Callable[[int], int]) -> int:
    """Bytes of the whole record of the message in `following` (at most one item), if any (0
    for none)."""
    for item in following:
        if isinstance(item, OutgoingMessage):
            return overhead(item.epoch) + HANDSHAKE_HEADER_LEN + len(item.body)
    return 0


class RetransmitTimer:
    """The doubling retransmission timer of RFC 6347 §4.2.4.1 (times are absolute seconds)."""

    __slots__ = ("_policy", "deadline", "interval", "retransmitted")

    def __init__(self, policy: RetransmitPolicy) -> None:
        self._policy = policy
        self.interval = policy.initial
        self.deadline: float | None = None
        self.retransmitted = False

    def start(self, now: float) -> None:
        """Arm for a freshly sent flight; the interval goes back to the initial value only
        after an exchange without loss (RFC 6347 §4.2.4.1)."""
        if not self.retransmitted:
            self.interval = self._policy.initial
        self.retransmitted = False
        self.deadline = now + self.interval

    def restart(self, now: float) -> None:
        """Re-arm after resending the flight because the peer repeated its own (RFC 6347
        §4.2.4: the implementation "retransmits the flight, resets the retransmit timer, and
        returns to the WAITING state"), keeping the interval: the repeat shows that the peer
        is alive and the path carries its flight, which is no reason to wait longer; and a
        forged repeat cannot push the timer towards its cap. A stopped timer (our final
        flight's: only the peer's repeats resend it, §4.2.4) stays stopped."""
        if self.deadline is not None:
            self.deadline = now + self.interval

    def stop(self) -> None:
        self.deadline = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def back_off(self, now: float) -> None:
        """Double the interval (up to the cap) after a retransmission and re-arm."""
        self.interval = min(self.interval * 2, self._policy.maximum)
        self.retransmitted = True
        self.deadline = now + self.interval
