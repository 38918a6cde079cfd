"""The web app's admin pages in a real browser (Debian's chromium) against a real relay:
the dashboard's numbers equal ``/v1/stats`` and ``/v1/admin/overview``, tokens are added and
revoked through the page, and a token without the admin grant sees neither page.

Screenshots of the dashboard (phone and desktop, light and dark) are saved in the test's
temporary folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from edge_relay import auth
from tests.browser import DESKTOP, PHONE, Tab, tab
from tests.relay import Relay

REFUSED = "the server responded with a status of 40"  # a 401/403 the page expects and shows


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, dict[str, str]]]:
    base = tmp_path_factory.mktemp("webadmin")
    af = base / "auth.json"
    tokens = {
        "boss": auth.add_token(af, "boss", ["*"], ["*"], admin=True),
        "alice": auth.add_token(af, "alice", ["home-*"], ["home-*"]),
    }
    r = Relay(base, args=["--auth-file", str(af)]).start()
    try:
        _fill(r, tokens["alice"])
        yield r, tokens
    finally:
        assert r.stop() == 0


def _fill(r: Relay, alice: str) -> None:
    hdr = {"Authorization": f"Bearer {alice}"}
    door = [r.publish("home-door", f"door {i}", **hdr) for i in range(4)]
    r.publish("home-bell", "ding", **hdr)
    items: list[dict[str, Any]] = [{"id": m["id"], "state": "displayed", "device": "phone"}
                                   for m in door]  # fmt: skip
    items += [{"id": m["id"], "state": "clicked", "device": "phone", "time": m["time"] + d}
              for m, d in zip(door[:2], (10, 20), strict=True)]  # fmt: skip
    status, body = r.request("POST", "/v1/receipts", json.dumps(items).encode(), hdr)
    assert status == 200 and body["accepted"] == 6, body


async def signed_in(t: Tab, relay: Relay, token: str, route: str) -> None:
    await t.page.add_init_script(f"localStorage.setItem('edgepush.token', {json.dumps(token)})")
    await t.page.goto(f"{relay.url}/{route}")


async def nav_pages(t: Tab) -> list[str]:
    return list(
        await t.page.eval_on_selector_all(
            "nav#nav ul.pages a", "els => els.map(e => e.textContent)"
        )
    )


async def test_dashboard_numbers_equal_the_api(
    secured: tuple[Relay, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    relay, tokens = secured
    boss = {"Authorization": f"Bearer {tokens['boss']}"}
    async with tab(browser, viewport=DESKTOP) as t:
        await signed_in(t, relay, tokens["boss"], "#/dashboard")
        await t.page.wait_for_selector("main[data-loaded='7d']")
        await t.page.wait_for_function(
            "() => [...document.querySelectorAll('nav#nav ul.pages a')]"
            ".some(a => a.textContent === 'Tokens')"
        )
        assert await nav_pages(t) == ["Topics", "Publish", "Settings", "Dashboard", "Tokens"]
        shown = await t.page.eval_on_selector_all(
            "tr[data-topic]",
            """rows => Object.fromEntries(rows.map(r => [r.dataset.topic, Object.fromEntries(
                 [...r.querySelectorAll('td[data-k]')].map(c => [c.dataset.k,
                   c.dataset.value === '' ? null : Number(c.dataset.value)]))]))""",
        )
        bars = await t.page.eval_on_selector_all(
            "figure.funnel",
            """fs => Object.fromEntries(fs.map(f => [f.dataset.topic, [...f.querySelectorAll(
                 'rect[data-step]')].map(r => [r.dataset.step, Number(r.dataset.value)])]))""",
        )
        hour_text = await t.page.inner_text("[data-k='hour-total']")
        facts = await t.page.inner_text("dd[data-k='Stored messages']")
        await t.page.screenshot(path=str(tmp_path / "dashboard-desktop-light.png"), full_page=True)
        assert [e for e in t.errors if REFUSED not in e] == []
    status, stats = relay.request("GET", "/v1/stats?since=7d", None, boss)
    assert status == 200
    api = stats["analytics"]["topics"]
    assert sorted(shown) == sorted(api) == ["home-bell", "home-door"]
    for topic, entry in api.items():
        total = entry["total"]
        want = {k: total[k] for k in shown[topic]}
        assert shown[topic] == want, topic
        assert bars[topic] == [
            [k, total[k]] for k in ("published", "delivered", "displayed", "clicked")
        ]
    door = api["home-door"]["total"]
    assert (door["published"], door["displayed"], door["clicked"], door["ctr"]) == (4, 4, 2, 0.5)
    assert door["median_click_seconds"] == 15.0
    overview = relay.request("GET", "/v1/admin/overview", None, boss)[1]
    per_hour = sum(h["messages"] for h in overview["messages_per_hour"])
    assert hour_text == f"{per_hour} messages in the last 24 hours"
    assert hour_text == "5 messages in the last 24 hours"
    assert facts == str(overview["store"]["messages"]) == "5"
    # phone and dark mode: the same page, looked at in the saved screenshots
    for name, view, scheme in (("phone-light", PHONE, "light"), ("phone-dark", PHONE, "dark"),
                               ("desktop-dark", DESKTOP, "dark")):  # fmt: skip
        async with tab(browser, viewport=view, color_scheme=scheme) as t:
            await signed_in(t, relay, tokens["boss"], "#/dashboard")
            await t.page.wait_for_selector("main[data-loaded='7d']")
            width = await t.page.evaluate("document.documentElement.scrollWidth")
            assert width <= view["width"], f"{name}: the page scrolls sideways ({width} px)"
            await t.page.screenshot(path=str(tmp_path / f"dashboard-{name}.png"), full_page=True)


async def test_tokens_page_adds_and_revokes(
    secured: tuple[Relay, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    relay, tokens = secured
    name = f"carol{int(time.time() * 1000) % 100000}"
    async with tab(browser, viewport=DESKTOP) as t:
        await signed_in(t, relay, tokens["boss"], "#/tokens")
        await t.page.wait_for_selector("tr[data-name='boss']")
        unlabeled = await t.page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter(e => !e.labels || e.labels.length === 0).map(e => e.name || e.id)"""
        )
        assert unlabeled == []
        await t.page.fill("#tok-name", name)
        await t.page.fill("#tok-read", "home-*, alerts")
        await t.page.click("form.add button[type=submit]")
        await t.page.wait_for_selector(f"tr[data-name='{name}']")
        secret = await t.page.inner_text("#tok-secret code")
        row = await t.page.inner_text(f"tr[data-name='{name}']")
        await t.page.screenshot(path=str(tmp_path / "tokens.png"), full_page=True)
        hdr = {"Authorization": f"Bearer {secret}"}
        assert relay.request("GET", "/home-door/json?poll=1", None, hdr)[0] == 200
        assert relay.request("PUT", "/home-door", b"x", hdr)[0] == 403  # no write asked for
        assert "home-*, alerts" in row
        button = f"button.revoke[data-name='{name}']"
        await t.page.click(button)
        assert await t.page.inner_text(button) == f"Really revoke {name}?"
        assert relay.request("GET", "/home-door/json?poll=1", None, hdr)[0] == 200  # not yet
        await t.page.click(button)
        await t.page.wait_for_selector(f"tr[data-name='{name}']", state="detached")
        assert await t.page.inner_text("#tok-note") == f"Token {name} revoked."
        assert relay.request("GET", "/home-door/json?poll=1", None, hdr)[0] == 401
        # the server's refusal is shown, not swallowed
        await t.page.fill("#tok-name", "alice")
        await t.page.click("form.add button[type=submit]")
        await t.page.wait_for_function(
            "() => document.querySelector('#tok-note').textContent.includes('exists')"
        )
        assert [e for e in t.errors if REFUSED not in e] == []


