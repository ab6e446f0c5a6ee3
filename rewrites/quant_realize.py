"""realize: turn the Q/DQ graph that `quantize` leaves into integer conv2d / linear ops.

The chain (s = scale, z = zero point; W_q int8 per output channel, zero point 0)

    q_x -> dequantize(s_x, z_x) --+
    W_q -> dequantize(s_W[o]) ----+-> conv2d / linear (+ float bias b) [-> relu | relu6 | clamp]
                                      [-> quantize(s_y, z_y)]

becomes one `slimgraph.qconv2d` / `slimgraph.qlinear` (ir/quant_ops.py) on q_x and W_q:

    acc[o] = sum (q_x - z_x) * W_q[o] + b_q[o]        b_q[o] = round(b[o] / (s_x s_W[o]))   int32
    y[o]   = float32(acc[o]) * m[o]

    with the quantize:     m[o] = s_x s_W[o] / s_y,  out = clamp(round(y) + z_y, lo, hi)   uint8 / int8
    without (the output    m[o] = s_x s_W[o],        out = clamp(y, lo, hi)                float32
    feeds float ops)

where [lo, hi] is the quantize's range narrowed by a fused activation (relu: lo = z_y; relu6 /
hardtanh / clamp: both ends quantized the way `quantize` rounds). An activation fuses only when it
is the layer's sole user, the quantize only when it is the sole user of what it quantizes: a value
also used in float (a residual that `quantize{residuals=float}` left float) keeps a float output.

First, a quantize moves in front of the max-pool / flatten / reshape ops that feed it alone:

    quantize(op(v)) = op(quantize(v))      op keeps the order of values (max commutes with the
                                           non-decreasing quantize; a flatten only moves them)

so the layer before fuses the quantize and writes 8 bits, and the pool runs on them.

It is exact up to two roundings: the bias to int32 (at most s_x s_W[o] / 2) and the
requantization of the int32 accumulator instead of the float conv's output (at most one step
of the output's scale, at ties). Depthwise and grouped convs stay dequantize -> float conv,
with the reason in the notes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx

import slimgraph.ir.slimgraph_ops  # noqa: F401  (registers torch.ops.slimgraph)
from slimgraph.ir.graph import PROVENANCE, Graph, Provenance, provenance_of
from slimgraph.ir.ops import conv2d_attrs
from slimgraph.ir.shapes import to_meta

from .base import Pass, PassResult, register_pass

aten, ops = torch.ops.aten, torch.ops.slimgraph
INT32 = (-(2 ** 31), 2 ** 31 - 1)


def activation_bounds(node: fx.Node) -> tuple[float, float] | None:
    """(lo, hi) of a clamping activation node, None for anything else."""
    if node.op != "call_function":
        return None
    if node.target == aten.relu.default:
        return 0.0, math.inf
    if node.target == aten.relu6.default:
        return 0.0, 6.0
    if node.target == aten.hardtanh.default:
        return float(node.args[1]) if len(node.args) > 1 else -1.0, float(node.args[2]) if len(node.args) > 2 else 1.0
    if node.target == aten.clamp.default:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
        if all(v is None or isinstance(v, (int, float)) for v in (low, high)):
            return (-math.inf if low is None else float(low)), (math.inf if high is None else float(high))
    return None


def quantize_value(value: float, scale: float, zero_point: int, qmin: int, qmax: int) -> float:
    """Where the quantize op puts a float bound (ir/slimgraph_ops.py's rounding), clamped to [qmin, qmax]."""
    if math.isinf(value):
        return float(qmin if value < 0 else qmax)
    inverse = float(1.0 / torch.tensor(scale, dtype=torch.float32))
    return float(min(max(round(value * inverse + zero_point), qmin), qmax))


@register_pass
@dataclass
class Realize(Pass):
    name: ClassVar[str] = "realize"
    summary: ClassVar[str] = "int8: dequantize -> conv2d/linear -> quantize chains become integer qconv2d/qlinear"
    lossy: ClassVar[bool] = True  # int32 bias and requantization round differently from the float chain

    def run(self, graph):
        result = graph.copy()
        notes, counts = [], {"qconv2d": 0, "qlinear": 0, "integer_out": 0, "float_out": 0}
        moved = _quantize_earlier(result)
        counts["moved_before_quantize"] = len(moved)
        for node in list(result.fx_graph.nodes):
            if node.op == "call_function" and node.target in (aten.conv2d.default, aten.linear.default):
                reason = self._realize(result, node, counts)
                if reason:
                    notes.append(f"%{node.name} ({provenance_of(node).source or node.name}) stays float: {reason}")
        if not counts["qconv2d"] + counts["qlinear"]:
            return PassResult(graph, False, counts, notes or ["no quantized conv2d / linear (run quantize first)"])
        result.fx_graph.eliminate_dead_code()
        result.remove_unused_params()
        result.fx_graph.lint()
        notes.insert(0, f"{counts['qconv2d']} conv2d and {counts['qlinear']} linear now integer: "
                        f"{counts['integer_out']} requantize to 8 bits, {counts['float_out']} give float outputs")
        if moved:
            notes.insert(1, f"quantize moved before {', '.join(f'%{name}' for name in moved)}: they commute with it, "
                            f"and now run on 8 bits")
        return PassResult(result, True, counts, notes)

    def _realize(self, graph: Graph, layer: fx.Node, counts: dict) -> str:
        """Rewrite one layer; the reason it stays float, or ''."""
        x_dq, w_dq = layer.args[0], layer.args[1]
        if not (isinstance(x_dq, fx.Node) and x_dq.target == ops.dequantize_per_tensor.default):
            return "its input is not quantized" if _quantized_weight(w_dq) else ""
        if not _quantized_weight(w_dq):
            return "its weight is not an int8 per-channel constant"
        is_conv = layer.target == aten.conv2d.default
        bias_node = layer.args[2] if len(layer.args) > 2 else None
        if bias_node is not None and bias_node.op != "get_attr":
            return "its bias is not a constant"
        q_x, x_scale, x_zero = x_dq.args
        w_q, w_scale = (graph.params[a.target] for a in w_dq.args[:2])
        combined = float(x_scale) * w_scale.to(torch.float64)
        bias = graph.params[bias_node.target].to(torch.float64) if bias_node is not None else torch.zeros_like(combined)
        bias_q = torch.clamp(torch.round(bias / combined), *INT32).to(torch.int32)

        end, (low, high) = layer, (-math.inf, math.inf)
        if len(layer.users) == 1 and activation_bounds(next(iter(layer.users))) is not None:
            end = next(iter(layer.users))
            low, high = activation_bounds(end)
        quantize = next(iter(end.users)) if len(end.users) == 1 else None
        if quantize is not None and quantize.target == ops.quantize_per_tensor.default:
            _, y_scale, y_zero, qmin, qmax, out_dtype = quantize.args
            scale = (combined / float(y_scale)).to(torch.float32)
            low = quantize_value(low, y_scale, y_zero, qmin, qmax)
            high = quantize_value(high, y_scale, y_zero, qmin, qmax)
            replaced, counts["integer_out"] = quantize, counts["integer_out"] + 1
        else:
            scale, y_zero, out_dtype = combined.to(torch.float32), 0, "float32"
            replaced, counts["float_out"] = end, counts["float_out"] + 1

        stem = w_dq.args[0].target.removesuffix(".int8").removesuffix(".weight")
        with graph.fx_graph.inserting_before(layer):
            weight = w_dq.args[0]
            constants = [self._constant(graph, f"{stem}.{suffix}", tensor, layer)
                         for suffix, tensor in (("bias_int32", bias_q), ("requant_scale", scale))]
            if is_conv:
                stride, padding, dilation, groups = conv2d_attrs(layer)
                args = (q_x, weight, *constants, int(x_zero), int(y_zero), stride, padding, dilation, groups,
                        low, high, out_dtype)
                integer = graph.fx_graph.call_function(ops.qconv2d.default, args)
            else:
                integer = graph.fx_graph.call_function(
                    ops.qlinear.default, (q_x, weight, *constants, int(x_zero), int(y_zero), low, high, out_dtype))
        integer.meta["val"] = to_meta(torch.empty(tuple(end.meta["val"].shape),
                                                  dtype=getattr(torch, out_dtype)))
        integer.meta[PROVENANCE] = provenance_of(layer).touched_by(self.name)
        replaced.replace_all_uses_with(integer)
        for old in dict.fromkeys((replaced, end, layer)):
            graph.fx_graph.erase_node(old)
        graph.rename(integer, layer.name)  # the float layer's name, so dumps diff line by line
        counts["qconv2d" if is_conv else "qlinear"] += 1
        return ""

    def _constant(self, graph: Graph, name: str, tensor: torch.Tensor, layer: fx.Node) -> fx.Node:
        graph.params[name] = tensor
        attr = graph.fx_graph.get_attr(name)
        attr.meta["val"] = to_meta(tensor)
        attr.meta[PROVENANCE] = Provenance(provenance_of(layer).source, (self.name,))
        return attr


# ops that commute with quantize: max pooling (quantize is non-decreasing, and max commutes with any
# non-decreasing map; padding never wins a max in either form) and ops that only move elements
ORDER_KEEPING = (aten.max_pool2d.default, aten.flatten.using_ints, aten.view.default, aten.reshape.default)


def _quantize_earlier(graph: Graph) -> list[str]:
    """quantize(op(v)) -> op(quantize(v)) for the ORDER_KEEPING ops whose only reader is the
    quantize, repeatedly: exact. The layer before then writes 8 bits (the quantize fuses into its
    epilogue) and a max pool reads and writes a quarter of the bytes. Returns the moved ops' names."""
    moved = []
    for quantize in list(graph.fx_graph.nodes):
        if quantize.target != ops.quantize_per_tensor.default:
            continue
        while True:
            op = quantize.args[0]
            if not (isinstance(op, fx.Node) and op.target in ORDER_KEEPING and len(op.users) == 1):
                break
            with graph.fx_graph.inserting_before(op):
                early = graph.fx_graph.call_function(quantize.target, (op.args[0], *quantize.args[1:]))
                late = graph.fx_graph.call_function(op.target, (early, *op.args[1:]), dict(op.kwargs))
            dtype = quantize.meta["val"].dtype
            early.meta["val"] = to_meta(torch.empty(tuple(op.args[0].meta["val"].shape), dtype=dtype))
            late.meta["val"] = quantize.meta["val"]
            early.meta[PROVENANCE] = provenance_of(quantize).touched_by(Realize.name)
            late.meta[PROVENANCE] = provenance_of(op).touched_by(Realize.name)
            quantize.replace_all_uses_with(late)
            name = op.name
            graph.fx_graph.erase_node(quantize)
            graph.fx_graph.erase_node(op)
            graph.rename(late, name)
            quantize = early
            moved.append(name)
    return moved


def _quantized_weight(node) -> bool:
    return (isinstance(node, fx.Node) and node.target == ops.dequantize_per_channel.default
            and all(isinstance(a, fx.Node) and a.op == "get_attr" for a in node.args[:3]) and node.args[3] == 0)
