"""Ending asyncio tasks without swallowing our own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def reap(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait for them to end, ignoring their errors.

    ``with suppress(CancelledError): await task`` is a trap: if the caller itself is cancelled
    while it waits, that CancelledError is swallowed too and the caller runs on forever. Here
    the caller's own cancellation (``current_task().cancelling()``) is re-raised.
    """
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise
        except Exception:  # noqa: BLE001, S110 - the task's own failure is not ours to report
            pass
