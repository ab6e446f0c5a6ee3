"""Graph statistics: node count by op, parameters, bytes, and multiply-accumulates per node."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .graph import Graph
from .shapes import op_name

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def node_macs(node: fx.Node) -> int:
    """Multiply-accumulates of one node (0 for ops without a dot product).

    conv:   |out| * (C_in / groups) * prod(kernel)
    linear: |out| * in_features;  matmul/bmm/mm/addmm: |out| * K
    """
    if node.op != "call_function":
        return 0
    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor):
        return 0
    target = node.target
    if target in (aten.conv1d.default, aten.conv2d.default):
        weight = node.args[1].meta["val"]
        return _numel(out.shape) * _numel(weight.shape[1:])
    if target in (aten.conv_transpose1d.default, aten.conv_transpose2d.input):
        data, weight = node.args[0].meta["val"], node.args[1].meta["val"]
        return _numel(data.shape) * _numel(weight.shape[1:])
    if target is aten.linear.default:
        return _numel(out.shape) * node.args[1].meta["val"].shape[-1]
    if target in (aten.matmul.default, aten.mm.default, aten.bmm.default):
        return _numel(out.shape) * node.args[0].meta["val"].shape[-1]
    if target is aten.addmm.default:
        return _numel(out.shape) * node.args[1].meta["val"].shape[-1]
    return 0


@dataclass
class GraphStats:
    nodes: int
    ops: Counter = field(default_factory=Counter)
    parameters: int = 0
    parameter_bytes: int = 0
    macs: int = 0
    macs_by_node: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.nodes} ops, {self.parameters:,} parameters ({self.parameter_bytes / 2**20:.2f} MiB), "
                f"{self.macs / 1e6:,.1f} M MACs")


def graph_stats(graph: Graph) -> GraphStats:
    calls = [n for n in graph.fx_graph.nodes if n.op == "call_function"]
    used = {n.target for n in graph.fx_graph.nodes if n.op == "get_attr"}
    tensors = [t for k, t in graph.params.items() if k in used]
    macs_by_node = {n.name: m for n in calls if (m := node_macs(n))}
    return GraphStats(
        nodes=len(calls),
        ops=Counter(op_name(n) for n in calls),
        parameters=sum(t.numel() for t in tensors),
        parameter_bytes=sum(t.numel() * t.element_size() for t in tensors),
        macs=sum(macs_by_node.values()),
        macs_by_node=macs_by_node,
    )
