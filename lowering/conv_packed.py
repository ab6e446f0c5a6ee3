"""conv2d with its weights packed at compile time, and the CPU schedule for it.

Legalization (`legalize_conv2d`, used instead of TVM's for fp32 NCHW convs with groups = 1 and
a constant weight; 3x3 stride-1 "same" convs that lowering.winograd takes go there instead):

    Wp[co // cb, ci, kh, kw, co % cb] = W[co, ci, kh, kw]          (a kernel on a constant:
                                                                   FoldConstant runs it once)
    out[n, co, oh, ow] = sum_{ci, kh, kw} pad(x)[n, ci, oh*sh + kh*dh, ow*sw + kw*dw]
                                          * Wp[co // cb, ci, kh, kw, co % cb]

cb = the target's fp32 vector lanes (16 with AVX-512, 8 with AVX2, 4 with NEON), or the largest
of 8, 4, 2 that divides the output channels.

Schedule (`PackedConv2dRule`): the output channels are the vector lanes, so every multiply-add
is `acc[v][t] += broadcast(x[ci, ih, iw_t]) * Wp[cb lanes]`, whatever the stride and width:

    co -> (coo, cv: v blocks, cl: cb lanes),  ow -> (owo, owt)
    order (n, coo, oh, owo | ci, kh, kw, cv, owt, cl);  (n, coo, oh) parallel

The v x owt accumulators (v * owt vector registers, sized from the target's register file) stay
in registers over the whole reduction: the output tile is re-laid out as [.., cv, owt, cl] and the
fused epilogue (bias, residual add, activation) reads it cb lanes at a time and writes it back to
NCHW once per tile.

A conv whose task weights are large (ResNet-18's layer4: 64 output channels x 512 x 3 x 3 = 1.2 MB
per task) reads them from memory in the model, where the other layers' weights evicted them; in
the order above a task streams all of them during its first row (the next rows find them in L2),
a burst the memory cannot feed. So the input channels split into chunks (`_weight_chunk`: at most
WEIGHT_CHUNK_BYTES of weights, which stay in L1) and the chunk loop goes outside the rows:

    order (n, coo | chunk, oh, owo, ci in chunk, kh, kw, cv, owt, cl);  (n, coo) parallel

each (oh, owo) tile adding one chunk's sum to its accumulators in the tile buffer (coo's v x cb
channels x the whole map, 12.5 KB at 7x7), and the epilogue runs once per coo after the last chunk.
Small chunks (8 KiB: two input channels at layer4) keep the first row's burst short, the
accumulators' extra trips through L1 cost little, and the weights then stream almost evenly.
Each row of a chunk also prefetches its share of the next chunk's weights (lowering/prefetch.py),
so the chunk's first row no longer waits for them: layer4's 512 -> 512 conv alone with flushed
caches 0.85 -> 0.74 ms (warm: no change); ResNet-18 on a 2-core Xeon, one process, alternated
with ONNX Runtime over 20 rounds, 10.12 -> 9.63 ms (ratio to ORT 0.836 -> 0.804).

A 1x1 conv whose output rows are short (MobileNet's 14x14 and 7x7 layers) reads its input in
pieces of one row per channel, a few cache lines apart; half of those lines were written by the
other core (the depthwise conv before it runs in parallel over channels), and fetched one by one
from there they cost about 1 us per KB (MobileNetV2's 576 -> 96 projection at 14x14, timed
right after the depthwise conv that feeds it: 172 us, 59 us alone). So with T > 1 threads
(the target's num-cores) the parallel loop becomes (t: T) x (its share of (n, coo, oh)), and
thread t first copies the whole input into its own buffer with one streaming loop (the same
kernel pair: 90 us). Not a strided 1x1 conv (ResNet's downsample): it reads a quarter of its input,
and copying all of it took longer than the conv (1x1 / 2, 128 -> 256 at 28x28: 158 us alone with
the copy, 46 without; ResNet-18 on a 2-core Xeon, one process, alternated: 10.56 vs 10.32 ms).

A conv with padding does the same with its padding step: rather than a parallel pass writing one
shared padded input (each thread's part then read by every thread), thread t pads the whole input
into its own buffer and goes on with its share of (n, coo, oh). ResNet-18 on a 2-core Xeon, one
process, alternated with ONNX Runtime: 10.60 vs 10.05 ms; its stride-2 3x3 64 -> 128 conv went
from 0.69 to 0.40 ms in the model (0.40 / 0.34 alone).

A strided conv whose weights are smaller than its input (ResNet's stride-2 1x1 downsample, and its
64 -> 128 3x3 conv at 56x56) fuses its rows outside its channel blocks, (n, oh, coo) in parallel: a
thread's share is then a band of rows with all their channels, so it reads (and pads) half of the
input instead of all of it, and all of the small weights (ResNet-18's downsample at 56x56, in the
model: 0.121 -> 0.079 ms). Stride-1 convs keep (coo, oh): the depthwise conv after a MobileNet
expansion splits the channels among the threads the same way, and so reads what its own core wrote
(rows first there: MobileNetV2 4.05 -> 4.14 ms).

A 1x1 conv with at least twice as many input channels as outputs (MobileNet's projections) splits
its sum over the input channels the way the depthwise conv before it split the channels among
the T threads (TVM's rfactor):

    R[t, n, co, y, x] = sum_{ci in part t} X[n, ci, y, x] * Wp[co // cb, ci, 0, 0, co % cb]
    out[n, co, y, x] = epilogue(sum_t R[t, n, co, y, x])

The (t, n, coo, oh) tasks run in parallel, so thread t reads only the part of X it wrote; what
crosses between the cores is the T partial outputs (C_out / C_in of X's size), read in order by
the second step, in parallel over (n, co, oh). MobileNetV2's 144 -> 24 projection at 56x56 right
after the kernel that feeds it: 237 us without, 119 us with (alone: 133 / 115 us).
"""
from __future__ import annotations

