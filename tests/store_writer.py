"""A writer process for the store's process tests (run as ``python -m tests.store_writer``).

``--batches N --size S``: insert N batches of S messages, ids ``w{batch:05d}-{i:05d}``, each
with the cursor ``("src", "sub")``; print ``committed K`` after each commit.
``--pause-at STEP``: in the LAST batch, stop inside the transaction after STEP progress
callbacks (of 1000 SQLite VM steps each), print ``mid``, and wait to be killed.
``--count-steps``: print ``steps N``, the progress callbacks one batch takes (so a test can
choose pause points inside the transaction whatever the store's internals are).
``--until-file PATH``: keep inserting batches until PATH exists (at most N batches).
Prints ``max_wait SECONDS`` (the longest insert_batch) before a normal exit.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

from agent.envelope import from_fields
from agent.store import Store


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--batches", type=int, default=1)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--pause-at", type=int)
    p.add_argument("--until-file")
    p.add_argument("--count-steps", action="store_true")
    p.add_argument("--start", type=int, default=0)
    a = p.parse_args()
    store = Store(Path(a.db)).open()
    text = "sensor reading " * 8
    max_wait = 0.0
    for k in range(a.start, a.start + a.batches):
        if a.until_file and Path(a.until_file).exists():
            break
        batch = [
            from_fields({"id": f"w{k:05d}-{i:05d}", "message": f"{text}{k} {i}", "time": 1000 + k})
            for i in range(a.size)
        ]
        if a.pause_at is not None and k == a.start + a.batches - 1:
            _pause_inside_transaction(store, a.pause_at)
        steps = Counter()
        if a.count_steps:
            store.conn.set_progress_handler(partial(_count, steps), 1000)
        t0 = time.monotonic()
        store.insert_batch(batch, source="src", cursor=("src", "sub"))
        if a.count_steps:
            print(f"steps {steps['n']}", flush=True)
        max_wait = max(max_wait, time.monotonic() - t0)
        print(f"committed {k}", flush=True)
    print(f"max_wait {max_wait:.3f}", flush=True)
    store.close()
    return 0


def _count(steps: Counter[str]) -> int:
    steps["n"] += 1
    return 0


def _pause_inside_transaction(store: Store, steps: int) -> None:
    calls = 0

    def progress() -> int:
        nonlocal calls
        calls += 1
        if calls == steps:
            print("mid", flush=True)
            time.sleep(120)  # the test SIGKILLs us here, inside the open transaction
        return 0

    store.conn.set_progress_handler(progress, 1000)


if __name__ == "__main__":
    sys.exit(main())
