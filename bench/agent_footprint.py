"""Agent footprint: RSS and CPU of an idle agent, of the tray, and start → connected time.

    /work/venv/bin/python bench/agent_footprint.py [--idle 60] [--starts 7] [--out FILE]

Scenarios (each with a same-run baseline, figures as medians):
* ``run_idle``: ``pushagent run --notifier log`` connected to a real mosquitto, idle for
  ``--idle`` s: RSS at the end (VmRSS) and CPU % over the idle period (utime+stime / wall).
  Baseline: a bare ``python -c 'sleep'`` interpreter.
* ``tray_idle``: ``pushagent tray`` (the same service in-process, docked in trayer on Xvfb,
  desktop notifier to dunst), idle likewise. Baseline: the same bare interpreter.
* ``start_to_connected``: process start → the status file says ``connected``, ``--starts``
  times. Baseline, interleaved: process start → exit of ``pushagent config path``.

Needs ``agent.service`` (``pushagent run``) in the checkout; prints JSON to stdout (and
``--out``). Targets from issue 6: run <= 35 MB and < 0.5 % CPU, tray <= 50 MB, connect
< 0.5 s median.
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
sys.path.insert(0, str(ROOT))

from tests.desktop import Desktop  # noqa: E402
from tests.helpers import child_env, wait_for  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def idle(proc: subprocess.Popen[bytes], seconds: float) -> dict[str, float]:
    """RSS at the end and CPU % over ``seconds`` of an already started process."""
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)  # measuring idleness is the point: nothing to wait on here
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    return {"rss_mb": round(rss_mb(proc.pid), 1), "cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 3)}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def baseline_idle(seconds: float) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        time.sleep(0.5)
        return idle(proc, seconds)
    finally:
        stop(proc)


def connected(home: Path) -> bool:
    try:
        return json.loads((home / "data" / "status.json").read_text())["state"] == "connected"
    except (OSError, ValueError, KeyError):
        return False


def agent(home: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        env={**child_env(home), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def write_config(home: Path, broker: Mosquitto, notifier: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'servers = ["{broker.url}"]\ntopics = ["bench/#"]\nnotifier = "{notifier}"\n'
    )


def start_to_connected(tmp: Path, broker: Mosquitto, n: int) -> dict[str, object]:
    """Interleaved with the baseline (``pushagent config path``: interpreter + CLI start, no
    connection) so both see the same load on a shared box."""
    times, base = [], []
    for i in range(n):
        home = tmp / f"start{i}"
        write_config(home, broker, "log")
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "agent", "config", "path"], env=child_env(home),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        base.append(time.monotonic() - t0)
        t0 = time.monotonic()
        proc = agent(home, ["run"], {})
        try:
            wait_for(lambda h=home: connected(h), timeout=30, interval=0.005, what="connected")
            times.append(time.monotonic() - t0)
        finally:
            stop(proc)
    med, bmed = statistics.median(times), statistics.median(base)
    return {
        "median_s": round(med, 3),
        "runs_s": [round(t, 3) for t in times],
        "baseline_cli_start_s": round(bmed, 3),
        "ratio": round(med / bmed, 2),
        "loadavg_1m": os.getloadavg()[0],
    }


def run_idle(tmp: Path, broker: Mosquitto, seconds: float) -> dict[str, object]:
    home = tmp / "run"
    write_config(home, broker, "log")
    proc = agent(home, ["run"], {})
    try:
        wait_for(lambda: connected(home), timeout=30, what="connected")
        figures = idle(proc, seconds)
    finally:
        stop(proc)
    return figures


def tray_idle(tmp: Path, broker: Mosquitto, seconds: float) -> dict[str, object]:
    desk = Desktop(tmp / "desktop").start()
    try:
        desk.start_tray_host()
        home = tmp / "tray"
        write_config(home, broker, "desktop")
        proc = agent(home, ["tray"], desk.env)
        try:
            wait_for(lambda: connected(home), timeout=30, what="tray's service connected")
            wait_for(lambda: desk.windows("^edgepush: connected"), timeout=30, what="icon")
            figures = idle(proc, seconds)
        finally:
            stop(proc)
        return figures
    finally:
        desk.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=float, default=60.0, help="idle seconds per scenario")
    ap.add_argument("--starts", type=int, default=7, help="start → connected repetitions")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="footprint-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "broker").start()
        try:
            result = {
                "start_to_connected": start_to_connected(tmp, broker, args.starts),
                "run_idle": {**run_idle(tmp, broker, args.idle), "idle_s": args.idle},
                "tray_idle": {**tray_idle(tmp, broker, args.idle), "idle_s": args.idle},
                "baseline_bare_python_idle": baseline_idle(args.idle),
                "cores": os.cpu_count(),
            }
        finally:
            broker.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
