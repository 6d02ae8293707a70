"""The DTLS 1.2 record layer (RFC 6347 §4.1).

A datagram carries one or more records, each behind a 13-byte header:

    struct {
        ContentType type;                 // 1
        ProtocolVersion version;          // 2, {254, 253} for DTLS 1.2
        uint16 epoch;                     // 2
        uint48 sequence_number;           // 6
        uint16 length;                    // 2
        opaque fragment[DTLSCiphertext.length];
    } DTLSCiphertext;

`RecordLayer` keeps per-epoch protection states for reading and writing, checks every incoming
record against the anti-replay window of its epoch (RFC 6347 §4.1.2.6) and silently discards
invalid records (RFC 6347 §4.1.2.7), counting each discard by reason. It never raises on input
from the network.
"""

from __future__ import annotations

import functools
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, TypeVar

from iotdtls._enum import IdentityHashEnum
from iotdtls.crypto.aead import (
    NULL_PROTECTOR,
    BadTag,
    NullProtector,
    Plaintext,
    RecordProtector,
)
from iotdtls.errors import ConfigError, DecodeError, LocalProtocolError, SequenceNumbersExhausted

__all__ = [
    "ALERT_CONTENT",
    "CCS_CONTENT",
    "DATA_CONTENT",
    "HANDSHAKE_CONTENT",
    "MAX_CIPHERTEXT_LENGTH",
    "MAX_PLAINTEXT_LENGTH",
    "MAX_SEQUENCE_NUMBER",
    "RECORD_HEADER_LEN",
    "ContentType",
    "DiscardReason",
    "PlainRecord",
    "RecordHeader",
    "RecordLayer",
    "ReplayWindow",
    "split_datagram",
]

RECORD_HEADER_LEN = 13
MAX_PLAINTEXT_LENGTH = 2**14  # RFC 5246 §6.2.1
MAX_CIPHERTEXT_LENGTH = 2**14 + 2048  # RFC 5246 §6.2.3, RFC 6347 §4.1
MAX_SEQUENCE_NUMBER = 2**48 - 1  # RFC 6347 §4.1: the 48-bit sequence number must not wrap
_MAX_EPOCH = 0xFFFF
_DTLS_1_2 = 0xFEFD
_DTLS_1_0 = 0xFEFF
_SEQ_LOW_MASK = 0xFFFFFFFF

# type(1) || version(2) || epoch(2) || sequence number high(2) || low(4) || length(2)
_HEADER = struct.Struct(">BHHHIH")


class ContentType(IntEnum):
    """Record content types (RFC 5246 §6.2.1, RFC 6520 §3 for heartbeat).

    The RFC spellings are canonical; the upper-case names are aliases.
    """

    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23
    heartbeat = 24
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24


_CONTENT_TYPES: dict[int, ContentType] = {ct.value: ct for ct in ContentType}
#: The content types by module-level name, for the per-record paths here and in the connection,
#: the endpoint and the flight cutter: on Python 3.11 an Enum member's lookup goes through its
#: metaclass's `__getattr__` hook, about ten times the cost of a global name.
HANDSHAKE_CONTENT = ContentType.handshake
CCS_CONTENT = ContentType.change_cipher_spec
ALERT_CONTENT = ContentType.alert
DATA_CONTENT = ContentType.application_data


class DiscardReason(IdentityHashEnum):
    """Why a record was silently discarded (RFC 6347 §4.1.2.7; counted in `discards`)."""

    BAD_LENGTH = "bad_length"
    BAD_VERSION = "bad_version"
    UNKNOWN_CONTENT_TYPE = "unknown_content_type"
    UNKNOWN_EPOCH = "unknown_epoch"
    REPLAYED = "replayed"
    BAD_TAG = "bad_tag"
    TOO_OLD = "too_old"
    #: An unprotected record larger than the negotiated max_fragment_length (RFC 6066 §4:
    #: no alert for what did not authenticate in DTLS).
    OVER_FRAGMENT_LIMIT = "over_fragment_limit"


