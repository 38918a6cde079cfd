"""Issue 14's relay side against real relay processes: files published as ntfy's attachments
(curl, a binary body, JSON, Apprise), served at ``/file/`` with ranges and the topic's read
permission, the ``[attachments]`` limits (413, 507 on a full disk while text keeps working),
and atomic writes (a relay SIGKILLed mid-upload leaves no message and no partial file).

Every test here fails on main before this change (Filename/binary bodies were 40014, there
was no ``/file/``), except ``test_an_attach_url_is_kept_and_never_fetched``, which main
already passed: it guards that the relay still never fetches an external URL.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import socket
import struct
import subprocess
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apprise
import pytest
from PIL import Image

from edge_relay import auth
from tests.helpers import wait_for
from tests.relay import FAST, Relay, module_relay

MB = 1024 * 1024


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "relay")


def topic(prefix: str = "f") -> str:
    return prefix + uuid.uuid4().hex[:12]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def mp4(size: int) -> bytes:
    """An ISO base media file head (``ftyp`` box, what file sniffers read) and ``size``
    bytes in all, so a range can be checked byte for byte."""
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    return head + os.urandom(size - len(head))


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[
    int, dict[str, str], bytes]:  # fmt: skip
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def curl(*args: str) -> dict[str, Any]:
    done = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30, check=True)
    return dict(json.loads(done.stdout))


def files_of(r: Relay) -> list[str]:
    d = r.dir / "data" / "attachments"
    return sorted(os.listdir(d)) if d.exists() else []


# --- publishing ----------------------------------------------------------------------------------


def test_curl_upload_with_filename_becomes_an_attachment_typed_by_its_content(
    relay: Relay, tmp_path: Path
) -> None:
    t, data = topic(), png()
    snap = tmp_path / "snapshot.jpg"  # named .jpg, but a PNG: the type comes from the bytes
    snap.write_bytes(data)
    msg = curl("-T", str(snap), "-H", "Filename: door.jpg", "-H", "Title: Door",
               f"{relay.url}/{t}")  # fmt: skip
    att = msg["attachment"]
    assert (att["name"], att["type"], att["size"]) == ("door.jpg", "image/png", len(data))
    assert att["url"] == f"{relay.url}/file/{msg['id']}.png"  # from the request's Host
    assert msg["time"] + 3 * 3600 - 2 <= att["expires"] <= msg["time"] + 3 * 3600 + 2
    assert msg["message"] == "You received a file: door.jpg" and msg["title"] == "Door"
    [polled] = relay.poll(t)
    assert polled["attachment"] == att
    status, headers, body = get(att["url"])
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/png" and headers["Content-Length"] == str(len(data))
    assert headers["Content-Disposition"] == 'inline; filename="door.jpg"'
    assert headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in headers[
        "Content-Security-Policy"]  # fmt: skip
    assert msg["id"] in files_of(relay)  # on disk under the message id alone


def test_a_binary_or_long_body_without_filename_is_an_attachment(relay: Relay) -> None:
    t = topic()
    blob = b"\x00\xff\xfe" + os.urandom(500)
    status, msg = relay.request("POST", f"/{t}", blob)
    assert status == 200, msg
    att = msg["attachment"]
    assert (att["name"], att["type"], att["size"]) == (
        "attachment.bin",
        "application/octet-stream",
        len(blob),
    )
    status, headers, body = get(att["url"])
    assert status == 200 and body == blob
    assert headers["Content-Disposition"] == 'attachment; filename="attachment.bin"'
    text = ("line of a long report\n" * 400).encode()  # above message_size (4096), UTF-8
    status, msg = relay.request("PUT", f"/{t}", text)
    assert status == 200 and msg["attachment"]["type"] == "text/plain; charset=utf-8"
    assert get(msg["attachment"]["url"])[2] == text


def test_hostile_file_names_are_cleaned_in_the_attachment_name(relay: Relay) -> None:
    t = topic()
    for given, expected in (("../../etc/passwd", "passwd"), ("CON", "_CON"),
                            ("..\\boot.ini", "boot.ini")):  # fmt: skip
        status, msg = relay.request("PUT", f"/{t}", b"data", {"Filename": given})
        assert status == 200 and msg["attachment"]["name"] == expected, msg
    status, msg = relay.request("PUT", f"/{t}?f=a%00b.txt", b"data")  # NUL
    assert status == 200 and msg["attachment"]["name"] == "a_b.txt", msg
    status, msg = relay.request("PUT", f"/{t}?filename={'n' * 300}.jpeg", b"data")
    assert status == 200 and len(msg["attachment"]["name"]) == 200
    assert msg["attachment"]["name"].endswith(".jpeg")
    assert sorted(files_of(relay)) == sorted(set(files_of(relay)))
    assert all("." not in f and "/" not in f for f in files_of(relay))


def test_an_attach_url_is_kept_and_never_fetched(relay: Relay) -> None:
    t = topic()
    with socket.socket() as trap:  # a server the relay would connect to if it fetched
        trap.bind(("127.0.0.1", 0))
        trap.listen()
        trap.setblocking(False)
        url = f"http://127.0.0.1:{trap.getsockname()[1]}/cam/snap.jpg"
        msg = relay.publish(t, "look", Attach=url)
        assert msg["attachment"] == {"name": "snap.jpg", "url": url}
        assert relay.poll(t)[0]["attachment"] == {"name": "snap.jpg", "url": url}
        with pytest.raises(BlockingIOError):
            trap.accept()


def test_json_publish_attach_and_filename(relay: Relay) -> None:
    t = topic()
    obj = {"topic": t, "message": "report", "attach": "https://f.example/r.pdf",
           "filename": "march.pdf"}  # fmt: skip
    status, msg = relay.request("POST", "/", json.dumps(obj).encode())
    assert status == 200, msg
    assert msg["attachment"] == {"name": "march.pdf", "url": "https://f.example/r.pdf"}
    # ntfy: "filename" without "attach" stores the JSON's message as the file
    obj = {"topic": t, "message": "the notes", "filename": "notes.txt"}
    status, msg = relay.request("POST", "/", json.dumps(obj).encode())
    assert status == 200, msg
    assert msg["message"] == "You received a file: notes.txt"
    assert get(msg["attachment"]["url"])[2] == b"the notes"


# Apprise's plugin loader imports imghdr (deprecated in 3.11): its warning, not ours
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_apprise_attach_arrives_intact(relay: Relay, tmp_path: Path) -> None:
    """Apprise's ntfy plugin POSTs the file as the body with ``?filename=``."""
    t, data = topic(), mp4(200_000)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(data)
    a = apprise.Apprise()
    assert a.add(f"ntfy://127.0.0.1:{relay.port}/{t}")
    assert bool(a.notify(title="Doorbell", body="someone rang", attach=str(clip)))
    msgs = relay.poll(t)
    files = [m for m in msgs if "attachment" in m]
    assert len(files) == 1, msgs
    att = files[0]["attachment"]
    assert (att["name"], att["type"], att["size"]) == ("clip.mp4", "video/mp4", len(data))
    assert get(att["url"])[2] == data


