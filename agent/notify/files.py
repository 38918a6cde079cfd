"""What a notification offers for its downloaded attachment, and the two things it does.

Buttons by the type sniffed from the cached file (never the name): an image is shown in the
notification itself and gets none; audio and video get "Play", any other file "Open" and
"Save". "Play" and "Open" hand the cached file to ``desktop.opener`` or the OS default
application (``xdg-open``, ``open``, ``os.startfile``). "Save" copies it into the user's
Downloads folder (``desktop.downloads``: ``XDG_DOWNLOAD_DIR``, else ``~/Downloads``) under the
attachment's name, cleaned as the relay cleans it (``safe_name``), and never over a file that
is there: ``name (1).ext``, ``name (2).ext``... Each name is claimed with ``O_EXCL``, so two
saves at once, or a file created meanwhile, never lose a byte. The copy is 0600, like every
file the agent writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

from agent.ntfyproto.attachment import safe_name
from agent.private import FILE_MODE

log = logging.getLogger(__name__)

PLAY, OPEN, SAVE = "Play", "Open", "Save"
MAX_TRIES = 1000


def file_buttons(mime: str) -> tuple[str, ...]:
    """The buttons for a cached file of type ``mime``."""
    kind = mime.split("/", 1)[0].strip().lower()
    if kind == "image":
        return ()
    if kind in ("audio", "video"):
        return (PLAY,)
    return (OPEN, SAVE)


def candidates(name: str) -> list[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``... (MAX_TRIES names in all)."""
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a name like ".profile"
        stem, dot, ext = name, "", ""
    return [name] + [f"{stem} ({n}){dot}{ext}" for n in range(1, MAX_TRIES)]


def save_copy(src: Path, folder: Path, name: str) -> Path:
    """Copy ``src`` into ``folder`` as ``name`` (cleaned; ``src``'s name when nothing is
    left), never over an existing file; the path written. OSError when it cannot be."""
    name = safe_name(name) or src.name
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in candidates(name):
        target = folder / candidate
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
                shutil.copyfileobj(inp, out)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        return target
    raise FileExistsError(f"{folder}: {MAX_TRIES} files named like {name!r} already")


async def open_path(opener: tuple[str, ...], path: Path) -> None:
    """The cached file in the OS default application (or ``opener``)."""
    if not opener and sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606 - our own cached file
        return
    argv = opener or (("open",) if sys.platform == "darwin" else ("xdg-open",))
    try:
        proc = await asyncio.create_subprocess_exec(*argv, str(path))
        await proc.wait()
    except OSError as exc:
        log.warning("cannot open %s with %s: %s", path, argv[0], exc.strerror)


async def save(path: Path, folder: Path, name: str) -> Path | None:
    """``save_copy`` off the loop; a failure is logged (a button press has no one to answer)."""
    try:
        saved = await asyncio.to_thread(save_copy, path, folder, name)
    except OSError as exc:
        log.warning("cannot save %s into %s: %s", path.name, folder, exc)
        return None
    log.info("attachment saved as %s", saved)
    return saved
