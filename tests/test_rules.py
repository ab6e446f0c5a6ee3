"""The rule driver: fixed point, the runaway guard, and the registry's checks on new passes."""
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from slimgraph.rewrites import Any, Const, Op, Pass, PassError, Rule, RuleSet, apply_rules, register_pass

from .passes_util import graph_from_text

aten = torch.ops.aten
CHAIN = '''graph "chain" {
  %x = input() : f32[4]
  %a = aten.neg.default(%x) : f32[4]
  %b = aten.neg.default(%a) : f32[4]
  %c = aten.neg.default(%b) : f32[4]
  %d = aten.neg.default(%c) : f32[4]
  return (%d,)
}'''


def test_rules_apply_to_a_fixed_point():
    double_negation = Rule("neg-neg", Op(aten.neg.default, Op(aten.neg.default, Any("x"), single_use=True)),
                           lambda match, rw: match["x"])
    graph = graph_from_text(CHAIN)
    report = apply_rules(graph, RuleSet([double_negation]), "test")
    assert report.fired["neg-neg"] == 2
    assert [n.op for n in graph.nodes] == ["placeholder", "output"]


def test_a_rule_that_keeps_firing_is_stopped_and_named():
    grows = Rule("grows", Op(aten.neg.default, Any("x")),
                 lambda match, rw: rw.call(aten.neg.default, rw.call(aten.neg.default, rw.call(aten.neg.default, match["x"]))))
    with pytest.raises(PassError, match="pass 'test': rule 'grows' keeps firing"):
        apply_rules(graph_from_text(CHAIN), RuleSet([grows]), "test", max_rewrites=50)


def test_const_where_predicate_gives_its_reason():
    positive = Rule("scale-positive", Op(aten.mul.Tensor, Any("x"), Const("s", where=lambda t: None if (t > 0).all()
                                                                          else "has non-positive entries")),
                    lambda match, rw: match["x"])
    graph = graph_from_text('''graph "g" {
  %x = input() : f32[3]
  %s = param("s") : f32[3]
  %y = aten.mul.Tensor(%x, %s) : f32[3]
  return (%y,)
}''')
    graph.params["s"] = torch.tensor([1.0, -1.0, 2.0])
    report = apply_rules(graph, RuleSet([positive]), "test")
    assert report.notes() == ["scale-positive did not fire at %y: argument #1 of %y: constant %s: has non-positive entries"]


def test_rule_sets_compose_with_plus():
    a = Rule("a", Op(aten.neg.default, Any()), lambda m, rw: rw.decline("no"))
    b = Rule("b", Op(aten.relu.default, Any()), lambda m, rw: rw.decline("no"))
    assert [r.name for r in RuleSet([a]) + b + RuleSet([a])] == ["a", "b", "a"]


def test_registry_refuses_badly_declared_passes():
    class NotADataclass(Pass):
        name: ClassVar[str] = "not-a-dataclass"

    with pytest.raises(PassError, match="must be a @dataclass"):
        register_pass(NotADataclass)

    @dataclass
    class BadName(Pass):
        name: ClassVar[str] = "Bad_Name"

    with pytest.raises(PassError, match="needs a kebab-case `name`, got 'Bad_Name'"):
        register_pass(BadName)

    @dataclass
    class Impostor(Pass):
        name: ClassVar[str] = "fold-bn"

    with pytest.raises(PassError, match="pass name 'fold-bn' is taken by slimgraph.rewrites.fold_bn.FoldBatchNorm"):
        register_pass(Impostor)
