"""``pushagent read ID|--all``: mark messages read and queue ``read`` receipts."""

from __future__ import annotations

import argparse
import time

from agent.commands import common, load_config, open_store
from agent.config import AgentConfig
from agent.envelope import check_id
from agent.errors import MessageError, UsageError
from agent.service import client_id, receipt_destination
from agent.statesync import state_prefix
from agent.store import Store

UNREAD = ("received", "delivered", "displayed", "dismissed", "clicked")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "read",
        help="mark messages read",
        description="Mark one message (by ID) or all messages read; the publisher gets a "
        "'read' receipt and the user's other devices close it, the next time the agent is "
        "connected.",
    )
    common(p)
    p.add_argument("id", nargs="*", metavar="ID", help="message id(s)")
    p.add_argument("--all", action="store_true", help="every stored message not yet read")
    p.set_defaults(func=run)


def mark_read(cfg: AgentConfig, store: Store, ids: list[str] | None) -> int:
    """Record ``read`` for ``ids`` (None: every unread message). Returns how many."""
    if ids is None:
        ids = [s.message.id for s in store.query(newest=False) if s.state in UNREAD]
    if not ids:
        return 0
    now = time.time()
    # the receipt (and, for MQTT, the state topic's item) tells the user's other devices,
    # which take it off their screens (agent.statesync); the running agent sends them
    return store.record_states(
        [(i, "read", now) for i in ids], receipt_destination=receipt_destination(cfg, store),
        device=client_id(cfg, store), device_name=cfg.device_name, state_prefix=state_prefix(cfg),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.all):
        raise UsageError("read: give message ID(s) or --all (not both)")
    try:
        ids = [check_id(i) for i in args.id] if args.id else None
    except MessageError as exc:
        raise UsageError(f"read: {exc}") from None
    cfg = load_config(args)
    if cfg.paths.db.exists():
        store = open_store(cfg)
        try:
            count = mark_read(cfg, store, ids)
        finally:
            store.close()
    else:
        count = 0  # nothing stored yet: nothing to mark, and no database to create for it
    if ids is not None and count < len(ids):
        missing = len(ids) - count
        print(f"marked {count} read; {missing} id(s) not found")
        return 1
    print(f"marked {count} message{'s' if count != 1 else ''} read")
    return 0
