"""Attachments over HTTP: a publish body received as a file, and ``GET|HEAD /file/<id>.<ext>``.

The publish side (``receive``) follows ntfy's ``handleBodyAsAttachment``: every other option
is parsed first (a bad ``Priority`` is refused before a byte is written), the body is
streamed to the file cache (``edge_relay.attachments``: limits, atomic rename), its type is
sniffed from its first bytes, and the ``attachment`` object gets ntfy's ``{name, type, size,
expires, url}`` with ``url`` from ``base_url`` or else the request's ``Host``. The caller
stores the message only after the file is complete under its name (``commit``), and keeps
the id in flight until the store has answered, so the sweep never races a commit.

``/file/`` serves a file only for a message the store has, to a caller who may read that
message's topic (the same tokens as a subscription); an unknown, expired or removed file is
404. Ranges, HEAD and conditional requests are aiohttp's ``FileResponse``, but a ``Range``
it would answer 416 (malformed, several ranges, or starting past the end) is answered here
first, in ntfy's error shape naming the range and the size (unless the request is
conditional: its 304 or 412 comes first, FileResponse's); the type is the sniffed one
(never guessed from the URL), media inline and any other file a download. A compressible
file goes gzipped to a client that accepts it (``edge_relay.gzipfile``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import hdrs, web

from agent.envelope import from_fields
from agent.ntfyproto import NtfyError
from agent.ntfyproto.attachment import FILE_PATH, disposition, file_attachment, sniff
from agent.ntfyproto.delay import parse_delay
from agent.ntfyproto.fields import Request
from agent.ntfyproto.publish import Publish, parse_publish
from agent.store import Store
from edge_relay import gzipfile
from edge_relay.attachments import DiskFull, FileCache, Upload
from edge_relay.core import rate_key
from edge_relay.ntfy_api import error
from edge_relay.state import RelayState

_CHUNK = 64 * 1024


async def peek(request: web.Request, limit: int) -> tuple[bytes, bool]:
    """The body's first bytes, and whether it is above ``limit`` (ntfy's ``util.Peek``; then
    ``limit + 1`` bytes are returned, all read so far), within ``limits.body_timeout``."""
    buf = bytearray()
    timeout = request.app["state"].cfg.limits.body_timeout
    try:
        async with asyncio.timeout(timeout):
            while len(buf) <= limit:
                chunk = await request.content.read(limit + 1 - len(buf))
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        raise _late(timeout) from None
    return bytes(buf), len(buf) > limit


async def receive(
    request: web.Request, state: RelayState, topic: str, parts: Request, head: bytes, *,
    more: bool, body: Publish | None = None,
) -> Publish:  # fmt: skip
    """Store the body as ``topic``'s next message's file; its ``Publish``, with the message's
    ``id`` and ``time`` and the complete ``attachment``. The id stays in flight (call
    ``state.files.settled`` when the message is stored or refused). ``body``: a JSON
    publish's parsed fields, whose file is ``head`` (``Publish.upload``)."""
    parsed = body or parse_publish(parts, b"", file=True)
    msg = from_fields(parsed.fields, topic=topic)
    cfg, now = state.cfg, time.time()
    expires = int(now) + cfg.attachments.expiry
    if parsed.delay:  # ntfy: the file must still be there when the message is delivered
        due = parse_delay(parsed.delay, now, max_delay=cfg.limits.max_delay)
        if due > expires:
            raise NtfyError(40015, f"the file is kept {cfg.attachments.expiry} s", "delay")
    ident = state.identify(request)
    client = rate_key(request.remote or "?", None if ident.name == "anonymous" else ident.name)
    cache: FileCache = state.files
    declared = None if body is not None else request.content_length
    upload = cache.begin(msg.id, client, declared)
    try:
        upload.write(head)
        if more:
            await _stream(request, upload)
        await asyncio.to_thread(upload.commit)
    except BaseException:
        upload.abort()
        cache.settled(msg.id)
        raise
    finally:
        cache.budget.spend(client, upload.size)
    mime, ext = sniff(upload.head, str((parsed.fields.get("attachment") or {}).get("name", "")))
    base = cfg.base_url.rstrip("/") if cfg.base_url else f"{request.scheme}://{request.host}"
    fields = file_attachment(
        parsed.fields, mime=mime, ext=ext, size=upload.size, url=f"{base}/file/{msg.id}{ext}",
        expires=min(expires, int(msg.time + cfg.limits.retention_age)),
    )  # fmt: skip
    return replace(parsed, fields={**fields, "id": msg.id, "time": msg.time}, upload=b"")