# --- serving -------------------------------------------------------------------------------------


def test_range_requests_on_a_video_file(relay: Relay) -> None:
    t, data = topic(), mp4(1_000_000)
    status, msg = relay.request("PUT", f"/{t}", data, {"Filename": "clip.mp4"})
    assert status == 200, msg
    url = msg["attachment"]["url"]
    assert url.endswith(".mp4") and msg["attachment"]["type"] == "video/mp4"
    status, headers, body = get(url, {"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert headers["Content-Type"] == "video/mp4"
    status, _, body = get(url, {"Range": "bytes=-16"})
    assert status == 206 and body == data[-16:]
    status, headers, body = get(url, method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    assert get(url, {"Range": f"bytes={len(data)}-"})[0] == 416
    assert get(f"{relay.url}/file/{msg['id']}")[2] == data  # the extension is optional
    assert get(f"{relay.url}/file/nosuchmessage1.mp4")[0] == 404


BAD_RANGES = ["bytes=abc", "bytes=", "items=0-1", "bytes=10-5", "bytes=0-1,5-9", "bytes=1e400-",
              "bytes=NaN-", f"bytes={2**70}-", "bytes=1000-"]  # fmt: skip


@pytest.mark.parametrize("rng", BAD_RANGES)
def test_a_malformed_or_unsatisfiable_range_is_a_json_416_naming_it(relay: Relay, rng: str) -> None:
    # aiohttp's FileResponse answered these 416 with an empty body: no error a client could show
    t, data = topic(), mp4(1000)
    status, msg = relay.request("PUT", f"/{t}", data, {"Filename": "clip.mp4"})
    assert status == 200, msg
    status, headers, body = get(msg["attachment"]["url"], {"Range": rng})
    assert status == 416
    assert headers["Content-Range"] == "bytes */1000"
    answer = json.loads(body)
    assert answer["http"] == 416 and rng in answer["error"] and "1000" in answer["error"]
    assert get(msg["attachment"]["url"], {"Range": "bytes=10-19"})[2] == data[10:20]  # still served


def test_a_file_is_readable_only_with_read_permission_on_its_topic(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    cam = auth.add_token(af, "cam", ["cam*"], ["cam*"])
    other = auth.add_token(af, "other", ["other*"], ["other*"])
    r = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        status, msg = r.request("PUT", "/camdoor", png(), {"Authorization": f"Bearer {cam}",
                                                           "Filename": "door.png"})  # fmt: skip
        assert status == 200, msg
        url = msg["attachment"]["url"]
        assert get(url, {"Authorization": f"Bearer {cam}"})[2] == png()
        status, _, body = get(url, {"Authorization": f"Bearer {other}"})
        assert status == 403 and b"other" in body
        assert get(url)[0] == 401  # anonymous
        token = base64.urlsafe_b64encode(f"Bearer {cam}".encode()).decode().rstrip("=")
        assert get(f"{url}?auth={token}")[0] == 200  # ntfy's ?auth=, as for subscriptions
    finally:
        assert r.stop() == 0, r.log.read_text()


def test_an_expired_file_is_removed_by_the_pruner(tmp_path: Path) -> None:
    r = Relay(tmp_path, config="prune_interval = 0.2\n" + FAST + "[attachments]\nexpiry = 1\n")
    r.start()
    try:
        status, msg = r.request("PUT", "/expiring", b"\x00bytes", {"Filename": "a.bin"})
        assert status == 200 and msg["attachment"]["expires"] <= msg["time"] + 1
        wait_for(lambda: msg["id"] not in files_of(r), timeout=10, what="the expired file gone")
        assert get(msg["attachment"]["url"])[0] == 404
        assert r.poll("expiring")[0]["id"] == msg["id"]  # the message itself stays
    finally:
        assert r.stop() == 0, r.log.read_text()


def test_a_delayed_file_is_kept_until_delivered_and_then_served(tmp_path: Path) -> None:
    r = Relay(tmp_path, config="prune_interval = 0.2\n" + FAST).start()
    try:
        status, body = r.request("PUT", "/later", b"\x00x", {"Filename": "a.bin", "Delay": "5h"})
        assert (status, body["code"]) == (400, 40015)  # after the file's 3 h expiry
        data = os.urandom(3000)
        status, msg = r.request("PUT", "/later", data, {"Filename": "a.bin", "Delay": "10s"})
        assert status == 200, msg
        assert r.poll("later") == []
        # meanwhile the sweep runs every 0.2 s: a scheduled message's file is kept
        wait_for(lambda: r.poll("later"), timeout=30, what="the delayed message delivered")
        assert get(msg["attachment"]["url"])[2] == data
    finally:
        assert r.stop() == 0, r.log.read_text()


# --- limits --------------------------------------------------------------------------------------

LIMITS = (
    FAST
    + """
[attachments]
file_size_limit = 10000
total_size_limit = 25000
daily_bandwidth_limit = 1000000
"""
)


def chunked_put(r: Relay, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """A PUT without Content-Length (chunked), so the limit is met while streaming."""
    with socket.create_connection(("127.0.0.1", r.port), timeout=15) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{head}"
                  f"Connection: close\r\n\r\n".encode())  # fmt: skip
        try:
            for i in range(0, len(data), 4096):
                part = data[i : i + 4096]
                s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the relay answered early and closed
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1] or b"null")


def test_limits_answer_ntfys_413_and_leave_nothing_behind(tmp_path: Path) -> None:
    r = Relay(tmp_path, config=LIMITS).start()
    try:
        status, body = r.request("PUT", "/lim", b"x" * 10001, {"Filename": "big.bin"})
        assert (status, body["code"]) == (413, 41301) and "file size limit" in body["error"]
        status, body = chunked_put(r, "/lim", b"y" * 20000, {"Filename": "big.bin"})
        assert (status, body["code"]) == (413, 41301) and "file size limit" in body["error"]
        for _ in range(2):
            assert r.request("PUT", "/lim", b"z" * 10000, {"Filename": "ok.bin"})[0] == 200
        status, body = r.request("PUT", "/lim", b"w" * 6000, {"Filename": "over.bin"})
        assert (status, body["code"]) == (413, 41301) and "total" in body["error"]
        assert len(r.poll("lim")) == 2 and len(files_of(r)) == 2  # no partial file left
        assert r.publish("lim", "text still works")["message"] == "text still works"
    finally:
        assert r.stop() == 0, r.log.read_text()


def test_a_client_over_its_daily_upload_budget_gets_41301(tmp_path: Path) -> None:
    config = FAST + "[attachments]\ndaily_bandwidth_limit = 25000\n"
    r = Relay(tmp_path, config=config).start()
    try:
        for _ in range(2):
            assert r.request("PUT", "/bud", b"a" * 10000, {"Filename": "a.bin"})[0] == 200
        status, body = r.request("PUT", "/bud", b"a" * 10000, {"Filename": "a.bin"})
        assert (status, body["code"]) == (413, 41301) and "daily upload budget" in body["error"]
        assert len(files_of(r)) == 2
    finally:
        assert r.stop() == 0, r.log.read_text()


def gzip_bomb(mib: int, encoding: str = "gzip") -> bytes:
    """A valid ``gzip`` (or zlib ``deflate``) stream of ``mib`` MiB of zeros, ~1 KiB per MiB:
    after a full flush deflate's blocks for 1 MiB of zeros are always the same bytes, so they
    are repeated; the trailer's checksum and size are the real ones."""
    zeros = bytes(MB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, end = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH), c.flush()
    if encoding == "deflate":
        adler = 1
        for _ in range(mib):
            adler = zlib.adler32(zeros, adler)
        return b"\x78\xda" + block * mib + end + struct.pack(">I", adler)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return head + block * mib + end + struct.pack("<II", crc, (mib * MB) & 0xFFFFFFFF)


def test_the_bomb_is_what_it_claims() -> None:
    assert gzip.decompress(gzip_bomb(3)) == bytes(3 * MB)
    assert zlib.decompress(gzip_bomb(3, "deflate")) == bytes(3 * MB)
    assert len(gzip_bomb(1024)) < 1100 * 1024  # 1 GiB from ~1 MiB


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def encoded_request(
    r: Relay, method: str, path: str, body: bytes, headers: dict[str, str], *, chunked: bool
) -> tuple[int, Any]:
    """A request whose body is sent as is (``Content-Encoding`` in ``headers``), with a
    Content-Length or chunked; sending stops quietly when the relay answers and closes."""
    with socket.create_connection(("127.0.0.1", r.port), timeout=30) as s:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n{length}\r\n{head}"
                  f"Connection: close\r\n\r\n".encode())  # fmt: skip
        try:
            for i in range(0, len(body), 16384):
                part = body[i : i + 16384]
                s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the relay answered early and closed
        raw = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                raw += chunk
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1] or b"null")


