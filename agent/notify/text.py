"""PURE. What a message may put on a desktop: its text without controls or markup, its urgency,
and only http(s) links (shared by the desktop notifier and the tray)."""

from __future__ import annotations

import re
from typing import Any

# C0/C1 controls and the Unicode bidi overrides that can disguise text; newlines and tabs
# are kept in the body (turned into spaces in the title).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def urgency_name(priority: int) -> str:
    """``low`` / ``normal`` / ``critical`` for an ntfy priority 1-5."""
    return "low" if priority <= 2 else "normal" if priority == 3 else "critical"


def clean(text: str, limit: int, *, markup: bool, oneline: bool = False) -> str:
    """Text safe to show: no control characters, at most ``limit`` characters, escaped for
    servers that interpret body markup (a message must never inject ``<a href>`` or break
    the server's parser)."""
    text = text[: limit * 2]  # bound the work on 1 MB bodies before the regex runs
    if oneline:
        text = text.replace("\n", " ").replace("\t", " ")
    text = _CONTROL.sub("", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if markup:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def safe_url(url: Any) -> str | None:
    """``url`` if it is an http(s) link; a message must not make us open ``file:`` or run
    a custom scheme handler."""
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return url
    return None
