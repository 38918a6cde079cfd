"""ntfy's numbered errors (``server/errors.go``): ``{"code", "http", "error", "link"}``.

The texts and links are ntfy's, so a client that matches on a code (or shows the text) sees
what it would see from ntfy. Only the errors a publish or subscribe request can meet are
listed; the relay's own 4xx answers that ntfy has no number for keep ``http * 100 + 1``.
"""

from __future__ import annotations

from typing import Any

from agent.errors import MessageError

_DOCS = "https://ntfy.sh/docs"
_SCHEDULED = f"{_DOCS}/publish/#scheduled-delivery"
_TEMPLATES = f"{_DOCS}/publish/#message-templating"
_LIMITS = f"{_DOCS}/publish/#limitations"
_CALLS = f"{_DOCS}/publish/#phone-calls"

# code: (http status, ntfy's text, ntfy's link or "")
CODES: dict[int, tuple[int, str, str]] = {
    40000: (400, "invalid request", ""),
    40001: (400, "e-mail notifications are not enabled", f"{_DOCS}/config/#e-mail-notifications"),
    40002: (400, "cannot disable cache for delayed message", ""),
    40003: (400, "delayed e-mail notifications are not supported", ""),
    40004: (400, "invalid delay parameter: unable to parse delay", _SCHEDULED),
    40005: (400, "invalid delay parameter: too small, please refer to the docs", _SCHEDULED),
    40006: (400, "invalid delay parameter: too large, please refer to the docs", _SCHEDULED),
    40007: (400, "invalid priority parameter", f"{_DOCS}/publish/#message-priority"),
    40008: (400, "invalid since parameter", f"{_DOCS}/subscribe/api/#fetch-cached-messages"),
    40009: (400, "invalid request: topic invalid", ""),
    40010: (400, "invalid request: topic name is not allowed", ""),
    40011: (400, "invalid request: message must be UTF-8 encoded", ""),
    40013: (400, "invalid request: attachment URL is invalid", f"{_DOCS}/publish/#attachments"),
    40014: (400, "invalid request: attachments not allowed", f"{_DOCS}/config/#attachments"),
    40015: (400, "invalid request: attachment expiry before delayed delivery date",
            f"{_DOCS}/publish/#scheduled-delivery"),
    40016: (400, "invalid request: client not using the websocket protocol",
            f"{_DOCS}/subscribe/api/#websockets"),
    40017: (400, "invalid request: request body must be message JSON",
            f"{_DOCS}/publish/#publish-as-json"),
    40018: (400, "invalid request: actions invalid", f"{_DOCS}/publish/#action-buttons"),
    40021: (400, "invalid request: icon URL is invalid", f"{_DOCS}/publish/#icons"),
    40024: (400, "invalid request: request body must be valid JSON", ""),
    40032: (400, "invalid request: calling is disabled", f"{_DOCS}/config/#phone-calls"),
    40033: (400, "invalid request: phone number invalid", _CALLS),
    40037: (400, "invalid request: delayed call notifications are not supported", ""),
    40049: (400, "invalid request: sequence ID invalid",
            f"{_DOCS}/publish/#updating-deleting-notifications"),
    40041: (400, "invalid request: message or title is too large after replacing template",
            _TEMPLATES),
    40042: (400, "invalid request: message body must be JSON if templating is enabled",
            _TEMPLATES),
    40043: (400, "invalid request: could not parse template", _TEMPLATES),
    40044: (400, "invalid request: template contains disallowed function calls, e.g. "
            "template, call, or define", _TEMPLATES),
    40045: (400, "invalid request: template execution failed", _TEMPLATES),
    40046: (400, "invalid request: template file not found", _TEMPLATES),
    40101: (401, "unauthorized", f"{_DOCS}/publish/#authentication"),
    40301: (403, "forbidden", f"{_DOCS}/publish/#authentication"),
    40401: (404, "page not found", ""),
    41301: (413, "attachment too large, or bandwidth limit reached", _LIMITS),
    41303: (413, "JSON body too large", ""),
    42901: (429, "limit reached: too many requests", _LIMITS),
    42908: (429, "limit reached: daily message quota reached", _LIMITS),
    50001: (500, "internal server error", ""),
    50701: (507, "cannot publish to UnifiedPush topic without previously active subscriber", ""),
    # the relay's own (ntfy has no number for a full attachment disk)
    50702: (507, "insufficient storage: the attachment cache is full", ""),
}  # fmt: skip


class NtfyError(MessageError):
    """A request refused with one of ntfy's numbered errors.

    ``str(exc)`` is ntfy's text, with ``"; <detail>"`` appended when there is one (ntfy's
    ``errHTTP.Wrap``), so a client sees ntfy's words and ours says what exactly was wrong.
    """

    def __init__(self, code: int, detail: str = "", field: str | None = None) -> None:
        status, text, link = CODES[code]
        super().__init__(f"{text}; {detail}" if detail else text, field=field)
        self.code = code
        self.http = status
        self.link = link

    def body(self) -> dict[str, Any]:
        """ntfy's JSON error object (``link`` only where ntfy gives one)."""
        out: dict[str, Any] = {"code": self.code, "http": self.http, "error": str(self)}
        if self.link:
            out["link"] = self.link
        return out
