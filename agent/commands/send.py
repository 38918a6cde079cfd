"""``pushagent send``: publish one message. To an MQTT broker: QoS 1, waiting for the PUBACK.
To a relay or any ntfy server (``--server http(s)://...``): one HTTP publish
(agent.httppublish), with the token ``pushagent login`` stored for that server; there also
``--clear`` / ``--delete`` a notification by its sequence id (ntfy 2.16)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import secrets
from agent.commands import common, load_config, mqtt_protocol_flag
from agent.config import AgentConfig
from agent.envelope import PRIORITY_WORDS, Message, encode_bytes, from_fields
from agent.errors import ConfigError, ConnectionLost, MessageError, UsageError
from agent.topics import check_mqtt_topic, topic_problem

if TYPE_CHECKING:
    from agent import httppublish

DEFAULT_TIMEOUT = 10.0
DEFAULT_FILE_MESSAGE = "You received a file: {}"  # ntfy's text for a file without one
HTTP_BODY_LIMIT = 4096  # ntfy's and the relay's default message limit (docs/E2E.md)
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
    p.add_argument(
        "--attach",
        metavar="FILE|URL",
        help="upload FILE as the attachment, or refer to an http(s) URL (over MQTT the "
        "file goes to [attachments] upload_server)",
    )
    p.add_argument("--filename", metavar="NAME",
                   help="the attachment's name (default: FILE's name)")  # fmt: skip
    p.add_argument(
        "--ack",
        action="store_true",
        help="re-alert on every device until one acknowledges (X-Ack: required)",
    )
    p.add_argument("--ack-retry", metavar="DURATION", help="with --ack: re-alert every (60s)")
    p.add_argument("--ack-expire", metavar="DURATION", help="with --ack: stop after (1h)")
    gone = p.add_mutually_exclusive_group()
    gone.add_argument("--clear", metavar="ID", help="mark notification ID read (HTTP, no MESSAGE)")
    gone.add_argument("--delete", metavar="ID", help="delete notification ID (HTTP, no MESSAGE)")
    mqtt_protocol_flag(p)
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="end-to-end encrypt with TOPIC's current key (pushagent key new/import; "
        "docs/E2E.md): servers see only the topic, id and time",
    )
    p.add_argument(
        "--expose-priority",
        action="store_true",
        help="with --encrypt: leave the priority readable outside (quiet hours at the relay)",
    )
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
    if args.expose_priority and not args.encrypt:
        raise UsageError("--expose-priority: only with --encrypt")
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
    sealing = _key(cfg, args.topic) if args.encrypt else None  # before any upload
    attachment = _mqtt_attachment(cfg, args)
    if attachment is not None and args.message is None:
        text = DEFAULT_FILE_MESSAGE.format(attachment.get("name") or "")
    else:
        text = _message(args)
    fields = {
        "message": text,
        "attachment": attachment,
        "title": args.title,
        "priority": args.priority,
        "tags": args.tags,
        "click": args.click,
        "id": args.id,
        "content_type": "text/markdown" if args.markdown else None,
        **_ack_fields(args),
    }
    msg = _built(fields, args.topic)
    payload = encode_bytes(msg)
    if sealing is not None:
        from agent.e2e import seal
        from agent.envelope import dumps

        kid, secret = sealing
        sealed = seal.seal(msg, secret, kid, expose_priority=args.expose_priority)
        payload = dumps(sealed).encode()
    asyncio.run(_publish(cfg.servers[0], cfg, args.topic, payload, args.timeout))
    print(msg.id)
    return 0


def _built(fields: dict[str, Any], topic: str) -> Message:
    try:
        return from_fields({k: v for k, v in fields.items() if v is not None}, topic=topic)
    except MessageError as exc:
        raise UsageError(f"--{exc.field or 'message'}: {exc}") from None


def _key(cfg: AgentConfig, topic: str) -> tuple[str, bytes]:
    """TOPIC's current key for --encrypt."""
    from agent.e2e.keystore import KeyStore

    found = KeyStore(cfg).keys(topic)
    if not found:
        raise UsageError(
            f"--encrypt: no key for {topic!r} here; make one (pushagent key new {topic}) "
            f"or import the publisher's (pushagent key import {topic} STRING)"
        )
    return found[0]


