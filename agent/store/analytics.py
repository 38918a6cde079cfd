"""Delivery analytics as SQL aggregates: the relay's per-topic, per-day funnel and the agent's
own engagement (migration 012). Part of ``agent.store``; the numbers are shaped into reports
by the pure ``agent.analytics``.

Every method answers grouped counts, never one row per receipt: with 100,000 receipts the
funnel is one pass over the window's messages and their receipts' primary key (see
docs/PERFORMANCE.md, ``bench/stats_query.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.store.base import _Base

# Stored ntfy 2.16 clear/delete events are rows of `messages` too; they are not publications.
_NOT_EVENT = "(m.extra IS NULL OR json_extract(m.extra, '$.event') IS NULL)"
_DAY = 86400


@dataclass(frozen=True, slots=True)
class FunnelRows:
    """The raw aggregates behind ``agent.analytics.funnel_report``.

    ``day`` is the UTC day number of the message's publish time (``time // 86400``): a
    receipt counts on the day its message was published (a cohort), so a day's click-through
    rate compares that day's messages with what became of them.
    """

    published: list[tuple[str, int, int]]
    """``(topic, day, messages)``."""
    states: list[tuple[str, int, str, int]]
    """``(topic, day, state, devices)``: receipts are unique per (message, owner, state,
    device), so a count of receipts in one state is the devices that reported it."""
    medians: list[tuple[str, int | None, float]]
    """``(topic, day, median seconds from publish to click)``; ``day`` None: the topic's
    median over the whole window."""


class _Analytics(_Base):
    def funnel_rows(
        self, since: int, *, until: int | None = None, topics: Sequence[str] | None = None
    ) -> FunnelRows:
        """Per topic and UTC day, for messages published in ``[since, until)``: how many,
        and the receipts per state and the median time to click. ``topics``: exact names."""
        where = ["m.time >= ?"]
        params: list[object] = [since]
        if until is not None:
            where.append("m.time < ?")
            params.append(until)
        if topics is not None:
            where.append(f"m.topic IN ({', '.join('?' for _ in topics) or 'NULL'})")
            params += list(topics)
        cond = " AND ".join(where)
        published = self._read(
            f"SELECT m.topic, m.time / {_DAY}, count(*) FROM messages m "
            f"WHERE {cond} AND {_NOT_EVENT} GROUP BY 1, 2",
            params,
        )
        states = self._read(
            f"SELECT m.topic, m.time / {_DAY}, r.state, count(*) FROM messages m "
            f"JOIN receipts r ON r.message_id = m.id WHERE {cond} GROUP BY 1, 2, 3",
            params,
        )
        # SQLite has no median: rank the clicks of each group and average the middle one or
        # two (window functions, SQLite >= 3.25), once per day and once per topic.
        medians = self._read(
            f"""WITH c AS (
                SELECT m.topic AS topic, m.time / {_DAY} AS day, max(r.time - m.time, 0) AS d
                FROM messages m JOIN receipts r ON r.message_id = m.id
                WHERE r.state = 'clicked' AND {cond}
            ), o AS (
                SELECT topic, day, d,
                    row_number() OVER (PARTITION BY topic, day ORDER BY d) AS rn,
                    count(*) OVER (PARTITION BY topic, day) AS n,
                    row_number() OVER (PARTITION BY topic ORDER BY d) AS trn,
                    count(*) OVER (PARTITION BY topic) AS tn
                FROM c
            )
            SELECT topic, day, avg(d) FROM o WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
            GROUP BY topic, day
            UNION ALL
            SELECT topic, NULL, avg(d) FROM o WHERE trn IN ((tn + 1) / 2, (tn + 2) / 2)
            GROUP BY topic""",
            params,
        )
        return FunnelRows(
            [(str(t), int(d), int(n)) for t, d, n in published],
            [(str(t), int(d), str(s), int(n)) for t, d, s, n in states],
            [(str(t), None if d is None else int(d), float(x)) for t, d, x in medians],
        )

    def engagement_rows(
        self, since: int
    ) -> list[tuple[str, int, str | None, str, bool, bool, str | None, int]]:
        """The agent's own engagement since ``since`` (publish time), grouped:
        ``(topic, priority, tags JSON, final state, shown, clicked, held verdict, count)``.

        ``shown``: this agent reported it displayed; ``clicked``: it reported a click (the
        final state may have moved on to ``read``); the verdict is why the rules held it back
        (``held``), None when they let it through.
        """
        rows = self._read(
            "SELECT m.topic, m.priority, m.tags, m.state, "
            "EXISTS (SELECT 1 FROM receipts r WHERE r.message_id = m.id AND r.owner = '' "
            "AND r.state = 'displayed'), "
            "EXISTS (SELECT 1 FROM receipts r WHERE r.message_id = m.id AND r.owner = '' "
            "AND r.state = 'clicked'), "
            "h.verdict, count(*) "
            "FROM messages m LEFT JOIN held h ON h.message_id = m.id "
            f"WHERE m.time >= ? AND {_NOT_EVENT} GROUP BY 1, 2, 3, 4, 5, 6, 7",
            (since,),
        )
        return [
            (str(t), int(p), tags, str(s), bool(sh), bool(c), v, int(n))
            for t, p, tags, s, sh, c, v, n in rows
        ]

    def record_held(self, verdicts: Sequence[tuple[str, str]], now: float | None = None) -> None:
        """Why the rules held these messages back: ``(message id, verdict)``, first kept."""
        if not verdicts:
            return
        at = time.time() if now is None else now
        with self._write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO held (message_id, verdict, time) VALUES (?, ?, ?)",
                [(mid, verdict, at) for mid, verdict in verdicts],
            )

    def messages_per_hour(self, since: int) -> list[tuple[int, int]]:
        """``(hour start as unix time, messages published)`` since ``since``, oldest first."""
        rows = self._read(
            f"SELECT m.time / 3600 * 3600, count(*) FROM messages m "
            f"WHERE m.time >= ? AND {_NOT_EVENT} GROUP BY 1 ORDER BY 1",
            (since,),
        )
        return [(int(h), int(n)) for h, n in rows]

    def recent_devices(
        self, since: float, limit: int = 200
    ) -> list[tuple[str, str, str, float, int]]:
        """``(owner, device, device name, last receipt time, receipts)`` of the devices that
        reported since ``since``, most recent first (the relay's admin overview; the name
        from the ``devices`` table, "" for a device that gave none)."""
        rows = self._read(
            "SELECT r.owner, r.device, coalesce(d.name, ''), max(r.time), count(*) "
            "FROM receipts r LEFT JOIN devices d ON d.owner = r.owner AND d.device = r.device "
            "WHERE r.time >= ? GROUP BY r.owner, r.device ORDER BY 4 DESC LIMIT ?",
            (since, limit),
        )
        return [(str(o), str(d), str(m), float(t), int(n)) for o, d, m, t, n in rows]
