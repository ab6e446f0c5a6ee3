"""ONNX converters with spatial windows: Conv, ConvTranspose, MaxPool, AveragePool, Resize / Upsample.

Collected into `onnx_converters.CONVERTERS`. Padding ONNX can express and torch cannot (asymmetric
pads, `auto_pad`) becomes an explicit `aten.constant_pad_nd`; resizes torch's upsample kernels do
not compute exactly (a coordinate mode or rounding they lack) become constant index maps.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .onnx_context import NodeContext, converter_table

aten = torch.ops.aten
CONVERTERS, converter = converter_table()


def torch_pad_list(pairs: list[tuple[int, int]]) -> list[int]:
    """ONNX (begin, end) pairs, first dim first, to torch's pad list (last dim first), without leading no-ops."""
    pad = [v for begin, end in reversed(pairs) for v in (begin, end)]
    while pad and pad[-2:] == [0, 0]:
        pad = pad[:-2]
    return pad


def pads_for(ctx: NodeContext, sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int]):
    """(begin, end) padding per spatial dim from `pads` or `auto_pad`."""
    k, auto = len(sizes), ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = ctx.attr("pads") or [0] * (2 * k)
        return list(zip(pads[:k], pads[k:]))
    if auto == "VALID":
        return [(0, 0)] * k
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"unknown auto_pad '{auto}'")
    pairs = []
    for size, kern, stride, dil in zip(sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / stride) - 1) * stride + (kern - 1) * dil + 1 - size)
        small = total // 2
        pairs.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return pairs


def _window_attrs(ctx: NodeContext, k: int, kernel: list[int]):
    return ctx.attr("strides") or [1] * k, ctx.attr("dilations") or [1] * k, kernel


