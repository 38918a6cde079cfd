"""ntfy 2.16 sequences on the agent side, without a desktop: the stream frames, the store's
per-sequence states (migration 008), the hand-off filter, Markdown rendering, the log and
command notifiers' view of update / clear / delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.envelope import Message
from agent.notify.command import message_env
from agent.notify.markdown import is_markdown, to_markup, to_plain
from agent.ntfy import parse_frame
from agent.store import Store
from agent.store.sequences import event_of, sequence_key

MAX = 64 * 1024


def frame(event: str, mid: str, **fields: object) -> str:
    return json.dumps({"id": mid, "time": 1700000000, "event": event, "topic": "jobs", **fields})


def parsed(event: str, mid: str, **fields: object) -> Message:
    ev = parse_frame(frame(event, mid, **fields), max_size=MAX)
    assert ev.kind == "message" and ev.message is not None
    return ev.message


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "agent.db").open()
    yield s
    s.close()


# --- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["message_clear", "message_delete"])
def test_clear_and_delete_frames_become_messages_that_name_their_event(event: str) -> None:
    m = parsed(event, "ev1", sequence_id="job-7")
    assert (m.id, m.topic, m.message) == ("ev1", "jobs", "")
    assert m.extra == {"event": event, "sequence_id": "job-7"}
    assert event_of(m) == event and sequence_key(m) == "job-7"


def test_message_frame_keeps_sequence_id_and_icon_and_has_no_event() -> None:
    m = parsed("message", "m1", message="50%", sequence_id="job-7", icon="https://x.org/i.png")
    assert m.extra == {"sequence_id": "job-7", "icon": "https://x.org/i.png"}
    assert event_of(m) == "message" and sequence_key(m) == "job-7"
    # without a sequence_id a message is its own sequence (ntfy: update by the returned id)
    assert sequence_key(parsed("message", "m2", message="x")) == "m2"


# --- the store ----------------------------------------------------------------------------


def test_store_records_each_sequence_state_and_marks_messages_without_losing_any(
    store: Store,
) -> None:
    first = parsed("message", "m1", message="started", sequence_id="job-7")
    other = parsed("message", "m9", message="unrelated")
    store.insert_batch([first, other], source="s")
    assert store.sequence("jobs", "job-7") == ("m1", "shown")
    assert store.sequence("jobs", "m9") is None  # no sequence_id: no row until addressed
    update = parsed("message", "m2", message="50%", sequence_id="job-7")
    store.insert_batch([update], source="s")
    assert store.sequence("jobs", "job-7") == ("m2", "updated")
    store.insert_batch([parsed("message_clear", "c1", sequence_id="job-7")], source="s")
    assert store.sequence("jobs", "job-7") == ("m2", "cleared")
    assert [store.get(i).state for i in ("m1", "m2", "m9")] == ["read", "read", "received"]  # type: ignore[union-attr]
    # a replayed clear (since= after a reconnect) is a no-op: the UNIQUE id
    assert store.insert_batch([parsed("message_clear", "c1", sequence_id="job-7")]) == []
    store.insert_batch([parsed("message_delete", "d1", sequence_id="job-7")], source="s")
    assert store.sequence("jobs", "job-7") == ("m2", "deleted")
    assert [store.get(i).state for i in ("m1", "m2")] == ["deleted", "deleted"]  # type: ignore[union-attr]
    # a late "displayed" report does not bring a deleted message back
    store.record_states([("m2", "displayed", 1.0)])
    assert store.get("m2").state == "deleted"  # type: ignore[union-attr]
    assert store.count() == 5  # every row kept: three messages, the clear and the delete
    # a clear addressed by a plain message's id (no sequence_id) works too
    store.insert_batch([parsed("message_clear", "c2", sequence_id="m9")], source="s")
    assert store.sequence("jobs", "m9") == ("m9", "cleared")
    assert store.get("m9").state == "read"  # type: ignore[union-attr]


def test_a_message_after_a_clear_opens_the_sequence_again(store: Store) -> None:
    store.insert_batch([parsed("message", "m1", sequence_id="s"),
                        parsed("message_clear", "c1", sequence_id="s")])  # fmt: skip
    store.insert_batch([parsed("message", "m2", sequence_id="s")])
    assert store.sequence("jobs", "s") == ("m2", "shown")


def test_hand_off_filter_leaves_out_superseded_and_closed_sequence_members(store: Store) -> None:
    items = store.insert_batch([
        parsed("message", "a1", sequence_id="a"),
        parsed("message", "a2", sequence_id="a"),  # supersedes a1
        parsed("message", "b1", sequence_id="b"),
        parsed("message_clear", "bc", sequence_id="b"),  # closes b
        parsed("message", "p1", message="plain"),
    ])  # fmt: skip
    assert [s.message.id for s in store.current(items)] == ["a2", "bc", "p1"]


def test_migration_008_is_recorded(store: Store) -> None:
    names = [r[0] for r in store._read("SELECT name FROM _migrations ORDER BY name")]
    assert "008_sequence" in names


# --- Markdown -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "plain", "markup"),
    [
        ("# Backup done", "Backup done", "<b>Backup done</b>"),
        ("**bold** and *it* and _it2_", "bold and it and it2",
         "<b>bold</b> and <i>it</i> and <i>it2</i>"),
        ("see [docs](https://x.org/a?b=1&c=2)", "see docs (https://x.org/a?b=1&c=2)",
         'see <a href="https://x.org/a?b=1&amp;c=2">docs</a>'),
        ("- one\n* two\n+ three", "• one\n• two\n• three", "• one\n• two\n• three"),
        ("> quoted", "quoted", "quoted"),
        ("```\ncode()\n```", "code()", "code()"),
        ("run `ls -l`", "run ls -l", "run ls -l"),
        ("~~gone~~", "gone", "gone"),
        ("![logo](https://x.org/l.png)", "logo (https://x.org/l.png)", "logo (https://x.org/l.png)"),
        ("a <b>tag</b> & more", "a <b>tag</b> & more", "a &lt;b&gt;tag&lt;/b&gt; &amp; more"),
        ("[x](javascript:alert(1))", "x (javascript:alert(1))", "x (javascript:alert(1))"),
        ("snake_case_name 2*3*4", "snake_case_name 2*3*4", "snake_case_name 2*3*4"),
    ],
    ids=["heading", "emphasis", "link", "lists", "quote", "fence", "code", "strike", "image",
         "html-escaped", "unsafe-link", "not-emphasis"],
)  # fmt: skip
def test_markdown_rendering(text: str, plain: str, markup: str) -> None:
    assert to_plain(text) == plain
    assert to_markup(text) == markup


def test_markdown_content_type() -> None:
    assert is_markdown("text/markdown") and is_markdown("Text/Markdown; charset=utf-8")
    assert not is_markdown(None) and not is_markdown("text/plain")


# --- the command notifier's environment -----------------------------------------------------


def test_command_env_names_the_event_and_the_sequence() -> None:
    assert message_env(parsed("message", "m1", sequence_id="job-7"))["PUSHAGENT_EVENT"] == "message"
    env = message_env(parsed("message_delete", "d1", sequence_id="job-7"))
    assert (env["PUSHAGENT_EVENT"], env["PUSHAGENT_SEQUENCE_ID"]) == ("message_delete", "job-7")
    assert message_env(parsed("message", "m2"))["PUSHAGENT_SEQUENCE_ID"] == "m2"
