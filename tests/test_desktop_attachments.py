"""Attachments on a real desktop: the real relay → the agent service (in-process, desktop
backend) → a real dunst on a private D-Bus (Xvfb).

An image attachment: the notification is shown at once, and replaced in place once the file
is in the cache by one that carries it (desktop-notifier's ``attachment``: D-Bus
``image-path``); dunst renders it (a screenshot is saved in the test's folder and its red
pixels counted). Any other file: the notification gets an "Open" button that opens the cached
file with ``desktop.opener``.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from agent import config
from agent.config import DesktopConfig, ReceiptsConfig, WsConfig
from agent.service import AgentService
from tests.desktop import Desktop
from tests.notifyhelp import until
from tests.relay import Relay, module_relay, unique_topic

pytestmark = pytest.mark.desktop
RED = (255, 0, 0)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "deskfiles")


def red_png(side: int = 96) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), RED).save(out, "PNG")
    return out.getvalue()


def agent_cfg(tmp_path: Path, relay: Relay, topic: str, **flags: object) -> config.AgentConfig:
    cfg = config.load(dict(flags), env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    return replace(
        cfg, servers=(relay.url,), topics=(topic,), notifier="desktop",
        receipts=ReceiptsConfig(enabled=False), ws=WsConfig(keepalive=30.0, connect_timeout=5.0),
    )  # fmt: skip


def upload(relay: Relay, topic: str, body: bytes, name: str) -> str:
    status, answer = relay.request("PUT", f"/{topic}", body, {"Filename": name, "Title": name})
    assert status == 200, answer
    return str(answer["id"])


def shown(desktop: Desktop) -> list[str]:
    """Every notification dunst showed, a replacement too (its script's log: id, urgency)."""
    f = desktop.shown_file
    return f.read_text().splitlines() if f.exists() else []


def settled(desktop: Desktop, want: dict[str, str]) -> bool:
    """Every notification of ``want`` was shown with its image, or shown and then replaced."""
    seen = desktop.icons()
    for summary, image in want.items():
        mine = [icon for s, icon in seen if s == summary]
        if not mine or (mine[0] != image and len(mine) < 2):
            return False
    return True


def red_pixels(path: Path) -> int:
    with Image.open(path) as shot:
        data = shot.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3) if data[i : i + 3] == bytes(RED))


