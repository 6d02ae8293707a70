"""Reassembly of fragmented handshake messages (RFC 6347 §4.2.3).

Fragments may overlap, repeat, arrive out of order or be cut differently on retransmission;
the buffer keeps the byte ranges received per message and hands out a message once every byte
is present. Memory is bounded: a fixed number of messages ahead of the next expected
message_seq, a maximum message size, a budget of two maximal messages for all partial ones
(when full, those furthest ahead make room for one expected sooner), and a maximum number of
disjoint ranges per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iotdtls.errors import DecodeError

__all__ = ["HandshakeFragment", "ReassembledMessage", "Reassembler"]

#: How many message_seq values past the next expected one we buffer (a flight is at most ~6).
MAX_MESSAGES_AHEAD = 8
#: Disjoint byte ranges kept per message before further fragments are refused.
MAX_RANGES = 64


@dataclass(frozen=True, slots=True)
class HandshakeFragment:
    """One handshake fragment as read from a record (RFC 6347 §4.2.2)."""

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    body: bytes = field(repr=False)  # a Finished carries verify_data
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class ReassembledMessage:
    """A whole handshake message and the epoch its fragments were protected under."""

    msg_type: int
    message_seq: int
    body: bytes = field(repr=False)  # a Finished carries verify_data
    epoch: int = 0


@dataclass(slots=True)
class _Partial:
    msg_type: int
    length: int
    epoch: int
    data: bytearray
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def add(self, offset: int, body: bytes) -> bool:
        """Merge a fragment; False when the range list is full (fragment ignored)."""
        end = offset + len(body)
        self.data[offset:end] = body
        merged: list[tuple[int, int]] = []
        start, stop = offset, end
        for lo, hi in self.ranges:
            if hi < start or lo > stop:
                merged.append((lo, hi))
            else:
                start, stop = min(lo, start), max(hi, stop)
        merged.append((start, stop))
        if len(merged) > MAX_RANGES:
            return False
        merged.sort()
        self.ranges = merged
        return True

    def complete(self) -> bool:
        return self.ranges == [(0, self.length)] or self.length == 0


class Reassembler:
    """Collects fragments for message_seq values from `next_seq` on and releases them in order."""

    __slots__ = ("_max_buffered", "_max_size", "_partials", "evicted", "next_seq")

    def __init__(self, max_message_size: int) -> None:
        self.next_seq = 0
        self._max_size = max_message_size
        #: All partial messages together stay below this (two maximal messages).
        self._max_buffered = 2 * max_message_size
        self._partials: dict[int, _Partial] = {}
        #: Partial messages dropped to make room for one expected sooner.
        self.evicted = 0

    def add(self, frag: HandshakeFragment) -> None:
        """Buffer a fragment of a future or current message; older ones are the caller's concern.

        Raises `DecodeError` when the fragment contradicts itself or an earlier fragment of the
        same message (different type or total length): RFC 6347 §4.2.3 requires them to match.
        """
        if frag.fragment_offset + len(frag.body) > frag.length:
            raise DecodeError("handshake fragment extends past the message length")
        if frag.length > self._max_size:
            raise DecodeError(f"handshake message of {frag.length} bytes exceeds the limit")
        if not self.next_seq <= frag.message_seq < self.next_seq + MAX_MESSAGES_AHEAD:
            return
        partial = self._partials.get(frag.message_seq)
        if partial is not None and frag.epoch != partial.epoch:
            if frag.epoch < partial.epoch:
                return
            # A fragment under newer (authenticated) keys beats whatever an older,
            # unauthenticated epoch left here: a forged stub cannot block the real message.
            del self._partials[frag.message_seq]
            partial = None
        if partial is None:
            if not self._make_room(frag.message_seq, frag.length):
                return  # bounded memory per association; the peer will resend (HS-3)
            partial = _Partial(frag.msg_type, frag.length, frag.epoch, bytearray(frag.length))
            self._partials[frag.message_seq] = partial
        elif partial.msg_type != frag.msg_type or partial.length != frag.length:
            raise DecodeError("handshake fragments of one message disagree on type or length")
        partial.add(frag.fragment_offset, frag.body)

    def _make_room(self, message_seq: int, length: int) -> bool:
        """Room for a new message of `length` bytes, made by dropping the partial messages
        furthest ahead of `message_seq`; False (nothing dropped) when the newcomer is itself
        the furthest ahead. The message expected next therefore always finds room (the budget
        holds two maximal messages), and forged fragments claiming huge future messages cannot
        lock the real flight out."""
        needed = self.buffered_bytes + length - self._max_buffered
        if needed <= 0:
            return True
        further = sorted((seq for seq in self._partials if seq > message_seq), reverse=True)
        if sum(self._partials[seq].length for seq in further) < needed:
            return False
        for seq in further:
            needed -= self._partials.pop(seq).length
            self.evicted += 1
            if needed <= 0:
                break
        return True

    def peek(self) -> ReassembledMessage | None:
        """The next message in order if all its bytes are here, without consuming it."""
        partial = self._partials.get(self.next_seq)
        if partial is None or not partial.complete():
            return None
        return ReassembledMessage(
            partial.msg_type, self.next_seq, bytes(partial.data), partial.epoch
        )

    def discard(self) -> None:
        """Forget what arrived for the next message_seq (a forgery); keep waiting for it."""
        self._partials.pop(self.next_seq, None)

    def pop(self) -> None:
        """Consume the message `peek` returned and expect the following message_seq."""
        self._partials.pop(self.next_seq, None)
        self.next_seq += 1

    def clear(self) -> None:
        """Forget every buffered fragment (the association closed, or its handshake ended): a
        fresh dict, since a cleared one keeps the room it grew to."""
        self._partials = {}

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete or unprocessed messages (bounded by the limits above)."""
        return sum(p.length for p in self._partials.values())
