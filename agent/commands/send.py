"""``pushagent send``: publish one message (QoS 1) and wait for the broker's PUBACK."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from agent import secrets
from agent.commands import common, load_config
from agent.config import AgentConfig
from agent.envelope import PRIORITY_WORDS, encode_bytes, from_fields
from agent.errors import ConfigError, ConnectionLost, MessageError, UsageError
from agent.topics import check_mqtt_topic

DEFAULT_TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="publish a message",
        description="Publish one message as a JSON envelope with QoS 1 and wait for the "
        "broker's acknowledgement. MESSAGE '-' reads it from stdin.",
    )
    common(p)
    p.add_argument("--server", metavar="URL", help="broker (default: the config's first)")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("message", metavar="MESSAGE")
    p.add_argument("--title")
    p.add_argument("--priority", help=f"1-5 or {', '.join(PRIORITY_WORDS)}")
    p.add_argument("--tags", help="comma-separated tags")
    p.add_argument("--click", metavar="URL")
    p.add_argument("--id", help="message id (default: a fresh one)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="give up after N seconds")
    p.set_defaults(func=run, default_log_level=logging.WARNING)


def check_priority(value: str) -> str:
    """``value`` if it is a priority a person meant; raise UsageError otherwise.

    Messages from the wire clamp 9 to 5 (ntfy does); typed on the command line, 9 or 0 is a
    mistake worth one line rather than a silently different priority.
    """
    if value.strip().lower() in PRIORITY_WORDS or value.strip() in ("1", "2", "3", "4", "5"):
        return value
    raise UsageError(
        f"--priority: must be 1-5 or one of {', '.join(PRIORITY_WORDS)}, not {value!r}"
    )


def run(args: argparse.Namespace) -> int:
    if args.priority is not None:
        check_priority(args.priority)
    cfg = load_config(args, servers=[args.server] if args.server else None)
    if not cfg.servers:
        raise ConfigError("no server: give --server URL or 'servers' in the config")
    text = sys.stdin.read() if args.message == "-" else args.message
    fields = {
        "message": text.rstrip("\n") if args.message == "-" else text,
        "title": args.title,
        "priority": args.priority,
        "tags": args.tags,
        "click": args.click,
        "id": args.id,
    }
    try:
        msg = from_fields({k: v for k, v in fields.items() if v is not None}, topic=args.topic)
    except MessageError as exc:
        raise UsageError(f"--{exc.field or 'message'}: {exc}") from None
    asyncio.run(_publish(cfg.servers[0], cfg, args.topic, encode_bytes(msg), args.timeout))
    print(msg.id)
    return 0


async def _publish(url: str, cfg: AgentConfig, topic: str, payload: bytes, timeout: float) -> None:
    """Connect (clean session), publish QoS 1, wait for the PUBACK, disconnect."""
    from agent.transports.mqtt import MqttTransport, parse_url

    try:
        check_mqtt_topic(topic)
    except ValueError as exc:
        raise UsageError(f"TOPIC: {exc}") from None
    user, password = secrets.credentials(cfg, url, parse_url(url).username)
    transport = MqttTransport(
        url, cfg, username=user, password=password, persistent=False, fatal_auth=True
    )
    try:
        async with asyncio.timeout(timeout):
            await transport.open()
            await transport.publish_raw(topic, payload, timeout=timeout)
    except TimeoutError:
        raise ConnectionLost(f"{transport.url}: no answer within {timeout:.0f} s") from None
    finally:
        await transport.close()
