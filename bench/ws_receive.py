"""The agent's WebSocket receive path without the network: relay frames → store, CPU per message.

What ``agent.transports.ws`` does per frame after websockets hands it over: ``parse_frame``
(agent.ntfy), the batch of up to ``ws.max_batch`` messages, then ``Store.insert_batch`` with
the cursor, as the bench's and the service's sink call it. The frames are what an edge relay
sends for bench/edge_latency.py's typical notices (``edge_relay.live.wire``). Prints the
process CPU per message of each part, the minimum over ``--rounds`` fresh databases.

    python bench/ws_receive.py [--messages 20000] [--rounds 5] [--profile] [--ws]

``--ws`` runs the whole path instead: a WebSocket server in a child process sends the frames,
and this process's real ``WsTransport`` receives them into a store (the websockets library,
the reader, queue and committer, the store in a worker thread); the CPU is this process's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.envelope import from_fields
from agent.ntfy import parse_frame
from agent.store import Store, Stored
from edge_relay.live import wire

SOURCE, SUB = "http://relay:8080", "alerts"


def frames(n: int) -> list[str]:
    out = []
    for i in range(n):
        host = f"web-{i % 17:02d}"
        msg = from_fields({"id": f"m{i:05d}x", "time": 1_780_000_000 + i, "topic": SUB,
                           "title": f"backup {host}", "priority": 1 + i % 5,
                           "message": f"Backup of {host} finished in {30 + i % 90} s: "
                                      f"{1000 + 37 * i} files, 0 errors",
                           "tags": ["floppy_disk", "white_check_mark"]})  # fmt: skip
        out.append(wire(Stored(seq=i + 1, message=msg)))
    return out


def drain(data: list[str], db: Path, batch: int) -> tuple[float, float]:
    """CPU seconds of (parse, insert) for the whole drain."""
    store = Store(db).open()
    parse = insert = 0.0
    try:
        for start in range(0, len(data), batch):
            t0 = time.process_time()
            msgs = []
            for frame in data[start : start + batch]:
                event = parse_frame(frame, max_size=262_144)
                if event.kind == "message" and event.message is not None:
                    msgs.append(event.message)
            t1 = time.process_time()
            store.insert_batch(msgs, source=SOURCE, cursor=(SOURCE, SUB))
            t2 = time.process_time()
            parse += t1 - t0
            insert += t2 - t1
        assert store.count() == len(data), store.count()
    finally:
        store.close()
    return parse, insert


def _serve(n: int, port_w: int) -> None:
    """The child: send ``open`` then the frames to each connection, then stay idle."""
    import asyncio
    import os

    from websockets.asyncio.server import serve

    data = frames(n)

    async def handler(ws: Any) -> None:
        await ws.send('{"event":"open"}')
        for frame in data:
            await ws.send(frame)
        await asyncio.Future()

    async def run() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            os.write(port_w, f"{port}\n".encode())
            await asyncio.Future()

    asyncio.run(run())


def ws_drain(n: int, tmp: Path, rnd: int, profile: bool, agents: int = 1) -> float:
    """CPU seconds of this process while ``agents`` WsTransports (each with its own store,
    as bench/edge_latency.py's agent processes hold several) store ``n`` frames each."""
    import asyncio
    import multiprocessing
    import os
    from dataclasses import replace

    from agent import config
    from agent.config_sections import WsConfig
    from agent.transports import Batch
    from agent.transports.ws import WsTransport

    r, w = os.pipe()
    child = multiprocessing.get_context("fork").Process(target=_serve, args=(n, w))
    child.start()
    port = int(os.read(r, 64))
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp / f"home{rnd}")})
    cfg = replace(cfg, topics=(SUB,), ws=WsConfig(keepalive=45, compress=False))
    stores = [Store(tmp / f"ws{rnd}-{a}.db").open() for a in range(agents)]
    done = [0]

    spent_in = [0.0, 0]

    def insert(store: Store, batch: Batch) -> int:
        t0 = time.thread_time()
        fresh = store.insert_batch(batch.messages, source=batch.source, cursor=batch.cursor)
        spent_in[0] += time.thread_time() - t0
        spent_in[1] += 1
        return len(fresh)

    def sink_for(store: Store) -> Any:
        async def sink(batch: Batch) -> None:
            fresh = await asyncio.to_thread(insert, store, batch)
            done[0] += fresh  # not ``done[0] += await ...``: that reads done[0] before awaiting

        return sink

    async def run() -> float:
        url = f"ws://127.0.0.1:{port}"
        transports = [WsTransport(url, cfg, topics=(SUB,), store=s) for s in stores]
        t0, m0 = time.process_time(), time.thread_time()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        tasks = [
            asyncio.create_task(t.run(sink_for(s))) for t, s in zip(transports, stores, strict=True)
        ]
        deadline = time.monotonic() + 120
        while done[0] < n * agents:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stored {done[0]} of {n * agents}")
            await asyncio.sleep(0.005)
        spent = time.process_time() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"  insert_batch: {spent_in[1]} commits, {spent_in[0] / done[0] * 1e6:.1f} us "
            f"thread CPU per message; main thread {time.thread_time() - m0:.2f} s; "
            f"user {ru.ru_utime - ru0.ru_utime:.2f} s, system {ru.ru_stime - ru0.ru_stime:.2f} s"
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return spent

    try:
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        spent = asyncio.run(run())
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return spent
    finally:
        child.kill()
        child.join()
        for s in stores:
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ws", action="store_true", help="the whole path, over a real WebSocket")
    ap.add_argument("--agents", type=int, default=1, help="with --ws: transports in this process")
    args = ap.parse_args()
    if args.ws:
        with tempfile.TemporaryDirectory() as tmp:
            rounds = 1 if args.profile else args.rounds
            cpu = [ws_drain(args.messages, Path(tmp), r, args.profile, args.agents)
                   for r in range(rounds)]  # fmt: skip
        n = args.messages * args.agents
        print(f"{args.messages} frames over a WebSocket into each of {args.agents} WsTransport: "
              f"{min(cpu) / n * 1e6:.1f} us CPU per message (min of {rounds}; "
              f"all: {', '.join(f'{c / n * 1e6:.1f}' for c in cpu)})")  # fmt: skip
        return
    data = frames(args.messages)
    n = len(data)
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            drain(data, Path(tmp, "p.db"), args.batch)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        runs = [drain(data, Path(tmp, f"r{r}.db"), args.batch) for r in range(args.rounds)]
    parse = min(p for p, _ in runs) / n * 1e6
    insert = min(i for _, i in runs) / n * 1e6
    total = min(p + i for p, i in runs) / n * 1e6
    print(f"{n} frames, batches of {args.batch}: parse {parse:.1f} us, insert_batch "
          f"{insert:.1f} us, total {total:.1f} us CPU per message "
          f"(min of {args.rounds})")  # fmt: skip


if __name__ == "__main__":
    main()
