"""Rewrite rules as data, and the one driver that applies them to a fixed point.

    x_times_one = Rule("mul-by-one", Op(aten.mul.Tensor, Any("x"), Lit(1.0)), lambda m, rw: m["x"])
    rules = RuleSet([x_times_one]) + other_rules

A rule's `rewrite(match, rewriter)` returns the node that replaces the pattern's root, or
`rewriter.decline("reason")`. The driver walks the graph in order, tries each rule whose root
op fits, replaces, removes dead nodes, and repeats until nothing fires; a rule that keeps firing
past the runaway guard is an error naming it. Every refusal is recorded with its reason, and
`trace_rules({"fold-bn-conv"})` prints each candidate the named rules looked at and why they
did not fire.
"""
from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx

from slimgraph.ir import Graph
from slimgraph.ir.graph import PROVENANCE, provenance_of, sanitize_name
from slimgraph.ir.shapes import to_meta

from .base import PassError
from .patterns import Match, Op


class Decline:
    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class Rule:
    name: str
    pattern: Op
    rewrite: Callable[[Match, "Rewriter"], object]
    summary: str = ""


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)

    def __add__(self, other: "RuleSet | Rule") -> "RuleSet":
        return RuleSet(self.rules + (other.rules if isinstance(other, RuleSet) else [other]))

    def __iter__(self):
        return iter(self.rules)


class Rewriter:
    """What a rule's rewrite uses to build its replacement, just before the matched root."""

    def __init__(self, graph: Graph, root: fx.Node, match: Match, pass_name: str):
        self.graph, self.root, self.match, self.pass_name = graph, root, match, pass_name
        self.renames: list[tuple[fx.Node, str]] = []  # new nodes that should inherit an old name

    def decline(self, reason: str) -> Decline:
        return Decline(reason)

    def _stamp(self, node: fx.Node, source_node: fx.Node | None = None) -> fx.Node:
        origin = provenance_of(source_node if source_node is not None else self.root)
        node.meta[PROVENANCE] = origin.touched_by(self.pass_name)
        return node

    def call(self, op, *args, like: fx.Node | None = None, **kwargs) -> fx.Node:
        """Emit `op(*args, **kwargs)` with its shape computed; provenance from `like` (default: the root)."""
        base = op._schema.name.split("::")[1] if isinstance(op, torch._ops.OpOverload) else op.__name__
        with self.graph.fx_graph.inserting_before(self.root):
            node = self.graph.fx_graph.create_node("call_function", op, tuple(args), kwargs, name=base)
        meta_args = fx.node.map_arg(node.args, lambda n: n.meta["val"])
        meta_kwargs = fx.node.map_arg(node.kwargs, lambda n: n.meta["val"])
        node.meta["val"] = to_meta(op(*meta_args, **meta_kwargs))
        if like is not None:
            self.renames.append((node, like.name))
        return self._stamp(node, like)

    def param(self, name: str, tensor: torch.Tensor) -> fx.Node:
        """A new parameter. It keeps `name` when no node outside this match still reads that name."""
        tensor = tensor.detach().contiguous()
        covered = set(self.match.nodes)
        readers = [n for n in self.graph.fx_graph.nodes if n.op == "get_attr" and n.target == name]
        if any(set(r.users) - covered for r in readers):
            name = _unique_name(name, self.graph.params)
        self.graph.params[name] = tensor
        with self.graph.fx_graph.inserting_before(self.root):
            node = self.graph.fx_graph.create_node("get_attr", name, name=sanitize_name(name))
        node.meta["val"] = to_meta(tensor)
        self.renames.append((node, sanitize_name(name)))
        return node

    def apply_renames(self) -> None:
        """After the old nodes are gone, give new nodes the names of the ones they replace."""
        taken = {n.name for n in self.graph.fx_graph.nodes}
        for node, wanted in self.renames:
            if not _erased(node) and node.name != wanted and wanted not in taken:
                taken.discard(node.name)
                self.graph.rename(node, wanted)
                taken.add(wanted)


def _unique_name(name: str, taken) -> str:
    index = 1
    while f"{name}_{index}" in taken:
        index += 1
    return f"{name}_{index}"


_TRACED: set[str] = set()
_TRACE_STREAM = [sys.stderr]


@contextlib.contextmanager
def trace_rules(names: set[str], stream=None):
    """Within the block, print every candidate of the named rules and why it did not fire."""
    previous = set(_TRACED), _TRACE_STREAM[0]
    _TRACED.update(names)
    _TRACE_STREAM[0] = stream or sys.stderr
    try:
        yield
    finally:
        _TRACED.clear()
        _TRACED.update(previous[0])
        _TRACE_STREAM[0] = previous[1]


def _trace(rule: Rule, node: fx.Node, message: str) -> None:
    if rule.name in _TRACED or "*" in _TRACED:
        print(f"[trace {rule.name}] at %{node.name}: {message}", file=_TRACE_STREAM[0])


@dataclass
class RuleReport:
    fired: Counter = field(default_factory=Counter)
    declined: dict[tuple[str, str], str] = field(default_factory=dict)  # (rule, node) -> reason

    def notes(self) -> list[str]:
        return [f"{rule} did not fire at %{node}: {reason}" for (rule, node), reason in self.declined.items()]


def apply_rules(graph: Graph, rules: RuleSet, pass_name: str, max_rewrites: int | None = None) -> RuleReport:
    """Apply `rules` to `graph` in place until none fires; returns what fired and what declined."""
    report = RuleReport()
    budget = max_rewrites or max(1000, 20 * len(graph.fx_graph.nodes))
    total, changed = 0, True
    while changed:
        changed = False
        for node in list(graph.fx_graph.nodes):
            if node.op != "call_function" or node.graph is not graph.fx_graph or _erased(node):
                continue
            for rule in rules:
                if node.target not in rule.pattern.targets:
                    continue
                match = Match(graph)
                reason = rule.pattern.match(node, match)
                result = None
                if reason is None:
                    rewriter = Rewriter(graph, node, match, pass_name)
                    result = rule.rewrite(match, rewriter)
                    reason = result.reason if isinstance(result, Decline) else None
                if reason is not None:
                    if not getattr(reason, "structural", False):
                        report.declined[(rule.name, node.name)] = reason
                    _trace(rule, node, f"no match: {reason}" if getattr(reason, "structural", False)
                           else f"declined: {reason}")
                    continue
                _trace(rule, node, f"fired, replaced by %{result.name}" if isinstance(result, fx.Node) else "fired")
                report.declined.pop((rule.name, node.name), None)
                node.replace_all_uses_with(result)
                _remove_dead(graph)
                rewriter.apply_renames()
                report.fired[rule.name] += 1
                total += 1
                changed = True
                if total > budget:
                    raise PassError(f"pass '{pass_name}': rule '{rule.name}' keeps firing ({total} rewrites, "
                                    f"guard {budget}); its replacement matches its own pattern")
                break
    _remove_dead(graph)
    return report


def _erased(node: fx.Node) -> bool:
    return getattr(node, "_erased", False)


def _remove_dead(graph: Graph) -> None:
    graph.fx_graph.eliminate_dead_code()
    graph.remove_unused_params()