def test_a_gzip_bomb_is_413_in_bounded_memory_and_leaves_nothing(tmp_path: Path) -> None:
    """1 GiB of zeros in ~1 MiB of gzip (or deflate) against the 15 MB file size limit, as
    a file (``Filename``), as a body that becomes one, chunked or with its (compressed)
    Content-Length, and to the JSON publish: each is 413 once the *inflated* bytes pass the
    limit, the relay's peak RSS grows by a few MB at most, and no file or message is left."""
    r = Relay(tmp_path, config=FAST).start()
    assert r.proc is not None
    cache, pid = tmp_path / "data" / "attachments", r.proc.pid
    bomb, deflated = gzip_bomb(1024), gzip_bomb(1024, "deflate")
    try:
        small = os.urandom(5000)  # a compressed upload within the limits arrives inflated
        status, msg = encoded_request(r, "PUT", "/warm", gzip.compress(small),
                                      {"Content-Encoding": "gzip", "Filename": "w.bin"},
                                      chunked=True)  # fmt: skip
        assert status == 200 and get(msg["attachment"]["url"])[2] == small, msg
        kept = set(os.listdir(cache))
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS starts again from now
        rss = vm_kib(pid, "VmRSS")
        gz, file = {"Content-Encoding": "gzip"}, {"Content-Encoding": "gzip", "Filename": "b"}
        cases = [
            ("PUT", "/bomb", bomb, file, True, 41301),
            ("PUT", "/bomb", bomb, file, False, 41301),
            ("POST", "/bomb", bomb, gz, True, 41301),  # a body too long for text: a file
            ("PUT", "/bomb", deflated, {"Content-Encoding": "deflate"}, True, 41301),
            ("POST", "/", bomb, gz, True, 41303),
        ]  # ntfy's "JSON body too large"
        for method, path, body, headers, chunked, code in cases:
            status, answer = encoded_request(r, method, path, body, headers, chunked=chunked)
            assert (status, answer["code"]) == (413, code), (method, path, headers, answer)
        peak = vm_kib(pid, "VmHWM")
        assert peak - rss < 8 * 1024, f"RSS {rss} KiB before, peak {peak} KiB"
        assert vm_kib(pid, "VmRSS") - rss < 8 * 1024
        assert set(os.listdir(cache)) == kept  # no file, partial or whole
        assert r.poll("bomb") == []
        assert r.publish("bomb", "still here")["message"] == "still here"
    finally:
        assert r.stop() == 0, r.log.read_text()
    assert "Traceback" not in r.log.read_text(), r.log.read_text()


