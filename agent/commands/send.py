"""``pushagent send``: publish one message. To an MQTT broker: QoS 1, waiting for the PUBACK.
To a relay or any ntfy server (``--server http(s)://...``): one HTTP publish
(agent.httppublish), with the token ``pushagent login`` stored for that server; there also
``--clear`` / ``--delete`` a notification by its sequence id (ntfy 2.16)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from agent import secrets
from agent.commands import common, load_config, mqtt_protocol_flag
from agent.config import AgentConfig
from agent.envelope import PRIORITY_WORDS, encode_bytes, from_fields
from agent.errors import ConfigError, ConnectionLost, MessageError, UsageError
from agent.topics import check_mqtt_topic

DEFAULT_TIMEOUT = 10.0
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="publish a message",
        description="Publish one message: to an MQTT broker as a JSON envelope with QoS 1, "
        "waiting for the broker's acknowledgement; to a relay or ntfy server (http(s)://) "
        "as ntfy's HTTP publish. MESSAGE '-' reads it from stdin. Prints the message id.",
    )
    common(p)
    p.add_argument("--server", metavar="URL", help="server (default: the config's first)")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("message", metavar="MESSAGE", nargs="?")
    p.add_argument("--title")
    p.add_argument("--priority", help=f"1-5 or {', '.join(PRIORITY_WORDS)}")
    p.add_argument("--tags", help="comma-separated tags")
    p.add_argument("--click", metavar="URL")
    p.add_argument("--id", help="message id (MQTT; default: a fresh one)")
    p.add_argument("--markdown", action="store_true", help="the message is Markdown")
    p.add_argument("--delay", metavar="WHEN", help="deliver later: 10m, 2h, a unix time (HTTP)")
    p.add_argument("--sequence-id", metavar="ID", help="update the notification ID (HTTP)")
    gone = p.add_mutually_exclusive_group()
    gone.add_argument("--clear", metavar="ID", help="mark notification ID read (HTTP, no MESSAGE)")
    gone.add_argument("--delete", metavar="ID", help="delete notification ID (HTTP, no MESSAGE)")
    mqtt_protocol_flag(p)
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


_HTTP_ONLY = {"clear": "--clear", "delete": "--delete", "delay": "--delay",
              "sequence_id": "--sequence-id"}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.priority is not None:
        check_priority(args.priority)
    cfg = load_config(
        args,
        servers=[args.server] if args.server else None,
        **{"mqtt.protocol": args.mqtt_protocol},
    )
    if not cfg.servers:
        raise ConfigError("no server: give --server URL or 'servers' in the config")
    from agent.ntfy import server_kind

    if server_kind(cfg.servers[0]) == "ntfy":
        print(_send_http(cfg, args)["id"])
        return 0
    for key, flag in _HTTP_ONLY.items():
        if getattr(args, key) is not None:
            raise UsageError(
                f"{flag}: MQTT has no such operation; it needs a relay or ntfy server "
                "(--server http(s)://HOST:PORT)"
            )
    text = _message(args)
    fields = {
        "message": text,
        "title": args.title,
        "priority": args.priority,
        "tags": args.tags,
        "click": args.click,
        "id": args.id,
        "content_type": "text/markdown" if args.markdown else None,
    }
    try:
        msg = from_fields({k: v for k, v in fields.items() if v is not None}, topic=args.topic)
    except MessageError as exc:
        raise UsageError(f"--{exc.field or 'message'}: {exc}") from None
    asyncio.run(_publish(cfg.servers[0], cfg, args.topic, encode_bytes(msg), args.timeout))
    print(msg.id)
    return 0


def _message(args: argparse.Namespace) -> str:
    if args.message is None:
        raise UsageError("MESSAGE: missing (give the text, or '-' to read it from stdin)")
    if args.message == "-":
        return sys.stdin.read().rstrip("\n")
    return str(args.message)


def _send_http(cfg: AgentConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Publish (or clear, or delete) over HTTP(S); the server's JSON answer."""
    from agent import httppublish
    from agent.ntfy import parse_server
    from agent.transports import tls_context

    server = parse_server(cfg.servers[0])
    if args.id is not None:
        raise UsageError("--id: an ntfy server picks the message id; use --sequence-id")
    gone = args.clear if args.clear is not None else args.delete
    if gone is not None:
        if args.message is not None:
            raise UsageError("--clear/--delete ID TOPIC take no MESSAGE")
        make = httppublish.clear_request if args.clear is not None else httppublish.delete_request
        req = make(args.topic, gone)
    else:
        req = httppublish.publish_request(
            args.topic, _message(args), title=args.title, priority=args.priority,
            tags=args.tags, click=args.click, markdown=args.markdown, delay=args.delay,
            sequence_id=args.sequence_id,
        )  # fmt: skip
    if server.tls and cfg.tls.insecure:
        log.warning("%s: TLS certificate checks are OFF (tls.insecure = true)", server.url)
    sender = httppublish.Sender(
        server.http_base,
        token=secrets.token_for(cfg, server.http_base),
        context=tls_context(cfg.tls) if server.tls else None,
        timeout=args.timeout,
    )
    return sender.send(req)


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
