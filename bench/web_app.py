"""Web app benchmark: publish → message in the page's DOM, page weight, cold load.

    .venv/bin/python bench/web_app.py [--messages 200] [--loads 5]

One relay process (this checkout). A chromium page (Debian's, async Playwright) shows a
topic; beside it, in the same run, a bare WebSocket client (``websockets``) subscribes to the
same topic: the baseline. Each of ``--messages`` publishes (HTTP PUT, one at a time, the next
once both have it) is timed from just before the request to (a) the bare client's frame and
(b) the card's insertion into the page's DOM (a MutationObserver in the page, the page's
clock being the machine's). Then the page weight: every asset's bytes as served (the app is
its files, uncompressed; no build step) and what a cold load actually fetched. Then
``--loads`` cold loads (a new browser context, no cache) of a topic holding one message:
time from navigation start to that message's card in the DOM. Last, a topic of
``--backlog`` messages: a bare client's ``since=all`` to the last one against a cold page
to its first page shown with the full count. One JSON object per line; the
last is the summary with p50/p99 and the targets (DOM <= 2 x bare + 20 ms, weight < 150 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from edge_relay.web.routes import STATIC  # noqa: E402
from tests.browser import chromium  # noqa: E402
from tests.relay import Relay  # noqa: E402

CONFIG = """keepalive = 300
[limits]
publish_burst = 10000000
publish_rate = 10000000.0
"""
OBSERVER = """
window.__seen = {};
new MutationObserver((records) => {
  const now = performance.timeOrigin + performance.now();
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType === 1 && n.matches('article.msg') && !(n.dataset.id in window.__seen)) {
      window.__seen[n.dataset.id] = now;
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


def put(conn: http.client.HTTPConnection, topic: str, text: str) -> str:
    conn.request("PUT", f"/{topic}", text.encode())
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200, body
    return str(body["id"])


async def latency(relay: Relay, browser: Any, n: int) -> dict[str, Any]:
    topic = "benchlive"
    seen_ws: dict[str, float] = {}
    ctx = await browser.new_context()
    page = await ctx.new_page()
    await page.add_init_script(OBSERVER)
    await page.goto(f"{relay.url}/{topic}")
    await page.wait_for_function("() => document.getElementById('conn').textContent === 'live'")
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    ws_ms: list[float] = []
    dom_ms: list[float] = []
    async with connect(f"ws://127.0.0.1:{relay.port}/{topic}/ws") as ws:

        async def reader() -> None:
            async for frame in ws:
                ev = json.loads(frame)
                if ev.get("event") == "message":
                    seen_ws[ev["id"]] = time.time() * 1000

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)  # the bare client's open event has come
        for i in range(n):
            t0 = time.time() * 1000
            mid = await asyncio.to_thread(put, conn, topic, f"message {i} of the latency run")
            await page.wait_for_function("id => id in window.__seen", arg=mid, timeout=10_000)
            while mid not in seen_ws:
                await asyncio.sleep(0.001)
            seen_dom = await page.evaluate("id => window.__seen[id]", mid)
            ws_ms.append(seen_ws[mid] - t0)
            dom_ms.append(seen_dom - t0)
        task.cancel()
    await ctx.close()
    return {"ws_ms": ws_ms, "dom_ms": dom_ms}


async def cold_loads(relay: Relay, browser: Any, loads: int) -> tuple[list[float], int]:
    topic = "benchcold"
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    mid = put(conn, topic, "the one waiting message")
    times: list[float] = []
    fetched = 0
    for _ in range(loads):
        ctx = await browser.new_context()
        page = await ctx.new_page()
        sizes: list[int] = []

        async def size(resp: Any, sizes: list[int] = sizes) -> None:
            if "/app/" in resp.url or resp.url.endswith(f"/{topic}"):
                sizes.append(len(await resp.body()))

        page.on("response", size)
        await page.add_init_script(OBSERVER)
        t0 = time.time() * 1000
        await page.goto(f"{relay.url}/{topic}")
        await page.wait_for_function("id => id in window.__seen", arg=mid, timeout=10_000)
        times.append(await page.evaluate("id => window.__seen[id]", mid) - t0)
        fetched = sum(sizes)
        await ctx.close()
    return times, fetched


async def backlog(relay: Relay, browser: Any, n: int) -> dict[str, float]:
    """A topic of ``n`` messages: since=all to the last one, bare client against a cold page
    (to its "1-50 of n" page shown)."""
    topic = "benchbig"
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    for i in range(n):
        last = put(conn, topic, f"reading {i:05d} of the backlog")
    t0 = time.monotonic()
    async with connect(f"ws://127.0.0.1:{relay.port}/{topic}/ws?since=all") as ws:
        async for frame in ws:
            if json.loads(frame).get("id") == last:
                break
    bare = time.monotonic() - t0
    ctx = await browser.new_context()
    page = await ctx.new_page()
    t0 = time.monotonic()
    await page.goto(f"{relay.url}/{topic}")
    await page.wait_for_function(
        "n => document.querySelector('.pageinfo')?.textContent.endsWith(' of ' + n)",
        arg=n,
        timeout=60_000,
    )
    shown = time.monotonic() - t0
    await ctx.close()
    return {"messages": n, "bare_ws_s": round(bare, 3), "page_s": round(shown, 3)}


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--backlog", type=int, default=10_000)
    args = p.parse_args()
    weight = {
        str(f.relative_to(STATIC)): f.stat().st_size for f in STATIC.rglob("*") if f.is_file()
    }
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(Path(tmp), config=CONFIG).start()
        try:
            async with chromium() as browser:
                lat = await latency(relay, browser, args.messages)
                loads, fetched = await cold_loads(relay, browser, args.loads)
                big = await backlog(relay, browser, args.backlog)
        finally:
            relay.stop()
    ws50, ws99 = pct(lat["ws_ms"], 50), pct(lat["ws_ms"], 99)
    dom50, dom99 = pct(lat["dom_ms"], 50), pct(lat["dom_ms"], 99)
    total = sum(weight.values())
    print(json.dumps({"assets": weight}), flush=True)
    summary = {
        "summary": True, "messages": args.messages,
        "bare_ws_ms": {"p50": ws50, "p99": ws99},
        "page_dom_ms": {"p50": dom50, "p99": dom99},
        "target_dom_p50_ms": round(2 * ws50 + 20, 2), "target_dom_p99_ms": round(2 * ws99 + 20, 2),
        "latency_met": dom50 <= 2 * ws50 + 20 and dom99 <= 2 * ws99 + 20,
        "page_weight_bytes": total, "fetched_on_cold_load_bytes": fetched,
        "weight_met": total < 150 * 1024,
        "cold_load_first_message_ms": {"median": round(statistics.median(loads), 1),
                                       "max": round(max(loads), 1)},
        "backlog_since_all": big,
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0 if summary["latency_met"] and summary["weight_met"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