# --- atomic writes -------------------------------------------------------------------------------


def test_sigkill_mid_upload_leaves_no_message_and_no_partial_file(tmp_path: Path) -> None:
    r = Relay(tmp_path, config=FAST).start()
    cache = tmp_path / "data" / "attachments"
    try:
        s = socket.create_connection(("127.0.0.1", r.port), timeout=15)
        s.sendall(b"PUT /cut HTTP/1.1\r\nHost: x\r\nFilename: half.bin\r\n"
                  b"Content-Length: 2000000\r\n\r\n" + os.urandom(1_000_000))  # fmt: skip
        wait_for(lambda: any(n.startswith(".tmp-") and (cache / n).stat().st_size >= 900_000
                             for n in os.listdir(cache)),
                 timeout=15, what="the upload half written")  # fmt: skip
        r.kill()
        s.close()
        # what a kill between the rename and the commit would leave: a file without a message
        (cache / "orphanid12345").write_bytes(b"never committed")
        r.start()
        wait_for(lambda: os.listdir(cache) == [], timeout=15, what="the cache swept at start")
        assert r.poll("cut") == []
        status, msg = r.request("PUT", "/cut", b"\x01\x02", {"Filename": "whole.bin"})
        assert status == 200 and os.listdir(cache) == [msg["id"]]
    finally:
        assert r.stop() == 0, r.log.read_text()


