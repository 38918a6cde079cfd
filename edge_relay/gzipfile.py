"""``Accept-Encoding: gzip`` for compressible attachment files (``GET|HEAD /file/``).

Theory of operation
-------------------
A file is sent gzipped when its stored type is compressible (``text/*`` and the short
list in ``COMPRESSIBLE``: JSON, XML, SVG, JavaScript...; never images, audio, video,
archives or anything else already compressed), it is at least ``MIN_SIZE`` bytes, the
request accepts gzip (RFC 9110 12.5.3, q > 0) and it has no ``Range``. A range request is
answered from the file as it is (206, byte offsets of the file), as nginx's gzip does: a
range of a gzip stream made afresh each time would name bytes of no stable representation.
Answers of such a file say ``Vary: Accept-Encoding`` whichever way they go; a gzipped one
has no ``Accept-Ranges``, so no client resumes it with a range of the plain file.

Compressing costs more than sending: zlib level 6 runs at 30-56 MB/s on this machine (a
15 MB log or JSON file: 0.3-0.5 s of a core), ``sendfile`` of a ready file at hundreds.
So the first gzip download of a file compresses it as it sends (a thread per chunk, never
the whole file in memory, chunked, no ``Content-Length``) and keeps what it made as the
file's gzip copy (``FileCache.begin_gzip``: ``<id>.gzip``, counted, pruned with the file).
Every later one is the copy through ``FileResponse``: ``sendfile``, its ``Content-Length``,
its own ``ETag``, conditional requests. A download that starts while the copy is being
written compresses for itself and keeps nothing; one that is cut leaves no copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import zlib
from pathlib import Path

from aiohttp import hdrs, web

from edge_relay.attachments import FileCache, GzipCopy
from edge_relay.streams import accepts_gzip

COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/ecmascript",
        "image/svg+xml",
        "application/rtf",
        "application/postscript",
    }
)
"""Besides ``text/*``: the types sent gzipped. An explicit list: a type not on it (images,
audio, video, zip, PDF, anything unknown) goes as it is."""
MIN_SIZE = 1024
"""Smaller files go as they are: gzip's 18-byte frame and a deflate block gain nothing."""
LEVEL = 6  # gzip's default: the copy is made once, so the better ratio pays
_CHUNK = 256 * 1024


def compressible(mime: str, size: int) -> bool:
    """Whether a file of type ``mime`` and ``size`` bytes may be sent gzipped."""
    base = mime.split(";", 1)[0].strip().lower()
    return size >= MIN_SIZE and (base.startswith("text/") or base in COMPRESSIBLE)


def wants_gzip(request: web.BaseRequest) -> bool:
    """The request takes gzip and asks for the whole file (no ``Range``)."""
    return hdrs.RANGE not in request.headers and accepts_gzip(
        request.headers.get(hdrs.ACCEPT_ENCODING, "")
    )


async def send(
    request: web.Request, cache: FileCache, mid: str, path: Path, headers: dict[str, str]
) -> web.StreamResponse:
    """The file of message ``mid`` gzipped: its kept copy, else compressed as it is sent."""
    headers = {**headers, hdrs.CONTENT_ENCODING: "gzip"}
    kept = cache.gzip_path(mid)
    if kept is not None:
        return web.FileResponse(kept, headers=headers)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    if request.method == hdrs.METH_HEAD:
        return response  # what a GET would answer now, without the body
    with contextlib.suppress(ConnectionError):  # the client went away: no copy is kept
        await _compress(response, path, cache, mid)
    return response


async def _compress(response: web.StreamResponse, path: Path, cache: FileCache, mid: str) -> None:
    z = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    src = await asyncio.to_thread(open, path, "rb")
    # no await between the copy's start and the try: a client gone at the headers cancels
    # the handler (handler_cancellation) at an await, and the copy must then be aborted
    copy: GzipCopy | None = cache.begin_gzip(mid)
    try:
        while True:
            data, end = await asyncio.to_thread(_step, src, z, copy)
            if data:
                await response.write(data)
            if end:
                break
        await response.write_eof()
        if copy is not None:
            # the relay cancels a handler whose client has gone (handler_cancellation), as
            # curl goes at once after the last chunk: the complete copy is kept all the same
            commit, copy = asyncio.ensure_future(asyncio.to_thread(copy.commit)), None
            await asyncio.shield(commit)
    finally:
        src.close()
        if copy is not None:  # the client went away (or the task was cancelled)
            copy.abort()


def _step(src: io.BufferedReader, z: zlib._Compress, copy: GzipCopy | None) -> tuple[bytes, bool]:
    """The next compressed bytes of ``src`` (also into ``copy``), and whether they end it.
    zlib lets go of the GIL while it deflates, so this runs in a thread."""
    chunk = src.read(_CHUNK)
    data = z.compress(chunk) if chunk else z.flush()
    if copy is not None and data:
        copy.write(data)
    return data, not chunk


async def no_ranges(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a gzipped answer offers no ranges (``FileResponse`` always
    sets ``Accept-Ranges``; ranges are served from the plain file)."""
    if response.headers.get(hdrs.CONTENT_ENCODING) == "gzip":
        response.headers.pop(hdrs.ACCEPT_RANGES, None)
