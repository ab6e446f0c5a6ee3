"""fuse: exact algebraic merges (see fuse_algebra.py), merging of parallel linears, and fused
regions (see fuse_regions.py) that lowering compiles into one kernel each.

Parallel linears: n linears reading the same x with constant weights W_k[o_k, i], biases b_k
    linear(x, W_k, b_k) for k = 1..n  ->  split(linear(x, [W_1; ...; W_n], [b_1; ...; b_n]), [o_1..o_n], -1)[k]
one matmul instead of n (the query/key/value projections of attention become one).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx

from slimgraph.ir.graph import PROVENANCE, provenance_of

from .base import Pass, PassResult, register_pass
from .fuse_algebra import ALGEBRA_RULES
from .fuse_regions import REGION, assign_regions
from .rules import Rewriter, apply_rules
from .patterns import Match

aten = torch.ops.aten


def _mergeable_linear(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target is not aten.linear.default or len(node.args) < 2:
        return False
    bias = node.args[2] if len(node.args) > 2 else None
    return node.args[1].op == "get_attr" and (bias is None or bias.op == "get_attr")


def merge_parallel_linears(graph, pass_name: str) -> int:
    """Merge each group of 2+ constant-weight linears sharing one input; returns the groups merged."""
    groups: dict[fx.Node, list[fx.Node]] = {}
    for node in graph.fx_graph.nodes:
        if _mergeable_linear(node):
            groups.setdefault(node.args[0], []).append(node)
    merged = 0
    for x, linears in groups.items():
        dtypes = {graph.params[n.args[1].target].dtype for n in linears}
        if len(linears) < 2 or len(dtypes) != 1:
            continue
        first = linears[0]  # the earliest: every merged output is defined before any reader
        weights = [graph.params[n.args[1].target] for n in linears]
        biases = [graph.params[n.args[2].target] if len(n.args) > 2 and n.args[2] is not None
                  else torch.zeros(w.shape[0], dtype=w.dtype) for n, w in zip(linears, weights)]
        name = "+".join(n.args[1].target for n in linears)
        rewriter = Rewriter(graph, first, Match(graph), pass_name)
        weight = rewriter.param(name, torch.cat(weights, 0))
        bias = rewriter.param(f"{name}.bias", torch.cat(biases, 0))
        combined = rewriter.call(aten.linear.default, x, weight, bias)
        sizes = [w.shape[0] for w in weights]
        parts = rewriter.call(aten.split_with_sizes.default, combined, sizes, -1)
        for index, linear in enumerate(linears):
            piece = rewriter.call(operator.getitem, parts, index, like=linear)
            piece.meta[PROVENANCE] = provenance_of(linear).touched_by(pass_name)
            linear.replace_all_uses_with(piece)
        graph.fx_graph.eliminate_dead_code()
        graph.remove_unused_params()
        rewriter.apply_renames()
        merged += 1
    return merged


@register_pass
@dataclass
class Fuse(Pass):
    name: ClassVar[str] = "fuse"
    summary: ClassVar[str] = "exact algebraic merges (bias/scale/pad into conv and linear, linear chains, " \
                             "parallel linears, cancelling permutes and reshapes); fused regions for lowering"
    algebra: bool = True
    parallel: bool = True
    regions: bool = True
    depthwise: bool = True  # a depthwise conv may share the kernel of the 1x1 conv it reads

    def run(self, graph):
        stats, notes = {}, []
        if self.algebra:
            report = apply_rules(graph, ALGEBRA_RULES, self.name)
            stats.update(report.fired)
            notes += report.notes()
        if self.parallel:
            merged = merge_parallel_linears(graph, self.name)
            if merged:
                stats["parallel-linears"] = merged
        if self.regions:
            before = [n.meta.get(REGION) for n in graph.fx_graph.nodes]
            stats["regions"] = assign_regions(graph, self.depthwise)
            if before == [n.meta.get(REGION) for n in graph.fx_graph.nodes] and len(stats) == 1:
                return PassResult(graph, False, stats, notes)
        return PassResult(graph, bool(stats), stats, notes)
