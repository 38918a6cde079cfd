"""Notifier backends: where a new message goes after it is stored.

A backend is an async context manager with ``show(items)``: it takes a batch of newly stored
messages (oldest first) and returns once it has accepted them. The service advances the
store's ``notified_seq`` mark right after ``show`` returns. A backend that learns what the
user did (shown, clicked, dismissed) reports it through the ``on_event(message_id, state)``
callback it was built with; the service records it and queues the receipt.

``make_notifier`` picks the backend by name and imports only what that backend needs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self

from agent.config import AgentConfig
from agent.envelope import dumps, encode
from agent.store import Store, Stored

EventSink = Callable[[str, str], None]
"""``on_event(message_id, state)`` with state displayed, clicked or dismissed."""


class Notifier(Protocol):
    name: str
    hand_off_size: int
    """How many messages one ``show`` should get at most (0: any number). The service marks
    the store after each ``show``, so a crash repeats at most one such slice."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def show(self, items: Sequence[Stored]) -> None: ...


class _Base:
    name = "base"
    hand_off_size = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class NullNotifier(_Base):
    """``--notifier none``: store only (benchmarks, pure relays of messages)."""

    name = "none"

    async def show(self, items: Sequence[Stored]) -> None:
        return None


class LogNotifier(_Base):
    """``--notifier log``: one JSON line per message on stdout, as in ``history --json``.

    Slices of ``hand_off_size`` lines are encoded first and written with ONE ``os.write``, and
    the service marks the store after each slice. A SIGKILL therefore lands either before the
    write, or after it but before the mark (a few microseconds: that slice shows again on
    restart), and never between the lines of a slice: with one write per 32 KiB of a
    1,000-line batch, a kill between two writes printed part of the batch and the restart
    printed all of it again (1 run in ~10 of the 5-kill delivery test).
    """

    name = "log"
    hand_off_size = 64  # ~10 KiB a write: a few pages, copied by the kernel in one go

    def __init__(self, fd: int | None = None, on_event: EventSink | None = None) -> None:
        self._fd = sys.stdout.fileno() if fd is None else fd
        self._on_event = on_event

    async def show(self, items: Sequence[Stored]) -> None:
        data = "".join(
            dumps({**encode(item.message), "state": item.state}) + "\n" for item in items
        ).encode()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        # Written out is this backend's "on screen": the store then says displayed, not
        # received for ever (the service records the slice's events in one transaction).
        # Reported in ONE callback that runs after the service's hand-off mark: 64 calls
        # here sat between the write and the mark (~100 us), the window in which a SIGKILL
        # prints the slice again (test_mqtt_delivery's 5 kills: 2 runs of 12 printed one
        # twice). An event lost to that kill was lost anyway: events live in memory until
        # their transaction.
        if self._on_event is not None:
            asyncio.get_running_loop().call_soon(self._displayed, items)

    def _displayed(self, items: Sequence[Stored]) -> None:
        assert self._on_event is not None
        for item in items:
            if not item.message.extra.get("realert"):  # a re-alert was displayed before
                self._on_event(item.message.id, "displayed")


def make_backend(cfg: AgentConfig, on_event: EventSink) -> Notifier:
    """The bare backend named by ``cfg.notifier`` (desktop, command, log, none), no rules."""
    name = cfg.notifier
    if name == "log":
        return LogNotifier(on_event=on_event)
    if name == "none":
        return NullNotifier()
    if name == "command":
        from agent.notify.command import CommandNotifier

        return CommandNotifier(cfg.command, on_event)
    if name == "desktop":
        from agent.notify.desktop import DesktopNotifier

        return DesktopNotifier(cfg.desktop, on_event, cache_dir=cfg.paths.cache_dir)
    raise NotImplementedError(f"notifier {name!r} is not built yet")  # config checked the name


def make_notifier(cfg: AgentConfig, on_event: EventSink, store: Store | None = None) -> Notifier:
    """The backend named by ``cfg.notifier``; ``desktop`` and ``command`` behind the rules
    layer (``agent.notify.gate``), which reads the pause from ``store``.

    ``log`` and ``none`` get no rules: ``log`` is the stream of every message handed over
    (scripts and the delivery tests count on exactly that). The desktop also gets a storm
    guard when no ``burst`` is configured; ``command`` folds bursts only when asked.
    """
    backend = make_backend(cfg, on_event)
    if cfg.notifier in ("log", "none"):
        return backend
    from agent.notify.gate import RulesNotifier, policy_from

    policy = policy_from(cfg, storm_guard=cfg.notifier == "desktop")
    return RulesNotifier(backend, policy, store)
