"""Attachment files as ntfy's server describes them: the ``attachment`` object, the file's
type sniffed from its first bytes, and a display name that is safe to save under.

ntfy (``handleBodyAsAttachment``, ``server/server.go``) fills the object of an uploaded file
as ``{name, type, size, expires, url}``: ``type`` and the URL's extension come from the
content (``util.DetectContentType``: ``.apk`` by name, else sniffed; ``.bin`` when nothing
matches), never from the name the client gave; ``name`` defaults to ``attachment<ext>``;
``url`` is ``<base>/file/<message id><ext>``; an empty message becomes "You received a file:
<name>". ``expires`` is the upload time plus the attachment expiry, never later than the
message's own expiry.

ntfy keeps the client's ``Filename`` as it came; here ``safe_name`` cleans it, because agents
save the file under a name derived from it: no directory parts (``../``, ``\\``), no NUL or
control characters, no reserved Windows device names (``CON``, ``NUL``, ``COM1``...), at most
``MAX_NAME`` characters with the extension kept. The file on the relay's disk is named by the
message id alone, so the name is only ever a label.

An inline file (what the relay's bridge forwards upstream for files below
``upstream_inline_limit``) is the same object with a base64 ``data:`` URL (RFC 2397) as its
``url``: ``data_url`` writes it, ``data_url_bytes`` reads it back within a size cap.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import quote

import filetype  # type: ignore[import-untyped]

DEFAULT_MESSAGE = "You received a file: {}"
MAX_NAME = 200
SNIFF_BYTES = 8192
"""Bytes of the head that ``sniff`` looks at (what ``filetype`` reads at most)."""
FILE_PATH = re.compile(r"/file/([-_A-Za-z0-9]{1,64})(?:\.[A-Za-z0-9]{1,16})?")
"""ntfy's ``fileRegex``: the path a file is served at."""
_EXT = re.compile(r"\.[A-Za-z0-9]{1,16}")
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{d}{n}" for d in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
_BAD = re.compile(r"[\x00-\x1f\x7f<>:\"|?*]")
MEDIA = ("image/", "audio/", "video/")
"""Types a browser may show inline; every other file is served as a download."""


def safe_name(name: str) -> str:
    """A display name that is safe as a file name on any OS ("" when nothing is left)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BAD.sub("_", name).strip(" .")
    stem = name.partition(".")[0]
    if stem.upper().rstrip(" ") in _RESERVED:
        name = f"_{name}"
    if len(name) > MAX_NAME:
        ext = name.rsplit(".", 1)[1] if "." in name[-17:] else ""
        keep = MAX_NAME - (len(ext) + 1 if ext else 0)
        name = name[:keep].rstrip(" .") + (f".{ext}" if ext else "")
    return name


def sniff(head: bytes, name: str = "") -> tuple[str, str]:
    """(MIME type, extension with its dot) of a file from its first bytes, as ntfy's
    ``DetectContentType``: ``.apk`` by name (a zip otherwise), UTF-8 text as
    ``text/plain; charset=utf-8``, anything unknown ``application/octet-stream`` / ``.bin``."""
    if name.lower().endswith(".apk"):
        return "application/vnd.android.package-archive", ".apk"
    kind = filetype.guess(head[:SNIFF_BYTES]) if head else None
    if kind is not None:
        ext = f".{kind.extension}"
        return str(kind.mime), ext if _EXT.fullmatch(ext) else ".bin"
    if _is_text(head[:SNIFF_BYTES], complete=len(head) <= SNIFF_BYTES):
        return "text/plain; charset=utf-8", ".txt"
    return "application/octet-stream", ".bin"


def _is_text(head: bytes, *, complete: bool) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the end of the sniffed head is still text
        return not complete and exc.reason == "unexpected end of data"
    return b"\x00" not in head


def file_attachment(
    fields: dict[str, Any], *, mime: str, ext: str, size: int, expires: int, url: str
) -> dict[str, Any]:
    """The envelope ``fields`` of a publish whose body was stored as a file: the attachment
    object complete and the message defaulted (``handleBodyAsAttachment``)."""
    given = fields.get("attachment") or {}
    name = safe_name(str(given.get("name", ""))) or f"attachment{ext}"
    out = dict(fields)
    out["attachment"] = {"name": name, "type": mime, "size": size, "expires": expires,
                         "url": url}  # fmt: skip
    out["message"] = fields.get("message") or DEFAULT_MESSAGE.format(name)
    return out


def disposition(name: str, mime: str) -> str:
    """``Content-Disposition`` for a served file: media inline, anything else a download."""
    kind = "inline" if mime.startswith(MEDIA) else "attachment"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    if quoted.isascii():
        return f'{kind}; filename="{quoted}"'
    # RFC 6266: an ASCII fallback, and the UTF-8 name for clients that read it
    fallback = quoted.encode("ascii", "replace").decode("ascii")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


# --- inline files: a base64 ``data:`` URL (RFC 2397) as the attachment's ``url`` ----------------

INLINE_MAX = 256 * 1024
"""The largest file a message may carry inline (the bridge's ``upstream_inline_limit`` at
most): the agent does not count such a URL toward ``max_message_size``."""
INLINE_URL_MAX = len("data:;base64,") + 255 + (INLINE_MAX + 2) // 3 * 4
"""Characters of the ``data:`` URL of an ``INLINE_MAX`` file (a type of up to 255)."""
_DATA_URL = re.compile(r"data:([!#$&^_.+\-/A-Za-z0-9]{0,255});base64,([A-Za-z0-9+/]*={0,2})")


def data_url(mime: str, data: bytes) -> str:
    """``data:<type>;base64,<data>``: a file any client can turn back into bytes."""
    base = mime.split(";", 1)[0].strip() or "application/octet-stream"
    return f"data:{base};base64,{base64.b64encode(data).decode('ascii')}"


def is_inline(url: object) -> bool:
    """True for a ``data:`` URL no longer than an ``INLINE_MAX`` file's."""
    return isinstance(url, str) and url[:5].lower() == "data:" and len(url) <= INLINE_URL_MAX


def inline_length(envelope: dict[str, Any] | None) -> int:
    """Characters of an inline file's ``data:`` URL in an envelope (0 when none): what a
    payload may exceed the message size by (agent.envelope)."""
    att = envelope.get("attachment") if envelope is not None else None
    url = att.get("url") if isinstance(att, dict) else None
    return len(url) if isinstance(url, str) and is_inline(url) else 0


def data_url_bytes(url: str, max_bytes: int) -> bytes:
    """The file of a base64 ``data:`` URL; ValueError when it is not one, or is larger than
    ``max_bytes`` (checked before decoding)."""
    max_bytes = min(max_bytes, INLINE_MAX)
    m = _DATA_URL.fullmatch(url) if len(url) <= INLINE_URL_MAX else None
    if m is None:
        raise ValueError("not a base64 data: URL of at most 256 KiB")
    if len(m.group(2)) // 4 * 3 > max_bytes + 2:
        raise ValueError(f"the inline file is above {max_bytes} bytes")
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in the data: URL: {exc}") from None
    if len(data) > max_bytes:
        raise ValueError(f"the inline file is above {max_bytes} bytes")
    return data
