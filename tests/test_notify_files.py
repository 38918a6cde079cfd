"""agent.notify.files without a desktop: which buttons a type gets, and Save's naming (never
over an existing file, a hostile name cleaned)."""

from __future__ import annotations

from pathlib import Path

from agent.config import downloads_dir
from agent.notify.files import candidates, file_buttons, save_copy


def test_buttons_by_sniffed_type() -> None:
    assert file_buttons("image/png") == ()
    assert file_buttons("audio/x-wav") == ("Play",) == file_buttons("video/mp4")
    assert file_buttons("application/pdf") == ("Open", "Save")
    assert file_buttons("text/plain; charset=utf-8") == ("Open", "Save")


def test_candidates_number_before_the_extension() -> None:
    assert candidates("a.tar.gz")[:3] == ["a.tar.gz", "a.tar (1).gz", "a.tar (2).gz"]
    assert candidates("README")[:2] == ["README", "README (1)"]
    assert candidates(".profile")[:2] == [".profile", ".profile (1)"]


def test_save_never_overwrites_and_cleans_the_name(tmp_path: Path) -> None:
    src = tmp_path / "cached.bin"
    src.write_bytes(b"new")
    out = tmp_path / "dl"
    first = save_copy(src, out, "x.bin")
    second = save_copy(src, out, "x.bin")
    assert (first.name, second.name) == ("x.bin", "x (1).bin")
    hostile = save_copy(src, out, "../../etc/CON.txt")
    assert hostile.parent == out and hostile.name == "_CON.txt"
    assert save_copy(src, out, "").name == "cached.bin"
    assert all(p.read_bytes() == b"new" and p.stat().st_mode & 0o777 == 0o600
               for p in out.iterdir())  # fmt: skip


def test_downloads_dir_is_xdg_download_dir_else_home_downloads(tmp_path: Path) -> None:
    assert downloads_dir({"XDG_DOWNLOAD_DIR": str(tmp_path / "x")}) == tmp_path / "x"
    assert downloads_dir({"HOME": str(tmp_path)}) == tmp_path / "Downloads"
