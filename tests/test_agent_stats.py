"""``pushagent stats`` (issue 16): the user's own engagement per topic and tag, and a rule
suggested for what they always dismiss, from a store filled by a real agent run.

mosquitto → ``pushagent run --notifier desktop`` → dunst; the test clicks and closes the
notifications through ``dunstctl`` as a user would, one at a time, and a ``mute`` rule holds
one topic back. The numbers printed by ``pushagent stats --json`` are asserted exactly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store
from tests.desktop import Desktop
from tests.helpers import child_env, pushagent, spawn, wait_for
from tests.mosquitto import Mosquitto
from tests.test_notify_e2e import _connected

pytestmark = pytest.mark.desktop


def publish(broker: Mosquitto, topic: str, body: dict[str, Any]) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
         "-m", json.dumps(body)],
        check=True, timeout=20,
    )  # fmt: skip


def state_of(home: Path, mid: str) -> str | None:
    with Store(home / "data" / "pushagent.db") as s:
        stored = s.get(mid)
    return stored.state if stored else None


def test_engagement_and_suggestion_from_a_real_agent_run(
    desktop: Desktop, mosquitto: Mosquitto, home: Path, tmp_path: Path
) -> None:
    (home / "config.toml").write_text(
        f'servers = ["{mosquitto.url}"]\ntopics = ["ci/#", "home/#", "noise/#"]\n'
        'notifier = "desktop"\n[desktop]\nopener = ["true"]\n'
        '[[rules]]\ntopic = "noise/*"\nmute = true\n'
    )
    with (tmp_path / "agent.log").open("wb") as log:
        agent = spawn("agent", ["run"], env={**child_env(home), **desktop.env}, stderr=log)
    try:
        wait_for(lambda: _connected(home), timeout=30, what="agent connected and subscribed")
        # each on screen alone, then closed (dismissed) or clicked, as a user would
        plan = [("ci/build", 3, "ci", "close")] * 3 + [("ci/deploy", 2, "ci", "close")] * 2
        plan += [("home/door", 4, "door", "action"), ("home/door", 4, "door", None)]
        for i, (topic, prio, tag, act) in enumerate(plan):
            mid = f"stat{i:04d}"
            publish(mosquitto, topic, {"id": mid, "message": f"m{i}", "priority": prio,
                                       "tags": [tag]})  # fmt: skip
            wait_for(lambda: desktop.count("displayed") == 1, timeout=30, what=f"{mid} shown")
            wait_for(lambda mid=mid: state_of(home, mid) == "displayed", timeout=30)
            if act == "close":
                desktop.dunstctl("close")
                wait_for(lambda mid=mid: state_of(home, mid) == "dismissed", timeout=30)
            elif act == "action":
                desktop.dunstctl("action", "0")
                wait_for(lambda mid=mid: state_of(home, mid) == "clicked", timeout=30)
                desktop.dunstctl("close-all")  # a click leaves it on screen (dunst)
                wait_for(lambda: desktop.count("displayed") == 0, timeout=30)
        for i in range(3):  # muted by the rule: stored, never shown
            publish(mosquitto, "noise/x", {"id": f"mute{i:04d}", "message": "n", "tags": ["ci"]})
        with Store(home / "data" / "pushagent.db") as s:
            wait_for(lambda: s.conn.execute("SELECT count(*) FROM held").fetchone()[0] == 3,
                     timeout=30, what="muted messages recorded")  # fmt: skip
    finally:
        agent.terminate()
        agent.wait(20)
        if agent.stdout is not None:
            agent.stdout.close()
    done = pushagent("stats", "--json", "--min-sample", "5", home=home)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    def row(received: int, shown: int, clicked: int, dismissed: int, muted: int) -> Any:
        rate = round(dismissed / shown, 4) if shown else None
        return {"received": received, "shown": shown, "clicked": clicked,
                "dismissed_unread": dismissed, "muted": muted, "held": 0,
                "dismissed_rate": rate}  # fmt: skip

    assert report["topics"] == {
        "ci/build": row(3, 3, 0, 3, 0), "ci/deploy": row(2, 2, 0, 2, 0),
        "home/door": row(2, 2, 1, 0, 0), "noise/x": row(3, 0, 0, 0, 3),
    }  # fmt: skip
    assert report["tags"] == {"ci": row(8, 5, 0, 5, 3), "door": row(2, 2, 1, 0, 0)}
    assert [s["rule"] for s in report["suggestions"]] == [{"topic": "ci/*", "min_priority": 4}]
    assert report["suggestions"][0]["text"] == (
        "ci/*: 100 % dismissed unread (5 of 5 shown) — `min_priority = 4`?"
    )
    # the default sample size (20) is not reached: no suggestion, same numbers
    plain = pushagent("stats", "--since", "1d", home=home)
    assert plain.returncode == 0, plain.stderr
    text = plain.stdout.decode()
    assert "suggestion" not in text
    assert text.splitlines()[1].split() == ["ci/build", "3", "3", "0", "3", "0"]


def test_stats_without_a_store_or_with_bad_flags(home: Path) -> None:
    done = pushagent("stats", "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["topics"] == {} and list(home.iterdir()) == []
    assert pushagent("stats", home=home).stdout == b"no messages in this window\n"
    bad = pushagent("stats", "--since", "lately", home=home)
    assert bad.returncode == 2 and b"--since" in bad.stderr
    bad = pushagent("stats", "--threshold", "2", home=home)
    assert bad.returncode == 2 and b"--threshold" in bad.stderr
