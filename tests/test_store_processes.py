"""The store across real processes: a writer and `pushagent history` readers side by side,
and SIGKILL of a writer in the middle of a batch (tests/store_writer.py is the writer)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from agent.store import Store
from tests.helpers import ROOT, child_env, pushagent

SIZE = 5000  # one batch: ~1000 progress callbacks of 1000 SQLite steps each


def writer(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_writer", str(db), *args],
        env=child_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def batches(message_ids: list[str]) -> Counter[int]:
    return Counter(int(mid[1:6]) for mid in message_ids)


def test_sigkill_mid_batch_leaves_each_batch_whole_or_absent(tmp_path: Path) -> None:
    db = tmp_path / "data" / "pushagent.db"
    probe = subprocess.run(
        [sys.executable, "-m", "tests.store_writer", str(tmp_path / "probe.db"),
         "--size", str(SIZE), "--count-steps"],
        env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    steps = int(probe.stdout.split("steps ")[1].split()[0])
    assert steps > 100, probe.stdout
    # Kill points from the batch's first rows to just before its COMMIT, as fractions of the
    # steps one batch takes; the later ones have spilled uncommitted pages into the WAL file
    # by then (page cache 2 MB < one batch).
    pause_points = (2, steps * 3 // 10, steps * 7 // 10, steps * 95 // 100)
    for round_no, steps in enumerate(pause_points):
        start = round_no * 2
        proc = writer(db, "--start", str(start), "--batches", "2", "--size", str(SIZE),
                      "--pause-at", str(steps))  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == f"committed {start}"
            line = proc.stdout.readline().strip()
            assert line == "mid", f"writer did not pause: {line!r} {proc.stderr!r}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        with Store(db) as s:
            assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            got = batches([r.message.id for r in s.query(limit=None)])
            # every committed batch whole, every killed batch absent, nothing torn
            assert got == Counter({2 * r: SIZE for r in range(round_no + 1)})
            assert s.get_cursor("src", "sub") == f"w{start:05d}-{SIZE - 1:05d}"
            fts = s.conn.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
            assert fts == SIZE * (round_no + 1)
    # and the database takes new batches afterwards
    done = subprocess.run(
        [sys.executable, "-m", "tests.store_writer", str(db), "--start", "100", "--size", "10"],
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "committed 100" in done.stdout
    with Store(db) as s:
        assert s.count() == SIZE * len(pause_points) + 10


def test_readers_never_see_a_torn_batch_and_nobody_waits_long(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = home / "data" / "pushagent.db"
    Store(db).open().close()  # migrated up front, so the writer and readers only read/write
    stop = tmp_path / "stop"
    size = 200
    proc = writer(db, "--batches", "5000", "--size", str(size), "--until-file", str(stop))
    assert proc.stdout is not None
    seen: list[int] = []
    reader_times: list[float] = []
    try:
        assert proc.stdout.readline().startswith("committed")
        deadline = time.monotonic() + 60
        while len([n for n in seen if n > 0]) < 6 and time.monotonic() < deadline:
            t0 = time.monotonic()
            out = pushagent("history", "--json", "--since", "all", "--limit", "10000000",
                            home=home)  # fmt: skip
            reader_times.append(time.monotonic() - t0)
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)
            got = batches([r["id"] for r in rows])
            k = len(got)
            # a prefix of whole batches, in receive order (newest last)
            assert got == Counter({b: size for b in range(k)}), "torn or gapped batch"
            assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
            assert {r["state"] for r in rows} <= {"received"}
            seen.append(k)
        assert proc.poll() is None, "the writer finished before the readers were done"
    finally:
        stop.touch()
        out_text, err_text = proc.communicate(timeout=60)
    assert proc.returncode == 0, err_text
    assert len([n for n in seen if n > 0]) >= 6
    assert seen == sorted(seen)  # each reader saw at least what the one before it saw
    max_wait = float(out_text.split("max_wait ")[1])
    # Generous bounds for a shared 2-core box; contention would show as seconds (busy_timeout 5 s).
    assert max_wait < 3.0, f"a batch commit waited {max_wait:.2f}s"
    assert max(reader_times) < 10.0, reader_times
    with Store(db) as s:
        final = batches([r.message.id for r in s.query(limit=None)])
    assert final == Counter({b: size for b in range(len(final))})
    assert len(final) >= max(seen)
