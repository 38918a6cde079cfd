"""Every ``pushagent`` / ``edge-relay`` command the docs show parses with today's CLI.

The commands are taken from README.md and docs/*.md — fenced and indented code blocks, and
inline code that starts with a program name — and each is parsed by the program's own
argparse parser (``agent.cli`` / ``edge_relay.cli``), so a doc that drifts from the code
(``pushagent tray --server …`` once "worked" only on paper) fails here with its file and line.
Placeholders (URL, NAME, ``…``) are plain strings to argparse; ``[--opt]`` marks an optional
part and is parsed with and without it; ``a|b`` alternatives are each parsed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import cli as agent_cli
from edge_relay import cli as relay_cli
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("pushagent", "edge-relay")
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "$(", "`"}


@dataclass(frozen=True)
class Shown:
    where: str  # file:line
    argv: tuple[str, ...]  # program name first

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line in a fenced or indented code block, and of each
    inline code span that starts with one of the programs."""
    fenced = False
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        k = n
        while line.endswith("\\") and k < len(lines):  # a command continued on the next line
            line, lines[k] = line[:-1] + lines[k], ""
            k += 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or (line.startswith("    ") and not line.lstrip().startswith(("-", "*", "|"))):
            yield n, line
            continue
        for span in re.findall(r"`([^`]+)`", line):
            words = span.split()
            # `pushagent login` names a command in prose; `edge-relay ready on port N` quotes
            # its output: only spans whose second word is a command or an option are commands
            if len(words) > 1 and words[0] in PROGRAMS and _is_command_word(words[0], words[1]):
                yield n, span


def _is_command_word(program: str, word: str) -> bool:
    return word.startswith("-") or word in (
        (*agent_cli.COMMANDS, "resume", "logout") if program == "pushagent" else ("serve", "token")
    )


def commands(line: str) -> Iterator[list[str]]:
    """The argvs in one shell line that run a program (env assignments, sudo and paths
    before the program name are skipped; comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return
    if any(c in "─►│┌└├▶→" for c in line):  # a diagram in a code block, not a shell line
        return
    current: list[str] = []
    for token in [*tokens, ";"]:
        if token in SEPARATORS or set(token) <= set("|&;()<>"):
            yield from _program_argv(current)
            current = []
        else:
            current.append(token)


def _program_argv(words: list[str]) -> Iterator[list[str]]:
    for i, word in enumerate(words):
        if re.match(r"^[A-Za-z_]\w*=", word) or word in ("sudo", "env", "exec"):
            continue
        name = word.rsplit("/", 1)[-1]
        if name in PROGRAMS:
            yield [name, *words[i + 1 :]]
        return


def shown_commands() -> list[Shown]:
    found = []
    for doc in DOCS:
        for n, line in code_lines(doc.read_text()):
            for argv in commands(line):
                if len(argv) > 1:  # a bare program name in prose is not a command
                    found.append(Shown(f"{doc.relative_to(ROOT)}:{n}", tuple(argv)))
    return found


def variants(args: list[str]) -> Iterator[list[str]]:
    """``[--opt VALUE]`` with and without the option; ``a|b`` as a, then as b; a synopsis's
    ``...`` (repeatable) dropped. A bare ``pushagent login`` (a command named in prose) is
    checked with ``--help``: the command must exist."""
    if len(args) == 1 and not args[0].startswith("-"):
        yield [args[0], "--help"]
        return
    for i, word in enumerate(args):
        if word.startswith("["):
            end = next((j for j in range(i, len(args)) if args[j].rstrip(".").endswith("]")), i)
            inner = " ".join(args[i : end + 1]).rstrip(".")[1:-1].split()
            yield from variants(args[:i] + args[end + 1 :])
            yield from variants(args[:i] + inner + args[end + 1 :])
            return
        if "|" in word and not word.startswith(("'", '"')) and "://" not in word:
            for alt in word.split("|"):
                yield from variants([*args[:i], alt, *args[i + 1 :]])
            return
    yield args


def parse(program: str, args: list[str]) -> str | None:
    """None if ``program`` parses ``args``, else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build = agent_cli.build_parser if program == "pushagent" else relay_cli.build_parser
            agent_cli.parse(build(), args)  # what both programs' main() parse with
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1]
    return None


