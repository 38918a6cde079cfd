"""``pushagent run``: the resident agent in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from agent.commands import common, load_config, mqtt_protocol_flag
from agent.config import NOTIFIERS, AgentConfig
from agent.errors import EdgepushError

log = logging.getLogger("pushagent")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the agent in the foreground",
        description="Connect, store every message before acknowledging it, notify, send "
        "receipts. Runs until SIGINT or SIGTERM.",
    )
    common(p)
    p.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="mqtt(s)://[user@]host[:port], http(s)://host[:port][/base], ws(s)://... or "
        "'auto' (a relay found by mDNS); repeatable, in preference order; replaces the config's",
    )
    p.add_argument(
        "--topic",
        action="append",
        help="topic or MQTT filter such as 'home/#' (repeatable; replaces the config's)",
    )
    p.add_argument("--notifier", choices=NOTIFIERS, help="where new messages go")
    mqtt_protocol_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(
        args,
        servers=args.server,
        topics=args.topic,
        notifier=args.notifier,
        **{"mqtt.protocol": args.mqtt_protocol},
    )
    return asyncio.run(serve(cfg))


async def serve(cfg: AgentConfig) -> int:
    """Run the service until SIGINT/SIGTERM; its exit cancels every task (bounded: < 5 s)."""
    from agent.service import AgentService, tune_gc

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
        # asyncio learns of a signal from a byte in its self-pipe, the same pipe every
        # call_soon_threadsafe writes to: when a burst has filled it, that byte is dropped
        # and the signal lost ("Exception ignored when trying to write to the signal wakeup
        # fd"; a SIGTERM the agent never saw). A Python-level handler runs whatever the
        # pipe holds; both paths only set the event.
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        async with AgentService(cfg):
            tune_gc()  # after start-up, so what start-up made is frozen
            await stop.wait()
            log.info("stopping")
    except* EdgepushError as group:
        raise group.exceptions[0] from None
    return 0
