"""Fused regions: group each op with the elementwise / layout / pooling chain that follows it.

A region is an anchor (any op) plus the ops that consume it one after another, each the only
reader of the one before (other inputs, like a residual, come from outside) and each elementwise (add, mul, relu, clamp, gelu, ...), a layout
change (reshape, flatten, permute, ...) or a pooling:

    conv2d -> add -> relu -> max_pool2d        one region: one kernel after lowering
              ^ residual input from another region

A depthwise conv joins the region of the 1x1 conv whose (activated) output it alone reads, when
that output is large (`POINTWISE_DEPTHWISE_MIN_BYTES`; MobileNet's expansions at 112x112 and
56x56): one kernel computes both per block of channels, so the expanded tensor stays in cache
(lowering/pointwise_depthwise.py). `fuse{depthwise=false}` keeps them apart.

    conv2d 1x1 -> add -> hardtanh -> conv2d depthwise -> add -> hardtanh     one region

Every other op starts its own region. Regions are `meta["region"]` on the nodes, printed as
`region(N)` in the IR text; lowering outlines each into one Relax primitive function, which
TVM's FuseTIR turns into one kernel. Ops with tuple results (split) and getitem stay outside.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from slimgraph.ir.ops import is_depthwise_conv, is_pointwise_conv
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


# The expanded tensor from which a 1x1 conv and its depthwise conv share a kernel. Smaller ones
# stay in L2 between two kernels anyway, and there the 1x1 conv's own kernel (channels as vector
# lanes) mostly beats the fused one's. MobileNetV2's pairs, each timed alone on a Zen 4 core with
# 1 MB of L2 (2 threads, fused vs apart, ms): 4.6 MB 0.33 vs 0.53, 1.7 MB 0.19 vs 0.31 (stride 2:
# 0.18 vs 0.29); 0.57 MB 0.14 vs 0.11, 0.29 MB 0.072 vs 0.080, 0.18 MB 0.15 vs 0.10.
POINTWISE_DEPTHWISE_MIN_BYTES = 1 << 20


def region_of(node: fx.Node) -> int | None:
    return node.meta.get(REGION)


def _outside(node: fx.Node) -> bool:
    return node.target is operator.getitem or not isinstance(node.meta.get("val"), torch.Tensor)


def _expansion_joins(node: fx.Node, members: list[fx.Node]) -> bool:
    """Does depthwise conv `node` join the region `members` (a 1x1 conv and its activation), whose
    last value is its input?"""
    value = node.args[0].meta.get("val")
    return (members[-1] is node.args[0] and is_depthwise_conv(node) and is_pointwise_conv(members[0])
            and all(m.target in ELEMENTWISE for m in members[1:]) and isinstance(value, torch.Tensor)
            and value.dtype == torch.float32 and value.nelement() * 4 >= POINTWISE_DEPTHWISE_MIN_BYTES)


def assign_regions(graph, depthwise: bool = True) -> int:
    """Mark regions on every op node (replacing earlier marks); returns how many regions there are.
    `depthwise`: depthwise convs may join the 1x1 conv before them (module docstring)."""
    tail: dict[int, fx.Node] = {}
    members: dict[int, list[fx.Node]] = {}
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
        if joinable and (node.target in JOINS_PRODUCER
                         or depthwise and _expansion_joins(node, members[region_of(joinable[0])])):
            region = region_of(joinable[0])
        else:
            region, count = count, count + 1
        node.meta[REGION] = region
        tail[region] = node
        members.setdefault(region, []).append(node)
    return count


def regions_in(graph) -> dict[int, list[fx.Node]]:
    found: dict[int, list[fx.Node]] = {}
    for node in graph.fx_graph.nodes:
        if region_of(node) is not None:
            found.setdefault(region_of(node), []).append(node)
    return found
