"""The web app under stress in a real browser: hostile messages, 10,000 messages, a relay
killed and restarted while the page is open, and screenshots (phone and desktop, light and
dark; saved under ``$EDGEPUSH_SCREENSHOTS`` if set, else the test's tmp dir)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from playwright.async_api import Browser

from tests.browser import DESKTOP, PHONE, tab
from tests.relay import Relay, module_relay, unique_topic

pytestmark = pytest.mark.timeout(240)

SCRIPT = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
RTL = "\u202etxt.exe\u202c \u2067abc\u2069"
HUGE = "W" * 3500  # one unbreakable word, under the relay's 4096-byte field limit
# Set on every element the test clicks: a script that ran would set window.__pwned.
ARMED = """() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation',
                            e => window.__violations.push(e.violatedDirective));
}"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "webhostile")


def post(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = relay.request("POST", "/", json.dumps(body).encode())
    assert status == 200, answer
    return dict(answer)


def hostile(relay: Relay, topic: str) -> list[dict[str, Any]]:
    js = "javascript:window.__pwned=3"
    return [
        post(relay, {"topic": topic, "title": SCRIPT + RTL, "message": SCRIPT + "\n" + RTL,
                     "tags": [SCRIPT, "javascript:alert(1)", RTL, "warning"], "click": js}),
        post(relay, {"topic": topic, "message": "actions " + SCRIPT, "actions": [
            {"action": "view", "label": SCRIPT, "url": js},
            {"action": "http", "label": RTL, "url": "JaVaScRiPt:window.__pwned=4"},
            {"action": "view", "label": "fine", "url": "https://example.com/ok"}]}),
        post(relay, {"topic": topic, "markdown": True, "message":
                     "**md** [bad](javascript:window.__pwned=5) [ok](https://example.com/a)\n\n"
                     "<b>raw html</b> <img src=x onerror=window.__pwned=6> "
                     "![img](javascript:x) [data](data:text/html,<script>alert(1)</script>)\n"
                     "- " + SCRIPT}),
        post(relay, {"topic": topic, "title": HUGE, "message": HUGE, "tags": [HUGE[:500]]}),
    ]  # fmt: skip


async def test_hostile_messages_render_inert(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("x")
    sent = hostile(relay, topic)
    async with tab(browser, viewport=PHONE) as t:
        await t.page.add_init_script(f"({ARMED})()")
        await t.page.goto(f"{relay.url}/{topic}")
        await t.page.wait_for_function(
            "() => document.querySelectorAll('article.msg').length === 4"
        )
        cards = {c["id"]: c["text"] for c in await t.cards()}
        first, actions, md, huge = (cards[m["id"]] for m in sent)
        assert first.count(SCRIPT) == 3 and RTL in first  # title, body, tag: all as text
        assert "javascript:alert(1)" in first
        assert SCRIPT in actions and RTL in actions
        assert "<b>raw html</b>" in md and "[bad](javascript:window.__pwned=5)" in md
        assert HUGE in huge
        dom = t.page.locator("main")
        assert await dom.locator("script, iframe, object, embed, [onerror], [onclick]").count() == 0
        assert await t.page.locator("a[href]:not([href^='http']):not([href^='#'])").count() == 0
        assert await t.page.locator("article.msg b").count() == 0  # no raw HTML element made
        assert await t.page.get_attribute("a:has-text('ok')", "href") == "https://example.com/a"
        assert await t.page.inner_text(f"article[data-id='{sent[2]['id']}'] .md strong") == "md"
        for refused in await t.page.locator(".refused").all():  # click what was refused
            await refused.click()
        assert await t.page.locator(".refused").count() == 3  # click URL, view, http action
        assert await t.page.evaluate("window.__pwned") is None
        assert await t.page.evaluate("window.__violations") == []  # nothing even tried
        # a huge unbreakable word wraps: the phone screen does not scroll sideways
        assert await t.page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert t.errors == []


async def publish_many(relay: Relay, topic: str, n: int) -> None:
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> None:
            async with sem, s.put(f"{relay.url}/{topic}", data=f"reading {i:05d}") as r:
                assert r.status == 200, await r.text()

        await asyncio.gather(*(one(i) for i in range(n)))


async def test_ten_thousand_messages_stay_responsive(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("big")
    await publish_many(relay, topic, 10_000)
    async with tab(browser) as t:
        start = time.monotonic()
        await t.page.goto(f"{relay.url}/{topic}")
        await t.page.wait_for_function(
            "() => document.querySelector('.pageinfo')?.textContent === '1\u201350 of 10000'",
            timeout=30_000,
        )
        loaded = time.monotonic() - start
        assert await t.page.locator("article").count() == 50  # a page, not 10,000 nodes
        assert await t.page.evaluate("document.getElementsByTagName('*').length") < 2000
        start = time.monotonic()
        live = (await asyncio.to_thread(relay.publish, topic, "the 10001st"))["id"]
        await t.wait_text("the 10001st", timeout=1.0)
        assert time.monotonic() - start < 1.0
        assert (await t.cards())[0]["id"] == live
        start = time.monotonic()
        await t.page.fill("#search", "reading 00424")
        await t.page.wait_for_function(
            "() => document.querySelectorAll('article.msg').length === 1", timeout=1000
        )
        assert time.monotonic() - start < 1.0
        await t.page.fill("#search", "")
        await t.page.wait_for_function("() => document.querySelectorAll('article').length === 50")
        start = time.monotonic()
        await t.page.click("text=Older →")
        await t.page.wait_for_function(
            "() => document.querySelector('.pageinfo').textContent === '51\u2013100 of 10001'",
            timeout=1000,
        )
        assert time.monotonic() - start < 1.0
        assert t.errors == []
        print(f"10k topic: loaded in {loaded:.2f} s")


async def test_reconnect_after_relay_sigkill_shows_every_message_once(
    tmp_path: Path, browser: Browser
) -> None:
    relay = Relay(tmp_path / "r").start()
    topic = unique_topic("rc")
    try:
        async with tab(browser) as t:
            await t.page.goto(f"{relay.url}/{topic}")
            await t.page.wait_for_function(
                "() => document.getElementById('conn').textContent === 'live'"
            )
            ids = [relay.publish(topic, f"before {i}")["id"] for i in range(3)]
            await t.wait_text("before 2")
            for round_ in range(2):
                relay.kill()
                await t.page.wait_for_function(
                    "() => document.getElementById('conn').textContent === 'reconnecting…'"
                )
                relay.start()
                # published while the page is still away: it must come in the replay
                ids += [relay.publish(topic, f"missed {round_}.{i}")["id"] for i in range(3)]
                await t.page.wait_for_function(
                    "() => document.getElementById('conn').textContent === 'live'", timeout=30_000
                )
                ids.append(relay.publish(topic, f"after {round_}")["id"])
                await t.wait_text(f"after {round_}")
            shown = [c["id"] for c in await t.cards()]
            assert sorted(shown) == sorted(ids) and len(shown) == len(set(shown)) == 11
            assert await t.page.inner_text(".pageinfo") == "1\u201311 of 11"
            assert [e for e in t.errors if "WebSocket" not in e] == []
    finally:
        relay.stop()


def screenshot_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("EDGEPUSH_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_screenshots_phone_and_desktop_light_and_dark(
    relay: Relay, browser: Browser, tmp_path: Path
) -> None:
    topic = unique_topic("shot")
    image = tmp_path / "camera.png"
    Image.new("RGB", (320, 180), (60, 120, 200)).save(image)
    headers = {"Filename": "camera.png", "Title": "Porch camera", "Tags": "camera"}
    status, _ = relay.request("PUT", f"/{topic}", image.read_bytes(), headers)
    assert status == 200
    relay.publish(topic, "Backup finished in 4 min", Title="Backup", Tags="white_check_mark,nas")
    post(relay, {"topic": topic, "title": "Water leak", "priority": 5, "tags": ["rotating_light"],
                 "message": "Sensor **basement** reports water.\n- valve closed\n- pump on",
                 "markdown": True, "actions": [{"action": "view", "label": "Open dashboard",
                                                "url": "https://example.com/d"}]})  # fmt: skip
    shalom = "\u05e9\u05dc\u05d5\u05dd"
    post(relay, {"topic": topic, "title": shalom, "message": f"RTL: {shalom} \u202eevil"})
    out = screenshot_dir(tmp_path)
    backgrounds = {}
    for size_name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        for scheme in ("light", "dark"):
            async with tab(browser, viewport=size, color_scheme=scheme) as t:
                await t.page.goto(f"{relay.url}/{topic}")
                await t.page.wait_for_function(
                    "() => document.querySelectorAll('article.msg').length === 4"
                )
                await t.page.eval_on_selector_all(
                    "article img", "imgs => Promise.all(imgs.map(i => i.decode()))"
                )
                await t.page.screenshot(
                    path=str(out / f"topic-{size_name}-{scheme}.png"), full_page=True
                )
                assert await t.page.evaluate("document.documentElement.scrollWidth <= innerWidth")
                backgrounds[scheme] = await t.page.evaluate(
                    "getComputedStyle(document.body).backgroundColor"
                )
                await t.page.goto(f"{relay.url}/#/")
                await t.page.wait_for_selector("li.sub")
                await t.page.screenshot(path=str(out / f"home-{size_name}-{scheme}.png"))
                await t.page.goto(f"{relay.url}/#/publish")
                await t.page.screenshot(path=str(out / f"publish-{size_name}-{scheme}.png"))
                assert t.errors == []
    assert backgrounds["light"] != backgrounds["dark"]
    shots = sorted(out.glob("*.png"))
    assert len(shots) == 12 and all(p.stat().st_size > 5000 for p in shots)
    print(f"screenshots in {out}")


MARKDOWN = [  # (source, the HTML the page's renderer makes)
    ("**b** *i* `c` ~~s~~", "<p><strong>b</strong> <em>i</em> <code>c</code> <del>s</del></p>"),
    ("# Head\ntext", "<h3>Head</h3><p>text</p>"),
    ("- a\n- b", "<ul><li>a</li><li>b</li></ul>"),
    ("1. a\n2. b", "<ol><li>a</li><li>b</li></ol>"),
    ("> q", "<blockquote>q</blockquote>"),
    ("```\n<b>x</b>\n```", "<pre><code>&lt;b&gt;x&lt;/b&gt;</code></pre>"),
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
    ('<img src=x onerror="alert(1)">', '<p>&lt;img src=x onerror="alert(1)"&gt;</p>'),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](JAVASCRIPT:alert(1))", "<p>[x](JAVASCRIPT:alert(1))</p>"),
    ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
    ("[x](/relative)", "<p>[x](/relative)</p>"),
    ('[x](https://e.com/a"onmouseover="alert(1))',
     '<p><a href="https://e.com/a%22onmouseover=%22alert(1" rel="noopener noreferrer nofollow" '
     'target="_blank">x</a>)</p>'),
    ("[mail](mailto:a@b.c)",
     '<p><a href="mailto:a@b.c" rel="noopener noreferrer nofollow" target="_blank">mail</a></p>'),
    ("see https://e.com/x.",
     '<p>see <a href="https://e.com/x" rel="noopener noreferrer nofollow" target="_blank">'
     "https://e.com/x</a>.</p>"),
]  # fmt: skip


async def test_markdown_renderer_allow_list(relay: Relay, browser: Browser) -> None:
    async with tab(browser) as t:
        await t.page.goto(relay.url + "/")
        got = await t.page.evaluate(
            """async (cases) => {
                const md = await import('/app/markdown.js');
                return cases.map(src => md.render(src).innerHTML);
            }""",
            [src for src, _ in MARKDOWN],
        )
        assert got == [html for _, html in MARKDOWN]
        urls = await t.page.evaluate(
            """async () => {
                const { safeUrl } = await import('/app/markdown.js');
                return ['https://a.b/', 'http://a.b/', 'mailto:x@y.z', 'javascript:x',
                        ' javascript:x', 'java\\tscript:x', 'data:,x', 'vbscript:x', '/rel',
                        'file:///etc/passwd', ''].map(u => safeUrl(u));
            }"""
        )
        assert urls == ["https://a.b/", "http://a.b/", "mailto:x@y.z"] + [None] * 8
