"""``pushagent ack ID``: acknowledge a message that insists (acknowledge-until-acked)."""

from __future__ import annotations

import argparse
import time

from agent.commands import common, load_config, open_store
from agent.errors import MessageError, UsageError
from agent.service import client_id, receipt_destination
from agent.statesync import state_prefix

DESCRIPTION = """\
Acknowledge message(s) by ID. A publisher that sends with 'X-Ack: required' (or a
priority-5 message on a topic whose [[rules]] entry sets ack_urgent = true) gets re-alerts
on every subscribed device, every X-Ack-Retry interval, until one device acknowledges it -
with the notification's "Acknowledge" button or with this command. The acknowledgement is
recorded here at once (this device never re-alerts it again, even across restarts) and
sent upstream as the 'acknowledged' state the next time the agent is connected; the
relay then tells the user's other devices, which stop too, and answers the publisher's
'GET /v1/messages/ID/ack' with this device's name and the time."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ack",
        help="acknowledge a message that re-alerts until acknowledged",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("id", nargs="+", metavar="ID", help="message id(s), as in 'history'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.envelope import check_id

    try:
        ids = [check_id(i) for i in args.id]
    except MessageError as exc:
        raise UsageError(f"ack: {exc}") from None
    cfg = load_config(args)
    count = 0
    if cfg.paths.db.exists():  # nothing stored yet: nothing to acknowledge, no database made
        store = open_store(cfg)
        try:
            now = time.time()
            # like `pushagent read`: the receipt (and for MQTT the state topic's item) tells
            # the user's other devices, which stop re-alerting (agent.statesync)
            count = store.record_states(
                [(i, "acknowledged", now) for i in ids],
                receipt_destination=receipt_destination(cfg, store),
                device=client_id(cfg, store), device_name=cfg.device_name,
                state_prefix=state_prefix(cfg),
            )  # fmt: skip
        finally:
            store.close()
    if count < len(ids):
        print(f"acknowledged {count}; {len(ids) - count} id(s) not found")
        return 1
    print(f"acknowledged {count} message{'s' if count != 1 else ''}")
    return 0
