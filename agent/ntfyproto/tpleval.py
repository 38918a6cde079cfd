"""Executes a parsed template (``tplparse``) on decoded JSON, as Go's ``text/template`` does.

Bounded, because the template and the data both come from the client: every node, call and
``range`` turn costs a step (``MAX_STEPS``), the render may take ``tplvalues.MAX_TIME`` s of
its thread's CPU time (counted at each step and each list or map printed), the output may not
pass ``MAX_OUTPUT`` bytes and no value ``tplfuncs.MAX_VALUE``; a template that would loop,
blow up or nest too deeply stops with 40045 (ntfy's "template execution failed", its answer to
a render that runs out of time or output) instead of stalling the relay. Nothing here raises
anything but NtfyError.
"""

from __future__ import annotations

from typing import Any

from agent.ntfyproto.errors import NtfyError
from agent.ntfyproto.tplfuncs import FUNCS, MAX_ITEMS, MAX_VALUE
from agent.ntfyproto.tplparse import Action, Block, Chain, Const, Field, Ident, Jump, Pipe, Var
from agent.ntfyproto.tplvalues import check_time, fail, go_str, gotype, time_limit, truth

MAX_STEPS = 50_000  # about 0.1 s of Python: ntfy gives a render 100 ms
MAX_OUTPUT = 1024 * 1024  # ntfy's templateMaxOutputBytes
_NO_FINAL = object()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Executor:
    """One render: its output, variables and step budget."""

    def __init__(self, root: Any) -> None:
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.vars: list[tuple[str, Any]] = [("$", root)]

    def run(self, nodes: list[Any], dot: Any) -> str:
        self.walk(nodes, dot)
        return "".join(self.out)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise fail(f"the template took more than {MAX_STEPS} steps")
        check_time()

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise fail(f"the output is above {MAX_OUTPUT} bytes")
        self.out.append(text)

    def walk(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            self.step()
            if isinstance(node, str):
                self.write(node)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decls:
                    self.write("<no value>" if value is None else go_str(value))
            elif isinstance(node, Block):
                self.block(node, dot)
            elif isinstance(node, Jump):
                raise _Break if node.kind == "break" else _Continue

    def block(self, node: Block, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipeline(node.pipe, dot)
            if truth(value):
                self.walk(node.body, value if node.kind == "with" else dot)
            else:
                self.walk(node.orelse, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: Block, dot: Any) -> None:
        pipe = node.pipe
        value = self.pipeline(Pipe(pipe.cmds), dot)
        items: list[tuple[Any, Any]]
        if value is None:
            items = []
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(pipe.decls) > 1:
                raise fail("can't use an integer to iterate over more than one variable")
            if value > MAX_STEPS:
                raise fail(f"range over {value} is above {MAX_STEPS} turns")
            items = [(i, i) for i in range(value)]
        else:
            raise fail(f"range can't iterate over {go_str(value)[:40]}")
        if not items:
            self.walk(node.orelse, dot)
            return
        mark = len(self.vars)
        for key, elem in items:
            self.step()
            del self.vars[mark:]
            self.bind(pipe, [elem] if len(pipe.decls) == 1 else [key, elem])
            try:
                self.walk(node.body, elem)
            except _Break:
                break
            except _Continue:
                continue

    def bind(self, pipe: Pipe, values: list[Any]) -> None:
        for name, value in zip(pipe.decls, values, strict=False):
            if pipe.assign:
                self.assign(name, value)
            else:
                self.vars.append((name, value))

    def assign(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise fail(f"undefined variable: {name}")

    def lookup(self, name: str) -> Any:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise fail(f"undefined variable: {name}")

    def pipeline(self, pipe: Pipe, dot: Any) -> Any:
        value: Any = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        if pipe.decls:
            self.bind(pipe, [value])
        return value

    def command(self, cmd: tuple[Any, ...], dot: Any, final: Any) -> Any:
        head = cmd[0]
        if isinstance(head, Ident):
            return self.call(head.name, cmd[1:], dot, final)
        if len(cmd) > 1 or final is not _NO_FINAL:
            raise fail(f"can't give argument to non-function {_name(head)}")
        return self.arg(head, dot)

    def arg(self, node: Any, dot: Any) -> Any:
        """The value of one operand (a function name alone is a call with no arguments)."""
        self.step()
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Field):
            return self.fields(dot, node.names)
        if isinstance(node, Var):
            return self.fields(self.lookup(node.name), node.names)
        if isinstance(node, Pipe):
            return self.pipeline(Pipe(node.cmds), dot)
        if isinstance(node, Chain):
            return self.fields(self.pipeline(Pipe(node.node.cmds), dot), node.names)
        assert isinstance(node, Ident)
        return self.call(node.name, (), dot, _NO_FINAL)

    def fields(self, value: Any, names: tuple[str, ...]) -> Any:
        for name in names:
            if isinstance(value, dict):
                value = value.get(name)
            elif value is None:
                raise fail(f"nil pointer evaluating interface {{}}.{name}")
            else:
                raise fail(f"can't evaluate field {name} in type {gotype(value)}")
        return value

    def call(self, name: str, nodes: tuple[Any, ...], dot: Any, final: Any) -> Any:
        self.step()
        if name in ("and", "or"):
            return self.logic(name, nodes, dot, final)
        fn, kinds, variadic = FUNCS[name]
        count = len(nodes) + (final is not _NO_FINAL)
        if count < len(kinds) or (variadic is None and count > len(kinds)):
            want = f"at least {len(kinds)}" if variadic else str(len(kinds))
            raise fail(f"wrong number of args for {name}: want {want} got {count}")
        args = [self.arg(n, dot) for n in nodes]
        if final is not _NO_FINAL:
            args.append(final)
        for i, value in enumerate(args):
            _check(name, kinds[i] if i < len(kinds) else variadic or "a", value)
        try:
            result = fn(*args)
        except NtfyError:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            raise fail(f"error calling {name}: {exc}") from None
        if isinstance(result, str) and len(result) > MAX_VALUE:
            raise fail(f"{name} made a value above {MAX_VALUE} bytes")
        if isinstance(result, list) and len(result) > MAX_ITEMS:
            raise fail(f"{name} made a list above {MAX_ITEMS} items")
        return result

    def logic(self, name: str, nodes: tuple[Any, ...], dot: Any, final: Any) -> Any:
        """Go 1.18's short-circuit ``and``/``or``: the first deciding operand, else the last."""
        todo: list[Any] = list(nodes)
        if final is not _NO_FINAL:
            todo.append(Const(final))
        if not todo:
            raise fail(f"wrong number of args for {name}: want at least 1 got 0")
        value: Any = None
        for node in todo:
            value = self.arg(node, dot)
            if truth(value) != (name == "and"):
                return value
        return value


def _check(name: str, kind: str, value: Any) -> None:
    want = {"s": (str, "string"), "i": (int, "int"), "b": (bool, "bool")}.get(kind)
    if want is None:
        return
    if value is None:
        raise fail(f"error calling {name}: invalid value; expected {want[1]}")
    if not isinstance(value, want[0]) or (kind == "i" and isinstance(value, bool)):
        raise fail(f"error calling {name}: wrong type for value; expected {want[1]}; "
                   f"got {gotype(value)}")  # fmt: skip


def _name(node: Any) -> str:
    if isinstance(node, Field):
        return "." + ".".join(node.names) if node.names else "."
    if isinstance(node, Var):
        return node.name + "".join("." + n for n in node.names)
    if isinstance(node, Const):
        return go_str(node.value)
    return "(pipeline)"


def execute(nodes: list[Any], data: Any) -> str:
    """The template's output for ``data``; NtfyError 40045 when it fails or runs away."""
    try:
        with time_limit():
            return Executor(data).run(nodes, data)
    except (_Break, _Continue):  # pragma: no cover - the parser allows them only in range
        raise fail("break or continue outside range") from None
    except RecursionError:
        raise fail("the template nests too deeply") from None
