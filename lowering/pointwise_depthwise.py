"""One kernel for a 1x1 conv and the depthwise conv that reads it (MobileNet's expansion), so
the expanded tensor never leaves the core's cache.

The `fuse` pass puts a depthwise conv in the region of the pointwise conv before it
(rewrites/fuse_regions.py); FuseTIR makes one PrimFunc of the two:

    E[n, c, y, x] = act(sum_ci X[n, ci, y, x] * Wp[c, ci] + bp[c])          (expansion, 1x1)
    P = pad(E)                                                             (lowering.grouped_conv)
    out[n, c, oh, ow] = act(sum_{kh, kw} P[n, c, oh*s + kh, ow*s + kw] * Wd[c, kh, kw] + bd[c])

Both are per channel c apart from the 1x1's sum over the input channels, so the schedule
(`PointwiseDepthwiseRule`) runs in parallel over blocks of cb channels, and per block

    E block [cb, H, W]:   tiles of cb channels x owt columns in registers over ci
    P block [cb, H + 2p, W + 2p] from it (bias and activation applied there), in L2
    out block:            the depthwise conv's own tiling (lowering.cpu_schedules.Conv2dRule)

Unfused, E (MobileNetV2: 96 x 112 x 112 floats, 4.8 MB) is written to memory by one kernel and
read back by the next; here each thread writes and reads its cb planes while they are in L2.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .grouped_conv import schedule_padding
from .schedule_common import (column_tile, epilogue_at, iter_kinds, largest_divisor, register_budget,
                              vector_lanes)

CHANNEL_BLOCK = 8  # channels per parallel step: the 1x1 tile's rows (at most this, a divisor of C)


class PointwiseDepthwiseRule(dl.ScheduleRule):
    """Schedule for a 1x1 conv fused with the depthwise conv reading it (module docstring)."""

    name = "pointwise-depthwise"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        reductions = [info for info in infos or [] if info.is_reduction()]
        if len(reductions) != 2 or not all(info.is_injective() for info in infos if info not in reductions):
            return None
        pointwise, depthwise = reductions
        pointwise_kinds = iter_kinds(sch, pointwise.block_rv)
        depthwise_kinds = iter_kinds(sch, depthwise.block_rv)
        spatial = depthwise_kinds.count("S")
        if spatial not in (3, 4) or depthwise_kinds != "S" * spatial + "RR" \
                or pointwise_kinds != "S" * spatial + "R":
            return None
        first, last = infos.index(pointwise), infos.index(depthwise)
        before, middle, after = infos[:first], infos[first + 1:last], infos[last + 1:]
        try:  # the 1x1's (empty) padding; its bias and activation go into the plane the depthwise reads
            for info in before + middle[:-1] + after[:-1]:
                sch.compute_inline(info.block_rv)
        except s_tir.ScheduleError:
            return None
        lanes, budget = vector_lanes(target), register_budget(target)
        plane = middle[-1].block_rv if middle else None  # the padded plane (or the activation)
        conv = depthwise.block_rv
        *batch, channel, out_row, out_column, kernel_row, kernel_column = sch.get_loops(conv)
        channels, width = int(sch.get(channel).extent), int(sch.get(out_column).extent)
        block = largest_divisor(channels, (CHANNEL_BLOCK, 4, 2))
        owt = column_tile(width, lanes, 1, budget)  # the depthwise conv's tile, as Conv2dRule's
        channel_outer, channel_inner = sch.split(channel, [None, block])
        owo, owi = sch.split(out_column, [None, owt])
        sch.reorder(*batch, channel_outer, channel_inner, out_row, owo, kernel_row, kernel_column, owi)
        epilogue_at(sch, conv, after[-1].block_rv if after else None, owo, len(batch) + 4, owt)
        step = sch.fuse(*batch, channel_outer) if batch else channel_outer
        sch.parallel(step)
        if plane is not None:
            sch.compute_at(plane, step)
        sch.compute_at(pointwise.block_rv, step)
        if plane is not None:
            schedule_padding(sch, plane, lanes)
        if owt >= 4:
            sch.vectorize(owi)
        sch.decompose_reduction(conv, kernel_row)
        self._schedule_pointwise(sch, pointwise.block_rv, lanes, budget)
        return sch

    @staticmethod
    def _schedule_pointwise(sch, block, lanes: int, budget: int) -> None:
        """The 1x1 conv over one channel block: cb x owt tiles in registers over the input channels."""
        *_, channel, row, column, reduction = sch.get_loops(block)
        channels, width = int(sch.get(channel).extent), int(sch.get(column).extent)
        per_row = max(1, budget // channels)  # vectors per row of the tile
        owt = largest_divisor(width, tuple(v * lanes for v in range(per_row, 0, -1)) + (8, 4, 2))
        if owt < 4 and width <= lanes:
            owt = width  # a short row: one partial vector
        column_outer, column_inner = sch.split(column, [None, owt])
        sch.reorder(row, column_outer, reduction, channel, column_inner)
        sch.unroll(channel)
        if owt >= 4:
            sch.vectorize(column_inner)
        sch.decompose_reduction(block, reduction)
