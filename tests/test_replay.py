"""Anti-replay window (RFC 6347 §4.1.2.6): edges, duplicates, and movement only on
authenticated records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotdtls.crypto import Ccm8Protector
from iotdtls.errors import ConfigError
from iotdtls.record import (
    MAX_SEQUENCE_NUMBER,
    ContentType,
    DiscardReason,
    RecordHeader,
    RecordLayer,
    ReplayWindow,
)

pytestmark = pytest.mark.req("REC-2")

KEY = bytes(range(16))
IV = b"\x01\x02\x03\x04"


def test_empty_window_accepts_everything() -> None:
    w = ReplayWindow()
    assert w.size == 64
    assert w.right_edge == -1
    for seq in (0, 1, 63, 64, 10**6, MAX_SEQUENCE_NUMBER):
        assert w.is_fresh(seq)


def test_zero_then_duplicate() -> None:
    w = ReplayWindow()
    w.mark(0)
    assert not w.is_fresh(0)
    assert not w.is_too_old(0)
    assert w.is_fresh(1)


def test_window_edges_at_63_and_64() -> None:
    w = ReplayWindow()
    w.mark(63)
    assert w.is_fresh(0)  # 63 - 0 = 63 < 64: still inside the window
    w.mark(0)
    assert not w.is_fresh(0)
    w.mark(64)  # the window slides by one: 0 falls off the left edge
    assert not w.is_fresh(0) and w.is_too_old(0)
    assert w.is_fresh(1) and not w.is_too_old(1)
    assert not w.is_fresh(63) and not w.is_fresh(64)


def test_left_edge_exactly() -> None:
    w = ReplayWindow()
    w.mark(1000)
    assert w.is_fresh(1000 - 63)
    assert not w.is_fresh(1000 - 64) and w.is_too_old(1000 - 64)


def test_far_jump_clears_history() -> None:
    w = ReplayWindow()
    for seq in range(10):
        w.mark(seq)
    w.mark(10**9)
    assert w.right_edge == 10**9
    assert not w.is_fresh(10**9)
    assert w.is_fresh(10**9 - 1) and w.is_fresh(10**9 - 63)
    assert w.is_too_old(9)
    # The largest 48-bit sequence number (RFC 6347 §4.1): a jump that far must not build a
    # bitmap as wide as the jump (2^48 bits), only start a fresh one.
    last = 2**48 - 1
    w.mark(last)
    assert w.right_edge == last and not w.is_fresh(last) and w.is_fresh(last - 1)
    assert w.is_too_old(10**9)


def test_out_of_order_inside_window() -> None:
    w = ReplayWindow()
    for seq in (5, 3, 9, 4, 8):
        assert w.is_fresh(seq)
        w.mark(seq)
    for seq in (3, 4, 5, 8, 9):
        assert not w.is_fresh(seq)
    for seq in (0, 1, 2, 6, 7, 10):
        assert w.is_fresh(seq)
    w.mark(9)  # marking a duplicate or an old number again changes nothing
    w.mark(0)
    assert w.right_edge == 9 and not w.is_fresh(0)


def test_is_fresh_does_not_move_the_window() -> None:
    w = ReplayWindow()
    w.mark(10)
    assert w.is_fresh(10**6)
    assert w.right_edge == 10
    assert w.is_fresh(11)


def test_configurable_size_and_minimum() -> None:
    w = ReplayWindow(128)
    w.mark(200)
    assert w.is_fresh(200 - 127) and not w.is_fresh(200 - 128)
    with pytest.raises(ConfigError, match="at least 64 records"):
        ReplayWindow(32)
    with pytest.raises(ConfigError, match="at least 64 records"):  # when built, not later
        RecordLayer(replay_window_size=63)


@given(st.lists(st.integers(min_value=0, max_value=500), max_size=200))
def test_against_a_set_model(seqs: list[int]) -> None:
    w = ReplayWindow()
    seen: set[int] = set()
    top = -1
    for seq in seqs:
        expected = seq > top or (top - seq < 64 and seq not in seen)
        assert w.is_fresh(seq) == expected
        if expected:
            w.mark(seq)
            seen.add(seq)
            top = max(top, seq)


def _layer_pair() -> tuple[RecordLayer, RecordLayer]:
    sender, receiver = RecordLayer(), RecordLayer()
    sender.install_write_epoch(1, Ccm8Protector(KEY, IV))
    receiver.install_read_epoch(1, Ccm8Protector(KEY, IV))
    return sender, receiver


def test_record_layer_drops_duplicates() -> None:
    sender, receiver = _layer_pair()
    rec = sender.seal(ContentType.application_data, b"once")
    assert [r.payload for r in receiver.open_datagram(rec)] == [b"once"]
    assert receiver.open_datagram(rec) == []
    assert receiver.open_datagram(rec + rec) == []
    assert receiver.discards[DiscardReason.REPLAYED] == 3


def test_a_layer_told_so_reads_epoch_0_without_anti_replay() -> None:
    """What a connection asks for (`epoch0_replay_check=False`); on by default (see
    test_memory_details)."""
    record = RecordLayer().seal(ContentType.handshake, b"hello")
    layer = RecordLayer(epoch0_replay_check=False)
    assert len(layer.open_datagram(record + record)) == 2
    assert layer.read_epochs == (0,) and layer.write_epoch == 0


def test_forged_high_sequence_number_does_not_move_the_window() -> None:
    sender, receiver = _layer_pair()
    first = sender.seal(ContentType.application_data, b"a")
    second = sender.seal(ContentType.application_data, b"b")
    assert len(receiver.open_datagram(first)) == 1
    forged_fragment = bytes(8) + b"\x00" * 24
    forged = (
        RecordHeader(23, 0xFEFD, 1, MAX_SEQUENCE_NUMBER - 1, len(forged_fragment)).encode()
        + forged_fragment
    )
    assert receiver.open_datagram(forged) == []
    assert receiver.discards[DiscardReason.BAD_TAG] == 1
    # Had the forged record moved the window, sequence number 1 would now be TOO_OLD.
    assert [r.payload for r in receiver.open_datagram(second)] == [b"b"]
    assert receiver.discards[DiscardReason.TOO_OLD] == 0


def test_too_old_records_are_counted() -> None:
    sender, receiver = _layer_pair()
    old = sender.seal(ContentType.application_data, b"old")
    records = [sender.seal(ContentType.application_data, b"x") for _ in range(64)]
    assert len(receiver.open_datagram(b"".join(records))) == 64
    assert receiver.open_datagram(old) == []
    assert receiver.discards[DiscardReason.TOO_OLD] == 1
