"""The agent's side of attachments, against a real relay process: files land in the agent's
cache folder under the message id, checked against the attachment object by content, with the
relay's token only for the relay; a download never holds up its message; an agent that was
stopped gets the file when it starts, and keeps it when the relay is gone.

The agent runs in-process (``AgentService``, notifier ``none``: the store and the cache folder
are what these tests read). External attachment URLs (ntfy's ``Attach:``) point at a small
HTTP server in the test, which is the "other host": it records the headers it was sent.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent import config
from agent.config import ReceiptsConfig, WsConfig
from agent.service import AgentService
from edge_relay import auth
from tests.helpers import pushagent
from tests.notifyhelp import until
from tests.relay import Relay, module_relay, unique_topic
from tests.test_desktop_sequence import png

ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + b"x" * 300


class _Files(BaseHTTPRequestHandler):
    """``/<name>``: the bytes put in ``files``; ``/stall-once/<name>`` stalls the first GET;
    ``/nolength/<name>`` sends no Content-Length (the body ends when the connection does)."""

    files: ClassVar[dict[str, tuple[bytes, str]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []
    stalled: ClassVar[set[str]] = set()
    release = threading.Event()

    def do_GET(self) -> None:
        _Files.seen.append((self.path, self.headers.get("Authorization")))
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/stall-once/") and name not in _Files.stalled:
            _Files.stalled.add(name)
            _Files.release.wait(30)  # the agent's timeout gives up first
            return
        body, kind = _Files.files.get(name, (b"", ""))
        self.send_response(200 if kind else 404)
        self.send_header("Content-Type", kind or "text/plain")
        if not self.path.startswith("/nolength/"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Files.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "agentfiles")


def agent_cfg(home: Path, relay: Relay, topic: str, **attachments: Any) -> config.AgentConfig:
    flags = {f"attachments.{k}": v for k, v in attachments.items()}
    cfg = config.load(flags, env={"PUSHAGENT_HOME": str(home)})
    return replace(
        cfg, servers=(relay.url,), topics=(topic,), notifier="none",
        receipts=ReceiptsConfig(enabled=False), ws=WsConfig(keepalive=30.0, connect_timeout=5.0),
    )  # fmt: skip


def upload(relay: Relay, topic: str, body: bytes, name: str, token: str = "") -> dict[str, Any]:
    headers = {"Filename": name, **({"Authorization": f"Bearer {token}"} if token else {})}
    status, answer = relay.request("PUT", f"/{topic}", body, headers)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def recorded(cfg: config.AgentConfig, mid: str) -> tuple[str | None, str | None] | None:
    """(path, error) the store recorded for ``mid``'s attachment, None if nothing yet."""
    with sqlite3.connect(cfg.paths.db) as db:
        try:
            row = db.execute(
                "SELECT path, error FROM attachment_files WHERE message_id = ?", (mid,)
            ).fetchone()
        except sqlite3.OperationalError:  # main: no such table
            return None
    return (row[0], row[1]) if row else None


def stored(cfg: config.AgentConfig, mid: str) -> bool:
    with sqlite3.connect(cfg.paths.db) as db:
        return db.execute("SELECT 1 FROM messages WHERE id = ?", (mid,)).fetchone() is not None


def history(home: Path) -> dict[str, dict[str, Any]]:
    r = pushagent("history", "--json", home=home)
    assert r.returncode == 0, r.stderr
    return {m["id"]: m for m in json.loads(r.stdout)}


