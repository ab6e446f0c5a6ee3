"""Relax converters for slimgraph's quantize / dequantize ops (ir/slimgraph_ops.py).

TVM's torch importer has none; `from_exported_program(..., custom_convert_map=CONVERTERS)` uses
these. They emit the same arithmetic as the PyTorch reference kernels:

    quantize:    clip(round(x * float32(1 / scale) + zero_point), qmin, qmax) -> int8 / uint8
    dequantize:  (float32(q) - zero_point) * scale

(R.quantize rounds before adding the zero point, which differs from PyTorch at ties, so it is not
used.) Per-channel scales are graph constants broadcast along `axis`. A weight's
dequantize_per_channel reads only constants, so FoldConstant turns it back into a float weight
at compile time: kernels between quantize and dequantize still compute in float until the
realization step gives them integer inputs.
"""
from __future__ import annotations

import torch


def _const(value, dtype: str):
    from tvm import relax

    return relax.const(value, dtype)


def _along(importer, node_arg, axis: int, ndim: int, dtype: str):
    """A per-channel constant reshaped to broadcast along `axis` of an `ndim`-D tensor."""
    from tvm import relax

    values = importer.env[node_arg]
    shape = [1] * ndim
    shape[axis] = -1
    values = importer.block_builder.emit(relax.op.astype(values, dtype))
    return importer.block_builder.emit(relax.op.reshape(values, shape))


def _round_and_clip(importer, scaled, qmin: int, qmax: int, dtype: str):
    """clip(round(scaled), qmin, qmax) as the quantized dtype: the shared tail of both quantizes."""
    from tvm import relax

    bb = importer.block_builder
    clipped = bb.emit(relax.op.clip(relax.op.round(bb.emit(scaled)), qmin, qmax))
    return bb.emit(relax.op.astype(clipped, dtype))


def quantize_per_tensor(node, importer):
    from tvm import relax

    x = importer.env[node.args[0]]
    scale, zero_point, qmin, qmax, dtype = node.args[1:6]
    inverse = float(1.0 / torch.tensor(scale, dtype=torch.float32))
    scaled = relax.op.add(relax.op.multiply(x, _const(inverse, "float32")), _const(float(zero_point), "float32"))
    return _round_and_clip(importer, scaled, qmin, qmax, dtype)


def dequantize_per_tensor(node, importer):
    from tvm import relax

    q = importer.env[node.args[0]]
    scale, zero_point = node.args[1:3]
    shifted = relax.op.subtract(relax.op.astype(q, "float32"), _const(float(zero_point), "float32"))
    return importer.block_builder.emit(relax.op.multiply(shifted, _const(float(scale), "float32")))


def quantize_per_channel(node, importer):
    from tvm import relax

    x = importer.env[node.args[0]]
    axis, qmin, qmax, dtype = node.args[3:7]
    ndim = len(node.args[0].meta["val"].shape)
    scales = _along(importer, node.args[1], axis, ndim, "float32")
    zero_points = _along(importer, node.args[2], axis, ndim, "float32")
    scaled = relax.op.add(relax.op.divide(x, scales), zero_points)  # the reference divides too
    return _round_and_clip(importer, scaled, qmin, qmax, dtype)


def dequantize_per_channel(node, importer):
    from tvm import relax

    q = importer.env[node.args[0]]
    axis = node.args[3]
    ndim = len(node.args[0].meta["val"].shape)
    scales = _along(importer, node.args[1], axis, ndim, "float32")
    zero_points = _along(importer, node.args[2], axis, ndim, "float32")
    shifted = relax.op.subtract(relax.op.astype(q, "float32"), zero_points)
    return importer.block_builder.emit(relax.op.multiply(shifted, scales))


CONVERTERS = {
    "quantize_per_tensor.default": quantize_per_tensor,
    "dequantize_per_tensor.default": dequantize_per_tensor,
    "quantize_per_channel.default": quantize_per_channel,
    "dequantize_per_channel.default": dequantize_per_channel,
}
