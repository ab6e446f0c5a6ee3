"""conv2d on channel-blocked tensors (NCHW{b}c data, OIHW{b}o weights), and its CPU schedule.

lowering.blocked_layout converts a model's convs to these layouts, b = the target's fp32 vector
lanes; a tensor x[n, c, y, x] is then stored as X[n, c // b, y, x, c % b], and a weight
W[o, i, ky, kx] as Wb[o // b, i, ky, kx, o % b]. The convs (legalized here, `legalize_blocked_conv2d`):

    dense (groups = 1):
        out[n, ob, y, x, ol] = sum_{i, ky, kx} P[n, i // b, y*sh + ky*dh, x*sw + kx*dw, i % b]
                                                * Wb[ob, i, ky, kx, ol]
    depthwise (groups = channels):
        out[n, cb, y, x, cl] = sum_{ky, kx} P[n, cb, y*sh + ky*dh, x*sw + kx*dw, cl] * Wb[cb, 0, ky, kx, cl]

where P is X padded with zeros (P = X without padding). The lanes of a vector are b channels of
one pixel, contiguous in both layouts, so every load and store of the schedule is a whole vector
whatever the stride, and a conv's output is its consumer's input as is: the NCHW packed conv
(lowering.conv_packed) computes the same tiles but turns each back to NCHW in its epilogue, and
the NCHW depthwise conv needs its padded plane split by column parity for stride 2.

Schedule (`BlockedConv2dRule`), both with the fused epilogue (bias, residual add, clamp) computed
per tile while the tile is in registers:

    dense:      ob -> (obo, v),  x -> (xo, t),  i -> (ib, il)
                order (n, y, obo, xo | ib, ky, kx, il, v, t, ol);  (n, y, obo) parallel
                rows split evenly among T threads: y -> (yo: T, yi), (n, yo, obo) parallel, then yi;
                else, weights outweighing the data: (n, obo) parallel, then y
    depthwise:  x -> (xo, t),  order (n, y, cb, xo | ky, kx, t, cl);  (n, y, cb) parallel
                rows uneven among the threads (7x7): (n, cb) parallel, then y

v x t accumulators (dense; t for depthwise) sized from the register file; each dense step is
`acc[v][t] += broadcast(P[.., il]) * Wb[.., v, ol]`, each depthwise step `acc[t] += P[.., t, cl] * Wb[.., cl]`.
Rows go outside the channel blocks in the parallel loop, so that a thread's share is a band of rows
with all their channels: the 1x1 conv after it reads the pixels its own core wrote (lines written by
the other core come through the coherence protocol, about 1 us per KB measured on the NCHW kernels)
and only a depthwise conv's halo rows cross. Weights are then read by both threads, which costs
little (they are never written). MobileNetV2 on the 2-core Xeon, one process, alternated: 3.08 ms
with channel blocks outside, 2.94 with rows outside where the data outweigh the weights, 2.89 with
rows outside everywhere (ONNX Runtime 3.22); again 2.90 / 2.86 over 20 rounds.
Where a dense conv's rows split evenly among the threads, the parallel loop is (n, thread's band of
rows, obo) and the band's rows run inside each task: a thread still computes its own band, but takes
each block of weights for all its rows while the block is in L1 (rows outside re-read every block
for every row). MobileNetV2, four alternated runs (12-30 rounds, a noisy machine): 1.9 % faster
on average (0.2 to 2.8 %); the 7x7 layers (odd rows) keep rows outside. Kernels alone, alternated:
the 960-channel expansion at 14x14 0.079 -> 0.074 ms warm, 0.104 -> 0.097 with flushed caches; the
stem (3 -> 32, one group of channel blocks per thread), which then pads its own band of input rows
in its task instead of in a parallel pass of its own, 0.112 -> 0.095 warm, 0.134 -> 0.113 cold.
Where the rows do not split evenly (7x7) and the weights outweigh the data, the channel-block groups
split among the threads instead, all rows inside each task: each thread reads half the weights, once,
and a group's weights stay in L1 over the rows; the depthwise conv after it splits channel blocks among
the threads as well, reading what its own core wrote (MobileNetV2's 7x7 depthwise convs alone 4.2 -> 3.6
and 3.9 -> 3.0 us, the model 1.0-1.4 % faster alternated; all depthwise convs by channels: 4.4 % slower).
The dense ones alone: MobileNetV2's 320 -> 1280 at 7x7 0.173 -> 0.142 ms warm, 0.267 -> 0.214 cold;
960 -> 320 0.190 -> 0.167 cold; 160 -> 960 0.096 -> 0.077 cold; the whole model level and 2 % faster in
two alternated runs (20 rounds).
Prefetching the next task's group of weights row by row (as the packed conv's chunks do, lowering/prefetch.py)
measured within the noise (MobileNetV2 0.6 and 1.2 % faster, then 0.5 % slower, in three alternated runs)
and the 7x7 layers alone slower (320 -> 1280 0.190 -> 0.202 ms with flushed caches): a group's weights are
v contiguous streams that the hardware prefetcher follows, so the rule does not use it.

A tile of 1 KB or more (16 AVX-512 vectors; most dense tiles) has its epilogue's loops unrolled so that
LLVM hands the accumulators to it in registers (schedule_common.tile_in_registers; before, TVM's heap
buffer for the tile was zeroed with a memset and reloaded around every tile): the 16 -> 96 expansion at
112x112 alone 0.176 -> 0.152 ms warm, the stem 0.104 -> 0.090 cold; MobileNetV2 3.115 -> 3.007 ms
(alternated with ONNX Runtime, 20 rounds). The packed NCHW conv does not use it (ResNet-18's stem slower).
A depthwise conv reads its input in place, the padding inlined: each tap's load is guarded by the
pixel's bounds (a branch per pixel, the lanes being channels) and gives zeros outside. A separate padding
pass wrote and re-read the whole padded tensor (MobileNetV2's 96-channel stride-2 depthwise conv at 112x112
alone 0.27 ms); padding a band of up to 8 rows per task into a buffer of its own (0.12-0.13 ms) still
copied every input pixel once more through L2; in place 0.087 ms. The other depthwise convs alone: 144
channels at 56x56 0.059 -> 0.032 ms, stride 2 0.032 -> 0.010, 32 channels at 112x112 0.048 -> 0.034,
the 14x14 and 7x7 ones 20-55 % faster; MobileNetV2 alternated with ONNX Runtime 2.594 -> 2.462 ms. (Found
by MetaSchedule: its best schedules for the stride-2 ones, inlined padding among them, beat the band's.)
A dense conv's padding is its own parallel pass, a vector per pixel (except a stem's, above).
A depthwise conv and the 1x1 conv that alone reads it are one kernel, scheduled by lowering.depthwise_projection
with these tilings per band of rows.
The input and output blocks of a dense conv may differ (bi, bo: 16 -> 8 into a 24-channel tensor),
and its data may be NCHW (b = 1 in the sums above: a model's 3-channel image into its first conv).
"""
from __future__ import annotations

