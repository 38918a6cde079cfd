"""The web app's pure parts on the Python side: which requests get the app, which files."""

from __future__ import annotations

import pytest

from edge_relay.web.routes import STATIC, accepts_html, asset


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # chromium
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("application/json, text/html;q=0.5", True),
        ("", False),  # the agent, ntfy's apps
        ("*/*", False),  # curl
        ("application/json", False),
        ("text/html;q=0", False),
        ("text/html;q=bogus", False),
        ("text/htmlx", False),
    ],
)
def test_accepts_html(accept: str, html: bool) -> None:
    assert accepts_html(accept) is html


def test_asset_only_files_inside_static() -> None:
    assert asset("main.js") == STATIC / "main.js"
    assert asset("pages/topic.js") == STATIC / "pages/topic.js"
    for bad in ("", "/etc/passwd", "../routes.py", "pages/../../routes.py", "pages", "a\\b",
                "nope.js", "x\0.js"):  # fmt: skip
        assert asset(bad) is None, bad


def test_asset_names_the_file_system_refuses_are_missing_files() -> None:
    # GET /app/<300 characters> was a 500 with a traceback: stat() raised ENAMETOOLONG
    for bad in ("a" * 300, "a/" * 3000 + "x.js", "pages/" + "b" * 256 + ".js"):
        assert asset(bad) is None, bad[:20]
