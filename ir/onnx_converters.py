"""The ONNX op converters: `CONVERTERS[op_type](ctx)` returns the value (or list of values) of a node.

Each converter emits the canonical aten ops torch.export would produce for the equivalent PyTorch
code through `ctx.call` (see `onnx_context.NodeContext`: the same code folds the node into a
constant when all its inputs are constants). A converter may return a tensor: that output is a
constant (`Shape`, ...). The table is the set of supported ops: keys are ONNX op types
(`domain::Op` outside the default domain); add entries to support more. Elementwise, dense and
normalization ops live here, layout and constant ops in `onnx_layout`, windowed ops in `onnx_spatial`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from . import onnx_layout, onnx_qlinear, onnx_quant, onnx_spatial
from .onnx_context import NodeContext, converter_table, f32_scalar, python_scalar, torch_dtype
from .onnx_layout import reshape

aten = torch.ops.aten
_OWN, converter = converter_table()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _dtype_of(value) -> torch.dtype:
    return value.dtype if isinstance(value, torch.Tensor) else value.meta["val"].dtype


def _cast(ctx: NodeContext, value, dtype: torch.dtype):
    return value if _dtype_of(value) == dtype else ctx.call(aten.to.dtype, value, dtype)


# ----- elementwise ----------------------------------------------------------------------
UNARY = {"Relu": aten.relu.default, "Sigmoid": aten.sigmoid.default, "Tanh": aten.tanh.default,
         "Erf": aten.erf.default, "Sqrt": aten.sqrt.default, "Exp": aten.exp.default, "Log": aten.log.default,
         "Neg": aten.neg.default, "Abs": aten.abs.default, "Reciprocal": aten.reciprocal.default,
         "HardSwish": aten.hardswish.default}
for _op_type, _op in UNARY.items():
    _OWN[_op_type] = lambda ctx, op=_op: ctx.call(op, ctx.input(0))

BINARY = {"Add": aten.add.Tensor, "Sub": aten.sub.Tensor, "Mul": aten.mul.Tensor, "Div": aten.div.Tensor,
          "Equal": aten.eq.Tensor, "Less": aten.lt.Tensor, "Greater": aten.gt.Tensor}


@converter(*BINARY)
def _binary(ctx: NodeContext):
    op, x = BINARY[ctx.op_type], ctx.input(0)
    rhs = ctx.scalar_const(1, other=0)  # x / 8.0 as torch.export writes it, not a one-element parameter
    if ctx.op_type in ("Equal", "Less", "Greater"):  # only eq has a canonical Scalar overload
        return ctx.call(aten.eq.Scalar, x, rhs) if rhs is not None and op == aten.eq.Tensor else \
            ctx.call(op, x, ctx.input(1))
    if ctx.op_type == "Div" and not ctx.dtype(0).is_floating_point:  # integer Div truncates
        return ctx.call(aten.div.Tensor_mode, x, ctx.input(1) if rhs is None else rhs, rounding_mode="trunc")
    if rhs is not None:
        return ctx.call(op, x, rhs)
    lhs = ctx.scalar_const(0, other=1)
    if lhs is not None and ctx.op_type in ("Add", "Mul"):
        return ctx.call(op, ctx.input(1), lhs)
    if lhs is not None and ctx.op_type == "Sub":
        return ctx.call(aten.rsub.Scalar, ctx.input(1), lhs)
    return ctx.call(op, x, ctx.input(1))


@converter("Pow")
def _pow(ctx: NodeContext):
    exponent = ctx.scalar_const(1, other=0)
    if exponent is not None:
        out = ctx.call(aten.pow.Tensor_Scalar, ctx.input(0), exponent)
    else:
        out = ctx.call(aten.pow.Tensor_Tensor, ctx.input(0), ctx.input(1))
    return _cast(ctx, out, ctx.dtype(0))


@converter("Min", "Max", "Sum", "Mean")
def _variadic(ctx: NodeContext):
    op = {"Min": aten.minimum.default, "Max": aten.maximum.default}.get(ctx.op_type, aten.add.Tensor)
    values = ctx.inputs()
    out = values[0]
    for value in values[1:]:
        out = ctx.call(op, out, value)
    return ctx.call(aten.div.Tensor, out, float(len(values))) if ctx.op_type == "Mean" and len(values) > 1 else out


@converter("Clip")
def _clip(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.opset < 11:
        lo, hi = ctx.attr("min"), ctx.attr("max")
    elif any(ctx.has(i) and not ctx.is_const(i) for i in (1, 2)):
        return ctx.call(aten.clamp.Tensor, x, ctx.input(1), ctx.input(2))
    else:
        lo, hi = (python_scalar(ctx.const(i)) if ctx.has(i) else None for i in (1, 2))
    if lo == 0 and hi == 6 and ctx.dtype(0).is_floating_point:  # nn.ReLU6, as torch.export writes it
        return ctx.call(aten.hardtanh.default, x, 0.0, 6.0)
    return x if lo is None and hi is None else ctx.call(aten.clamp.default, x, lo, hi)


@converter("HardSigmoid")
def _hardsigmoid(ctx: NodeContext):
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    if alpha == f32_scalar(1 / 6) and beta == 0.5:
        return ctx.call(aten.hardsigmoid.default, ctx.input(0))
    scaled = ctx.call(aten.add.Tensor, ctx.call(aten.mul.Tensor, ctx.input(0), alpha), beta)
    return ctx.call(aten.clamp.default, scaled, 0.0, 1.0)


@converter("LeakyRelu")
def _leaky_relu(ctx: NodeContext):
    return ctx.call(aten.leaky_relu.default, ctx.input(0), ctx.attr("alpha", 0.01))


@converter("PRelu")
def _prelu(ctx: NodeContext):
    x, rank, slope = ctx.input(0), ctx.rank(0), ctx.input(1)
    if ctx.is_const(1):
        weight = ctx.const(1)
        aligned = [1] * (rank - weight.dim()) + list(weight.shape)
        per_channel = rank >= 2 and aligned[1] == ctx.shape(0)[1] and math.prod(aligned) == aligned[1]
        if weight.numel() == 1 or per_channel:  # torch's prelu wants a scalar or a 1-D per-channel weight
            if weight.dim() > 1:
                slope = ctx.param("slope", weight.flatten())
            return ctx.call(aten.prelu.default, x, slope)
    negative = ctx.call(aten.relu.default, ctx.call(aten.neg.default, x))
    return ctx.call(aten.sub.Tensor, ctx.call(aten.relu.default, x), ctx.call(aten.mul.Tensor, negative, slope))


@converter("Gelu")
def _gelu(ctx: NodeContext):
    approximate = ctx.attr("approximate", "none")
    kwargs = {"approximate": approximate} if approximate != "none" else {}
    return ctx.call(aten.gelu.default, ctx.input(0), **kwargs)


@converter("Where")
def _where(ctx: NodeContext):
    return ctx.call(aten.where.self, ctx.input(0), ctx.input(1), ctx.input(2))


@converter("Cast", "CastLike")
def _cast_node(ctx: NodeContext):
    dtype = torch_dtype(ctx.attr("to"), f"node '{ctx.source}'") if ctx.op_type == "Cast" else ctx.dtype(1)
    return _cast(ctx, ctx.input(0), dtype)


@converter("Identity", "Dropout")
def _identity(ctx: NodeContext):
    if ctx.op_type == "Dropout" and ctx.has(2) and (not ctx.is_const(2) or bool(ctx.const(2).item())):
        raise ctx.error("training-mode dropout is not supported")
    return ctx.input(0)


# ----- dense and normalization ----------------------------------------------------------
@converter("MatMul")
def _matmul(ctx: NodeContext):
    return ctx.call(aten.matmul.default, ctx.input(0), ctx.input(1))


@converter("Gemm")
def _gemm(ctx: NodeContext):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    bias_ok = c is None or (beta == 1.0 and ctx.rank(2) == 1 and ctx.shape(2)[0] == ctx.shape(1)[0])
    if not trans_a and trans_b and alpha == 1.0 and bias_ok:  # nn.Linear
        return ctx.call(aten.linear.default, a, b, c)
    a = ctx.call(aten.permute.default, a, [1, 0]) if trans_a else a
    b = ctx.call(aten.permute.default, b, [1, 0]) if trans_b else b
    out = ctx.call(aten.matmul.default, a, b)
    out = ctx.call(aten.mul.Tensor, out, alpha) if alpha != 1.0 else out
    if c is None or beta == 0.0:
        return out
    if beta != 1.0:  # a constant C is scaled at import
        c = ctx.param("C_scaled", ctx.const(2) * beta) if ctx.is_const(2) else ctx.call(aten.mul.Tensor, c, beta)
    return ctx.call(aten.add.Tensor, out, c)


@converter("BatchNormalization")
def _batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0):
        raise ctx.error("training-mode batch normalization is not supported")
    x, scale, bias, mean, var = (ctx.input(i) for i in range(5))
    return ctx.call(aten.batch_norm.default, x, scale, bias, mean, var, False, 0.1, ctx.attr("epsilon", 1e-05), False)


@converter("LayerNormalization")
def _layer_norm(ctx: NodeContext):
    axis, eps = _axis(ctx.attr("axis", -1), ctx.rank(0)), ctx.attr("epsilon", 1e-05)
    normalized = ctx.shape(0)[axis:]
    scale, bias = ctx.input(1), ctx.input(2)
    if ctx.shape(1) == normalized and (bias is None or ctx.shape(2) == normalized):
        return ctx.call(aten.layer_norm.default, ctx.input(0), normalized, scale, bias, eps)
    out = ctx.call(aten.mul.Tensor, ctx.call(aten.layer_norm.default, ctx.input(0), normalized, None, None, eps), scale)
    return out if bias is None else ctx.call(aten.add.Tensor, out, bias)


@converter("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext):
    op = aten.softmax.int if ctx.op_type == "Softmax" else aten.log_softmax.int
    shape, axis = ctx.shape(0), ctx.attr("axis", -1 if ctx.opset >= 13 else 1)
    if ctx.opset >= 13 or _axis(axis, len(shape)) == len(shape) - 1:
        return ctx.call(op, ctx.input(0), axis)
    axis = _axis(axis, len(shape))  # before opset 13: softmax of the input flattened to 2-D at `axis`
    flat = reshape(ctx, ctx.input(0), [math.prod(shape[:axis]), math.prod(shape[axis:])])
    return reshape(ctx, ctx.call(op, flat, 1), shape)


REDUCE = {"ReduceMean": aten.mean.dim, "ReduceSum": aten.sum.dim_IntList, "ReduceMax": aten.amax.default,
          "ReduceMin": aten.amin.default}


@converter(*REDUCE)
def _reduce(ctx: NodeContext):
    axes_are_input = ctx.opset >= 18 or (ctx.op_type == "ReduceSum" and ctx.opset >= 13)
    axes = ctx.ints(1, "axes") if axes_are_input else ctx.attr("axes")
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return ctx.input(0)
        axes = list(range(ctx.rank(0)))
    return ctx.call(REDUCE[ctx.op_type], ctx.input(0), list(axes), bool(ctx.attr("keepdims", 1)))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    rank = ctx.rank(0)
    if ctx.op_type == "GlobalAveragePool" and rank == 4:
        return ctx.call(aten.adaptive_avg_pool2d.default, ctx.input(0), [1, 1])
    op = aten.mean.dim if ctx.op_type == "GlobalAveragePool" else aten.amax.default
    return ctx.call(op, ctx.input(0), list(range(2, rank)), True)


CONVERTERS: dict[str, Callable[[NodeContext], object]] = {**_OWN, **onnx_layout.CONVERTERS, **onnx_spatial.CONVERTERS,
                                                        **onnx_quant.CONVERTERS, **onnx_qlinear.CONVERTERS}
