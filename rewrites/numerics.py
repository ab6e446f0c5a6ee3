"""Numerical comparison of graphs: tolerance by dtype, and the first node whose value diverges."""
from __future__ import annotations

import torch
import torch.fx as fx

from slimgraph.ir import Graph

# |actual - expected| <= atol + rtol * |expected|, per dtype; integers and booleans must be equal.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCES.get(dtype, (0.0, 0.0))


def max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.numel() == 0:
        return 0.0
    return float((actual.double() - expected.double()).abs().max())


def within_tolerance(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    atol, rtol = tolerance(expected.dtype)
    difference = (actual.double() - expected.double()).abs()
    return bool((difference <= atol + rtol * expected.double().abs()).all()) if actual.numel() else True


def compare_outputs(expected, actual) -> tuple[str | None, float]:
    """(description of the first failing output or None, the largest max-abs-difference)."""
    worst, failure = 0.0, None
    if len(expected) != len(actual):
        return f"{len(expected)} outputs before, {len(actual)} after", float("inf")
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want.shape != got.shape or want.dtype != got.dtype:
            return f"output #{index} changed type", float("inf")
        difference = max_abs_diff(got, want)
        worst = max(worst, difference)
        if failure is None and not within_tolerance(got, want):
            atol, rtol = tolerance(want.dtype)
            failure = f"output #{index} max abs diff {difference:.3g} (tolerance {atol:g} + {rtol:g}*|x|)"
    return failure, worst


def run_all_values(graph: Graph, inputs) -> dict[str, torch.Tensor]:
    """Every tensor-valued node's value by node name."""
    interpreter = fx.Interpreter(graph.module(), garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(*inputs)
    return {node.name: value for node, value in interpreter.env.items() if isinstance(value, torch.Tensor)}


def first_divergence(before: Graph, after: Graph, inputs) -> str:
    """Names the first node (in the new graph's order) whose value, compared with the node of the
    same name before the pass, is outside tolerance."""
    old_values, new_values = run_all_values(before, inputs), run_all_values(after, inputs)
    for node in after.fx_graph.nodes:
        if node.op != "call_function" or node.name not in old_values or node.name not in new_values:
            continue
        old, new = old_values[node.name], new_values[node.name]
        if old.shape == new.shape and old.dtype == new.dtype and not within_tolerance(new, old):
            return f"first diverging node %{node.name} (max abs diff {max_abs_diff(new, old):.3g})"
    return "no node of the same name diverges; the difference arises in nodes the pass created"
