"""The test helpers that other tests' verdicts rest on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import complete_lines, free_port


def test_complete_lines_leaves_out_a_write_in_progress(tmp_path: Path) -> None:
    """What a poller reads while ``--notifier log`` writes: the half line is not a line yet
    (CI failed on '{"id":"W8lIG7mIiTbP' parsed as JSON mid-backlog)."""
    out = tmp_path / "agent.out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b'{"id":"a"}\n{"id":"b"}\n{"id":"W8lI')
        assert [json.loads(x)["id"] for x in complete_lines(out.read_bytes())] == ["a", "b"]
        os.write(fd, b'G7mIiTbP"}\n')
        assert [json.loads(x)["id"] for x in complete_lines(out.read_bytes())] == [
            "a", "b", "W8lIG7mIiTbP"]  # fmt: skip
    finally:
        os.close(fd)
    assert complete_lines(b"") == [] and complete_lines(b"no newline yet") == []


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200
