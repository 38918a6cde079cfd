"""Topic filters and patterns, as pure functions.

Two kinds of pattern appear in edgepush:

- MQTT filters (``home/+/door``, ``home/#``) for subscriptions, matched level by level
  (MQTT 5 section 4.7; a filter starting with a wildcard does not match ``$SYS``-style topics).
- Globs with ``*`` (``alerts*``, ``home/*``) for delivery rules and relay token permissions:
  ``*`` matches any run of characters, including ``/``; everything else is literal.
"""

from __future__ import annotations

import re
from functools import lru_cache


def mqtt_match(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` matches the MQTT subscription filter ``topic_filter``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def check_mqtt_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT filter, else raise ValueError saying why."""
    if not topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError("a topic filter must be 1 to 65535 bytes")
    if "\0" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r} contains a NUL character")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level in {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {topic_filter!r}")
    return topic_filter


def check_mqtt_topic(topic: str) -> str:
    """Return ``topic`` if it can be published to (no wildcards), else raise ValueError."""
    check_mqtt_filter(topic)
    if "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish to {topic!r}: wildcards are only for subscribing")
    return topic


NTFY_TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
"""ntfy's topic rule (server/server.go ``topicRegex``, ``^[-_A-Za-z0-9]{1,64}$``): what an
ntfy server or an edge relay accepts in a subscribe path."""

NTFY_RULE = "an ntfy topic is 1-64 letters, digits, '-' or '_' (^[-_A-Za-z0-9]{1,64}$)"


def topic_problem(kind: str, topic: str) -> str | None:
    """Why ``topic`` cannot be subscribed on a ``kind`` server ("ntfy" or "mqtt"), or None.

    ntfy: ntfy's own rule (``NTFY_TOPIC``). MQTT: a valid subscription filter (MQTT 5
    section 4.7: wildcards are whole levels, ``#`` only last, no NUL, 1-65535 bytes);
    spaces and zero-length levels are allowed there.
    """
    if kind == "mqtt":
        try:
            check_mqtt_filter(topic)
        except ValueError as exc:
            return str(exc)
        return None
    return None if NTFY_TOPIC.fullmatch(topic) else NTFY_RULE


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


def glob_match(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern``, where ``*`` matches any characters."""
    return _glob_regex(pattern).match(topic) is not None