@converter("Conv")
def conv(ctx: NodeContext):
    k = ctx.rank(1) - 2
    if k not in (1, 2):
        raise ctx.error(f"only 1-D and 2-D convolutions are supported (this one is {k}-D)")
    strides, dilations, kernel = _window_attrs(ctx, k, ctx.shape(1)[2:])
    pairs = pads_for(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    x = ctx.input(0)
    if all(b == e for b, e in pairs):
        padding = [b for b, _ in pairs]
    else:  # asymmetric: pad explicitly, as F.pad before the conv
        x, padding = ctx.call(aten.constant_pad_nd.default, x, torch_pad_list(pairs), 0.0), [0] * k
    op = aten.conv1d.default if k == 1 else aten.conv2d.default
    return ctx.call(op, x, ctx.input(1), ctx.input(2), list(strides), padding, list(dilations), ctx.attr("group", 1))


@converter("ConvTranspose")
def conv_transpose(ctx: NodeContext):
    k = ctx.rank(1) - 2
    if k not in (1, 2):
        raise ctx.error(f"only 1-D and 2-D transposed convolutions are supported (this one is {k}-D)")
    strides, dilations, kernel = _window_attrs(ctx, k, ctx.shape(1)[2:])
    out_pad = ctx.attr("output_padding") or [0] * k
    sizes = ctx.shape(0)[2:]
    full = [s * (i - 1) + p + (kern - 1) * d + 1 for i, s, p, kern, d in zip(sizes, strides, out_pad, kernel, dilations)]
    auto, target = ctx.attr("auto_pad", "NOTSET"), ctx.attr("output_shape")
    if target or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(target)[-k:] if target else [i * s for i, s in zip(sizes, strides)]
        totals = [f - t for f, t in zip(full, target)]
        if ctx.attr("output_shape") and any(t < 0 for t in totals):
            raise ctx.error(f"output_shape {target} is larger than the transposed convolution produces ({full})")
        upper = auto == "SAME_UPPER"  # onnxruntime: SAME without output_shape never grows the output
        pairs = [(t // 2, t - t // 2) if upper else (t - t // 2, t // 2) for t in (max(0, t) for t in totals)]
    elif auto == "VALID":
        pairs = [(0, 0)] * k
    else:
        pads = ctx.attr("pads") or [0] * (2 * k)
        pairs = list(zip(pads[:k], pads[k:]))
    common = [min(b, e) for b, e in pairs]
    op = aten.conv_transpose1d.default if k == 1 else aten.conv_transpose2d.input
    out = ctx.call(op, ctx.input(0), ctx.input(1), ctx.input(2), list(strides), common, list(out_pad),
                   ctx.attr("group", 1), list(dilations))
    for dim, ((b, e), c, size) in enumerate(zip(pairs, common, full), start=2):
        if b != e:  # asymmetric pads: crop the rest of the larger side
            out = ctx.call(aten.slice.Tensor, out, dim, b - c, size - 2 * c - (e - c))
    return out


@converter("MaxPool", "AveragePool")
def avg_max_pool(ctx: NodeContext):
    x, rank = ctx.input(0), ctx.rank(0)
    k = rank - 2
    if k not in (1, 2):
        raise ctx.error(f"only 1-D and 2-D pooling is supported (this one is {k}-D)")
    strides, dilations, kernel = _window_attrs(ctx, k, list(ctx.attr("kernel_shape")))
    pairs = pads_for(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    if k == 1:  # pool 1-D as 2-D over a unit height
        x = ctx.call(aten.unsqueeze.default, x, 2)
        strides, dilations, kernel, pairs = [1, *strides], [1, *dilations], [1, *kernel], [(0, 0), *pairs]
    ceil_mode, spatial = bool(ctx.attr("ceil_mode", 0)), ([1] if k == 1 else []) + ctx.shape(0)[2:]
    torch_can_pad = all(b == e and b <= kern // 2 for (b, e), kern in zip(pairs, kernel))
    padding = [b for b, _ in pairs] if torch_can_pad else [0, 0]
    if ctx.op_type == "MaxPool":
        if not torch_can_pad:
            x = ctx.call(aten.constant_pad_nd.default, x, torch_pad_list(pairs), -math.inf)
        out = ctx.call(aten.max_pool2d.default, x, list(kernel), list(strides), padding, list(dilations), ceil_mode)
    else:
        if any(d != 1 for d in dilations):
            raise ctx.error("dilated AveragePool is not supported")
        include_pad = bool(ctx.attr("count_include_pad", 0))
        if torch_can_pad:
            out = ctx.call(aten.avg_pool2d.default, x, list(kernel), list(strides), padding, ceil_mode, include_pad)
        else:  # pad explicitly; without count_include_pad divide by the pooled count of real elements
            padded = ctx.call(aten.constant_pad_nd.default, x, torch_pad_list(pairs), 0.0)
            out = ctx.call(aten.avg_pool2d.default, padded, list(kernel), list(strides), [0, 0], ceil_mode, True)
            if not include_pad:
                ones = torch.nn.functional.pad(torch.ones([1, 1, *spatial]), torch_pad_list(pairs))
                counts = torch.nn.functional.avg_pool2d(ones, kernel, strides, 0, ceil_mode, True).to(ctx.dtype(0))
                out = ctx.call(aten.div.Tensor, out, ctx.param("counts", counts))
    if not torch_can_pad and ceil_mode:  # ONNX drops a last window that starts in the end padding
        for dim, ((b, e), kern, stride, d) in enumerate(zip(pairs, kernel, strides, dilations), start=2):
            size = spatial[dim - 2]
            span = size + b + e - (kern - 1) * d - 1
            expected = -(-span // stride) + 1 - ((-(-span // stride)) * stride >= size + b)
            if _shape_of(out)[dim] > expected:
                out = ctx.call(aten.slice.Tensor, out, dim, 0, expected)
    return ctx.call(aten.squeeze.dim, out, 2) if k == 1 else out


def _shape_of(value) -> list[int]:
    return list(value.shape if isinstance(value, torch.Tensor) else value.meta["val"].shape)


# ----- Resize / Upsample --------------------------------------------------------------------
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn",
                    "half_pixel_symmetric")


def _source_coords(mode: str, in_len: int, out_len: int, scale: float) -> np.ndarray:
    """ONNX's coordinate_transformation_mode in float32, as onnxruntime computes it."""
    x, s = np.arange(out_len, dtype=np.float32), np.float32(scale)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / s
    if mode == "align_corners":
        return x * np.float32(in_len - 1) / np.float32(out_len - 1) if out_len > 1 else np.zeros_like(x)
    if mode == "pytorch_half_pixel" and out_len <= 1:
        return np.zeros_like(x)
    if mode == "half_pixel_symmetric":  # onnxruntime: the offset in float32, the rest in double
        offset = np.float32(in_len / 2) * (1 - np.float32(out_len) / (s * np.float32(in_len)))
        return (np.float64(offset) + (x.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(np.float32)
    return (x + 0.5) / s - 0.5


def _nearest_indices(coords: np.ndarray, rounding: str, in_len: int, scale: float) -> list[int]:
    floor, ceil = np.floor(coords), np.ceil(coords)
    half = coords == floor + 0.5
    picked = {"round_prefer_floor": np.where(half, floor, np.round(coords)),
              "round_prefer_ceil": np.where(half, ceil, np.round(coords)),
              "floor": floor, "ceil": ceil,
              "simple": ceil if scale < 1 else np.trunc(coords)}[rounding]  # opset < 11
    return np.clip(picked, 0, in_len - 1).astype(np.int64).tolist()


def _torch_nearest_indices(shape: list[int], output_size, scales) -> tuple[list[int], ...]:
    """The source rows and columns aten.upsample_nearest2d picks, probed one axis at a time."""
    maps = []
    for axis in (0, 1):
        length = shape[2 + axis]
        probe = torch.arange(length, dtype=torch.float64).reshape([1, 1] + ([length, 1] if axis == 0 else [1, length]))
        size = None if output_size is None else [output_size[0], 1] if axis == 0 else [1, output_size[1]]
        factors = None if scales is None else [scales[0], 1.0] if axis == 0 else [1.0, scales[1]]
        maps.append(aten.upsample_nearest2d.vec(probe, size, factors).flatten().long().tolist())
    return tuple(maps)


def _resize_params(ctx: NodeContext, shape: list[int]):
    """(mode, scales or None, sizes or None, coordinate mode, nearest rounding) for Resize and Upsample."""
    mode = ctx.attr("mode", "nearest")
    if ctx.op_type == "Upsample" or ctx.opset < 11:
        scales = ctx.attr("scales") if ctx.opset < 9 else ctx.floats(1, "scales")
        return mode, scales, None, "asymmetric", "simple"
    scales = ctx.floats(2, "scales") if ctx.has(2) else None
    sizes = ctx.ints(3, "sizes") if ctx.has(3) else None
    axes = ctx.attr("axes")
    if axes:  # opset 18: scales / sizes only for the listed axes
        axes = [a + len(shape) if a < 0 else a for a in axes]
        scales = [scales[axes.index(i)] if i in axes else 1.0 for i in range(len(shape))] if scales else None
        sizes = [sizes[axes.index(i)] if i in axes else shape[i] for i in range(len(shape))] if sizes else None
    if sizes and ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.error("keep_aspect_ratio_policy other than 'stretch' is not supported")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    return mode, scales or None, sizes or None, coord, ctx.attr("nearest_mode", "round_prefer_floor")


@converter("Resize", "Upsample")
def resize(ctx: NodeContext):
    shape = ctx.shape(0)
    mode, scales, sizes, coord, rounding = _resize_params(ctx, shape)
    if mode not in ("nearest", "linear", "bilinear"):
        raise ctx.error(f"mode '{mode}' is not supported (nearest and linear are)")
    if coord not in COORDINATE_MODES:
        supported = ", ".join(COORDINATE_MODES)
        raise ctx.error(f"coordinate_transformation_mode '{coord}' is not supported (supported: {supported})")
    if len(shape) != 4 or (scales is None and sizes is None):
        raise ctx.error("only 2-D resizes of 4-D (N, C, H, W) tensors given scales or sizes are supported")
    if sizes:
        out, scale = list(sizes), [np.float32(o) / np.float32(i) for o, i in zip(sizes, shape)]
    else:
        out, scale = [int(np.floor(np.float32(i) * np.float32(s))) for i, s in zip(shape, scales)], scales
    if out[:2] != shape[:2]:
        raise ctx.error(f"resizing the batch or channel dimension is not supported ({shape} -> {out})")
    if ctx.attr("antialias", 0) and any(o < i for o, i in zip(out, shape)):
        raise ctx.error("antialiased downsampling is not supported")
    x = ctx.input(0)
    coords = [_source_coords(coord, shape[d], out[d], scale[d]) for d in (2, 3)]
    torch_args = ([out[2], out[3]], None) if sizes else (None, [float(s) for s in scales[2:]])
    if mode == "nearest":
        maps = [_nearest_indices(c, rounding, shape[d], scale[d]) for c, d in zip(coords, (2, 3))]
        if _torch_nearest_indices(shape, *torch_args) == tuple(maps):
            return ctx.call(aten.upsample_nearest2d.vec, x, *torch_args)
        for d, indices in zip((2, 3), maps):  # rounding torch lacks: gather rows, then columns
            if indices != list(range(shape[d])):
                x = ctx.call(aten.index_select.default, x, d, ctx.param(f"indices_{d}", torch.tensor(indices)))
        return x
    if coord in ("half_pixel", "align_corners") or (coord == "pytorch_half_pixel" and min(out[2:]) > 1):
        output_size, factors = torch_args if coord != "align_corners" else ([out[2], out[3]], None)
        return ctx.call(aten.upsample_bilinear2d.vec, x, output_size, coord == "align_corners", factors)
    for d, c in zip((2, 3), coords):  # separable linear interpolation with constant index maps and weights
        c = np.clip(c, 0, shape[d] - 1)
        low = np.floor(c).astype(np.int64)
        high = np.minimum(low + 1, shape[d] - 1)
        weight = torch.from_numpy((c - low).astype(np.float32)).to(ctx.dtype(0)).reshape([-1] + [1] * (3 - d))
        lo = ctx.call(aten.index_select.default, x, d, ctx.param(f"low_{d}", torch.from_numpy(low)))
        hi = ctx.call(aten.index_select.default, x, d, ctx.param(f"high_{d}", torch.from_numpy(high)))
        lo = ctx.call(aten.mul.Tensor, lo, ctx.param(f"low_weight_{d}", 1 - weight))
        x = ctx.call(aten.add.Tensor, lo, ctx.call(aten.mul.Tensor, hi, ctx.param(f"high_weight_{d}", weight)))
    return x
