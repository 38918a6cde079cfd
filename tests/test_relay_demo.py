"""``python -m edge_relay.demo``: starts a relay and prints a curl line that works."""

from __future__ import annotations

import errno
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from edge_relay import demo
from tests.helpers import child_env, free_port, spawn, wait_for


def test_demo_prints_a_working_curl_line(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    port = free_port()
    with out.open("wb") as f:
        proc = spawn("edge_relay.demo", ["--port", str(port), "--data-dir", str(tmp_path / "d")],
                     env=child_env(), stdout=f, stderr=f)  # fmt: skip
    try:
        text = wait_for(lambda: "Ctrl-C" in out.read_text() and out.read_text(), timeout=30,
                        what="demo instructions")  # fmt: skip
        m = re.search(r'curl -d "([^"]+)" -H "Title: ([^"]+)" (http://127\.0\.0\.1:\d+/\w+)', text)
        assert m is not None, text
        body, title, url = m.groups()
        assert url.startswith(f"http://127.0.0.1:{port}/")
        req = urllib.request.Request(url, data=body.encode(), headers={"Title": title})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(url + "/json?poll=1", timeout=10) as r:
            assert body in r.read().decode()
        # the browser line it prints: that URL gives a browser the web app (issue 17)
        assert f"Or open {url} in a browser" in text, text
        page = urllib.request.Request(url, headers={"Accept": "text/html,*/*;q=0.8"})
        with urllib.request.urlopen(page, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/html")
            assert b"<script" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, out.read_text()


def time_wait_port() -> int:
    """A port with no listener but a connection in TIME_WAIT on it (a restarted demo's)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = int(srv.getsockname()[1])
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn, _ = srv.accept()
        conn.close()  # the server side closes first, so TIME_WAIT is on port's side
        assert client.recv(1) == b""
        client.close()
    srv.close()
    with socket.socket() as plain, pytest.raises(OSError) as busy:
        plain.bind(("127.0.0.1", port))  # what a check without SO_REUSEADDR sees
    assert busy.value.errno == errno.EADDRINUSE
    return port


def test_port_choice_keeps_a_port_in_time_wait_and_skips_a_listened_one() -> None:
    port = time_wait_port()
    assert demo._port(port) == port
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = int(other.getsockname()[1])
        assert demo._port(taken) != taken


def start_demo(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], Path, str]:
    out = tmp_path / "demo.out"
    with out.open("wb") as f:
        proc = spawn("edge_relay.demo", ["--port", str(port), "--data-dir", str(tmp_path / "d")],
                     env=child_env(), stdout=f, stderr=f)  # fmt: skip
    text = wait_for(lambda: "Ctrl-C" in out.read_text() and out.read_text(), timeout=30,
                    what="demo instructions")  # fmt: skip
    return proc, out, text


def stop_demo(proc: subprocess.Popen[bytes], out: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, out.read_text()


def test_restarted_demo_keeps_its_port_through_time_wait(tmp_path: Path) -> None:
    port = time_wait_port()
    proc, out, text = start_demo(tmp_path, port)
    try:
        assert f"a relay is running on http://127.0.0.1:{port}\n" in text, text
    finally:
        stop_demo(proc, out)


def test_demo_prints_the_commands_that_show_its_agent(tmp_path: Path) -> None:
    proc, out, text = start_demo(tmp_path, free_port())
    try:
        home = (tmp_path / "d" / "agent").resolve()
        pushagent = Path(sys.executable).parent / "pushagent"
        expected = [f"  PUSHAGENT_HOME={home} {pushagent} {cmd}" for cmd in ("history", "status")]
        lines = text.splitlines()
        assert all(line in lines for line in expected), text
        history, status = (line.strip() for line in expected)

        def shell(line: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", "-c", line], env=child_env(), capture_output=True,
                                  text=True, timeout=30, check=False)  # fmt: skip

        # the demo says its agent is subscribed: it is, from the first moment that is shown
        first = shell(status)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "state:        connected" in first.stdout, first.stdout
        # and a message sent at once reaches it
        url = re.search(r"curl -s (http://\S+)/json", text)
        assert url is not None, text
        req = urllib.request.Request(url[1], data=b"seen by the demo agent")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        wait_for(lambda: "seen by the demo agent" in shell(history).stdout, timeout=30,
                 what="the message in the printed history command's output")  # fmt: skip
        shown = shell(status)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "state:        connected" in shown.stdout, shown.stdout
        assert "messages:     1 stored" in shown.stdout, shown.stdout
    finally:
        stop_demo(proc, out)
