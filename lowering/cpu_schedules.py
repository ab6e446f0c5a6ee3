"""Rule-based CPU schedules: fast kernels without search, chosen by the kernel's shape.

Rules: a 1x1 conv fused with a depthwise conv (lowering.pointwise_depthwise), Winograd conv2d
(lowering.winograd), packed direct conv2d (lowering.conv_packed), dense
(DenseRule), direct conv2d / depthwise conv (Conv2dRule), TVM's GEMV rule, row reductions with
vectorized partial sums (lowering.row_reduction), then TVM's reduction rule.

The rules are data (`CPU_RULES`, tried in order; the first that applies wins), in the style of
TVM's dlight rules, which cover GPUs but on the CPU only GEMV and reductions. A kernel no rule
takes keeps TVM's default loops, and the compile report says which.

Dense (any kernel whose main block is a reduction with iterators S..S S S R: linear, matmul,
batched matmul, with the epilogue that fusion put after it, bias / GELU / residual):

    C[b.., i, j] = sum_k A[b.., i, k] * B[b.., k, j]
    i -> (io, ii: mr rows),  j -> (jo, ji: nr columns),  order (b.., io, jo, k, ii, ji)

The mr x nr tile of C stays in registers across k (the epilogue is computed at jo, so C is
written once), ji is vectorized over nr = a multiple of the target's fp32 lanes (16 with
AVX-512, 8 with AVX2, 4 with NEON), ii unrolled, and (b.., io, jo) runs in parallel over
the cores. mr and nr are the largest of (4, 2, 1) and (4, 2, 1 x lanes, 8, 4) that divide M and
N, so no tile needs a bounds check; with the weight packed in nb-wide panels, nr is the most whole
panels, up to 4 x lanes, that divide N (a classifier's 1000 outputs in 8-wide panels: 5 panels,
5 independent accumulators instead of one); its epilogue then runs in nb-wide vectors, never one
vector of 5 x nb floats, which LLVM cannot keep in whole registers.
"""
from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial

from .conv_blocked import BlockedConv2dRule
from .conv_packed import PackedConv2dRule
from .depthwise_projection import DepthwiseProjectionRule
from .grouped_conv import INTERIOR_ATTR, plane_depth, schedule_padding
from .int8_depthwise import Int8DepthwiseRule
from .int8_pixels import Int8PixelConv2dRule
from .int8_schedules import Int8Conv2dRule, Int8DenseRule
from .pointwise_depthwise import PointwiseDepthwiseRule
from .pooling import SeparableMaxPoolRule
from .row_reduction import RowReductionRule
from .schedule_common import (column_tile, epilogue_at, is_scheduled, iter_kinds, largest_divisor,
                              register_budget, vector_lanes)
from .winograd import WinogradConv2dRule


def _packed_width(sch, block, depth: int, width: int) -> int:
    """nb when the block reads a weight packed as Bp[j // nb, k, j % nb] (lowering.dense_packed), else 0."""
    for region in sch.get(block).reads:
        shape = [int(e) for e in region.source.shape]
        if (len(shape) == 3 and shape[1] == depth and shape[0] * shape[2] == width
                and isinstance(region.region[2].min, tirx.FloorMod)):
            return shape[2]
    return 0


