"""ONNX QuantizeLinear / DequantizeLinear (the QDQ format of ONNX Runtime's `quantize_static`)
into slimgraph's quantize / dequantize ops (ir/slimgraph_ops.py).

    QuantizeLinear(x, s, z)    -> slimgraph.quantize_per_tensor(x, s, z, dtype range)   (scalar s)
                                  slimgraph.quantize_per_channel(x, s, z, axis, ...)   (1-D s)
    DequantizeLinear(q, s, z)  -> slimgraph.dequantize_per_tensor / dequantize_per_channel

The zero point's dtype (uint8 when absent) is the quantized dtype; scales and zero points must be
constants. A DequantizeLinear of an 8-bit constant (a quantized weight) is not folded into a float
constant: it stays a dequantize of an int8 parameter, the form `realize` turns into integer ops
(frontend_onnx also skips onnxsim for such models, whose constant folding would undo it). ONNX rounds x / s before adding z, our ops (as PyTorch) after: outputs can differ by
one quantization step where x / s is exactly halfway between two levels.
"""
from __future__ import annotations

import torch

from .onnx_context import NodeContext, converter_table
from .slimgraph_ops import QUANT_RANGES  # importing it registers torch.ops.slimgraph

_OWN, converter = converter_table()


def _scale_and_zero(ctx: NodeContext, what: str):
    scale = ctx.const(1, f"{what} scale")  # a one-line error when computed at run time
    zero = ctx.const(2, f"{what} zero point") if ctx.has(2) else torch.zeros(scale.shape, dtype=torch.uint8)
    if ctx.attr("block_size", 0):
        raise ctx.error("blocked quantization (block_size) is not supported")
    return scale.to(torch.float32), zero


@converter("QuantizeLinear")
def _quantize_linear(ctx: NodeContext):
    scale, zero = _scale_and_zero(ctx, "QuantizeLinear")
    dtype = str(zero.dtype).replace("torch.", "")
    if dtype not in QUANT_RANGES:
        raise ctx.error(f"QuantizeLinear to {dtype} is not supported (int8, uint8)")
    qmin, qmax = QUANT_RANGES[dtype]
    ops = torch.ops.slimgraph
    if scale.numel() == 1:
        return ctx.call(ops.quantize_per_tensor.default, ctx.input(0), float(scale.reshape(())),
                        int(zero.reshape(())), qmin, qmax, dtype)
    axis = ctx.attr("axis", 1) % ctx.rank(0)
    return ctx.call(ops.quantize_per_channel.default, ctx.input(0), ctx.param("scale", scale),
                    ctx.param("zero_point", zero.to(torch.int32)), axis, qmin, qmax, dtype)


@converter("DequantizeLinear")
def _dequantize_linear(ctx: NodeContext):
    scale, zero = _scale_and_zero(ctx, "DequantizeLinear")
    if ctx.eager and ctx.dtype(0) in (torch.int8, torch.uint8):
        ctx.eager = False  # an 8-bit weight stays 8-bit, so that `realize` can make its layer integer
    ops = torch.ops.slimgraph
    if scale.numel() == 1:
        return ctx.call(ops.dequantize_per_tensor.default, ctx.input(0), float(scale.reshape(())),
                        int(zero.reshape(())))
    axis = ctx.attr("axis", 1) % ctx.rank(0)
    return ctx.call(ops.dequantize_per_channel.default, ctx.input(0), ctx.param("scale", scale),
                    ctx.param("zero_point", zero.to(torch.int32)), axis)


CONVERTERS = dict(_OWN)