async def test_an_uploaded_image_lands_in_the_cache_and_history_lists_its_path(
    relay: Relay, tmp_path: Path
) -> None:
    topic = unique_topic("att")
    home = tmp_path / "home"
    cfg = agent_cfg(home, relay, topic)
    async with AgentService(cfg) as svc:
        image = await asyncio.to_thread(upload, relay, topic, png(), "door.jpg")
        pdf = await asyncio.to_thread(upload, relay, topic, PDF, "report.pdf")
        await until(lambda: recorded(cfg, image["id"]), what="the image downloaded")
        await until(lambda: svc.handed_over == 2, what="both messages handed over")
    folder = cfg.paths.cache_dir / "attachments"
    path = Path(str((recorded(cfg, image["id"]) or ("", ""))[0]))
    # named by the message id and the sniffed type (a PNG, whatever the name says)
    assert path == folder / f"{image['id']}.png"
    assert path.read_bytes() == png() and path.stat().st_mode & 0o777 == 0o600
    assert recorded(cfg, pdf["id"]) is None, "download = images: the PDF is not fetched"
    assert sorted(p.name for p in folder.iterdir()) == [path.name], "no temporary file left"
    listed = history(home)
    assert listed[image["id"]]["attachment_path"] == str(path)
    assert listed[image["id"]]["attachment"]["name"] == "door.jpg"
    assert "attachment_path" not in listed[pdf["id"]]


async def test_download_always_takes_any_file_and_the_cache_stays_within_cache_max(
    relay: Relay, tmp_path: Path
) -> None:
    topic = unique_topic("att")
    cfg = agent_cfg(tmp_path / "home", relay, topic, download="always",
                    max_download=len(PDF) + 10, cache_max=len(PDF) + 10)  # fmt: skip
    async with AgentService(cfg):
        first = await asyncio.to_thread(upload, relay, topic, PDF, "a.pdf")
        await until(lambda: recorded(cfg, first["id"]), what="the first PDF")
        second = await asyncio.to_thread(upload, relay, topic, PDF + b"y", "b.pdf")
        await until(lambda: recorded(cfg, second["id"]), what="the second PDF")
        await until(lambda: recorded(cfg, first["id"]) is None, what="the first evicted")
        big = await asyncio.to_thread(upload, relay, topic, PDF * 2, "big.pdf")
        await until(lambda: stored(cfg, big["id"]), what="the big one stored")
    folder = cfg.paths.cache_dir / "attachments"
    assert [p.name for p in folder.iterdir()] == [f"{second['id']}.pdf"]
    assert (folder / f"{second['id']}.pdf").read_bytes() == PDF + b"y"
    assert recorded(cfg, big["id"]) is None, "above max_download: never fetched"


async def test_a_file_whose_type_lies_is_refused_and_the_token_stays_on_its_server(
    files: str, tmp_path: Path
) -> None:
    """An executable behind an ``Attach:`` URL that ends in .png and answers image/png is not
    kept; the relay's own /file/ (read permission needed) gets the agent's token, the other
    host never does."""
    af = tmp_path / "auth.json"
    token = auth.add_token(af, "laptop", ["cam*"], ["cam*"])
    relay = Relay(tmp_path / "relay", args=["--auth-file", str(af)]).start()
    try:
        _Files.files["snap.png"] = (ELF, "image/png")
        _Files.files["real.png"] = (png(), "image/png")
        cfg = replace(agent_cfg(tmp_path / "home", relay, "cam1"),
                      auth=config.AuthConfig(token=token))  # fmt: skip
        async with AgentService(cfg):
            bearer = {"Authorization": f"Bearer {token}"}

            def attach(name: str) -> str:
                return str(relay.publish("cam1", name, Attach=f"{files}/{name}", **bearer)["id"])

            lie = await asyncio.to_thread(attach, "snap.png")
            real = await asyncio.to_thread(attach, "real.png")
            own = (await asyncio.to_thread(upload, relay, "cam1", png(), "c.png", token))["id"]
            for mid in (lie, real, own):
                await until(lambda m=mid: recorded(cfg, m), what=f"the outcome for {mid}")  # type: ignore[misc]
    finally:
        assert relay.stop() == 0
    path, error = recorded(cfg, lie) or (None, None)
    assert path is None and "not an image" in str(error)
    assert Path(str((recorded(cfg, real) or ("", ""))[0])).read_bytes() == png()
    assert Path(str((recorded(cfg, own) or ("", ""))[0])).read_bytes() == png()
    names = {p.name for p in (cfg.paths.cache_dir / "attachments").iterdir()}
    assert names == {f"{real}.png", f"{own}.png"}, "nothing of the executable is kept"
    other_host = [h for p, h in _Files.seen if p in ("/snap.png", "/real.png")]
    assert other_host and all(h is None for h in other_host), "no token to another host"


