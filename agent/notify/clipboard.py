"""The clipboard, for ntfy's ``copy`` action button: the command that holds a text on the
session's clipboard, found once. The tools fork and keep serving the selection after the
agent's call returns, which a daemon cannot do itself without a toolkit.

Wayland: ``wl-copy``; X11: ``xclip`` or ``xsel``; macOS: ``pbcopy``; Windows: ``clip``. None
found → no copy button (a button that does nothing is worse than none).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys

log = logging.getLogger("pushagent.notify.desktop")
_TIMEOUT = 5.0


def command() -> list[str] | None:
    """The argv that reads the text to copy from stdin, or None without one."""
    choices: list[list[str]] = []
    if sys.platform == "darwin":
        choices.append(["pbcopy"])
    elif sys.platform == "win32":
        choices.append(["clip"])
    else:
        if os.environ.get("WAYLAND_DISPLAY"):
            choices.append(["wl-copy"])
        if os.environ.get("DISPLAY"):
            choices += [
                ["xclip", "-selection", "clipboard", "-in"],
                ["xsel", "--clipboard", "--input"],
            ]
    for argv in choices:
        path = shutil.which(argv[0])
        if path is not None:
            return [path, *argv[1:]]
    return None


async def copy(text: str) -> bool:
    """Put ``text`` on the clipboard; False (logged) when it could not."""
    argv = command()
    if argv is None:
        log.warning("no clipboard tool (wl-copy, xclip or xsel) to copy with")
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,  # a pipe would be held open by the tool's fork
        )
        await asyncio.wait_for(proc.communicate(text.encode()), _TIMEOUT)
    except (OSError, TimeoutError) as exc:
        log.warning("copy with %s failed: %s", argv[0], exc)
        return False
    if proc.returncode != 0:
        log.warning("copy with %s failed: exit status %s", argv[0], proc.returncode)
        return False
    return True
