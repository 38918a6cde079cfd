"""PURE. Secrets out of log lines: one ``logging.Filter`` for every handler both CLIs set up.

Why a filter on the handlers and not on our own loggers: the secrets that reached logs were
printed by other people's loggers — ``websockets`` at DEBUG prints the client's request
headers (``Authorization: Bearer tk_…``), aiohttp's ``aiohttp.server`` / ``aiohttp.access``
can print a request line carrying ntfy's ``?auth=<base64 of the header>``. A filter on a
*logger* sees only records created on that very logger (not its children's, not propagated
ones); a filter on the *handler* sees every record that is written, whoever made it.

Records are formatted lazily, so a secret may sit in ``record.args`` (``"%s", headers``) or in
the traceback text. ``RedactingFilter`` formats the message itself (``getMessage()``),
redacts the result, stores it as ``msg`` and clears ``args``; it does the same to the
exception and stack text. Redaction keeps the scheme and the key so a line still says what
was sent (``Authorization: Bearer [redacted]``), only the credential goes.
"""

from __future__ import annotations

import logging
import re

MARK = "[redacted]"

# Each: (what is kept, the credential after it). ``_NOT_DONE`` keeps a second pass (another
# handler, an already redacted text) from eating the marker.
_NOT_DONE = r"(?!" + re.escape(MARK) + ")"
_RULES = (
    # Authorization / Proxy-Authorization headers, in header, dict-repr or key=value form,
    # with or without a scheme word: "Authorization: Bearer x", "'Authorization': 'Basic x'".
    (r"""(?:proxy-)?authorization['"]?\s*[:=]\s*['"]?(?:[A-Za-z][\w.-]*[ \t]+(?=\S))?+""",
     r"""[^\s'",;)\]}]+"""),
    # A scheme and its credential anywhere else ("Bearer tk_…", "Basic dXNlcjpwdw==").
    (r"""\b(?:bearer|basic)[ \t]+""", r"""[A-Za-z0-9._~+/=-]{6,}"""),
    # ntfy's query parameter (base64 of the whole header): ?auth=… / &auth=… / auth=…
    (r"""(?:^|[?&;\s'"(])auth=""", r"""[^&\s'"#;)]+"""),
    # The relay's tokens on their own (an error message quoting one).
    (r"""\btk_""", r"""[A-Za-z0-9]+"""),
    # A password in a URL's user info: scheme://user:password@host
    # (bounded: a hostile log line of many "://a:" must not cost quadratic time)
    (r"""://[^/\s:@'"]{0,256}:""", r"""[^@\s/'"]{1,256}(?=@)"""),
)  # fmt: skip
_PATTERNS = tuple(re.compile(f"({kept}){_NOT_DONE}{cred}", re.IGNORECASE) for kept, cred in _RULES)


def redact(text: str) -> str:
    """``text`` with every credential the patterns know replaced by ``[redacted]``."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MARK, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts each record in place (message, args, traceback, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put one ``RedactingFilter`` on each handler of ``logger`` (the root logger by default).

    Call it right after ``logging.basicConfig``; idempotent.
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