import math

from tvm import tirx
from tvm.s_tir import dlight as dl

from .conv_blocked import blocked_lanes, legalize_blocked_conv2d
from .grouped_conv import legalize_grouped_conv2d
from .prefetch import prefetch_next_step
from .schedule_common import (attach_epilogue, choose_tile, one_conv_with_epilogue, read_bytes, register_budget,
                              schedule_sum_of_parts, split_reduction, splits_input_channels, thread_count,
                              vector_lanes)

PACKED_CONV_BLOCK = "conv2d_packed"
LANES_ATTR = "slimgraph.lanes"  # block annotation: the channel block cb that the vector lanes cover
# A 1x1 conv with output rows this short copies its input per thread first (module docstring).
# MobileNetV2 on a 2-core Xeon, one process, without vs with the copy for rows up to 7 / 14 / 28 /
# all: 4.82 vs 4.90 / 4.45 / - / 4.55 ms and 4.66 vs - / 4.18 / 4.47 / 4.40 ms (two runs); once
# projections split their channels instead: 3.96 vs - / 3.88 / 4.01 / 4.04 (up to 56).
LOCAL_COPY_MAX_WIDTH = 14
# A padded conv pads its whole input once per thread, in the thread's own buffer (module docstring).
PAD_PER_THREAD = True
# A task whose weights (v x cb output channels) pass CHUNKED_WEIGHT_BYTES goes through them in chunks
# of input channels of at most WEIGHT_CHUNK_BYTES, each used for all its rows (module docstring).
# ResNet-18, one process, chunks of 256 / 64 / 32 / 16 KB vs none: 10.22 / 10.10 / 10.01 / - vs 10.36
# ms and - / - / 9.29 / 9.26 vs 9.56 (two runs); also chunking tasks from 128 KB on: 9.34. Later,
# 8 vs 32 KB: 8.03 vs 8.11 and 7.99 vs 8.07 ms (layer4's 3x3 alone with flushed caches 0.64 vs 0.70).
# With the prefetch below, chunking from 256 KiB on as well (layer4's stride-2 256 -> 512 conv, 295 KB a
# task): 10.32 vs 10.09 and 10.21 vs 10.00 ms (20 and 30 rounds, alternated with ONNX Runtime); from
# 128 KiB on (layer3's stride-2 conv too) no faster than from 256 (10.10 vs 9.99, and 10.40 vs 10.34 ms
# against 512).
CHUNKED_WEIGHTS = True
# Each output row of a chunk prefetches its share of the next chunk's weights (lowering/prefetch.py).
PREFETCH_NEXT_CHUNK = True
CHUNKED_WEIGHT_BYTES = 1 << 18
WEIGHT_CHUNK_BYTES = 1 << 13