async def test_max_download_caps_the_declared_length_and_the_bytes_streamed(
    relay: Relay, files: str, tmp_path: Path
) -> None:
    """External files declare no size: a Content-Length above ``max_download`` is refused
    before the body, and a body without one is cut once it passes the cap."""
    topic = unique_topic("att")
    big = png() + b"\0" * 5000
    _Files.files["big.png"] = (big, "image/png")
    cfg = agent_cfg(tmp_path / "home", relay, topic, max_download=4096, cache_max=8192)
    async with AgentService(cfg):

        def attach(path: str) -> str:
            return str(relay.publish(topic, path, Attach=f"{files}/{path}")["id"])

        declared = await asyncio.to_thread(attach, "big.png")
        streamed = await asyncio.to_thread(attach, "nolength/big.png")
        for mid in (declared, streamed):
            await until(lambda m=mid: recorded(cfg, m), what=f"the outcome for {mid}")  # type: ignore[misc]
    assert "Content-Length 5" in str((recorded(cfg, declared) or ("", ""))[1])
    assert "more than max_download (4096)" in str((recorded(cfg, streamed) or ("", ""))[1])
    assert list((cfg.paths.cache_dir / "attachments").iterdir()) == [], "no partial file"


async def test_a_stalled_download_never_holds_up_its_message_and_is_retried(
    relay: Relay, files: str, tmp_path: Path
) -> None:
    topic = unique_topic("att")
    _Files.files["slow.png"] = (png(), "image/png")
    # 5 s: the message must be handed over while the first try is stalled, which a 1 s
    # timeout did not leave room for on a slow CI box (the try had already failed)
    cfg = agent_cfg(tmp_path / "home", relay, topic, timeout=5.0)
    async with AgentService(cfg) as svc:
        # subscribed first: a fresh agent's first since= is the second it subscribed in, so
        # a message published before that (CI once: the connect took over a second) is not
        # its to receive
        await until(lambda: svc.state() == "connected", what="the agent subscribed")
        mid = (await asyncio.to_thread(relay.publish, topic, "slow",
                                       Attach=f"{files}/stall-once/slow.png"))["id"]  # fmt: skip
        await until(lambda: svc.handed_over == 1, what="the message handed over")
        assert recorded(cfg, mid) is None, "the first try is still stalled"
        # after the timeout, the retry (backoff) gets it
        await until(lambda: recorded(cfg, mid), timeout=60, what="the retried download")
    assert Path(str((recorded(cfg, mid) or ("", ""))[0])).read_bytes() == png()


# URLs ntfy (and so the relay) accepts as an Attach: (``https?://.+``) that no download can use
BAD_URLS = [
    "http://[::1",
    "http://" + "a" * 70 + ".example/x",
    "http://x:abc/f",
    "http://x:99999/f",
]


