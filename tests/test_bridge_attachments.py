"""A local upload forwarded upstream by the bridge, fetched by an agent on the broker's side
(real relay, real mosquitto, the agent in-process over MQTT): a file below
``upstream_inline_limit`` travels inline as a base64 ``data:`` URL and lands in the agent's
cache; a larger one carries a URL on the relay's ``base_url``."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

from agent import config
from agent.config import ReceiptsConfig
from agent.e2e import files as e2e_files
from agent.e2e import seal as e2e_seal
from agent.e2e.keys import kid_of
from agent.e2e.keystore import KeyStore
from agent.envelope import from_fields
from agent.ntfyproto.attachment import data_url, data_url_bytes
from agent.service import AgentService
from tests.helpers import free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Publisher
from tests.notifyhelp import until
from tests.relay import FAST, Relay
from tests.test_agent_attachments import PDF, recorded, upload
from tests.test_desktop_sequence import png
from tests.test_mqtt_cli import Subscriber

TOPIC = "upfiles"


def broker_agent(home: Path, broker: Mosquitto) -> config.AgentConfig:
    cfg = config.load({"attachments.download": "always"}, env={"PUSHAGENT_HOME": str(home)})
    return replace(cfg, servers=(broker.url,), topics=(TOPIC,), notifier="none",
                   receipts=ReceiptsConfig(enabled=False))  # fmt: skip


def bridged(tmp: Path, broker: Mosquitto, extra: str = "") -> Relay:
    relay = Relay(tmp, config=FAST + extra, args=["--upstream", broker.url, "--forward", "up*"])
    relay.start()
    wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"]["state"] == "connected",
             timeout=20, what="upstream connected")  # fmt: skip
    return relay


def attachment_url(cfg: config.AgentConfig, mid: str) -> str:
    with sqlite3.connect(cfg.paths.db) as db:
        row = db.execute("SELECT json_extract(attachment, '$.url') FROM messages "
                         "WHERE id = ?", (mid,)).fetchone()  # fmt: skip
    return str(row[0]) if row else ""


async def test_a_small_upload_goes_upstream_inline_and_the_agent_keeps_the_file(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = bridged(tmp_path / "relay", mosquitto)
    cfg = broker_agent(tmp_path / "home", mosquitto)
    seen = Subscriber(mosquitto.port, TOPIC)  # what crossed the broker, as any client sees it
    try:
        async with AgentService(cfg) as svc:
            await until(lambda: svc.state() == "connected", what="the agent on the broker")
            image = png()
            sent = await asyncio.to_thread(upload, relay, TOPIC, image, "door.png")
            got = await until(lambda: recorded(cfg, sent["id"]), timeout=30, what="the file")
        await until(lambda: seen.got, what="the bridged message on the broker")
        crossed = json.loads(seen.got[0][1])["attachment"]
        assert crossed["url"].startswith("data:image/png;base64,")
        path = Path(str(got[0]))
        assert path.read_bytes() == image and got[1] is None
        # The bytes live in the cache, once: the row points there instead of holding the
        # ~1.4x larger base64 (up to 350 KB a message) for as long as the message is kept.
        assert attachment_url(cfg, sent["id"]) == path.as_uri()
        relay.stop()  # the file is the agent's now: nothing refers back to the LAN relay
        assert path.read_bytes() == image
    finally:
        seen.close()
        relay.stop()


async def test_a_file_above_the_inline_limit_goes_by_its_base_url(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()  # base_url must name the relay's port before it starts
    inline = "[attachments]\nupstream_inline_limit = 100\n"
    toml = f'base_url = "http://localhost:{port}"\n{FAST}{inline}'
    relay = Relay(tmp_path / "relay", config=toml, port=port,
                  args=["--upstream", mosquitto.url, "--forward", "up*"]).start()  # fmt: skip
    wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"]["state"] == "connected",
             timeout=20, what="upstream connected")  # fmt: skip
    cfg = broker_agent(tmp_path / "home", mosquitto)
    try:
        async with AgentService(cfg) as svc:
            await until(lambda: svc.state() == "connected", what="the agent on the broker")
            image = png() + b"\x00" * 400  # a PNG still, above the 100-byte inline limit
            sent = await asyncio.to_thread(upload, relay, TOPIC, image, "door.png")
            got = await until(lambda: recorded(cfg, sent["id"]), timeout=30, what="the file")
        assert Path(str(got[0])).read_bytes() == image
        assert attachment_url(cfg, sent["id"]) == f"http://localhost:{port}/file/{sent['id']}.png"
    finally:
        relay.stop()


async def test_an_inline_file_evicted_from_the_cache_goes_back_into_its_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The row of an inline attachment holds the cached file's file: URL instead of its
    data: URL (f26e01a). The cache keeps cache_max bytes: when a newer file evicts this one,
    the message's bytes would be nowhere (the publisher sent them once, inline). The data:
    URL goes back into the row as the file leaves the cache, and the file can be had again."""
    cfg = broker_agent(tmp_path / "home", mosquitto)
    cap = len(PDF) + 10
    cfg = replace(cfg, attachments=replace(cfg.attachments, cache_max=cap, max_download=cap))

    def inline(mid: str, body: bytes) -> bytes:
        att = {"name": f"{mid}.pdf", "url": data_url("application/pdf", body)}
        return json.dumps({"id": mid, "message": "a file", "attachment": att}).encode()

    async with AgentService(cfg) as svc:
        await until(lambda: svc.state() == "connected", what="the agent on the broker")
        with Publisher(mosquitto.port) as pub:
            pub.publish(TOPIC, [inline("inl1", PDF)])
            await until(lambda: recorded(cfg, "inl1"), what="the first file")
            assert attachment_url(cfg, "inl1").startswith("file:")
            pub.publish(TOPIC, [inline("inl2", PDF + b"y")])
            await until(lambda: recorded(cfg, "inl2"), what="the second file")
            await until(lambda: recorded(cfg, "inl1") is None, what="the first evicted")
    url = attachment_url(cfg, "inl1")
    assert url.startswith("data:application/pdf;base64,"), url[:80]
    assert data_url_bytes(url, len(PDF)) == PDF
    assert attachment_url(cfg, "inl2").startswith("file:")  # the one in the cache


