"""The byte cursors raise only DecodeError on short or malformed input."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotdtls._buffer import Reader, Writer
from iotdtls.errors import DecodeError


def test_round_trip_of_every_width() -> None:
    w = Writer()
    w.push_uint8(1)
    w.push_uint16(0x0203)
    w.push_uint24(0x040506)
    w.push_uint32(0x0708090A)
    w.push_uint48(0x0B0C0D0E0F10)
    w.push_vector(1, b"ab")
    with w.block(2):
        w.push_bytes(b"xyz")
    r = Reader(w.getvalue())
    assert r.pull_uint8() == 1
    assert r.pull_uint16() == 0x0203
    assert r.pull_uint24() == 0x040506
    assert r.pull_uint32() == 0x0708090A
    assert r.pull_uint48() == 0x0B0C0D0E0F10
    assert r.pull_vector(1) == b"ab"
    block = r.pull_block(2)
    assert block.pull_rest() == b"xyz"
    block.expect_end()
    r.expect_end()


def test_block_is_confined() -> None:
    r = Reader(b"\x00\x01\xaa\xbb")
    block = r.pull_block(2)
    assert block.pull_uint8() == 0xAA
    with pytest.raises(DecodeError):
        block.pull_uint8()
    assert r.pull_uint8() == 0xBB


def test_vector_bounds() -> None:
    with pytest.raises(DecodeError, match=r"^vector of 3 bytes, at most 2 expected$"):
        Reader(b"\x03abc").pull_vector(1, maximum=2)
    with pytest.raises(DecodeError, match=r"^vector of 0 bytes, at least 1 expected$"):
        Reader(b"\x00").pull_vector(1, minimum=1)


@pytest.mark.parametrize(
    ("push", "value", "width"),
    [
        (Writer.push_uint8, 256, 1),
        (Writer.push_uint16, 1 << 16, 2),
        (Writer.push_uint24, 1 << 24, 3),
        (Writer.push_uint48, 1 << 48, 6),
        (Writer.push_uint8, -1, 1),
    ],
)
def test_writer_rejects_overflow(
    push: Callable[[Writer, int], None], value: int, width: int
) -> None:
    with pytest.raises(ValueError, match=f"{value} does not fit in {width} byte"):
        push(Writer(), value)
    writer = Writer()
    push(writer, (1 << (8 * width)) - 1)  # the largest that fits
    assert writer.getvalue() == b"\xff" * width


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=3))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, width: int) -> None:
    r = Reader(data)
    try:
        while True:
            r.pull_vector(width)
    except DecodeError:
        pass


def test_struct_is_read_where_the_cursor_stands() -> None:
    r = Reader(b"\x00\x01\x02\x03\x04")
    assert r.pull_uint8() == 0
    assert r.pull_struct(struct.Struct(">HB")) == (0x0102, 3)
    assert r.tell() == 4
    with pytest.raises(DecodeError, match="need 3 bytes, have 1"):
        r.pull_struct(struct.Struct(">HB"))


@pytest.mark.parametrize(
    ("data", "pull", "message"),
    [
        (b"\x01\x02\x03", Reader.pull_uint32, "need 4 bytes, have 3"),
        (b"\x01\x02\x03", Reader.pull_uint48, "need 6 bytes, have 3"),
        (b"\x01\x02\x03", lambda r: r.pull_bytes(5), "need 5 bytes, have 3"),
        (b"", Reader.pull_uint8, "need 1 bytes, have 0"),
        (b"\x01", Reader.pull_uint16, "need 2 bytes, have 1"),
        (b"\x01\x02\x03", lambda r: r.pull_vector(2), "need 258 bytes, have 1"),
    ],
    ids=["uint32", "uint48", "bytes", "uint8", "uint16", "vector"],
)
def test_a_short_read_says_what_it_needed_and_had(
    data: bytes, pull: Callable[[Reader], object], message: str
) -> None:
    with pytest.raises(DecodeError, match=f"message truncated: {message}"):
        pull(Reader(data))
