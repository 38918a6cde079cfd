"""A subscriber nobody here wrote: the ``ntfy-api`` library (PyPI ``ntfy-api``, its 1.0
line) polling ``/json`` and subscribing over ``/ws`` to a real relay, with its filters.

The library sends its filters as ntfy's headers (``X-Title``, ``X-ID``, ``X-Priority``,
``X-Tags``, ``X-Since``) and reads every frame into its own message type, which refuses
fields ntfy does not define: what it gets must be ntfy's shape exactly.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import ntfy_api  # the dev extra; missing, this module fails to import (never a silent skip)
import pytest

from tests.helpers import wait_for
from tests.relay import Relay, module_relay, unique_topic

# 0.0.x only publishes: say which version is needed instead of an AttributeError later
assert hasattr(ntfy_api, "NtfyClient"), "ntfy-api>=1.0.0rc1 is needed: pip install -e '.[dev]'"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "ntfylib")


def topic() -> str:
    return unique_topic("l")


def test_library_polls_json_with_its_filters(relay: Relay) -> None:
    t = topic()
    a = relay.publish(t, "Disk full", Title="NAS", Priority="5", Tags="warning,skull")
    b = relay.publish(t, "Backup done", Title="Backup", Priority="2", Tags="white_check_mark")
    client = ntfy_api.NtfyClient(base_url=relay.url)
    everything = list(client.poll(t))
    assert [m.id for m in everything] == [a["id"], b["id"]]
    first = everything[0]
    assert (first.message, first.title, int(first.priority)) == ("Disk full", "NAS", 5)
    assert [str(tag) for tag in first.tags] == ["warning", "skull"]
    Filter = ntfy_api.Filter
    assert [m.id for m in client.poll(t, Filter(title="Backup"))] == [b["id"]]
    assert [m.id for m in client.poll(t, Filter(id=a["id"]))] == [a["id"]]
    assert [m.id for m in client.poll(t, Filter(message="Disk full"))] == [a["id"]]
    assert [m.id for m in client.poll(t, Filter(priority=[4, 5]))] == [a["id"]]
    assert [m.id for m in client.poll(t, Filter(tags=["skull"]))] == [a["id"]]
    assert [m.id for m in client.poll(t, Filter(since=a["id"]))] == [b["id"]]
    assert list(client.poll(t, Filter(since="none"))) == []


def _drain(sub: Any, want: int, timeout: float = 15) -> list[Any]:
    got: list[Any] = []

    def more() -> bool:
        try:
            while True:
                got.append(sub.messages.get_nowait())
        except queue.Empty:
            pass
        return sum(str(m.event) == "message" for m in got) >= want

    wait_for(more, timeout=timeout, what=f"{want} message events over /ws")
    return got


# The library calls websockets' connect() without a context manager, which websockets 17.1+
# deprecates (the connection still works): the library's warning, not the relay's.
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_library_subscribes_over_ws_with_a_title_filter(relay: Relay) -> None:
    t = topic()
    client = ntfy_api.NtfyClient(base_url=relay.url)
    sub = client.subscribe(t, filter=ntfy_api.Filter(title="wanted"))
    with sub:
        # the open event says the subscription is registered: publish only after it
        wait_for(lambda: not sub.messages.empty(), timeout=15, what="the open event")
        opened = sub.messages.get_nowait()
        assert str(opened.event) == "open" and opened.topic == t
        relay.publish(t, "not this one", Title="other")
        wanted = relay.publish(t, "this one", Title="wanted", Tags="tada")
        relay.publish(t, "nor this", Title="Wanted")  # exact match: case counts
        marker = relay.publish(t, "marker", Title="wanted")
        events = _drain(sub, 2)
    messages = [m for m in events if str(m.event) == "message"]
    assert [m.id for m in messages] == [wanted["id"], marker["id"]]
    assert messages[0].message == "this one" and [str(x) for x in messages[0].tags] == ["tada"]
