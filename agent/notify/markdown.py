"""Markdown (ntfy's ``content_type: text/markdown``) as a notification can show it. Pure.

A notification is not a web page: servers show plain text, or the small markup subset of the
freedesktop notification spec (``<b> <i> <u> <a href>``) when they advertise ``body-markup``.
So ``to_plain`` strips the markup a reader would otherwise see as noise (headings, emphasis,
code marks, quote marks, list bullets, fences) and writes links as ``text (url)``;
``to_markup`` escapes the text first (a message must never inject its own tags) and then
turns emphasis into ``<b>``/``<i>``, headings into ``<b>`` and http(s) links into ``<a>``.
Everything else (tables, HTML in the message) stays as text.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*(```|~~~).*$", re.M)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_QUOTE = re.compile(r"^\s{0,3}>\s?", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$", re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EM = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_CODE = re.compile(r"`([^`]+)`")


def is_markdown(content_type: str | None) -> bool:
    """ntfy marks Markdown messages with ``content_type: text/markdown``."""
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "text/markdown"  # type: ignore[union-attr]


def _blocks(text: str) -> str:
    text = _FENCE.sub("", text)
    text = _RULE.sub("", text)
    text = _QUOTE.sub("", text)
    return _BULLET.sub(r"\1• ", text)


def to_plain(text: str) -> str:
    """Markdown → readable plain text (links as ``text (url)``)."""
    text = _HEADING.sub(r"\1", _blocks(text))
    text = _IMAGE.sub(lambda m: f"{m[1]} ({m[2]})" if m[1] else m[2], text)
    text = _LINK.sub(lambda m: m[1] if m[1] == m[2] else f"{m[1]} ({m[2]})", text)
    text = _CODE.sub(r"\1", text)
    for pattern in (_STRONG, _STRIKE):
        text = pattern.sub(lambda m: m[m.lastindex or 1], text)
    text = _EM.sub(r"\2", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(m: re.Match[str]) -> str:
    label, url = m[1], m[2]
    if not url.lower().startswith(("http://", "https://")):
        return f"{label} ({url})"
    return f'<a href="{url.replace(chr(34), "&quot;")}">{label}</a>'


def to_markup(text: str) -> str:
    """Markdown → the freedesktop body-markup subset, with the message's own text escaped."""
    text = escape(_blocks(text))
    text = _HEADING.sub(r"<b>\1</b>", text)
    text = _IMAGE.sub(lambda m: f"{m[1]} ({m[2]})" if m[1] else m[2], text)
    text = _LINK.sub(_link, text)
    text = _CODE.sub(r"\1", text)
    text = _STRONG.sub(r"<b>\2</b>", text)
    text = _STRIKE.sub(r"\1", text)
    text = _EM.sub(r"<i>\2</i>", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
