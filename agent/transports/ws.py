"""WebSocket transport to a relay or any ntfy-compatible server: the only websockets importer.

Theory of operation
-------------------
One WebSocket carries every topic: ``<server>/<t1>,<t2>/ws?since=<cursor>``. The cursor is
the last message id this source delivered for this subscription; the service stores it with
the messages in ONE transaction (``Batch.cursor``), so after a SIGKILL the messages and the
position are both there or both absent, and the reconnect asks for exactly what is missing.
Before the first message of a new subscription there is no id yet: the agent then remembers
when it first subscribed (store meta) and asks ``since=<that unix time>``, so messages sent
while it was down before its first delivery are not lost either. A server that replays more
than needed (an unknown id means "all" to ntfy) costs bandwidth, never a duplicate: the
store's UNIQUE id absorbs it.

Three tasks per connection, owned together (``agent.tasks.supervise``): the *reader* receives
frames, parses them (``agent.ntfy``) and puts messages on a bounded queue; the *committer*
takes everything queued (up to ``ws.max_batch``) and awaits the sink once for the lot (group
commit), retrying on StoreBusy; the *watchdog* (below). While a commit runs, the reader keeps
reading, so a burst commits in a few large transactions. When the reader hits the end of the
connection (closed, dead, garbage) it queues the reason behind the messages it already read;
the committer commits those first and then ends the connection. A task that fails (a bug, or
something no test foresaw) ends the session at once with the failure logged at ERROR and a
reconnect from the committed cursor, never a reader dead unseen while the committer waits.

A message frame the envelope refuses (``rejected`` event: ``1e400``, a bad priority) is kept
raw in the batch's ``rejected`` list and stored with it; when the frame had a usable id the
cursor moves past it, so a reconnect does not fetch it again.

Dead links: the server sends ``keepalive`` when idle; no frame at all for 1.5x ``ws.keepalive``
means the link is suspect, and one WebSocket ping decides: no pong within a third of that
time is a dead link (close, reconnect); a pong means a server whose keepalive interval is
longer than ours, which must not be cut every minute. The library's periodic pings are off,
so there is one definition of dead.

Synced states (an edgepush relay's ``message_state`` events: the user's other devices
clicked, dismissed or read a message) are queued by the reader like messages and go into the
same batch (``Batch.states``), so a burst of them commits in a few transactions too; they
never move the cursor (a resume with ``since=`` replays the states changed after it).

Receipts go to ``POST <server>/v1/receipts`` (agent.transports.wspost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from agent.backoff import backoff
from agent.config import AgentConfig
from agent.envelope import Message
from agent.errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    InvalidState,
    TransportError,
)
from agent.ntfy import check_topics, dead_after, parse_frame, parse_server, subscription, ws_url
from agent.states import StateEvent
from agent.store import OutboxItem, Rejected, Store
from agent.tasks import supervise
from agent.transports import Batch, BatchSink, ConnState, RejectLog, commit, tls_context
from agent.transports.refusal import must_stop, stopped, ws_refusal
from agent.transports.wspost import Poster

log = logging.getLogger("pushagent.ws")

BACKOFF_CAP = 60.0
STABLE_AFTER = 10.0
"""A connection that lived this long resets the backoff; a server that accepts and then sends
garbage at once keeps backing off instead of being hammered."""


_Item = Message | tuple[Rejected, str | None] | StateEvent | TransportError
"""Queued by the reader: a message, a refused frame with its id (if usable), a synced state,
or the end."""


def make_transport(url: str, cfg: AgentConfig, client_id: str) -> WsTransport:
    """The service's factory for ``http(s)://`` and ``ws(s)://`` servers."""
    from agent import secrets

    return WsTransport(
        url,
        cfg,
        topics=cfg.topics,
        token_source=lambda: secrets.token_for(cfg, url),
        open_store=True,
    )


