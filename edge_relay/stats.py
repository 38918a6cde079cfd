"""Delivery analytics at the relay: ``GET /v1/stats?topic=T&since=7d``'s extra part, the
per-device receipts listing, and ``edge-relay stats`` (which reads the store directly).

The numbers come from the store's aggregates (``agent.store.analytics``) shaped by the pure
``agent.analytics``; this module only reads parameters, checks read permission and answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from agent import analytics
from agent.errors import MessageError
from agent.store import Store
from edge_relay.core import parse_topic_list
from edge_relay.state import RelayState

DEFAULT_WINDOW = "7d"


def wanted(query: Mapping[str, str]) -> bool:
    """Does this ``/v1/stats`` request ask for the analytics (any of its parameters)?"""
    return "topic" in query or "since" in query


def parse_window(text: str, now: int) -> int:
    """The window's start for ``since=``; MessageError (ntfy's 40008) for a bad value."""
    try:
        return analytics.window_start(text, now=now)
    except ValueError as exc:
        raise MessageError(str(exc), field="since") from None


def report(
    store: Store, *, since: int, until: int, topics: Sequence[str] | None,
    readable: Callable[[str], bool],
) -> dict[str, Any]:  # fmt: skip
    """The funnel for ``topics`` (None: every topic ``readable`` allows); blocking."""
    rows = store.funnel_rows(since, until=until, topics=topics)
    return analytics.funnel_report(rows, readable=readable, since=since, until=until)


async def for_request(request: web.Request, state: RelayState) -> dict[str, Any]:
    """The ``analytics`` part of ``/v1/stats`` for this request: ``topic=`` (a topic or a
    comma list) must each be readable by the caller (401/403 otherwise, as a subscription);
    without it, every topic the caller may read. ``since=`` defaults to 7 days."""
    ident = state.identify(request)
    now = int(time.time())
    since = parse_window(request.query.get("since", DEFAULT_WINDOW), now)
    topics: tuple[str, ...] | None = None
    if "topic" in request.query:
        limit = state.cfg.limits.max_topics_per_subscription
        topics = parse_topic_list(request.query["topic"], limit=limit)
        for topic in topics:
            state.require(ident, "read", topic)

    def readable(topic: str) -> bool:
        return ident.grant.allows("read", topic)

    result: dict[str, Any] = await state.to_thread(
        report, state.store, since=since, until=now + 1, topics=topics, readable=readable
    )
    return result


# --- edge-relay stats ---------------------------------------------------------------------


def render(data: Mapping[str, Any]) -> str:
    """The report as a table, one line per topic and day, then the topic's total."""
    head = (f"{'topic':<24} {'day':<10} {'published':>9} {'delivered':>9} {'displayed':>9} "
            f"{'clicked':>7} {'dismissed':>9} {'acked':>5} {'ctr':>6} {'t-click':>8}")  # fmt: skip
    lines = [head]
    for topic, entry in data["topics"].items():
        for row in [*entry["days"], {**entry["total"], "day": "total"}]:
            lines.append(_line(topic, row))
    if len(lines) == 1:
        lines.append("(no messages in this window)")
    return "\n".join(lines) + "\n"


def _line(topic: str, row: Mapping[str, Any]) -> str:
    ctr = "-" if row["ctr"] is None else f"{100 * row['ctr']:.1f}%"
    median = row["median_click_seconds"]
    click = "-" if median is None else f"{median:.0f}s"
    return (f"{topic[:24]:<24} {row['day']:<10} {row['published']:>9} {row['delivered']:>9} "
            f"{row['displayed']:>9} {row['clicked']:>7} {row['dismissed']:>9} "
            f"{row['acknowledged']:>5} {ctr:>6} {click:>8}")  # fmt: skip
