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
"""

from __future__ import annotations

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
