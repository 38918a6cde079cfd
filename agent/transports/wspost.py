"""What the WebSocket transport sends back by HTTP: receipts and messages published while
offline. Part of ``agent.transports.ws``.

Receipts go to ``POST <server>/v1/receipts`` as a JSON list (an edgepush relay records them
under the caller's token and syncs the synced states to the caller's other devices: there is
nothing else to send for a ``state`` outbox item, which is done at once). The agent's core
must not depend on aiohttp (it is the relay's extra), and websockets has no HTTP client, so
the POST is the stdlib's urllib in a worker thread: one request per batch of receipts, which
is rare enough that a thread per request costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.error
from collections.abc import Callable
from typing import Any

from agent.config import AgentConfig
from agent.errors import AuthError, ConnectionLost, MessageError, RateLimited
from agent.httppublish import DEFAULT_RETRY_AFTER, exchange, retry_after
from agent.ntfy import NtfyServer
from agent.store import OutboxItem
from agent.transports import tls_context

log = logging.getLogger("pushagent.ws")

_RECEIPTS_PER_POST = 500
MAX_RETRY_AFTER = 3600.0
"""The longest a 429's ``Retry-After`` holds POSTs (a server asking for more is capped: the
outbox keeps the items, and an hour later it asks again if it still means it)."""


class Poster:
    """POSTs to one ntfy-compatible server, receipts grouped into one request."""

    def __init__(
        self, server: NtfyServer, cfg: AgentConfig, auth_headers: Callable[[], dict[str, str]]
    ) -> None:
        self.server = server
        self.cfg = cfg
        self._auth_headers = auth_headers
        self._insecure_noted = False  # the stream's connect warned; its POSTs need not
        self._hold_until = 0.0  # loop time before which no POST is sent (a 429's Retry-After)
        self._pending: list[tuple[OutboxItem, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def warn_insecure(self) -> None:
        if self.server.tls and self.cfg.tls.insecure:
            log.warning("%s: TLS certificate checks are OFF (tls.insecure = true)", self.server.url)
            self._insecure_noted = True

    async def publish(self, item: OutboxItem) -> None:
        """Send one outbox item; receipts published together go in one POST /v1/receipts."""
        if item.kind == "state":
            return  # the relay syncs from the receipt (an MQTT state topic's item)
        if item.kind != "receipt":
            await self._post(self.server.http_base + "/", _publish_body(item))
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let publishers in the same loop turn join this request
        while self._pending:
            group = self._pending[:_RECEIPTS_PER_POST]
            del self._pending[:_RECEIPTS_PER_POST]
            body = "[" + ",".join(i.payload for i, _ in group) + "]"
            try:
                await self._post(self.server.receipts_url, body.encode())
            except Exception as exc:  # noqa: BLE001 - handed to every waiting publisher
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in group:
                    if not fut.done():
                        fut.set_result(None)

    async def _post(self, url: str, body: bytes) -> None:
        """POST to the server; after a 429, no request at all until its ``Retry-After`` has
        passed (each outbox retry before then fails at once, the items staying queued)."""
        loop = asyncio.get_running_loop()
        left = self._hold_until - loop.time()
        if left > 0:
            raise ConnectionLost(f"{self.server.url}: rate limited; next POST in {left:.0f} s")
        headers = {"Content-Type": "application/json", **self._auth_headers()}
        ctx = tls_context(self.cfg.tls) if self.server.tls else None
        if not self._insecure_noted:  # a POST before any stream connect: warn once
            self.warn_insecure()
        timeout = self.cfg.ws.connect_timeout
        try:
            await asyncio.to_thread(_http_post, url, body, headers, ctx, timeout, self.server.url)
        except RateLimited as exc:
            wait = DEFAULT_RETRY_AFTER if exc.retry_after is None else exc.retry_after
            self._hold_until = max(self._hold_until, loop.time() + min(wait, MAX_RETRY_AFTER))
            log.info("%s; holding POSTs for %.0f s", exc, wait)
            raise


def _publish_body(item: OutboxItem) -> bytes:
    """An outbox message as ntfy's JSON publish body (``POST /``)."""
    try:
        obj: dict[str, Any] = json.loads(item.payload)
    except ValueError:
        obj = {"message": item.payload}
    if not isinstance(obj, dict):
        obj = {"message": item.payload}
    obj.setdefault("topic", item.destination)
    return json.dumps(obj, ensure_ascii=False).encode()


def _http_post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    ctx: ssl.SSLContext | None,
    timeout: float,
    shown: str,
) -> None:
    """Blocking POST (worker thread); our errors out, never urllib's."""
    try:
        status, answer_headers, raw = exchange(url, "POST", body, headers, ctx, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ConnectionLost(f"{shown}: POST failed: {exc}") from None
    if status < 300:
        return
    if status in (401, 403):
        raise AuthError(
            f"{shown}: POST answered {status}; run: pushagent login {shown} --token-stdin"
        )
    if status in (404, 405, 501):
        # A plain ntfy server has no /v1/receipts: the receipt can never be delivered,
        # and keeping it would grow the outbox forever.
        log.warning("%s: no receipts endpoint (HTTP %d); receipt dropped", shown, status)
        return
    if status == 429:
        wait = retry_after(answer_headers.get("Retry-After"))
        raise RateLimited(f"{shown}: POST answered HTTP 429", retry_after=wait)
    if status >= 500:
        raise ConnectionLost(f"{shown}: POST answered HTTP {status}")
    detail = raw[:300].decode("utf-8", "replace").strip()
    raise MessageError(f"{shown}: POST refused (HTTP {status}): {detail}")
