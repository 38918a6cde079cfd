"""The cache folder's policy: ``cache_max`` (oldest files go first) and what a killed run
left half-written."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def trim(
    folder: Path, limit: int, keep: Path, release: Callable[[Path], bool] = lambda p: True
) -> list[Path]:
    """Remove the oldest files until the folder holds at most ``limit`` bytes (never
    ``keep``, the file just added, nor one ``release(path)`` says must stay: called before
    each removal); returns what was removed."""
    files = []
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".tmp-"):
            st = entry.stat(follow_symlinks=False)
            files.append((st.st_mtime, st.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, path in sorted(files):
        if total <= limit:
            break
        if path == keep or not release(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        total -= size
        removed.append(path)
    return removed


def clean_temporary(folder: Path) -> None:
    """Remove what a killed run left half-written."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
