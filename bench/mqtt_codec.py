"""MQTT payload codec: zstd (``zstandard``) against zlib on typical envelopes, per message.

    .venv/bin/python bench/mqtt_codec.py [--runs 3]

Three sets of envelopes as the agent encodes them (``agent.envelope.encode_bytes``): a short
backup notice (~210 B, what scripts send), a Grafana alert in Markdown (~560 B) and a log
excerpt of 30 nginx lines (~3.7 KB). Each message is compressed on its own (an MQTT payload
has no shared context with the one before). Per codec: the size ratio, and the best of
``--runs`` for compress and decompress time per message. One JSON object per line; this is
what chose zstd level 3 for ``[mqtt] compress`` (agent/transports/mqtt_codec.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from agent.envelope import encode_bytes, from_fields

Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def short(i: int) -> dict[str, Any]:
    host = f"web-{i % 17:02d}"
    return {"topic": "alerts/backup", "title": f"backup {host}", "priority": 1 + i % 5,
            "message": f"Backup of {host} finished in {30 + i % 90} s: {1000 + 37 * i} files",
            "tags": ["floppy_disk", "white_check_mark"]}  # fmt: skip


def grafana(i: int) -> dict[str, Any]:
    text = (
        f"**Firing**\n\nValue: B={80 + i % 20}.{i % 10}\nLabels:\n - alertname = HighCPU\n"
        f" - instance = web-{i % 9}:9100\n - job = node\nAnnotations:\n - summary = CPU "
        f"above 80% for 5m\nSource: http://grafana.lan:3000/alerting/grafana/abc{i}/view\n"
        "Silence: http://grafana.lan:3000/alerting/silence/new?matcher=alertname%3DHighCPU"
    )
    return {"topic": "grafana/alerts", "title": f"[FIRING:1] HighCPU web-{i % 9}",
            "message": text, "tags": ["warning"], "priority": 4,
            "click": "http://grafana.lan:3000/d/abc", "content_type": "text/markdown"}  # fmt: skip


def logs(i: int) -> dict[str, Any]:
    lines = "\n".join(
        f"2026-12-02T13:{i % 60:02d}:{j:02d}Z web-{i % 9} nginx[{1000 + j}]: 10.0.{j}.{i % 255} "
        f'"GET /api/v1/items/{i * j} HTTP/1.1" 200 {512 + j * 7} "curl/8.5"'
        for j in range(30)
    )
    return {"topic": "logs/nginx", "title": "nginx errors", "message": lines, "priority": 2}


def codecs() -> dict[str, Codec]:
    out: dict[str, Codec] = {
        "zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
    }
    for level in (1, 3, 9):
        c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        out[f"zstd-{level}"] = (c.compress, zstandard.ZstdDecompressor().decompress)
    return out


def measure(name: str, msgs: list[bytes], codec: Codec, runs: int) -> dict[str, Any]:
    pack, unpack = codec
    best_c = best_d = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        packed = [pack(m) for m in msgs]
        best_c = min(best_c, time.perf_counter() - t)
        t = time.perf_counter()
        for p in packed:
            unpack(p)
        best_d = min(best_d, time.perf_counter() - t)
    raw, comp = sum(map(len, msgs)), sum(map(len, packed))
    return {"set": name, "mean_bytes": round(raw / len(msgs)), "ratio": round(raw / comp, 2),
            "compress_us": round(best_c / len(msgs) * 1e6, 1),
            "decompress_us": round(best_d / len(msgs) * 1e6, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sets = {"short": (short, 2000), "grafana": (grafana, 2000), "log-4k": (logs, 500)}
    for name, (make, n) in sets.items():
        msgs = [encode_bytes(from_fields(make(i))) for i in range(n)]
        for cname, codec in codecs().items():
            print(json.dumps({"codec": cname, **measure(name, msgs, codec, args.runs)}))


if __name__ == "__main__":
    main()