class WsTransport:
    """A resident ntfy WebSocket subscription delivering batches to a sink."""

    def __init__(
        self,
        url: str,
        cfg: AgentConfig,
        *,
        topics: tuple[str, ...],
        store: Store | None = None,
        token: str | None = None,
        token_source: Callable[[], str | None] | None = None,
        fatal_auth: bool = False,
        open_store: bool = False,
    ) -> None:
        """``token_source`` is asked before every connect (a token stored with ``pushagent
        login`` while the agent runs is used at the next retry); ``token`` is a fixed one."""
        self.server = parse_server(url)
        self.url = self.server.url
        self.source = self.server.http_base
        self.cfg = cfg
        self.topics = check_topics(topics)
        self.subscription = subscription(self.topics)
        self.fatal_auth = fatal_auth
        self.state: ConnState = "offline"
        self.on_state: Callable[[ConnState], None] | None = None
        self.connected_since: float | None = None
        self.keep_retrying = False
        """Set once connected in this run (or by an owner that must not end: failover, the
        relay's bridge): a refusal then retries at the cap (``agent.transports.refusal``)."""
        self.last_error: str | None = None
        self.retry_in: float | None = None
        self._store = store
        self._open_store = open_store
        self._token = token
        self._token_source = token_source
        self._quiet_noted = False
        self._last_frame = 0.0
        self._dead: ConnectionLost | None = None
        self._rejects = RejectLog(log)
        self._poster = Poster(self.server, cfg, self._auth_headers)

    def _set_state(self, state: ConnState) -> None:
        if state != self.state:
            self.state = state
            self.connected_since = time.time() if state == "connected" else None
            if state == "connected":
                self.keep_retrying, self.retry_in = True, None
            if self.on_state is not None:
                self.on_state(state)

    # --- the resident loop ------------------------------------------------------------------

    async def run(self, sink: BatchSink) -> None:
        """Subscribe, deliver batches to ``sink``, reconnect with backoff, until cancelled."""
        own_store = self._store is None and self._open_store
        if own_store:
            # The cursor is only read here (and written by the service with the messages):
            # a second connection to the WAL database never blocks the service's writes.
            self._store = await asyncio.to_thread(Store(self.cfg.paths.db).open)
        try:
            await self._run(sink)
        finally:
            if own_store and self._store is not None:
                self._store.close()
                self._store = None

    async def _run(self, sink: BatchSink) -> None:
        delays = backoff(cap=BACKOFF_CAP)
        try:
            while True:
                self._set_state("connecting")
                started = time.monotonic()
                crashed = False
                try:
                    await self._session(sink)
                    why = "server closed the connection"
                except InvalidState as exc:
                    crashed = True
                    why = str(exc)
                    log.error("%s: session failed: %s", self.url, exc, exc_info=exc)
                except (AuthError, ConfigError) as exc:
                    if must_stop(exc, fatal=self.fatal_auth, keep_retrying=self.keep_retrying):
                        raise stopped(self.url, exc) from None
                    self.last_error, self.retry_in = str(exc), BACKOFF_CAP
                    log.error("%s: %s; retrying in %.0f s", self.url, exc, BACKOFF_CAP)
                    self._set_state("connecting")
                    await asyncio.sleep(BACKOFF_CAP)
                    continue
                except TransportError as exc:
                    why = str(exc)
                stable = time.monotonic() - started > STABLE_AFTER
                if self.state == "connected" and stable and not crashed:
                    delays = backoff(cap=BACKOFF_CAP)  # it worked for a while: start over
                delay = next(delays)
                self.last_error, self.retry_in = why, delay
                self._set_state("connecting")
                log.warning("%s: %s; reconnecting in %.1f s", self.url, why, delay)
                await asyncio.sleep(delay)
        finally:
            self._set_state("offline")

    async def _session(self, sink: BatchSink) -> None:
        """One connection: handshake, wait for ``open``, then pump until it ends."""
        url = ws_url(self.server, self.topics, await self._since())
        if self._token_source is not None:
            self._token = await asyncio.to_thread(self._token_source)
        ws_cfg = self.cfg.ws
        try:
            async with connect(
                url,
                additional_headers=self._auth_headers(),
                open_timeout=ws_cfg.connect_timeout,
                ping_interval=None,  # dead links are found by the keepalive deadline
                close_timeout=2,
                max_size=ws_cfg.max_frame,
                max_queue=64,
                proxy=None,
                # permessage-deflate with the library's settings (its client offers a
                # 32 KiB window and compresses with memLevel 5); None when turned off
                compression="deflate" if ws_cfg.compress else None,
                ssl=tls_context(self.cfg.tls) if self.server.tls else None,
                user_agent_header="pushagent",
            ) as ws:
                self._warn_insecure()  # on every connect, as MQTT does
                await self._await_open(ws)
                log.info("%s: subscribed to %s (%s)", self.url, self.subscription, _since(url))
                self._set_state("connected")
                await self._pump(ws, sink)
        except InvalidStatus as exc:
            code, body = exc.response.status_code, bytes(exc.response.body)
            token = bool(self._token)
            raise ws_refusal(code, body, login=self.source, had_token=token) from None
        except ConnectionClosed as exc:
            raise ConnectionLost(_closed_reason(exc, ws_cfg.max_frame)) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectionLost(_oserror(exc, self.server.host, self.server.port)) from None

    async def _since(self) -> str | None:
        store = self._store
        if store is None:
            return None
        cursor = await asyncio.to_thread(store.get_cursor, self.source, self.subscription)
        if cursor is None:  # the topic list changed: resume from the source's last position
            cursor = await asyncio.to_thread(store.latest_cursor, self.source)
        if cursor is not None:
            return cursor
        key = f"ws.first_subscribed:{self.source}|{self.subscription}"
        return await asyncio.to_thread(store.meta_default, key, lambda: str(int(time.time())))

    async def _await_open(self, ws: ClientConnection) -> None:
        limit = self.cfg.ws.connect_timeout
        try:
            async with asyncio.timeout(limit):
                frame = await ws.recv()
        except TimeoutError:
            raise ConnectionLost(f"no 'open' event within {limit:.0f} s of connecting") from None
        event = parse_frame(frame, max_size=self.cfg.ws.max_frame)
        if event.kind != "open":
            raise ConnectionLost(f"expected an 'open' event first, got {event.kind!r}")

    async def _pump(self, ws: ClientConnection, sink: BatchSink) -> None:
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=2 * self.cfg.ws.max_batch)
        self._last_frame = asyncio.get_running_loop().time()
        self._dead = None
        await supervise(
            self._commit(queue, sink), reader=self._read(ws, queue), watchdog=self._watch_link(ws)
        )

    async def _read(self, ws: ClientConnection, queue: asyncio.Queue[_Item]) -> None:
        """Frames → queue; the last item queued is always the reason the stream ended."""
        loop = asyncio.get_running_loop()
        max_size = self.cfg.ws.max_frame
        try:
            while True:
                frame = await ws.recv()
                self._last_frame = loop.time()
                event = parse_frame(frame, max_size=max_size)
                if event.kind == "message" and event.message is not None:
                    try:  # the common case, without a coroutine (or a full() check) per frame
                        queue.put_nowait(event.message)
                    except asyncio.QueueFull:  # the committer is behind: wait for room
                        await queue.put(event.message)
                elif event.kind == "rejected":
                    item = Rejected.of(self.source, None, event.reason or "", frame, time.time())
                    self._rejects.note(self.url, item)
                    await queue.put((item, event.id))
                elif event.kind == "state" and event.state is not None:
                    await queue.put(event.state)
                elif event.kind == "poll_request":
                    # "Fetch now" (ntfy's iOS wake-up): this stream is live and in order, so
                    # whatever the poll would fetch has already come down it. Reconnecting
                    # would add nothing but a reconnect per X-Poll-ID publish (a churn any
                    # publisher could cause), so it is only noted.
                    log.debug("%s: poll_request ignored: the stream is live", self.url)
        except ConnectionClosed as exc:
            await queue.put(self._dead or ConnectionLost(_closed_reason(exc, max_size)))
        except TransportError as exc:
            await queue.put(exc)

    async def _watch_link(self, ws: ClientConnection) -> None:
        """The keepalive deadline, with one timer per deadline rather than one per frame
        (a timeout around every ``recv`` cost ~15 us per message, measured with cProfile)."""
        loop = asyncio.get_running_loop()
        dead = dead_after(self.cfg.ws.keepalive)
        while True:
            idle = loop.time() - self._last_frame
            if idle < dead:
                await asyncio.sleep(dead - idle)
                continue
            try:
                await self._still_there(ws, dead)
            except ConnectionLost as exc:
                self._dead = exc
                ws.transport.abort()  # the reader's recv() ends and queues this reason
                return
            self._last_frame = loop.time()  # alive: a new deadline starts now

    async def _still_there(self, ws: ClientConnection, dead: float) -> None:
        """Silence past the deadline: a dead link, or a server with a longer keepalive.

        One WebSocket ping tells them apart (ntfy and the relay answer pings): no pong within
        a third of the deadline is a dead link; a pong means the server is alive but its
        keepalive interval is longer than ``ws.keepalive``, which is worth saying once.
        """
        wait = max(1.0, dead / 3)
        try:
            async with asyncio.timeout(wait):
                await (await ws.ping())
        except TimeoutError:
            raise ConnectionLost(
                f"no keepalive for {dead:.0f} s and no answer to a ping: dead link"
            ) from None
        if not self._quiet_noted:
            self._quiet_noted = True
            log.info(
                "%s: quiet for %.0f s but answers pings; its keepalive interval is longer "
                "than ws.keepalive (%.0f s)", self.url, dead, self.cfg.ws.keepalive,
            )  # fmt: skip

    async def _commit(self, queue: asyncio.Queue[_Item], sink: BatchSink) -> None:
        limit = self.cfg.ws.max_batch
        while True:
            items = [await queue.get()]
            while len(items) < limit and not queue.empty():
                items.append(queue.get_nowait())
            batch = Batch(source=self.source, cursor=(self.source, self.subscription))
            end: TransportError | None = None
            for item in items:
                if isinstance(item, Message):
                    batch.messages.append(item)
                    batch.last_id = None  # the last message's id is the position
                elif isinstance(item, tuple):
                    batch.rejected.append(item[0])
                    batch.last_id = item[1] or batch.last_id or _last_id(batch)
                elif isinstance(item, StateEvent):
                    batch.states.append(item)
                else:
                    end = item
            if batch.messages or batch.rejected or batch.states:
                await commit(batch, sink)
            if end is not None:
                raise end

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, item: OutboxItem) -> None:
        """Send one outbox item (agent.transports.wspost): receipts published together go in
        one POST /v1/receipts; a ``state`` item is done at once (the relay syncs the user's
        devices from the receipt itself)."""
        if self.state != "connected":
            raise ConnectionLost(f"{self.url}: not connected")
        await self._poster.publish(item)

    async def publish_many(self, items: list[OutboxItem]) -> None:
        """Send several outbox items, receipts in one request (what the outbox drain uses)."""
        await asyncio.gather(*(self.publish(i) for i in items))

    # --- helpers ------------------------------------------------------------------------------

    def _warn_insecure(self) -> None:
        self._poster.warn_insecure()

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}


def _last_id(batch: Batch) -> str | None:
    return batch.messages[-1].id if batch.messages else None


def _closed_reason(exc: ConnectionClosed, max_frame: int) -> str:
    sent, rcvd = exc.sent, exc.rcvd
    if sent is not None and sent.code == 1009:
        return f"server sent a frame larger than ws.max_frame ({max_frame} bytes)"
    if rcvd is not None:
        why = f": {rcvd.reason}" if rcvd.reason else ""
        return f"server closed the connection (code {rcvd.code}{why})"
    return "connection dropped without a close frame (mid-frame or network loss)"


def _oserror(exc: BaseException, host: str, port: int) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} in time"
    if isinstance(exc, OSError):
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    return f"WebSocket handshake with {host}:{port} failed: {exc}"


def _since(url: str) -> str:
    return url.rsplit("?", 1)[1] if "?" in url else "no since"
