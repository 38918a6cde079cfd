"""Attachments for an agent that was not running, with real processes: an ``edge-relay``
subprocess and ``pushagent run`` subprocesses (stopped, started, SIGKILLed mid-download).

The second file is an external one (ntfy's ``Attach:``) on a small HTTP server in the test
that sends half of it and then stalls, so the agent can be killed with a half-written
temporary file in its cache folder.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.helpers import pushagent, wait_for
from tests.relay import Relay
from tests.relay_proc import AgentProc
from tests.test_desktop_sequence import png

SNAPSHOT = png() + b"a door snapshot"
CLIP = png() + bytes(range(256)) * 400  # ~100 KB, an image as far as sniffing goes


class _HalfOnce(BaseHTTPRequestHandler):
    """The first GET gets half of CLIP and then nothing (until ``release``); later ones all."""

    gets: ClassVar[int] = 0
    stalling = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        _HalfOnce.gets += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(CLIP)))
        self.end_headers()
        if _HalfOnce.gets == 1:
            self.wfile.write(CLIP[: len(CLIP) // 2])
            self.wfile.flush()
            _HalfOnce.stalling.set()
            _HalfOnce.release.wait(60)
            return
        self.wfile.write(CLIP)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def half_once() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HalfOnce)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/clip.png"
    _HalfOnce.release.set()
    httpd.shutdown()
    httpd.server_close()


def cached(home: Path) -> list[Path]:
    folder = home / "cache" / "attachments"
    return sorted(folder.iterdir()) if folder.exists() else []


def history(home: Path) -> dict[str, dict[str, Any]]:
    r = pushagent("history", "--json", home=home)
    assert r.returncode == 0, r.stderr
    return {m["id"]: m for m in json.loads(r.stdout)}


def test_a_stopped_agent_gets_its_files_at_start_even_after_a_kill_mid_download(
    tmp_path: Path, half_once: str
) -> None:
    relay = Relay(tmp_path / "relay").start()
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProc(home, ["--server", relay.url, "--topic", "door"])
    try:
        agent.start()  # subscribed once, so its position is known; then stopped
        wait_for(lambda: "subscribed" in agent.stderr(), timeout=30, what=agent.stderr())
        agent.stop()

        status, answer = relay.request("PUT", "/door", SNAPSHOT, {"Filename": "door.png"})
        assert status == 200, answer
        snap = answer["id"]
        clip = relay.publish("door", "clip", Attach=half_once)["id"]

        agent.start()  # offline meanwhile: both arrive as its backlog
        want = home / "cache" / "attachments" / f"{snap}.png"
        wait_for(want.exists, timeout=30, what=f"the snapshot in the cache\n{agent.stderr()}")
        assert want.read_bytes() == SNAPSHOT
        wait_for(_HalfOnce.stalling.is_set, timeout=30, what="the clip's download under way")
        assert any(p.name.startswith(".tmp-") for p in cached(home)), cached(home)
        agent.kill()  # SIGKILL with half of the clip written

        agent.start()  # the half-written file goes; the download is found again and done
        done = home / "cache" / "attachments" / f"{clip}.png"
        wait_for(done.exists, timeout=30, what=f"the clip after the restart\n{agent.stderr()}")
        agent.stop()
    finally:
        agent.stop()
        assert relay.stop() == 0
    assert done.read_bytes() == CLIP and _HalfOnce.gets == 2
    assert [p.name for p in cached(home)] == sorted([f"{snap}.png", f"{clip}.png"])
    listed = history(home)  # the relay is gone: the files and their paths are still there
    assert Path(listed[snap]["attachment_path"]).read_bytes() == SNAPSHOT
    assert Path(listed[clip]["attachment_path"]).read_bytes() == CLIP
    assert "Traceback" not in agent.stderr()


class _HalfForever(BaseHTTPRequestHandler):
    """Half of CLIP, then nothing until the test ends."""

    stalling = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(CLIP)))
        self.end_headers()
        self.wfile.write(CLIP[: len(CLIP) // 2])
        self.wfile.flush()
        _HalfForever.stalling.set()
        _HalfForever.release.wait(120)

    def log_message(self, *args: Any) -> None:
        pass


def test_sigterm_ends_a_stalled_download_at_once(tmp_path: Path) -> None:
    """A download blocked on a read (the server sent half and went quiet; the read timeout
    is 30 s) does not hold up the agent's exit: its socket is shut down."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HalfForever)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    relay = Relay(tmp_path / "relay").start()
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProc(home, ["--server", relay.url, "--topic", "door"])
    try:
        agent.start()
        wait_for(lambda: "subscribed" in agent.stderr(), timeout=30, what=agent.stderr())
        relay.publish("door", "clip", Attach=f"http://127.0.0.1:{httpd.server_address[1]}/c.png")
        wait_for(_HalfForever.stalling.is_set, timeout=30, what="the download under way")
        assert agent.proc is not None
        started = time.monotonic()
        agent.proc.terminate()
        code = agent.proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        _HalfForever.release.set()
        agent.stop()
        assert relay.stop() == 0
        httpd.shutdown()
        httpd.server_close()
    assert code == 0 and took < 8, f"exit {code} after {took:.1f} s"
    assert not [p for p in cached(home) if p.name.startswith(".tmp-")], "no half file left"
    assert "Traceback" not in agent.stderr()