import re

from tvm import tirx
from tvm.s_tir import dlight as dl

from .schedule_common import (attach_epilogue, choose_tile, one_conv_with_epilogue, read_bytes, register_budget,
                              thread_count, tile_in_registers)

BLOCKED_CONV_BLOCK = "conv2d_blocked"
DEPTHWISE_ATTR = "slimgraph.blocked_depthwise"  # block annotation: 1 for the depthwise form
# The parallel loop takes rows outside channel blocks (module docstring); False: channel blocks outside
# (for A/B measurements).
ROWS_FIRST = True
# A dense conv whose rows split evenly among the threads: one band of rows per thread, channel blocks
# outside the band's rows in it (module docstring); False: rows outside channel blocks (A/B measurements).
THREAD_ROW_BANDS = True
# A dense conv whose rows do not split evenly (7x7) and whose weights outweigh its data: the channel-block
# groups split among the threads, all rows inside each (module docstring); False: rows outside (A/B).
CHANNELS_FOR_UNEVEN_ROWS = True
# At most this many accumulators in a depthwise tile: its registers also hold the taps' weight vectors and the
# input window. 32-channel 3x3 at 112x112 alone: 16 columns a tile 0.039 ms, 14 columns 0.028; the 56-, 28- and
# 14-wide convs (14 columns either way) and budgets of 8, 12 and 15 measured level with 14.
DEPTHWISE_ACCUMULATORS = 14


def tile_budget(target, depthwise: bool) -> int:
    """Accumulators a blocked conv's register tile may hold (DEPTHWISE_ACCUMULATORS at most for a depthwise one)."""
    return min(register_budget(target), DEPTHWISE_ACCUMULATORS) if depthwise else register_budget(target)