async def test_an_attachment_url_that_cannot_be_fetched_is_refused_once_and_named(
    relay: Relay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: the first two raised ValueError/UnicodeError inside the download, logged as a bug
    with a traceback, and nothing recorded (tried again, traceback again, at every start);
    the ports were "retryable" (6 tries over minutes, then again at every start)."""
    topic = unique_topic("att")
    cfg = agent_cfg(tmp_path / "home", relay, topic, download="always")
    async with AgentService(cfg) as svc:
        await until(lambda: svc.state() == "connected", what="the agent subscribed")
        ids = [(await asyncio.to_thread(relay.publish, topic, f"bad {i}", Attach=url))["id"]
               for i, url in enumerate(BAD_URLS)]  # fmt: skip
        for mid in ids:
            await until(lambda m=mid: recorded(cfg, m), what=f"the refusal of {mid}")  # type: ignore[misc]
        await until(lambda: svc.handed_over == len(ids), what="every message handed over")
    for mid, url in zip(ids, BAD_URLS, strict=True):
        path, error = recorded(cfg, mid) or (None, None)
        assert path is None and "URL" in str(error), (url, error)
    assert not [r for r in caplog.records if r.exc_info], "no download ended in a traceback"


async def test_an_agent_that_was_stopped_gets_the_file_and_keeps_it_without_the_relay(
    tmp_path: Path,
) -> None:
    relay = Relay(tmp_path / "relay").start()
    home = tmp_path / "home"
    cfg = agent_cfg(home, relay, "door")
    try:
        async with AgentService(cfg):  # subscribed once: its position is known from now on
            first = await asyncio.to_thread(relay.publish, "door", "hello")
            await until(lambda: stored(cfg, first["id"]), what="the first message")
        snapshot = png() + b"trailing bytes keep it unique"
        mid = (await asyncio.to_thread(upload, relay, "door", snapshot, "door.png"))["id"]
        async with AgentService(cfg):
            await until(lambda: recorded(cfg, mid), timeout=30, what="the file after the start")
    finally:
        assert relay.stop() == 0
    path = Path(str((recorded(cfg, mid) or ("", ""))[0]))
    assert path.read_bytes() == snapshot  # byte for byte
    listed = history(home)  # the relay is gone: the store and the cache still answer
    assert listed[mid]["attachment_path"] == str(path)
    assert Path(listed[mid]["attachment_path"]).read_bytes() == snapshot


async def test_a_pruned_message_takes_its_file_with_it(relay: Relay, tmp_path: Path) -> None:
    topic = unique_topic("att")
    cfg = agent_cfg(tmp_path / "home", relay, topic)
    async with AgentService(cfg) as svc:
        old = (await asyncio.to_thread(upload, relay, topic, png(), "old.png"))["id"]
        new = (await asyncio.to_thread(upload, relay, topic, png() + b"new", "new.png"))["id"]
        for mid in (old, new):
            await until(lambda m=mid: recorded(cfg, m), what=f"the file of {mid}")  # type: ignore[misc]
        await until(lambda: svc.handed_over == 2, what="both handed over")
    folder = cfg.paths.cache_dir / "attachments"
    assert len(list(folder.iterdir())) == 2
    # the next start prunes to the newest message (store.max_messages = 1), and its sweep
    # removes the pruned message's file
    async with AgentService(replace(cfg, store=config.StoreConfig(max_messages=1))):
        await until(lambda: not stored(cfg, old), what="the old message pruned")
        await until(lambda: len(list(folder.iterdir())) == 1, what="its file removed")
    assert [p.name for p in folder.iterdir()] == [f"{new}.png"]
    assert recorded(cfg, old) is None


def test_attachment_settings_errors_name_file_key_and_value(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[attachments]\ndownload = "sometimes"\nmax_download = "15XB"\ncache_max = "1GB"\n'
    )
    r = pushagent("config", "show", home=home)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "Traceback" not in err
    where = str(home / "config.toml")
    assert f"{where}: 'attachments.max_download' must be a size such as" in err and "'15XB'" in err
    assert (
        f"{where}: 'attachments.download' must be always, images or never, not 'sometimes'" in err
    )
    (home / "config.toml").write_text('[attachments]\nmax_download = "2.5 MB"\ncache_max = "1G"\n')
    r = pushagent("config", "show", home=home)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)["attachments"]
    assert shown["max_download"] == 2621440 and shown["cache_max"] == 1 << 30
    assert shown["download"] == "images"
