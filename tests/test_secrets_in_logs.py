"""Secrets never reach a log line, whoever's logger printed it (agent.redact).

Real processes: an agent at ``-vv`` (websockets prints its request headers at DEBUG) with a
real token against a real relay with auth, and a relay fed request lines carrying
``?auth=`` that aiohttp refuses and logs. Plus the pure redaction rules and the filter on
records formatted lazily (secret in ``args``, in a traceback).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agent import redact
from tests.helpers import child_env, wait_for
from tests.relay_proc import Publisher, RelayProc

TOKEN = "tk_" + "a1B2c3D4e5" * 2 + "f6G7h8I9j"  # the relay's shape: tk_ + 29


@pytest.mark.parametrize(
    ("text", "kept", "secret"),
    [
        ("> Authorization: Bearer tk_abcdef1234", "Authorization: Bearer [redacted]", "tk_abc"),
        ("{'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "'Authorization': 'Basic [redacted]",
         "dXNlcjpw"),
        ("proxy-authorization: s3cr3t-value", "proxy-authorization: [redacted]", "s3cr3t"),
        ('b"GET /t/ws?since=all&auth=QmVhcmVyIHRr HTTP/1.1"', "&auth=[redacted] HTTP/1.1",
         "QmVhcmVy"),
        ("GET /t/json?auth=QmVhcmVyIHRr", "?auth=[redacted]", "QmVhcmVy"),
        ("sent bearer abcdefghijkl to x", "bearer [redacted] to x", "abcdefghijkl"),
        ("token tk_ZZZZ9999 refused", "token tk_[redacted] refused", "ZZZZ9999"),
        ("mqtt://alice:hunter2@broker:1883", "mqtt://alice:[redacted]@broker:1883", "hunter2"),
    ],
)  # fmt: skip
def test_redact_keeps_the_shape_and_drops_the_credential(text: str, kept: str, secret: str) -> None:
    out = redact.redact(text)
    assert kept in out and secret not in out
    assert redact.redact(out) == out  # idempotent: a second handler changes nothing


def test_redact_leaves_ordinary_lines_alone() -> None:
    for text in ("authorization failed for user bob", "author=me", "3 messages stored",
                 "GET /t/json?since=all HTTP/1.1", "token 'laptop' revoked"):  # fmt: skip
        assert redact.redact(text) == text


def test_filter_redacts_lazy_args_and_tracebacks() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    record = logging.LogRecord("websockets.client", logging.DEBUG, __file__, 1,
                               "> headers %r", (headers,), None)  # fmt: skip
    try:
        raise ValueError(f"refused GET /x?auth={TOKEN}")
    except ValueError:
        record.exc_info = sys.exc_info()
    handler = logging.StreamHandler()
    redact.install(_logger_with(handler))
    assert handler.filter(record)
    line = logging.Formatter("%(message)s").format(record)
    assert TOKEN not in line and "{'Authorization': 'Bearer [redacted]'}" in line
    assert line.endswith("ValueError: refused GET /x?auth=[redacted]")
    assert record.args is None  # nothing left for a later formatter to re-insert


def _logger_with(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test-redact-{id(handler)}")
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def _token(tmp_path: Path) -> tuple[Path, str]:
    auth = tmp_path / "auth.json"
    made = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth), "add", "laptop",
         "--read", "sec*", "--write", "sec*"],
        env=child_env(), capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return auth, made.stdout.decode().strip()


def test_agent_at_debug_never_logs_its_token(tmp_path: Path) -> None:
    auth, token = _token(tmp_path)
    relay = RelayProc(tmp_path / "relay", extra_args=["--auth-file", str(auth)]).start()
    home = tmp_path / "agent"
    home.mkdir()
    err = home / "agent.err"
    with err.open("wb") as f:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "-vv", "run", "--server", relay.url.replace("http",
             "ws"), "--topic", "sec1", "--notifier", "log"],
            env=child_env(home, PUSHAGENT_TOKEN=token), stdout=subprocess.DEVNULL, stderr=f,
        )  # fmt: skip
    pub = Publisher(relay.port, token)
    try:
        wait_for(lambda: b"subscribed" in err.read_bytes(), timeout=30, what="the subscription")
        mid = pub.publish("sec1", "hello")  # a receipt POST follows, with the token too
        wait_for(lambda: "delivered" in _receipts(relay.url, mid, token), timeout=30,
                 what="the delivered receipt (POSTed with the token)")  # fmt: skip
    finally:
        pub.close()
        agent.terminate()
        agent.wait(timeout=15)
        relay.stop()
    text = err.read_text(errors="replace")
    assert token not in text and token[3:] not in text
    # websockets really printed its request headers (else this test proves nothing)
    assert "Authorization: Bearer [redacted]" in text, text[-3000:]


def _receipts(url: str, mid: str, token: str) -> list[str]:
    req = urllib.request.Request(f"{url}/v1/messages/{mid}/receipts",
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return [r["state"] for r in json.loads(resp.read())["receipts"]]


def test_relay_never_logs_an_auth_query_value(tmp_path: Path) -> None:
    auth, token = _token(tmp_path)
    relay = RelayProc(tmp_path / "relay", extra_args=["--auth-file", str(auth)]).start()
    secret = base64.b64encode(f"Bearer {token}".encode()).decode().rstrip("=")
    bad = [  # request lines aiohttp refuses (and logs today) with the auth= value in them
        f"GET /sec1/json?auth={secret}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /sec1/json?auth={secret} HTTP/9.9\r\nHost: x\r\n\r\n",
        f"GET /sec1/json?poll=1&auth={secret} HTTP/1.1\r\nHost: x\r\n\r\n",  # a good one
    ]
    before = len(relay.log_path.read_bytes())
    try:
        for request in bad:
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
                s.sendall(request.encode("latin-1"))
                assert s.recv(12).startswith(b"HTTP/1.")
        wait_for(lambda: len(relay.log_path.read_bytes()) > before, timeout=20,
                 what="the relay logging the bad requests")  # fmt: skip
    finally:
        relay.stop()
    text = relay.log_path.read_text(errors="replace")
    assert secret not in text and secret[:16] not in text and token not in text, text[-3000:]
    # whatever is logged about the request, its auth= value is the marker
    assert text.count("auth=") == text.count(f"auth={redact.MARK}")