def test_a_client_cut_mid_upload_leaves_no_message_and_no_file(relay: Relay) -> None:
    t = topic("cut")
    cache = relay.dir / "data" / "attachments"
    before = set(os.listdir(cache))
    with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as s:
        s.sendall(f"PUT /{t} HTTP/1.1\r\nHost: x\r\nFilename: half.bin\r\n"
                  f"Content-Length: 500000\r\n\r\n".encode() + b"q" * 200_000)  # fmt: skip
        wait_for(lambda: set(os.listdir(cache)) - before, timeout=15, what="the upload begun")
    wait_for(lambda: set(os.listdir(cache)) == before, timeout=15, what="the cut upload removed")
    assert relay.poll(t) == []


def test_an_upload_that_stalls_is_cut_with_408_and_leaves_nothing(tmp_path: Path) -> None:
    r = Relay(tmp_path, config=FAST + "body_timeout = 1.0\n").start()
    cache = tmp_path / "data" / "attachments"
    try:
        with socket.create_connection(("127.0.0.1", r.port), timeout=15) as s:
            s.sendall(b"PUT /stall HTTP/1.1\r\nHost: x\r\nFilename: big.bin\r\n"
                      b"Content-Length: 15000000\r\n\r\n" + b"s" * 300_000)  # fmt: skip
            answer = s.recv(4096)  # the link stalls: nothing more is sent
        assert answer.startswith(b"HTTP/1.1 408"), answer
        wait_for(lambda: os.listdir(cache) == [], timeout=10, what="the stalled upload removed")
        assert r.poll("stall") == []
    finally:
        assert r.stop() == 0, r.log.read_text()
