"""The queue a stream reads its requests and wake-ups from.

One consumer (the stream's loop), producers that never wait (the request reader and the
snapshot watcher), no bound: what ``asyncio.Queue`` does here, without its four deques and
its event (about 3 KB per stream, most of it for nothing while the stream idles; a fleet of
10,000 idle proxies would pay 30 MB for them).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Inbox(Generic[_T]):
    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[_T] = []
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: _T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def put(self, item: _T) -> None:
        """``put_nowait``, for producers written against ``asyncio.Queue``."""
        self.put_nowait(item)

    async def get(self) -> _T:
        """The oldest item, waiting for one if there is none."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)
