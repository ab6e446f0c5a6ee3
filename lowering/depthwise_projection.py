"""One CPU kernel for a blocked depthwise conv and the 1x1 conv that reads it (MobileNet's projection).

lowering.regions.depthwise_with_projection puts the two in one region in the channel-blocked layout;
FuseTIR makes one PrimFunc of them (lowering.conv_blocked's convs, NCHW{b}c):

    D[n, c, y, x, l]    = act(sum_{ky, kx} X[n, c, y*s + ky - p, x*s + kx - p, l] * Wd[c, 0, ky, kx, l] + bd)
    out[n, o, y, x, ol] = epilogue(sum_{i} D[n, i // b, y, x, i % b] * Wp[o, i, 0, 0, ol])     (bias, residual add)

Schedule (`DepthwiseProjectionRule`): in parallel over (n, band of rows), one band per thread; per band

    D for the band's rows and all channels:  the depthwise tiling of lowering.conv_blocked (a tile of
        columns in registers over the taps, the padding read in place, act applied per tile), into a
        buffer of the band's rows (up to 0.9 MB in MobileNetV2: it stays in the thread's L2)
    out for the band's rows:  the dense tiling of lowering.conv_blocked (v channel blocks x t columns
        in registers over the input channels, epilogue per tile), channel-block groups outside the rows

Apart, the depthwise conv wrote D to a tensor (up to 1.8 MB in MobileNetV2) and the projection read it back in the
next kernel, through lines a kernel of another layer had last written. MobileNetV2 on a 2-core Xeon (AVX-512),
alternated with ONNX Runtime in one process: 54 -> 37 kernel calls, 2.670 -> 2.531 ms; per pair in the model 4-20 us
faster, but for the first 112x112 pair (32 channels, a band buffer of 800 KB: 95 -> 101 us).
Rows that do not split evenly (7x7) give the last band fewer rows (a predicate on the last rows).
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from .conv_blocked import BLOCKED_CONV_BLOCK, DEPTHWISE_ATTR, tile_budget
from .schedule_common import attach_epilogue, choose_tile, thread_count, tile_in_registers


class DepthwiseProjectionRule(dl.ScheduleRule):
    """Schedule for a blocked depthwise conv fused with the 1x1 conv reading it (module docstring)."""

    name = "depthwise-projection"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        convs = [i for i, block in enumerate(blocks) if sch.get(block).name_hint.startswith(BLOCKED_CONV_BLOCK)]
        if len(convs) != 2:
            return None
        depthwise, projection = (blocks[i] for i in convs)
        kinds = [int(sch.get(block).annotations.get(DEPTHWISE_ATTR, -1)) for block in (depthwise, projection)]
        dw_loops, pw_loops = sch.get_loops(depthwise), sch.get_loops(projection)
        if kinds != [1, 0] or len(dw_loops) != 7 or len(pw_loops) != 9 \
                or [int(sch.get(loop).extent) for loop in pw_loops[6:8]] != [1, 1]:
            return None
        others = blocks[:convs[0]] + blocks[convs[0] + 1:convs[1]] + blocks[convs[1] + 1:]
        if any(iv.iter_type != 0 for block in others for iv in sch.get(block).iter_vars):
            return None  # only elementwise blocks (padding, bias, activation, residual) around the convs
        between, after = blocks[convs[0] + 1:convs[1]], blocks[convs[1] + 1:]
        try:
            for block in blocks[:convs[0]]:  # the padding: read in place
                sch.compute_inline(block)
            for block in between[:-1] + after[:-1]:
                sch.compute_inline(block)
        except s_tir.ScheduleError:
            return None
        task = _schedule_projection(sch, projection, after[-1] if after else None, target)
        _schedule_depthwise(sch, depthwise, between[-1] if between else None, task, target)
        return sch


def _schedule_projection(sch, block, epilogue, target):
    """The dense tiling of the module docstring, in parallel over (n, band of rows); returns the task loop."""
    n, o, y, x, lanes, rb, ry, rx, rl = sch.get_loops(block)
    out_blocks, width = int(sch.get(o).extent), int(sch.get(x).extent)
    v, t = choose_tile(out_blocks, width, tile_budget(target, depthwise=False))
    obo, ov = sch.split(o, [None, v])
    xo, xt = sch.split(x, [None, t])
    band, row = sch.split(y, [thread_count(target), None])
    sch.reorder(n, band, obo, row, xo, rb, ry, rx, rl, ov, xt, lanes)
    tile_epilogue = attach_epilogue(sch, block, epilogue, xo)
    sch.vectorize(sch.get_loops(tile_epilogue)[-1])
    tile_in_registers(sch, tile_epilogue, xo, v * t * int(sch.get(lanes).extent) * 4)
    task = sch.fuse(n, band)
    sch.parallel(task)
    sch.unroll(ov)
    sch.unroll(xt)
    sch.vectorize(lanes)
    sch.decompose_reduction(block, rb)
    return task


def _schedule_depthwise(sch, block, epilogue, task, target):
    """The band's rows of the depthwise conv, all channels, computed in the task before the projection."""
    if epilogue is not None:
        sch.compute_at(epilogue, task)
    sch.compute_at(block, task)
    channel, row, x, lanes, ky, kx = sch.get_loops(block)[1:]
    _, t = choose_tile(1, int(sch.get(x).extent), tile_budget(target, depthwise=True))
    xo, xt = sch.split(x, [None, t])
    sch.reorder(channel, row, xo, ky, kx, xt, lanes)
    tile_epilogue = attach_epilogue(sch, block, epilogue, xo)
    sch.vectorize(sch.get_loops(tile_epilogue)[-1])
    for loop in (ky, kx, xt):
        sch.unroll(loop)
    sch.vectorize(lanes)
    sch.decompose_reduction(block, ky)
