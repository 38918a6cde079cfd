"""PURE. The store's health in a word, for ``pushagent status`` and the status file.

Why: a commit that fails with StoreBusy is retried forever by the transport (nothing is
acked, nothing lost), so the link stays up and the agent looked merely ``connected`` while
no batch could commit — on a full disk, for hours. The service records the word below in
``status.json`` on the first failed commit and ``ok`` on the next good one; the status
command adds what it can see itself (a store it cannot open, a file system with no room
left, which also keeps the daemon from rewriting its status file).
"""

from __future__ import annotations

OK = "ok"
# SQLite's error text → the word shown; first match wins ("database disk image is
# malformed" mentions the disk but is corruption, so it comes first).
_WORDS = (
    (("malformed", "corrupt", "not a database"), "corrupt"),
    (("disk is full", "no space"), "disk full"),
    (("locked", "busy"), "locked"),
    (("readonly", "read-only"), "read-only"),
    (("disk I/O", "I/O error"), "I/O error"),
    (("unable to open", "cannot open"), "cannot open"),
)
# Below this many free bytes a batch cannot commit (its WAL frames alone are pages of 4 KiB
# each, plus the index) and the status file cannot be rewritten: call the disk full.
FULL_BELOW = 64 * 1024


def store_problem(text: str) -> str:
    """The word for a StoreError's text: ``disk full``, ``locked``, ``read-only``, ..."""
    lowered = text.lower()
    for needles, word in _WORDS:
        if any(n.lower() in lowered for n in needles):
            return word
    return "error"


def disk_full(free_bytes: int) -> bool:
    """True when the store's file system has no room for one more batch."""
    return free_bytes < FULL_BELOW
