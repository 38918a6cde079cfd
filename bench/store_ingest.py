"""Store benchmarks: batched ingest versus bare SQLite, and `pushagent history` latency.

Prints one JSON object per scenario, each with its same-run baseline:

- ``ingest_batch_<N>``: messages/s of ``Store.insert_batch`` for 10k envelopes in batches of N
  versus a bare ``executemany`` (pre-built row tuples, one transaction per batch) into the
  same schema (the store's own migrations: UNIQUE id, indexes, FTS5 table) with the same
  pragmas (WAL, synchronous=FULL). Since migration 003 the FTS index is no longer filled by a
  trigger but by one ``INSERT ... SELECT`` per batch, so the baseline runs that same statement:
  an equivalent table is one ``history --search`` can search. Median of ``--rounds``; target
  ratio >= 0.8.
- ``history_limit_50``: whole-command wall time of ``python -m agent history --limit 50`` on a
  100k-message cache (median of ``--runs``) versus ``python -c pass``; target < 150 ms.
  ``history_search_limit_50`` is the same with ``--search`` matching every message.

Run: ``python bench/store_ingest.py`` from the checkout (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.envelope import Message, from_fields  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.store.schema import _INSERT, _row  # noqa: E402

TOTAL = 10_000


def envelopes(n: int, prefix: str) -> list[Message]:
    """Realistic envelopes: a title, a sentence, two tags, one in five with an extra field."""
    out = []
    for i in range(n):
        fields: dict[str, object] = {
            "id": f"{prefix}{i:07d}",
            "time": 1_700_000_000 + i,
            "title": f"Sensor {i % 50}",
            "message": f"temperature {20 + i % 7}.{i % 10} C in room {i % 13}, all nominal",
            "priority": 1 + i % 5,
            "tags": ["sensor", f"room{i % 13}"],
        }
        if i % 5 == 0:
            fields["battery"] = 0.5
        out.append(from_fields(fields, topic=f"home/sensor/{i % 50}"))
    return out


def store_rate(tmp: Path, msgs: list[Message], batch: int) -> tuple[float, float]:
    """(messages/s of wall time, CPU seconds) for ``Store.insert_batch`` in batches."""
    with Store(tmp / "store.db") as store:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(msgs), batch):
            store.insert_batch(msgs[i : i + batch], source="bench", cursor=("bench", "all"))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert store.count() == len(msgs)
    return len(msgs) / elapsed, cpu


FTS_FILL = (
    "INSERT INTO messages_fts (rowid, title, message, tags) "
    "SELECT seq, title, message, tags FROM messages WHERE seq > ?"
)


def bare_rate(tmp: Path, msgs: list[Message], batch: int) -> tuple[float, float]:
    """The same for a bare ``executemany`` of pre-built rows into the identical schema."""
    path = tmp / "bare.db"
    Store(path).open().close()  # the identical schema, created by the store's migrations
    rows = [_row(m, "bench", time.time()) for m in msgs]  # built outside the timing
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            before = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
            conn.executemany(_INSERT, rows[i : i + batch])
            conn.execute(FTS_FILL, (before,))  # what keeps the table searchable (migration 003)
            conn.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == len(rows)
    finally:
        conn.close()
    return len(rows) / elapsed, cpu


def ingest(batch: int, rounds: int) -> dict[str, object]:
    msgs = envelopes(TOTAL, "m")
    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for r in range(rounds):
        # Both in every round, in alternating order, so both see the same machine noise.
        for which in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
            with tempfile.TemporaryDirectory() as d:
                if which == "ours":
                    ours.append(store_rate(Path(d), msgs, batch))
                else:
                    bare.append(bare_rate(Path(d), msgs, batch))
    o, b = statistics.median(x for x, _ in ours), statistics.median(x for x, _ in bare)
    oc, bc = statistics.median(c for _, c in ours), statistics.median(c for _, c in bare)
    return {
        "scenario": f"ingest_batch_{batch}",
        "messages": TOTAL,
        "batch": batch,
        "rounds": rounds,
        "store_msgs_per_s": round(o),
        "bare_executemany_msgs_per_s": round(b),
        "ratio": round(o / b, 3),
        # CPU per message, bare / store: the same comparison without the waits for a core
        # and for fsync that dominate wall time on a shared machine.
        "cpu_ratio": round(bc / oc, 3),
        "target_ratio": 0.8,
    }


def wall_ms(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``, in milliseconds.

    CPU time is reported too because wall time on a shared box includes waiting for a core.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = (time.perf_counter() - t0) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu


def history_latency(runs: int, cache: int) -> list[dict[str, object]]:
    """`history --limit 50` (also with --search) on one cache, interleaved with the baseline."""
    variants = {
        "history_limit_50": ["history", "--limit", "50"],
        "history_search_limit_50": ["history", "--limit", "50", "--search", "nominal"],
    }
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        with Store(home / "data" / "pushagent.db") as store:
            for i in range(0, cache, 10_000):
                store.insert_batch(envelopes(min(10_000, cache - i), f"h{i:07d}-"))
            store.mark_notified(cache)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHAGENT_")}
        # An installed package has its bytecode compiled; so must the checkout being measured.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(PUSHAGENT_HOME=str(home), PYTHONPATH=str(ROOT))
        startup = [sys.executable, "-c", "pass"]
        argvs = {k: [sys.executable, "-m", "agent", *a] for k, a in variants.items()}
        for argv in argvs.values():
            wall_ms(argv, env)  # writes __pycache__ and warms the page cache, like a 2nd run
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in [*argvs, "startup"]}
        for _ in range(runs):
            for name, argv in argvs.items():
                times[name].append(wall_ms(argv, env))
            times["startup"].append(wall_ms(startup, env))
    base = times.pop("startup")
    p = statistics.median(w for w, _ in base)
    out = []
    for name, ours in times.items():
        h = statistics.median(w for w, _ in ours)
        out.append(
            {
                "scenario": name,
                "cache_messages": cache,
                "runs": runs,
                "history_median_ms": round(h, 1),
                "history_p90_ms": round(sorted(w for w, _ in ours)[int(0.9 * (runs - 1))], 1),
                "history_cpu_median_ms": round(statistics.median(c for _, c in ours), 1),
                "python_startup_median_ms": round(p, 1),
                "python_startup_cpu_median_ms": round(statistics.median(c for _, c in base), 1),
                "overhead_ms": round(h - p, 1),
                "target_ms": 150,
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller cache")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", choices=("ingest", "history"))
    args = parser.parse_args()
    rounds, runs, cache = (args.rounds, args.runs, 100_000)
    if args.quick:
        rounds, runs, cache = 1, 3, 10_000
    if args.only != "history":
        for batch in (100, 1000, 10_000):
            print(json.dumps(ingest(batch, rounds)), flush=True)
    if args.only != "ingest":
        for result in history_latency(runs, cache):
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
