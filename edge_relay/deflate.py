"""The relay's deflate backend for WebSocket permessage-deflate: zlib-ng when installed.

aiohttp deflates each WebSocket message at level 1 with a sync flush (RFC 7692: every
message ends on a byte boundary). Stdlib zlib's level 1 builds dynamic Huffman trees for
each of these ~250-byte blocks: 3.7 us a message, about a quarter of what the relay spends
sending one from the backlog. zlib-ng's level 1 (``deflate_quick``, static trees) takes
1.0 us for some more bytes (7.0x against 8.2x fewer on typical events); its output is plain
deflate, so every client inflates it (docs/PERFORMANCE.md "Compression").

Installed (``pip install zlib-ng``, in the ``relay-fast`` extra) it is used; without it the relay
deflates with stdlib zlib as before. ``EDGEPUSH_ZLIB=stdlib`` forces stdlib zlib (the
benchmark's same-run baseline).
"""

from __future__ import annotations

import importlib
import os
import zlib
from typing import Any

import aiohttp

from edge_relay.live import frame_head


def use_fastest() -> None:
    """Make aiohttp deflate with zlib-ng if it is importable (and aiohttp >= 3.12 takes
    another backend); ``backend_name()`` says which it is."""
    setter: Any = getattr(aiohttp, "set_zlib_backend", None)
    if os.environ.get("EDGEPUSH_ZLIB", "").lower() == "stdlib" or setter is None:
        return
    try:
        backend = importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:
        return
    setter(backend)
    global _chosen
    _chosen = backend


_TRAILER = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1: removed from the end of each message


class Deflater:
    """Compressed text frames of one WebSocket connection, written by the relay itself.

    aiohttp's compressed send takes an ``asyncio.Lock`` and two wrapper layers per message:
    3.1 us for a ~250-byte event with zlib-ng against 1.4 us for this (1,000 typical events,
    best of 20; zlib-ng's deflate itself is 1.0 us). Same parameters as aiohttp's: level 1,
    the negotiated window, a full flush per message under ``server_no_context_takeover``,
    else a sync flush. The compressor's state is the connection's: once a connection has
    one, every compressed message of it goes through it (edge_relay.streams.WsSink).
    """

    __slots__ = ("_compress", "_flush", "_mode")

    def __init__(self, window_bits: int, *, no_context_takeover: bool) -> None:
        z = _backend()
        obj = z.compressobj(1, z.DEFLATED, -window_bits)
        self._compress = obj.compress
        self._flush = obj.flush
        self._mode = z.Z_FULL_FLUSH if no_context_takeover else z.Z_SYNC_FLUSH

    def frame(self, data: bytes) -> bytes:
        """``data`` as one compressed, unmasked text frame (RSV1 set)."""
        body: bytes = (self._compress(data) + self._flush(self._mode)).removesuffix(_TRAILER)
        return frame_head(0xC1, len(body)) + body


def _backend() -> Any:
    """The zlib module aiohttp deflates with (stdlib ``zlib`` or ``zlib_ng.zlib_ng``)."""
    return _chosen


def backend_name() -> str:
    """What the relay deflates with, for its startup log: ``zlib-ng`` or ``zlib``."""
    return "zlib" if _chosen is zlib else "zlib-ng"


_chosen: Any = zlib
