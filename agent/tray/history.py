"""The "Open history" window: stored messages in a list with a search box (tkinter).

Started by the tray as ``pushagent tray --history-window DB``, in its own process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent.store import Store, Stored

LIMIT = 500


def line(s: Stored) -> str:
    m = s.message
    when = time.strftime("%m-%d %H:%M", time.localtime(m.time))
    text = f"{m.title}: {m.message}" if m.title else m.message
    text = "".join(c if c.isprintable() else " " for c in text[:300])
    return f"{when}  {m.topic}  [{s.state}]  {text}"


def lines(store: Store, search: str | None = None) -> list[str]:
    """The window's lines, newest last, as ``pushagent history`` lists them (the window
    scrolls to the end, where the newest is)."""
    return [line(s) for s in store.query(search=search, limit=LIMIT)]


def main(argv: list[str]) -> int:
    import tkinter as tk

    store = Store(Path(argv[0])).open()
    root = tk.Tk()
    root.title("edgepush history")
    root.geometry("760x420")
    query = tk.StringVar()
    top = tk.Frame(root)
    top.pack(fill="x", padx=6, pady=6)
    tk.Label(top, text="Search:").pack(side="left")
    entry = tk.Entry(top, textvariable=query)
    entry.pack(side="left", fill="x", expand=True)
    listbox = tk.Listbox(root, font="TkFixedFont")
    listbox.pack(fill="both", expand=True, padx=6, pady=(0, 6))

    def fill(*_: object) -> None:
        text = query.get().strip()
        try:
            rows = lines(store, text or None)
        except Exception:  # a half-typed search must not close the window  # noqa: BLE001
            return
        listbox.delete(0, "end")
        for row in rows:
            listbox.insert("end", row)
        listbox.see("end")

    query.trace_add("write", fill)
    fill()
    entry.focus_set()
    try:
        root.mainloop()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
