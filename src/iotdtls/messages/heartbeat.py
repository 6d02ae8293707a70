"""The Heartbeat protocol message (RFC 6520 §4)."""

from __future__ import annotations

from typing import Self

from iotdtls._buffer import Reader, Writer
from iotdtls._values import statically_frozen
from iotdtls.errors import DecodeError
from iotdtls.messages.constants import HeartbeatMessageType, known

__all__ = ["HEARTBEAT_MIN_PADDING", "HeartbeatMessage"]

HEARTBEAT_MIN_PADDING = 16
"""padding_length MUST be at least 16 (RFC 6520 §4)."""
_FIXED_LEN = 3
"""type(1) + payload_length(2)."""


@statically_frozen
class HeartbeatMessage:
    """HeartbeatMessage: type u8, payload_length u16, payload, padding (RFC 6520 §4).

    The padding is whatever follows the payload and must be at least 16 bytes. `decode` refuses
    a payload_length that does not leave room for those 16 bytes (the Heartbleed check;
    RFC 6520 §4 says such a message is discarded silently, so the caller drops it on
    `DecodeError` instead of sending an alert). An unknown type stays a plain int: the RFC has it
    discarded silently too. The 2^14 / max_fragment_length bound is the record layer's.
    """

    type: int
    payload: bytes
    padding: bytes

    def encode(self) -> bytes:
        if len(self.padding) < HEARTBEAT_MIN_PADDING:
            raise ValueError(f"heartbeat padding must be at least {HEARTBEAT_MIN_PADDING} bytes")
        writer = Writer()
        writer.push_uint8(self.type)
        writer.push_vector(2, self.payload)
        writer.push_bytes(self.padding)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        msg_type = known(HeartbeatMessageType, reader.pull_uint8())
        payload_length = reader.pull_uint16()
        if payload_length + _FIXED_LEN + HEARTBEAT_MIN_PADDING > len(data):
            raise DecodeError(
                f"heartbeat payload_length {payload_length} too large for {len(data)} bytes"
            )
        payload = reader.pull_bytes(payload_length)
        padding = reader.pull_rest()
        return cls(msg_type, payload, padding)
