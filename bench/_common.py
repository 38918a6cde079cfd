"""Helpers the benchmarks share: process figures from /proc, percentiles and medians, the
same-run baseline tree, and the per-run summary of a relay against other servers.

Each bench runs as ``python bench/<name>.py``, so this module is imported as ``_common``
(the script's folder is first on ``sys.path``)."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, in ``SC_CLK_TCK`` ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank), NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def baseline_tree(rev: str, into: Path) -> Path:
    """The project's tree at ``rev`` (git archive), to run a second relay from."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def summary(rows: list[dict[str, Any]], metric: str, fields: tuple[str, ...]
            ) -> list[dict[str, Any]]:  # fmt: skip
    """Per (subscribers, rate): medians over the runs of ``fields`` per server, the
    relay/mosquitto ratio of ``metric`` in each run, and with a baseline the relay/baseline
    ratio of each run."""
    out = []
    keys = dict.fromkeys((r["subscribers"], r["rate"]) for r in rows)
    servers = list(dict.fromkeys(r["server"] for r in rows))
    for n, rate in keys:
        by = {k: [r for r in rows if (r["subscribers"], r["rate"], r["server"]) == (n, rate, k)]
              for k in servers}  # fmt: skip
        line: dict[str, Any] = {"summary": True, "subscribers": n, "rate": rate,
                                "runs": len(by["relay"])}  # fmt: skip
        for k, rs in by.items():
            for f in fields:
                line[f"{k}_{f}"] = statistics.median(r[f] for r in rs)
        for name, other in (("ratio", "mosquitto"), ("vs_baseline", "baseline")):
            if other not in by:
                continue
            runs = zip(by["relay"], by[other], strict=True)
            line[f"{name}_per_run"] = [round(a[metric] / b[metric], 2) for a, b in runs]
            line[f"{name}_median"] = statistics.median(line[f"{name}_per_run"])
        out.append(line)
    return out


def relay_config(**limits: object) -> str:
    """A relay config for benchmarks: no publish rate limit (the bench is the only client),
    a long keepalive, and ``limits`` as extra ``[limits]`` keys (``send_queue=100000``)."""
    lines = ["keepalive = 300", "[limits]", "publish_burst = 10000000",
             "publish_rate = 10000000.0"]  # fmt: skip
    lines += [f"{k} = {v}" for k, v in limits.items()]
    return "\n".join(lines) + "\n"
