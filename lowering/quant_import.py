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

import math

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


def _round_and_clip(importer, scaled, qmin: int, qmax: int, dtype: str, zero_point_after: float = 0.0):
    """clip(round(scaled) + zero_point_after, qmin, qmax) as the quantized dtype: the shared tail of
    both quantizes and the requantization (which adds the zero point after rounding, as PyTorch)."""
    from tvm import relax

    bb = importer.block_builder
    rounded = relax.op.round(bb.emit(scaled))
    if zero_point_after:
        rounded = relax.op.add(bb.emit(rounded), _const(zero_point_after, "float32"))
    clipped = bb.emit(relax.op.clip(bb.emit(rounded), qmin, qmax))
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


def _folded_bias(importer, bias, weight, x_zero_point: int):
    """b' = b_q - z_x * (sum of each output channel's int8 weights), in int32 (lowering.int8_kernels)."""
    from tvm import relax

    axes = list(range(1, len(weight.ty.shape)))
    sums = relax.op.sum(relax.op.astype(weight, "int32"), axis=axes)
    return importer.block_builder.emit(relax.op.subtract(bias, relax.op.multiply(sums, _const(x_zero_point, "int32"))))


def _requantize(importer, acc, bias, scale, out_zero_point: int, low: float, high: float, out_dtype: str, axis: int):
    """ir/quant_ops.requantize on the int32 accumulator; elementwise, so fusion puts it into the kernel."""
    from tvm import relax

    bb, ndim = importer.block_builder, len(acc.ty.shape)
    shape = [1] * ndim
    shape[axis] = -1
    acc = bb.emit(relax.op.add(acc, relax.op.reshape(bias, shape)))
    if out_dtype == "int32":
        return acc
    scaled = relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.reshape(scale, shape))
    if out_dtype != "float32":
        return _round_and_clip(importer, scaled, int(low), int(high), out_dtype, float(out_zero_point))
    if low != -math.inf:
        scaled = relax.op.maximum(bb.emit(scaled), _const(low, "float32"))
    if high != math.inf:
        scaled = relax.op.minimum(bb.emit(scaled), _const(high, "float32"))
    return bb.emit(scaled)


def qconv2d(node, importer):
    x, weight, bias, scale = (importer.env[a] for a in node.args[:4])
    return _qconv2d(importer, x, weight, bias, scale, node.args[4:13], [int(d) for d in node.meta["val"].shape])


