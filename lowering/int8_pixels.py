"""Integer convs with the pixels in the vector lanes: NCHW output written by whole vectors.

The channel-lane kernel (lowering/int8_kernels.py) keeps b = 16 output channels of one pixel in
a register. Its NCHW output is then a transpose: every tile's epilogue gathers each output row
out of 16-channel registers, and on the large, shallow convs of a mobile network (MobileNetV2's
16 -> 96 expansion at 112x112 reduces over 16 channels, its first conv over 3 x 3 x 3) that
gather costs more than the dot products. Here a register holds L = 16 (or 8) consecutive output
pixels of one output channel instead. With stride s along the width, the input is packed by
column phase, so that for every (kh, kw) the L pixels' inputs are contiguous:

    Xp[n, c // 4, y, q, j, c % 4] = x[n, c, y - pad_top, j * s + q - pad_left]
                                            (z_x outside x and for c >= C; per call)
    Wp[o, c // 4, kh, kw, c % 4]  = W[o, c, kh, kw]          (0 for c >= C; at compile time)
    acc[n, o, h, w] = sum_{c4, kh, kw, i} Xp[n, c4, h * s_h + kh, kw % s, w + kw // s, i]
                                          * Wp[o, c4, kh, kw, i]

The 4 interleaved channels of L pixels are L x 4 contiguous bytes, one vector load; the 4 int8
weights of an output channel are broadcast to every lane, and one dot-product instruction adds
L pixels' 4-channel sums: on x86 VNNI one vpdpbusd (zmm for L = 16, ymm for 8), on AArch64
L / 4 `sdot`. The zero point folds into the bias as in the channel-lane kernel
(b' = b - z_x sum W), and the requantization epilogue writes each of the tile's channel rows
with vector stores.

Schedule (`Int8PixelConv2dRule`):

    o -> (oo, ov: v channels),  w -> (wo, wt: t vectors, wl: L lanes)
    order (n, oo, h, wo | c4, kh, kw, ov, wt, wl, i);  (n, oo, h) parallel;  (wl, i) tensorized

v x t accumulators stay in registers over the reduction (v * t <= the register budget).
Used on targets with a 4-way int8 dot product for ungrouped, undilated convs whose output
channels 8 divides (`pixel_layout`): 1x1 convs and convs of shallow inputs whose output width
8 divides, row by row; and 1x1, stride-1, unpadded convs on narrower maps, whose H x W pixels
the converter reshapes into one row (a view), padded here to whole vectors (OWp) and cropped;
their epilogue then runs per block of v channels over the whole row. Measured on a 2-core Zen 4:
MobileNetV2's 16 -> 96 expansion 0.66 -> 0.30 ms, its first conv 0.22 -> 0.09 ms. ResNet-18's
64-channel 3x3 convs were as fast either way until the epilogues vectorized (codegen.build's
vectorize_nearbyint); since, the channel-lane kernel takes them in 0.80x of the time.
"""
from __future__ import annotations

from tvm import tirx
from tvm.s_tir import dlight as dl

from .int8_kernels import BLOCK_ATTR, has_vnni, padded_input, target_dot, word_broadcast
from .schedule_common import attach_epilogue, reads_directly, register_budget, row_vector_width

PIXEL_BLOCK = "qconv_pixels"  # not a prefix of int8_kernels.QCONV_BLOCK's kernels, nor they of it
VNNI_PIXELS = "slimgraph_vnni_pixels_{lanes}x4_u8i8i32"
SDOT_PIXELS = "slimgraph_sdot_pixels_{lanes}x4_i8i8i32"


SHALLOW_CHANNELS = 16  # larger kernels on inputs this deep or deeper take the channel-lane kernel


def pixel_lanes(width: int) -> int:
    """Pixels per accumulator for an output `width`: 16 or 8 when it divides the width, else 0."""
    return next((lanes for lanes in (16, 8) if width % lanes == 0), 0)


def pixel_layout(weight_shape, stride, padding, dilation, groups: int, out_shape, dot_product: bool) -> str | None:
    """How the integer conv takes this kernel (module docstring), or None (the channel-lane one):
    "rows" when 8 divides the output width; "flat" for a 1x1, stride-1, unpadded conv on a
    narrower map (14x14, 7x7), whose H x W pixels are one row (a reshape, no copy), padded to
    whole vectors. A larger kernel takes the pixel lanes only on a shallow input (fewer than
    SHALLOW_CHANNELS channels: a network's first conv); on a deep one the channel-lane kernel's
    epilogue is paid once per kernel-size x channels dot products and wins (ResNet-18's 64-channel
    3x3 convs at 56x56: 0.80x of the time)."""
    out_channels, in_channels, kernel_h, kernel_w = (int(e) for e in weight_shape)
    if not dot_product or groups != 1 or tuple(dilation) != (1, 1) or out_channels % 8:
        return None
    if (kernel_h, kernel_w) != (1, 1) and in_channels >= SHALLOW_CHANNELS:
        return None
    if pixel_lanes(int(out_shape[3])):
        return "rows"
    if (kernel_h, kernel_w) != (1, 1) or tuple(stride) != (1, 1) or any(padding):
        return None
    return "rows" if int(out_shape[2]) == 1 else "flat"  # a single row is padded to whole vectors


