"""``pushagent key ...`` as real processes: the keyring, the 0600 fallback file, rotation,
passphrases, and keys never in a log line.

The keyring is tests.file_keyring (a real keyring backend loaded by keyring's own machinery:
no OS keyring daemon runs here); "no keyring" is keyring's own null backend, the one a
headless Pi without a Secret Service gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from agent.e2e import keys
from tests.helpers import pushagent

KEYRING = "tests.file_keyring.FileKeyring"
NULL = "keyring.backends.null.Keyring"


def env(tmp_path: Path, backend: str = KEYRING) -> dict[str, str]:
    return {"PYTHON_KEYRING_BACKEND": backend, "EDGEPUSH_TEST_KEYRING": str(tmp_path / "kr.json")}


def run(
    home: Path, e: dict[str, str], *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    p = pushagent("-vv", "key", *args, home=home, env=e, input=stdin)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_new_export_list_in_the_keyring(tmp_path: Path) -> None:
    home, e = tmp_path / "h", env(tmp_path)
    rc, _, err = run(home, e, "new", "alerts")
    assert rc == 0, err
    rc, out, err = run(home, e, "export", "alerts")
    assert rc == 0, err
    key = keys.parse(out)
    kid = keys.kid_of(key)
    rc, out, _ = run(home, e, "list")
    assert out.split() == ["alerts", kid, "keyring", "current"]
    k = out_k = keys.export(key)[4:]
    assert out_k in (tmp_path / "kr.json").read_text()  # it went to the keyring ...
    assert not (home / "e2e-keys.json").exists()  # ... not to a file
    index = (home / "e2e-index.json").read_text()
    assert kid in index and k not in index  # names only
    assert stat.S_IMODE((home / "e2e-index.json").stat().st_mode) == 0o600


def test_no_keyring_falls_back_to_a_0600_file_with_one_warning(tmp_path: Path) -> None:
    home, e = tmp_path / "h", env(tmp_path, NULL)
    rc, _, err = run(home, e, "new", "alerts")
    assert rc == 0, err
    assert err.count("E2E keys are kept in") == 1 and "no OS keyring is usable" in err
    path = home / "e2e-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rc, out, _ = run(home, e, "export", "alerts")
    assert rc == 0 and keys.export(keys.parse(out))[4:] in path.read_text()
    rc, out, _ = run(home, e, "list")
    assert out.split()[2] == "file"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    home, e = tmp_path / "h", env(tmp_path, NULL)
    assert run(home, e, "new", "alerts")[0] == 0
    os.chmod(home / "e2e-keys.json", 0o644)
    rc, out, err = run(home, e, "export", "alerts")
    assert rc == 2 and out == ""
    lines = [x for x in err.splitlines() if x.startswith("pushagent:")]
    assert lines == [
        f"pushagent: E2E key file {home / 'e2e-keys.json'}: must be readable by you only "
        f"(mode 0600), not 0644; run: chmod 600 {home / 'e2e-keys.json'}"
    ]
    assert "Traceback" not in err


def test_import_rotation_and_export_by_kid(tmp_path: Path) -> None:
    a, b, e = tmp_path / "a", tmp_path / "b", env(tmp_path)
    run(a, e, "new", "alerts")
    first = run(a, e, "export", "alerts")[1].strip()
    rc, _, err = run(b, e, "import", "alerts", first)
    assert rc == 0, err
    assert run(b, e, "export", "alerts")[1].strip() == first
    rc, _, err = run(b, e, "import", "alerts", first)  # the same key again: nothing changes
    assert rc == 0 and "replaces" not in err, err
    rc, _, err = run(b, e, "new", "alerts")  # rotation: a second key, now the current one
    second = run(b, e, "export", "alerts")[1].strip()
    # what the new user did not learn from the old line: which key send --encrypt now uses
    assert f"replaces {keys.kid_of(keys.parse(first))} as the current key" in err, err
    assert second != first
    old, new = keys.kid_of(keys.parse(first)), keys.kid_of(keys.parse(second))
    listed = [line.split("\t") for line in run(b, e, "list")[1].splitlines()]
    assert listed == [["alerts", new, "keyring", "current"], ["alerts", old, "keyring"]]
    assert run(b, e, "export", "alerts", "--kid", old)[1].strip() == first
    rc, _, err = run(b, e, "import", "alerts", first)  # again: harmless, becomes current
    assert rc == 0 and run(b, e, "list")[1].split()[1] == old
    assert f"replaces {new} as the current key" in err, err


def test_passphrase_from_stdin_is_pbkdf2_sha256_with_the_topic_salt(tmp_path: Path) -> None:
    home, e = tmp_path / "h", env(tmp_path)
    rc, _, err = run(home, e, "new", "alerts", "--passphrase", stdin=b"correct horse\n")
    assert rc == 0, err
    want = hashlib.pbkdf2_hmac("sha256", b"correct horse", b"edgepush-e2e:alerts", 600_000, 32)
    assert keys.parse(run(home, e, "export", "alerts")[1]) == want
    assert "correct horse" not in err


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    home, e = tmp_path / "h", env(tmp_path)
    for args, want in [
        (("import", "alerts", "ek1.nope"), "pushagent: STRING: not a key"),
        (("export", "alerts"), "pushagent: alerts: no key here"),
        (("new", "alerts", "--passphrase"), "pushagent: --passphrase: the passphrase is empty"),
        (("new", ""), "pushagent: TOPIC: must not be empty"),
    ]:
        rc, _, err = run(home, e, *args, stdin=b"\n")
        assert rc == 2 and want in err and "Traceback" not in err, (args, err)


def test_export_hints_say_what_to_do_on_a_second_device(tmp_path: Path) -> None:
    """A device that was given the key imports it (it does not make a new one), and an
    unknown --kid on a topic with keys points at ``key list``, not at ``key new``."""
    home, e = tmp_path / "h", env(tmp_path)
    rc, _, err = run(home, e, "export", "alerts")
    assert rc == 2 and "pushagent key import alerts STRING" in err, err
    rc, _, err = run(home, e, "list")
    assert rc == 0 and "pushagent key import TOPIC STRING" in err, err
    run(home, e, "new", "alerts")
    rc, _, err = run(home, e, "export", "alerts", "--kid", "bogus")
    assert rc == 2 and "no key 'bogus'" in err and "pushagent key list" in err, err
    assert "key new" not in err, err


def test_keys_never_reach_a_log_line(tmp_path: Path) -> None:
    """-vv (DEBUG, keyring's own loggers too): the key is printed by export only, to stdout."""
    home, e = tmp_path / "h", env(tmp_path)
    errs = [run(home, e, "new", "alerts")[2]]
    _, out, err = run(home, e, "export", "alerts")
    errs.append(err)
    k = out.strip()[4:]
    for args in (("import", "alerts", out.strip()), ("list",), ("new", "alerts")):
        _, stdout, err = run(tmp_path / "other", e, *args)
        errs.append(err + stdout)
    assert all(k not in text for text in errs)
    assert json.loads((home / "e2e-index.json").read_text())["topics"]["alerts"]["kids"]
