"""What migration 013's re-alert triggers cost the store's ingest and retention.

Prints one JSON object per scenario, each against its same-run baseline: the same store
with every migration but ``013_ack`` (no triggers on ``messages``).

- ``ingest_plain``: 10k plain envelopes (no extra fields: the trigger's WHEN is false at once).
- ``ingest_extra``: 10k envelopes with extra fields (an icon), not ack-required: the trigger
  reads the JSON to find out.
- ``ingest_ack``: 10k ack-required envelopes: each gets its schedule row.
- ``prune_*``: deleting those 10k messages again (the delete trigger drops schedule rows).

Batches of 1000, CPU seconds of this process (median of ``--rounds``); target ratio <= 1.2
for messages that do not ask for an ack (the ack-required ones pay for their schedule row).
Run: ``python bench/ack_triggers.py`` from the checkout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.envelope import Message, new_id  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.store import base as store_base  # noqa: E402
from agent.store.migrations import MIGRATIONS  # noqa: E402

TOTAL = 10_000
BATCH = 1000
WITHOUT = tuple(m for m in MIGRATIONS if m[0] != "013_ack")
EXTRAS: dict[str, dict[str, Any] | None] = {
    "ingest_plain": None,
    "ingest_extra": {"icon": "https://example.org/i.png"},
    "ingest_ack": {"ack": "required", "ack_retry": 60, "ack_expire": 3600},
}


def messages(extra: dict[str, Any] | None) -> list[Message]:
    now = int(time.time())
    return [Message(id=new_id(), time=now, topic="bench", message=f"m {i}",
                    extra=dict(extra) if extra else {}) for i in range(TOTAL)]  # fmt: skip


def one(tmp: Path, migrations: Any, extra: dict[str, Any] | None) -> tuple[float, float]:
    """(ingest CPU s, prune CPU s) for one fresh store."""
    store_base.MIGRATIONS = migrations
    msgs = messages(extra)
    with Store(tmp / f"{new_id()}.db") as store:
        t0 = time.process_time()
        for i in range(0, TOTAL, BATCH):
            store.insert_batch(msgs[i : i + BATCH])
        t1 = time.process_time()
        store.mark_notified(10**9)
        store.prune(max_age=0, max_messages=0, now=time.time() + 10)
        t2 = time.process_time()
    return t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, extra in EXTRAS.items():
            got: dict[str, list[float]] = {"with": [], "without": []}
            prunes: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(args.rounds):  # interleaved: the machine's noise hits both alike
                for label, migs in (("without", WITHOUT), ("with", MIGRATIONS)):
                    ingest, prune = one(tmp, migs, extra)
                    got[label].append(ingest)
                    prunes[label].append(prune)
            target = None if name == "ingest_ack" else 1.2  # ack rows are the point there
            report(name, got, target)
            report(name.replace("ingest", "prune"), prunes, target)


def report(name: str, got: dict[str, list[float]], target: float | None) -> None:
    w, wo = statistics.median(got["with"]), statistics.median(got["without"])
    print(json.dumps({"scenario": name, "messages": TOTAL, "cpu_s_with_013": round(w, 4),
                      "cpu_s_without_013": round(wo, 4), "ratio": round(w / wo, 3),
                      "target_ratio": target}))  # fmt: skip


if __name__ == "__main__":
    main()
