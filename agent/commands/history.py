"""``pushagent history``: what the agent has stored, offline, newest last.

``--rejected`` lists instead what arrived but could not be stored as a message (the store's
``rejected`` table): when, from where, on which topic, why, and the first bytes. Those bytes
came from whoever published them, so the table shows them escaped (no control characters
reach the terminal) and ``--json`` gives them as text with invalid UTF-8 escaped, plus base64.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.commands import common, load_config, open_store
from agent.envelope import dumps, encode
from agent.errors import UsageError
from agent.store import Rejected, Stored
from agent.timeparse import parse_since

if TYPE_CHECKING:
    from agent.config import AgentConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="list stored messages",
        description="List stored messages, newest last. Works offline.",
    )
    common(p)
    p.add_argument(
        "--topic",
        action="append",
        help="only this topic (repeatable; 'home/#' matches a whole subtree)",
    )
    p.add_argument(
        "--since",
        help="after a message ID, from a UNIX_TIME, within a DURATION (10m, 2h, 7d), or 'all'",
    )
    p.add_argument("--limit", type=int, default=50, help="at most N messages (default 50)")
    p.add_argument("--search", metavar="TEXT", help="full-text search in title, body and tags")
    p.add_argument("--json", action="store_true", help="print one JSON array of envelopes")
    p.add_argument(
        "--rejected",
        action="store_true",
        help="list payloads that could not be stored as messages (kept raw, with the reason)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    try:
        since = parse_since(args.since, now=int(time.time())) if args.since else None
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    cfg = load_config(args)
    if not cfg.paths.db.exists():
        # Read-only: opening would create the database (and its folders) in a place the user
        # may not have meant, e.g. the real data folder instead of a demo's PUSHAGENT_HOME.
        what = "rejected payloads" if args.rejected else "messages"
        sys.stdout.write("[]\n" if args.json else f"no {what} stored (no database yet at "
                         f"{cfg.paths.db})\n")  # fmt: skip
        return 0
    if args.rejected:
        return _rejected(args, cfg)
    store = open_store(cfg)
    try:
        if since is not None and since.kind == "id" and store.seq_of(since.id or "") is None:
            # On the wire an unknown id means "everything" (ntfy); typed by a person it is
            # far more likely a typo ("--since yesterday"), so say so instead of guessing.
            raise UsageError(
                f"--since: no stored message has the id {since.id!r} "
                "(use a message id, a unix time, a duration such as 2h, or 'all')"
            )
        rows = store.query(topics=args.topic, since=since, search=args.search, limit=args.limit)
        total = store.count() if not rows else len(rows)
        with_file = [r.message.id for r in rows if r.message.attachment] if args.json else []
        files = store.attachment_paths(with_file) if with_file else {}
    finally:
        store.close()
    out = sys.stdout
    if args.json:
        out.write(dumps([_entry(r, files) for r in rows]) + "\n")
    else:
        import shutil  # only the table needs it; --json callers (scripts) skip the import

        out.write(table(rows, width=shutil.get_terminal_size((100, 20)).columns, total=total))
    return 0


def _entry(row: Stored, files: dict[str, str]) -> dict[str, object]:
    """One message of ``--json``: the envelope, its state and, when its attachment is in the
    cache folder, ``attachment_path`` (a file removed since is left out)."""
    out: dict[str, object] = {**encode(row.message), "state": row.state}
    path = files.get(row.message.id)
    if path is not None and os.path.isfile(path):
        out["attachment_path"] = path
    return out


def table(rows: Sequence[Stored], *, width: int, total: int = 0) -> str:
    """A readable table; control characters in stored text are shown escaped, never raw.

    ``total`` is how many messages the store holds: with no rows, it tells "nothing stored"
    from "a filter that matched nothing".
    """
    if not rows:
        return f"no stored message matches ({total} stored)\n" if total else "no messages stored\n"
    lines = [f"{'TIME':19}  {'TOPIC':16}  P  {'STATE':13}  MESSAGE"]
    for r in rows:
        m = r.message
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.time))
        text = f"{m.title}: {m.message}" if m.title else m.message
        line = f"{when}  {_safe(m.topic, 16):16}  {m.priority}  {r.state:13}  {_safe(text, 500)}"
        lines.append(line[: max(width, 60)])
    return "\n".join(lines) + "\n"


def _safe(text: str, limit: int) -> str:
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 2])
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _rejected(args: argparse.Namespace, cfg: AgentConfig) -> int:
    if args.since or args.search or args.topic:
        raise UsageError("--rejected takes only --limit and --json")
    store = open_store(cfg)
    try:
        rows = store.rejected_list(limit=args.limit)
    finally:
        store.close()
    if args.json:
        sys.stdout.write(dumps([_rejected_json(seq, r) for seq, r in rows]) + "\n")
    else:
        sys.stdout.write(rejected_table(rows))
    return 0


def _rejected_json(seq: int, r: Rejected) -> dict[str, object]:
    return {
        "seq": seq,
        "time": r.time,
        "source": r.source,
        "topic": r.topic,
        "reason": r.reason,
        "size": r.size,
        "payload": r.payload.decode("utf-8", "backslashreplace"),
        "payload_base64": base64.b64encode(r.payload).decode(),
    }


def rejected_table(rows: Sequence[tuple[int, Rejected]]) -> str:
    """One block per rejected payload; everything that came from outside is shown escaped."""
    if not rows:
        return "no rejected payloads\n"
    lines = []
    for _, r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time))
        topic = _safe(r.topic, 60) if r.topic is not None else "(unreadable topic)"
        lines.append(f"{when}  {_safe(r.source, 60)}  {topic}  {r.size} bytes")
        lines.append(f"  reason: {_safe(r.reason, 300)}")
        lines.append(f"  first bytes: {_safe(r.payload[:200].decode('utf-8', 'replace'), 200)}")
    return "\n".join(lines) + "\n"
