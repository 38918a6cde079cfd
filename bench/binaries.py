"""Size and startup time of the one-file binaries, against running from source.

    python packaging/build.py && python bench/binaries.py [--dist dist] [--runs 15]

Prints one JSON object per scenario: the binary's size, the median wall time of
``BINARY --version`` (a one-file binary unpacks its archive on every start, so this is the
floor of every command), and, measured alternately in the same run as the baseline, the
median of ``python -m <package> --version`` from this checkout. Targets: < 1 s, < 40 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": os.defpath, "HOME": home, "PYTHONPATH": str(ROOT)}
        for name, module in (("pushagent", "agent"), ("edge-relay", "edge_relay")):
            binary = args.dist / name
            frozen: list[float] = []
            source: list[float] = []
            wall([str(binary), "--version"], env)  # warm the page cache once
            for _ in range(args.runs):  # alternate, so load on the box hits both alike
                frozen.append(wall([str(binary), "--version"], env))
                source.append(wall([sys.executable, "-m", module, "--version"], env))
            med, base = statistics.median(frozen), statistics.median(source)
            print(json.dumps({
                "scenario": f"{name} --version",
                "size_mb": round(binary.stat().st_size / 1e6, 1),
                "startup_median_s": round(med, 3),
                "startup_max_s": round(max(frozen), 3),
                "baseline": f"python -m {module} --version (source)",
                "baseline_median_s": round(base, 3),
                "ratio": round(med / base, 2),
                "runs": args.runs,
            }))  # fmt: skip


if __name__ == "__main__":
    main()