class DenseRule(dl.ScheduleRule):
    """Register-tiled, vectorized, parallel matmul with its fused epilogue (see module docstring)."""

    name = "dense"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
        if infos is None or not 1 <= len(infos) <= 2 or not infos[0].is_reduction():
            return None
        kinds = "".join(it.kind for it in infos[0].iters)
        if not (kinds.endswith("SSR") or kinds == "SR") or set(kinds) != {"S", "R"} or kinds.count("R") != 1:
            return None
        epilogue = infos[1] if len(infos) == 2 else None
        if epilogue is not None and not epilogue.is_injective():
            return None
        block = infos[0].block_rv
        *outer, j, k = sch.get_loops(block)
        lanes = vector_lanes(target)
        n = int(sch.get(j).extent)
        nb = _packed_width(sch, block, int(sch.get(k).extent), n)
        if not outer and not nb:  # one row and no packed weight: a plain row reduction, not a matmul
            return None
        nr = largest_divisor(n, (4 * lanes, 2 * lanes, lanes, 8, 4))
        if nb:  # whole panels, as many as fit in 4 x lanes (1000 outputs in 8-wide panels: 5)
            nr = nb * largest_divisor(n // nb, range(4 * lanes // nb, 0, -1))
        jo, ji = sch.split(j, [None, nr])
        *batch, i = outer or [None]  # a batch-1 linear (normalized to S R) has no row loop
        row_outer, row_inner = [], []  # (io), (ii: mr rows kept in registers)
        if i is not None:
            io, ii = sch.split(i, [None, largest_divisor(int(sch.get(i).extent), (4, 2))])
            row_outer, row_inner = [io], [ii]
        sch.reorder(*batch, *row_outer, jo, k, *row_inner, ji)
        if nb and nb < nr:  # one contiguous nb-wide load per panel of the packed weight
            jv, ji = sch.split(ji, [None, nb])
            sch.unroll(jv)
        tile_loops = [*batch, *row_outer, jo]
        # The epilogue in vectors of whole registers: a 40-float vector (five 8-wide panels) made LLVM split the
        # tile into scalars and re-assemble the accumulators lane by lane on every k (classifier 0.100 -> 0.067 ms)
        width = nr if nr % lanes == 0 or not nb else nb
        epilogue_at(sch, block, epilogue.block_rv if epilogue is not None else None, jo, len(tile_loops), width)
        sch.parallel(sch.fuse(*tile_loops))
        for loop in row_inner:
            sch.unroll(loop)
        if nr >= 4:
            sch.vectorize(ji)
        sch.decompose_reduction(block, k)  # after every loop annotation (s_tir requires it)
        return sch


class Conv2dRule(dl.ScheduleRule):
    """Direct NCHW conv (and depthwise conv) with its fused epilogue, no layout change:

        out[b.., co, oh, ow] = sum_{ci, kh, kw} in[b.., ci, oh*s + kh, ow*s + kw] * W[co, ci, kh, kw]
        co -> (coo, coi: 8, 4 or 2 channels),  ow -> (owo, owi: a multiple of the lanes),
        order (b.., coo, oh, owo, ci, kh, kw, coi, owi)

    A tile of coi x owi outputs stays in registers over the whole reduction; each weight is
    broadcast against a vector of owi inputs (contiguous for stride 1); (b.., coo, oh) run in
    parallel, and the padding is its own parallel pass before it. A short row that 4 does not
    divide (14, 7) is one partial vector (owi = the whole row; LLVM pads it to a register).

    Depthwise conv (no ci) uses coi = 1 and runs in parallel over (b.., c) only: each channel
    pads its own plane right before reading it, so the padded copy stays in L2 instead of
    doubling the memory traffic (MobileNetV2's depthwise convs went from 4.5 to 2.4 ms).
    """

    name = "conv2d"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)  # drops unit iterators (batch 1)
        reductions = [info for info in infos or [] if info.is_reduction()]
        if len(reductions) != 1:
            return None
        conv = reductions[0]
        kinds = iter_kinds(sch, conv.block_rv)
        spatial = kinds.count("S")
        if spatial not in (3, 4) or kinds not in ("S" * spatial + "RRR", "S" * spatial + "RR"):
            return None
        before, after = infos[:infos.index(conv)], infos[infos.index(conv) + 1:]
        for info in before:  # the padding: computed per output row block, in parallel with it
            if not info.is_injective():
                return None
        for info in after[:-1]:  # the elementwise chain folds into its last block
            if not info.is_injective():
                return None
            sch.compute_inline(info.block_rv)
        block = conv.block_rv
        loops = sch.get_loops(block)
        *batch, co, oh, ow = loops[:spatial]
        reduction_loops = loops[spatial:]
        lanes = vector_lanes(target)
        width = int(sch.get(ow).extent)
        cot = largest_divisor(int(sch.get(co).extent), (8, 4, 2)) if kinds.endswith("RRR") else 1
        owt = column_tile(width, lanes, cot, register_budget(target))
        channels = int(sch.get(co).extent)
        coo, coi = sch.split(co, [None, cot])
        owo, owi = sch.split(ow, [None, owt])
        sch.reorder(*batch, coo, oh, owo, *reduction_loops, coi, owi)
        epilogue_at(sch, block, after[-1].block_rv if after else None, owo, len(batch) + 3, owt)
        depthwise = (kinds.endswith("RR") and not kinds.endswith("RRR") and before  # no ci loop, and
                     and int(sch.get(before[-1].block_rv).writes[0].source.shape[1]) == channels)  # not Ci = 1
        if depthwise:
            # each channel pads its own plane (L2-resident) right before using it; the blocks before
            # the conv (padding, and a quantize that fusion put there) go in, consumers first
            channel = sch.fuse(*batch, coo)
            for info in reversed(before):
                sch.compute_at(info.block_rv, channel)
            sch.parallel(channel)
        else:
            sch.parallel(sch.fuse(*batch, coo, oh))
            for info in before:
                loops = sch.get_loops(info.block_rv)
                if sch.get(info.block_rv).annotations.get(INTERIOR_ATTR) is None:
                    sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
                else:  # in parallel over the planes; their rows stay apart: the padding splits them
                    planes = loops[:-plane_depth(sch, info.block_rv)]
                    sch.parallel(sch.fuse(*planes) if len(planes) > 1 else planes[0])
        for info in before:
            schedule_padding(sch, info.block_rv, lanes)
        sch.unroll(coi)
        if owt >= 4:
            sch.vectorize(owi)
        sch.decompose_reduction(block, reduction_loops[0])
        return sch