async def _stream(request: web.Request, upload: Upload) -> None:
    """The rest of the body into ``upload``: a link that stalls for ``body_timeout`` (no byte
    in that long) is cut with 408, however long a big file takes as a whole."""
    timeout = request.app["state"].cfg.limits.body_timeout
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.read(_CHUNK)
        except TimeoutError:
            raise _late(timeout, stalled=True) from None
        if not chunk:
            return
        upload.write(chunk)


def _late(timeout: float, *, stalled: bool = False) -> web.HTTPRequestTimeout:
    what = "no byte of the body arrived for" if stalled else "the body did not arrive within"
    late = web.HTTPRequestTimeout(
        text=f'{{"code": 40801, "http": 408, "error": "{what} {timeout:g} s"}}',
        content_type="application/json",
    )
    late.force_close()
    return late


async def settle_after(
    state: RelayState, mid: str, accept: Awaitable[web.Response]
) -> web.Response:
    """Run ``accept`` (the store's commit of message ``mid``) to its end even if the client
    goes away, then let the sweep see the file: kept if the message committed, else removed."""
    task = asyncio.ensure_future(accept)
    task.add_done_callback(lambda _: state.files.settled(mid))
    return await asyncio.shield(task)


def disk_full(exc: DiskFull) -> NtfyError:
    return NtfyError(50702, str(exc), field="attachment")


async def serve_file(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /file/<message id>[.<ext>]``: the file, to whoever may read its topic."""
    state: RelayState = request.app["state"]
    match = FILE_PATH.fullmatch(request.path)
    if match is None:
        raise NtfyError(40401, f"{request.path[:80]!r} is not /file/<message id>.<ext>")
    mid = match.group(1)
    ident = state.identify(request)
    stored = await state.to_thread(state.store.get, mid)
    att = stored.message.attachment if stored is not None else None
    path = state.files.path(mid)
    if stored is None or not att or path is None or att.get("expires", 0) < time.time():
        raise NtfyError(40401, f"no attachment file for message {mid!r}")
    state.require(ident, "read", stored.message.topic)
    mime = str(att.get("type") or "application/octet-stream")
    if mime.startswith("text/html"):  # ntfy's ContentTypeWriter: never render HTML
        mime = mime.replace("text/html", "text/plain", 1)
    headers = {"Content-Type": mime, "X-Content-Type-Options": "nosniff",
               "Content-Disposition": disposition(str(att.get("name", mid)), mime),
               # a file opened in a browser runs no script and loads nothing
               "Content-Security-Policy": "default-src 'none'; sandbox",
               "Cache-Control": "private"}  # fmt: skip
    if hdrs.RANGE in request.headers and (refused := _range_refusal(request, path)):
        return refused
    if state.cfg.compress and gzipfile.compressible(mime, int(att.get("size") or 0)):
        headers["Vary"] = "Accept-Encoding"
        if gzipfile.wants_gzip(request):
            return await gzipfile.send(request, state.files, mid, path, headers)
    return web.FileResponse(path, headers=headers)


_CONDITIONS = (hdrs.IF_MATCH, hdrs.IF_NONE_MATCH, hdrs.IF_MODIFIED_SINCE, hdrs.IF_UNMODIFIED_SINCE)


def _range_refusal(request: web.Request, path: Path) -> web.Response | None:
    """The 416 ``FileResponse`` would send for this ``Range`` (its rules: an ``If-Range``
    older than the file means the whole file, a suffix range is always satisfiable), as a
    JSON error naming the range; None where it sends the file or a part of it. aiohttp's own
    416 has an empty body, which tells a client nothing. None too for a conditional request
    (it may be a 304 or 412 first) and a file gone from disk (a 404): FileResponse's to say."""
    if any(h in request.headers for h in _CONDITIONS):
        return None  # preconditions first (RFC 9110 13.2.2: 304, 412): FileResponse's order
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone from disk: FileResponse's 404
    size = st.st_size
    if (since := request.if_range) is not None and st.st_mtime > since.timestamp():
        return None
    asked = request.headers[hdrs.RANGE][:80]
    try:
        rng = request.http_range
    except ValueError:
        why = "is not one byte range (bytes=first-last, bytes=first- or bytes=-count)"
    else:
        start = rng.start
        if start is None or (start < 0 and rng.stop is None and size > 0) or 0 <= start < size:
            return None
        why = "starts at or past the end"
    answer = error(416, f"Range {asked!r} {why}; the file is {size} bytes")
    answer.headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
    return answer


def keeper(store: Store) -> Callable[[list[str]], set[str]]:
    """For the sweep: of the ids on disk, those whose message is stored (or scheduled) and
    whose attachment has not expired."""

    def keep(ids: list[str]) -> set[str]:
        now, kept = time.time(), store.scheduled_ids()
        for mid in ids:
            stored = store.get(mid)
            att = stored.message.attachment if stored is not None else None
            if att and att.get("expires", 0) >= now:
                kept.add(mid)
        return kept

    return keep
