"""Go ``text/template`` syntax (the subset ntfy's templates use) → a tree, or NtfyError.

Why our own: no maintained Python package renders Go's template syntax (PyPI's
``go-template`` 0.0.3, 2019, is cgo bindings), and ntfy's clients write Go templates.

The lexer follows Go's ``text/template/parse/lex.go`` rules: ``{{- `` and `` -}}`` (the dash
must touch a space) trim the whitespace beside the action, ``{{/* */}}`` is a comment, and
spaces separate operands (``.a.b`` is one chain, ``.a .b`` two arguments). The parser follows
``parse.go``: ``if``/``with``/``range`` with ``else``, ``else if``, ``else with``; ``$v :=`` /
``$i, $v :=`` / ``$v =``; pipelines; parenthesised pipelines with field chains; ``break`` and
``continue`` only inside ``range``; undefined functions and variables are parse errors.

Errors: 40043 (could not parse) naming the construct; 40044 for ``template``, ``define``,
``block`` and ``call`` (ntfy refuses them). Nesting is bounded (``MAX_DEPTH``) so a hostile
template cannot exhaust the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.ntfyproto.errors import NtfyError

MAX_DEPTH = 40  # blocks and parentheses inside each other
MAX_TEMPLATE = 32 * 1024  # ntfy's templateMaxTemplateBytes
_SPACE = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "template", "define",
             "block", "nil", "true", "false"}  # fmt: skip
_DISALLOWED = {"template", "define", "block", "call"}
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
)  # fmt: skip
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_CHAR = re.compile(r"'(?:[^'\\\n]|\\.)+'")
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\"}  # fmt: skip


def fail(detail: str) -> NtfyError:
    return NtfyError(40043, detail, field="template")


# ---- tree -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    names: tuple[str, ...]  # .a.b → ("a", "b"); the dot itself is ()


@dataclass(frozen=True, slots=True)
class Var:
    name: str  # "$" or "$x"
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ident:
    name: str  # a function


@dataclass(frozen=True, slots=True)
class Const:
    value: Any  # str, int, float, bool or None (nil)


@dataclass(frozen=True, slots=True)
class Chain:
    node: Pipe
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pipe:
    cmds: tuple[tuple[Any, ...], ...]  # each command: its operands
    decls: tuple[str, ...] = ()
    assign: bool = False  # "=" rather than ":="


@dataclass(frozen=True, slots=True)
class Action:
    pipe: Pipe


@dataclass(frozen=True, slots=True)
class Block:
    kind: str  # if, with, range
    pipe: Pipe
    body: list[Any] = field(default_factory=list)
    orelse: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Jump:
    kind: str  # break, continue


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # field var ident word num str pipe ( ) , := = dot
    value: Any
    space: bool  # a space came before it


# ---- lexer ------------------------------------------------------------------------------


def lex(src: str) -> list[str | list[Tok]]:
    """The template as text pieces and actions (each a list of tokens), trims applied."""
    if len(src.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE:
        raise fail(f"the template is above {MAX_TEMPLATE} bytes")
    out: list[str | list[Tok]] = []
    i, trim_next = 0, False
    while i < len(src):
        j = src.find("{{", i)
        text = src[i:] if j < 0 else src[i:j]
        if trim_next:
            text = text.lstrip(_SPACE)
        if j < 0:
            out.append(text)
            break
        i = j + 2
        if src.startswith("-", i) and i + 1 < len(src) and src[i + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            i += 2
        out.append(text)
        toks, i, trim_next = _action(src, i)
        if toks is not None:
            out.append(toks)
    return [x for x in out if x != ""]


def _close(src: str, i: int) -> tuple[bool, int] | None:
    """At a closing delimiter: (trim, index after it)."""
    if src.startswith("}}", i):
        return False, i + 2
    if i < len(src) and src[i] in _SPACE and src.startswith("-}}", i + 1):
        return True, i + 4
    return None


def _action(src: str, i: int) -> tuple[list[Tok] | None, int, bool]:
    while i < len(src) and src[i] in _SPACE and not _close(src, i):
        i += 1
    if src.startswith("/*", i):
        end = src.find("*/", i + 2)
        if end < 0:
            raise fail("unclosed comment")
        closing = _close(src, end + 2)
        if closing is None:
            raise fail("comment ends before closing delimiter")
        return None, closing[1], closing[0]
    toks: list[Tok] = []
    space = True
    while True:
        if i >= len(src):
            raise fail("unclosed action")
        closing = _close(src, i)
        if closing is not None:
            return toks, closing[1], closing[0]
        c = src[i]
        if c in _SPACE:
            space, i = True, i + 1
            continue
        tok, i = _token(src, i, space)
        toks.append(tok)
        space = False


def _token(src: str, i: int, space: bool) -> tuple[Tok, int]:
    c = src[i]
    for sym in (":=", "|", "(", ")", ",", "="):
        if src.startswith(sym, i):
            return Tok(sym, sym, space), i + len(sym)
    if c == "$":
        m = _WORD.match(src, i + 1)
        name = "$" + (m.group() if m else "")
        return Tok("var", name, space), i + len(name)
    if c == "." and not src[i + 1 : i + 2].isdigit():
        m = _WORD.match(src, i + 1)
        if m:
            return Tok("field", m.group(), space), m.end()
        return Tok("dot", ".", space), i + 1
    if c in "+-." or c.isdigit():
        return _number(src, i, space)
    if c == '"':
        m = _QUOTED.match(src, i)
        if not m:
            raise fail("unterminated quoted string")
        return Tok("str", unquote(m.group()[1:-1]), space), m.end()
    if c == "`":
        end = src.find("`", i + 1)
        if end < 0:
            raise fail("unterminated raw quoted string")
        return Tok("str", src[i + 1 : end].replace("\r", ""), space), end + 1
    if c == "'":
        m = _CHAR.match(src, i)
        text = unquote(m.group()[1:-1]) if m else ""
        if len(text) != 1:
            raise fail("malformed character constant")
        assert m is not None
        return Tok("num", ord(text), space), m.end()
    m = _WORD.match(src, i)
    if m:
        return Tok("word", m.group(), space), m.end()
    raise fail(f"unexpected {c!r} in action")


def _number(src: str, i: int, space: bool) -> tuple[Tok, int]:
    m = _NUMBER.match(src, i)
    if not m or (m.end() < len(src) and (src[m.end()].isalnum() or src[m.end()] in "._")):
        raise fail(f"bad number syntax near {src[i : i + 12]!r}")
    text = m.group()
    body = text.lstrip("+-")
    value: int | float
    if body[:2] in ("0x", "0X"):
        value = int(text, 16)
    elif re.fullmatch(r"0[0-7]+", body):
        value = int(text, 8)
    elif body.isdigit():
        value = int(text)
    else:
        value = float(text)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise fail(f"integer overflow: {text[:30]!r}")
    return Tok("num", value, space), m.end()


def unquote(body: str) -> str:
    """Go's ``strconv.Unquote`` escapes (``\\n``, ``\\x41``, ``\\u00e9``, ``\\101``...)."""

    def one(m: re.Match[str]) -> str:
        esc = m.group()[1:]
        if esc in _SIMPLE:
            return _SIMPLE[esc]
        if esc == '"':
            return '"'
        if esc[0] in "xuU":
            code = int(esc[1:], 16)
        elif esc[0] in "01234567" and len(esc) == 3:
            code = int(esc, 8)
        else:
            raise fail(f"invalid escape \\{esc[:1]} in a quoted string")
        if code > 0x10FFFF or 0xD800 <= code < 0xE000:
            raise fail(f"invalid escape \\{esc} in a quoted string")
        return chr(code)

    return _ESCAPE.sub(one, body)


