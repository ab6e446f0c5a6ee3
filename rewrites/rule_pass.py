"""`rule_pass`: turn a RuleSet into a registered pass in one line.

    register_rule_pass("simplify-mul", RuleSet([mul_by_one]), "remove x * 1")
"""
from __future__ import annotations

from dataclasses import make_dataclass
from typing import ClassVar

from .base import Pass, PassResult, register_pass
from .rules import RuleSet, apply_rules


def register_rule_pass(name: str, rules: RuleSet, summary: str) -> type[Pass]:
    """Register a pass `name` that applies `rules` to a fixed point; stats count firings per rule."""

    def run(self, graph):
        report = apply_rules(graph, rules, self.name)
        return PassResult(graph, bool(report.fired), dict(report.fired), report.notes())

    class_name = "".join(part.capitalize() for part in name.split("-")) + "RulePass"
    cls = make_dataclass(class_name, [], bases=(Pass,), namespace={
        "name": name, "summary": summary, "run": run, "__annotations__": {"name": ClassVar[str], "summary": ClassVar[str]}})
    return register_pass(cls)