def blocked_lanes(layout: str) -> int | None:
    """b of an "NCHW{b}c" data or "OIHW{b}o" kernel layout; None for any other layout."""
    match = re.fullmatch(r"(?:NCHW(\d+)c|OIHW(\d+)o)", layout)
    return int(match.group(1) or match.group(2)) if match else None


def _padded(data, padding):
    """data (NCHW or NCHW{b}c) with zero rows and columns around each plane."""
    from tvm import te

    top, left, bottom, right = padding
    if not any(padding):
        return data
    shape = [int(e) for e in data.shape]
    height, width = shape[2:4]

    def element(n, c, y, x, *lane):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        return tirx.if_then_else(inside, data[(n, c, y - top, x - left, *lane)], tirx.const(0.0, data.dtype))

    return te.compute((*shape[:2], height + top + bottom, width + left + right, *shape[4:]), element, name="pad_temp")


def blocked_conv2d(data, weight, strides, padding, dilation, depthwise: bool):
    """The dense or depthwise blocked conv of the module docstring; padding (top, left, bottom, right).
    A dense conv's data may also be NCHW (a model's 3-channel image into its first conv)."""
    from tvm import te

    batch, in_blocks, height, width, *lanes = (int(e) for e in data.shape)
    out_blocks, in_channels, kernel_h, kernel_w, out_lanes = (int(e) for e in weight.shape)
    top, left, bottom, right = padding
    (stride_h, stride_w), (dilation_h, dilation_w) = strides, dilation
    out_h = (height + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + left + right - dilation_w * (kernel_w - 1) - 1) // stride_w + 1
    padded = _padded(data, padding)
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    attrs = {DEPTHWISE_ATTR: int(depthwise)}
    if depthwise:
        return te.compute(
            (batch, out_blocks, out_h, out_w, out_lanes),
            lambda n, c, y, x, lane: te.sum(
                padded[n, c, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w, lane]
                * weight[c, 0, ry, rx, lane], axis=[ry, rx]), name=BLOCKED_CONV_BLOCK, attrs=attrs)
    if not lanes:  # NCHW data
        rc = te.reduce_axis((0, in_channels), name="rc")
        return te.compute(
            (batch, out_blocks, out_h, out_w, out_lanes),
            lambda n, o, y, x, lane: te.sum(
                padded[n, rc, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w]
                * weight[o, rc, ry, rx, lane], axis=[rc, ry, rx]), name=BLOCKED_CONV_BLOCK, attrs=attrs)
    rb = te.reduce_axis((0, in_blocks), name="rb")
    rl = te.reduce_axis((0, lanes[0]), name="rl")
    return te.compute(
        (batch, out_blocks, out_h, out_w, out_lanes),
        lambda n, o, y, x, lane: te.sum(
            padded[n, rb, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w, rl]
            * weight[o, rb * lanes[0] + rl, ry, rx, lane], axis=[rb, ry, rx, rl]), name=BLOCKED_CONV_BLOCK,
        attrs=attrs)


def legalize_blocked_conv2d(bb, call):
    """relax.nn.conv2d with NCHW{bo}c output and OIHW{bo}o weights (dense from NCHW{bi}c or NCHW data,
    or depthwise: groups = channels, bi = bo) as `blocked_conv2d`; any other blocked conv is an error
    (lowering.blocked_layout makes none)."""
    from slimgraph.ir.errors import SlimgraphError

    attrs = call.attrs
    data, weight = call.args
    out_lanes, in_lanes = blocked_lanes(attrs.out_layout), blocked_lanes(attrs.data_layout)
    groups = int(attrs.groups)
    depthwise = groups > 1 and in_lanes == out_lanes and groups == int(data.ty.shape[1]) * out_lanes \
        and int(weight.ty.shape[1]) == 1
    if out_lanes is None or blocked_lanes(attrs.kernel_layout) != out_lanes \
            or (in_lanes is None and attrs.data_layout != "NCHW") or (groups > 1 and not depthwise):
        raise SlimgraphError(f"conv2d {attrs.data_layout} x {attrs.kernel_layout} -> {attrs.out_layout}, "
                             f"groups {groups}: no blocked kernel (dense or depthwise only)")
    return bb.call_te(blocked_conv2d, data, weight, [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation], depthwise,
                      primfunc_name_hint="conv2d_blocked")


