"""Helpers for the MQTT agent tests: a paho publisher, an agent process, reading outcomes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import child_env, complete_lines, wait_for


def envelope(i: int, prefix: str = "m") -> bytes:
    return json.dumps({"id": f"{prefix}{i:05d}", "message": f"message {i}"}).encode()


class Publisher:
    """A paho QoS 1 publisher that waits for every PUBACK (a broker restart is retried)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, what="publisher connected")

    def publish(self, topic: str, payloads: Iterable[bytes], timeout: float = 60.0) -> None:
        infos = [self.client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Agent:
    """``pushagent run`` as a real process; stdout (``--notifier log``) appends to one file."""

    def __init__(self, home: Path, url: str, *args: str, env: dict[str, str] | None = None):
        self.home = home
        self.url = url
        self.args = args
        self.env = {**child_env(home), **(env or {})}
        self.out = home / "notified.jsonl"
        self.err = home / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_connected: bool = True) -> Agent:
        cmd = [sys.executable, "-m", "agent", "run", "--server", self.url, "--notifier", "log"]
        if not any(a == "--topic" for a in self.args):
            cmd += ["--topic", "t/#"]
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen([*cmd, *self.args], env=self.env, stdout=out, stderr=err)
        if wait_connected:
            try:
                wait_for(lambda: self.status().get("state") == "connected", timeout=30,
                         what=f"agent connected (log: {self.log()[-2000:]})")  # fmt: skip
            except BaseException:
                # The caller never gets this Agent to stop: a process left running would
                # fail a later test with a ResourceWarning (CI did, twice).
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        return self

    def status(self) -> dict[str, Any]:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            data = json.loads((self.home / "data" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if data.get("pid") == (self.proc.pid if self.proc else None) else {}

    def log(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM; the agent must be gone within ``timeout`` seconds."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def notified(self) -> Counter[str]:
        """How often each id was printed by ``--notifier log`` across every run."""
        if not self.out.exists():
            return Counter()
        lines = complete_lines(self.out.read_bytes())
        return Counter(json.loads(line)["id"] for line in lines)


def stored_ids(home: Path) -> list[str]:
    db = home / "data" / "pushagent.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY seq")]
    finally:
        conn.close()


def assert_exactly(ids: Sequence[str], expected: Iterable[str]) -> None:
    exp = sorted(expected)
    counts = Counter(ids)
    dupes = [i for i, n in counts.items() if n > 1]
    missing = sorted(set(exp) - set(ids))
    extra = sorted(set(ids) - set(exp))
    assert not dupes and not missing and not extra, (
        f"{len(dupes)} duplicated {dupes[:5]}, {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} unexpected {extra[:5]}"
    )
