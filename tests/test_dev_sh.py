"""``packaging/dev.sh``: a current venv is not reinstalled (every call used to re-run pip, 12 s).

pip itself is replaced by a logging stand-in here: the real first install needs the network
and minutes, and what is under test is dev.sh's decision whether to call pip at all. The
stand-in venv's python is otherwise the real interpreter (``pytest --version`` really runs).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT


def fake_checkout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of dev.sh and pyproject.toml, and a venv whose pip only logs its arguments."""
    root = tmp_path / "checkout"
    (root / "packaging").mkdir(parents=True)
    shutil.copy2(ROOT / "packaging" / "dev.sh", root / "packaging" / "dev.sh")
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return root, venv, log


def dev_sh(root: Path, venv: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "EDGEPUSH_VENV": str(venv)}
    start = time.monotonic()
    result = subprocess.run([str(root / "packaging" / "dev.sh"), *args], env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return time.monotonic() - start, result


def pip_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_current_venv_skips_pip_and_answers_within_2_s(tmp_path: Path) -> None:
    root, venv, log = fake_checkout(tmp_path)
    _, first = dev_sh(root, venv, "test", "--version")
    assert first.returncode == 0, first.stderr
    assert "pytest" in first.stdout + first.stderr
    installs = pip_calls(log)
    assert any("install -q -e .[dev]" in call for call in installs), installs

    took, second = dev_sh(root, venv, "test", "--version")
    assert second.returncode == 0, second.stderr
    assert "pytest" in second.stdout + second.stderr
    assert pip_calls(log) == installs  # no pip at all the second time
    assert took < 2.0, f"dev.sh test --version took {took:.1f} s with a current venv"

    # a changed pyproject.toml (new dependency) is installed again; other extras are their own
    with (root / "pyproject.toml").open("a") as f:
        f.write("\n# a change\n")
    _, third = dev_sh(root, venv, "test", "--version")
    assert third.returncode == 0, third.stderr
    assert len(pip_calls(log)) > len(installs)
    assert pip_calls(log)[-1].endswith("install -q -e .[dev]")


def test_pips_output_is_shown_only_when_the_install_fails(tmp_path: Path) -> None:
    """A fresh venv's editable install prints setuptools' multi-line notice: it was the first
    thing the README's demo showed a new user. dev.sh keeps pip's output in a log and prints
    it only when the install fails, with the exit status."""
    root, venv, log = fake_checkout(tmp_path)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = pip ]; then\n'
        f'  echo "$*" >> {log}\n'
        '  case "$*" in *" -e "*) echo "BuildBackendWarning: Editable installation." >&2\n'
        f"    [ -e {tmp_path}/fail ] && "
        '{ echo "ERROR: no matching distribution" >&2; exit 1; };;\n'
        "  esac\n"
        "  exit 0\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    _, ok = dev_sh(root, venv, "test", "--version")
    assert ok.returncode == 0, ok.stderr
    assert "BuildBackendWarning" not in ok.stdout + ok.stderr
    assert "BuildBackendWarning" in (venv / "pip-install.log").read_text()

    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "\n# new\n")
    (tmp_path / "fail").touch()
    _, failed = dev_sh(root, venv, "test", "--version")
    assert failed.returncode == 1
    assert "ERROR: no matching distribution" in failed.stderr
    assert "pip install failed" in failed.stderr