def output_loops(sch, block):
    """The loops of the block's output dims (n, c // b, y, x, c % b), None for a dim of extent 1 (the
    block then has no iteration variable for it: dlight's normalization drops them, e.g. the channel
    blocks of a 16-channel output); None if a spatial variable indexes no output dim alone."""
    stmt = sch.get(block)
    spatial = [iv for iv in stmt.iter_vars if iv.iter_type == 0]
    loops = sch.get_loops(block)[:len(spatial)]
    dims = []
    for index in stmt.writes[0].region:
        dims.append(next((loop for iv, loop in zip(spatial, loops) if iv.var.same_as(index.min)), None))
    return dims if sum(d is not None for d in dims) == len(spatial) else None


class BlockedConv2dRule(dl.ScheduleRule):
    """Schedule for the `conv2d_blocked` kernels of `legalize_blocked_conv2d` (module docstring)."""

    name = "conv2d-blocked"

    def apply(self, func, target, tunable):
        matched = one_conv_with_epilogue(func, target, BLOCKED_CONV_BLOCK)
        if matched is None:
            return None
        sch, conv, before, after = matched
        block = conv.block_rv
        stmt = sch.get(block)
        if DEPTHWISE_ATTR not in stmt.annotations:
            return None
        depthwise = bool(int(stmt.annotations[DEPTHWISE_ATTR]))
        batch, out_blocks, out_h, out_w, lanes = (int(e) for e in stmt.writes[0].source.shape)
        dims = output_loops(sch, block)
        if dims is None or dims[4] is None:
            return None
        reduction_loops = sch.get_loops(block)[sum(loop is not None for loop in dims):]
        batch_loops = [dims[0]] if dims[0] is not None else []
        ob, oy, ox, ol = (loop if loop is not None else sch.add_unit_loop(block) for loop in dims[1:])
        v, t = choose_tile(1 if depthwise else out_blocks, out_w, tile_budget(target, depthwise))  # depthwise: v = 1
        obo, ov = sch.split(ob, [None, v])
        xo, xt = sch.split(ox, [None, t])
        if depthwise:  # reads its input in place, zero where the padding is (module docstring)
            for info in reversed(before):
                sch.compute_inline(info.block_rv)
            before = []
        oyo, oyi = oy, None
        threads = thread_count(target)
        if THREAD_ROW_BANDS and not depthwise and out_h >= 2 * threads and out_h % threads == 0:
            oyo, oyi = sch.split(oy, [threads, None])  # a band of rows per thread, channel blocks in it
        # a dense conv pads its thread's rows in its task where that task is the thread's only one (one group of
        # channel blocks: a stem) and the padding is the one block before it
        pad_per_task = oyi is not None and out_blocks == v and len(before) == 1
        # dense: (ib, ky, kx, il), one input pixel's b channels broadcast in turn (unit loops are gone)
        outer = [oyo, obo] if ROWS_FIRST else [obo, oyo]  # rows outside channel blocks (module docstring)
        inside = [oyi] if oyi is not None else []
        # rows uneven among the threads (7x7): channel-block groups per thread, rows inside, for a dense conv whose
        # weights outweigh its data and for a depthwise conv (which then reads what its own core's 1x1 wrote)
        if CHANNELS_FOR_UNEVEN_ROWS and oyi is None and out_h % threads and (out_blocks // v) % threads == 0 \
                and (depthwise or read_bytes(stmt, 1) > read_bytes(stmt, 0)):
            outer, inside = [obo], [oy]
        sch.reorder(*batch_loops, *outer, *inside, xo, *reduction_loops, ov, xt, ol)
        epilogue = attach_epilogue(sch, block, after[-1].block_rv if after else None, xo)
        epilogue_lanes = sch.get_loops(epilogue)[-1]
        if int(sch.get(epilogue_lanes).extent) == lanes:
            sch.vectorize(epilogue_lanes)
        tile_in_registers(sch, epilogue, xo, v * t * lanes * 4)
        task = sch.fuse(*batch_loops, *outer)
        sch.parallel(task)
        for loop in (ov, xt):
            sch.unroll(loop)
        if depthwise:
            for loop in reduction_loops:
                sch.unroll(loop)
        sch.vectorize(ol)
        for info in reversed(before):  # the padding: per task's rows, or its own parallel pass; a vector per pixel
            if pad_per_task:
                sch.compute_at(info.block_rv, task)
            *plane_loops, row, column, lane = sch.get_loops(info.block_rv)
            if not pad_per_task:
                sch.parallel(sch.fuse(*plane_loops, row))
            sch.vectorize(lane)
        sch.decompose_reduction(block, reduction_loops[0])
        return sch
