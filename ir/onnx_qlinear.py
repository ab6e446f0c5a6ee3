"""ONNX's integer operators into slimgraph.qconv2d / qlinear (ir/quant_ops.py): models quantized in
the operator-oriented format (ONNX Runtime's QuantFormat.QOperator, other converters' output).
TVM's own ONNX importer rejects QLinearConv, QLinearMatMul and ConvInteger.

    QLinearConv(x, s_x, z_x, W, s_W, z_W, s_y, z_y, [B])   -> qconv2d(x, W, B, s_x s_W / s_y, z_x, z_y, ...)
    QLinearMatMul(a, s_a, z_a, B, s_B, z_B, s_y, z_y)       -> qlinear(a, B^T, 0, s_a s_B / s_y, z_a, z_y)
    ConvInteger(x, W, [z_x], [z_W])                         -> qconv2d(..., out_dtype=int32)
    MatMulInteger(a, B, [z_a], [z_B])                       -> qlinear(..., out_dtype=int32)

ONNX computes y = saturate(round((s_x s_W / s_y) * acc) + z_y) with acc = sum (x - z_x)(W - z_W) + B;
ours is the same with the multiplier in float32. Weights (W, B) must be int8 constants with zero
points 0 (symmetric, per tensor or per output channel), as every int8 weight quantizer makes them;
anything else is a one-line error naming the node. The output range is the output dtype's.
"""
from __future__ import annotations

import math

import torch

from .onnx_context import NodeContext, converter_table
from .onnx_spatial import pads_for
from .slimgraph_ops import QUANT_RANGES

_OWN, converter = converter_table()


def _scalar(ctx: NodeContext, index: int, what: str, default=0):
    if not ctx.has(index):
        return default
    value = ctx.const(index, what)
    if value.numel() != 1:
        raise ctx.error(f"{what} must be one value per tensor (got {value.numel()})")
    return value.reshape(()).item()


def _weight(ctx: NodeContext, index: int, zero_index: int | None, transpose: bool = False) -> torch.Tensor:
    weight = ctx.const(index, f"{ctx.op_type} weight")
    if weight.dtype != torch.int8:
        raise ctx.error(f"weight must be int8, got {str(weight.dtype).replace('torch.', '')}")
    if zero_index is not None and ctx.has(zero_index) and bool(ctx.const(zero_index, "weight zero point").ne(0).any()):
        raise ctx.error("weight zero point must be 0 (symmetric weights)")
    if transpose and weight.dim() != 2:
        raise ctx.error(f"the weight must be a 2-D constant, got shape {list(weight.shape)}")
    return weight.t().contiguous() if transpose else weight


def _x_zero_point(ctx: NodeContext, index: int) -> int:
    if ctx.dtype(0) not in (torch.uint8, torch.int8):
        raise ctx.error(f"input must be uint8 or int8, got {str(ctx.dtype(0)).replace('torch.', '')}")
    return int(_scalar(ctx, index, "input zero point"))


def _output(ctx: NodeContext, scale_index: int | None, zero_index: int | None, channels: int, in_scale: float,
            weight_scale: torch.Tensor | None):
    """(scale tensor, output zero point, out_min, out_max, out_dtype)."""
    if scale_index is None:  # the integer-only ops: the int32 accumulator itself
        return torch.ones(channels), 0, -math.inf, math.inf, "int32"
    out_scale = float(_scalar(ctx, scale_index, "output scale"))
    zero = ctx.const(zero_index, "output zero point") if ctx.has(zero_index) else torch.zeros((), dtype=torch.uint8)
    dtype = str(zero.dtype).replace("torch.", "")
    if dtype not in QUANT_RANGES:
        raise ctx.error(f"output type {dtype} is not supported (int8, uint8)")
    multiplier = (in_scale * weight_scale.to(torch.float64) / out_scale).to(torch.float32)
    low, high = QUANT_RANGES[dtype]
    return multiplier.expand(channels).contiguous(), int(zero.reshape(())), float(low), float(high), dtype


def _conv(ctx: NodeContext, weight: torch.Tensor, x_zero: int, bias: torch.Tensor, scale_parts):
    if ctx.rank(0) != 4:
        raise ctx.error(f"only 2-D convolutions are supported (input of rank {ctx.rank(0)})")
    strides = ctx.attr("strides") or [1, 1]
    dilations = ctx.attr("dilations") or [1, 1]
    pairs = pads_for(ctx, ctx.shape(0)[2:], list(weight.shape[2:]), strides, dilations)
    if any(b != e for b, e in pairs):
        raise ctx.error(f"asymmetric padding {pairs} is not supported for integer convolutions")
    scale, out_zero, low, high, dtype = scale_parts
    return ctx.call(torch.ops.slimgraph.qconv2d.default, ctx.input(0), ctx.param("weight", weight),
                    ctx.param("bias", bias), ctx.param("scale", scale), x_zero, out_zero, list(strides),
                    [b for b, _ in pairs], list(dilations), ctx.attr("group", 1), low, high, dtype)


@converter("QLinearConv")
def _qlinear_conv(ctx: NodeContext):
    weight = _weight(ctx, 3, 5)
    channels = weight.shape[0]
    bias = ctx.const(8, "bias").to(torch.int32) if ctx.has(8) else torch.zeros(channels, dtype=torch.int32)
    parts = _output(ctx, 6, 7, channels, float(_scalar(ctx, 1, "input scale")), ctx.const(4, "weight scale"))
    return _conv(ctx, weight, _x_zero_point(ctx, 2), bias, parts)


@converter("ConvInteger")
def _conv_integer(ctx: NodeContext):
    weight = _weight(ctx, 1, 3)
    channels = weight.shape[0]
    return _conv(ctx, weight, _x_zero_point(ctx, 2), torch.zeros(channels, dtype=torch.int32),
                 _output(ctx, None, None, channels, 1.0, None))


def _matmul(ctx: NodeContext, weight: torch.Tensor, x_zero: int, scale_parts):
    scale, out_zero, low, high, dtype = scale_parts
    bias = torch.zeros(weight.shape[0], dtype=torch.int32)
    return ctx.call(torch.ops.slimgraph.qlinear.default, ctx.input(0), ctx.param("weight", weight),
                    ctx.param("bias", bias), ctx.param("scale", scale), x_zero, out_zero, low, high, dtype)


@converter("QLinearMatMul")
def _qlinear_matmul(ctx: NodeContext):
    weight = _weight(ctx, 3, 5, transpose=True)
    parts = _output(ctx, 6, 7, weight.shape[0], float(_scalar(ctx, 1, "input scale")), ctx.const(4, "weight scale"))
    return _matmul(ctx, weight, _x_zero_point(ctx, 2), parts)


@converter("MatMulInteger")
def _matmul_integer(ctx: NodeContext):
    weight = _weight(ctx, 1, 3, transpose=True)
    return _matmul(ctx, weight, _x_zero_point(ctx, 2), _output(ctx, None, None, weight.shape[0], 1.0, None))


CONVERTERS = dict(_OWN)
