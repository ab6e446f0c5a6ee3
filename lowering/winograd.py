"""Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 "same" convs, and its CPU schedule.

Lavin & Gray's minimal filtering: an m x m tile of outputs of a 3x3 conv comes from an
alpha x alpha tile of inputs (alpha = m + 2) with alpha^2 multiplies per (ci, co) instead of
9 m^2; 2.25x fewer with m = 2, 4x fewer with m = 4. With the constant matrices B, G, A below:

    U[eps, nu, co, ci]   = (G  W[co, ci] G^T)[eps, nu]            weight, once at compile time
    V[eps, nu, ci, tile] = (B^T d[ci, tile] B)[eps, nu]            d: the tile's alpha x alpha inputs
    M[eps, nu, co, tile] = sum_ci U[eps, nu, co, ci] * V[eps, nu, ci, tile]      alpha^2 GEMMs
    Y[co, tile]          = A^T M[:, :, co, tile] A                 the m x m outputs

Legalization (`legalize_winograd_conv2d`): the weight transform is a kernel on a constant
(FoldConstant runs it once), packed as Up[eps, nu, co // cb, ci, co % cb] with cb the target's
fp32 lanes; the rest is one kernel with the conv's fused epilogue. m = 4 where it divides the map
and the call has at least MIN_TILES tiles of 4 (ResNet-18's 56 x 56 and 28 x 28), else m = 2;
tiles past the map's edge read zeros and their outputs are not stored (9 x 13 = 5 x 7 tiles of 2).

Weight reuse (MIN_TILES): the transformed weights, alpha^2 / 9 times the direct conv's bytes
(16/9 with m = 2, 4 with m = 4), are read once per call and each is used once per tile. In a
whole model they come from memory, not cache (the other layers' weights evicted them), so with few
tiles their bytes, not the multiplies, set the time. Measured in one process on an Intel Xeon
(AVX-512, 2 cores), ResNet-18 whole model, alternated against ONNX Runtime: layer4's 7 x 7 convs
(16 tiles of 2, 16.8 MB of transformed weights per 512-channel conv) as Winograd 11.42 ms, as the
packed direct conv (9.4 MB) 10.86; layer3's 14 x 14 (49 tiles) is faster as Winograd (direct:
11.88 vs 11.34 ms); 28 x 28 with m = 4 (49 tiles, 2.4 MB) instead of m = 2 (196 tiles, 1 MB)
10.32 vs 10.86 ms. (On the AMD Zen 4 host of earlier sessions the 7 x 7 Winograd had measured
12.8 vs 13.1 ms, faster, against an older direct conv; not re-measured there.)

Which convs (`winograd_tile`): fp32 NCHW 3x3 convs with stride 1, dilation 1, padding 1, at least
MIN_IN_CHANNELS inputs, output channels in blocks of at least 4, and at least MIN_MULTIPLY_ADDS
of direct-conv work. Kernels timed alone, alternated, Winograd vs direct: the digit CNN's 16->32
conv at 8x8 (0.3 M multiply-adds) 7.6 vs 5.4 us, its parallel steps costing more than the
multiplies they save; at 2.4 M level (28.0 vs 27.3 us at 32x32x16) or faster (44 vs 53 us, 16
channels at 32x32); at 5.3 M 66 vs 77 us; ResNet-18's, 115.6 M each, about half the time.

Schedule (`WinogradConv2dRule`): the re-layout below, then three parallel steps over the whole map:
    V:  in parallel over ci; eps, nu unrolled, tx vectorized (the input is first re-laid out per
        tile column, cols[n, ci, y, b, tx] = pad(x)[n, ci, y, tx * m + b], so the loads are
        contiguous, and each (eps, nu) keeps only B's non-zero terms)
    M:  as the packed direct conv, per (eps, nu): co -> (coo, cv, cl: cb lanes), tiles -> (to, ti),
        the cv x ti accumulators in registers over ci, every multiply-add
        acc[cv][ti] += broadcast(V[eps, nu, ci, tile]) * Up[eps, nu, coo.., ci, cb lanes];
        (eps, nu, coo) in parallel
    Y:  in parallel over (n, co // cb); the m x m outputs of a tile unrolled, vectorized over the
        cb output channels, with the epilogue (bias, residual add, activation) before the store.
V's layout: a GEMM tile (cv channel blocks x ti tiles) reads, per input channel, ti values of V and cv
vectors of U; with V as [eps, nu, ci, tile] each channel's ti values sit on their own cache line, so a
tile group touches ci x (cv + 1) lines. Where that exceeds L1 (ResNet-18's layer3: 256 x 3 lines, 48 KB;
the 32 KB of U for the task were evicted before the next group used them again), V is laid out by tile
group instead, [eps, nu, tile // ti, ci, tile % ti] (ti dividing the row of tiles; the data step then
runs over rows of tiles outside channels so its stores stay contiguous): a group's V for all channels
is one contiguous run of ci x ti values. Layer3's conv alone 0.454 -> 0.425 ms warm (its GEMM step
0.43 -> 0.34 ms under perf), ResNet-18 2.2 % faster (alternated with ONNX Runtime, 20 rounds);
layer2's (128 x 3 lines) measured level and keeps the old layout.
A schedule that kept V and M per row of tiles in L2 (one parallel task per tile row) measured
no faster on ResNet-18 (alternated in one process: 14.6 vs 14.3 ms) and needs m to divide the map.
Error: measured against PyTorch, ResNet-18's outputs differ by 3e-7 (as with the direct conv); a
single 64-channel conv's by ~5e-6 of its largest output with m = 4 (G's 1/6 and 1/24 are not exact
in fp32), ~5e-7 with m = 2.
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from .conv_packed import LANES_ATTR, channel_block
from .schedule_common import choose_tile, register_budget, row_vector_width

GEMM_BLOCK = "winograd_bgemm"
# (B^T, G, A^T) for F(m x m, 3 x 3), interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4)
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "f8"),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], "f8"),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "f8")),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], "f8"),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], "f8"),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], "f8")),
}
LONGEST_VECTOR = 16  # tile columns one vector of the data transform covers, at most
MIN_IN_CHANNELS = 16  # below, the GEMMs' reduction is too short to pay for the transforms
MIN_MULTIPLY_ADDS = 1 << 22  # a direct conv's; at 2.4 M the two were level (module docstring)
TILE_GROUPS_OUTSIDE_CHANNELS = True  # V's layout (module docstring); False for A/B runs
L1_DATA_BYTES = 32 << 10  # the L1 data cache assumed (32 KB or more on current x86 and ARM cores)
CACHE_LINE = 64  # bytes
MIN_TILES = 32  # tiles per call that reuse each transformed weight, at least (module docstring)


def winograd_tile(call, lanes: int) -> int | None:
    """m for a conv `legalize_winograd_conv2d` can take (see module docstring), else None."""
    attrs = call.attrs
    if not all(isinstance(e, tirx.IntImm) for e in [*call.args[0].ty.shape, *call.args[1].ty.shape]):
        return None  # a symbolic size: the tiling needs them all
    batch, in_channels, height, width = (int(e) for e in call.args[0].ty.shape)
    out_channels, _, kernel_h, kernel_w = (int(e) for e in call.args[1].ty.shape)
    if ((kernel_h, kernel_w) != (3, 3) or [int(s) for s in attrs.strides] != [1, 1]
            or [int(d) for d in attrs.dilation] != [1, 1] or [int(p) for p in attrs.padding] != [1] * 4
            or int(attrs.groups) != 1 or in_channels < MIN_IN_CHANNELS
            or channel_block(out_channels, lanes) < min(lanes, 4)
            or in_channels * out_channels * height * width * 9 < MIN_MULTIPLY_ADDS):
        return None
    if height % 4 == 0 and width % 4 == 0 and batch * (height // 4) * (width // 4) >= MIN_TILES:
        return 4
    if batch * -(-height // 2) * -(-width // 2) >= MIN_TILES:
        return 2  # the last row / column of tiles may reach past the map (9 = 5 tiles of 2)
    return None  # too few tiles: the weights' bytes outweigh the multiplies saved


def _linear(terms):
    """sum of coefficient * expression, skipping zeros and multiplies by +-1."""
    total = None
    for coefficient, expr in terms:
        if coefficient == 0:
            continue
        term = expr if coefficient == 1 else -expr if coefficient == -1 else \
            expr * tirx.const(float(coefficient), "float32")
        total = term if total is None else total + term
    return total if total is not None else tirx.const(0.0, "float32")


def _select(index, exprs):
    """exprs[index] for a loop variable index: a Select chain that unrolling folds to one term."""
    chosen = exprs[-1]
    for k in range(len(exprs) - 2, -1, -1):
        chosen = tirx.Select(index == k, exprs[k], chosen)
    return chosen


def _pack_winograd_weight(weight, m: int, block: int):
    from tvm import te

    out_channels, in_channels, _, _ = (int(e) for e in weight.shape)
    _, g, _ = TRANSFORMS[m]
    alpha = m + 2

    def transformed(eps, nu, co_block, ci, lane):
        co = co_block * block + lane
        per_position = [_linear([(g[e][kh] * g[u][kw], weight[co, ci, kh, kw]) for kh in range(3) for kw in range(3)])
                        for e in range(alpha) for u in range(alpha)]
        return _select(eps * alpha + nu, per_position)

    return te.compute((alpha, alpha, out_channels // block, in_channels, block), transformed,
                      name="winograd_weight")


def _conv2d_winograd(data, packed, m: int):
    from tvm import te

    batch, in_channels, height, width = (int(e) for e in data.shape)
    alpha, _, blocks, _, block = (int(e) for e in packed.shape)
    b_t, _, a_t = TRANSFORMS[m]
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    cols = te.compute(  # the zero-padded input, re-laid out per tile column: contiguous along tx
        (batch, in_channels, tiles_h * m + 2, alpha, tiles_w),
        lambda n, c, y, b, tx: tirx.if_then_else(
            tirx.all(y >= 1, y <= height, tx * m + b >= 1, tx * m + b <= width),
            data[n, c, y - 1, tx * m + b - 1], tirx.const(0.0, "float32")), name="winograd_cols")

    def data_transform(eps, nu, c, n, ty, tx):
        per_position = [_linear([(b_t[e][a] * b_t[u][b], cols[n, c, ty * m + a, b, tx])
                                 for a in range(alpha) for b in range(alpha)])
                        for e in range(alpha) for u in range(alpha)]
        return _select(eps * alpha + nu, per_position)

    transformed = te.compute((alpha, alpha, in_channels, batch, tiles_h, tiles_w), data_transform,
                             name="winograd_data")
    rc = te.reduce_axis((0, in_channels), name="rc")
    products = te.compute(
        (alpha, alpha, blocks * block, batch, tiles_h, tiles_w),
        lambda e, u, co, n, ty, tx: te.sum(packed[e, u, co // block, rc, co % block]
                                           * transformed[e, u, rc, n, ty, tx], axis=rc),
        name=GEMM_BLOCK, attrs={LANES_ATTR: block})

    def output_transform(n, co, h, w):
        per_position = [_linear([(a_t[i][a] * a_t[j][b], products[a, b, co, n, h // m, w // m])
                                 for a in range(alpha) for b in range(alpha)])
                        for i in range(m) for j in range(m)]
        return _select((h % m) * m + w % m, per_position)

    return te.compute((batch, blocks * block, height, width), output_transform, name="winograd_output")


def legalize_winograd_conv2d(bb, call, m: int, lanes: int):
    data, weight = call.args
    block = channel_block(int(weight.ty.shape[0]), lanes)
    packed = bb.emit_te(_pack_winograd_weight, weight, m, block, primfunc_name_hint="winograd_weight")
    return bb.call_te(_conv2d_winograd, data, packed, m, primfunc_name_hint="conv2d_winograd")


class WinogradConv2dRule(dl.ScheduleRule):
    """Schedule for the kernels `legalize_winograd_conv2d` makes (module docstring)."""

    name = "conv2d-winograd"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        names = [sch.get(block).name_hint for block in blocks]
        if names[:4] != ["winograd_cols", "winograd_data", GEMM_BLOCK, "winograd_output"]:
            return None
        cols, data, gemm, *after = blocks
        if LANES_ATTR not in sch.get(gemm).annotations:
            return None
        for block in after[:-1]:  # the output transform and the epilogue before the last block
            sch.compute_inline(block)
        cb = int(sch.get(gemm).annotations[LANES_ATTR])
        m = int(sch.get(gemm).writes[0].source.shape[0]) - 2
        _schedule_in_stages(sch, cols, data, gemm, after[-1], m, cb, register_budget(target))
        sch.transform_layout(gemm, ("write", 0), lambda e, u, co, n, ty, tx: (e, u, co // cb, n, ty, tx, co % cb))
        return sch


def _schedule_in_stages(sch, cols, data, gemm, output, m, cb, budget):
    """The three steps one after the other, each over the whole map and in parallel (module
    docstring). The output step splits h and w by m (the last tiles may reach past the map: a
    bounds check there) and unrolls the m x m tile, so each output's Select folds to one sum."""
    _parallel_cols(sch, cols)
    eps, nu, co, n, ty, tx, ci = sch.get_loops(gemm)
    tiles_h, tiles_w, in_channels = (int(sch.get(loop).extent) for loop in (ty, tx, ci))
    tiles = sch.fuse(n, ty, tx)
    outer, v, owt = _tile_gemm(sch, gemm, eps, nu, co, tiles, ci, cb, budget)
    sch.parallel(sch.fuse(eps, nu, outer))
    d_eps, d_nu, d_ci, d_n, d_ty, d_tx = sch.get_loops(data)
    # a group of tiles reads, per input channel, a line of V and v of U: past L1, V as [eps, nu, group, ci, tile]
    if TILE_GROUPS_OUTSIDE_CHANNELS and tiles_w % owt == 0 and in_channels * (v + 1) * CACHE_LINE > L1_DATA_BYTES:
        groups_per_row = tiles_w // owt
        sch.transform_layout(data, ("write", 0), lambda e, u, c, b, y, x: (
            e, u, (b * tiles_h + y) * groups_per_row + x // owt, c, x % owt))
        sch.reorder(d_n, d_ty, d_ci, d_eps, d_nu, d_tx)  # a row of tiles: each plane's channels in turn
        sch.parallel(sch.fuse(d_n, d_ty, d_ci))
    else:
        sch.reorder(d_ci, d_n, d_ty, d_eps, d_nu, d_tx)
        sch.parallel(d_ci)
    _vectorize_data_transform(sch, d_eps, d_nu, d_tx)
    batch, channel, h, w = sch.get_loops(output)
    channel_blocks, channel_lanes = sch.split(channel, [None, cb])
    tile_row, row_in_tile = sch.split(h, [None, m])
    tile_col, col_in_tile = sch.split(w, [None, m])
    sch.reorder(batch, channel_blocks, tile_row, tile_col, row_in_tile, col_in_tile, channel_lanes)
    sch.parallel(sch.fuse(batch, channel_blocks))
    sch.unroll(row_in_tile)
    sch.unroll(col_in_tile)
    sch.vectorize(channel_lanes)
    sch.decompose_reduction(gemm, ci)


def _tile_gemm(sch, gemm, eps, nu, co, tiles, ci, cb, budget):
    """co -> (coo, cv, cl), tiles -> (to, ti): cv x ti accumulators of cb lanes over ci; returns coo, v
    and ti's extent."""
    v, owt = choose_tile(int(sch.get(co).extent) // cb, int(sch.get(tiles).extent), budget)
    coo, cv, cl = sch.split(co, [None, v, cb])
    to, ti = sch.split(tiles, [None, owt])
    sch.reorder(eps, nu, coo, to, ci, cv, ti, cl)
    sch.unroll(cv)
    sch.unroll(ti)
    sch.vectorize(cl)
    return coo, v, owt


def _vectorize_data_transform(sch, eps, nu, tx):
    sch.unroll(eps)
    sch.unroll(nu)
    if int(sch.get(tx).extent) > 2 * LONGEST_VECTOR:  # a wide map: vectors of a divisor of the row
        tx = sch.split(tx, [None, row_vector_width(int(sch.get(tx).extent))])[1]
    sch.vectorize(tx)


def _parallel_cols(sch, cols):
    sch.parallel(sch.fuse(*sch.get_loops(cols)[:3]))
