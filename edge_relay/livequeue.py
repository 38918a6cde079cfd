"""A subscriber's bounded queue of live messages: what ``asyncio.Queue`` did here, smaller.

Every open subscription holds one, so its size is paid per idle connection: an empty
``asyncio.Queue`` is ~3 KiB (three deques and an ``asyncio.Event`` with a fourth, 760 bytes
each, measured with tracemalloc), about an eighth of what an idle WebSocket subscriber cost
the relay in all. This one is a 56-byte object with no deque until something is queued, and
none again once it is drained: a caught-up WebSocket subscriber is written to directly by
fan-out and never queues anything, and an SSE/JSON one queues only while a message is in
flight. Only what the hub needs: one consumer (the stream's task), ``put_nowait`` never
waits (``asyncio.QueueFull`` at ``maxsize``), ``get`` waits for an item.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LiveQueue(Generic[T]):
    """A bounded FIFO for one consumer task; producers never wait."""

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def put_nowait(self, item: T) -> None:
        """Queue ``item``; ``asyncio.QueueFull`` when ``maxsize`` items wait already."""
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._maxsize:
            raise asyncio.QueueFull
        items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> T:
        """The oldest item; ``asyncio.QueueEmpty`` when there is none."""
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None  # an idle subscriber keeps no deque block (~600 bytes)
        return item

    async def get(self) -> T:
        """The oldest item, waiting for one (cancel it, e.g. with ``asyncio.timeout``)."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("LiveQueue.get: only one consumer may wait")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()
