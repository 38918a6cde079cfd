"""ntfy 2.16 update / clear / delete, icons, Markdown and action buttons, end to end in one
process: a tiny ntfy WebSocket server in the test → the real agent service (WebSocket
transport, store, rules layer, desktop backend) → a real dunst on a private D-Bus (Xvfb).

Most tests use a stub speaking ntfy's frames (``message`` with ``sequence_id``,
``message_clear``, ``message_delete``, ``poll_request``) so the test controls each frame and
its order; the frames follow docs.ntfy.sh (subscribe API, JSON message format) and ntfy
2.16's publish docs. The last tests drive the same through the real relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import struct
import subprocess
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from websockets.asyncio.server import ServerConnection, serve

from agent import config
from agent.config import ReceiptsConfig, WsConfig
from agent.service import AgentService
from tests.desktop import Desktop
from tests.helpers import pushagent
from tests.notifyhelp import until
from tests.relay import Relay, module_relay, unique_topic

pytestmark = pytest.mark.desktop


def png() -> bytes:
    """A valid 2x2 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class _Icon(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Icon.hits.append(self.path)
        body, kind = (png(), "image/png") if self.path == "/icon.png" else (b"<html>", "text/html")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Stub:
    """One ntfy subscription at a time; the test queues the frames it sends."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.connections = 0
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        await ws.send(json.dumps({"id": "o", "time": 1, "event": "open", "topic": "jobs"}))
        closed = asyncio.ensure_future(ws.wait_closed())
        while True:
            get = asyncio.ensure_future(self.frames.get())
            await asyncio.wait((get, closed), return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                return
            await ws.send(get.result())


def frame(event: str, mid: str, **fields: Any) -> str:
    return json.dumps({"id": mid, "time": 1700000000, "event": event, "topic": "jobs", **fields})


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    s = Stub()
    server = await serve(s.handler, "127.0.0.1", 0)
    s.port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield s
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def icon_url() -> Any:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Icon)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def agent_cfg(tmp_path: Path, port: int) -> config.AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    return replace(
        cfg, servers=(f"http://127.0.0.1:{port}",), topics=("jobs",), notifier="desktop",
        receipts=ReceiptsConfig(enabled=False), ws=WsConfig(keepalive=30.0, connect_timeout=5.0),
    )  # fmt: skip


def rewind(db: Path) -> None:
    """Set the hand-off mark back to 0 (side file and the database's copy), as if the agent
    had been killed after storing everything and before handing any of it over."""
    db.with_name(db.name + "-notified").write_bytes(b"0")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'notified_seq'")


def shown_ids(d: Desktop) -> list[int]:
    """dunst's notification id for every notification it put on screen, in order."""
    if not d.shown_file.exists():
        return []
    return [int(line.split("\t")[0]) for line in d.shown_file.read_text().splitlines()]


async def test_update_in_place_then_clear_then_delete_and_restart_shows_nothing_again(
    desktop: Desktop, stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    cfg = agent_cfg(tmp_path, stub.port)
    async with AgentService(cfg) as svc:
        await stub.frames.put(frame("message", "m1", title="backup", message="0%",
                                    sequence_id="job-7"))  # fmt: skip
        await until(lambda: desktop.count("displayed") == 1, what="first notification")
        await until(lambda: len(shown_ids(desktop)) == 1, what="dunst saw it")
        await stub.frames.put(frame("poll_request", "p1", message="newer"))  # a no-op
        await stub.frames.put(frame("message", "m2", title="backup", message="50%",
                                    sequence_id="job-7"))  # fmt: skip
        await until(lambda: len(shown_ids(desktop)) == 2, what="dunst saw the update")
        ids = shown_ids(desktop)
        assert ids[0] == ids[1], "the update must reuse the notification's D-Bus id"
        assert desktop.count("displayed") == 1, "one notification on screen after the update"
        await until(
            lambda: svc.store.get("m2") is not None and svc.store.get("m2").state == "displayed"
        )  # type: ignore[union-attr]
        await stub.frames.put(frame("message_clear", "c1", sequence_id="job-7"))
        await until(lambda: desktop.count("displayed") == 0, what="cleared off the screen")
        history = desktop.history()
        assert [h["body"] for h in history] == ["50%"], "the one notification, updated text"
        await stub.frames.put(frame("message", "m3", title="other", message="stays"))
        await until(lambda: desktop.count("displayed") == 1, what="an unrelated one")
        await stub.frames.put(frame("message_delete", "d1", sequence_id="job-7"))
        await until(lambda: svc.store.sequence("jobs", "job-7") == ("m2", "deleted"))
        assert stub.connections == 1, "poll_request must not reconnect a live stream"
        assert [svc.store.get(i).state for i in ("m1", "m2")] == ["deleted", "deleted"]  # type: ignore[union-attr]
        assert svc.store.count() == 5  # m1, m2, c1, m3, d1: nothing lost
    on_screen_before = len(shown_ids(desktop))
    desktop.dunstctl("close-all")
    # A restart whose store still holds the whole sequence unshown (the mark rewound, as after
    # a crash before the hand-off): the cleared/deleted sequence is not shown again.
    rewind(cfg.paths.db)
    async with AgentService(cfg) as svc:
        await until(lambda: len(shown_ids(desktop)) > on_screen_before, what="replayed m3")
        await asyncio.sleep(0.5)  # the whole backlog is one hand-off: give it its moment
        replayed = desktop.count("displayed")
    assert replayed == 1, "only the unrelated message shows again, not the deleted sequence"
    out = pushagent("history", "--json", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert (rows["m1"]["state"], rows["m2"]["state"]) == ("deleted", "deleted")
    assert rows["m2"]["sequence_id"] == "job-7" and rows["d1"]["event"] == "message_delete"
    text = pushagent("history", home=tmp_path / "home").stdout.decode()
    assert "deleted" in text and "50%" in text  # kept and shown, with its state


async def test_icon_markdown_and_action_buttons_reach_dunst(
    desktop: Desktop, stub: Stub, icon_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    cfg = agent_cfg(tmp_path, stub.port)
    actions = [
        {"id": "a1", "action": "view", "label": "Open", "url": "https://example.org/v"},
        {"id": "a2", "action": "http", "label": "Retry", "url": "https://example.org/h",
         "method": "POST"},
        {"id": "a3", "action": "broadcast", "label": "Intent", "intent": "io.heckel.ntfy.X"},
    ]  # fmt: skip
    # dbus-monitor (the private bus allows eavesdropping) sees the Notify call's action list
    monitor = subprocess.Popen(
        ["dbus-monitor", "--address", desktop.env["DBUS_SESSION_BUS_ADDRESS"],
         "interface='org.freedesktop.Notifications',member='Notify'"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # let it register its match rule
    async with AgentService(cfg):
        await stub.frames.put(frame(
            "message", "i1", title="md", message="**disk** at *90%* [graph](https://g.org/x)",
            content_type="text/markdown", icon=f"{icon_url}/icon.png", actions=actions,
        ))  # fmt: skip
        await until(lambda: desktop.count("displayed") == 1, what="shown")
        await stub.frames.put(frame("message", "i2", title="bad icon", message="plain",
                                    icon=f"{icon_url}/page.html"))  # fmt: skip
        await until(lambda: desktop.count("displayed") == 2, what="second shown")
        desktop.dunstctl("close-all")
        history = {h["summary"]: h for h in await until(
            lambda: len(desktop.history()) == 2 and desktop.history())}  # fmt: skip
    md = history["md"]
    # dunst advertises body-markup: Markdown becomes the spec's <b>/<i>/<a> subset
    assert md["body"] == '<b>disk</b> at <i>90%</i> <a href="https://g.org/x">graph</a>'
    icon_path = Path(md["icon_path"])
    assert icon_path.read_bytes() == png() and icon_path.stat().st_mode & 0o777 == 0o600
    assert icon_path.parent == cfg.paths.cache_dir / "icons"
    assert history["bad icon"]["icon_path"] == "", "a non-image answer shows without an icon"
    monitor.terminate()
    calls = (monitor.communicate(timeout=20)[0] or "").split("method call")
    first = next(c for c in calls if '"md"' in c)
    # view and http are buttons; broadcast (an Android intent) gets none on a desktop
    assert '"Open"' in first and '"Retry"' in first and '"Intent"' not in first


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "seqrelay")


async def test_icon_and_markdown_published_to_the_relay_reach_dunst(
    desktop: Desktop, relay: Relay, icon_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real relay: X-Icon and X-Markdown survive the way through."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    topic = unique_topic("seq")
    cfg = replace(agent_cfg(tmp_path, 0), servers=(relay.url,), topics=(topic,))
    async with AgentService(cfg):
        # no wait for the subscription: the agent's first since= is its start time
        headers = {"X-Icon": f"{icon_url}/icon.png", "X-Markdown": "yes"}
        await asyncio.to_thread(relay.publish, topic, "**up** again", Title="relayed", **headers)
        await until(lambda: desktop.count("displayed") == 1, what="relayed notification")
        desktop.dunstctl("close-all")
        history = await until(lambda: desktop.history())
    assert history[0]["summary"] == "relayed" and history[0]["body"] == "<b>up</b> again"
    assert Path(history[0]["icon_path"]).read_bytes() == png()


async def test_relay_update_and_clear_reach_a_notification_an_earlier_run_showed(
    desktop: Desktop, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ntfy 2.16's sequences as the relay serves them (``X-Sequence-ID``, ``PUT
    /<topic>/<sid>/clear``, ``DELETE /<topic>/<sid>``) across agent restarts: the notification
    stays on screen when the agent exits, and the next run updates it in place and closes it
    (its D-Bus id is kept in the cache folder, agent.notify.screen)."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    desktop.dunstctl("close-all")
    before = len(shown_ids(desktop))
    topic = unique_topic("seq")
    cfg = replace(agent_cfg(tmp_path, 0), servers=(relay.url,), topics=(topic,))
    sid = {"X-Sequence-ID": "job-7"}

    def shown() -> list[int]:
        return shown_ids(desktop)[before:]

    async def publish(text: str, **headers: str) -> None:
        await asyncio.to_thread(relay.publish, topic, text, Title="backup", **headers)

    async with AgentService(cfg):
        await publish("0%", **sid)
        await until(lambda: len(shown()) == 1, what="first notification")
        await publish("50%", **sid)
        await until(lambda: len(shown()) == 2, what="the update")
    first = shown()[0]
    assert shown() == [first, first] and desktop.count("displayed") == 1
    async with AgentService(cfg):  # a new run: the notification is still on screen
        await publish("90%", **sid)
        await until(lambda: len(shown()) == 3, what="the update after a restart")
    assert shown()[2] == first, "the restarted agent must replace the same notification"
    assert desktop.count("displayed") == 1, "still one notification on screen"
    async with AgentService(cfg) as svc:
        status, answer = await asyncio.to_thread(relay.request, "PUT", f"/{topic}/job-7/clear")
        assert status == 200 and answer["event"] == "message_clear", answer
        await until(lambda: desktop.count("displayed") == 0, what="closed by a later run")
        await publish("other", **{"X-Sequence-ID": "job-8"})
        await until(lambda: desktop.count("displayed") == 1, what="a second sequence")
        status, answer = await asyncio.to_thread(relay.request, "DELETE", f"/{topic}/job-8")
        assert status == 200 and answer["event"] == "message_delete", answer
        await until(lambda: desktop.count("displayed") == 0, what="deleted off the screen")
        await until(lambda: svc.store.sequence(topic, "job-8") is not None)
        assert svc.store.sequence(topic, "job-7")[1] == "cleared"  # type: ignore[index]
        assert svc.store.sequence(topic, "job-8")[1] == "deleted"  # type: ignore[index]
        assert svc.store.count() == 6, "every message and event kept: 4 messages, clear, delete"


async def test_copy_button_puts_its_value_on_the_clipboard(
    desktop: Desktop, stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ntfy 2.16's ``copy`` action: a button (pressed through dunst's context menu) that
    puts ``value`` on the X clipboard (xclip, read back with xclip -o) and records a click."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    desktop.dunstctl("close-all")
    cfg = agent_cfg(tmp_path, stub.port)
    actions = [{"id": "c1", "action": "copy", "label": "Copy code", "value": "493 812"}]
    env = {**os.environ, **desktop.env}

    def clipboard() -> str:
        out = subprocess.run(["xclip", "-selection", "clipboard", "-out"], env=env,
                             capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        return out.stdout

    async with AgentService(cfg) as svc:
        await stub.frames.put(frame("message", "cp1", title="login", message="your code",
                                    actions=actions))  # fmt: skip
        await until(lambda: desktop.count("displayed") == 1, what="shown")
        await asyncio.to_thread(desktop.press, "Copy code")
        await until(lambda: clipboard() == "493 812", what="the value on the clipboard")
        await until(lambda: svc.store.get("cp1").state == "clicked")  # type: ignore[union-attr]


class _Hook(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Hook.posts.append((self.path, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_http_buttons_with_fields_no_request_can_carry_are_refused_in_the_log(
    desktop: Desktop, stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """An http action is checked only for its url's scheme before its button shows; pressing
    one whose headers are no object, whose header value holds a newline, or whose url has no
    usable host raised out of the press's task (AttributeError, ValueError, UnicodeError:
    a traceback, and nothing said about that button). Now a WARNING names the action and why;
    the good one still sends its request."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    desktop.dunstctl("close-all")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{httpd.server_address[1]}"

    def logged(label: str) -> bool:
        return any(label in r.getMessage() for r in caplog.records)

    bad = [
        {"action": "http", "label": "Not a map", "url": f"{hook}/a", "headers": ["X: 1"]},
        {"action": "http", "label": "Newline", "url": f"{hook}/b", "headers": {"X": "1\r\nY: 2"}},
        {"action": "http", "label": "No host", "url": "http://[::1/c"},
    ]
    good = [{"action": "http", "label": "Good", "url": f"{hook}/ok", "body": "done"}]
    try:
        async with AgentService(agent_cfg(tmp_path, stub.port)):
            # one notification each: a pressed button ends its notification
            for i, action in enumerate([*bad, *good]):
                label = str(action["label"])
                desktop.dunstctl("close-all")
                await until(lambda: desktop.count("displayed") == 0, what="the screen empty")
                await stub.frames.put(frame("message", f"h{i}", title=f"t{i}", message="m",
                                            actions=[action]))  # fmt: skip
                await until(lambda: desktop.count("displayed") == 1, what=f"{label} shown")
                await asyncio.to_thread(desktop.press, label)
                if action in bad:
                    await until(lambda label=label: logged(label), what=f"a line for {label}")  # type: ignore[misc]
            await until(lambda: _Hook.posts == [("/ok", b"done")], what="the good request")
    finally:
        httpd.shutdown()
        httpd.server_close()
    said = [
        r for r in caplog.records if r.name.startswith("pushagent") and "action" in r.getMessage()
    ]
    for action in bad:
        (line,) = [r for r in said if str(action["label"]) in r.getMessage()]
        assert line.levelname == "WARNING" and "cannot" in line.getMessage(), line.getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    assert all("/a" not in p and "/b" not in p for p, _ in _Hook.posts)


async def test_an_icon_url_with_no_usable_host_shows_its_notification_without_an_icon(
    desktop: Desktop, stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """ntfy (and the relay) take any ``https?://.+`` as an icon. These raised ValueError,
    UnicodeError and InvalidURL out of the icon fetch (only OSError was caught), out of the
    notifier's show and so out of the hand-off: the agent stopped at the first of them, and
    the same message, never marked shown, stopped it again at every start."""
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    desktop.dunstctl("close-all")
    icons = ["http://[::1/i.png", "http://" + "a" * 70 + ".example/i.png", "http://x:abc/i.png"]
    async with AgentService(agent_cfg(tmp_path, stub.port)) as svc:
        for i, icon in enumerate(icons):
            await stub.frames.put(frame("message", f"ic{i}", title=f"icon {i}", message="m",
                                        icon=icon))  # fmt: skip
        await stub.frames.put(frame("message", "ic9", title="plain", message="m"))
        await until(lambda: desktop.count("displayed") == 4, what="all four shown")
        assert svc.handed_over == 4
    lines = [r.getMessage() for r in caplog.records if "not shown" in r.getMessage()]
    assert len(lines) == 3 and all(line.startswith("icon ") for line in lines), lines
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
