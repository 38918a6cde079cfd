"""The "Open history" window: stored messages in a list with a search box (tkinter), and a
preview of the selected message's image attachment when the agent has it in its cache.

Started by the tray as ``pushagent tray --history-window DB``, in its own process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from agent.store import Store, Stored

LIMIT = 500
PREVIEW = (320, 240)
"""Largest preview drawn, in pixels (the image is scaled down to fit, never up)."""


def line(s: Stored) -> str:
    m = s.message
    when = time.strftime("%m-%d %H:%M", time.localtime(m.time))
    text = f"{m.title}: {m.message}" if m.title else m.message
    if m.attachment and m.attachment.get("name"):
        text = f"{text}  [file: {m.attachment['name']}]"
    text = "".join(c if c.isprintable() else " " for c in text[:300])
    return f"{when}  {m.topic}  [{s.state}]  {text}"


def rows(store: Store, search: str | None = None) -> list[Stored]:
    """The window's messages, newest last, as ``pushagent history`` lists them (the window
    scrolls to the end, where the newest is)."""
    return store.query(search=search, limit=LIMIT)


def lines(store: Store, search: str | None = None) -> list[str]:
    return [line(s) for s in rows(store, search)]


def preview(path: str | None) -> Any:
    """The cached file at ``path`` as a Pillow image scaled to fit PREVIEW, or None when
    there is no file or it is not an image Pillow can read (the cache holds only checked
    files, but a preview must never take the window down)."""
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.thumbnail(PREVIEW)
            return img.convert("RGB")
    except Exception:  # noqa: BLE001 - any unreadable file is simply not previewed
        return None


def newest_with_file(items: list[Stored], files: dict[str, str]) -> int | None:
    """Index of the newest message whose file is cached (selected when the window opens)."""
    for i in range(len(items) - 1, -1, -1):
        if items[i].message.id in files:
            return i
    return None


def main(argv: list[str]) -> int:
    import tkinter as tk

    store = Store(Path(argv[0])).open()
    root = tk.Tk()
    root.title("edgepush history")
    root.geometry("900x420")
    query = tk.StringVar()
    top = tk.Frame(root)
    top.pack(fill="x", padx=6, pady=6)
    tk.Label(top, text="Search:").pack(side="left")
    entry = tk.Entry(top, textvariable=query)
    entry.pack(side="left", fill="x", expand=True)
    body = tk.Frame(root)
    body.pack(fill="both", expand=True, padx=6, pady=(0, 6))
    # the preview is packed first, so a narrow window shrinks the list, not the image
    shown = tk.Label(body, text="", anchor="center")
    shown.pack(side="right", fill="y", padx=(6, 0))
    listbox = tk.Listbox(body, font="TkFixedFont", exportselection=False)
    listbox.pack(side="left", fill="both", expand=True)
    state: dict[str, Any] = {"items": [], "files": {}, "photo": None}

    def select(*_: object) -> None:
        picked = listbox.curselection()  # type: ignore[no-untyped-call]
        items: list[Stored] = state["items"]
        path = state["files"].get(items[picked[0]].message.id) if picked else None
        img = preview(path)
        if img is None:
            state["photo"] = None
            shown.configure(image="", text="")
            return
        from PIL import ImageTk

        state["photo"] = ImageTk.PhotoImage(img)  # kept: Tk shows it only while referenced
        shown.configure(image=state["photo"], text="")

    def fill(*_: object) -> None:
        text = query.get().strip()
        try:
            items = rows(store, text or None)
            files = store.attachment_paths([s.message.id for s in items])
        except Exception:  # a half-typed search must not close the window  # noqa: BLE001
            return
        state["items"], state["files"] = items, files
        listbox.delete(0, "end")
        for s in items:
            listbox.insert("end", line(s))
        listbox.see("end")
        pick = newest_with_file(items, files)
        if pick is not None:
            listbox.selection_set(pick)
        select()

    listbox.bind("<<ListboxSelect>>", select)
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
