"""One refusal of files others can read (agent.private.read_private): the password file, the
secrets file and the E2E key file all go through it, with the same words and the chmod that
fixes it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.private import read_private


class _Mine(ConfigError):
    pass


def _file(tmp_path: Path, mode: int, text: str = "s3cret\n") -> Path:
    path = tmp_path / "secret"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_a_0600_file_is_read(tmp_path: Path) -> None:
    assert read_private(_file(tmp_path, 0o600), "the thing") == "s3cret\n"
    assert read_private(_file(tmp_path, 0o400), "the thing") == "s3cret\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_group_or_other_bits_are_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _file(tmp_path, mode)
    with pytest.raises(_Mine) as err:
        read_private(path, f"the thing {path}", error=_Mine)
    assert str(err.value) == (
        f"the thing {path}: must be readable by you only (mode 0600), not {mode:04o}; "
        f"run: chmod 600 {path}"
    )


def test_missing_is_none_when_allowed_else_the_error(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    assert read_private(path, "x", missing_ok=True) is None
    with pytest.raises(ConfigError, match=r"^x: No such file or directory$"):
        read_private(path, "x")


def test_not_text_is_the_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfe\x00")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"^x: cannot read: "):
        read_private(path, "x")


def test_a_folder_is_the_error_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=r"^x: "):
        read_private(folder, "x")


def test_the_mode_check_is_written_once() -> None:
    root = Path(__file__).resolve().parent.parent
    users = [
        p.relative_to(root).as_posix()
        for folder in ("agent", "edge_relay")
        for p in (root / folder).rglob("*.py")
        if re.search(r"S_IRWXG|S_IRWXO", p.read_text(encoding="utf-8"))
    ]
    assert users == ["agent/private.py"]
