"""``--notifier command``: run the user's command once per message.

The envelope goes in environment variables (``PUSHAGENT_ID``, ``_TOPIC``, ``_TITLE``,
``_MESSAGE``, ``_PRIORITY``, ``_TAGS``, ``_CLICK``, ``_EVENT``, ``_SEQUENCE_ID``) and as
JSON on stdin. ``PUSHAGENT_EVENT`` is ``message``, ``message_clear`` or ``message_delete``
(ntfy 2.16: the notification of sequence ``PUSHAGENT_SEQUENCE_ID`` was cleared or deleted;
a ``message`` whose sequence id was seen before is an update). The sequence id is the
message's ``sequence_id``, else its own id. ``show`` only
queues; a fixed pool of workers runs the commands, each with a timeout after which it is
killed, so one slow command holds one worker and never the next message. No shell unless
``command.shell = true`` (then the argv is joined and given to ``/bin/sh -c``).
A command that exits 0 counts as ``displayed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from agent.config import CommandConfig
from agent.envelope import Message, dumps, encode
from agent.errors import ConfigError
from agent.notify import EventSink
from agent.store import Stored
from agent.store.sequences import event_of, sequence_key
from agent.tasks import reap

log = logging.getLogger("pushagent.notify.command")
QUEUE_MAX = 10_000


def message_env(msg: Message) -> dict[str, str]:
    """The ``PUSHAGENT_*`` variables for one message (NUL bytes cannot go in the environment)."""
    values = {
        "PUSHAGENT_ID": msg.id,
        "PUSHAGENT_TOPIC": msg.topic,
        "PUSHAGENT_TITLE": msg.title or "",
        "PUSHAGENT_MESSAGE": msg.message,
        "PUSHAGENT_PRIORITY": str(msg.priority),
        "PUSHAGENT_TAGS": ",".join(msg.tags),
        "PUSHAGENT_CLICK": msg.click or "",
        "PUSHAGENT_EVENT": event_of(msg),
        "PUSHAGENT_SEQUENCE_ID": sequence_key(msg),
    }
    return {k: v.replace("\0", "") for k, v in values.items()}


class CommandNotifier:
    """A bounded pool of workers running ``cfg.argv`` per message."""

    name = "command"
    hand_off_size = 0  # the whole batch: the service marks after it

    def __init__(self, cfg: CommandConfig, on_event: EventSink) -> None:
        if not cfg.argv:
            raise ConfigError("'command.argv' must name the command to run for --notifier command")
        self._cfg = cfg
        self._on_event = on_event
        self._queue: asyncio.Queue[Stored] | None = None
        self._workers: list[asyncio.Task[None]] = []
        # The child inherits the agent's environment plus the message's variables; this is
        # passing the environment on, not reading configuration from it.
        self._base_env = dict(os.environ)

    async def __aenter__(self) -> Self:
        self._queue = asyncio.Queue(QUEUE_MAX)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self._cfg.workers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await reap(*self._workers)  # not suppress(CancelledError): see agent.tasks

    async def show(self, items: Sequence[Stored]) -> None:
        """Queue one command run per item (waits only if ``QUEUE_MAX`` runs are waiting)."""
        assert self._queue is not None, "use CommandNotifier as an async context manager"
        for item in items:
            await self._queue.put(item)

    def _argv(self) -> list[str]:
        if self._cfg.shell:
            return ["/bin/sh", "-c", " ".join(self._cfg.argv)]
        return list(self._cfg.argv)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                ok = await self._run(item)
            except Exception:  # one bad run must not stop the worker
                log.exception("command for message %s failed", item.message.id)
                ok = False
            finally:
                self._queue.task_done()
            if ok and item.seq != 0:
                self._on_event(item.message.id, "displayed")

    async def _run(self, item: Stored) -> bool:
        msg = item.message
        env = {**self._base_env, **message_env(msg)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            log.warning("cannot run %s: %s", shlex.join(self._cfg.argv[:1]), exc.strerror)
            return False
        data = (dumps(encode(msg)) + "\n").encode()
        try:
            await asyncio.wait_for(self._feed_and_wait(proc, data), self._cfg.timeout)
        except TimeoutError:
            await self._kill(proc)
            log.warning("command for message %s killed after %.1f s", msg.id, self._cfg.timeout)
            return False
        except asyncio.CancelledError:  # the agent is stopping: leave no orphan behind
            await self._kill(proc)
            raise
        if proc.returncode != 0:
            log.warning("command for message %s exited with %s", msg.id, proc.returncode)
        return proc.returncode == 0

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())

    @staticmethod
    async def _feed_and_wait(proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()
        await proc.wait()
