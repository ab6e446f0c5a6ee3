"""Integer depthwise convs on the 4-way int8 dot product, with the pixels in the vector lanes.

A depthwise conv reduces over only kh x kw taps per output, so there is no channel reduction for
a dot product to take. The taps of one kernel row are: with kw <= 4, the 4 bytes of a lane hold
the kw input pixels one output pixel reads in that row (padded with a zero weight), and one
dot-product instruction adds a whole kernel row for L = 16 (or 8) output pixels:

    P[n, c, y, x]    = x[n, c, y - pad_top, x - pad_left]       (z_x outside x: the padded plane)
    Wd[c, kh, k]     = W[c, 0, kh, k]          (0 for k >= kw; at compile time)
    acc[n, c, oh, j] = sum_{kh, k} P[n, c, oh * s_h + kh, j * s_w + k] * Wd[c, kh, k]    (j < OWp)
    out[n, c, oh, ow] = requantize(acc[n, c, oh, ow] + b'[c])                            (ow < OW)

OWp rounds the output width up to a multiple of L, so every row is whole vectors (14 -> 16,
7 -> 8); the padding columns are computed and dropped. The L lanes' taps of one kernel row,
P[.., j0 * s + l * s + k] for l < L, k < 4, span (L - 1) * s + 4 bytes of a plane row: one
window load of that many bytes (rounded up to a power of two; the plane's rows are wide enough
that it stays inside them) and one byte shuffle (vpermb on AVX-512 VBMI, tbl on AArch64) make
the L x 4 bytes the dot product takes, with no copy of the taps in memory. A 3x3 conv is then 3
vpdpbusd per 16 outputs where the float32 form (lowering/grouped_conv.py) takes 9 multiply-adds
per 16 and converts every input byte to float first. The zero point folds into the bias
(b' = b - z_x sum W[c]), as in the other integer kernels.

Schedule (`Int8DepthwiseRule`): parallel over (n, c); per channel, P is padded in cache, then

    j -> (jo, jt: t_w vectors, jl: L lanes),  oh -> (oho, oht: t_h rows)
    order (n, c | P; oho, jo | kh, oht, jt, jl, k);  (jl, k) tensorized with the window
    intrinsic (load, shuffle, then vpdpbusd on x86 VNNI or L / 4 sdot on AArch64)

and the requantization epilogue writes the channel's plane row by row with vector stores.
Used for multiplier-1 depthwise convs with kw <= 4, no dilation, on targets with a dot product.
Measured alone on a 2-core Zen 4, MobileNetV2's 960-channel 7x7 conv: 0.042 ms with the taps
copied into memory byte by byte, 0.019 ms with window loads and an expression for the weights.
"""
from __future__ import annotations

from tvm import tirx
from tvm.s_tir import dlight as dl

from .grouped_conv import padded_plane, schedule_padding
from .int8_kernels import BLOCK_ATTR, data_shift, kernel_data_dtype, word_broadcast
from .int8_pixels import block_axes, padded_lanes, pixel_kernel, present
from .schedule_common import row_vector_width

DEPTHWISE_BLOCK = "qdepthwise_dot"
STRIDE_ATTR = "slimgraph.window_stride"  # block annotation: the stride along the width
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


def window_bytes(lanes: int, stride: int) -> int:
    """Bytes one window load takes: a power of two >= the (L - 1) * s + 4 that L lanes' taps span."""
    span = (lanes - 1) * stride + 4
    return max(16, 1 << (span - 1).bit_length())


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
    rows = (out_h - 1) * stride_h + kernel_h
    # every window load of a row (module docstring) stays inside the row: its last one ends here
    columns = max((padded_w - 1) * stride_w + 4, (padded_w - lanes) * stride_w + window_bytes(lanes, stride_w))
    dtype, shift = kernel_data_dtype(), data_shift(str(data.dtype))

    def to_kernel_dtype(value):
        return (value.astype("int32") + shift).astype(dtype) if shift else value

    plane, _ = padded_plane(data, (top, left, rows - height - top, columns - width - left), 1, 1,
                            x_zero_point + shift, dtype, to_kernel_dtype)
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rk = te.reduce_axis((0, 4), name="rk")
    acc = te.compute(
        (batch, channels, out_h, padded_w),
        lambda n, c, y, j: te.sum(plane[n, c, y * stride_h + ry, j * stride_w + rk].astype("int32")
                                  * packed[c, ry, rk].astype("int32"), axis=[ry, rk]),
        name=DEPTHWISE_BLOCK, attrs={BLOCK_ATTR: lanes, STRIDE_ATTR: stride_w})
    if padded_w == out_w:
        return acc
    return te.compute((batch, channels, out_h, out_w), lambda n, c, y, x: acc[n, c, y, x], name="drop_padding")


