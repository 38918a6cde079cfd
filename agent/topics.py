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


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


def glob_match(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern``, where ``*`` matches any characters."""
    return _glob_regex(pattern).match(topic) is not None
