"""``pushagent status --probe``: ask each MQTT server now which protocol it speaks.

The answer replaces what ``agent.transports.mqtt_protocol`` remembered for the server (the
daemon reads it at its next connect). A probe is a clean session with a client id of its own,
so the daemon's persistent session is never taken over.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent import secrets
from agent.config import AgentConfig
from agent.errors import EdgepushError
from agent.ntfy import server_kind


async def _probe_one(url: str, cfg: AgentConfig) -> dict[str, Any]:
    from agent.transports.mqtt import MqttTransport, parse_url

    user, password = secrets.credentials(cfg, url, parse_url(url).username)
    transport = MqttTransport(
        url, cfg, username=user, password=password, persistent=False, fatal_auth=True
    )
    try:
        await transport.open(probe=True)
    except EdgepushError as exc:
        return {"server": transport.url, "protocol": None, "error": str(exc)}
    finally:
        await transport.close()
    return {"server": transport.url, "protocol": transport.protocol}


def probe(cfg: AgentConfig) -> list[dict[str, Any]]:
    """One result per MQTT server in ``cfg.servers``: ``protocol`` or ``error``."""

    async def run() -> list[dict[str, Any]]:
        out = []
        for url in cfg.servers:
            try:
                mqtt = server_kind(url) == "mqtt"
            except EdgepushError as exc:
                out.append({"server": url, "protocol": None, "error": str(exc)})
                continue
            if mqtt:
                out.append(await _probe_one(url, cfg))
        return out

    return asyncio.run(run())


def text(results: list[dict[str, Any]]) -> list[str]:
    """Lines for ``status`` without ``--json``."""
    if not results:
        return ["protocol:     no MQTT server to probe"]
    return [
        f"protocol:     {r['server']}: MQTT {r['protocol']} (probed now)"
        if r.get("protocol")
        else f"protocol:     {r['server']}: probe failed: {r['error']}"
        for r in results
    ]
