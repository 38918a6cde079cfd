"""What an idle relay and an idle subscriber cost: imports, objects and tasks per stream.

The figures themselves (RSS, KiB per subscriber) are in ``bench/relay_memory.py`` and
docs/PERFORMANCE.md; these tests pin the causes, so a change that brings one back fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import child_env

# --- imports: only what the configuration uses ---------------------------------------------


def test_serving_without_mdns_or_upstream_imports_neither_zeroconf_nor_paho() -> None:
    code = (
        "import sys, json, edge_relay.cli, edge_relay.service; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('zeroconf', 'paho') or m == 'agent.transports.mqtt')))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert json.loads(out.stdout) == []
