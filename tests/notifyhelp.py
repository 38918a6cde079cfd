"""Helpers for notifier tests: a store with messages and an ``on_event`` that records like
the service does (state + receipt queued in the outbox)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.envelope import Message, new_id
from agent.store import Store, Stored

T = TypeVar("T")
RECEIPTS = "edgepush/receipts/test-device"


def msg(topic: str = "home", message: str = "hello", **kw: Any) -> Message:
    return Message(id=new_id(), time=int(time.time()), topic=topic, message=message, **kw)


class Recorder:
    """The service's side of the seam: record each event in the store and queue a receipt."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[tuple[str, str]] = []

    def __call__(self, message_id: str, state: str) -> None:
        self.events.append((message_id, state))
        self.store.record_states(
            [(message_id, state, time.time())], receipt_destination=RECEIPTS, device="test"
        )

    def states(self, state: str) -> list[str]:
        return [m for m, s in self.events if s == state]


def open_store(tmp: Path) -> Store:
    return Store(tmp / "agent.db").open()


def stored(store: Store, *messages: Message) -> list[Stored]:
    return store.insert_batch(list(messages), source="test")


async def until(condition: Callable[[], T], *, timeout: float = 20.0, what: str = "") -> T:
    """``wait_for`` for code on the event loop: polls while letting the loop run callbacks."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.02)