def _qconv2d(importer, x, weight, bias, scale, params, out_shape):
    """The kernel family for this integer conv (docs/user-guide.md, int8 kernels) and its requantization."""
    from tvm import relax

    from .int8_depthwise import depthwise_acc, pack_depthwise_weight, uses_depthwise_dot
    from .int8_kernels import (OUTPUT_BLOCK, data_shift, exact_in_float32, has_dot_product, pack_conv_weight,
                               qconv2d_acc, qgrouped_conv2d_acc)
    from .int8_pixels import pack_pixel_weight, pixel_layout, qconv_pixels_acc

    bb = importer.block_builder
    x_zero_point, out_zero_point, stride, padding, dilation, groups, low, high, out_dtype = params
    batch, in_channels, height, width = (int(d) for d in x.ty.shape)
    folded_zero_point = x_zero_point + data_shift(str(x.ty.dtype))  # of the data a dot-product kernel multiplies
    layout = pixel_layout(weight.ty.shape, stride, padding, dilation, groups, out_shape, has_dot_product())
    if uses_depthwise_dot(weight.ty.shape, in_channels, groups, dilation, has_dot_product()):
        packed = bb.emit_te(pack_depthwise_weight, weight, primfunc_name_hint="pack_int8_depthwise_weight")
        acc = bb.emit_te(depthwise_acc, x, packed, int(weight.ty.shape[3]), list(stride), list(padding), x_zero_point,
                         primfunc_name_hint="qdepthwise")
    elif groups != 1:  # grouped, or no dot product: no dot-product layout; the kernel widens either 8-bit type
        _, group_channels, kernel_h, kernel_w = (int(d) for d in weight.ty.shape)
        exact = exact_in_float32(group_channels * kernel_h * kernel_w)  # then the sum runs in float32
        terms = bb.emit(relax.op.astype(weight, "float32")) if exact else weight
        acc = bb.emit_te(qgrouped_conv2d_acc, x, terms, list(stride), list(padding), list(dilation), groups,
                         x_zero_point, primfunc_name_hint="qconv2d_grouped")
        folded_zero_point = x_zero_point
    elif layout == "flat":  # a 1x1 conv on H x W pixels is one on a 1 x HW row: reshapes are views, no copies
        flat = bb.emit(relax.op.reshape(x, [batch, in_channels, 1, height * width]))
        out = _qconv2d(importer, flat, weight, bias, scale, params, [*out_shape[:2], 1, height * width])
        return bb.emit(relax.op.reshape(out, out_shape))
    elif layout == "rows":
        packed = bb.emit_te(pack_pixel_weight, weight, primfunc_name_hint="pack_int8_pixel_weight")
        acc = bb.emit_te(qconv_pixels_acc, x, packed, list(stride), list(padding), x_zero_point,
                         primfunc_name_hint="qconv_pixels")
    else:
        packed = bb.emit_te(pack_conv_weight, weight, OUTPUT_BLOCK, primfunc_name_hint="pack_int8_conv_weight")
        acc = bb.emit_te(qconv2d_acc, x, packed, int(weight.ty.shape[0]), list(stride), list(padding), list(dilation),
                         x_zero_point, primfunc_name_hint="qconv2d")
    return _requantize(importer, acc, _folded_bias(importer, bias, weight, folded_zero_point), scale, out_zero_point,
                       low, high, out_dtype, 1)


def qlinear(node, importer):
    from tvm import relax

    from .int8_kernels import OUTPUT_BLOCK, data_shift, kernel_data_dtype, pack_dense_weight, qdense_acc

    bb = importer.block_builder
    x, weight, bias, scale = (importer.env[a] for a in node.args[:4])
    x_zero_point, out_zero_point, low, high, out_dtype = node.args[4:9]
    leading = [int(d) for d in list(x.ty.shape)[:-1]]
    out_features, depth = (int(d) for d in weight.ty.shape)
    rows = bb.emit(relax.op.reshape(x, [math.prod(leading), depth]))
    shift = data_shift(str(x.ty.dtype))
    if shift:  # the other 8-bit type than the dot product takes (lowering.int8_kernels)
        shifted = relax.op.add(relax.op.astype(rows, "int32"), _const(shift, "int32"))
        rows, x_zero_point = bb.emit(relax.op.astype(shifted, kernel_data_dtype())), x_zero_point + shift
    if depth % 4:
        rows = bb.emit(relax.op.nn.pad(rows, [0, 0, 0, 4 - depth % 4], pad_value=float(x_zero_point)))
    packed = bb.emit_te(pack_dense_weight, weight, OUTPUT_BLOCK, primfunc_name_hint="pack_int8_dense_weight")
    acc = bb.emit_te(qdense_acc, rows, packed, out_features, primfunc_name_hint="qdense")
    out = _requantize(importer, acc, _folded_bias(importer, bias, weight, x_zero_point), scale, out_zero_point, low, high,
                      out_dtype, 1)
    return bb.emit(relax.op.reshape(out, [*leading, out_features]))


CONVERTERS = {
    "qconv2d.default": qconv2d,
    "qlinear.default": qlinear,
    "quantize_per_tensor.default": quantize_per_tensor,
    "dequantize_per_tensor.default": dequantize_per_tensor,
    "quantize_per_channel.default": quantize_per_channel,
    "dequantize_per_channel.default": dequantize_per_channel,
}
