"""The agent's side of synced read state: what the user's other devices did, taken off this
screen (agent.states has the order; agent.store.syncstate the storage).

Theory of operation
-------------------
Outgoing: a click, dismiss or ``pushagent read`` here is a receipt (an edgepush relay syncs
the owner's other devices from it) and, for MQTT servers, also a ``state`` outbox item for
``<state_topic_prefix>/<topic>`` (``state_prefix``), both queued by ``Store.record_states``
in the same transaction as the state itself.

Incoming: the transports put synced states in their batches (``Batch.states``: a relay's
``message_state`` events, an MQTT state topic's messages). The service applies them with
``Store.apply_remote_states`` in its commit thread (forward only, never queued back
upstream: no ping-pong) and hands what moved to ``ScreenSync``, which closes those
notifications on screen (``close`` of the notifier, D-Bus ``CloseNotification`` on the
desktop) from its own task, under the service's hand-off lock, so a close never runs in the
middle of a ``show``. A message still waiting for its hand-off when its state arrives is
skipped by the hand-off instead (``handled``): it is never shown at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence

from agent.config import AgentConfig
from agent.notify import Notifier
from agent.ntfy import server_kind
from agent.states import SYNCED
from agent.store import Stored

log = logging.getLogger("pushagent.service")
_REMEMBER = 10_000
"""Ids handled elsewhere remembered for the hand-off (oldest forgotten first)."""


def state_prefix(cfg: AgentConfig) -> str | None:
    """The MQTT state topic prefix when a configured server may be MQTT, else None (the
    relay syncs from receipts: no ``state`` outbox items needed)."""
    if all(server_kind(u) == "ntfy" for u in cfg.servers):
        return None
    return cfg.state_topic_prefix


class ScreenSync:
    """Closes on screen what another device handled; remembers it for the hand-off."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._todo: deque[Stored] = deque()
        self._wake = asyncio.Event()
        self._handled: OrderedDict[str, None] = OrderedDict()
        self.closed = 0
        """Notifications asked to close so far (status and tests)."""

    def handled(self, item: Stored) -> bool:
        """True for a message another device handled: the hand-off does not show it."""
        return item.state in SYNCED or item.message.id in self._handled

    def note(self, items: Sequence[Stored]) -> None:
        """``items`` moved to a synced state elsewhere: close them (from ``run``)."""
        for item in items:
            self._handled[item.message.id] = None
            self._handled.move_to_end(item.message.id)
        while len(self._handled) > _REMEMBER:
            self._handled.popitem(last=False)
        self._todo.extend(items)
        self._wake.set()

    async def run(self, notifier: Notifier) -> None:
        close = getattr(notifier, "close", None)
        while True:
            await self._wake.wait()
            self._wake.clear()
            items = list(self._todo)
            self._todo.clear()
            if close is None or not items:
                continue
            async with self._lock:
                try:
                    await close(items)
                except Exception:  # one failed close must not end the later ones
                    log.exception("could not close %d notifications", len(items))
                else:
                    self.closed += len(items)