class RecordHeader(NamedTuple):
    """The 13-byte DTLS record header (RFC 6347 §4.1)."""

    content_type: int
    version: int
    epoch: int
    sequence_number: int
    length: int

    def encode(self) -> bytes:
        """The 13 header bytes."""
        seq = self.sequence_number
        if not 0 <= seq <= MAX_SEQUENCE_NUMBER:
            raise ValueError("sequence number outside 48 bits")
        return _HEADER.pack(
            self.content_type, self.version, self.epoch, seq >> 32, seq & _SEQ_LOW_MASK, self.length
        )

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> RecordHeader:
        """Read a header at `offset`; raise `DecodeError` if fewer than 13 bytes remain."""
        if len(data) - offset < RECORD_HEADER_LEN or offset < 0:
            raise DecodeError("record header truncated")
        ctype, version, epoch, seq_hi, seq_lo, length = _HEADER.unpack_from(data, offset)
        return cls(ctype, version, epoch, (seq_hi << 32) | seq_lo, length)


@dataclass(slots=True)
class PlainRecord:
    """A record that passed every check and was unprotected."""

    content_type: ContentType
    epoch: int
    sequence_number: int
    payload: bytes


def split_datagram(
    data: bytes,
) -> tuple[list[tuple[RecordHeader, bytes]], DiscardReason | None]:
    """Cut a datagram into `(header, fragment)` pairs (RFC 6347 §4.1: several records may share
    one datagram; a record never spans two).

    Framing only: no check of version, type or epoch. A trailing record whose header or fragment
    is cut short is discarded together with whatever follows it, and `BAD_LENGTH` is returned
    as the second item; otherwise the second item is None.
    """
    records: list[tuple[RecordHeader, bytes]] = []
    offset = 0
    end_of_data = len(data)
    while offset < end_of_data:
        if end_of_data - offset < RECORD_HEADER_LEN:
            return records, DiscardReason.BAD_LENGTH
        ctype, version, epoch, seq_hi, seq_lo, length = _HEADER.unpack_from(data, offset)
        start = offset + RECORD_HEADER_LEN
        offset = start + length
        if offset > end_of_data:
            return records, DiscardReason.BAD_LENGTH
        header = RecordHeader(ctype, version, epoch, (seq_hi << 32) | seq_lo, length)
        records.append((header, bytes(data[start:offset])))
    return records, None


#: The smallest anti-replay window (RFC 6347 §4.1.2.6: at least 32 records; 64 recommended).
_MIN_REPLAY_WINDOW = 64
_WINDOW_TOO_SMALL = f"the replay window must cover at least {_MIN_REPLAY_WINDOW} records"


class ReplayWindow:
    """Sliding anti-replay window of RFC 6347 §4.1.2.6.

    Bit `i` of the bitmap stands for sequence number `right_edge - i`. `is_fresh` only looks;
    the window moves only through `mark`, which the record layer calls after the record has
    authenticated, so a forged record can never move it.
    """

    __slots__ = ("_bits", "_mask", "_right", "size")

    def __init__(self, size: int = 64) -> None:
        if size < _MIN_REPLAY_WINDOW:
            raise ConfigError(_WINDOW_TOO_SMALL)
        self.size = size
        self._mask = _window_mask(size)
        self._right = -1
        self._bits = 0

    @property
    def right_edge(self) -> int:
        """The highest sequence number marked so far, -1 before the first."""
        return self._right

    def is_fresh(self, seq: int) -> bool:
        """True when `seq` is right of the window or inside it and not yet seen."""
        diff = self._right - seq
        if diff < 0:
            return True
        if diff >= self.size:
            return False
        return not (self._bits >> diff) & 1

    def is_too_old(self, seq: int) -> bool:
        """True when `seq` is left of the window (so `is_fresh` is False without a duplicate)."""
        return self._right - seq >= self.size

    def mark(self, seq: int) -> None:
        """Record `seq` as received, sliding the window right if `seq` is new highest."""
        diff = self._right - seq
        if diff < 0:
            shift = -diff
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self._right = seq
        elif diff < self.size:
            self._bits |= 1 << diff

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, right_edge={self._right})"


