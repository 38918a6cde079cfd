"""The pure decisions of agent/attachments/ and the size setting, without I/O: which
attachment objects are fetched, what the bytes must be, where a token may go."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent import config
from agent.attachments import Downloader, DownloadError, check, decide, file_name, same_origin
from agent.config import AttachmentsConfig
from agent.settings import parse_size
from agent.store import Store
from tests.test_desktop_sequence import png

IMAGES = AttachmentsConfig()
ALWAYS = AttachmentsConfig(download="always")
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("att", "cfg", "why"),
    [
        ({"url": "https://r/file/a.png", "type": "image/png", "size": 10}, IMAGES, None),
        ({"url": "http://r/x"}, IMAGES, None),  # no type: the content decides
        ({"url": "ftp://r/x.png", "type": "image/png"}, ALWAYS, "no http(s) url"),
        ({"url": "file:///etc/passwd"}, ALWAYS, "no http(s) url"),
        ({"type": "image/png"}, ALWAYS, "no http(s) url"),
        ({"url": "https://r/a", "expires": NOW - 1}, ALWAYS, "expired"),
        ({"url": "https://r/a", "size": 16 << 20}, ALWAYS, "above max_download"),
        ({"url": "https://r/a.pdf", "type": "application/pdf"}, IMAGES, "not an image"),
        ({"url": "https://r/a.pdf", "type": "application/pdf"}, ALWAYS, None),
        ({"url": "https://r/a.png", "type": "image/png"}, AttachmentsConfig(download="never"),
         "downloads are off"),
    ],
)  # fmt: skip
def test_decide(att: dict[str, object], cfg: AttachmentsConfig, why: str | None) -> None:
    got = decide(att, cfg, NOW)
    assert (got is None) if why is None else (why in str(got)), got


def test_check_compares_size_and_sniffed_type_never_the_name() -> None:
    head = png()
    assert check({"type": "image/png", "size": len(head), "name": "x.jpg"}, IMAGES,
                 len(head), head) == ("image/png", ".png")  # fmt: skip
    with pytest.raises(DownloadError, match="declared 99 bytes, received"):
        check({"type": "image/png", "size": 99}, IMAGES, len(head), head)
    elf = b"\x7fELF\x02\x01\x01" + bytes(60)
    with pytest.raises(DownloadError, match="declared image/png, but the content is"):
        check({"type": "image/png", "name": "cat.png"}, ALWAYS, len(elf), elf)
    with pytest.raises(DownloadError, match="not an image"):
        check({"name": "cat.png"}, IMAGES, len(elf), elf)
    # octet-stream (or no type) takes what was sniffed
    assert check({"type": "application/octet-stream"}, ALWAYS, 5, b"hello")[1] == ".txt"


def test_the_token_goes_only_to_the_same_scheme_host_and_port() -> None:
    relay = "http://relay.lan:8080"
    assert same_origin("http://relay.lan:8080/file/a.png", relay)
    assert same_origin("http://RELAY.lan:8080/file/a.png", "ws://relay.lan:8080")
    assert same_origin("https://ntfy.sh/file/a.png", "https://ntfy.sh")
    assert same_origin("https://ntfy.sh:443/file/a", "wss://ntfy.sh")
    assert not same_origin("http://relay.lan:8081/file/a.png", relay)
    assert not same_origin("https://relay.lan:8080/file/a.png", relay)
    assert not same_origin("http://relay.lan.evil:8080/a", relay)
    assert not same_origin("http://relay.lan:bad/a", relay)
    assert not same_origin("http://relay.lan:8080/a", None)


def test_file_names_are_the_message_id_or_its_hash() -> None:
    assert file_name("Ab_3-x", ".png") == "Ab_3-x.png"
    hashed = file_name("../../etc/passwd", ".bin")
    assert "/" not in hashed and hashed.endswith(".bin") and len(hashed) == 36


@pytest.mark.parametrize(
    ("text", "size"),
    [("15MB", 15 << 20), ("500 MB", 500 << 20), ("1.5G", 3 << 29), ("512k", 512 << 10),
     ("100", 100), ("2mib", 2 << 20), ("1TB", 1 << 40)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "15XB", "-1MB", "1e3", "15 M B"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_failures_are_warned_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path)})
    with Store(tmp_path / "db") as store:
        downloads = Downloader(cfg, store)
        with caplog.at_level(logging.DEBUG, logger="pushagent.attachments"):
            for i in range(50):
                downloads._warn(f"attachment of m{i}: HTTP 503")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["attachment of m0: HTTP 503"]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 49


def test_an_inline_file_does_not_count_toward_max_message_size_but_has_its_own_cap() -> None:
    from agent.envelope import decode
    from agent.errors import MessageError
    from agent.ntfyproto.attachment import INLINE_MAX, data_url, data_url_bytes

    blob = bytes(range(256)) * (200 * 1024 // 256)  # 200 KiB: ~273 KB as base64
    att = {"name": "x.bin", "type": "application/octet-stream", "size": len(blob),
           "url": data_url("application/octet-stream", blob)}  # fmt: skip
    payload = json.dumps({"topic": "t", "message": "file", "attachment": att})
    assert len(payload) > 256 * 1024
    msg = decode(payload, max_size=256 * 1024)
    assert msg.attachment is not None
    assert data_url_bytes(msg.attachment["url"], INLINE_MAX) == blob
    with pytest.raises(MessageError, match="above the limit"):  # not inline: counted
        decode(json.dumps({"topic": "t", "message": "x" * 300_000}), max_size=256 * 1024)
    with pytest.raises(MessageError, match="above the limit"):  # the rest is still bounded
        decode(json.dumps({"topic": "t", "message": "x" * 300_000, "attachment": att}),
               max_size=256 * 1024)  # fmt: skip
    with pytest.raises(ValueError, match="above 1000 bytes"):
        data_url_bytes(att["url"], 1000)
    with pytest.raises(ValueError, match=f"above {INLINE_MAX} bytes"):
        data_url_bytes(data_url("x/y", b"\0" * (INLINE_MAX + 10)), 1 << 30)
    with pytest.raises(ValueError, match="not a base64 data: URL"):
        data_url_bytes("data:text/plain,hello", 1000)
    cfg = AttachmentsConfig(download="always")
    assert decide({"url": att["url"]}, cfg, 0) is None
    assert decide({"url": "file:///etc/passwd"}, cfg, 0) == "no http(s) url"


def test_an_encrypted_file_that_does_not_open_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new user's agent logged a tampered file twice ("not kept: ..." then "not
    downloaded: ..."); the first, always logged, says it all."""
    import asyncio
    import base64
    import os

    from agent.envelope import from_fields
    from agent.store import Stored

    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path)})
    data = png()
    junk = base64.b64encode(os.urandom(len(data) + 28)).decode()
    att = {"name": "door.png", "type": "image/png", "size": len(data), "enc": "A256GCM",
           "key": base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode(),
           "url": f"data:application/octet-stream;base64,{junk}"}  # fmt: skip
    msg = from_fields({"id": "t1", "time": NOW, "message": "m", "attachment": att}, topic="a")
    with Store(tmp_path / "db") as store:
        store.insert_batch([msg], source="test")
        downloads = Downloader(cfg, store)
        with caplog.at_level(logging.DEBUG, logger="pushagent.attachments"):
            asyncio.run(downloads._job(Stored(seq=1, message=msg), 1))
        assert store.attachment_paths(["t1"]) == {} and downloads.failed == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["attachment of t1 not kept: encrypted attachment does not open: "
                        "tampered or truncated"], warnings  # fmt: skip
