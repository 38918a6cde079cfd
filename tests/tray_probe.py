"""Run by test_tray as a child under Xvfb: build the real pystray menu of ``TrayApp``, drive a
few actions, and print the menu after each as JSON lines (label, enabled, default)."""

from __future__ import annotations

import json
import sys

from agent import config
from agent.tray.app import TrayApp


def dump(app: TrayApp) -> None:
    items = [
        {"label": str(i.text), "enabled": bool(i.enabled), "default": bool(i.default)}
        for i in app.icon.menu.items
    ]
    print(json.dumps(items), flush=True)


def main() -> int:
    app = TrayApp(config.load({}), with_service=False)
    try:
        app.refresh()
        dump(app)
        for action in sys.argv[1:]:
            app.do(action)
            dump(app)
    finally:
        app.icon.stop()
        app.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