@functools.cache
def _window_mask(size: int) -> int:
    """The bitmap mask of a window of `size` records (one int shared by every window)."""
    return (1 << size) - 1


class _ReadState:
    __slots__ = ("overhead", "protector", "window")

    def __init__(self, protector: RecordProtector, window: ReplayWindow | None) -> None:
        self.protector = protector
        self.window = window
        self.overhead = protector.overhead


class _WriteState:
    __slots__ = ("next_seq", "overhead", "protector")

    def __init__(self, protector: RecordProtector, next_seq: int) -> None:
        self.protector = protector
        self.next_seq = next_seq
        self.overhead = protector.overhead


#: Epoch 0 read without anti-replay: the same for every association, so shared.
_PLAIN_READ = _ReadState(NULL_PROTECTOR, None)


_State = TypeVar("_State", _ReadState, _WriteState)


def _store(table: list[_State | None], epoch: int, state: _State | None) -> None:
    """Set (or with None, clear) the state of `epoch` in a table indexed by epoch."""
    if epoch >= len(table):
        if state is None:
            return
        table.extend([None] * (epoch + 1 - len(table)))
    table[epoch] = state
    while table and table[-1] is None:
        table.pop()


def _check_epoch(epoch: int) -> None:
    if not 0 <= epoch <= _MAX_EPOCH:
        raise LocalProtocolError(f"epoch {epoch} outside 0..65535")