def _sealed_request(cfg: AgentConfig, args: argparse.Namespace) -> httppublish.HttpRequest:
    """The HTTP publish of an encrypted message: the JWE as the body, application/jose;
    only routing options as headers (docs/E2E.md). With ``--attach FILE`` the body is the
    file encrypted with its own key (agent.e2e.files), the JWE in the ``Message`` header."""
    from agent import httppublish
    from agent.e2e import jwe, seal

    url, data, name = _attachment(args)
    text = _message(args) if _needs_text(args, url, data) else ""
    blob, attachment = _sealed_file(data, name) if data is not None else (None, None)
    if url is not None:  # inside only: never in clear; named as ntfy names it (its path)
        from urllib.parse import urlsplit

        from agent.ntfyproto.attachment import safe_name

        base = safe_name(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        attachment = {"name": name or base or "attachment", "url": url}
    named = attachment.get("name") if attachment is not None else None
    fields = {"message": text or (DEFAULT_FILE_MESSAGE.format(named) if named else None),
              "title": args.title, "priority": args.priority, "tags": args.tags,
              "click": args.click, "attachment": attachment,
              "content_type": "text/markdown" if args.markdown else None}  # fmt: skip
    msg = _built(fields, args.topic)
    kid, key = _key(cfg, args.topic)
    token = seal.seal_text(msg, key, kid)
    if len(token) > HTTP_BODY_LIMIT:
        raise UsageError(
            f"--encrypt: the encrypted message is {len(token)} bytes; ntfy servers and relays "
            f"keep a body above {HTTP_BODY_LIMIT} bytes (their default message limit) as an "
            "attachment file, which agents would not decrypt; shorten the text"
        )
    routing: dict[str, Any] = {
        "priority": args.priority if args.expose_priority else None,
        "delay": args.delay, "sequence_id": args.sequence_id,
    }  # fmt: skip
    if blob is not None:  # the relay sees a neutral name and, sniffed, octet-stream
        from agent.e2e import files

        return httppublish.publish_request(
            args.topic, token, file=blob, filename=files.UPLOAD_NAME, **routing
        )
    return httppublish.publish_request(args.topic, token, content_type=jwe.CONTENT_TYPE, **routing)


def _sealed_file(data: bytes, name: str | None) -> tuple[bytes, dict[str, Any]]:
    """``data`` encrypted for upload, and the attachment object that goes inside the JWE."""
    from agent.e2e import files
    from agent.ntfyproto.attachment import SNIFF_BYTES, safe_name, sniff

    label = safe_name(name or "") or "attachment"
    mime, _ = sniff(data[:SNIFF_BYTES], label)
    blob, secret = files.seal_file(data)
    return blob, {"name": label, "type": mime, "size": len(data), **secret}


def _needs_text(args: argparse.Namespace, url: str | None, data: bytes | None) -> bool:
    """MESSAGE may be left out with --attach (a file or a URL): the server (or the sealed
    message) then says "You received a file: NAME", as over MQTT."""
    return args.message is not None or (url is None and data is None)


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
    problem = topic_problem("ntfy", args.topic)
    if problem is not None:  # said here, not as the server's 400 after a round trip
        raise UsageError(f"TOPIC: {args.topic!r}: {problem}")
    if args.id is not None:
        raise UsageError("--id: an ntfy server picks the message id; use --sequence-id")
    gone = args.clear if args.clear is not None else args.delete
    if gone is not None:
        if args.message is not None:
            raise UsageError("--clear/--delete ID TOPIC take no MESSAGE")
        make = httppublish.clear_request if args.clear is not None else httppublish.delete_request
        req = make(args.topic, gone)
    elif args.encrypt:
        req = _sealed_request(cfg, args)
    else:
        url, data, name = _attachment(args)
        text = _message(args) if _needs_text(args, url, data) else ""
        req = httppublish.publish_request(
            args.topic, text, title=args.title, priority=args.priority,
            tags=args.tags, click=args.click, markdown=args.markdown, delay=args.delay,
            sequence_id=args.sequence_id, attach_url=url, file=data, filename=name,
        )  # fmt: skip
    if gone is None:
        _ack_fields(args)  # checked here, not as the server's 400 after a round trip
        req.headers.update(_ack_headers(args))
    if server.tls and cfg.tls.insecure:
        log.warning("%s: TLS certificate checks are OFF (tls.insecure = true)", server.url)
    sender = httppublish.Sender(
        server.http_base,
        token=secrets.token_for(cfg, server.http_base),
        context=tls_context(cfg.tls) if server.tls else None,
        timeout=args.timeout,
    )
    return sender.send(req)


def _attachment(args: argparse.Namespace) -> tuple[str | None, bytes | None, str | None]:
    """``--attach``/``--filename`` → (external URL, file bytes, name); UsageError naming the
    flag for a file that cannot be read."""
    where: str | None = args.attach
    if where is None:
        if args.filename is not None:
            raise UsageError("--filename: names an attachment; give --attach FILE or URL")
        return None, None, None
    if where.startswith(("http://", "https://")):
        return where, None, args.filename
    path = Path(where)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--attach: cannot read {where!r}: {exc.strerror}") from None
    return None, data, args.filename or path.name


def _mqtt_attachment(cfg: AgentConfig, args: argparse.Namespace) -> dict[str, Any] | None:
    """``--attach`` over MQTT: an http(s) URL goes as it is; a FILE is uploaded to
    ``[attachments] upload_server`` and the MQTT message carries the ``attachment`` object
    that server answered (never the file itself: no multi-megabyte MQTT payloads).

    With ``--encrypt`` what is uploaded is the file sealed with its own key, under a neutral
    name, with the server's own text (no topic); the object returned -- the real name, type
    and size, the file key, the server's ``url``/``expires`` -- then travels inside the JWE
    only (docs/E2E.md), as over HTTP."""
    url, data, name = _attachment(args)
    if url is not None:
        return {"url": url, **({"name": name} if name else {})}
    if data is None:
        return None
    if not args.encrypt:
        att = _upload(cfg, args, f"file for {args.topic}", data, name)
        return {k: att[k] for k in ("name", "type", "size", "expires", "url") if k in att}
    from agent.e2e import files

    blob, inner = _sealed_file(data, name)
    att = _upload(cfg, args, "", blob, files.UPLOAD_NAME)
    return {**inner, **{k: att[k] for k in ("url", "expires") if k in att}}


def _upload(
    cfg: AgentConfig, args: argparse.Namespace, text: str, data: bytes, name: str | None
) -> dict[str, Any]:
    """``data`` published as a file to ``[attachments] upload_server``: its attachment object."""
    server = cfg.attachments.upload_server
    if server is None:
        raise ConfigError(
            f"--attach FILE over MQTT: no server to hold the file; set [attachments] "
            f'upload_server = "http://RELAY:8080" in {cfg.paths.config_file} (the MQTT '
            "message then carries its URL), or send with --server http(s)://HOST:PORT"
        )
    from agent import httppublish
    from agent.ntfy import parse_server
    from agent.transports import tls_context

    base = parse_server(server)
    topic = cfg.attachments.upload_topic
    req = httppublish.publish_request(topic, text, file=data, filename=name)
    sender = httppublish.Sender(
        base.http_base, token=secrets.token_for(cfg, base.http_base),
        context=tls_context(cfg.tls) if base.tls else None, timeout=args.timeout,
    )  # fmt: skip
    att = sender.send(req).get("attachment")
    if not isinstance(att, dict) or not isinstance(att.get("url"), str):
        raise ConfigError(f"[attachments] upload_server {server}: kept the file as text, not "
                          "as an attachment; is it a relay or an ntfy server with attachments "
                          "enabled?")  # fmt: skip
    return att


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


def _ack_headers(args: argparse.Namespace) -> dict[str, str]:
    """``--ack`` / ``--ack-retry`` / ``--ack-expire`` as edgepush's X-Ack headers."""
    given = {"X-Ack": "required" if args.ack else None, "X-Ack-Retry": args.ack_retry,
             "X-Ack-Expire": args.ack_expire}  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def _ack_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The envelope's ack fields (agent.ntfyproto.ack), or UsageError for a bad duration."""
    from agent.ntfyproto import NtfyError
    from agent.ntfyproto.ack import parse_ack
    from agent.ntfyproto.fields import Request

    if (args.ack_retry or args.ack_expire) and not args.ack:
        raise UsageError("--ack-retry/--ack-expire: only with --ack")
    try:
        return parse_ack(Request(_ack_headers(args)))
    except NtfyError as exc:
        raise UsageError(f"--ack: {str(exc).split('; ', 1)[-1]}") from None
