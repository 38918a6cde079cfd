"""Configuration: file → environment → flags, errors that name file, key and value, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.config import MASK, AgentConfig, load
from agent.errors import ConfigError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PUSHAGENT_HOME": str(tmp_path / "home")}


def write_config(env: dict[str, str], text: str) -> Path:
    path = Path(env["PUSHAGENT_HOME"]) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(env: dict[str, str]) -> None:
    cfg = load(env=env)
    assert cfg == AgentConfig(paths=cfg.paths)
    assert (cfg.notifier, cfg.mqtt.qos, cfg.store.max_messages) == ("desktop", 1, 100_000)


def test_layers_file_then_environment_then_flags(env: dict[str, str]) -> None:
    write_config(
        env,
        'servers = ["mqtt://file:1883"]\ntopics = ["a", "b"]\nnotifier = "log"\n'
        "[mqtt]\nkeepalive = 30\nqos = 1\n",
    )
    from_file = load(env=env)
    assert from_file.servers == ("mqtt://file:1883",)
    assert (from_file.notifier, from_file.mqtt.keepalive) == ("log", 30)

    env2 = {**env, "PUSHAGENT_SERVER": "mqtt://env:1883", "PUSHAGENT_TOPICS": " x, y ,"}
    from_env = load(env=env2)
    assert from_env.servers == ("mqtt://env:1883",)
    assert from_env.topics == ("x", "y")
    assert from_env.notifier == "log"  # untouched keys keep the file's value

    flagged = load({"servers": ["ws://flag"], "mqtt.qos": 0, "notifier": None}, env=env2)
    assert flagged.servers == ("ws://flag",)
    assert (flagged.mqtt.qos, flagged.mqtt.keepalive) == (0, 30)  # tables merge key by key
    assert flagged.topics == ("x", "y")
    assert flagged.notifier == "log"  # a flag left at None does not override


def test_secrets_come_from_the_environment_and_are_masked(env: dict[str, str]) -> None:
    cfg = load(env={**env, "PUSHAGENT_PASSWORD": "hunter2", "PUSHAGENT_TOKEN": "tk_1"})
    assert (cfg.auth.password, cfg.auth.token) == ("hunter2", "tk_1")
    assert "hunter2" not in repr(cfg) and "tk_1" not in repr(cfg)
    shown = config.shown(cfg)
    assert shown["auth"] == {"password": MASK, "token": MASK}
    assert "hunter2" not in str(shown)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('notifer = "log"', "unknown key 'notifer' (did you mean 'notifier'?)"),
        (
            'notifier = "popup"',
            "'notifier' must be one of desktop, command, log, none, not 'popup'",
        ),
        ('[mqtt]\nkeepalive = "60"', "'mqtt.keepalive' must be a whole number, not '60'"),
        ("[mqtt]\nkeepalive = 1", "'mqtt.keepalive' must be 5-65535 seconds, not 1"),
        ('[mqtt]\nprotocol = "4"', '\'mqtt.protocol\' must be "auto", "5" or "3.1.1", not \'4\''),
        ("[mqtt]\nqos = true", "'mqtt.qos' must be a whole number, not True"),
        ("mqtt = 5", "'mqtt' must be a table, not 5"),
        ("servers = 5", "'servers' must be a list, not 5"),
        ("topics = [1]", "'topics[0]' must be a string, not 1"),
        ('quiet_hours = "22-7"', "'quiet_hours' must look like \"22:00-07:00\", not '22-7'"),
        ('quiet_hours_strict = "yes"', "'quiet_hours_strict' must be true or false, not 'yes'"),
        ("max_message_size = 10", "'max_message_size' must be 64 bytes to 64 MiB, not 10"),
        ("[store]\nmax_messages = 0", "'store.max_messages' must be >= 1, not 0"),
        ("[store]\nmax_age_days = -1", "'store.max_age_days' must be > 0, not -1.0"),
        ("[[rules]]\ntopik = 'a'", "unknown key 'rules[0].topik' (did you mean 'rules[0].topic'?)"),
        ("[[rules]]\nmin_priority = 9", "'rules.min_priority' must be 1-5, not 9"),
        ("[receipts]\ntopic_prefix = 'a/#'", "'receipts.topic_prefix' must be a topic"),
        ("[tls]\nca_file = 5", "'tls.ca_file' must be a file path, not 5"),
        ("servers = [", "not valid TOML"),
    ],
)
def test_file_errors_name_file_key_and_value(env: dict[str, str], text: str, expected: str) -> None:
    path = write_config(env, text + "\n")
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert info.value.exit_code == 2


def test_environment_and_flag_errors_say_where(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^environment: 'log_level' .* not 'loud'$"):
        load(env={**env, "PUSHAGENT_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match=r"^command line: 'mqtt.keepalive' .* not 1$"):
        load({"mqtt.keepalive": 1}, env=env)
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'colour'"):
        load({"colour": "red"}, env=env)


def test_pushagent_home_holds_config_data_and_cache(tmp_path: Path) -> None:
    cfg = load(env={"PUSHAGENT_HOME": str(tmp_path / "h")})
    assert cfg.paths.config_file == tmp_path / "h" / "config.toml"
    assert cfg.paths.db == tmp_path / "h" / "data" / "pushagent.db"
    assert cfg.paths.cache_dir == tmp_path / "h" / "cache"


def test_pushagent_config_names_the_file_and_it_must_exist(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    other = tmp_path / "elsewhere.toml"
    with pytest.raises(ConfigError, match=f"^{other}: config file not found$"):
        load(env={"PUSHAGENT_HOME": home, "PUSHAGENT_CONFIG": str(other)})
    other.write_text('notifier = "none"\n')
    cfg = load(env={"PUSHAGENT_HOME": home, "PUSHAGENT_CONFIG": str(other)})
    assert (cfg.notifier, cfg.paths.config_file) == ("none", other)
    assert cfg.paths.data_dir == tmp_path / "h" / "data"  # data stays under the home
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text('notifier = "log"\n')
    cfg = load(config_file=flag_file, env={"PUSHAGENT_HOME": home, "PUSHAGENT_CONFIG": str(other)})
    assert (cfg.notifier, cfg.paths.config_file) == ("log", flag_file)


def test_without_home_the_platform_user_dirs_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # platformdirs reads XDG_* itself on Linux; point them at the test's folder.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    paths = config.paths(env={})
    assert paths.config_file == tmp_path / "xc" / "pushagent" / "config.toml"
    assert paths.data_dir == tmp_path / "xd" / "pushagent"


def test_config_paths_expand_the_home_folder(env: dict[str, str]) -> None:
    write_config(env, '[tls]\nca_file = "~/ca.pem"\n')
    assert load(env=env).tls.ca_file == Path("~/ca.pem").expanduser()


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=f"^{folder}: cannot read"):
        load(config_file=folder, env={"PUSHAGENT_HOME": str(tmp_path)})


THREE_AND_MORE = """\
notifer = "log"
log_level = "loud"
quiet_hours = "late"
topics = [1, "ok", 2]
[mqtt]
keepalive = "x"
qos = 3
[store]
max_mesages = 5
max_age_days = -1
[[rules]]
min_priority = 9
[[rules]]
topik = "a"
"""


def test_every_error_in_the_file_is_reported_at_once(env: dict[str, str]) -> None:
    path = write_config(env, THREE_AND_MORE)
    with pytest.raises(ConfigError) as info:
        load(env=env)
    lines = str(info.value).splitlines()
    assert sorted(lines) == sorted(
        f"{path}: {e}"
        for e in (
            "unknown key 'notifer' (did you mean 'notifier'?)",
            "'log_level' must be debug, info, warning or error, not 'loud'",
            "'quiet_hours' must look like \"22:00-07:00\", not 'late'",
            "'topics[0]' must be a string, not 1",
            "'topics[2]' must be a string, not 2",
            "'mqtt.keepalive' must be a whole number, not 'x'",
            "'mqtt.qos' must be 0 or 1, not 3",
            "unknown key 'store.max_mesages' (did you mean 'store.max_messages'?)",
            "'store.max_age_days' must be > 0, not -1.0",
            "'rules.min_priority' must be 1-5, not 9",
            "unknown key 'rules[1].topik' (did you mean 'rules[1].topic'?)",
        )
    ), str(info.value)
    assert info.value.exit_code == 2


def test_the_cli_prints_every_config_error_one_per_line_and_exits_2(env: dict[str, str]) -> None:
    from tests.helpers import pushagent

    path = write_config(env, THREE_AND_MORE)
    result = pushagent("config", "show", home=Path(env["PUSHAGENT_HOME"]))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 11, result.stderr.decode()
    assert all(line.startswith(f"pushagent: {path}: ") for line in lines), lines
    assert result.stdout == b""


def test_a_check_across_fields_is_not_reported_against_each_alone(tmp_path: Path) -> None:
    """tls_cert and tls_key together are right; only the wrong keepalive is reported."""
    from edge_relay import config as relay_config

    path = tmp_path / "relay.toml"
    path.write_text('tls_cert = "c.pem"\ntls_key = "k.pem"\nkeepalive = 0.0\nprune_interval = 0\n')
    with pytest.raises(ConfigError) as info:
        relay_config.load({}, config_file=path, env={})
    assert str(info.value).splitlines() == [
        f"{path}: 'keepalive' must be 0.05-3600 seconds, not 0.0",
        f"{path}: 'prune_interval' must be > 0",
    ]
    path.write_text('tls_cert = "c.pem"\nkeepalive = 0.0\n')
    with pytest.raises(ConfigError) as info:
        relay_config.load({}, config_file=path, env={})
    assert str(info.value).splitlines() == [
        f"{path}: 'tls_cert' and 'tls_key' must be given together",
        f"{path}: 'keepalive' must be 0.05-3600 seconds, not 0.0",
    ]
