"""The asyncio adapters' per-association inbox: bounded, ordered, ended once, and small."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from iotdtls.aio import _Inbox
from iotdtls.errors import AlertReceived

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 5))


def test_datagrams_come_out_in_order_then_the_end() -> None:
    async def main() -> list[bytes | None]:
        inbox = _Inbox(limit=10, limit_bytes=1 << 20)
        inbox.put(b"one")
        inbox.put(b"two")
        inbox.end(None)
        inbox.put(b"late")  # the adapters never do this; it must not hide the end either
        return [await inbox.get() for _ in range(4)] + [await inbox.get()]

    assert run(main()) == [b"one", b"two", b"late", None, None]


def test_a_full_inbox_drops_and_counts() -> None:
    async def main() -> tuple[int, int]:
        inbox = _Inbox(limit=2, limit_bytes=1 << 20)
        assert len(inbox) == 0  # nothing yet (and no deque made for nothing)
        for n in range(5):
            inbox.put(bytes([n]))
        return len(inbox), inbox.dropped

    assert run(main()) == (2, 3)


def test_an_error_reaches_every_later_read() -> None:
    async def main() -> int:
        inbox = _Inbox(limit=2, limit_bytes=1 << 20)
        inbox.end(AlertReceived(40))
        raised = 0
        for _ in range(2):
            try:
                await inbox.get()
            except AlertReceived:
                raised += 1
        return raised

    assert run(main()) == 2


def test_waiting_readers_are_woken_by_data_and_by_the_end() -> None:
    async def main() -> list[bytes | None]:
        inbox = _Inbox(limit=4, limit_bytes=1 << 20)
        readers = [asyncio.ensure_future(inbox.get()) for _ in range(3)]
        await asyncio.sleep(0)
        inbox.put(b"a")
        await asyncio.sleep(0)
        inbox.put(b"b")
        await asyncio.sleep(0)
        inbox.end(None)
        return list(await asyncio.gather(*readers))

    assert sorted(run(main()), key=repr) == sorted([b"a", b"b", None], key=repr)


def test_a_cancelled_reader_leaves_the_datagram_to_the_next() -> None:
    async def main() -> bytes | None:
        inbox = _Inbox(limit=4, limit_bytes=1 << 20)
        first = asyncio.ensure_future(inbox.get())
        second = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put(b"kept")
        first.cancel()
        result = await second
        assert inbox._readers is None  # nobody left waiting
        return result

    assert run(main()) == b"kept"


def test_an_idle_inbox_holds_no_containers() -> None:
    async def main() -> int:
        inbox = _Inbox(limit=1024, limit_bytes=1 << 20)
        inbox.put(b"x")
        await inbox.get()
        return sys.getsizeof(inbox) + sys.getsizeof(inbox._items) + sys.getsizeof(inbox._readers)

    assert run(main()) < 200


@pytest.mark.parametrize("limit", [1, 3])
def test_the_limit_counts_unread_datagrams_only(limit: int) -> None:
    async def main() -> int:
        inbox = _Inbox(limit=limit, limit_bytes=1 << 20)
        for _ in range(3):
            for _ in range(limit):
                inbox.put(b"x")
            for _ in range(limit):
                await inbox.get()
        return inbox.dropped

    assert run(main()) == 0


def test_the_byte_bound_drops_and_counts_and_reading_frees_room() -> None:
    async def main() -> list[object]:
        inbox = _Inbox(limit=10, limit_bytes=100)
        inbox.put(b"a" * 60)
        inbox.put(b"b" * 50)  # would hold 110 bytes: dropped
        inbox.put(b"c" * 40)  # 100: kept
        seen: list[object] = [len(inbox), inbox.dropped, inbox.size]
        await inbox.get()
        inbox.put(b"d" * 60)  # room again
        seen += [len(inbox), inbox.dropped, inbox.size]
        await inbox.get()
        await inbox.get()
        inbox.put(b"e" * 500)  # an empty inbox takes one larger than the bound
        inbox.put(b"f")
        return [*seen, len(inbox), inbox.dropped, inbox.size]

    assert run(main()) == [2, 1, 100, 2, 1, 100, 1, 2, 500]
