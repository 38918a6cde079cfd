"""Encrypted attachments (issue 15): ``pushagent send --encrypt TOPIC --attach FILE`` uploads
the file encrypted with its own key, carried inside the JWE; the agent decrypts what it
downloads. Real relay and agent processes.

* the relay's files and database hold neither the file's bytes nor its name; its
  attachment object says ``application/octet-stream`` and a neutral name;
* the agent holding the topic's key keeps the plaintext (0600), equal to the original,
  with the name and type from inside;
* an agent without the key downloads nothing; after ``key import`` it gets the file;
* a file whose ciphertext was changed is not kept, and the log says why.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import stat
import uuid
from pathlib import Path

from agent.e2e import files as e2e_files
from agent.e2e import jwe
from agent.e2e.keys import kid_of, parse
from tests.helpers import pushagent, wait_for
from tests.mqtt_helpers import Agent
from tests.relay_proc import RelayProc
from tests.test_desktop_sequence import png
from tests.test_e2e_processes import files_bytes, keyring_env, shown_ids


def downloads(home: Path) -> dict[str, tuple[str | None, str | None]]:
    db = home / "data" / "pushagent.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT message_id, path, error FROM attachment_files").fetchall()
    return {str(m): (p, e) for m, p, e in rows}


def poll(relay: RelayProc, topic: str) -> dict[str, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    conn.request("GET", f"/{topic}/json?poll=1")
    frames = [json.loads(x) for x in conn.getresponse().read().splitlines() if x.strip()]
    conn.close()
    return {str(f["id"]): f for f in frames}


def put_tampered(relay: RelayProc, key: bytes, data: bytes) -> str:
    """What send --encrypt --attach uploads, with one byte of the ciphertext flipped."""
    blob, secret = e2e_files.seal_file(data)
    blob = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
    att = {"name": "bad.png", "type": "image/png", "size": len(data), **secret}
    token = jwe.encrypt({"message": "tampered file", "attachment": att}, key, kid_of(key))
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    conn.request("PUT", "/alerts", body=blob,
                 headers={"Message": token, "Filename": e2e_files.UPLOAD_NAME})  # fmt: skip
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body
    return str(json.loads(body)["id"])


def test_send_encrypt_attach_relay_sees_ciphertext_agent_gets_the_file(tmp_path: Path) -> None:
    relay = RelayProc(tmp_path / "relay").start()
    ha, hb = tmp_path / "a", tmp_path / "b"
    ea, eb = keyring_env(tmp_path, "a"), keyring_env(tmp_path, "b")
    hb.mkdir()
    marker = uuid.uuid4().hex.encode()
    original = png() + b"secret-photo-" + marker + os.urandom(3000)
    name = f"door-{marker.decode()[:8]}.png"
    (tmp_path / name).write_bytes(original)
    a = b = None
    try:
        assert pushagent("key", "new", "alerts", home=ha, env=ea).returncode == 0
        a = Agent(ha, relay.url, "--topic", "alerts", env=ea).start()
        b = Agent(hb, relay.url, "--topic", "alerts", env=eb).start()
        sent = pushagent("send", "--encrypt", "--server", relay.url, "alerts", "Photo",
                         "--attach", str(tmp_path / name), home=ha, env=ea)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        mid = sent.stdout.decode().strip()

        wait_for(lambda: (downloads(ha).get(mid) or (None,))[0] is not None, timeout=30,
                 what=f"A downloaded the file\n{a.log()[-2000:]}")  # fmt: skip
        kept = Path(str(downloads(ha)[mid][0]))
        assert kept.read_bytes() == original
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.suffix == ".png"
        got = shown_ids(a)[mid]
        assert got["message"] == "Photo"
        att = got["attachment"]
        assert isinstance(att, dict)
        assert (att["name"], att["type"], att["size"]) == (name, "image/png", len(original))

        # the relay: ciphertext only, a neutral name and type, no key, no plaintext anywhere
        frame = poll(relay, "alerts")[mid]
        outer = frame["attachment"]
        assert isinstance(outer, dict) and jwe.looks_like(str(frame["message"]))
        assert outer["type"] == "application/octet-stream" and outer["name"] == "attachment.bin"
        assert outer["size"] == len(original) + e2e_files.OVERHEAD and "key" not in outer
        uploads = [p for p in (tmp_path / "relay").rglob("*") if p.is_file()
                   and p.stat().st_size == len(original) + e2e_files.OVERHEAD]  # fmt: skip
        assert uploads, "the search below must cover the relay's copy of the file"
        stored = files_bytes(tmp_path / "relay")
        assert marker not in stored and original[-64:] not in stored and name.encode() not in stored

        # B has no key: nothing downloaded; after the import the running B fetches it
        wait_for(lambda: mid in shown_ids(b), timeout=30, what="B got the message")  # type: ignore[arg-type]
        assert shown_ids(b)[mid]["state"] == "undecryptable" and mid not in downloads(hb)
        exported = pushagent("key", "export", "alerts", home=ha, env=ea).stdout.decode().strip()
        assert pushagent("key", "import", "alerts", exported, home=hb, env=eb).returncode == 0
        wait_for(lambda: (downloads(hb).get(mid) or (None,))[0] is not None, timeout=30,
                 what=f"B downloaded the file after the import\n{b.log()[-2000:]}")  # fmt: skip
        assert Path(str(downloads(hb)[mid][0])).read_bytes() == original

        # a file by URL travels inside only: the relay has no attachment and no URL
        link = f"http://127.0.0.1:9/{marker.decode()}.png"
        by_url = pushagent("send", "--encrypt", "--server", relay.url, "alerts", "Link",
                           "--attach", link, home=ha, env=ea)  # fmt: skip
        assert by_url.returncode == 0, by_url.stderr
        lid = by_url.stdout.decode().strip()
        wait_for(lambda: lid in shown_ids(a), timeout=30, what="A showed the link")  # type: ignore[arg-type]
        assert shown_ids(a)[lid]["attachment"] == {"name": f"{marker.decode()}.png", "url": link}
        assert "attachment" not in poll(relay, "alerts")[lid]
        assert marker not in files_bytes(tmp_path / "relay")

        # a changed byte of the ciphertext: the message opens, its file is not kept
        bad = put_tampered(relay, parse(exported), png() + marker)
        wait_for(lambda: bad in downloads(ha), timeout=30, what="A tried the tampered file")
        path, error = downloads(ha)[bad]
        assert path is None and error is not None and "tampered" in error
        assert (f"WARNING pushagent.attachments: attachment of {bad} not kept: encrypted "
                "attachment does not open: tampered or truncated") in a.log()  # fmt: skip
        assert f"attachment of {bad} not downloaded" not in a.log()  # one warning, not two
        cache = ha / "cache" / "attachments"
        assert sorted(p.name for p in cache.iterdir()) == [kept.name]
    finally:
        for agent in (a, b):
            if agent is not None:
                agent.stop()
        relay.stop()
