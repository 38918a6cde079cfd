"""The relay's deflate backend for WebSocket permessage-deflate: zlib-ng when installed.

aiohttp deflates each WebSocket message at level 1 with a sync flush (RFC 7692: every
message ends on a byte boundary). Stdlib zlib's level 1 builds dynamic Huffman trees for
each of these ~250-byte blocks: 3.7 us a message, about a quarter of what the relay spends
sending one from the backlog. zlib-ng's level 1 (``deflate_quick``, static trees) takes
1.0 us for some more bytes (7.0x against 8.2x fewer on typical events); its output is plain
deflate, so every client inflates it (docs/PERFORMANCE.md "Compression").

Installed (``pip install zlib-ng``, in the ``relay`` extra) it is used; without it the relay
deflates with stdlib zlib as before. ``EDGEPUSH_ZLIB=stdlib`` forces stdlib zlib (the
benchmark's same-run baseline).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import aiohttp


def use_fastest() -> str:
    """Make aiohttp deflate with zlib-ng if it is importable (and aiohttp >= 3.12 takes
    another backend); the backend's name."""
    setter: Any = getattr(aiohttp, "set_zlib_backend", None)
    if os.environ.get("EDGEPUSH_ZLIB", "").lower() == "stdlib" or setter is None:
        return "zlib"
    try:
        backend = importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:
        return "zlib"
    setter(backend)
    return "zlib-ng"