async def test_hostile_device_names_are_shown_as_text(
    secured: tuple[Relay, dict[str, str]], browser: Browser
) -> None:
    relay, tokens = secured
    evil = "<img src=x onerror=window.__pwned=1> &amp; <b>phone</b>"
    mid = relay.publish("home-door", "x", Authorization=f"Bearer {tokens['alice']}")["id"]
    item = [{"id": mid, "state": "displayed", "device": "evil-1", "device_name": evil}]
    hdr = {"Authorization": f"Bearer {tokens['alice']}"}
    assert relay.request("POST", "/v1/receipts", json.dumps(item).encode(), hdr)[0] == 200
    async with tab(browser, viewport=DESKTOP) as t:
        await signed_in(t, relay, tokens["boss"], "#/dashboard")
        await t.page.wait_for_selector("main[data-loaded='7d']")
        cells = await t.page.eval_on_selector_all("td", "els => els.map(e => e.textContent)")
        assert evil in cells
        assert await t.page.evaluate("window.__pwned") is None
        assert await t.page.locator("main img").count() == 0
        assert [e for e in t.errors if REFUSED not in e] == []


async def test_a_token_without_the_admin_grant_sees_neither_page(
    secured: tuple[Relay, dict[str, str]], browser: Browser
) -> None:
    relay, tokens = secured
    async with tab(browser, viewport=DESKTOP) as t:
        await signed_in(t, relay, tokens["alice"], "#/dashboard")
        await t.page.wait_for_function(
            "() => document.querySelector('main .note').textContent"
            ".includes('needs an admin token')"
        )
        assert await nav_pages(t) == ["Topics", "Publish", "Settings"]
        await t.page.goto(f"{relay.url}/#/tokens")
        await t.page.wait_for_function(
            "() => document.querySelector('#tok-note').textContent.includes('needs an admin token')"
        )
        assert await t.page.locator("tr[data-name]").count() == 0
        assert all(REFUSED in e for e in t.errors), t.errors
