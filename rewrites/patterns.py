"""Patterns over graph nodes, as data. Matching returns None on success or the reason it failed.

    Op(aten.batch_norm.default, Op(aten.conv2d.default, Any("x"), Const("w"), name="conv", single_use=True),
       Const("gamma"), Const("beta"), Const("mean"), Const("var"), Lit(False), Any(), Any("eps"))

- `Op(targets, *args, name=, single_use=, where=)`: a call of one of `targets` whose leading
  positional arguments match `args` (missing trailing ones take the op schema's defaults);
  `where(node, match)` may return a reason to refuse.
- `Any(name)`: anything (a node or a literal), captured under `name` when given.
- `Const(name, where=)`: a parameter node (`param(...)` in the text); `match.tensor(name)` is its value.
- `Lit(value)`: a literal argument equal to `value`, or a one-element constant equal to it.
Names captured twice must bind the same value.
"""
from __future__ import annotations

from typing import Any as AnyType, Callable

import torch
import torch.fx as fx

from slimgraph.ir.shapes import op_name


class Miss(str):
    """Why a pattern did not match. `structural` misses (a different op feeds the node) mean the
    node was never a candidate; the others (other users, not a constant, a refused condition)
    are the reasons worth reporting."""

    structural = False

    @classmethod
    def make(cls, text: str, structural: bool = False) -> "Miss":
        miss = cls(text)
        miss.structural = structural
        return miss

    def within(self, prefix: str) -> "Miss":
        return Miss.make(f"{prefix}: {self}", self.structural)


class Match:
    def __init__(self, graph):
        self.graph = graph
        self.captures: dict[str, AnyType] = {}
        self.nodes: list[fx.Node] = []  # every op node the pattern covered, root last
        self.depth = 0  # > 0 while matching below the root

    def __getitem__(self, name: str):
        return self.captures[name]

    def tensor(self, name: str) -> torch.Tensor:
        return self.graph.params[self.captures[name].target]

    def bind(self, name: str | None, value) -> str | None:
        if name is None:
            return None
        if name in self.captures and self.captures[name] is not value:
            return f"'{name}' is bound to {_describe(self.captures[name])} and {_describe(value)}"
        self.captures[name] = value
        return None


def _describe(value) -> str:
    return f"%{value.name}" if isinstance(value, fx.Node) else repr(value)


class Pattern:
    def match(self, value, m: Match) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


class Any(Pattern):
    def __init__(self, name: str | None = None):
        self.name = name

    def match(self, value, m):
        return m.bind(self.name, value)


class Const(Pattern):
    def __init__(self, name: str | None = None, where: Callable[[torch.Tensor], str | None] | None = None):
        self.name, self.where = name, where

    def match(self, value, m):
        if not (isinstance(value, fx.Node) and value.op == "get_attr"):
            return f"expected a constant, got {_describe(value)}" + ("" if not isinstance(value, fx.Node)
                                                                    else f" ({_kind(value)})")
        if self.where is not None:
            reason = self.where(m.graph.params[value.target])
            if reason:
                return f"constant {_describe(value)}: {reason}"
        return m.bind(self.name, value)


class Lit(Pattern):
    def __init__(self, value):
        self.value = value

    def match(self, value, m):
        if isinstance(value, fx.Node):
            if value.op == "get_attr":
                tensor = m.graph.params[value.target]
                if tensor.numel() == 1 and tensor.item() == self.value:
                    return None
            return f"expected {self.value!r}, got {_describe(value)}"
        if value == self.value and type(value) is type(self.value):
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == self.value:
            return None
        return f"expected {self.value!r}, got {value!r}"


def _kind(node: fx.Node) -> str:
    return op_name(node) if node.op == "call_function" else node.op


class Op(Pattern):
    def __init__(self, targets, *args, name: str | None = None, single_use: bool = False,
                 where: Callable[[fx.Node, Match], str | None] | None = None):
        self.targets = tuple(targets) if isinstance(targets, (tuple, list, set)) else (targets,)
        self.args = [a if isinstance(a, Pattern) else Lit(a) for a in args]
        self.name, self.single_use, self.where = name, single_use, where

    def match(self, value, m):
        if not (isinstance(value, fx.Node) and value.op == "call_function"):
            return Miss.make(f"expected {self._names()}, got {_describe(value)}", structural=True)
        if value.target not in self.targets:
            return Miss.make(f"expected {self._names()}, got %{value.name} ({_kind(value)})", structural=True)
        if self.single_use and m.depth > 0 and len(value.users) > 1:  # the root may have many users
            users = ", ".join("the graph output" if u.op == "output" else f"%{u.name}" for u in value.users)
            return f"%{value.name} has {len(value.users)} users ({users}); folding would duplicate it"
        arguments = _positional_arguments(value)
        m.depth += 1
        try:
            for index, pattern in enumerate(self.args):
                if index >= len(arguments):
                    return f"%{value.name} has no argument #{index}"
                reason = pattern.match(arguments[index], m)
                if reason:
                    return Miss.make(reason).within(f"argument #{index} of %{value.name}") \
                        if not isinstance(reason, Miss) else reason.within(f"argument #{index} of %{value.name}")
        finally:
            m.depth -= 1
        if self.where is not None:
            reason = self.where(value, m)
            if reason:
                return (reason if isinstance(reason, Miss) else Miss.make(reason)).within(f"%{value.name}")
        m.nodes.append(value)
        return m.bind(self.name, value)

    def _names(self) -> str:
        names = sorted({str(t).replace("aten::", "aten.") for t in self.targets})
        return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def _positional_arguments(node: fx.Node) -> list:
    """Positional arguments with keyword ones folded in and schema defaults filled at the end."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return list(node.args)
    values = list(node.args)
    for argument in target._schema.arguments[len(values):]:
        if argument.name in node.kwargs:
            values.append(node.kwargs[argument.name])
        elif argument.has_default_value():
            values.append(argument.default_value)
        else:
            break
    return values