def padded_lanes(width: int) -> int:
    """Pixels per accumulator for a row of `width` that 16 or 8 may not divide (then it is padded)."""
    return pixel_lanes(width) or (16 if width >= 128 else 8)


def pack_pixel_weight(weight):
    """Wp[o, c // 4, kh, kw, c % 4] = W[o, c, kh, kw], 0 for c >= C (TE: folded at compile time)."""
    from tvm import te

    out_channels, in_channels, kernel_h, kernel_w = (int(e) for e in weight.shape)

    def element(o, c4, y, x, i):
        channel = c4 * 4 + i
        return tirx.if_then_else(channel < in_channels, weight[o, tirx.min(channel, in_channels - 1), y, x],
                                 tirx.const(0, "int8"))

    return te.compute((out_channels, -(-in_channels // 4), kernel_h, kernel_w, 4), element, name="packed_weight")


def qconv_pixels_acc(data, packed, strides, padding, x_zero_point: int):
    """int32 accumulator of the pixel-lane conv (module docstring), without the bias."""
    from tvm import te

    batch, _, height, width = (int(e) for e in data.shape)
    out_channels, groups4, kernel_h, kernel_w, _ = (int(e) for e in packed.shape)
    (stride_h, stride_w), (top, left) = strides, padding
    out_h = (height + 2 * top - kernel_h) // stride_h + 1
    out_w = (width + 2 * left - kernel_w) // stride_w + 1
    lanes = padded_lanes(out_w)
    padded_w = -(-out_w // lanes) * lanes
    rows, columns = (out_h - 1) * stride_h + kernel_h, padded_w + (kernel_w - 1) // stride_w

    def interleave(n, c4, y, phase, column, i):
        return padded_input(data, n, c4 * 4 + i, y - top, column * stride_w + phase - left, x_zero_point)

    packed_data = te.compute((batch, groups4, rows, stride_w, columns, 4), interleave, name="pack_pixels")
    rc = te.reduce_axis((0, groups4), name="rc")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    ri = te.reduce_axis((0, 4), name="ri")
    acc = te.compute(
        (batch, out_channels, out_h, padded_w),
        lambda n, o, y, x: te.sum(
            packed_data[n, rc, y * stride_h + ry, rx % stride_w, x + rx // stride_w, ri].astype("int32")
            * packed[o, rc, ry, rx, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name=PIXEL_BLOCK, attrs={BLOCK_ATTR: lanes})
    if padded_w == out_w:
        return acc
    return te.compute((batch, out_channels, out_h, out_w), lambda n, o, y, x: acc[n, o, y, x], name="drop_padding")


def _description(lanes: int, data_dtype: str):
    """c[l] += sum_k int32(a[l, k]) * int32(b[k]) for l < lanes: the step both intrinsics implement."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(a: T.Buffer((lanes, 4), data_dtype, offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
                    c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:4], b[0:4])
            T.writes(c[0:lanes])
            for lane, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vl, vk = T.axis.remap("SR", [lane, k])
                    c[vl] = c[vl] + T.cast(a[vl, vk], "int32") * T.cast(b[vk], "int32")

    return description


def _vnni(lanes: int):
    """One vpdpbusd on `lanes` int32: uint8 pixels (lanes x 4 bytes) times the 4 weights broadcast."""
    from tvm.script import tirx as T

    intrinsic = f"llvm.x86.avx512.vpdpbusd.{lanes * 32}"

    @T.prim_func(s_tir=True)
    def vnni(a: T.Buffer((lanes, 4), "uint8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:4], b[0:4])
            T.writes(c[0:lanes])
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic), c.vload([0], dtype=f"int32x{lanes}"),
                a.vload([0, 0], dtype=f"uint8x{lanes * 4}"),
                word_broadcast(b, lanes), dtype=f"int32x{lanes}")

    return vnni


def _sdot(lanes: int):
    """AArch64: lanes / 4 sdot, each adding 4 pixels' 4-channel dot products into 4 int32 lanes."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def sdot(a: T.Buffer((lanes, 4), "int8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:4], b[0:4])
            T.writes(c[0:lanes])
            for j in T.unroll(lanes // 4):
                c[T.ramp(j * 4, 1, 4)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), c.vload([j * 4], dtype="int32x4"),
                    a.vload([j * 4, 0], dtype="int8x16"), word_broadcast(b, 4),
                    dtype="int32x4")

    return sdot


def register_pixel_intrinsic(dot: str, lanes: int) -> str:
    """The pixel-lane step's intrinsic for `dot` ("vnni" or "sdot"), registered on first use."""
    from tvm.s_tir import TensorIntrin

    if dot == "vnni":
        name, data_dtype, implementation = VNNI_PIXELS.format(lanes=lanes), "uint8", _vnni
    else:
        name, data_dtype, implementation = SDOT_PIXELS.format(lanes=lanes), "int8", _sdot
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _description(lanes, data_dtype), implementation(lanes))
    return name


def choose_pixel_tile(out_channels: int, vectors_per_row: int, budget: int) -> tuple[int, int]:
    """(v output channels, t pixel vectors): v * t <= budget accumulators, v dividing the channels
    and t the row; the most dot products per tile, then the fewest vectors per step."""
    best = (1, 1)
    for t in (1, 2, 3, 4):
        if vectors_per_row % t:
            continue
        v = max((d for d in range(1, budget // t + 1) if out_channels % d == 0), default=1)
        if v * t > best[0] * best[1]:
            best = (v, t)
    return best


def pixel_kernel(func, target, block_name: str, stages_before: int):
    """(schedule, the blocks before the accumulator, the accumulator, the last block or None, its
    lanes L, the target's dot product: "vnni" or "sdot") when `func` is such a kernel with
    `stages_before` input stages, on a target with a dot product; the epilogue's elementwise chain
    is inlined into its last block. Else None."""
    from .int8_schedules import find_int8_kernel

    found = find_int8_kernel(func, target, block_name)
    if found is None:
        return None
    sch, infos, conv, lanes = found
    dot = target_dot(target)
    before, after = infos[:infos.index(conv)], infos[infos.index(conv) + 1:]
    if dot is None or len(before) != stages_before:
        return None
    for info in after[:-1]:
        sch.compute_inline(info.block_rv)
    last = after[-1].block_rv if after else None
    return sch, [info.block_rv for info in before], conv.block_rv, last, lanes, dot


def block_axes(sch, block):
    """([the loop of each output dimension, None for a unit one that normalization dropped],
    the reduction loops in order): normalized, a kernel has one loop per block iterator."""
    stmt = sch.get(block)
    pairs = list(zip(sch.get_loops(block), stmt.iter_vars))
    spatial = [(loop, iv.var) for loop, iv in pairs if iv.iter_type == tirx.IterVar.DataPar]
    axes = [next((loop for loop, var in spatial if region.min.same_as(var)), None) for region in stmt.writes[0].region]
    return axes, [loop for loop, iv in pairs if iv.iter_type == tirx.IterVar.CommReduce]


def present(*loops) -> list:
    """The loops that exist (block_axes gives None for a dropped unit one)."""
    return [loop for loop in loops if loop is not None]


def _reads_own_tile(sch, consumer, block) -> bool:
    """Does `consumer` read the accumulator at its own indices, over the same width (no padding)?"""
    same_width = sch.get(consumer).writes[0].source.shape[-1] == sch.get(block).writes[0].source.shape[-1]
    return bool(same_width) and reads_directly(sch, consumer, block)


class Int8PixelConv2dRule(dl.ScheduleRule):
    """Schedule for the `qconv_pixels` kernels (module docstring)."""

    name = "conv2d-int8-pixels"

    def apply(self, func, target, tunable):
        found = pixel_kernel(func, target, PIXEL_BLOCK, stages_before=1)
        if found is None:
            return None
        sch, (pack,), block, last, lanes, dot = found
        intrinsic = register_pixel_intrinsic(dot, lanes)
        _, channels, _, width = (int(e) for e in sch.get(block).writes[0].source.shape)
        (n, co, oh, ow), (*outer_reduction, inner) = block_axes(sch, block)
        batch_loops, row_loop = present(n), present(oh)
        registers_per_accumulator = 1 if has_vnni(target) else lanes // 4  # a zmm / ymm, or NEON q registers
        v, t = choose_pixel_tile(channels, width // lanes, register_budget(target) // registers_per_accumulator)
        coo, cv = sch.split(co, [None, v])
        owo, owt, owl = sch.split(ow, [None, t, lanes])
        sch.reorder(*batch_loops, coo, *row_loop, owo, *outer_reduction, cv, owt, owl, inner)
        whole_rows = last is not None and not _reads_own_tile(sch, last, block)
        if not whole_rows:
            epilogue = attach_epilogue(sch, block, last, owo)
            rows, columns = sch.get_loops(epilogue)[-2:]  # v rows of t * L contiguous pixels: vector stores
            sch.vectorize(columns)
            sch.unroll(rows)  # else LLVM vectorizes across the rows: a byte scatter
        outer = sch.fuse(*batch_loops, coo, *row_loop)
        if whole_rows:  # a padded row (its last vector partly outside), or reshaped back to H x W: per v channels
            sch.reverse_compute_at(last, outer)
            columns = sch.get_loops(last)[-1]
            sch.vectorize(sch.split(columns, [None, row_vector_width(int(sch.get(columns).extent))])[1])
        sch.parallel(outer)
        sch.unroll(cv)
        sch.unroll(owt)
        pack_loops = sch.get_loops(pack)  # (n, c4, rows, phase,) columns, i: parallel over rows
        sch.parallel(sch.fuse(*pack_loops[:-2]) if len(pack_loops) > 2 else pack_loops[0])
        init = sch.decompose_reduction(block, (outer_reduction or [cv])[0])  # 4 channels, 1x1: i is the reduction
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(owl, intrinsic)
        return sch
