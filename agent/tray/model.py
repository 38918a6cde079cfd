"""What the tray shows, as plain data: the icon's state and the menu's entries. Pure.

``Snapshot`` is read from the store and status file by the app; ``menu_entries`` turns it
into labelled entries with action names the app maps to callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass

UNREAD_STATES = ("received", "delivered", "displayed", "dismissed")
LABEL_MAX = 60


@dataclass(frozen=True)
class Recent:
    id: str
    topic: str
    title: str
    unread: bool


@dataclass(frozen=True)
class Snapshot:
    connected: bool
    unread: int
    paused: bool
    recent: tuple[Recent, ...] = ()
    problem: str | None = None  # why the service is not running, shown in the tooltip

    @property
    def state(self) -> str:
        """``unread`` beats ``connected`` / ``disconnected`` for the icon."""
        if self.unread:
            return "unread"
        return "connected" if self.connected else "disconnected"

    @property
    def title(self) -> str:
        """The icon's tooltip (and X window name)."""
        parts = ["connected" if self.connected else "disconnected"]
        if self.unread:
            parts.append(f"{self.unread} unread")
        if self.paused:
            parts.append("paused")
        title = "edgepush: " + ", ".join(parts)
        return f"{title} ({self.problem})" if self.problem else title


@dataclass(frozen=True)
class Entry:
    """One menu line. ``action`` is ``open:<id>``, ``pause-1h``, ... or "" for a header."""

    label: str
    action: str = ""
    enabled: bool = True
    default: bool = False


SEPARATOR = Entry("-")


def label(recent: Recent) -> str:
    """A menu label for a message: one line, printable, short."""
    text = f"{'● ' if recent.unread else ''}{recent.topic}: {recent.title}"
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"


def menu_entries(snap: Snapshot) -> list[Entry]:
    """The tray menu, top to bottom."""
    entries = [Entry(snap.title, enabled=False)]
    if snap.recent:
        entries += [Entry(label(r), f"open:{r.id}") for r in reversed(snap.recent)]
    else:
        entries.append(Entry("No messages yet", enabled=False))
    entries += [
        SEPARATOR,
        Entry("Pause for 1 hour", "pause-1h"),
        Entry("Pause until tomorrow", "pause-tomorrow"),
        Entry("Resume", "resume", enabled=snap.paused),
        Entry("Mark all read", "read-all", enabled=snap.unread > 0),
        Entry("Open history", "history", default=True),
        SEPARATOR,
        Entry("Quit", "quit"),
    ]
    return entries
