"""The baseline of ``bench/attachments.py``: a bare aiohttp file server.

    python bench/_static_server.py PORT DIR [durable]

``GET /files/<name>``: aiohttp's ``web.static`` (``FileResponse``, sendfile). ``PUT
/upload/<name>``: the body streamed into ``DIR/<name>`` in the chunks aiohttp delivers, then
201; no fsync, no rename, no database: the least a server can do to keep an upload.
``durable``: the relay's way to disk without the relay: into a temporary file, fsynced,
renamed, the directory fsynced (in a thread), so the cost of durability is told apart
from the relay's own.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, root = int(sys.argv[1]), Path(sys.argv[2])
    durable = sys.argv[3:] == ["durable"]

    async def put(request: web.Request) -> web.Response:
        name = Path(request.match_info["name"]).name
        path = root / (f".tmp-{name}" if durable else name)
        with path.open("wb") as f:
            async for chunk in request.content.iter_any():
                f.write(chunk)
            if durable:
                f.flush()
                await asyncio.to_thread(_settle, f.fileno(), path, root / name)
        return web.Response(status=201)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/health", health)
    app.router.add_put("/upload/{name}", put)
    app.router.add_static("/files", root)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _settle(fd: int, tmp: Path, final: Path) -> None:
    os.fsync(fd)
    os.replace(tmp, final)
    dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


if __name__ == "__main__":
    main()
