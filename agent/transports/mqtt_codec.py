"""The optional MQTT payload codec (``[mqtt] compress = "none" | "zstd"``): zstd frames.

Measured before choosing (``bench/mqtt_codec.py``, typical envelopes, each payload on its own,
same run): zstd level 3 against zlib level 6 shrinks a ~200-byte backup notice 1.17x / 1.22x
(nothing worth a codec), a ~510-byte Grafana alert 1.45x / 1.52x, a ~3.4 KB log excerpt
7.02x / 5.60x; zstd compresses 3-4x faster (3.4 / 4.3 / 7.2 us against 11.4 / 16.8 / 21.9 us)
and decompresses about twice as fast. So zstd, level 3, and only payloads of at least
``MIN_SIZE`` bytes that come out smaller: a short message goes as it is.

How other clients can tell: a zstd frame begins with its magic number ``28 B5 2F FD``, which
no UTF-8 text (JSON or plain) can begin with (``0xB5`` is a continuation byte). That prefix
is the flag under MQTT 3.1.1; under MQTT 5 the PUBLISH also carries the content type
``application/zstd`` (RFC 8878) and the user property ``content-encoding: zstd``.

Receiving, the agent (and the relay's bridge) inflates any payload that starts with the
magic, whatever its own ``compress`` setting, reading at most ``cap`` bytes out of it: a
frame declaring or producing more (a zip bomb) is refused as that one message's error.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import MessageError

if TYPE_CHECKING:
    import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"
MIN_SIZE = 512
"""Payloads below this go uncompressed (a ~200-byte envelope gains 1.17x at best)."""
LEVEL = 3
CONTENT_TYPE = "application/zstd"
USER_PROPERTY = ("content-encoding", "zstd")
MODES = ("none", "zstd")


@functools.cache
def _zstd() -> Any:
    """zstandard, imported the first time a payload is packed or unpacked (an agent that
    never sees one does not load it)."""
    import zstandard

    return zstandard


@functools.cache
def _compressor() -> zstandard.ZstdCompressor:
    made: zstandard.ZstdCompressor = _zstd().ZstdCompressor(level=LEVEL, write_content_size=True)
    return made


def pack(payload: bytes, mode: str) -> bytes:
    """``payload`` as it goes out: a zstd frame when ``mode`` is ``zstd``, it is at least
    ``MIN_SIZE`` bytes and the frame is smaller; else unchanged."""
    if mode != "zstd" or len(payload) < MIN_SIZE:
        return payload
    frame = _compressor().compress(payload)
    return frame if len(frame) < len(payload) else payload


def properties(payload: bytes) -> Properties | None:
    """The MQTT 5 PUBLISH properties that flag a packed payload (None for a plain one)."""
    if not payload.startswith(MAGIC):
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = CONTENT_TYPE
    props.UserProperty = [USER_PROPERTY]
    return props


def unpack(payload: bytes, cap: int) -> bytes:
    """The payload as it was sent: inflated when it is a zstd frame, at most ``cap`` bytes
    (MessageError beyond: a zip bomb is one rejected message); any other payload as it is."""
    if not payload.startswith(MAGIC):
        return payload
    zstd = _zstd()
    try:
        declared = zstd.frame_content_size(payload)
        if declared > cap:
            raise MessageError(f"zstd payload declares {declared} bytes, above {cap}", "payload")
        with zstd.ZstdDecompressor().stream_reader(
            io.BytesIO(payload), read_across_frames=True
        ) as reader:
            out = bytearray()
            while len(out) <= cap and (chunk := reader.read(cap + 1 - len(out))):
                out += chunk
    except zstd.ZstdError as exc:
        raise MessageError(f"payload is not a valid zstd frame: {exc}", "payload") from None
    if len(out) > cap:
        raise MessageError(f"zstd payload inflates above {cap} bytes", "payload")
    return bytes(out)
