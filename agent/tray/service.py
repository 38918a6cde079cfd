"""The one place the tray starts the agent service: in-process, on its own thread and loop.

``start_service(cfg)`` runs ``agent.service.AgentService`` (the same service as
``pushagent run``) until ``handle.stop()``. Until that module exists in this checkout the
tray runs without it and shows what the store holds (state: disconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from typing import Any

from agent.config import AgentConfig
from agent.errors import EdgepushError

log = logging.getLogger("pushagent.tray")


class ServiceHandle:
    """A running service thread. ``stop()`` ends it (bounded) and returns its error, if any."""

    def __init__(self, cfg: AgentConfig) -> None:
        self._cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.available = True
        self._thread = threading.Thread(target=self._main, name="agent-service", daemon=True)

    def start(self) -> ServiceHandle:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the tray, which shows it
            self.error = exc
            log.error("the agent service stopped: %s", exc)
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            module: Any = importlib.import_module("agent.service")
        except ModuleNotFoundError as exc:
            if exc.name != "agent.service":
                raise
            self.available = False
            log.warning("agent.service is not in this build: the tray shows stored messages only")
            self._ready.set()
            await self._stop.wait()
            return
        try:
            async with module.AgentService(self._cfg):
                self._ready.set()
                await self._stop.wait()
        except* EdgepushError as group:
            raise group.exceptions[0] from None

    def stop(self, timeout: float = 10.0) -> BaseException | None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        return self.error


def start_service(cfg: AgentConfig) -> ServiceHandle:
    """Start the agent service for ``cfg`` in the background; ``.stop()`` ends it."""
    return ServiceHandle(cfg).start()
