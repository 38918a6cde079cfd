"""``pushagent status [--json]``: what the running agent is doing, from its data directory.

The daemon rewrites ``status.json`` in its data directory on every state change (server,
state, since, last message id, pid, and the store's health: ``ok`` or why its last commit
failed). This command reads it, checks that the pid is alive (a file left by a killed daemon
is stale: "not running"), and adds what the store knows now: the outbox length, the number
of stored messages and the last message's time — and ``store``, which also says ``disk
full`` when the store's file system has no room left (the daemon cannot even rewrite its
status file then) or why the store cannot be opened (``agent.health``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from agent import dnd, health
from agent.commands import common, load_config
from agent.commands.pause import FOREVER
from agent.errors import StoreError
from agent.store import Store

KEYS = ("server", "state", "since", "last_message_id", "outbox", "messages", "store",
        "paused_until")  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="show the running agent's server, connection state and queues",
        description="Show the running agent's current server, connection state (connected, "
        "connecting, offline) and since when, the last message, the outbox length and the "
        "number of stored messages, and whether notifications are paused (until when). Exit "
        "code 0 when a daemon is running, 3 when none is.",
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--probe",
        action="store_true",
        help="ask each MQTT server now whether it speaks MQTT 5 or 3.1.1 (and remember it)",
    )
    p.set_defaults(func=status)


def pid_alive(pid: object) -> bool:
    """True when ``pid`` names a running process (ours or another user's)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_status(path: Path) -> dict[str, Any] | None:
    """The daemon's status file, or None when absent or unreadable (mid-rewrite is atomic)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report(
    raw: dict[str, Any] | None,
    *,
    alive: bool,
    counts: dict[str, Any],
    free: int | None = None,
) -> dict[str, Any]:
    """The status object (pure): the daemon's view if it runs, else ``offline``; ``free`` is
    the store's file system's free bytes."""
    out: dict[str, Any] = dict.fromkeys(KEYS)
    out.update(counts)
    out["running"] = alive
    out["store"] = health.OK
    if raw is not None and alive:
        keys = ("server", "state", "since", "last_message_id", "pid", "client_id", "store",
                "store_error", "store_since", "last_error", "retry_in")  # fmt: skip
        for key in keys:
            if key in raw:
                out[key] = raw[key]
    else:
        out["state"] = "offline"
        out["server"] = raw.get("server") if raw else None
        if raw is not None and "pid" in raw:
            out["stale_pid"] = raw["pid"]
    if counts.get("last_message_id") and not out.get("last_message_id"):
        out["last_message_id"] = counts["last_message_id"]
    if counts.get("store_error"):  # what we saw ourselves, now, beats the daemon's record
        out["store"] = health.store_problem(counts["store_error"])
        out["store_error"] = counts["store_error"]
    elif free is not None and health.disk_full(free):
        out["store"] = "disk full"
        out["store_error"] = f"{free // 1024} KiB free on the store's file system"
    if not isinstance(out["store"], str) or not out["store"]:
        out["store"] = health.OK  # a status file from before the store field
    return out


def free_bytes(folder: Path) -> int | None:
    """Free bytes on ``folder``'s file system for us (root may use the reserved blocks)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _counts(db: Path) -> dict[str, Any]:
    if not db.exists():
        return {"outbox": 0, "messages": 0, "paused_until": None}
    with Store(db) as store:
        last = store.last_message()
        return {
            "outbox": store.outbox_len(),
            "messages": store.count(),
            "last_message_id": last.message.id if last else None,
            "last_message_time": last.message.time if last else None,
            "paused_until": dnd.paused_until(store, time.time()),
        }


def status(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    raw = read_status(cfg.paths.status_file)
    alive = raw is not None and pid_alive(raw.get("pid"))
    try:
        counts = _counts(cfg.paths.db)
    except StoreError as exc:
        counts = {"outbox": None, "messages": None, "store_error": str(exc), "paused_until": None}
    out = report(raw, alive=alive, counts=counts, free=free_bytes(cfg.paths.db.parent))
    extra: list[str] = []
    if args.probe:  # imported only here: it pulls in paho and the keyring
        from agent.commands import mqttprobe

        out["protocols"] = mqttprobe.probe(cfg)
        extra = mqttprobe.text(out["protocols"])
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join([_text(out), *extra]))
    return 0 if alive else 3


def _when(t: object) -> str:
    if not isinstance(t, int | float) or isinstance(t, bool):
        return "?"
    ago = max(0, int(time.time() - t))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{stamp} ({_ago(ago)} ago)"


def _ago(s: int) -> str:
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def _text(o: dict[str, Any]) -> str:
    if not o["running"]:
        stale = f" (stale status from pid {o['stale_pid']})" if o.get("stale_pid") else ""
        head = f"no pushagent daemon is running{stale}; start one with: pushagent run"
        lines = [head]
        if o.get("server"):
            lines.append(f"last server:  {o['server']}")
    else:
        lines = [
            f"server:       {o['server']}",
            f"state:        {o['state']} since {_when(o['since'])}",
        ]
        if o.get("last_error") and o["state"] != "connected":
            lines.append(f"last error:   {o['last_error']}{_retry(o.get('retry_in'))}")
    if o.get("last_message_id"):
        lines.append(f"last message: {o['last_message_id']} at {_when(o.get('last_message_time'))}")
    lines.append(f"outbox:       {o['outbox']} waiting")
    lines.append(f"messages:     {o['messages']} stored")
    lines.append(f"store:        {_store(o)}")
    lines.append(f"notifications: {_paused(o.get('paused_until'))}")
    return "\n".join(lines)


def _paused(until: object) -> str:
    """``shown``, or until when they are held back (``pushagent pause``)."""
    if not isinstance(until, int | float) or isinstance(until, bool):
        return "shown"
    if until >= FOREVER:
        return "paused until 'pushagent resume'"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(until))
    return f"paused until {stamp} (pushagent resume ends it)"


def _retry(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    if seconds >= 60:  # the cap: a refusal a person must fix
        return f" (retrying every {seconds:.0f} s)"
    return f" (retrying in {seconds:.1f} s)"


def _store(o: dict[str, Any]) -> str:
    if o["store"] == health.OK:
        return health.OK
    since = f" since {_when(o['store_since'])}" if o.get("store_since") else ""
    why = f" ({o['store_error']})" if o.get("store_error") else ""
    return f"{o['store']}{since}{why}"