# ---- parser -----------------------------------------------------------------------------


class Parser:
    """Actions → tree; ``funcs`` is the set of function names that exist."""

    def __init__(self, items: list[str | list[Tok]], funcs: frozenset[str]) -> None:
        self.items = items
        self.k = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.toks: list[Tok] = []
        self.i = 0

    def parse(self) -> list[Any]:
        nodes, stop = self._list(0, False)
        if stop is not None:
            raise fail(f"unexpected {{{{{stop[0].value}}}}}")
        return nodes

    def _list(self, depth: int, in_range: bool) -> tuple[list[Any], list[Tok] | None]:
        nodes: list[Any] = []
        while self.k < len(self.items):
            item = self.items[self.k]
            self.k += 1
            if isinstance(item, str):
                nodes.append(item)
                continue
            if not item:
                raise fail("missing value for command")
            word = item[0].value if item[0].kind == "word" else ""
            if word in ("end", "else"):
                return nodes, item
            if word in ("if", "with", "range"):
                nodes.append(self._block(word, item[1:], depth + 1, in_range))
            elif word in ("break", "continue"):
                if not in_range:
                    raise fail(f"{{{{{word}}}}} outside {{{{range}}}}")
                if len(item) > 1:
                    raise fail(f"unexpected {item[1].value!r} in {{{{{word}}}}}")
                nodes.append(Jump(word))
            elif word in _DISALLOWED:
                raise NtfyError(40044, f"{{{{{word}}}}} is not allowed", field="template")
            else:
                nodes.append(Action(self._pipeline(item, "command")))
        return nodes, None

    def _block(self, kind: str, toks: list[Tok], depth: int, in_range: bool) -> Block:
        if depth > MAX_DEPTH:
            raise fail(f"blocks nested deeper than {MAX_DEPTH}")
        mark = len(self.vars)
        pipe = self._pipeline(toks, kind)
        body, stop = self._list(depth, in_range or kind == "range")
        orelse: list[Any] = []
        if stop is None:
            raise fail(f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        if stop[0].value == "else":
            rest = stop[1:]
            if rest and rest[0].kind == "word" and rest[0].value == kind and kind != "range":
                orelse = [self._block(kind, rest[1:], depth + 1, in_range)]
            elif rest:
                raise fail(f"unexpected {rest[0].value!r} in {{{{else}}}}")
            else:
                orelse, stop = self._list(depth, in_range)
                if stop is None or stop[0].value != "end":
                    raise fail(f"expected {{{{end}}}} after {{{{else}}}} in {{{{{kind}}}}}")
                if len(stop) > 1:
                    raise fail(f"unexpected {stop[1].value!r} in {{{{end}}}}")
        elif len(stop) > 1:
            raise fail(f"unexpected {stop[1].value!r} in {{{{end}}}}")
        del self.vars[mark:]
        return Block(kind, pipe, body, orelse)

    def _pipeline(self, toks: list[Tok], ctx: str) -> Pipe:
        self.toks, self.i = toks, 0
        decls, assign = self._decls(ctx)
        pipe = self._pipe(0, ctx)
        if self.i < len(self.toks):
            raise fail(f"unexpected {self.toks[self.i].value!r} in {ctx}")
        if assign:
            for name in decls:
                if name not in self.vars:
                    raise fail(f'undefined variable "{name}"')
        else:
            self.vars.extend(decls)
        return Pipe(pipe.cmds, decls, assign)

    def _decls(self, ctx: str) -> tuple[tuple[str, ...], bool]:
        t = self.toks
        if len(t) >= 2 and t[0].kind == "var" and t[1].kind in (":=", "="):
            self.i = 2
            return (t[0].value,), t[1].kind == "="
        if (ctx == "range" and len(t) >= 4 and t[0].kind == "var" and t[1].kind == ","
                and t[2].kind == "var" and t[3].kind in (":=", "=")):  # fmt: skip
            self.i = 4
            return (t[0].value, t[2].value), t[3].kind == "="
        return (), False

    def _peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _pipe(self, depth: int, ctx: str) -> Pipe:
        cmds: list[tuple[Any, ...]] = []
        while True:
            cmd = self._command(depth)
            if (
                cmds
                and isinstance(cmd[0], Const | Field)
                and (not isinstance(cmd[0], Field) or not cmd[0].names)
            ):
                raise fail(f"non executable command in pipeline stage {len(cmds) + 1}")
            cmds.append(cmd)
            tok = self._peek()
            if tok is None or tok.kind != "|":
                break
            self.i += 1
        return Pipe(tuple(cmds))

    def _command(self, depth: int) -> tuple[Any, ...]:
        args: list[Any] = []
        while (tok := self._peek()) is not None and tok.kind not in ("|", ")"):
            if args and not tok.space:
                raise fail(f"missing space before {tok.value!r}")
            args.append(self._operand(depth))
        if not args:
            raise fail("missing value for command")
        if isinstance(args[0], Const) and args[0].value is None:
            raise fail("nil is not a command")
        return tuple(args)

    def _operand(self, depth: int) -> Any:
        node = self._term(depth)
        names: list[str] = []
        while (tok := self._peek()) is not None and tok.kind == "field" and not tok.space:
            names.append(tok.value)
            self.i += 1
        if not names:
            return node
        if isinstance(node, Field):
            return Field(node.names + tuple(names))
        if isinstance(node, Var):
            return Var(node.name, node.names + tuple(names))
        if isinstance(node, Pipe):
            return Chain(node, tuple(names))
        raise fail(f"unexpected .{names[0]} after a constant")

    def _term(self, depth: int) -> Any:
        tok = self.toks[self.i]
        self.i += 1
        if tok.kind == "field":
            return Field((tok.value,))
        if tok.kind == "dot":
            return Field(())
        if tok.kind == "var":
            if tok.value not in self.vars:
                raise fail(f'undefined variable "{tok.value}"')
            return Var(tok.value)
        if tok.kind in ("num", "str"):
            return Const(tok.value)
        if tok.kind == "(":
            if depth >= MAX_DEPTH:
                raise fail(f"parentheses nested deeper than {MAX_DEPTH}")
            pipe = self._pipe(depth + 1, "parenthesized pipeline")
            close = self._peek()
            if close is None or close.kind != ")":
                raise fail("unclosed left paren")
            self.i += 1
            return pipe
        if tok.kind == "word":
            return self._word(tok.value)
        raise fail(f"unexpected {tok.value!r} in operand")

    def _word(self, word: str) -> Any:
        if word in ("true", "false"):
            return Const(word == "true")
        if word == "nil":
            return Const(None)
        if word in _DISALLOWED:
            raise NtfyError(40044, f"{word!r} is not allowed", field="template")
        if word in _KEYWORDS:
            raise fail(f"unexpected <{word}> in command")
        if word not in self.funcs:
            raise fail(f'function "{word}" not defined')
        return Ident(word)


def parse(src: str, funcs: frozenset[str]) -> list[Any]:
    """The template's tree; NtfyError 40043/40044 for what cannot be parsed or is refused."""
    return Parser(lex(src), funcs).parse()