class RecordLayer:
    """Per-epoch record protection, anti-replay and silent discard (RFC 6347 §4.1).

    Epoch 0 is installed with the null protection in both directions at construction. Records of
    any content type that pass the checks are handed up; what an application or alert record in
    epoch 0 means is the connection's business.
    """

    __slots__ = (
        "_bad_tags",
        "_discards",
        "_integrity_limit",
        "_read",
        "_window_size",
        "_write",
        "_write_epoch",
        "client_hello_exempt",
        "integrity_exhausted",
        "plaintext_limit",
    )

    def __init__(
        self,
        replay_window_size: int = 64,
        *,
        integrity_limit: int | None = None,
        epoch0_replay_check: bool = True,
    ) -> None:
        """`integrity_limit`: records of one epoch that may fail authentication before
        `integrity_exhausted` names that epoch (REC-6; None: no limit).
        `epoch0_replay_check=False`: epoch 0 is read without anti-replay, as
        `install_read_epoch(0, NULL_PROTECTOR, replay_check=False)` would set it."""
        if replay_window_size < _MIN_REPLAY_WINDOW:  # early, not at the first protected epoch
            raise ConfigError(_WINDOW_TOO_SMALL)
        self._integrity_limit = integrity_limit
        #: The first epoch whose failed records reached the integrity limit, else None.
        self.integrity_exhausted: int | None = None
        self._window_size = replay_window_size
        # Lists indexed by epoch, not dicts: a connection only ever has epochs 0 and 1
        # (renegotiation is refused), and two dicts cost 450 bytes per association.
        # Epoch 0, null protection both ways, set directly, with room for epoch 1 from the
        # start: a one-item list grown later over-allocates (120 bytes instead of 72).
        self._read: list[_ReadState | None] = [
            (
                _ReadState(NULL_PROTECTOR, ReplayWindow(replay_window_size))
                if epoch0_replay_check
                else _PLAIN_READ
            ),
            None,
        ]
        self._write: list[_WriteState | None] = [_WriteState(NULL_PROTECTOR, 0), None]
        self._write_epoch = 0
        # Made on the first discard (most associations never have one): memory per association.
        self._discards: Counter[DiscardReason] | None = None
        self._bad_tags: Counter[int] | None = None
        #: Largest plaintext of an unprotected (epoch 0) record we take: 2^14, or the
        #: negotiated max_fragment_length (RFC 6066 §4). Protected records above it are the
        #: connection's to judge, once they authenticated.
        self.plaintext_limit = MAX_PLAINTEXT_LENGTH
        #: A server's: a record that holds one ClientHello fragment and nothing else is taken
        #: above `plaintext_limit`. The client sent it before it could know the limit (which
        #: its ServerHello brings), and repeats that same hello when our flight is lost (RFC
        #: 6347 §4.2.4): the limit binds what it sends from then on.
        self.client_hello_exempt = False

    @property
    def discards(self) -> Counter[DiscardReason]:
        """Records silently discarded, by reason (RFC 6347 §4.1.2.7, REC-3)."""
        if self._discards is None:
            self._discards = Counter()
        return self._discards

    def add_discards(self, total: Counter[IdentityHashEnum]) -> None:
        """Add `discards` to `total` (without making a counter)."""
        if self._discards is not None:
            total.update(self._discards)

    @property
    def bad_tag_by_epoch(self) -> Counter[int]:
        """Records that failed authentication, by epoch (REC-6)."""
        if self._bad_tags is None:
            self._bad_tags = Counter()
        return self._bad_tags

    def bad_tags(self, epoch: int) -> int:
        """How many records of `epoch` failed authentication (without making a counter)."""
        return 0 if self._bad_tags is None else self._bad_tags[epoch]

    def authenticated_in(self, epoch: int) -> bool:
        """Whether a record of `epoch` has been opened: for a protected epoch, one that
        authenticated under its keys (its replay window moved; an epoch read without
        anti-replay never tells, False)."""
        state = self._read[epoch] if epoch < len(self._read) else None
        return state is not None and state.window is not None and state.window.right_edge >= 0

    # -- epochs -------------------------------------------------------------------------------

    def install_read_epoch(
        self, epoch: int, protector: RecordProtector, *, replay_check: bool = True
    ) -> None:
        """Accept records of `epoch`, unprotected by `protector`, with a fresh replay window.

        Several read epochs can be live at once (e.g. 0 and 1 around ChangeCipherSpec).
        `replay_check=False` turns anti-replay off for this epoch (RFC 6347 §4.1.2.6 makes it
        optional); it is on by default for every epoch, 0 included.
        """
        _check_epoch(epoch)
        if not replay_check and isinstance(protector, NullProtector):
            _store(self._read, epoch, _PLAIN_READ)
            return
        window = ReplayWindow(self._window_size) if replay_check else None
        _store(self._read, epoch, _ReadState(protector, window))

    def install_write_epoch(
        self, epoch: int, protector: RecordProtector, *, next_sequence_number: int = 0
    ) -> None:
        """Protect records of `epoch` with `protector`; `epoch` becomes the default write epoch.

        Older write epochs stay usable through `seal(..., epoch=...)` (flight retransmission).
        """
        _check_epoch(epoch)
        if not 0 <= next_sequence_number < MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError("next sequence number outside 0..2^48-2")
        _store(self._write, epoch, _WriteState(protector, next_sequence_number))
        self._write_epoch = epoch

    def set_next_sequence_number(self, epoch: int, next_sequence_number: int) -> None:
        """Continue the records of the installed write `epoch` at `next_sequence_number` (a
        server going on from the client's epoch-0 numbering after a stateless cookie
        exchange, RFC 6347 §4.2.1), without installing the epoch again."""
        if not 0 <= next_sequence_number < MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError("next sequence number outside 0..2^48-2")
        self._write_state(epoch).next_seq = next_sequence_number

    def drop_read_epoch(self, epoch: int) -> None:
        """Stop accepting records of `epoch` (later ones count as UNKNOWN_EPOCH)."""
        _store(self._read, epoch, None)

    def drop_write_epoch(self, epoch: int) -> None:
        """Forget an old write epoch; the default write epoch cannot be dropped."""
        if epoch == self._write_epoch:
            raise LocalProtocolError("cannot drop the current write epoch")
        _store(self._write, epoch, None)

    @property
    def write_epoch(self) -> int:
        """The epoch `seal` uses when none is given."""
        return self._write_epoch

    @property
    def read_epochs(self) -> tuple[int, ...]:
        """The epochs whose records are accepted, ascending."""
        return tuple(epoch for epoch, state in enumerate(self._read) if state is not None)

    def next_sequence_number(self, epoch: int | None = None) -> int:
        """The sequence number the next record sealed in `epoch` will carry."""
        return self._write_state(epoch).next_seq

    def overhead(self, epoch: int | None = None) -> int:
        """Header plus protection bytes of one record written in `epoch` (for MTU budgets)."""
        return RECORD_HEADER_LEN + self._write_state(epoch).overhead

    def _write_state(self, epoch: int | None) -> _WriteState:
        write = self._write
        if epoch is None:
            epoch = self._write_epoch
        state = write[epoch] if 0 <= epoch < len(write) else None
        if state is None:
            raise LocalProtocolError(f"no write state for epoch {epoch}")
        return state

    # -- sending ------------------------------------------------------------------------------

    def seal(
        self,
        content_type: int,
        payload: Plaintext,
        epoch: int | None = None,
        *,
        version: int = _DTLS_1_2,
    ) -> bytes:
        """Protect `payload` into one record with the next sequence number of `epoch`.

        The record version is DTLS 1.2 (0xFEFD); `version=0xFEFF` is allowed in epoch 0 only,
        for a HelloVerifyRequest (RFC 6347 §4.2.1). Raises `SequenceNumbersExhausted` instead of
        reaching the last 48-bit sequence number (RFC 6347 §4.1).
        """
        if epoch is None:
            epoch = self._write_epoch
        write = self._write
        state = write[epoch] if 0 <= epoch < len(write) else None
        if state is None:
            raise LocalProtocolError(f"no write state for epoch {epoch}")
        if version != _DTLS_1_2 and not (version == _DTLS_1_0 and epoch == 0):
            raise LocalProtocolError("record version must be 0xFEFD (0xFEFF only in epoch 0)")
        if len(payload) > MAX_PLAINTEXT_LENGTH:
            raise LocalProtocolError("record payload exceeds 2^14 bytes (RFC 5246 §6.2.1)")
        seq = state.next_seq
        if seq >= MAX_SEQUENCE_NUMBER:
            raise SequenceNumbersExhausted(epoch)
        # Taken before sealing: a seal entered while this one runs (a signal handler's send)
        # must not reuse the number, which under one key is the AES-CCM nonce (RFC 5116 §3).
        state.next_seq = seq + 1
        fragment = state.protector.seal(epoch, seq, content_type, version, payload)
        header = _HEADER.pack(
            content_type, version, epoch, seq >> 32, seq & _SEQ_LOW_MASK, len(fragment)
        )
        return header + fragment

    # -- receiving ----------------------------------------------------------------------------

    def open_datagram(self, data: bytes) -> list[PlainRecord]:
        """Return the records of `data` that pass every check, in order; count the others."""
        return list(self.open_records(data))

    def open_records(self, data: bytes) -> Iterator[PlainRecord]:
        """Yield the records of `data` that pass every check, one at a time; count the others.

        Lazy on purpose: a connection may install the next epoch's keys while handling one
        record (e.g. a ClientKeyExchange) so that the Finished behind it in the same datagram
        opens. Never raises on network input. A bad record does not disturb the records after
        it; a truncated record ends the datagram (its length field cannot be trusted).
        """
        if type(data) is not bytes:
            data = bytes(data)
        offset = 0
        end_of_data = len(data)
        unpack_from = _HEADER.unpack_from
        while offset < end_of_data:
            if end_of_data - offset < RECORD_HEADER_LEN:
                self.discards[DiscardReason.BAD_LENGTH] += 1
                return
            ctype, version, epoch, seq_hi, seq_lo, length = unpack_from(data, offset)
            start = offset + RECORD_HEADER_LEN
            offset = start + length
            if offset > end_of_data:
                self.discards[DiscardReason.BAD_LENGTH] += 1
                return
            result = self._open_record(
                ctype, version, epoch, (seq_hi << 32) | seq_lo, data[start:offset]
            )
            # An exact type test first: isinstance against an Enum goes through its metaclass.
            if type(result) is PlainRecord:
                yield result
            else:
                assert isinstance(result, DiscardReason)
                self.discards[result] += 1

    def _open_record(
        self, ctype: int, version: int, epoch: int, seq: int, fragment: bytes
    ) -> PlainRecord | DiscardReason:
        """Check and unprotect one record (RFC 6347 §4.1.2.6-7); the replay window moves only
        once the record has authenticated.

        Version 0xFEFF is accepted in epoch 0 for handshake and alert records only: a peer that
        does not speak DTLS 1.2 answers in its own version (RFC 6347 §4.1, RFC 5246 Appendix E),
        a HelloVerifyRequest or a refusing alert, so the refusal is heard rather than retried
        into a timeout. An epoch-0 record is unauthenticated whatever its version."""
        content_type = _CONTENT_TYPES.get(ctype)
        if content_type is None:
            return DiscardReason.UNKNOWN_CONTENT_TYPE
        if version != _DTLS_1_2 and not (
            version == _DTLS_1_0
            and epoch == 0
            and ctype in (HANDSHAKE_CONTENT, ALERT_CONTENT)
        ):
            return DiscardReason.BAD_VERSION
        read = self._read
        state = read[epoch] if epoch < len(read) else None
        if state is None:
            return DiscardReason.UNKNOWN_EPOCH
        if len(fragment) > MAX_CIPHERTEXT_LENGTH or len(fragment) < state.overhead:
            return DiscardReason.BAD_LENGTH
        window = state.window
        if window is not None and not window.is_fresh(seq):
            return DiscardReason.TOO_OLD if window.is_too_old(seq) else DiscardReason.REPLAYED
        try:
            payload = state.protector.open(epoch, seq, ctype, version, fragment)
        except BadTag:
            failed = self.bad_tag_by_epoch[epoch] + 1
            self.bad_tag_by_epoch[epoch] = failed
            limit = self._integrity_limit
            if limit is not None and failed >= limit and self.integrity_exhausted is None:
                self.integrity_exhausted = epoch
            return DiscardReason.BAD_TAG
        if len(payload) > MAX_PLAINTEXT_LENGTH:
            return DiscardReason.BAD_LENGTH
        if (
            epoch == 0
            and len(payload) > self.plaintext_limit
            and not (self.client_hello_exempt and _lone_client_hello(ctype, payload))
        ):
            return DiscardReason.OVER_FRAGMENT_LIMIT
        if window is not None:
            window.mark(seq)
        return PlainRecord(content_type, epoch, seq, payload)


#: The handshake header (RFC 6347 §4.2.2: msg_type, length, message_seq, fragment_offset,
#: fragment_length) and the ClientHello's msg_type (RFC 5246 §7.4), for `_lone_client_hello`.
_HANDSHAKE_HEADER_LEN = 12
_CLIENT_HELLO_TYPE = 1


def _lone_client_hello(ctype: int, payload: bytes) -> bool:
    """An unprotected record holds one ClientHello fragment and nothing else (its fragment
    ends the record): `RecordLayer.client_hello_exempt`."""
    return (
        ctype == HANDSHAKE_CONTENT
        and len(payload) >= _HANDSHAKE_HEADER_LEN
        and payload[0] == _CLIENT_HELLO_TYPE
        and int.from_bytes(payload[9:12], "big") == len(payload) - _HANDSHAKE_HEADER_LEN
    )
