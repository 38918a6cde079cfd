"""Template renders for the publish path (``X-Template``): one worker thread, fair per client.

A render is Python bounded by ``tplvalues.MAX_TIME`` (0.2 s) and the steps, but it holds the
interpreter while it runs, so it never runs on the event loop: it runs in this module's one
thread, one render at a time, never in the pool the store's calls share. A handler cancelled
while its render runs (its client gone: ``handler_cancellation``) leaves the render to finish
in that thread, and the next one waits for it there; one cancelled before its turn is dropped.

Fair: each client (``core.rate_key``: its token, else its address or IPv6 /64, as the publish
rate limit counts) has at most one render queued or running; its next publish waits behind
its own, not in everyone's queue. So a client that sends many slow templates at once delays
another client's templated publish by one render (0.2 s at most), not by all of its own
(twenty of them were 4 s).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Renders:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="template")
        self._clients: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, client: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the render thread, after ``client``'s earlier renders."""
        lock, users = self._clients.get(client, (asyncio.Lock(), 0))
        self._clients[client] = (lock, users + 1)
        try:
            async with lock:
                call = functools.partial(contextvars.copy_context().run, fn, *args)
                return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        finally:
            lock, users = self._clients[client]
            if users == 1:
                del self._clients[client]
            else:
                self._clients[client] = (lock, users - 1)

    def close(self) -> None:
        """Drop the renders not begun; the one running ends within its time bound."""
        self._thread.shutdown(wait=False, cancel_futures=True)
