"""Fused regions: group each op with the elementwise / layout / pooling chain that follows it.

A region is an anchor (any op) plus the ops that consume it one after another, each the only
reader of the one before (other inputs, like a residual, come from outside) and each elementwise (add, mul, relu, clamp, gelu, ...), a layout
change (reshape, flatten, permute, ...) or a pooling:

    conv2d -> add -> relu -> max_pool2d        one region: one kernel after lowering
              ^ residual input from another region

Every other op starts its own region. Regions are `meta["region"]` on the nodes, printed as
`region(N)` in the IR text; lowering outlines each into one Relax primitive function, which
TVM's FuseTIR turns into one kernel. Ops with tuple results (split) and getitem stay outside.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from slimgraph.ir.text import REGION

aten = torch.ops.aten

ELEMENTWISE = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.add.Scalar, aten.sub.Scalar,
    aten.mul.Scalar, aten.div.Scalar, aten.rsub.Scalar, aten.pow.Tensor_Scalar, aten.neg.default,
    aten.abs.default, aten.reciprocal.default, aten.relu.default, aten.relu6.default, aten.hardtanh.default,
    aten.clamp.default, aten.sigmoid.default, aten.hardsigmoid.default, aten.hardswish.default,
    aten.silu.default, aten.tanh.default, aten.leaky_relu.default, aten.gelu.default, aten.erf.default,
    aten.sqrt.default, aten.rsqrt.default, aten.exp.default, aten.log.default, aten.maximum.default,
    aten.minimum.default,
}
LAYOUT = {aten.reshape.default, aten.view.default, aten.flatten.using_ints, aten.permute.default,
          aten.transpose.int, aten.unsqueeze.default, aten.squeeze.dims, aten.squeeze.dim}
POOLING = {aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default}
# Pooling starts its own region: a conv kernel with a pooling reduction after it has no fast
# schedule rule (lowering.cpu_schedules), while the two as separate kernels both do.
JOINS_PRODUCER = ELEMENTWISE | LAYOUT


def region_of(node: fx.Node) -> int | None:
    return node.meta.get(REGION)


def _outside(node: fx.Node) -> bool:
    return node.target is operator.getitem or not isinstance(node.meta.get("val"), torch.Tensor)


def assign_regions(graph) -> int:
    """Mark regions on every op node (replacing earlier marks); returns how many regions there are."""
    tail: dict[int, fx.Node] = {}
    count = 0
    for node in graph.fx_graph.nodes:
        if node.op != "call_function":
            continue
        node.meta.pop(REGION, None)
        if _outside(node):
            continue
        # join the region of an input that ends its region and is read only here (x + conv(x)
        # joins the conv's region whichever side of the + it is on)
        joinable = [a for a in node.args if isinstance(a, fx.Node) and region_of(a) is not None
                    and tail.get(region_of(a)) is a and len(a.users) == 1]
        if node.target in JOINS_PRODUCER and joinable:
            region = region_of(joinable[0])
            node.meta[REGION] = region
        else:
            region, count = count, count + 1
            node.meta[REGION] = region
        tail[region] = node
    return count


def regions_in(graph) -> dict[int, list[fx.Node]]:
    found: dict[int, list[fx.Node]] = {}
    for node in graph.fx_graph.nodes:
        if region_of(node) is not None:
            found.setdefault(region_of(node), []).append(node)
    return found
