"""Integer depthwise convs on the 4-way int8 dot product, with the pixels in the vector lanes.

A depthwise conv reduces over only kh x kw taps per output, so there is no channel reduction for
a dot product to take. The taps of one kernel row are: with kw <= 4, the 4 bytes of a lane hold
the kw input pixels one output pixel reads in that row (padded with a zero weight), and one
dot-product instruction adds a whole kernel row for L = 16 (or 8) output pixels:

    Xd[n, c, y, j, k] = x[n, c, y - pad_top, j * s + k - pad_left]
                        (z_x outside x, for k >= kw, and for the j >= OW that pad a row to OWp)
    Wd[c, kh, k]      = W[c, 0, kh, k]   (0 for k >= kw; at compile time)
    acc[n, c, oh, j]  = sum_{kh, k} Xd[n, c, oh * s_h + kh, j, k] * Wd[c, kh, k]      (j < OWp)
    out[n, c, oh, ow] = requantize(acc[n, c, oh, ow] + b'[c])                          (ow < OW)

OWp rounds the output width up to a multiple of L, so every row is whole vectors (14 -> 16,
7 -> 8); the padding columns are computed and dropped. A 3x3 conv is 3 vpdpbusd per 16 outputs
where the float32 form (lowering/grouped_conv.py) takes 9 multiply-adds per 16 and converts
every input byte to float first. The zero point folds into the bias (b' = b - z_x sum W[c]), as
in the other integer kernels.

Schedule (`Int8DepthwiseRule`): parallel over (n, c); per channel, Xd's rows are packed into
cache, then

    j -> (jo, jt: t_w vectors, jl: L lanes),  oh -> (oho, oht: t_h rows)
    order (n, c | Xd; oho, jo | kh, oht, jt, jl, k);  (jl, k) tensorized with the pixel-lane
    intrinsic of lowering/int8_pixels.py (vpdpbusd on x86 VNNI, sdot on AArch64)

and the requantization epilogue writes the channel's plane row by row with vector stores.
Used for multiplier-1 depthwise convs with kw <= 4, no dilation, on targets with a dot product.
"""
from __future__ import annotations

from tvm import tirx
from tvm.s_tir import dlight as dl

from .grouped_conv import padded_plane, schedule_padding
from .int8_kernels import BLOCK_ATTR, data_shift, kernel_data_dtype
from .int8_pixels import block_axes, padded_lanes, pixel_kernel, present
from .schedule_common import row_vector_width

DEPTHWISE_BLOCK = "qdepthwise_dot"
ACCUMULATORS = 16  # vector accumulators per tile: half the register file, the rest for the data


def uses_depthwise_dot(weight_shape, in_channels: int, groups: int, dilation, dot_product: bool) -> bool:
    """Does the grouped integer conv take this kernel (module docstring)?"""
    out_channels, group_channels, _, kernel_w = (int(e) for e in weight_shape)
    return (dot_product and groups == in_channels == out_channels > 1 and group_channels == 1 and kernel_w <= 4
            and tuple(dilation) == (1, 1))


def pack_depthwise_weight(weight):
    """Wd[c, kh, k] = W[c, 0, kh, k], 0 for k >= kw (TE: folded at compile time)."""
    from tvm import te

    channels, _, kernel_h, kernel_w = (int(e) for e in weight.shape)

    def element(c, y, k):
        return tirx.if_then_else(k < kernel_w, weight[c, 0, y, tirx.min(k, kernel_w - 1)], tirx.const(0, "int8"))

    return te.compute((channels, kernel_h, 4), element, name="packed_weight")