def _window_description(lanes: int, stride: int, data_dtype: str):
    """c[l] += sum_k int32(a[l * s + k]) * int32(b[k]) for l < lanes: one kernel row's taps."""
    from tvm.script import tirx as T

    span = (lanes - 1) * stride + 4

    @T.prim_func(s_tir=True)
    def description(a: T.Buffer((span,), data_dtype, offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
                    c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:span], b[0:4])
            T.writes(c[0:lanes])
            for lane, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vl, vk = T.axis.remap("SR", [lane, k])
                    c[vl] = c[vl] + T.cast(a[vl * stride + vk], "int32") * T.cast(b[vk], "int32")

    return description


def _taps(a, lanes: int, stride: int, data_dtype: str, first: int = 0, count: int | None = None):
    """Lanes first .. first + count of the window as L x 4 bytes: one load of window_bytes, one byte
    shuffle (vpermb on AVX-512 VBMI, tbl on AArch64) that puts lane l's 4 taps a[l * s + k] together."""
    from tvm.script import tirx as T

    count = lanes if count is None else count
    window = window_bytes(lanes, stride)
    loaded = a.vload([0], f"{data_dtype}x{window}")
    copies = -(-4 * count // window)  # a shuffle gives at most as many lanes as it takes in
    return T.Shuffle([loaded] * copies, [(first + l) * stride + k for l in range(count) for k in range(4)])


def _window_vnni(lanes: int, stride: int):
    from tvm.script import tirx as T

    span, intrinsic = (lanes - 1) * stride + 4, f"llvm.x86.avx512.vpdpbusd.{lanes * 32}"

    @T.prim_func(s_tir=True)
    def vnni(a: T.Buffer((span,), "uint8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:span], b[0:4])
            T.writes(c[0:lanes])
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic), c.vload([0], dtype=f"int32x{lanes}"),
                _taps(a, lanes, stride, "uint8"), word_broadcast(b, lanes),
                dtype=f"int32x{lanes}")

    return vnni


def _window_sdot(lanes: int, stride: int):
    from tvm.script import tirx as T

    span = (lanes - 1) * stride + 4

    @T.prim_func(s_tir=True)
    def sdot(a: T.Buffer((span,), "int8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:span], b[0:4])
            T.writes(c[0:lanes])
            for j in T.unroll(lanes // 4):
                c[T.ramp(j * 4, 1, 4)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), c.vload([j * 4], dtype="int32x4"),
                    _taps(a, lanes, stride, "int8", j * 4, 4), word_broadcast(b, 4),
                    dtype="int32x4")

    return sdot


def register_window_intrinsic(dot: str, lanes: int, stride: int) -> str:
    """The window step's intrinsic for `dot` ("vnni" or "sdot"), registered on first use."""
    from tvm.s_tir import TensorIntrin

    if dot == "vnni":
        name, data_dtype, implementation = f"slimgraph_vnni_window_{lanes}s{stride}_u8i8i32", "uint8", _window_vnni
    else:
        name, data_dtype, implementation = f"slimgraph_sdot_window_{lanes}s{stride}_i8i8i32", "int8", _window_sdot
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _window_description(lanes, stride, data_dtype), implementation(lanes, stride))
    return name


def _tile(out_h: int, vectors: int) -> tuple[int, int]:
    """(t_h rows, t_w vectors) of accumulators: whole rows when they fit, at most ACCUMULATORS."""
    t_w = max(d for d in range(1, min(vectors, ACCUMULATORS) + 1) if vectors % d == 0)
    t_h = max(d for d in range(1, ACCUMULATORS // t_w + 1) if out_h % d == 0)
    return t_h, t_w


class Int8DepthwiseRule(dl.ScheduleRule):
    """Schedule for the `qdepthwise_dot` kernels (module docstring)."""

    name = "depthwise-int8-dot"

    def apply(self, func, target, tunable):
        found = pixel_kernel(func, target, DEPTHWISE_BLOCK, stages_before=1)
        if found is None:
            return None
        sch, (plane,), block, last, lanes, dot = found
        intrinsic = register_window_intrinsic(dot, lanes, int(sch.get(block).annotations[STRIDE_ATTR]))
        _, _, out_h, padded_w = (int(e) for e in sch.get(block).writes[0].source.shape)
        (n, channel, oh, ow), (*kernel_rows, inner) = block_axes(sch, block)  # no kernel row loop: 1 x kw
        t_h, t_w = _tile(out_h, padded_w // lanes)
        row_outer, row_tile = sch.split(oh, [None, t_h]) if oh is not None else (None, None)  # None: one row
        owo, owt, owl = sch.split(ow, [None, t_w, lanes])
        sch.reorder(*present(n, channel, row_outer), owo, *kernel_rows, *present(row_tile), owt, owl, inner)
        outer = sch.fuse(*present(n, channel))
        sch.parallel(outer)
        sch.compute_at(plane, outer)  # the channel's padded plane, in cache
        schedule_padding(sch, plane, 16)
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
