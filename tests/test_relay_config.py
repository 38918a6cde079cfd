"""The relay's config file takes sizes and durations as ntfy's server.yml writes them.

ntfy reads its sizes with ``util.ParseSize`` (digits and one optional unit letter ``k``,
``m``, ``g`` or ``b``, any case, units of 1024: ``15M``, ``1G``, ``500k``) and its durations
with ``util.ParseDuration`` (Go's ``time.ParseDuration`` — ``3h``, ``45s``, ``1h30m``,
``1.5h`` — and ``<n> <unit>`` with d/day/days, h/hour(s), m/min(s)/minute(s), s/sec(s)/
second(s): ``2d``, ``2 days``). The relay reads the same text (and, as the agent does,
``15MB``/``15 MB``) where it holds a size or a duration, and whole numbers as before; a bad
value is a ConfigError naming the file, the key and the value.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from edge_relay.config import RelayConfig, load
from tests.helpers import child_env
from tests.relay import FAST, Relay

K, M, G = 1 << 10, 1 << 20, 1 << 30


def relay_config(tmp_path: Path, text: str) -> RelayConfig:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return load({}, config_file=path, env={})


@pytest.mark.parametrize(
    ("given", "size"),
    [('"15M"', 15 * M), ('"15m"', 15 * M), ('"1G"', G), ('"1g"', G), ('"512k"', 512 * K),
     ('"512K"', 512 * K), ('"4096b"', 4096), ('"4096B"', 4096), ('"4096"', 4096),
     ('"15MB"', 15 * M), ('"15 MB"', 15 * M), ('"15mb"', 15 * M), ("15728640", 15 * M),
     ("0", 0)],
)  # fmt: skip
def test_attachment_sizes_in_ntfys_forms(tmp_path: Path, given: str, size: int) -> None:
    cfg = relay_config(tmp_path, f"[attachments]\nfile_size_limit = {given}\n"
                                 f"total_size_limit = {given}\ndaily_bandwidth_limit = {given}\n"
                                 f"keep_free = {given}\n")  # fmt: skip
    a = cfg.attachments
    assert (a.file_size_limit, a.total_size_limit, a.daily_bandwidth_limit, a.keep_free) == (
        size, size, size, size)  # fmt: skip


@pytest.mark.parametrize(
    ("given", "seconds"),
    [('"3h"', 10800), ('"30m"', 1800), ('"90s"', 90), ('"1h30m"', 5400), ('"1.5h"', 5400),
     ('"2d"', 172800), ('"2 days"', 172800), ('"1 hour"', 3600), ('"45 mins"', 2700),
     ('"10800s"', 10800), ('"10800"', 10800), ("10800", 10800)],
)  # fmt: skip
def test_attachment_expiry_in_ntfys_forms(tmp_path: Path, given: str, seconds: int) -> None:
    cfg = relay_config(tmp_path, f"[attachments]\nexpiry = {given}\n")
    assert cfg.attachments.expiry == seconds and type(cfg.attachments.expiry) is int


def test_every_size_and_duration_key_takes_ntfys_forms(tmp_path: Path) -> None:
    """The keys ntfy's server.yml has as text (``keepalive-interval: "45s"``,
    ``manager-interval: "1m"``, ``cache-duration: "12h"``, ``message-delay-limit: "3d"``,
    ``message-size-limit: "4K"``), and the relay's own timeouts and inline limit."""
    cfg = relay_config(tmp_path, """
keepalive = "45s"
prune_interval = "1m"
[limits]
message_size = "4K"
retention_age = "12h"
max_delay = "3d"
header_timeout = "10s"
body_timeout = "1m30s"
idle_timeout = "500ms"
[attachments]
upstream_inline_limit = "128k"
""")  # fmt: skip
    assert (cfg.keepalive, cfg.prune_interval) == (45.0, 60.0)
    lim = cfg.limits
    assert (lim.message_size, lim.retention_age, lim.max_delay) == (4096, 43200, 259200)
    assert (lim.header_timeout, lim.body_timeout, lim.idle_timeout) == (10.0, 90.0, 0.5)
    assert cfg.attachments.upstream_inline_limit == 128 * K
    assert RelayConfig().attachments.expiry == relay_config(tmp_path, "").attachments.expiry


@pytest.mark.parametrize(
    ("line", "expected"),
    [('file_size_limit = "15X"', "'attachments.file_size_limit' must be a size such as"),
     ('file_size_limit = "-1M"', "'attachments.file_size_limit' must be a size such as"),
     ("file_size_limit = 1.5", "'attachments.file_size_limit' must be a size such as"),
     ('expiry = "3 hours later"', "'attachments.expiry' must be a duration"),
     ('expiry = "-3h"', "'attachments.expiry' must be a duration"),
     ('expiry = "1.5s"', "'attachments.expiry' must be a duration in whole seconds"),
     ("expiry = 1.5", "'attachments.expiry' must be a duration in whole seconds"),
     ("expiry = true", "'attachments.expiry' must be a duration in whole seconds"),
     ('expiry = "400d"', "'attachments.expiry' must be 1 s to 366 days, not 34560000")],
)  # fmt: skip
def test_a_bad_value_names_the_file_key_and_value(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        relay_config(tmp_path, f"[attachments]\n{line}\n")
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'relay.toml'}: ") and expected in text, text
    value = line.split(" = ", 1)[1].strip('"')
    assert value.lower() in text.lower() or "34560000" in text, text


def test_a_bad_duration_at_the_top_level_and_in_limits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        relay_config(tmp_path, 'keepalive = "soon"\n[limits]\nbody_timeout = "30 sekunden"\n')
    lines = str(err.value).splitlines()
    assert len(lines) == 2, lines
    assert "'keepalive' must be a duration such as" in lines[0] and "'soon'" in lines[0]
    assert "'limits.body_timeout' must be a duration" in lines[1] and "30 sekunden" in lines[1]


def test_edge_relay_serve_exits_2_naming_the_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[attachments]\nfile_size_limit = "15 megs"\n')
    done = subprocess.run(
        [sys.executable, "-m", "edge_relay", "serve", "--config", str(path), "--data-dir",
         str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--no-advertise"],
        env=child_env(), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert f"{path}: 'attachments.file_size_limit'" in done.stderr
    assert "'15 megs'" in done.stderr, done.stderr


def test_a_relay_configured_as_ntfy_is_enforces_those_limits(tmp_path: Path) -> None:
    """A real relay with ``file_size_limit = "10k"`` and ``expiry = "2h"``."""
    r = Relay(tmp_path, config=FAST + '[attachments]\nfile_size_limit = "10k"\nexpiry = "2h"\n')
    r.start()
    try:
        status, body = r.request("PUT", "/cfg", b"\x00" * (10 * K + 1), {"Filename": "a.bin"})
        assert (status, body["code"]) == (413, 41301), body
        status, msg = r.request("PUT", "/cfg", b"\x00" * (10 * K), {"Filename": "a.bin"})
        assert status == 200, msg
        att: dict[str, Any] = msg["attachment"]
        assert att["size"] == 10 * K
        assert msg["time"] + 7200 - 2 <= att["expires"] <= msg["time"] + 7200 + 2
    finally:
        assert r.stop() == 0, r.log.read_text()
