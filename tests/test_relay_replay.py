"""A replay's bytes on the wire, against a real relay process: what a subscriber with
``since=all`` receives is, frame for frame, the relay's stored messages as ``live.wire`` JSON in
an unmasked text frame (what aiohttp's ``send_str`` wrote for each before the replay cache), or
on a permessage-deflate connection each through a Deflater of the negotiated settings; the
first replay (cache misses) and the next ones (hits) are the same bytes; ``/json`` and ``/sse``
answers are the same lines. Raw sockets, so nothing between the relay and the test re-frames.

This file uses only what the relay had before the cache (``live.wire``, ``live.text_frame``,
``deflate.Deflater``, ``Store.query``), so it runs unchanged against the tree before it.
"""

from __future__ import annotations

import http.client
import importlib
import json
import socket
import uuid
import zlib
from collections.abc import Iterator

import pytest

from agent.store import Store
from edge_relay import deflate
from edge_relay.live import text_frame, wire
from tests.relay import Relay

CONFIG = """keepalive = 300
[limits]
publish_burst = 100000
publish_rate = 100000.0
"""
N = 620  # more than one store page (500) and than one 64 KiB write of frames


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("replay"), config=CONFIG).start()
    try:
        yield r
    finally:
        assert r.stop() == 0, r.log.read_text()
        assert "Traceback" not in r.log.read_text(), r.log.read_text()


@pytest.fixture(scope="module")
def topic(relay: Relay) -> str:
    """A topic holding N varied messages, an update, a clear and a delete."""
    t = "rp" + uuid.uuid4().hex[:12]
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    try:
        for i in range(N):
            headers = {"Title": f"backup web-{i % 17:02d}", "Priority": str(1 + i % 5),
                       "Tags": "floppy_disk,white_check_mark"}  # fmt: skip
            body = f"Backup {i} finished: {1000 + 37 * i} files, 0 errors"
            if i % 50 == 7:
                headers.update({"Click": "https://example.com/x?a=1&b=2", "Markdown": "yes",
                                "Actions": "view, Open, https://example.com/; http, Retry, "
                                           "https://example.com/retry, method=PUT"})  # fmt: skip
                body = 'Ünïcödé ✓ "quoted" \\ and a\nnewline ' + "long " * 700  # 16-bit length
            if i == 11:
                headers["X-Sequence-ID"] = "seq-1"
            conn.request("PUT", f"/{t}", body.encode(), headers)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
        for method, path in (("POST", f"/{t}/seq-1"), ("PUT", f"/{t}/seq-1/clear"),
                             ("DELETE", f"/{t}/seq-1")):  # fmt: skip
            conn.request(method, path, b"updated" if method == "POST" else None)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
    finally:
        conn.close()
    return t


def stored_texts(relay: Relay, topic: str) -> list[str]:
    """The topic's stored messages as ``live.wire`` encodes them, oldest first."""
    store = Store(relay.dir / "data" / "relay.db").open()
    try:
        return [wire(s) for s in store.query(topics=[topic], newest=False)]
    finally:
        store.close()


def ws_replay(relay: Relay, topic: str, n: int, extensions: str | None = None
              ) -> tuple[list[bytes], str]:  # fmt: skip
    """The raw frames (header and payload) of the first ``n`` message events of a ``since=all``
    WebSocket replay, and the extensions the relay accepted."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=15)
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    sock.sendall(f"GET /{topic}/ws?since=all HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: ZWRnZXB1c2gtcmVwbGF5MQ==\r\n"
                 f"Sec-WebSocket-Version: 13\r\n{ext}\r\n".encode())  # fmt: skip
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536) or b""
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head + buf
    accepted = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"sec-websocket-extensions:")), "")  # fmt: skip
    inflate = zlib.decompressobj(-15)
    frames: list[bytes] = []
    try:
        while len(frames) < n:
            while True:
                size = _frame_size(buf)
                if size is not None and len(buf) >= size:
                    break
                chunk = sock.recv(65536)
                assert chunk, "connection closed mid-replay"
                buf += chunk
            frame, buf = buf[:size], buf[size:]
            payload = frame[_header_size(frame) :]
            if frame[0] & 0x40:  # RSV1: deflated (RFC 7692 7.2.2)
                payload = inflate.decompress(payload + b"\x00\x00\xff\xff")
            if json.loads(payload)["event"] not in ("open", "keepalive"):
                frames.append(frame)
    finally:
        sock.close()
    return frames, accepted


def _header_size(buf: bytes) -> int:
    return {126: 4, 127: 10}.get(buf[1] & 0x7F, 2)


def _frame_size(buf: bytes) -> int | None:
    if len(buf) < 2:
        return None
    assert buf[1] & 0x80 == 0, "a server frame is never masked"
    n, head = buf[1] & 0x7F, _header_size(buf)
    if len(buf) < head:
        return None
    if n >= 126:
        n = int.from_bytes(buf[2:head], "big")
    return head + n


def test_an_uncompressed_replay_is_each_stored_message_in_one_text_frame(
    relay: Relay, topic: str
) -> None:
    texts = stored_texts(relay, topic)
    assert len(texts) == N + 3
    expected = [text_frame(t.encode()) for t in texts]
    first, accepted = ws_replay(relay, topic, len(texts))
    assert accepted == ""
    assert first == expected
    again, _ = ws_replay(relay, topic, len(texts))  # from the replay cache, if there is one
    assert again == expected


def test_a_deflated_replay_is_each_stored_message_through_one_deflater(
    relay: Relay, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = stored_texts(relay, topic)
    # the reference deflates with the backend the relay said it uses (zlib-ng's bytes differ)
    if "permessage-deflate with zlib-ng" in relay.log.read_text():
        monkeypatch.setattr(deflate, "_chosen", importlib.import_module("zlib_ng.zlib_ng"))
    for _ in range(2):  # a miss, then a hit: the same bytes
        frames, accepted = ws_replay(relay, topic, len(texts), "permessage-deflate")
        assert accepted.startswith("permessage-deflate"), accepted
        notakeover = "server_no_context_takeover" in accepted
        deflater = deflate.Deflater(15, no_context_takeover=notakeover)
        assert frames == [
            text_frame(raw) if len(raw) < 128 else deflater.frame(raw)
            for raw in (t.encode() for t in texts)
        ]


@pytest.mark.parametrize("fmt", ["json", "sse"])
def test_json_and_sse_replays_are_the_stored_messages_lines(
    relay: Relay, topic: str, fmt: str
) -> None:
    stored = Store(relay.dir / "data" / "relay.db").open()
    try:
        items = stored.query(topics=[topic], newest=False)
    finally:
        stored.close()
    if fmt == "json":
        expected = b"".join(wire(s).encode() + b"\n" for s in items)
    else:
        expected = b"".join(f"id: {s.message.id}\ndata: {wire(s)}\n\n".encode() for s in items)
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
        try:
            conn.request("GET", f"/{topic}/{fmt}?poll=1&since=all")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == expected
        finally:
            conn.close()
