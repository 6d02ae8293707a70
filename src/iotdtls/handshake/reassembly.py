"""Reassembly of fragmented handshake messages (RFC 6347 §4.2.3).

Fragments may overlap, repeat, arrive out of order or be cut differently on retransmission;
the buffer keeps the byte ranges received per message and hands out a message once every byte
is present. Memory is bounded: a fixed number of messages ahead of the next expected
message_seq, a maximum message size, a budget of two maximal messages for all partial ones
(when full, those furthest ahead make room for one expected sooner), and a maximum number of
disjoint ranges per message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from iotdtls.errors import DecodeError
from iotdtls.messages.constants import HandshakeType, members_by_value
from iotdtls.messages.handshake import HANDSHAKE_HEADER_LEN

__all__ = [
    "HandshakeFragment",
    "HandshakeMessage",
    "ReassembledMessage",
    "Reassembler",
    "fragments_of",
]

#: How many message_seq values past the next expected one we buffer (a flight is at most ~6).
MAX_MESSAGES_AHEAD = 8
#: Disjoint byte ranges kept per message before further fragments are refused.
MAX_RANGES = 64


@dataclass(slots=True)
class HandshakeFragment:
    """One handshake fragment as read from a record (RFC 6347 §4.2.2); one is made per fragment
    received (a value like `OutgoingMessage`).

    `encoded`, for a message that came whole (fragment_offset 0, fragment_length = length), is
    the fragment as it came in its record, header and body: the unfragmented form the
    transcript hashes (RFC 6347 §4.2.6), as `OutgoingMessage.encoded` is for ours, no header
    to encode again. `fragments_of` sets it for such a fragment only, and `Reassembler` keeps
    it only for the message it hands on next: a second copy of the bytes (slices of bytes are
    copies), which a message held for later would add to the budget uncounted. Empty
    otherwise (the transcript then encodes the header)."""

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    body: bytes
    epoch: int = 0
    encoded: bytes = field(default=b"", repr=False, compare=False)

    def __repr__(self) -> str:  # the body stays out: a Finished carries verify_data
        return (
            f"HandshakeFragment(msg_type={self.msg_type}, length={self.length}, "
            f"message_seq={self.message_seq}, fragment_offset={self.fragment_offset}, "
            f"epoch={self.epoch})"
        )


@dataclass(slots=True)
class ReassembledMessage:
    """A handshake message put together from several fragments, and the epoch they were
    protected under."""

    msg_type: int
    message_seq: int
    body: bytes
    epoch: int = 0

    def __repr__(self) -> str:  # the body stays out: a Finished carries verify_data
        return (
            f"ReassembledMessage(msg_type={self.msg_type}, message_seq={self.message_seq}, "
            f"epoch={self.epoch})"
        )


@dataclass(slots=True)
class _Partial:
    msg_type: int
    length: int
    epoch: int
    data: bytearray
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def add(self, offset: int, body: bytes) -> None:
        """Merge a fragment; when the range list is full, a fragment that would open a new
        range is not counted (the peer's retransmission, re-cut, fills the gaps)."""
        end = offset + len(body)
        merged: list[tuple[int, int]] = []
        start, stop = offset, end
        for lo, hi in self.ranges:
            if hi < start or lo > stop:
                merged.append((lo, hi))
            else:
                start, stop = min(lo, start), max(hi, stop)
        merged.append((start, stop))
        if len(merged) > MAX_RANGES:
            return
        self.data[offset:end] = body
        merged.sort()
        self.ranges = merged

    def complete(self) -> bool:
        return self.ranges == [(0, self.length)] or self.length == 0


_HEADER = struct.Struct(">IHHI")
#: HandshakeType members by value: a fragment's type as the member when known, else the int
#: (what `known` gives, looked up in place: one fragment per message received).
_HANDSHAKE_TYPES = members_by_value(HandshakeType)


def fragments_of(payload: bytes, epoch: int) -> list[HandshakeFragment]:
    """The handshake fragments of one record's payload, each behind its 12-byte header
    (RFC 6347 §4.2.2). `DecodeError` for a header cut short, a fragment longer than what is
    left of the record or reaching past its message's length."""
    fragments: list[HandshakeFragment] = []
    offset, end = 0, len(payload)
    unpack_from = _HEADER.unpack_from
    types = _HANDSHAKE_TYPES
    while offset < end:
        if end - offset < HANDSHAKE_HEADER_LEN:
            raise DecodeError("handshake header truncated")
        type_and_length, seq, offset_high, offset_low_and_length = unpack_from(payload, offset)
        length = type_and_length & 0xFFFFFF
        fragment_offset = (offset_high << 8) | (offset_low_and_length >> 24)
        fragment_length = offset_low_and_length & 0xFFFFFF
        if fragment_offset + fragment_length > length:
            raise DecodeError(
                f"fragment {fragment_offset}+{fragment_length} exceeds message length {length}"
            )
        start = offset + HANDSHAKE_HEADER_LEN
        stop = start + fragment_length
        if stop > end:
            raise DecodeError("handshake fragment longer than its record")
        msg_type = type_and_length >> 24
        fragments.append(
            HandshakeFragment(
                types.get(msg_type, msg_type),
                length,
                seq,
                fragment_offset,
                payload[start:stop],
                epoch,
                payload[offset:stop] if fragment_length == length else b"",
            )
        )
        offset = stop
    return fragments


#: A whole handshake message as the reassembler hands it out: the fragment that carried it
#: whole (the usual case, passed on as it came: offset 0, fragment length = length, RFC 6347
#: §4.2.2) or the message put together from pieces. Both have `msg_type`, `message_seq`,
#: `body` and `epoch`.
HandshakeMessage = HandshakeFragment | ReassembledMessage
#: What is held for one message_seq: a message still in pieces, or the fragment that carried
#: it whole.
_Entry = _Partial | HandshakeFragment


class Reassembler:
    """Collects fragments for message_seq values from `next_seq` on and releases them in order."""

    __slots__ = ("_max_size", "_partials", "evicted", "next_seq")

    def __init__(self, max_message_size: int) -> None:
        self.next_seq = 0
        #: The largest message; all partial messages together stay below twice that.
        self._max_size = max_message_size
        #: Per message_seq: a message still in pieces, or the fragment that carried it whole
        #: (the common case, kept as it came, neither copied into a buffer nor into a new
        #: value). None while empty: an
        #: established association keeps no dict (memory per association).
        self._partials: dict[int, _Entry] | None = None
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
        seq = frag.message_seq
        if not self.next_seq <= seq < self.next_seq + MAX_MESSAGES_AHEAD:
            return
        if self._partials is None:
            self._partials = {}
        partials = self._partials
        entry = partials.get(seq)
        if entry is not None and frag.epoch != entry.epoch:
            if frag.epoch < entry.epoch:
                return
            # A fragment under newer (authenticated) keys beats whatever an older,
            # unauthenticated epoch left here: a forged stub cannot block the real message.
            del partials[seq]
            entry = None
        if entry is None:
            if not self._make_room(seq, frag.length):
                return  # bounded memory per association; the peer will resend (HS-3)
            if frag.fragment_offset == 0 and len(frag.body) == frag.length:
                if seq != self.next_seq and frag.encoded:
                    # Held for later: one copy of its bytes, as the budget counts (`encoded`).
                    frag = replace(frag, encoded=b"")
                partials[seq] = frag
                return
            entry = _Partial(frag.msg_type, frag.length, frag.epoch, bytearray(frag.length))
            partials[seq] = entry
        elif entry.msg_type != frag.msg_type or entry.length != frag.length:
            raise DecodeError("handshake fragments of one message disagree on type or length")
        if isinstance(entry, _Partial):
            entry.add(frag.fragment_offset, frag.body)

    def _make_room(self, message_seq: int, length: int) -> bool:
        """Room for a new message of `length` bytes, made by dropping the partial messages
        furthest ahead of `message_seq`; False (nothing dropped) when the newcomer is itself
        the furthest ahead. The message expected next therefore always finds room (the budget
        holds two maximal messages), and forged fragments claiming huge future messages cannot
        lock the real flight out."""
        partials = self._partials
        if not partials:
            return True  # the usual case: nothing waits, and no message exceeds the limit
        needed = self.buffered_bytes + length - 2 * self._max_size
        if needed <= 0:
            return True
        further = sorted((seq for seq in partials if seq > message_seq), reverse=True)
        if sum(partials[seq].length for seq in further) < needed:
            return False
        for seq in further:
            needed -= partials.pop(seq).length
            self.evicted += 1
            if needed <= 0:
                break
        return True

    def peek(self) -> HandshakeMessage | None:
        """The next message in order if all its bytes are here, without consuming it."""
        if self._partials is None:
            return None
        entry = self._partials.get(self.next_seq)
        if entry is None or isinstance(entry, HandshakeFragment):
            return entry
        if not entry.complete():
            return None
        return ReassembledMessage(entry.msg_type, self.next_seq, bytes(entry.data), entry.epoch)

    def later_message_seq(self, epoch: int) -> int | None:
        """The lowest message_seq past the next one of which something (whole or a part) came
        in `epoch`; None when there is none."""
        if not self._partials:
            return None
        due = self.next_seq
        return min(
            (seq for seq, entry in self._partials.items() if seq > due and entry.epoch == epoch),
            default=None,
        )

    def discard(self) -> None:
        """Forget what arrived for the next message_seq (a forgery); keep waiting for it."""
        if self._partials is not None:
            self._partials.pop(self.next_seq, None)

    def pop(self) -> None:
        """Consume the message `peek` returned and expect the following message_seq."""
        if self._partials is not None:
            self._partials.pop(self.next_seq, None)
        self.next_seq += 1

    def clear(self) -> None:
        """Forget every buffered fragment (the association closed, its handshake ended, or a
        HelloVerifyRequest restarted it, RFC 6347 §4.2.1): `next_seq` stays; the dict goes
        too, since a cleared one keeps the room it grew to."""
        self._partials = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete or unprocessed messages (bounded by the limits above)."""
        return sum(entry.length for entry in (self._partials or {}).values())
