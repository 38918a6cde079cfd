"""``pushagent stats``: what this agent's user did with their messages, per topic and tag,
and a ``[[rules]]`` suggestion for what they always dismiss unread. Works offline (the store).

The numbers are ``agent.analytics.engagement_report`` over the store's grouped counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from agent import analytics
from agent.commands import common, load_config, open_store
from agent.envelope import dumps
from agent.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats",
        help="your engagement per topic and tag, with rule suggestions",
        description="Per topic and tag: messages received, shown, clicked, dismissed unread "
        "and muted by a rule, and a [[rules]] entry suggested for topics you nearly always "
        "dismiss unread. Works offline.",
    )
    common(p)
    p.add_argument(
        "--since", default="30d", help="a duration (30d, 12h), a unix time, or 'all'; default 30d"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--threshold",
        type=float,
        default=analytics.SUGGEST_THRESHOLD,
        help="share of shown messages dismissed unread that earns a suggestion (default 0.9)",
    )
    p.add_argument(
        "--min-sample",
        type=int,
        default=analytics.SUGGEST_MIN_SAMPLE,
        help="shown messages a topic needs before it gets a suggestion (default 20)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold must be above 0 and at most 1, not {args.threshold}")
    if args.min_sample < 1:
        raise UsageError(f"--min-sample must be at least 1, not {args.min_sample}")
    try:
        since = analytics.window_start(args.since, now=int(time.time()))
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    cfg = load_config(args)
    rows: list[Any] = []
    if cfg.paths.db.exists():  # read-only: never create a database to report on nothing
        store = open_store(cfg)
        try:
            rows = store.engagement_rows(since)
        finally:
            store.close()
    report = analytics.engagement_report(
        rows, since=since, threshold=args.threshold, min_sample=args.min_sample
    )
    sys.stdout.write(dumps(report) + "\n" if args.json else render(report))
    return 0


def render(report: Mapping[str, Any]) -> str:
    """The report as two tables (topics, tags) and the suggestions."""
    lines: list[str] = []
    for title in ("topics", "tags"):
        rows = report[title]
        if not rows:
            continue
        lines.append(f"{title[:-1]:<28} {'received':>8} {'shown':>6} {'clicked':>7} "
                     f"{'dismissed':>9} {'muted':>6}")  # fmt: skip
        for name, e in rows.items():
            counts = f"{e['clicked']:>7} {e['dismissed_unread']:>9} {e['muted']:>6}"
            lines.append(f"{name[:28]:<28} {e['received']:>8} {e['shown']:>6} {counts}")
        lines.append("")
    if not lines:
        lines = ["no messages in this window", ""]
    for s in report["suggestions"]:
        lines.append(f"suggestion: {s['text']}")
    return "\n".join(lines).rstrip("\n") + "\n"
