"""Before a re-alert, ask the relay whether anyone acknowledged (``GET /v1/messages/<id>/ack``).

State sync (agent.statesync) tells the user's own devices — the same token — at once. A
message on a shared topic (an on-call team, a family's smoke alarm) is also read with other
tokens, whose acknowledgements sync does not carry; and a state can be missed (a stream cut
just then). So each re-alert of a message from an edgepush relay first asks the relay, which
answers whoever may read the topic: one small GET per re-alert, never while idle. An answer
"acknowledged" is recorded here (no receipt: it is someone else's), which ends the schedule;
any failure (not reachable, a plain ntfy server's 404, a slow answer) lets the re-alert go
ahead — a device that cannot find out must still insist. MQTT servers have no such endpoint:
their state topics are the only way there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
from collections.abc import Callable

from agent.config import AgentConfig
from agent.errors import EdgepushError
from agent.httppublish import exchange
from agent.ntfy import parse_server

log = logging.getLogger("pushagent.realert")

TIMEOUT = 5.0
_HTTP = frozenset({"http", "https", "ws", "wss"})


class AckProbe:
    """``await probe(message_id)``: True when the connected relay says it is acknowledged."""

    def __init__(self, cfg: AgentConfig, server: Callable[[], str | None]) -> None:
        self._cfg = cfg
        self._server = server

    async def __call__(self, message_id: str) -> bool:
        url = self._server()
        if url is None or urllib.parse.urlsplit(url).scheme.lower() not in _HTTP:
            return False
        try:
            return await asyncio.to_thread(self._ask, url, message_id)
        except (EdgepushError, OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
            log.debug("could not ask %s about %s: %s", url, message_id, exc)
            return False

    def _ask(self, url: str, message_id: str) -> bool:
        from agent import secrets
        from agent.transports import tls_context

        server = parse_server(url)
        token = secrets.token_for(self._cfg, url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ctx = tls_context(self._cfg.tls) if server.tls else None
        status, _, body = exchange(
            f"{server.http_base}/v1/messages/{message_id}/ack", "GET", None, headers, ctx, TIMEOUT
        )
        if status != 200:
            return False
        answer = json.loads(body)
        return isinstance(answer, dict) and answer.get("acknowledged") is True
