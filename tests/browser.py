"""Debian's chromium driven by async Playwright, for the web app's tests and bench.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (packaging/dev.sh installs
it). The async API, because pytest-asyncio runs these tests on its loop (sync Playwright
refuses to start inside a running loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# Records every Notification the page creates (and still creates the real one), so a test
# can see what the browser was asked to show.
NOTIFICATION_SPY = """
(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.__notifications = [];
  class Spy extends Real {
    constructor(title, options) {
      super(title, options);
      window.__notifications.push({ title, body: (options || {}).body || "" });
    }
  }
  window.Notification = Spy;
})();
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


class Tab:
    """A page of the app with what went wrong in it: uncaught errors and console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    async def cards(self) -> list[dict[str, str]]:
        """The message cards shown, newest first: id and text."""
        return list(
            await self.page.eval_on_selector_all(
                "article.msg", "els => els.map(e => ({id: e.dataset.id, text: e.textContent}))"
            )
        )

    async def wait_text(self, text: str, timeout: float = 5.0) -> None:
        """Until a message card holds ``text`` (fails at the deadline)."""
        await self.page.wait_for_function(
            "t => [...document.querySelectorAll('article.msg')]"
            ".some(e => e.textContent.includes(t))",
            arg=text,
            timeout=timeout * 1000,
        )


@contextlib.asynccontextmanager
async def tab(browser: Browser, **context: Any) -> AsyncIterator[Tab]:
    ctx: BrowserContext = await browser.new_context(**context)
    try:
        page = await ctx.new_page()
        yield Tab(page)
    finally:
        await ctx.close()
