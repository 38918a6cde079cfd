"""The relay's web app in a real browser (Debian's chromium) against a real relay process.

Subscribing, publishing from the form (with an attachment), a curl publish in the page within
1 s, a browser notification, unread counts and mark read (a receipt on the relay), the token,
and the URLs: a browser's ``GET /<topic>`` is the app, curl's is the API, ``--no-web`` is 404.
Hostile messages, 10,000 messages, reconnects and screenshots: tests/test_web_hostile.py.
"""

from __future__ import annotations

import json
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Browser

from edge_relay import auth
from tests.browser import NOTIFICATION_SPY, Tab, tab
from tests.helpers import ROOT, wait_for
from tests.relay import FAST, Relay, module_relay, unique_topic

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # chromium's


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "webapp")


def get(url: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


async def subscribe(t: Tab, relay: Relay, topic: str) -> None:
    await t.page.goto(relay.url + "/")
    await t.page.fill("#sub-topic", topic)
    await t.page.click("form.subscribe button[type=submit]")
    await t.page.wait_for_selector(f"h1:has-text('{topic}')")
    await t.page.wait_for_function(
        "() => document.querySelector('.topichead .state').textContent === 'live'"
    )


# --- URLs: the app for browsers, the API for everyone else ---------------------------------


def test_browser_gets_the_app_and_curl_the_api(relay: Relay) -> None:
    t = unique_topic("w")
    status, headers, body = get(f"{relay.url}/{t}", HTML)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="/app/main.js">' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    status, headers, body = get(f"{relay.url}/{t}")  # curl: no Accept
    assert status == 404 and json.loads(body)["code"] == 40401
    status, _, body = get(f"{relay.url}/{t}", "application/json")
    assert status == 404
    status, _, body = get(f"{relay.url}/{t}?up=1", HTML)  # UnifiedPush discovery stays
    assert (status, json.loads(body)) == (200, {"unifiedpush": {"version": 1}})
    status, _, body = get(f"{relay.url}/v1", HTML)  # a reserved name is no topic page
    assert status == 404
    status, _, body = get(f"{relay.url}/{t}", "text/html;q=0")
    assert status == 404
    status, headers, body = get(f"{relay.url}/")
    assert status == 200 and b"/app/app.css" in body
    status, headers, body = get(f"{relay.url}/app/pages/topic.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "Content-Security-Policy" in headers
    for missing in ("/app/nope.js", "/app/pages", "/app/%2e%2e/server.py"):
        assert get(relay.url + missing)[0] in (400, 404), missing
    relay.publish(t, "still the API")  # and the JSON subscribe API answers as before
    assert [m["message"] for m in relay.poll(t)] == ["still the API"]


def test_no_web_flag_turns_the_app_off(tmp_path: Path) -> None:
    r = Relay(tmp_path, args=["--no-web"]).start()
    try:
        for path, accept in (("/", None), ("/", HTML), ("/alerts", HTML), ("/app/main.js", None)):
            status, _, body = get(r.url + path, accept)
            assert status == 404 and json.loads(body)["code"] == 40401, path
    finally:
        assert r.stop() == 0


def test_web_enabled_false_in_the_config_file(tmp_path: Path) -> None:
    r = Relay(tmp_path, config=FAST.replace("[limits]", "[web]\nenabled = false\n[limits]")).start()
    try:
        assert get(r.url + "/")[0] == 404
    finally:
        assert r.stop() == 0


def test_package_data_names_every_asset() -> None:
    """pyproject's package-data globs take every file of the app (a file they miss would be
    absent from the wheel and 404 in an installed relay; the binary's check is in
    tests/test_packaging.py)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = table["tool"]["setuptools"]["package-data"]["edge_relay.web"]
    static = ROOT / "edge_relay" / "web" / "static"
    files = {p for p in static.rglob("*") if p.is_file()}
    taken = {p for g in globs for p in static.parent.glob(g)}  # glob(): setuptools' rules
    assert len(files) > 10
    assert sorted(map(str, files - taken)) == []


# --- subscribe, live messages, publish -----------------------------------------------------


async def test_subscribe_and_a_curl_publish_appears_within_a_second(
    relay: Relay, browser: Browser
) -> None:
    topic = unique_topic("w")
    async with tab(browser) as t:
        await subscribe(t, relay, topic)
        assert await t.page.evaluate("JSON.parse(localStorage['edgepush.topics'])") == [topic]
        start = time.monotonic()
        sent = relay.publish(topic, "door open", Title="Front door", Tags="warning,door",
                             Priority="5")  # fmt: skip
        await t.wait_text("door open", timeout=1.0)
        assert time.monotonic() - start < 1.0
        card = await t.page.inner_text(f"article[data-id='{sent['id']}']")
        assert "Front door" in card and "⚠️" in card and "door" in card
        assert (
            await t.page.get_attribute(f"article[data-id='{sent['id']}'] .prio", "aria-label")
            == "priority urgent"
        )
        announced = await t.page.inner_text("#announce")
        assert "Front door" in announced  # the aria-live region told a screen reader
        # the subscription survives a reload (localStorage) and the cache comes back
        await t.page.reload()
        await t.page.click(f"nav a[data-topic='{topic}']")
        await t.wait_text("door open")
        assert len(await t.cards()) == 1
        assert t.errors == []


async def test_browser_opening_topic_url_shows_it_live(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("w")
    relay.publish(topic, "from before")
    async with tab(browser) as t:
        await t.page.goto(f"{relay.url}/{topic}")
        await t.wait_text("from before")
        assert await t.page.inner_text("h1") == topic
        relay.publish(topic, "live one")
        await t.wait_text("live one", timeout=1.0)
        assert [c["text"].count("live one") for c in await t.cards()] == [1, 0]
        assert t.errors == []


async def test_publish_from_the_form_with_an_attachment(
    relay: Relay, browser: Browser, tmp_path: Path
) -> None:
    topic = unique_topic("w")
    image = tmp_path / "porch.png"
    Image.new("RGB", (40, 30), (200, 80, 20)).save(image)
    async with tab(browser) as t:
        await subscribe(t, relay, topic)
        await t.page.click("details.pubbox summary")
        form = "details.pubbox form"
        await t.page.fill(f"{form} [name=title]", "Über title")
        await t.page.fill(f"{form} [name=message]", "from the **form**")
        await t.page.select_option(f"{form} [name=priority]", "4")
        await t.page.fill(f"{form} [name=tags]", "tada, kitchen")
        await t.page.fill(f"{form} [name=click]", "https://example.com/x")
        await t.page.check(f"{form} [name=markdown]")
        await t.page.click(f"{form} button[type=submit]")
        await t.page.wait_for_function(
            "() => document.querySelector('details.pubbox .note').textContent === 'Published.'"
        )
        await t.wait_text("from the form")
        [msg] = relay.poll(topic)
        assert (msg["title"], msg["message"], msg["priority"]) == (
            "Über title",
            "from the **form**",
            4,
        )
        assert msg["tags"] == ["tada", "kitchen"] and msg["click"] == "https://example.com/x"
        assert await t.page.inner_text(f"article[data-id='{msg['id']}'] .md strong") == "form"
        # now a file: PUT with Filename, options as headers
        await t.page.fill(f"{form} [name=title]", "a picture")
        await t.page.fill(f"{form} [name=message]", "see the picture")
        await t.page.set_input_files(f"{form} [name=file]", str(image))
        await t.page.click(f"{form} button[type=submit]")
        await t.wait_text("see the picture")
        second = relay.poll(topic)[-1]
        assert second["attachment"]["name"] == image.name and second["title"] == "a picture"
        src = await t.page.get_attribute(
            f"article[data-id='{second['id']}'] .attachment img", "src"
        )
        assert src == second["attachment"]["url"]
        loaded = await t.page.eval_on_selector(
            f"article[data-id='{second['id']}'] .attachment img",
            "img => img.decode().then(() => img.naturalWidth)",
        )
        assert loaded > 0  # the image came from the relay's /file/ and decoded
        assert t.errors == []


async def test_delay_from_the_form_schedules(relay: Relay, browser: Browser) -> None:
    async with tab(browser) as t:
        await t.page.goto(relay.url + "/#/publish")
        topic = unique_topic("w")
        await t.page.fill("form.publish [name=topic]", topic)
        await t.page.fill("form.publish [name=message]", "later")
        await t.page.fill("form.publish [name=delay]", "1h")
        await t.page.click("form.publish button[type=submit]")
        await t.page.wait_for_function(
            "() => document.querySelector('form.publish .note').textContent.startsWith('Scheduled')"
        )
        assert relay.poll(topic) == []
        assert [m["message"] for m in relay.poll(topic, "scheduled=1")] == ["later"]


async def test_browser_notification_is_raised(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("w")
    async with tab(browser, permissions=["notifications"]) as t:
        await t.page.add_init_script(NOTIFICATION_SPY)
        await subscribe(t, relay, topic)
        await t.page.goto(relay.url + "/#/settings")
        button = "section.notify button"
        # permission granted (by the test, as by a user's earlier "allow"): on until turned off
        assert await t.page.inner_text(button) == "Turn notifications off"
        await t.page.click(button)
        await t.page.wait_for_function(
            f"() => document.querySelector('{button}').textContent.endsWith(' on')"
        )
        await t.page.click(button)
        await t.page.wait_for_function(
            f"() => document.querySelector('{button}').textContent.endsWith('off')"
        )
        assert await t.page.evaluate("localStorage['edgepush.notify']") == "on"
        await t.page.goto(relay.url + "/#/")  # looking at another page than the topic
        await t.page.wait_for_function(
            "() => document.getElementById('conn').textContent === 'live'"
        )
        relay.publish(topic, "ding", Title="Doorbell", Tags="bell")
        await t.page.wait_for_function("() => window.__notifications.length > 0", timeout=5000)
        assert await t.page.evaluate("window.__notifications") == [
            {"title": "🔔 Doorbell", "body": "ding"}
        ]
        assert t.errors == []


# --- unread, mark read, token --------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, str]]:
    base = tmp_path_factory.mktemp("websecure")
    tok = auth.add_token(base / "auth.json", "alice", ["home-*"], ["home-*"])
    r = Relay(base, args=["--auth-file", str(base / "auth.json")]).start()
    try:
        yield r, tok
    finally:
        assert r.stop() == 0


async def test_token_unread_counts_and_mark_read_sends_a_receipt(
    secured: tuple[Relay, str], browser: Browser
) -> None:
    relay, tok = secured
    topic = "home-" + unique_topic("w")
    async with tab(browser) as t:
        await t.page.goto(relay.url + "/")
        await t.page.fill("#sub-topic", topic)
        await t.page.click("form.subscribe button[type=submit]")
        await t.page.wait_for_function(
            "() => document.querySelector('form.subscribe .note')"
            ".textContent.startsWith('Not allowed')"
        )
        await t.page.goto(relay.url + "/#/settings")
        await t.page.fill("#token", tok)
        await t.page.click("form.token button[type=submit]")
        await t.page.wait_for_function(
            "() => document.querySelector('form.token .note').textContent.includes('alice')"
        )
        assert await t.page.evaluate("localStorage['edgepush.token']") == tok
        await subscribe(t, relay, topic)  # the WebSocket carries the token as ?auth=
        await t.page.goto(relay.url + "/#/")
        hdr = {"Authorization": f"Bearer {tok}"}
        ids = [relay.publish(topic, f"m{i}", **hdr)["id"] for i in range(3)]
        badge = f"nav a[data-topic='{topic}'] .badge"
        await t.page.wait_for_function(
            f"() => document.querySelector(\"{badge}\")?.textContent === '3'"
        )
        assert (await t.page.title()).startswith("(3) ")
        await t.page.click(f"nav a[data-topic='{topic}']")
        await t.page.click(f"article[data-id='{ids[0]}'] button.mark")
        await t.page.wait_for_function(
            f"() => document.querySelector(\"{badge}\")?.textContent === '2'"
        )

        def receipt(mid: str) -> list[dict[str, object]]:
            status, body = relay.request("GET", f"/v1/messages/{mid}/receipts", None, hdr)
            assert status == 200, body
            return list(body["receipts"])

        rows = wait_for(lambda: receipt(ids[0]), what="the read receipt on the relay")
        assert rows[0]["owner"] == "alice" and rows[0]["state"] == "read"
        await t.page.click("text=Mark all read")
        await t.page.wait_for_function(f'() => !document.querySelector("{badge}")')
        assert await t.page.locator("article.unread").count() == 0
        wait_for(lambda: receipt(ids[2]), what="receipts for the rest")
        refused = "the server responded with a status of 401"  # the first try, without token
        assert [e for e in t.errors if refused not in e] == []


async def test_search_the_topic_cache(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("w")
    for i in range(30):
        relay.publish(
            topic, f"reading {i} {'kitchen' if i % 10 == 0 else 'hall'}", Title=f"Sensor {i}"
        )
    async with tab(browser) as t:
        await t.page.goto(f"{relay.url}/{topic}")
        await t.wait_text("reading 29")
        await t.page.fill("#search", "KITCHEN")
        await t.page.wait_for_function(
            "() => document.querySelectorAll('article.msg').length === 3"
        )
        texts = [c["text"] for c in await t.cards()]
        assert all("kitchen" in x for x in texts) and "Sensor 20" in texts[0]
        assert "3 matching" in await t.page.inner_text(".pageinfo")
        await t.page.fill("#search", "")
        await t.page.wait_for_function(
            "() => document.querySelectorAll('article.msg').length === 30"
        )


async def test_keyboard_and_screen_reader_basics(relay: Relay, browser: Browser) -> None:
    topic = unique_topic("w")
    async with tab(browser) as t:
        await t.page.goto(relay.url + "/")
        # every form control has a label a screen reader announces
        for route in ("#/", "#/publish", "#/settings"):
            await t.page.goto(relay.url + "/" + route)
            unlabeled = await t.page.evaluate(
                """() => [...document.querySelectorAll(
                       'input:not([type=hidden]), select, textarea')]
                     .filter(e => !e.labels || e.labels.length === 0).map(e => e.name || e.id)"""
            )
            assert unlabeled == [], (route, unlabeled)
        await t.page.goto(relay.url + "/")
        assert await t.page.get_attribute("#announce", "aria-live") == "polite"
        await t.page.focus("#sub-topic")
        await t.page.keyboard.type(topic)
        await t.page.keyboard.press("Enter")  # submit with the keyboard
        await t.page.wait_for_selector(f"h1:has-text('{topic}')")
        focused = await t.page.evaluate("document.activeElement.tagName")
        assert focused == "H1"  # focus moved to the new page's heading


async def test_icon_and_action_buttons(relay: Relay, browser: Browser) -> None:
    topic, acks = unique_topic("w"), unique_topic("ack")
    body = {
        "topic": topic, "title": "Garage open", "message": "close it?",
        "icon": f"{relay.url}/app/icon.svg",
        "actions": [
            {"action": "view", "label": "Camera", "url": "https://example.com/cam"},
            {"action": "http", "label": "Close", "url": f"{relay.url}/{acks}", "method": "POST",
             "headers": {"Title": "from the button"}, "body": "closed"},
        ],
    }  # fmt: skip
    status, sent = relay.request("POST", "/", json.dumps(body).encode())
    assert status == 200, sent
    async with tab(browser) as t:
        await t.page.goto(f"{relay.url}/{topic}")
        card = f"article[data-id='{sent['id']}']"
        await t.page.wait_for_selector(card)
        width = await t.page.eval_on_selector(
            f"{card} img.icon", "img => img.decode().then(() => img.naturalWidth)"
        )
        assert width > 0  # the icon loaded
        assert await t.page.get_attribute(f"{card} a:has-text('Camera')", "href") == (
            "https://example.com/cam"
        )
        await t.page.click(f"{card} button:has-text('Close')")
        await t.page.wait_for_function(
            f"() => document.querySelector(\"{card} button[data-result]\")?.dataset.result === 'ok'"
        )
        [ack] = relay.poll(acks)
        assert (ack["message"], ack["title"]) == ("closed", "from the button")
        assert t.errors == []


async def login(t: Tab, relay: Relay, tok: str) -> None:
    await t.page.goto(relay.url + "/#/settings")
    await t.page.fill("#token", tok)
    await t.page.click("form.token button[type=submit]")
    await t.page.wait_for_function(
        "() => document.querySelector('form.token .note').textContent.includes('Signed in')"
    )


async def test_read_state_syncs_with_the_users_other_devices(
    secured: tuple[Relay, str], browser: Browser
) -> None:
    """Mark read in one browser: the relay's message_state event marks it read in the other
    browser of the same token; an agent's receipt marks it read in both."""
    relay, tok = secured
    topic = "home-" + unique_topic("sync")
    hdr = {"Authorization": f"Bearer {tok}"}
    async with tab(browser) as a, tab(browser) as b:
        for t in (a, b):
            await login(t, relay, tok)
            await subscribe(t, relay, topic)
            await t.page.goto(relay.url + "/#/")
        ids = [relay.publish(topic, f"sync {i}", **hdr)["id"] for i in range(2)]
        badge = f"nav a[data-topic='{topic}'] .badge"

        async def count(t: Tab, n: int) -> None:
            want = f"=== '{n}'" if n else "=== undefined"
            await t.page.wait_for_function(
                f'() => document.querySelector("{badge}")?.textContent {want}', timeout=5000
            )

        for t in (a, b):
            await count(t, 2)
        await a.page.click(f"nav a[data-topic='{topic}']")
        await a.page.click(f"article[data-id='{ids[0]}'] button.mark")
        await count(a, 1)
        await count(b, 1)  # b heard a's state from the relay
        device = await a.page.evaluate("localStorage['edgepush.device']")
        assert device.startswith("web-")  # a's own device id, as the relay recorded it
        status, body = relay.request("GET", f"/v1/messages/{ids[0]}/receipts", None, hdr)
        assert [r["device"] for r in body["receipts"]] == [device]
        receipt = [{"id": ids[1], "state": "read", "device": "laptop", "device_name": "agent"}]
        status, body = relay.request("POST", "/v1/receipts", json.dumps(receipt).encode(), hdr)
        assert status == 200, body
        await count(a, 0)
        await count(b, 0)
        assert await a.page.locator("article.unread").count() == 0
        assert a.errors == [] and b.errors == []
