"""Owning asyncio tasks: ending them without swallowing our own cancellation, and running a
connection's tasks as one unit whose first failure is never silent."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from agent.errors import EdgepushError, InvalidState

T = TypeVar("T")


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


async def supervise(main: Coroutine[Any, Any, T], **helpers: Coroutine[Any, Any, Any]) -> T:
    """Run ``main`` and its helper tasks as one unit (a connection's committer, reader and
    watchdog): the first failure of any of them ends all of them and is raised here.

    A TaskGroup would do, but it wraps every failure (the body's own included) in an
    ExceptionGroup; a transport wants the reason itself. So: our own errors (``EdgepushError``:
    a lost link, an auth refusal) come out as they are; anything else is a bug in that task
    and comes out as ``InvalidState`` naming the task, chained to the original. Returns
    ``main``'s result when it returns; a helper returning is fine (its work is done); a helper
    cancelled by someone else counts as a failure, never as silence.
    """
    tasks = {asyncio.create_task(main, name="committer"): "committer"}
    for name, coro in helpers.items():
        tasks[asyncio.create_task(coro, name=name)] = name
    first = next(iter(tasks))
    pending = set(tasks)
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task, name in tasks.items():
                if task not in done:
                    continue
                if task.cancelled():
                    raise InvalidState(f"the {name} task was cancelled from outside")
                exc = task.exception()
                if isinstance(exc, EdgepushError):
                    raise exc
                if exc is not None:
                    raise InvalidState(
                        f"the {name} task failed: {type(exc).__name__}: {exc}"
                    ) from exc
            if first in done:
                return first.result()
    finally:
        await reap(*tasks)
