"""Structural equality of two graphs, node by node, independent of the text printer."""
from __future__ import annotations

import torch
import torch.fx as fx

from .graph import Graph, provenance_of


def _normalize(value, names):
    if isinstance(value, fx.Node):
        return ("%", value.name)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_normalize(v, names) for v in value))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return (type(value).__name__, value)


def _type_of(value):
    if isinstance(value, torch.Tensor):
        return (value.dtype, tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return tuple(_type_of(v) for v in value)
    return value


def graph_difference(a: Graph, b: Graph) -> str | None:
    """None when the graphs are equal; otherwise the first difference, in words."""
    if a.name != b.name:
        return f"names differ: '{a.name}' vs '{b.name}'"
    nodes_a, nodes_b = list(a.fx_graph.nodes), list(b.fx_graph.nodes)
    if len(nodes_a) != len(nodes_b):
        return f"node counts differ: {len(nodes_a)} vs {len(nodes_b)}"
    for x, y in zip(nodes_a, nodes_b):
        fields = {
            "name": (x.name, y.name), "kind": (x.op, y.op), "op": (x.target, y.target),
            "args": (_normalize(x.args, None), _normalize(y.args, None)),
            "kwargs": (_normalize(dict(x.kwargs), None) if x.kwargs else None,
                       _normalize(dict(y.kwargs), None) if y.kwargs else None),
            "type": (_type_of(x.meta.get("val")), _type_of(y.meta.get("val"))),
            "provenance": (provenance_of(x), provenance_of(y)),
            "region": (x.meta.get("region"), y.meta.get("region")),
        }
        for field, (left, right) in fields.items():
            if left != right:
                return f"node %{x.name}: {field} differs: {left!r} vs {right!r}"
    if set(a.params) != set(b.params):
        return f"parameter names differ: {sorted(set(a.params) ^ set(b.params))}"
    for key, tensor in a.params.items():
        other = b.params[key]
        if tensor.dtype != other.dtype or tensor.shape != other.shape or not torch.equal(tensor, other):
            return f"parameter '{key}' differs"
    return None
