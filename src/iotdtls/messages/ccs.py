"""The ChangeCipherSpec protocol message (RFC 5246 §7.1, RFC 6347 §4.1)."""

from __future__ import annotations

from typing import Self

from iotdtls._values import statically_frozen
from iotdtls.errors import DecodeError

__all__ = ["CHANGE_CIPHER_SPEC_BYTE", "ChangeCipherSpec", "check_change_cipher_spec"]

CHANGE_CIPHER_SPEC_BYTE = 1
"""The only value: `enum { change_cipher_spec(1), (255) } type` (RFC 5246 §7.1)."""


@statically_frozen
class ChangeCipherSpec:
    """ChangeCipherSpec: exactly one byte of value 1; anything else is a decode_error."""

    def encode(self) -> bytes:
        return bytes([CHANGE_CIPHER_SPEC_BYTE])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_change_cipher_spec(data)
        return cls()


_BODY = bytes([CHANGE_CIPHER_SPEC_BYTE])
#: The bytes of a wrong body an error shows: a peer's record may hold 16 KiB.
_SHOWN = 8


def check_change_cipher_spec(data: bytes) -> None:
    """`DecodeError` unless `data` is a ChangeCipherSpec (what `decode` checks, without making
    the value: a connection only needs to know that it is one)."""
    if data != _BODY:
        raise DecodeError(
            f"ChangeCipherSpec must be the single byte 01, got {len(data)} bytes"
            f" {bytes(data[:_SHOWN]).hex()}{'...' if len(data) > _SHOWN else ''}"
        )