def depthwise_acc(data, packed, kernel_w: int, strides, padding, x_zero_point: int):
    """int32 accumulator of the depthwise conv (module docstring), cropped to the output width;
    `kernel_w`: the taps per row that `packed` holds (the rest of its 4 are zero)."""
    from tvm import te

    batch, channels, height, width = (int(e) for e in data.shape)
    kernel_h = int(packed.shape[1])
    (stride_h, stride_w), (top, left) = strides, padding
    out_h = (height + 2 * top - kernel_h) // stride_h + 1
    out_w = (width + 2 * left - kernel_w) // stride_w + 1
    lanes = padded_lanes(out_w)
    padded_w = -(-out_w // lanes) * lanes
    rows, columns = (out_h - 1) * stride_h + kernel_h, (padded_w - 1) * stride_w + 4
    dtype, shift = kernel_data_dtype(), data_shift(str(data.dtype))

    def to_kernel_dtype(value):
        return (value.astype("int32") + shift).astype(dtype) if shift else value

    plane, _ = padded_plane(data, (top, left, rows - height - top, columns - width - left), 1, 1,
                            x_zero_point + shift, dtype, to_kernel_dtype)
    packed_data = te.compute((batch, channels, rows, padded_w, 4),
                             lambda n, c, y, j, k: plane[n, c, y, j * stride_w + k], name="pack_taps")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rk = te.reduce_axis((0, 4), name="rk")
    acc = te.compute(
        (batch, channels, out_h, padded_w),
        lambda n, c, y, j: te.sum(packed_data[n, c, y * stride_h + ry, j, rk].astype("int32")
                                  * packed[c, ry, rk].astype("int32"), axis=[ry, rk]),
        name=DEPTHWISE_BLOCK, attrs={BLOCK_ATTR: lanes})
    if padded_w == out_w:
        return acc
    return te.compute((batch, channels, out_h, out_w), lambda n, c, y, x: acc[n, c, y, x], name="drop_padding")


def _tile(out_h: int, vectors: int) -> tuple[int, int]:
    """(t_h rows, t_w vectors) of accumulators: whole rows when they fit, at most ACCUMULATORS."""
    t_w = max(d for d in range(1, min(vectors, ACCUMULATORS) + 1) if vectors % d == 0)
    t_h = max(d for d in range(1, ACCUMULATORS // t_w + 1) if out_h % d == 0)
    return t_h, t_w


class Int8DepthwiseRule(dl.ScheduleRule):
    """Schedule for the `qdepthwise_dot` kernels (module docstring)."""

    name = "depthwise-int8-dot"

    def apply(self, func, target, tunable):
        found = pixel_kernel(func, target, DEPTHWISE_BLOCK, stages_before=2)
        if found is None:
            return None
        sch, (plane, taps), block, last, lanes, intrinsic = found
        _, _, out_h, padded_w = (int(e) for e in sch.get(block).writes[0].source.shape)
        (n, channel, oh, ow), (*kernel_rows, inner) = block_axes(sch, block)  # no kernel row loop: 1 x kw
        t_h, t_w = _tile(out_h, padded_w // lanes)
        row_outer, row_tile = sch.split(oh, [None, t_h]) if oh is not None else (None, None)  # None: one row
        owo, owt, owl = sch.split(ow, [None, t_w, lanes])
        sch.reorder(*present(n, channel, row_outer), owo, *kernel_rows, *present(row_tile), owt, owl, inner)
        outer = sch.fuse(*present(n, channel))
        sch.parallel(outer)
        sch.compute_at(taps, outer)  # the channel's padded plane and rows of taps, in cache
        sch.compute_at(plane, outer)
        schedule_padding(sch, plane, 16)
        sch.unroll(sch.get_loops(taps)[-1])
        if last is not None:
            sch.reverse_compute_at(last, outer)
            columns = sch.get_loops(last)[-1]
            sch.vectorize(sch.split(columns, [None, row_vector_width(int(sch.get(columns).extent))])[1])
        for loop in present(row_tile, owt):
            sch.unroll(loop)
        init = sch.decompose_reduction(block, (kernel_rows + present(row_tile, owt))[0])
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(owl, intrinsic)
        return sch