class ElementwiseRule(dl.ScheduleRule):
    """A kernel of injective blocks only (a quantize that no conv took as its epilogue, a lone
    add): all but the last inlined; the innermost loop is the vector (whole, as one long vector
    that LLVM splits into registers, when it is at most VECTOR_ROW_LANES x lanes, e.g. a 56-wide
    row; else split by the lanes when they divide it; a row shorter than one vector is left to
    LLVM, which vectorizes across the plane: as 7-wide vectors a 512x7x7 quantize stored each row
    in three pieces, 1.4x slower); the first two loops outside it with more than one iteration
    fused and parallel. Vectors stay inside one row and at most two
    loops are fused: fusing all loops and splitting by the lanes made the indices nested
    divisions that TVM does not simplify, so each vector became a gather and sixteen byte
    stores (a 64x56x56 quantize: 0.18 ms, now 0.01 ms)."""

    name = "elementwise"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        try:
            for info in infos[:-1]:
                sch.compute_inline(info.block_rv)
        except s_tir.ScheduleError:
            return None
        loops = sch.get_loops(infos[-1].block_rv)
        if not loops:
            return None
        lanes, extents = vector_lanes(target), [int(sch.get(loop).extent) for loop in loops]
        *outer_loops, row = loops
        if extents[-1] < lanes:  # a row shorter than one vector: LLVM vectorizes across the plane
            pass
        elif extents[-1] <= VECTOR_ROW_LANES * lanes:
            sch.vectorize(row)
        elif extents[-1] % lanes == 0:
            sch.vectorize(sch.split(row, [None, lanes])[1])
        outer = [loop for loop, extent in zip(outer_loops, extents) if extent > 1][:2]
        if outer and math.prod(extents) >= ELEMENTWISE_PARALLEL_MIN:  # two fused: one div/mod, simplified
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        return sch


VECTOR_ROW_LANES = 4  # a row of up to 4 x lanes elements is one vector (LLVM splits it into registers)
ELEMENTWISE_PARALLEL_MIN = 16384  # elements; below it a second thread costs more than it saves

# First match wins. TVM's GEMV rule (batch-1 dense) comes before our row reductions, TVM's own
# reduction rule last (the rows ours leaves).
CPU_RULES: list[dl.ScheduleRule] = [Int8PixelConv2dRule(), Int8DepthwiseRule(), Int8Conv2dRule(), Int8DenseRule(),
                                    PointwiseDepthwiseRule(), WinogradConv2dRule(), PackedConv2dRule(),
                                    DepthwiseProjectionRule(), BlockedConv2dRule(), DenseRule(),
                                    SeparableMaxPoolRule(), Conv2dRule(), ElementwiseRule(), dl.cpu.GEMV(),
                                    RowReductionRule(), dl.cpu.Reduction()]


def schedule_cpu(mod, target) -> tuple[object, list[str]]:
    """Apply CPU_RULES to every kernel; returns the module and a note per kernel left unscheduled."""
    if target.kind.name != "llvm":
        return mod, []
    with target:
        mod = dl.ApplyDefaultSchedule(*CPU_RULES)(mod)
    left = sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and not is_scheduled(f))
    return mod, [f"kernel {name}: no schedule rule applies; TVM's default loops" for name in left]