async def test_an_encrypted_inline_file_evicted_from_the_cache_goes_back_sealed(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The same for an encrypted message (issue 15's sealed files): the cache holds the
    decrypted file, so its bytes cannot go back into the row as they are (the row would hold
    the plaintext where the ciphertext was). It stayed in the cache instead, past cache_max,
    for as long as the message is kept. Now it goes back sealed again under the file's own key
    (from the row, with a fresh nonce): the row holds a ciphertext that opens to the file."""
    cfg = broker_agent(tmp_path / "home", mosquitto)
    cap = len(PDF) + 10
    cfg = replace(cfg, attachments=replace(cfg.attachments, cache_max=cap, max_download=cap))
    key = os.urandom(32)
    KeyStore(cfg).add(TOPIC, key)

    def sealed(mid: str, body: bytes) -> bytes:
        blob, secret = e2e_files.seal_file(body)
        att = {"name": f"{mid}.pdf", "type": "application/pdf", "size": len(body),
               "url": data_url("application/octet-stream", blob), **secret}  # fmt: skip
        msg = from_fields({"id": mid, "message": "a secret file", "attachment": att}, topic=TOPIC)
        return json.dumps(e2e_seal.seal(msg, key, kid_of(key))).encode()

    async with AgentService(cfg) as svc:
        await until(lambda: svc.state() == "connected", what="the agent on the broker")
        with Publisher(mosquitto.port) as pub:
            pub.publish(TOPIC, [sealed("enc1", PDF)])
            got = await until(lambda: recorded(cfg, "enc1"), what="the first file")
            assert Path(str(got[0])).read_bytes() == PDF  # the cache holds the plaintext
            assert attachment_url(cfg, "enc1").startswith("file:")
            pub.publish(TOPIC, [sealed("enc2", PDF + b"y")])
            await until(lambda: recorded(cfg, "enc2"), what="the second file")
            await until(lambda: recorded(cfg, "enc1") is None, what="the first evicted")
    assert not Path(str(got[0])).exists()
    with sqlite3.connect(cfg.paths.db) as db:
        (raw,) = db.execute("SELECT attachment FROM messages WHERE id = 'enc1'").fetchone()
    att = json.loads(raw)
    assert att["url"].startswith("data:application/octet-stream;base64,"), att["url"][:80]
    blob = data_url_bytes(att["url"], len(PDF) + e2e_files.OVERHEAD)
    assert PDF not in blob and e2e_files.open_file(att, blob) == PDF
    assert attachment_url(cfg, "enc2").startswith("file:")  # the one in the cache