async def test_an_image_attachment_is_shown_in_the_dunst_notification(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    topic = unique_topic("img")
    cfg = agent_cfg(tmp_path, relay, topic)
    image = red_png()
    async with AgentService(cfg):
        mid = await asyncio.to_thread(upload, relay, topic, image, "door.jpg")
        await until(lambda: desktop.count("displayed") == 1, what="the notification")
        cached = cfg.paths.cache_dir / "attachments" / f"{mid}.png"
        await until(cached.exists, what="the image in the cache")
        # replaced in place: still one notification on screen, now with the image
        await until(lambda: len(shown(desktop)) >= 2, what="the notification re-sent")
        assert desktop.count("displayed") == 1
        assert len(set(shown(desktop))) == 1, "the same dunst id: replaced, not a second one"
        shot = desktop.screenshot(tmp_path / "image-notification.png")
        assert red_pixels(shot) > 500, f"no image on screen (see {shot})"
        desktop.dunstctl("close-all")
        history = await until(lambda: desktop.history(), what="dunst's history")
    assert len(history) == 1 and history[0]["summary"] == "door.jpg"
    assert history[0]["icon_path"] == str(cached)
    assert cached.read_bytes() == image


async def test_a_file_attachment_gets_an_open_button_that_opens_the_cached_file(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    topic = unique_topic("pdf")
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "opener.sh"
    opener.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n')
    opener.chmod(0o755)
    cfg = agent_cfg(tmp_path, relay, topic, **{"attachments.download": "always"})
    cfg = replace(cfg, desktop=DesktopConfig(opener=(str(opener),)))
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    async with AgentService(cfg):
        mid = await asyncio.to_thread(upload, relay, topic, pdf, "report.pdf")
        cached = cfg.paths.cache_dir / "attachments" / f"{mid}.pdf"
        await until(cached.exists, what="the PDF in the cache")
        await until(lambda: len(shown(desktop)) >= 2, what="the notification re-sent")
        desktop.press("Open")
        await until(lambda: opened.exists() and opened.read_text(), what="the opener run")
    assert opened.read_text() == str(cached)
    assert cached.read_bytes() == pdf and os.stat(cached).st_mode & 0o777 == 0o600


async def test_a_burst_of_images_each_keeps_its_own_notification(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates with the image are sent from their own tasks while the hand-off is sending
    the next messages: each notification gets its own image, none replaces another."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    topic = unique_topic("img")
    cfg = agent_cfg(tmp_path, relay, topic)
    folder = cfg.paths.cache_dir / "attachments"
    async with AgentService(cfg):
        ids = [await asyncio.to_thread(upload, relay, topic, red_png(40 + i), f"cam{i}.png")
               for i in range(4)]  # fmt: skip
        await until(lambda: all((folder / f"{m}.png").exists() for m in ids), what="4 files")
        want = {f"cam{i}.png": str(folder / f"{m}.png") for i, m in enumerate(ids)}
        # each shown with its image at once (the file was there first) or shown again
        await until(lambda: settled(desktop, want), what=f"each with its own image: {want}")
        assert desktop.count("displayed") == 4
        desktop.dunstctl("close-all")
        history = await until(lambda: len(desktop.history()) == 4 and desktop.history())
    assert {h["summary"]: h["icon_path"] for h in history} == want


def wav() -> bytes:
    """A valid, silent 8 kHz mono WAV (sniffed audio/x-wav)."""
    samples = b"\x80" * 800
    fmt = b"fmt " + (16).to_bytes(4, "little") + bytes.fromhex("01000100401f0000401f000001000800")
    data = b"data" + len(samples).to_bytes(4, "little") + samples
    body = b"WAVE" + fmt + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def recording_opener(tmp_path: Path) -> tuple[Path, Path]:
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "opener.sh"
    opener.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n')
    opener.chmod(0o755)
    return opener, opened


async def test_an_audio_attachment_gets_a_play_button_that_opens_it(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    topic = unique_topic("wav")
    opener, opened = recording_opener(tmp_path)
    cfg = agent_cfg(tmp_path, relay, topic, **{"attachments.download": "always"})
    cfg = replace(cfg, desktop=DesktopConfig(opener=(str(opener),)))
    async with AgentService(cfg):
        mid = await asyncio.to_thread(upload, relay, topic, wav(), "memo.wav")
        cached = cfg.paths.cache_dir / "attachments" / f"{mid}.wav"
        await until(cached.exists, what="the WAV in the cache")
        await until(lambda: len(shown(desktop)) >= 2, what="the notification re-sent")
        desktop.press("Play")
        await until(lambda: opened.exists() and opened.read_text(), what="the opener run")
    assert opened.read_text() == str(cached)
    menu = desktop.offered()
    assert any("Play" in line for line in menu), menu
    assert not any("Open" in line or "Save" in line for line in menu), menu


async def test_save_copies_a_file_into_downloads_without_overwriting(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    downloads = tmp_path / "Downloads-xdg"
    downloads.mkdir()
    (downloads / "report.pdf").write_bytes(b"the user's own report")
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    topic = unique_topic("save")
    cfg = agent_cfg(tmp_path, relay, topic, **{"attachments.download": "always"})
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    async with AgentService(cfg):
        mid = await asyncio.to_thread(upload, relay, topic, pdf, "report.pdf")
        cached = cfg.paths.cache_dir / "attachments" / f"{mid}.pdf"
        await until(cached.exists, what="the PDF in the cache")
        await until(lambda: len(shown(desktop)) >= 2, what="the notification re-sent")
        desktop.press("Save")
        saved = downloads / "report (1).pdf"
        await until(saved.exists, what="the saved copy")
        await until(lambda: saved.stat().st_size == len(pdf), what="the copy complete")
    assert saved.read_bytes() == pdf and saved.stat().st_mode & 0o777 == 0o600
    assert (downloads / "report.pdf").read_bytes() == b"the user's own report"
    assert sorted(p.name for p in downloads.iterdir()) == ["report (1).pdf", "report.pdf"]
    menu = desktop.offered()
    assert any("Open" in line for line in menu) and any("Save" in line for line in menu), menu