def channel_block(out_channels: int, lanes: int) -> int:
    return next((c for c in (lanes, 8, 4, 2) if out_channels % c == 0), 1)


def _pack_weight(weight, block: int):
    from tvm import te

    out_channels, in_channels, kh, kw = weight.shape
    return te.compute((out_channels // block, in_channels, kh, kw, block),
                      lambda o, i, y, x, c: weight[o * block + c, i, y, x], name="packed_weight")


def _conv2d_packed(data, packed, strides, padding, dilation):
    from tvm import te, topi

    batch, in_channels, height, width = data.shape
    blocks, _, kernel_h, kernel_w, block = packed.shape
    top, left, bottom, right = padding
    (stride_h, stride_w), (dilation_h, dilation_w) = strides, dilation
    out_h = (height + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + left + right - dilation_w * (kernel_w - 1) - 1) // stride_w + 1
    padded = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="pad_temp") \
        if any(padding) else data
    rc = te.reduce_axis((0, in_channels), name="rc")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (batch, blocks * block, out_h, out_w),
        lambda n, co, y, x: te.sum(
            padded[n, rc, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w]
            * packed[co // block, rc, ry, rx, co % block], axis=[rc, ry, rx]),
        name=PACKED_CONV_BLOCK, attrs={LANES_ATTR: block})


def prefers_nchw(call, lanes: int) -> bool:
    """A reduction of at most 2 x lanes multiply-adds per output (MobileNetV2's 16- and 24-channel
    1x1 expansions) whose width 8 divides: the output store dominates there, and the NCHW rule's
    contiguous stores along the width beat the packed conv's epilogue across channels (measured
    in the whole model: 16->96 at 112x112 0.85-1.06 vs 1.5-2.6 ms; 24->144 at 56x56, two calls,
    0.95-1.0 vs 1.48 ms); with larger reductions the packed conv was faster on every shape tried.
    Not a strided conv (MobileNetV2's 3 -> 32 stem, 3x3 / 2): the NCHW rule's vectors along the
    width would read every other input, while the packed conv broadcasts its inputs one by one.
    Alone 0.124 ms, against 0.201 for the NCHW rule on a plane split by column parity and 0.24 for
    TVM's conv; in the model 0.163 vs 0.218 (the depthwise conv after it 0.108 vs 0.097)."""
    _, in_channels, kernel_h, kernel_w = (int(e) for e in call.args[1].ty.shape)
    strided = any(int(stride) > 1 for stride in call.attrs.strides)
    return (not strided and in_channels * kernel_h * kernel_w <= 2 * lanes
            and int(call.ty.shape[3]) % min(lanes, 8) == 0)


def legalize_conv2d(bb, call):
    """LegalizeOps hook for relax.nn.conv2d (see module docstring); TVM's own otherwise."""
    import tvm
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    attrs = call.attrs
    data, weight = call.args
    target = tvm.target.Target.current(allow_none=True)
    if blocked_lanes(attrs.out_layout) is not None:  # lowering.blocked_layout converted it
        return legalize_blocked_conv2d(bb, call)
    if (target is None or target.kind.name != "llvm"
            or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW"
            or not isinstance(weight, tvm.ir.expr.GenericConst) or str(data.ty.dtype) != "float32"
            or str(weight.ty.dtype) != "float32" or attrs.out_dtype not in ("", "float32")):
        return _nn_conv2d(bb, call)
    lanes = vector_lanes(target)
    if int(attrs.groups) != 1:  # depthwise / grouped: the NCHW rule, with its padding split
        return legalize_grouped_conv2d(bb, call)
    from .winograd import legalize_winograd_conv2d, winograd_tile  # here: winograd imports this module

    tile = winograd_tile(call, lanes)
    if tile is not None:
        return legalize_winograd_conv2d(bb, call, tile, lanes)
    if prefers_nchw(call, lanes):
        return _nn_conv2d(bb, call)
    block = channel_block(int(weight.ty.shape[0]), lanes)
    packed = bb.emit_te(_pack_weight, weight, block, primfunc_name_hint="pack_conv_weight")
    return bb.call_te(_conv2d_packed, data, packed, [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
                      primfunc_name_hint="conv2d")


class PackedConv2dRule(dl.ScheduleRule):
    """Schedule for the `conv2d_packed` kernels `legalize_conv2d` makes (module docstring)."""

    name = "conv2d-packed"

    def apply(self, func, target, tunable):
        matched = one_conv_with_epilogue(func, target, PACKED_CONV_BLOCK)
        if matched is None:
            return None
        sch, conv, before, after = matched
        block = conv.block_rv
        stmt = sch.get(block)
        if LANES_ATTR not in stmt.annotations:
            return None
        cb = int(stmt.annotations[LANES_ATTR])
        batch, channels, out_h, out_w = (int(e) for e in stmt.writes[0].source.shape)
        spatial = [iv for iv in stmt.iter_vars if iv.iter_type == 0]
        if out_h == 1 or out_w == 1 or len(spatial) != 3 + (batch > 1):
            return None
        loops = sch.get_loops(block)
        threads = thread_count(target)
        in_channels = int(stmt.reads[0].source.shape[1])
        pointwise = not before and len(loops) == len(spatial) + 1  # a 1x1 conv without padding
        parts = []  # [the part loop] when the input channels are split among the threads; `final` then adds the parts
        if pointwise and splits_input_channels(in_channels, channels, threads):
            final, (block, part, loops) = block, split_reduction(sch, block, loops[-1], threads)
            parts = [part]
        *batch_loops, co, oh, ow = loops[:len(spatial)]
        reduction_loops = loops[len(spatial):]
        in_w, kernel_w = int(stmt.reads[0].source.shape[3]), int(stmt.reads[1].source.shape[3])
        # a stride-2 conv reads part of its input; the stride comes from the shapes, since a block
        # annotation would change the workloads that the shipped tuning records match
        strided = (in_w - kernel_w) // max(out_w - 1, 1) > 1
        v, owt = choose_tile(channels // cb, out_w, register_budget(target))
        coo, cv, cl = sch.split(co, [None, v, cb])
        owo, owi = sch.split(ow, [None, owt])
        chunk = None if parts or pointwise else _weight_chunk(
            in_channels, [int(sch.get(loop).extent) for loop in reduction_loops[1:]], v * cb)
        if chunk:  # the weights in chunks of input channels, each used for every row (module docstring)
            chunk_loop, channel_in_chunk = sch.split(reduction_loops[0], [None, chunk])
            reduction_loops = [chunk_loop, channel_in_chunk, *reduction_loops[1:]]
            sch.reorder(*batch_loops, coo, chunk_loop, oh, owo, *reduction_loops[1:], cv, owi, cl)
        else:
            outer = [oh, coo] if not parts and strided and read_bytes(stmt, 1) < read_bytes(stmt, 0) else [coo, oh]
            sch.reorder(*parts, *batch_loops, *outer, owo, *reduction_loops, cv, owi, cl)
        if parts:  # the tile goes to R (module docstring); the epilogue joins the sum of the parts
            epilogue = attach_epilogue(sch, block, None, owo)
            sch.transform_layout(block, ("write", 0), lambda t, n, c, y, x: (t, n, c // cb, y, x, c % cb))
            schedule_sum_of_parts(sch, final, after[-1].block_rv if after else None, len(spatial))
        else:
            epilogue = attach_epilogue(sch, block, after[-1].block_rv if after else None, coo if chunk else owo)
            sch.transform_layout(block, ("write", 0), lambda n, c, y, x: (n, c // cb, y, x, c % cb))
        # the epilogue reads the tile by lanes too: (channels, columns) of a tile, or of coo's map with chunks
        channel_loop, *row_loop, column_loop = sch.get_loops(epilogue)[-3 if chunk else -2:]
        tile_extents = [v * cb, out_w if chunk else owt]
        if cb >= 4 and [int(sch.get(loop).extent) for loop in (channel_loop, column_loop)] == tile_extents:
            epilogue_blocks, epilogue_lanes = sch.split(channel_loop, [None, cb])
            sch.reorder(epilogue_blocks, *row_loop, column_loop, epilogue_lanes)
            sch.vectorize(epilogue_lanes)
        step = sch.fuse(*parts, *batch_loops, *([coo] if chunk else outer))
        pad_per_thread = PAD_PER_THREAD and len(before) == 1 and threads > 1
        if pointwise and not parts and threads > 1 and out_w <= LOCAL_COPY_MAX_WIDTH and not strided:
            _copy_input_per_thread(sch, block, step, threads, cb)
        elif pad_per_thread:
            thread, _ = sch.split(step, [threads, None])
            sch.parallel(thread)
            sch.compute_at(before[0].block_rv, thread)
        else:
            sch.parallel(step)
        sch.unroll(cv)
        sch.unroll(owi)
        sch.vectorize(cl)
        for info in [] if pad_per_thread else before:  # the padding: its own parallel pass
            pad_loops = sch.get_loops(info.block_rv)
            sch.parallel(sch.fuse(*pad_loops[:-1]) if len(pad_loops) > 2 else pad_loops[0])
        sch.decompose_reduction(block, reduction_loops[0])
        if chunk and PREFETCH_NEXT_CHUNK:
            prefetch_next_step(sch, block, stmt.reads[1].source, chunk_loop, oh)
        return sch


def _weight_chunk(in_channels: int, kernel: list[int], out_block: int) -> int | None:
    """Input channels per chunk of the weights when a task's weights (out_block output channels)
    exceed CHUNKED_WEIGHT_BYTES: the most whose chunk fits WEIGHT_CHUNK_BYTES; else None."""
    per_channel = out_block * 4 * math.prod(kernel)  # fp32 bytes of one input channel's weights
    if not CHUNKED_WEIGHTS or in_channels * per_channel <= CHUNKED_WEIGHT_BYTES:
        return None
    fitting = [d for d in range(1, in_channels) if in_channels % d == 0 and d * per_channel <= WEIGHT_CHUNK_BYTES]
    return max(fitting, default=None)


def _copy_input_per_thread(sch, block, step, threads: int, lanes: int) -> None:
    """The parallel loop as (one share per thread) x (its tasks), each thread copying the input
    into its own buffer before its tasks read it (module docstring)."""
    thread, _ = sch.split(step, [threads, None])
    sch.parallel(thread)
    copy = sch.cache_read(block, 0, "global")
    sch.compute_at(copy, thread)
    copy_loops = sch.get_loops(copy)[1:]
    if all(isinstance(sch.get(loop).extent, tirx.IntImm) for loop in copy_loops):
        flat = sch.fuse(*copy_loops)
        if int(sch.get(flat).extent) % lanes == 0:
            sch.vectorize(sch.split(flat, [None, lanes])[1])
