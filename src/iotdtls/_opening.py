"""What the asyncio entry points return (`aio.connect`, `aio.serve`, `workers.serve`): both a
coroutine and an async context manager, so that `await serve(...)` and `async with serve(...)`
are the same call."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, Protocol, TypeVar

__all__ = ["Opening"]


class _Closable(Protocol):
    async def close(self) -> object: ...


_Opened = TypeVar("_Opened", bound=_Closable)


class Opening(Coroutine[Any, Any, _Opened]):
    """What `connect` and `serve` return: a coroutine (to await, or to hand to
    `asyncio.create_task` or `asyncio.ensure_future`; not to `asyncio.run`, see
    `aio.connect`) and an async context manager that closes what it opened at its end. Either
    way one underlying coroutine (`_open`) opens it, made when first used: `async with` leaves
    no coroutine that was never awaited."""

    def __init__(self) -> None:
        self._opened: _Opened | None = None
        self._opening: Coroutine[Any, Any, _Opened] | None = None

    async def _open(self) -> _Opened:
        raise NotImplementedError

    async def _open_and_keep(self) -> _Opened:
        self._opened = await self._open()
        return self._opened

    def _coroutine(self) -> Coroutine[Any, Any, _Opened]:
        if self._opening is None:
            self._opening = self._open_and_keep()
        return self._opening

    def __await__(self) -> Generator[Any, None, _Opened]:
        return self._coroutine().__await__()

    def send(self, value: Any) -> Any:
        return self._coroutine().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        if val is None and tb is None:
            return self._coroutine().throw(typ)
        return self._coroutine().throw(typ, val, tb)  # the older three-argument form

    def close(self) -> None:
        if self._opening is not None:
            self._opening.close()

    async def __aenter__(self) -> _Opened:
        return await self._coroutine()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._opened is not None:
            await self._opened.close()
