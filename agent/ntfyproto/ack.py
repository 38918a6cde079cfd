"""Acknowledge-until-acked (an edgepush extension; ntfy has no such parameter): which
publish parameters ask for it, and the fields the message carries to subscribers.

* ``X-Ack: required`` (also ``Ack:``, ``?ack=required``, JSON ``"ack": "required"``):
  every subscribed device re-alerts until one acknowledges. ``yes``/``true``/``1`` mean
  ``required`` too; ``no``/``none``/``false``/``0`` (or absent) mean no.
* ``X-Ack-Retry: 60s`` (``?ack-retry=``, JSON ``"ack_retry"``): the re-alert interval.
* ``X-Ack-Expire: 1h`` (``?ack-expire=``, JSON ``"ack_expire"``): how long after the
  message's time re-alerts go on when nobody acknowledges.

Durations are read like ntfy's delay durations (``agent.ntfyproto.delay.duration_seconds``:
``30s``, ``1h30m``, ``2 days``) or a bare number of seconds. Bounds: retry 1 s .. 1 day,
expire at least the retry and at most 1 day (so an alert stops by itself). A value outside
them, or one that reads as no duration, is ntfy's 400 ``invalid request`` (40000) naming
the parameter.

The message carries ``"ack": "required"``, ``"ack_retry"`` and ``"ack_expire"`` (whole
seconds) as extra JSON fields, which ntfy's clients ignore. Retry and expire are kept even
without ``X-Ack`` (a device's ``ack_urgent`` rule uses them for priority-5 messages).
"""

from __future__ import annotations

import math
import re
from typing import Any

from agent.ntfyproto import fields as f
from agent.ntfyproto.delay import duration_seconds
from agent.ntfyproto.errors import NtfyError

DEFAULT_RETRY = 60
DEFAULT_EXPIRE = 3600
MIN_RETRY = 1
MAX_SECONDS = 86400
REQUIRED = "required"
_YES = frozenset({"required", "yes", "true", "1"})
_NO = frozenset({"no", "none", "false", "0", "off"})
_NUMBER = re.compile(r"[0-9]{1,9}")


def parse_ack(req: f.Request) -> dict[str, Any]:
    """The ack fields a publish request asks for (empty when none); NtfyError 40000 for a
    value that is not one of them."""
    out: dict[str, Any] = {}
    word = req.read(f.ACK).lower()
    if word in _YES:
        out["ack"] = REQUIRED
    elif word and word not in _NO:
        raise NtfyError(40000, f"X-Ack must be 'required' (or 'no'), not {word[:40]!r}", "ack")
    retry_text, expire_text = req.read(f.ACK_RETRY), req.read(f.ACK_EXPIRE)
    retry = _seconds(retry_text, "X-Ack-Retry") if retry_text else None
    expire = _seconds(expire_text, "X-Ack-Expire") if expire_text else None
    if retry is not None and not MIN_RETRY <= retry <= MAX_SECONDS:
        raise NtfyError(40000, f"X-Ack-Retry {retry_text[:40]!r} must be between "
                        f"{MIN_RETRY} s and {MAX_SECONDS} s", "ack_retry")  # fmt: skip
    if expire is not None and not MIN_RETRY <= expire <= MAX_SECONDS:
        raise NtfyError(40000, f"X-Ack-Expire {expire_text[:40]!r} must be between "
                        f"{MIN_RETRY} s and {MAX_SECONDS} s", "ack_expire")  # fmt: skip
    if (expire or DEFAULT_EXPIRE) < (retry or DEFAULT_RETRY):
        raise NtfyError(40000, "X-Ack-Expire must not be shorter than X-Ack-Retry "
                        f"({expire or DEFAULT_EXPIRE} s < {retry or DEFAULT_RETRY} s)",
                        "ack_expire")  # fmt: skip
    if out or retry is not None:
        out["ack_retry"] = retry or DEFAULT_RETRY
    if out or expire is not None:
        out["ack_expire"] = expire or DEFAULT_EXPIRE
    return out


def _seconds(text: str, name: str) -> int:
    value = float(text) if _NUMBER.fullmatch(text) else duration_seconds(text)
    if value is None or not math.isfinite(value):
        raise NtfyError(40000, f"{name} {text[:40]!r} is not a duration (e.g. 30s, 5m, 1h)",
                        name.lower().replace("x-", "").replace("-", "_"))  # fmt: skip
    return math.ceil(value)  # whole seconds; "0.5s" is 1 s, not 0
