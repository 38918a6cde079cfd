"""``python -m edge_relay.demo``: starts a relay and prints a curl line that works."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

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
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, out.read_text()
