"""Analytics query benchmark: the relay's per-day funnel over 100,000 receipts.

Prints one JSON object per scenario, each with its same-run baseline:

- ``funnel_one_topic``: ``Store.funnel_rows`` for one topic over 7 days (what
  ``/v1/stats?topic=T&since=7d`` runs), median of ``--runs``, against the ``/v1/stats`` query
  the relay already ran before (``Store.topic_stats``: counts per topic and state over every
  receipt), and against the same funnel without migration 012's ``messages_topic_time``.
- ``funnel_all_topics``: the same for every topic (``/v1/stats?since=7d``).

The data: 10,000 messages on 20 topics over 10 days, 10 receipts each (5 devices delivered
and displayed, 1 in 4 clicked, 1 in 5 dismissed): 100k+ receipts. Target: under 200 ms.

Run: ``python bench/stats_query.py`` from the checkout (``--runs 3`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.envelope import from_fields  # noqa: E402
from agent.store import Store  # noqa: E402

NOW = 1_800_000_000
MESSAGES = 10_000
TOPICS = 20


def fill(store: Store) -> int:
    start = NOW - 10 * 86400
    msgs = [
        from_fields(
            {"id": f"bench{i:07d}", "message": "m", "time": start + i * 86}, topic=f"t{i % TOPICS}"
        )
        for i in range(MESSAGES)
    ]
    for start in range(0, MESSAGES, 1000):
        store.insert_batch(msgs[start : start + 1000])
    n = 0
    for dev in range(5):
        events = []
        for i, m in enumerate(msgs):
            events += [(m.id, "delivered", m.time + 1.0), (m.id, "displayed", m.time + 2.0)]
            if (i + dev) % 4 == 0:
                events.append((m.id, "clicked", m.time + 3.0 + i % 60))
            elif (i + dev) % 5 == 0:
                events.append((m.id, "dismissed", m.time + 9.0))
        n += store.record_states(events, device=f"dev{dev}", owner="bench")
    return int(store.conn.execute("SELECT count(*) FROM receipts").fetchone()[0])


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        receipts = fill(store)
        since = NOW - 7 * 86400
        one = timed(lambda: store.funnel_rows(since, topics=["t3"]), args.runs)
        every = timed(lambda: store.funnel_rows(since), args.runs)
        base = timed(store.topic_stats, args.runs)
        store.conn.execute("DROP INDEX messages_topic_time")
        one_noidx = timed(lambda: store.funnel_rows(since, topics=["t3"]), args.runs)
        for name, ms, noidx in (("funnel_one_topic", one, one_noidx),
                                ("funnel_all_topics", every, None)):  # fmt: skip
            row = {"scenario": name, "receipts": receipts, "messages": MESSAGES,
                   "ms": round(ms, 2), "baseline_topic_stats_ms": round(base, 2),
                   "ratio": round(ms / base, 2)}  # fmt: skip
            if noidx is not None:
                row["without_012_index_ms"] = round(noidx, 2)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
