"""Attachment throughput: upload and download MB/s through the relay against a bare aiohttp
file server, in the same run (issue 14's "Proven by", target >= 0.7x both ways).

    flock /tmp/bench.lock .venv/bin/python bench/attachments.py [--rounds 7] [--small 24]
        [--small-size 262144] [--big 4] [--big-size 15000000] [--gzip] [--baseline GIT-REV]

Server processes on 127.0.0.1: ``edge-relay serve`` (this checkout, its default
``[attachments]`` but for a daily budget and total large enough for the run); a bare aiohttp
server (``bench/_static_server.py``: ``web.static`` for downloads, a PUT handler that
streams the body into a file); the same server ``durable`` (fsync, rename, the directory
fsynced: what the relay does to disk, without its store), which tells the cost of
durability apart from the relay's own; with ``--baseline GIT-REV`` the relay of that commit
(``base``). One client for all, in this process: an aiohttp ``ClientSession``, one request
at a time on a kept-alive connection, the body sent from memory, read in 256 KiB chunks and
dropped. The files: ``--big`` of ``--big-size`` bytes (15 MB, just under the relay's
``file_size_limit``) and ``--small`` of ``--small-size``; random bytes, so nothing
compresses and the relay stores them as ``application/octet-stream``.

Each round uploads every file to every server, each file to all of them in turn (the order
rotates per round, so a slow moment of this shared machine falls on all alike), then
downloads them the same way. A relay upload is a ntfy publish (``PUT /<topic>`` with
``Filename``): the body streamed to a temporary file, fsynced, renamed, and the message
committed to SQLite before the answer. A relay download is ``GET /file/<id>.bin``: the store
lookup, the topic's read permission, then aiohttp's ``FileResponse`` (sendfile), as the bare
server's static route. MB/s = bytes / the wall time of that server's requests; the server's
CPU seconds from /proc. One JSON object per round, size, server and direction, then a
summary: medians per server and the relay/other ratio of each round and their medians.
``--gzip`` adds a 15 MB log-like text file downloaded from the relay plain, gzipped the
first time (compressed as it is sent) and gzipped again (the kept copy).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from _common import baseline_tree, cpu  # noqa: E402

from tests.helpers import child_env, free_port, wait_for  # noqa: E402
from tests.relay import Relay  # noqa: E402

MB = 1_000_000
CONFIG = """keepalive = 300
[limits]
publish_burst = 1000000
publish_rate = 1000000.0
[attachments]
total_size_limit = 100000000000
daily_bandwidth_limit = 100000000000
"""
CHUNK = 256 * 1024


class Bare:
    """The baseline: a bare aiohttp file server in its own process."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_static_server.py"), str(self.port),
             str(root), *(["durable"] if durable else [])], env=child_env())  # fmt: skip
        wait_for(self._up, timeout=30, what="the bare aiohttp server")

    def _up(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def upload(s: aiohttp.ClientSession, server: str, url: str, name: str, data: bytes
                 ) -> str:  # fmt: skip
    """PUT one file; the URL to download it from."""
    if server in ("relay", "base"):
        async with s.put(f"{url}/bench", data=data, headers={"Filename": name}) as r:
            assert r.status == 200, await r.text()
            att = (await r.json())["attachment"]
            assert att["size"] == len(data), att
            return str(att["url"])
    async with s.put(f"{url}/upload/{name}", data=data) as r:
        assert r.status == 201, await r.text()
    return f"{url}/files/{name}"


async def download(s: aiohttp.ClientSession, url: str, *, gzip: bool = False,
                   check: bytes | None = None) -> int:  # fmt: skip
    """GET one file, reading it in chunks; the bytes of the body (decoded)."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    digest = hashlib.sha256() if check is not None else None
    n = 0
    async with s.get(url, headers=headers) as r:
        assert r.status == 200, r.status
        assert (r.headers.get("Content-Encoding") == "gzip") == gzip, dict(r.headers)
        async for chunk in r.content.iter_chunked(CHUNK):
            n += len(chunk)
            if digest is not None:
                digest.update(chunk)
    if check is not None:
        assert digest is not None and digest.digest() == hashlib.sha256(check).digest()
    return n


async def interleaved(s: aiohttp.ClientSession, servers: dict[str, tuple[str, int]],
                      what: str, named: dict[str, bytes], urls: dict[str, dict[str, str]],
                      check: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Each file to (or from) every server in turn, so a slow moment of the machine falls on
    all of them alike; per server the wall time of its requests, bytes and its CPU."""
    wall = dict.fromkeys(servers, 0.0)
    cpu0 = {k: cpu(pid) for k, (_, pid) in servers.items()}
    for name, data in named.items():
        for key, (url, _) in servers.items():
            t0 = time.perf_counter()
            if what == "upload":
                urls[key][name] = await upload(s, key, url, name, data)
            else:
                n = await download(s, urls[key][name], check=data if check else None)
                assert n == len(data), (n, len(data))
            wall[key] += time.perf_counter() - t0
    total = sum(map(len, named.values()))
    return [{"server": k, "what": what, "files": len(named), "bytes": total,
             "mb_s": round(total / MB / wall[k], 1), "wall_s": round(wall[k], 4),
             "server_cpu_s": round(cpu(pid) - cpu0[k], 2)}
            for k, (_, pid) in servers.items()]  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--small", type=int, default=24, help="how many smaller files")
    ap.add_argument("--small-size", type=int, default=256 * 1024)
    ap.add_argument("--big-size", type=int, default=15_000_000)
    ap.add_argument("--big", type=int, default=4, help="uploads of the big file per round")
    ap.add_argument("--gzip", action="store_true", help="also the gzip download of a text file")
    ap.add_argument("--baseline", metavar="GIT-REV", help="also the relay of this commit")
    args = ap.parse_args()
    files = {
        "big": dict.fromkeys((f"big{i}.bin" for i in range(args.big)), os.urandom(args.big_size)),
        "small": {f"s{i}.bin": os.urandom(args.small_size) for i in range(args.small)},
    }
    files = {k: v for k, v in files.items() if v}  # --small 0: the big file alone
    rows: list[dict[str, Any]] = []
    text: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        relay = Relay(tmp / "relay", config=CONFIG).start()
        bare, durable = Bare(tmp / "bare"), Bare(tmp / "durable", durable=True)
        assert relay.proc is not None
        servers = {"relay": (relay.url, relay.proc.pid), "bare": (bare.url, bare.proc.pid),
                   "durable": (durable.url, durable.proc.pid)}  # fmt: skip
        base = None
        if args.baseline:
            env = {**child_env(), "PYTHONPATH": str(baseline_tree(args.baseline, tmp / "tree"))}
            base = Relay(tmp / "base", config=CONFIG, env=env).start()
            assert base.proc is not None
            servers["base"] = (base.url, base.proc.pid)
        try:
            conn = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as s:
                for rnd in range(-1, args.rounds):  # round -1: warm-up (checked), not counted
                    k = rnd % len(servers)
                    keys = list(servers)[k:] + list(servers)[:k]  # rotated
                    order = {k: servers[k] for k in keys}
                    for size, named in files.items():
                        urls: dict[str, dict[str, str]] = {k: {} for k in servers}
                        for what in ("upload", "download"):
                            got = await interleaved(s, order, what, named, urls, rnd == -1)
                            for row in got:
                                rows.append({"round": rnd, "size": size, **row})
                                if rnd >= 0:
                                    print(json.dumps(rows[-1]), flush=True)
                if args.gzip:
                    text = await gzip_rows(s, relay, args.rounds)
                    for row in text:
                        print(json.dumps(row), flush=True)
        finally:
            for server in (relay, bare, durable, base):
                if server is not None:
                    server.stop()
    out = summary([r for r in rows if r["round"] >= 0], args)
    if args.gzip:
        for what in ("plain", "gzip_first", "gzip_copy"):
            rs = [r for r in text if r["what"] == what]
            out[f"text_{what}"] = {k: statistics.median(r[k] for r in rs)
                                   for k in ("wire_bytes", "file_mb_s", "relay_cpu_s")}  # fmt: skip
    print(json.dumps(out), flush=True)


async def gzip_rows(s: aiohttp.ClientSession, relay: Relay, rounds: int) -> list[dict[str, Any]]:
    """A 15 MB log-like text file from the relay: plain, gzipped the first time (compressed
    as sent), gzipped again (the kept copy); wire MB/s and the relay's CPU."""
    assert relay.proc is not None
    lines = (f"2026-12-03T11:{i % 60:02d}:00Z host=web-{i % 17:02d} level=info "
             f"id={base64.b32encode(os.urandom(5)).decode()} took_ms={i * 7919 % 99991}\n"
             for i in range(400_000))  # fmt: skip
    text = "".join(lines).encode()[:15_000_000]
    out = []
    for rnd in range(rounds):
        url = await upload(s, "relay", relay.url, "web.log", text)
        for what, gz in (("plain", False), ("gzip_first", True), ("gzip_copy", True)):
            cpu0, t0 = cpu(relay.proc.pid), time.perf_counter()
            async with s.get(url, headers={"Accept-Encoding": "gzip" if gz else "identity"}
                             ) as r:  # fmt: skip
                wire = len(await r.read())
                assert (r.headers.get("Content-Encoding") == "gzip") == gz
            wall = time.perf_counter() - t0
            out.append({"round": rnd, "scenario": "text_download", "what": what,
                        "file_bytes": len(text), "wire_bytes": wire,
                        "file_mb_s": round(len(text) / MB / wall, 1), "wall_s": round(wall, 4),
                        "relay_cpu_s": round(cpu(relay.proc.pid) - cpu0, 2)})  # fmt: skip
            if what == "gzip_first":  # the copy is kept just after the answer ends
                copy = relay.dir / "data" / "attachments" / (url.rsplit("/", 1)[1][:-4] + ".gzip")
                wait_for(copy.exists, timeout=30, what="the gzip copy")
    return out


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": True, "rounds": args.rounds, "big_size": args.big_size,
                           "small": args.small, "small_size": args.small_size}  # fmt: skip
    for size in dict.fromkeys(r["size"] for r in rows):
        for what in ("upload", "download"):
            rs = {k: [r for r in rows if (r["size"], r["what"], r["server"]) == (size, what, k)]
                  for k in ("relay", "bare", "durable", "base")}  # fmt: skip
            line: dict[str, Any] = {}
            for k, krs in list(rs.items()):
                if not krs:
                    del rs[k]
                    continue
                line[f"{k}_mb_s"] = statistics.median(r["mb_s"] for r in krs)
                line[f"{k}_cpu_s"] = statistics.median(r["server_cpu_s"] for r in krs)
            for k in [k for k in rs if k != "relay"]:
                per_run = [round(a["mb_s"] / b["mb_s"], 2)
                           for a, b in zip(rs["relay"], rs[k], strict=True)]  # fmt: skip
                line[f"vs_{k}_per_run"] = per_run
                line[f"vs_{k}_median"] = statistics.median(per_run)
            out[f"{size}_{what}"] = line
    return out


if __name__ == "__main__":
    asyncio.run(main())
