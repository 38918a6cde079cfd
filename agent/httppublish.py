"""Publishing to a relay or any ntfy server over HTTP(S), with the standard library only (the
agent core must not need aiohttp): ``pushagent send --server http(s)://...``.

The request is built by pure functions (``publish_request``, ``clear_request``,
``delete_request``) in ntfy's own terms: the body is the message, options are headers
(``Title``, ``Priority``, ``Tags``, ``Click``, ``Markdown``, ``Delay``), a sequence id is the
path ``/<topic>/<sequence_id>`` (ntfy 2.16), clear is ``PUT /<topic>/<sid>/clear`` and delete
``DELETE /<topic>/<sid>``. ``--attach FILE`` is ntfy's upload (``ntfy publish --file``): the
body is the file, ``Filename`` names it and the message text moves to the ``Message`` header;
``--attach URL`` is ntfy's ``Attach`` header (the server never fetches it). A header value
that is not ASCII goes as one RFC 2047 encoded word, which ntfy's server (and the relay)
decode, so a title like "Grüße" arrives intact.

``send`` does the I/O: one request, with ntfy's JSON error turned into one line naming its
code. A 429 is retried after its ``Retry-After`` (ntfy sends none: then 5 s, its replenish
interval), at most ``max_tries`` requests and ``budget`` seconds of waiting in all; a wait
that would go beyond the budget is not started.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from agent.errors import AuthError, ConnectionLost, UsageError

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 5.0  # ntfy's visitor-request-limit-replenish: one request per 5 s


@dataclass(frozen=True)
class HttpRequest:
    """One request to an ntfy server, relative to its base URL."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def header_text(value: str) -> str:
    """``value`` as an HTTP header can carry it: ASCII as it is, anything else as one RFC 2047
    encoded word (``=?utf-8?b?...?=``). Newlines are never sent raw (header injection)."""
    if value.isascii() and value.isprintable():
        return value
    return "=?utf-8?b?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def _segment(text: str, what: str) -> str:
    if not text:
        raise UsageError(f"{what}: must not be empty")
    return quote(text, safe="")


def publish_request(
    topic: str,
    message: str,
    *,
    title: str | None = None,
    priority: str | None = None,
    tags: str | None = None,
    click: str | None = None,
    markdown: bool = False,
    delay: str | None = None,
    sequence_id: str | None = None,
    attach_url: str | None = None,
    file: bytes | None = None,
    filename: str | None = None,
    content_type: str | None = None,
) -> HttpRequest:
    """``POST /<topic>`` (``/<topic>/<sequence_id>`` to update a notification); with ``file``,
    ``PUT`` with the file as the body (``message`` in the ``Message`` header, "" for the
    server's "You received a file: NAME"); ``attach_url``: an external file by URL.
    ``content_type`` ``application/jose``: the body is an encrypted message (docs/E2E.md)."""
    path = "/" + _segment(topic, "TOPIC")
    if sequence_id is not None:
        path += "/" + _segment(sequence_id, "--sequence-id")
    options = {"Title": title, "Priority": priority, "Tags": tags, "Click": click,
               "Delay": delay, "Markdown": "yes" if markdown else None,
               "Attach": attach_url, "Filename": filename or None,
               "Content-Type": content_type}  # fmt: skip
    if file is not None:
        options["Message"] = message.replace("\n", "\\n") or None
    headers = {k: header_text(v) for k, v in options.items() if v is not None}
    if file is not None:
        return HttpRequest("PUT", path, headers, file)
    return HttpRequest("POST", path, headers, message.encode("utf-8"))


def clear_request(topic: str, sequence_id: str) -> HttpRequest:
    """``PUT /<topic>/<sequence_id>/clear``: mark the notification read and dismiss it."""
    sid = _segment(sequence_id, "--clear")
    return HttpRequest("PUT", f"/{_segment(topic, 'TOPIC')}/{sid}/clear")


def delete_request(topic: str, sequence_id: str) -> HttpRequest:
    """``DELETE /<topic>/<sequence_id>``: remove the notification from subscribers."""
    return HttpRequest("DELETE", f"/{_segment(topic, 'TOPIC')}/{_segment(sequence_id, '--delete')}")


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP date (RFC 9110
    10.2.3); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def error_line(status: int, raw: bytes) -> str:
    """ntfy's JSON error as one line: ``HTTP 400 (code 40010): topic name is not allowed``;
    a body that is not ntfy's shape is shown cut to one line of at most 200 characters."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        code = f" (code {obj['code']})" if "code" in obj else ""
        text = str(obj["error"])
    else:
        code, text = "", raw.decode("utf-8", "replace")
    text = " ".join(text.split())[:200]
    return f"HTTP {status}{code}" + (f": {text}" if text else "")


@dataclass
class Sender:
    """Sends ``HttpRequest``s to one server; ``sleep`` and ``clock`` are injectable."""

    base: str
    token: str | None = None
    context: ssl.SSLContext | None = None
    timeout: float = 10.0
    max_tries: int = 3
    budget: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def send(self, req: HttpRequest) -> dict[str, Any]:
        """The server's JSON answer; AuthError (401/403), UsageError (other 4xx: retrying
        cannot fix it), ConnectionLost (unreachable, 5xx, 429 beyond the retry bounds)."""
        waited = 0.0
        for attempt in range(1, self.max_tries + 1):
            status, headers, raw = self._once(req)
            if status < 300:
                return self._answer(raw)
            line = f"{self.base}: {req.method} answered {error_line(status, raw)}"
            if status != 429:
                raise self._refusal(status, line)
            wait = retry_after(headers.get("Retry-After"))
            asked = f"Retry-After {wait:g} s" if wait is not None else "no Retry-After"
            wait = DEFAULT_RETRY_AFTER if wait is None else wait
            if attempt == self.max_tries:
                raise ConnectionLost(f"{line}; still limited after {attempt} tries")
            if waited + wait > self.budget:
                raise ConnectionLost(
                    f"{line}; {asked} is beyond the {self.budget:g} s this command waits"
                )
            log.warning("%s: rate limited (429, %s); retrying in %g s", self.base, asked, wait)
            self.sleep(wait)
            waited += wait
        raise AssertionError("unreachable")  # pragma: no cover

    def _refusal(self, status: int, line: str) -> AuthError | UsageError | ConnectionLost:
        if status in (401, 403):
            return AuthError(f"{line}; run: pushagent login {self.base} --token-stdin")
        if 400 <= status < 500:
            return UsageError(line)
        return ConnectionLost(line)

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise ConnectionLost(f"{self.base}: the answer is not ntfy's JSON: {raw[:80]!r}")
        return obj

    def _once(self, req: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        headers = dict(req.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = req.body if req.method in ("POST", "PUT") else None
        url = self.base + req.path  # the base is http(s):// (ntfy.parse_server checked it)
        try:
            return exchange(url, req.method, data, headers, self.context, self.timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionLost(f"{self.base}: cannot reach the server: {reason}") from None


def exchange(
    url: str,
    method: str,
    data: bytes | None,
    headers: dict[str, str],
    context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP request → (status, headers, body), an error status included (so the
    caller reads ntfy's JSON error). No proxy from the environment: a LAN relay is reached
    directly, as the agent's own transports do. URLError/OSError/TimeoutError are the
    caller's to word (the server could not be reached)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as resp:
            return int(resp.status), dict(resp.headers), resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), dict(exc.headers), exc.read(1 << 16)
