"""agent.notify.screen: the D-Bus ids of what is on screen, kept for the next run of the agent
(the end-to-end proof with dunst is in tests/test_desktop_sequence.py)."""

from __future__ import annotations

import json
from pathlib import Path

from agent.notify.screen import KEEP, ScreenMemory


def test_ids_come_back_for_the_same_server_only(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "screen.json"
    mem = ScreenMemory(path)
    mem.attach(":1.7")
    mem.put("alerts", "job-7", 42)
    mem.save()
    assert path.stat().st_mode & 0o777 == 0o600
    again = ScreenMemory(path)
    again.attach(":1.7")
    assert again.get("alerts", "job-7") == 42
    other = ScreenMemory(path)
    other.attach(":1.9")  # the notification server was restarted: its ids mean other things
    assert other.get("alerts", "job-7") is None


def test_forget_and_bound(tmp_path: Path) -> None:
    path = tmp_path / "screen.json"
    mem = ScreenMemory(path)
    mem.attach(":1.7")
    for i in range(KEEP + 5):
        mem.put("t", f"s{i}", i + 1)
    mem.forget("t", f"s{KEEP + 4}")
    mem.save()
    ids = json.loads(path.read_text())["ids"]
    assert len(ids) == KEEP - 1 and "t\ns0" not in ids and "t\ns5" in ids


def test_a_damaged_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "screen.json"
    for text in ("{not json", '["list"]', '{"server": ":1.7", "ids": {"t\\ns": "x", "u\\nv": 3}}'):
        path.write_text(text)
        mem = ScreenMemory(path)
        mem.attach(":1.7")
        assert mem.get("t", "s") is None
    assert mem.get("u", "v") == 3


def test_nothing_written_without_a_known_server(tmp_path: Path) -> None:
    path = tmp_path / "screen.json"
    mem = ScreenMemory(path)
    mem.attach("")
    mem.put("t", "s", 1)
    mem.save()
    assert not path.exists()
