"""Issue 14's "the attachment cache filling the disk (the relay answers 507 and keeps serving
text)", against real relay processes on real small file systems (tmpfs mounts: they fill
for real, with ENOSPC, as an SD card does).

By default the attachment cache (``<data dir>/attachments``) and the store (``relay.db``)
share a disk, so uploads must stop while there is still room for text: the relay keeps
``keep_free`` + ``keep_free_percent`` of the cache's file system free (``edge_relay.
attachments``) and answers 507 (ntfy's 50702) to an upload that would eat into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.relay import FAST, Relay
from tests.test_relay_attachments import chunked_put, get

MB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``: a disk that really fills. Needs root, as the
    tests run here and in CI; no skip: without it the test fails saying why."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {done.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as the cache dir alone."""
    with tmpfs(tmp_path / "tiny", "256k") as where:
        yield where


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Subscriber:
    """``GET /<topic>/json`` in a thread (HTTP/1.0: the body is the lines until the close):
    the ids of the messages it has received, in order."""

    def __init__(self, r: Relay, topic: str) -> None:
        self.ids: list[str] = []
        self._sock = socket.create_connection(("127.0.0.1", r.port), timeout=60)
        self._sock.sendall(f"GET /{topic}/json HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_for(lambda: self._open, timeout=10, what="the subscription open")

    _open = False

    def _read(self) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(65536):
                buf += chunk
                if not self._open and b"\r\n\r\n" in buf:
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    self._open = True
                    if event["event"] == "message":
                        self.ids.append(event["id"])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._sock.close()


def test_uploads_stop_before_the_shared_disk_is_full_and_text_keeps_working(
    tmp_path: Path,
) -> None:
    """The default layout and limits: store and cache on one 128 MiB disk, filled with
    uploads of 15 MB (the default file size limit) and then ever smaller ones, as a busy
    camera would. Uploads are accepted until the reserve (64 MiB + 2 % of 128 MiB) is
    reached, then refused with 507, with or without Content-Length; text publishes keep
    being stored and delivered, nothing accepted is lost, and the relay keeps running.
    (Before the reserve, the last uploads left a few KiB and the text after them failed.)"""
    work = tmp_path / "r"
    with tmpfs(work / "data", "128m") as disk:
        r = Relay(work, config=FAST).start()
        sub = Subscriber(r, "disk")
        try:
            accepted = [r.publish("disk", "before the uploads")["id"]]
            refusals = []
            size = 15 * MB
            while size >= 4096:  # fill greedily: 15 MB files, then halves down to 4 KiB
                status, body = r.request("PUT", "/disk", os.urandom(size), {"Filename": "f"})
                if status == 200:
                    accepted.append(body["id"])
                else:
                    refusals.append((status, body["code"]))
                    size //= 2
            assert set(refusals) == {(507, 50702)}, refusals
            st = os.statvfs(disk)
            reserve = 64 * MB + st.f_blocks * st.f_frsize * 2 // 100
            # the store's rows and WAL pages for these messages are what the reserve is for
            # (and a file takes whole pages): the uploads filled the disk up to it, no further
            slack = 512 * 1024
            assert reserve - slack <= free(disk) < reserve + MB, (free(disk), reserve)
            # without Content-Length the reserve is met while streaming
            status, body = chunked_put(r, "/disk", os.urandom(15 * MB), {"Filename": "g"})
            assert (status, body["code"]) == (507, 50702), body
            assert free(disk) >= reserve - slack, free(disk)
            assert not [n for n in os.listdir(disk / "attachments") if n.startswith(".tmp-")]
            for i in range(300):  # ~1 MB of text (and its WAL pages) after the fill
                accepted.append(r.publish("disk", f"text {i} " + "x" * 3000)["id"])
            wait_for(lambda: sub.ids == accepted, timeout=30, what="every message streamed")
            assert [m["id"] for m in r.poll("disk")] == accepted
            assert get(f"{r.url}/file/{accepted[1]}")[0] == 200
        finally:
            sub.close()
            assert r.stop() == 0, r.log.read_text()
        assert "Traceback" not in r.log.read_text(), r.log.read_text()
        r.start()  # and after a restart, everything accepted is there
        try:
            assert [m["id"] for m in r.poll("disk")] == accepted
        finally:
            assert r.stop() == 0, r.log.read_text()


RACE = (
    FAST
    + """
[attachments]
keep_free = "8M"
keep_free_percent = 0
"""
)


def test_concurrent_streamed_uploads_cannot_race_past_the_reserve(tmp_path: Path) -> None:
    """Six chunked uploads at once (no Content-Length: nothing to refuse up front) of 5 MiB
    each on a 32 MiB disk with an 8 MiB reserve, while text is published: each upload checks
    the free space as it streams, so together they overshoot the reserve by at most a check
    interval each, and every text publish meanwhile is stored."""
    work = tmp_path / "r"
    with tmpfs(work / "data", "32m") as disk:
        r = Relay(work, config=RACE).start()
        try:

            def upload(i: int) -> tuple[int, Any]:
                return chunked_put(r, "/race", os.urandom(5 * MB), {"Filename": f"{i}.bin"})

            texts: list[tuple[int, Any]] = []
            with ThreadPoolExecutor(7) as pool:
                uploads = [pool.submit(upload, i) for i in range(6)]
                while not all(u.done() for u in uploads):
                    texts.append(r.request("PUT", "/race", b"text " + b"y" * 3000))
                results = [u.result() for u in uploads]
            codes = sorted(status for status, _ in results)
            assert 200 in codes and 507 in codes, results
            assert all(body["code"] == 50702 for status, body in results if status == 507)
            assert free(disk) >= 8 * MB - 6 * 320 * 1024, free(disk)
            stored = {body["id"] for status, body in results if status == 200}
            assert set(os.listdir(disk / "attachments")) == stored  # no partial file left
            assert texts and all(status == 200 for status, _ in texts), texts
            texts += [r.request("PUT", "/race", b"after " + b"z" * 3000) for _ in range(100)]
            assert {m["id"] for m in r.poll("race")} == stored | {t["id"] for _, t in texts}
        finally:
            assert r.stop() == 0, r.log.read_text()


def test_a_full_disk_answers_507_and_text_keeps_working(tmp_path: Path, tiny_disk: Path) -> None:
    """The cache on its own disk, too small for the upload: ENOSPC itself is a 507."""
    config = FAST + f'[attachments]\ncache_dir = "{tiny_disk}"\nkeep_free = 0\n'
    config += "keep_free_percent = 0\n"  # the reserve off: ENOSPC itself
    r = Relay(tmp_path / "r", config=config).start()
    try:
        status, body = r.request("PUT", "/disk", os.urandom(400_000), {"Filename": "a.bin"})
        assert (status, body["http"]) == (507, 507) and "no room" in body["error"], body
        assert os.listdir(tiny_disk) == []  # the partial upload is gone
        assert r.poll("disk") == []
        assert r.publish("disk", "text still works")["message"] == "text still works"
        small = os.urandom(1000)
        status, msg = r.request("PUT", "/disk", small, {"Filename": "s.bin"})
        assert status == 200 and get(msg["attachment"]["url"])[2] == small
    finally:
        assert r.stop() == 0, r.log.read_text()


def test_a_store_on_a_full_disk_says_so_and_recovers(tmp_path: Path) -> None:
    """The store's own disk filled by something else (a log, another program): a text publish
    is refused with a 503 that says the disk is full (it said "the store is busy"), the relay
    keeps running, and once there is room again publishing works and nothing earlier is
    lost."""
    work = tmp_path / "r"
    with tmpfs(work / "data", "8m") as disk:
        r = Relay(work, config=FAST).start()
        try:
            accepted = [r.publish("full", f"before {i}")["id"] for i in range(3)]
            filler = disk / "filler"
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:  # ENOSPC ends it
                    f.write(b"\0" * 65536)
                    f.flush()
            statuses = []
            for i in range(50):  # SQLite may still fit a few in pages it has
                status, body = r.request("PUT", "/full", f"during {i} ".encode() + b"x" * 4000)
                statuses.append(status)
                if status == 200:
                    accepted.append(body["id"])
                else:
                    break
            assert statuses[-1] == 503, statuses
            assert "disk is full" in body["error"] and body["code"] == 50301, body
            filler.unlink()
            accepted.append(r.publish("full", "after")["id"])
            assert [m["id"] for m in r.poll("full")] == accepted
        finally:
            assert r.stop() == 0, r.log.read_text()
        log = r.log.read_text()
        assert "Traceback" not in log and log.count("the disk is full") == 1, log


def test_a_gzip_copy_never_eats_into_the_reserve(tmp_path: Path) -> None:
    """A compressible file's gzip copy (made by its first gzip download) is optional: with
    the disk filled by uploads up to the reserve, the download is still whole and gzipped,
    no copy is kept and the room kept for the store stays."""
    from tests.test_relay_attachments_gzip import curl, log_text

    work = tmp_path / "r"
    with tmpfs(work / "data", "96m") as disk:
        r = Relay(work, config=FAST).start()
        try:
            text = log_text(60_000)  # ~4.6 MB, a ~1 MB copy
            status, msg = r.request("PUT", "/gz", text, {"Filename": "web.log"})
            assert status == 200, msg
            size = 8 * MB
            while size >= 4096:  # fill up to the reserve
                status, _ = r.request("PUT", "/gz", os.urandom(size), {"Filename": "f"})
                if status != 200:
                    size //= 2
            st = os.statvfs(disk)
            reserve = 64 * MB + st.f_blocks * st.f_frsize * 2 // 100
            before = free(disk)
            headers, body = curl("--compressed", msg["attachment"]["url"])
            assert body == text and headers["content-encoding"] == "gzip", headers
            assert not [n for n in os.listdir(disk / "attachments") if "gzip" in n]
            assert free(disk) >= min(before, reserve) - 64 * 1024, (free(disk), before)
        finally:
            assert r.stop() == 0, r.log.read_text()
