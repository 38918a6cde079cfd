"""Does payload size cost the agent anything? Clear backlog drains of three kinds,
interleaved on one mosquitto (bench/mqtt_ingest.py's ``agent_drain``, the real AgentService):

* ``clear``: the bench's payloads as they are (33 bytes);
* ``whitespace``: the same JSON padded with trailing spaces to ``--size`` bytes (the same
  decoded message and row: only paho, the broker and the JSON decoder see more bytes);
* ``text``: the message text padded to ``--size`` bytes (the row and FTS grow too).

    .venv/bin/python bench/mqtt_payload_size.py [--size 232] [--repeat 3] [--backlog 20000]

232 bytes is about an end-to-end encrypted message's size (``--encrypted``). Prints one
JSON object: per kind, each drain's rate (msg/s) and the agent's CPU time per message (us).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mqtt_ingest as bench

import agent.service as service_mod
from tests.mosquitto import Mosquitto


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=232)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backlog", type=int, default=20000)
    args = ap.parse_args()
    plain = bench.clear_payloads

    def whitespace(n: int, topic: str) -> list[bytes]:
        return [p + b" " * max(0, args.size - len(p)) for p in plain(n, topic)]

    def text(n: int, topic: str) -> list[bytes]:
        pad = "m" + " x" * max(0, (args.size - len(plain(1, topic)[0])) // 2)
        return [json.dumps({"id": f"a{i:06d}", "message": pad}).encode() for i in range(n)]

    kinds = {"clear": plain, "whitespace": whitespace, "text": text}
    service_mod.tune_gc()
    out: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto", extra_config="max_inflight_messages 100")
        broker.start()
        try:
            for r in range(args.repeat):
                for i, (kind, make) in enumerate(kinds.items()):
                    bench.clear_payloads = make
                    bench.CPU["clear"].clear()
                    home = root / f"home{r}{kind}"
                    rate = asyncio.run(
                        bench.agent_drain(broker.port, args.backlog, home, r * 3 + i)
                    )
                    cpu = bench.CPU["clear"][0]
                    out[kind].append({"msgs_per_s": round(rate), "cpu_us_per_msg": round(cpu, 1)})
        finally:
            bench.clear_payloads = plain
            broker.stop()
    print(json.dumps({"scenario": "payload_size", "size": args.size, "drains": out}))


if __name__ == "__main__":
    main()
