"""Compression on the links, against a real relay process: WebSocket permessage-deflate
between the agent (in-process ``AgentService``, the websockets client) and the relay, and
gzip for ``/json`` answers (``poll=1`` and live streams). Bytes on the wire are counted by
the test's TCP proxy (tests/netproxy.py) between the two.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import random
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from agent import config
from agent.config import ReceiptsConfig
from agent.service import AgentService
from tests.netproxy import NetProxy
from tests.notifyhelp import until
from tests.relay import Relay, module_relay, unique_topic

N = 300


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "compress")


def typical(i: int) -> tuple[str, dict[str, str]]:
    """A monitoring-style message: what scripts and Grafana send through ntfy."""
    host = f"web-{i % 17:02d}"
    text = f"Backup of {host} finished in {30 + i % 90} s: {1000 + 37 * i} files, 0 errors"
    return text, {"Title": f"backup {host}", "Tags": "floppy_disk,white_check_mark",
                  "Priority": str(1 + i % 5)}  # fmt: skip


def publish_many(relay: Relay, topic: str, n: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    ids = []
    try:
        for i in range(n):
            text, headers = typical(i)
            conn.request("PUT", f"/{topic}", text.encode(), headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            ids.append(json.loads(body)["id"])
    finally:
        conn.close()
    return ids


def stored_texts(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, message FROM messages").fetchall())


async def test_the_agent_relay_websocket_is_deflated(relay: Relay, tmp_path: Path) -> None:
    """The agent (default settings) and a subscriber that offers no compression, each
    through its own counting proxy, get the same N live messages: the agent's link carries a
    third of the bytes or less, and both get every message intact and in order (the plain one
    through the relay's pre-built frames, the agent's compressed by aiohttp)."""
    topic = unique_topic("z")
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    with NetProxy("127.0.0.1", relay.port) as deflated, NetProxy("127.0.0.1", relay.port) as raw:
        cfg = replace(cfg, servers=(f"http://127.0.0.1:{deflated.port}",), topics=(topic,),
                      notifier="none", receipts=ReceiptsConfig(enabled=False))  # fmt: skip
        plain: list[str] = []
        url = f"ws://127.0.0.1:{raw.port}/{topic}/ws"
        async with AgentService(cfg) as svc, connect(url, compression=None) as other:
            assert json.loads(await other.recv())["event"] == "open"
            await until(lambda: svc.state() == "connected", what="the agent connected")
            start = deflated.moved["down"], raw.moved["down"]
            ids = await asyncio.to_thread(publish_many, relay, topic, N)
            await until(lambda: len(stored_texts(cfg.paths.db)) >= N, timeout=60,
                        what="every message stored")  # fmt: skip
            while len(plain) < N:
                frame = json.loads(await asyncio.wait_for(other.recv(), 10))
                if frame["event"] == "message":
                    plain.append(frame["id"])
            agent_bytes = deflated.moved["down"] - start[0]
            plain_bytes = raw.moved["down"] - start[1]
        texts = stored_texts(cfg.paths.db)
    assert plain == ids, "the uncompressed subscriber got every message, in order"
    assert [texts[i] for i in ids] == [typical(n)[0] for n in range(N)], "intact text"
    assert plain_bytes > N * 150, plain_bytes  # the messages really went through the proxy
    assert agent_bytes * 3 <= plain_bytes, f"{agent_bytes} bytes deflated against {plain_bytes}"


def _get(relay: Relay, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_json_poll_is_gzipped_when_accepted(relay: Relay) -> None:
    topic = unique_topic("gz")
    publish_many(relay, topic, 200)
    path = f"/{topic}/json?poll=1"
    status, head, plain = _get(relay, path, {})
    assert status == 200 and "content-encoding" not in head
    status, head, packed = _get(relay, path, {"Accept-Encoding": "br, gzip;q=0.8"})
    assert status == 200 and head["content-encoding"] == "gzip"
    assert "accept-encoding" in head["vary"].lower()
    assert gzip.decompress(packed) == plain and len(plain.splitlines()) == 200
    assert len(packed) * 3 <= len(plain), (len(packed), len(plain))
    _, head, _ = _get(relay, path, {"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in head, "q=0 refuses gzip"


def test_a_live_gzipped_json_stream_delivers_each_message_at_once(relay: Relay) -> None:
    """Each event is flushed: a message published to an open stream is readable from the
    gzip stream before anything else is sent (no keepalive is due: 0.5 s away at most, the
    message is read long before the next one would fill zlib's buffer)."""
    topic = unique_topic("gz")
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    conn.request("GET", f"/{topic}/json", headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    assert resp.getheader("Content-Encoding") == "gzip"
    inflate = zlib.decompressobj(31)
    text = b""
    got: list[dict[str, object]] = []
    stop = threading.Event()

    def read() -> None:
        nonlocal text
        while not stop.is_set():
            try:
                chunk = resp.read1(65536)
            except (OSError, ValueError, AttributeError):  # closed by the test under us
                return
            if not chunk:
                return
            text += inflate.decompress(chunk)
            *lines, text = text.split(b"\n")
            got.extend(json.loads(line) for line in lines if line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not any(e["event"] == "open" for e in got):
            assert time.monotonic() < deadline, "no open event through gzip"
            time.sleep(0.01)
        mid = relay.publish(topic, "live through gzip")["id"]
        while not any(e.get("id") == mid for e in got):
            assert time.monotonic() < deadline, f"the message did not arrive: {got}"
            time.sleep(0.01)
    finally:
        stop.set()
        conn.close()
        reader.join(10)
    message = next(e for e in got if e.get("id") == mid)
    assert message["message"] == "live through gzip"


@pytest.mark.parametrize(
    "offer",
    [{"server_no_context_takeover": True}, {"server_max_window_bits": 10},
     {"client_no_context_takeover": True, "client_max_window_bits": 9}],
    ids=["server_no_context_takeover", "server_window_10", "client_window_9"],
)  # fmt: skip
async def test_every_negotiated_deflate_offer_inflates(relay: Relay, offer: dict[str, Any]) -> None:
    """The relay deflates its frames itself (edge_relay.deflate.Deflater) with what was
    negotiated: a backlog of typical events, the largest text message and a tiny one (sent
    uncompressed) arrive intact for each offer."""
    topic = unique_topic("zo")
    publish_many(relay, topic, 40)
    big = " ".join(f"line {i}: disk /dev/sd{i % 7} at {i * 13 % 100} %" for i in range(130))
    assert 3500 < len(big) <= 4096  # message_size: the largest text message
    relay.publish(topic, big)
    relay.publish(topic, "x")
    factory = ClientPerMessageDeflateFactory(**offer)
    url = relay.url.replace("http", "ws", 1) + f"/{topic}/ws?since=all"
    texts: list[str] = []
    async with connect(url, compression=None, extensions=[factory], max_size=1 << 20) as ws:
        assert "permessage-deflate" in str(ws.response.headers["Sec-WebSocket-Extensions"])
        while len(texts) < 42:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ev["event"] == "message":
                texts.append(ev["message"])
    assert texts == [typical(i)[0] for i in range(40)] + [big, "x"]


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_deflater_frames_inflate_in_websockets_own_decoder(no_context_takeover: bool) -> None:
    """The relay's own frames (edge_relay.deflate.Deflater) are what RFC 7692 says: RSV1 set,
    the 4-byte trailer removed, each length encoding (7-bit, 16-bit, 64-bit), and with
    ``server_no_context_takeover`` each message inflates without the ones before."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    from edge_relay.deflate import Deflater

    d = Deflater(15, no_context_takeover=no_context_takeover)
    decoders: dict[str, PerMessageDeflate] = {}
    big = random.Random(1).randbytes(80000).hex()  # ~80 KB deflated: a 64-bit length
    texts = [typical(i)[0] for i in range(50)] + ["x" * 300, "".join(map(str, range(9000))), big]
    lengths = set()
    for i, text in enumerate(texts):
        raw = d.frame(text.encode())
        assert raw[0] == 0xC1  # FIN, RSV1 (compressed), text
        n, start = raw[1], 2
        if n == 126:
            n, start = int.from_bytes(raw[2:4], "big"), 4
        elif n == 127:
            n, start = int.from_bytes(raw[2:10], "big"), 10
        assert len(raw) == start + n
        lengths.add(start)
        # a fresh inflater per message works only when the relay kept no context
        ext = PerMessageDeflate(no_context_takeover, no_context_takeover, 15, 15)
        if not no_context_takeover:
            ext = decoders.setdefault("one", ext)
        frame = Frame(Opcode.TEXT, raw[start:], rsv1=True)
        assert ext.decode(frame, max_size=1 << 20).data.decode() == text, i
    assert lengths == {2, 4, 10}