SHOWN = shown_commands()


def test_the_docs_show_commands_of_both_programs() -> None:
    programs = {s.argv[0] for s in SHOWN}
    assert programs == set(PROGRAMS), programs
    assert len(SHOWN) >= 40, [str(s) for s in SHOWN]


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_each_command_the_docs_show_parses(shown: Shown) -> None:
    program, *args = shown.argv
    for argv in variants(args):
        problem = parse(program, argv)
        assert problem is None, f"{shown}: {problem}"


def test_a_command_that_does_not_parse_is_caught() -> None:
    (tray,) = commands("pushagent tray --server mqtt://broker.lan:1883 --sever x  # x")
    assert tray == ["pushagent", "tray", "--server", "mqtt://broker.lan:1883", "--sever", "x"]
    assert "unrecognized arguments" in (parse("pushagent", tray[1:]) or "")
    assert parse("pushagent", ["tray", "--server", "mqtt://b", "--topic", "home/#"]) is None
    (demo,) = commands("PUSHAGENT_HOME=/x/.demo/agent A=1 /x/.venv/bin/pushagent status")
    assert demo == ["pushagent", "status"]
    assert parse("pushagent", ["history", "--since", "2h"]) is None
    assert isinstance(agent_cli.build_parser(), argparse.ArgumentParser)


def test_the_python_and_files_the_docs_run_are_in_a_checkout() -> None:
    """Commands run "from the checkout root" use the checkout's ``.venv`` (what dev.sh makes)
    and name files that exist; a path from the machine the docs were written on does not."""
    wrong = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for python in re.findall(r"(\S*bin/python3?)\b", line):
                if python.strip("`(") != ".venv/bin/python":
                    wrong.append(f"{doc.relative_to(ROOT)}:{n}: {python} (use .venv/bin/python)")
            for path in re.findall(r"\b((?:bench|tests|packaging)/[\w./-]+\.(?:py|sh))\b", line):
                if not (ROOT / path).exists():
                    wrong.append(f"{doc.relative_to(ROOT)}:{n}: {path} does not exist")
    assert wrong == []


def toml_blocks() -> list[tuple[str, str]]:
    """(file:line, text) of each ```toml block in the docs."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if line.strip() == "```toml":
                end = next(k for k in range(n, len(lines)) if lines[k].strip() == "```")
                found.append((f"{doc.relative_to(ROOT)}:{n}", "\n".join(lines[n:end]) + "\n"))
    return found


@pytest.mark.parametrize(("where", "text"), toml_blocks(), ids=[w for w, _ in toml_blocks()])
def test_each_config_the_docs_show_is_accepted(where: str, text: str, tmp_path: Path) -> None:
    """An agent config (or, failing that, a relay config) the docs show loads without error."""
    from agent import config as agent_config
    from agent.errors import ConfigError
    from edge_relay import config as relay_config

    path = tmp_path / "config.toml"
    path.write_text(text)
    try:
        agent_config.load(config_file=path, env={"PUSHAGENT_HOME": str(tmp_path)})
    except ConfigError as agent_error:
        try:
            relay_config.load({}, config_file=path, env={})
        except ConfigError as relay_error:
            pytest.fail(f"{where}: as an agent config: {agent_error}; as a relay's: {relay_error}")


def test_every_install_command_the_docs_show_names_an_extra_that_exists() -> None:
    """``pipx install .`` (no tray, no notifications) and ``pipx install 'edgepush[desktop]'``
    once disagreed across the docs: each ``pip``/``pipx install`` of edgepush names the
    package (or ``.``) with an extra pyproject.toml defines."""
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])  # fmt: skip
    wrong, seen = [], 0
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for spec in re.findall(r"pipx? install (?:-e )?[`'\"]?([\w.]+(?:\[[\w,-]+\])?)", line):
                if not spec.startswith(("edgepush", ".")):
                    continue  # another package
                seen += 1
                found = re.fullmatch(r"(?:edgepush|\.)\[([\w,-]+)\]", spec)
                if found is None or not set(found.group(1).split(",")) <= extras:
                    wrong.append(f"{doc.relative_to(ROOT)}:{n}: {spec}")
    assert seen >= 5 and wrong == []
