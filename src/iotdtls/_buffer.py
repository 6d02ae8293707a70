"""Byte cursors for the TLS presentation language (RFC 5246 §4).

`Reader` pulls fixed-width unsigned integers and length-prefixed vectors from a byte string and
raises only `DecodeError` when the input is short or a block is not consumed exactly. `Writer`
builds the same structures. Every codec in `iotdtls.messages` is written on these two classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from iotdtls.errors import DecodeError

__all__ = ["Reader", "Writer"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_WIDTH_LIMITS = {width: 1 << (8 * width) for width in range(1, 9)}


class Reader:
    """A cursor over immutable bytes; every pull past the end raises `DecodeError`."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        """Bytes left before the end of this reader."""
        return self._end - self._pos

    def eof(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos >= self._end

    def tell(self) -> int:
        """Absolute position in the underlying bytes."""
        return self._pos

    def _take(self, n: int) -> int:
        """Advance past `n` bytes and return where they start."""
        start = self._pos
        if n < 0 or start + n > self._end:
            raise self._short(n)
        self._pos = start + n
        return start

    def _short(self, n: int) -> DecodeError:
        return DecodeError(f"message truncated: need {n} bytes, have {self.remaining}")

    def pull_bytes(self, n: int) -> bytes:
        """Take exactly `n` bytes."""
        start = self._pos
        end = start + n
        if n < 0 or end > self._end:
            raise self._short(n)
        self._pos = end
        return self._data[start:end]

    def pull_rest(self) -> bytes:
        """Take every byte left."""
        return self.pull_bytes(self.remaining)

    def pull_uint(self, width: int) -> int:
        """Take a big-endian unsigned integer of `width` bytes (1..8); one and two bytes, the
        widths of most length fields, skip the generic path."""
        if width == 1:
            return self.pull_uint8()
        if width == 2:
            return self.pull_uint16()
        start = self._take(width)
        return int.from_bytes(self._data[start : start + width], "big")

    def pull_uint8(self) -> int:
        start = self._pos
        if start >= self._end:
            raise self._short(1)
        self._pos = start + 1
        return self._data[start]

    def pull_uint16(self) -> int:
        start = self._pos
        if start + 2 > self._end:
            raise self._short(2)
        self._pos = start + 2
        value: int = _U16.unpack_from(self._data, start)[0]
        return value

    def pull_uint24(self) -> int:
        return self.pull_uint(3)

    def pull_uint32(self) -> int:
        start = self._take(4)
        value: int = _U32.unpack_from(self._data, start)[0]
        return value

    def pull_struct(self, layout: struct.Struct) -> tuple[int, ...]:
        """Take `layout.size` bytes and unpack them with `layout` (fixed-width fields only)."""
        start = self._take(layout.size)
        values: tuple[int, ...] = layout.unpack_from(self._data, start)
        return values

    def pull_uint48(self) -> int:
        return self.pull_uint(6)

    def pull_vector(self, length_width: int, minimum: int = 0, maximum: int | None = None) -> bytes:
        """Take an opaque vector `opaque x<minimum..maximum>` with a `length_width`-byte length.

        One- and two-byte lengths, those of nearly every vector, are read in place rather than
        through `pull_uint` and `pull_bytes` (three calls fewer per vector of a handshake)."""
        data, start, end = self._data, self._pos, self._end
        if length_width == 1 and start < end:
            length = data[start]
            start += 1
        elif length_width == 2 and start + 2 <= end:
            length = (data[start] << 8) | data[start + 1]
            start += 2
        else:
            length = self.pull_uint(length_width)
            start = self._pos
        if length < minimum:
            raise DecodeError(f"vector of {length} bytes, at least {minimum} expected")
        if maximum is not None and length > maximum:
            raise DecodeError(f"vector of {length} bytes, at most {maximum} expected")
        stop = start + length
        if stop > end:
            self._pos = start
            raise self._short(length)
        self._pos = stop
        return data[start:stop]

    def pull_block(self, length_width: int) -> Reader:
        """Take a length-prefixed block and return a reader confined to it."""
        length = self.pull_uint(length_width)
        start = self._take(length)
        return Reader(self._data, start, start + length)

    def expect_end(self) -> None:
        """Raise `DecodeError` unless the reader is fully consumed."""
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes")


class Writer:
    """An append-only byte builder with length-prefixed blocks."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def push_bytes(self, data: bytes) -> None:
        self._buf += data

    def push_uint(self, width: int, value: int) -> None:
        if not 0 <= value < _WIDTH_LIMITS[width]:
            raise ValueError(f"{value} does not fit in {width} bytes")
        self._buf += value.to_bytes(width, "big")

    def push_uint8(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{value} does not fit in 1 byte")
        self._buf.append(value)

    def push_uint16(self, value: int) -> None:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{value} does not fit in 2 bytes")
        self._buf += _U16.pack(value)

    def push_uint24(self, value: int) -> None:
        self.push_uint(3, value)

    def push_uint32(self, value: int) -> None:
        self.push_uint(4, value)

    def push_uint48(self, value: int) -> None:
        self.push_uint(6, value)

    def push_vector(self, length_width: int, data: bytes) -> None:
        """Write `data` behind a `length_width`-byte length."""
        self.push_uint(length_width, len(data))
        self._buf += data

    @contextmanager
    def block(self, length_width: int) -> Iterator[None]:
        """Write whatever the body pushes behind a length prefix filled in afterwards."""
        start = len(self._buf)
        self._buf += bytes(length_width)
        yield
        length = len(self._buf) - start - length_width
        if length >> (8 * length_width):
            raise ValueError(f"block of {length} bytes does not fit a {length_width}-byte length")
        self._buf[start : start + length_width] = length.to_bytes(length_width, "big")
