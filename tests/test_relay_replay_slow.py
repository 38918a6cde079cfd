"""A subscriber too slow for its replay, against a real relay process: the replay's ~64 KiB
writes still let the live queue's bound cut it (the connection is closed, counted as
dropped), what it received before the cut is whole frames of the stored messages in order
with no repeat, and a resume with ``since=<the last id it received>`` brings the rest: every
stored message once across the two connections."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from pathlib import Path

from tests.relay import Relay
from tests.test_relay_replay import _frame_size, _header_size

CONFIG = """keepalive = 300
[limits]
publish_burst = 100000
publish_rate = 100000.0
send_queue = 20
"""
N = 1500  # ~3 MiB of frames: far more than the slow socket's buffers hold


def _put(conn: http.client.HTTPConnection, topic: str, body: str) -> str:
    conn.request("PUT", f"/{topic}", body.encode())
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return str(json.loads(resp.read())["id"])


def test_a_slow_replay_is_cut_and_resumes_with_nothing_lost_or_twice(tmp_path: Path) -> None:
    relay = Relay(tmp_path / "relay", config=CONFIG).start()
    topic = "slow" + uuid.uuid4().hex[:10]
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    sock = socket.socket()
    try:
        stored = [_put(conn, topic, f"m{i} " + "x" * 2000) for i in range(N)]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(15)
        sock.connect(("127.0.0.1", relay.port))
        sock.sendall(f"GET /{topic}/ws?since=all HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: ZWRnZXB1c2gtc2xvdzEyMw==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        head, buf = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        # not reading: the replay waits on the drain; live messages fill the queue (20)
        live = [_put(conn, topic, f"live {i}") for i in range(60)]
        deadline = time.monotonic() + 20
        while _dropped(relay) < 1:
            assert time.monotonic() < deadline, "the slow subscriber was not cut"
            time.sleep(0.05)
        got: list[str] = []
        try:  # now read what reached this socket before the cut
            while True:
                size = _frame_size(buf)
                if size is not None and len(buf) >= size:
                    frame, buf = buf[:size], buf[size:]
                    assert frame[0] == 0x81, frame[:2]  # whole, uncompressed text frames
                    ev = json.loads(frame[_header_size(frame) :])
                    if ev["event"] == "message":
                        got.append(ev["id"])
                    continue
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        every = stored + live
        assert 0 < len(got) < N, len(got)
        assert got == every[: len(got)]  # in store order, none twice, none skipped
        rest = [m["id"] for m in relay.poll(topic, f"since={got[-1]}")]
        assert got + rest == every
    finally:
        sock.close()
        conn.close()
        assert relay.stop() == 0
    assert "Traceback" not in relay.log.read_text()


def _dropped(relay: Relay) -> float:
    """The relay's count of subscribers cut for falling behind (/metrics)."""
    _, text = relay.request("GET", "/metrics")
    for line in str(text).splitlines():
        if line.startswith("edge_relay_slow_subscribers_dropped_total "):
            return float(line.split()[1])
    return 0.0
