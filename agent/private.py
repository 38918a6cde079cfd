"""Files and folders only their owner can read: 0600 files, 0700 folders, whatever the umask.

What the agent and the relay write holds messages, tokens and the names of servers: the
store (``*.db`` and SQLite's ``-wal``/``-shm``, which SQLite creates with the main file's
mode), the hand-off mark, ``status.json``, the login index, the relay's auth file. Under the
usual umask 022 they came out 0644 in 0755 folders, readable by every local user.

Modes are set explicitly (``chmod`` after creating), not left to the umask, so a umask of 0
gives 0600/0700 too. Folders and files that already existed are the user's: a folder is left
as it is (``PUSHAGENT_HOME=/tmp/x`` must not chmod ``/tmp``); a file of ours that is more open
than 0600 (written by an older version) is tightened, if we own it.

Reading the other way round: ``read_private`` refuses a secret file (a password file, the
secrets file, the E2E key file) that group or others can read, with the ``chmod`` that
fixes it -- the one place that check is written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from agent.errors import ConfigError

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents, each new one 0700; existing ones untouched."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it first: theirs, with its own mode
        os.chmod(folder, DIR_MODE)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists as a 0600 file (created empty if missing); best effort.

    Errors are left to whoever opens the file next (SQLite explains a read-only folder
    better than we could).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    except OSError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten(path: Path) -> None:
    """Take group/other bits off an existing file we own; nothing if absent or not ours."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a temp file, then rename), mode 0600.

    Raises OSError; the folder is created (0700) if missing.
    """
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        _fill(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_private(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) holding ``data``, mode 0600, flushed to disk;
    on any failure nothing is left behind. For the temporary files of a cache (an inline
    attachment, a decrypted download) that the caller renames into place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        _fill(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _fill(fd: int, data: bytes) -> None:
    os.fchmod(fd, FILE_MODE)  # whatever the umask made of the mode at creation
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_private(
    path: Path, label: str, *, error: type[ConfigError] = ConfigError, missing_ok: bool = False
) -> str | None:
    """The text of ``path``, refusing a file group or others can read (``error`` naming
    ``label`` and the fix). A missing file is None with ``missing_ok``, else ``error``.

    The mode is checked on the opened file (``fstat``), so what is read is what was checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise error(f"{label}: {exc.strerror}") from None
    except OSError as exc:
        raise error(f"{label}: {exc.strerror}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(
                f"{label}: must be readable by you only (mode 0600), not {mode:04o}; "
                f"run: chmod 600 {path}"
            )
        with os.fdopen(os.dup(fd), "rb") as file:
            return file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{label}: cannot read: {exc}") from None
    finally:
        os.close(fd)
