"""Max pooling, NCHW: separable where the window allows it, else a windowed reduction over the padded plane of
lowering/grouped_conv.py.

Separable (`max_pool2d` for dilation 1, each padding smaller than the window, a window of at most
`MAX_SEPARABLE_WINDOW` per side; ResNet-18's 3x3 / 2):

    R[n, c, oh, x]    = max_{kh} x_in[n, c, clamp(oh*sh + kh - top, 0, H - 1), x]       (a row: whole vectors)
    out[n, c, oh, ow] = max_{kw} R[n, c, oh, clamp(ow*sw + kw - left, 0, W - 1)]

Clamping an index to the plane instead of padding with the lowest value gives the same maximum: with dilation 1
a window is contiguous, and with padding smaller than it every window holds the edge row (column) that a clamped
index repeats. `SeparableMaxPoolRule` runs (n, c, oh) in parallel, computes each task's row R in L1 (vectorized,
the clamp a scalar per row) and splits the output columns at the ones whose window reaches past the plane, so the
columns in between read R without a clamp and LLVM's loop vectorizer loads stride-2 windows as whole vectors split
by shuffles. ResNet-18's pool (2-core Xeon, AVX-512), alone, the two forms alternated: 0.099 ms over the padded
plane, 0.046 separable (MetaSchedule's best, a scalar schedule padding each output's window in L1, had beaten the
plane by 0.078 -> 0.057 in an earlier session); per call in the model 0.12 -> 0.08 ms.

Over the padded plane (other windows):

    P[n, c, y, x]  = x_in[n, c, y - top, x - left]  inside the input,  lowest(dtype) outside
    out[n, c, oh, ow] = max_{kh, kw} P[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

TVM's own legalization pads with an `if_then_else` per element and, with stride 2, reads every
other element of a row, so its loops stay scalar (ResNet-18's pool: 0.14 ms).
Written over `padded_plane`, the padding carries its interior annotation (a branch-free,
vectorized copy) and a stride-2 plane is split by column parity, so the direct conv rule
(lowering/cpu_schedules.Conv2dRule, which takes it as a depthwise reduction: per channel, the
plane padded in cache right before it is read) loads whole vectors.
"""
from __future__ import annotations

import functools

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .grouped_conv import padded_plane, partition_loop
from .schedule_common import vector_lanes

POOL_BLOCK = "pool_max"
# Block annotation of the separable pool's row stage R: [first, end) of the output columns whose window lies inside
# the plane (module docstring).
ROWS_ATTR = "slimgraph.pool_rows"
MAX_SEPARABLE_WINDOW = 8  # taps per side written out as a chain of maxima; larger windows reduce over the plane
ROW_VECTORS = 8  # a row of R at most this many vectors long that the lanes do not divide is one long vector


def _lowest(dtype: str):
    import numpy as np

    return float(np.finfo(dtype).min) if dtype.startswith("float") else int(np.iinfo(dtype).min)


def _maximum(values):
    return functools.reduce(tirx.max, values)


def _clamp(index, extent: int):
    return tirx.max(tirx.min(index, extent - 1), 0)


def separable(pool_size, padding, dilation) -> bool:
    """Does the window allow the separable form (module docstring)?"""
    (kernel_h, kernel_w), (top, left, bottom, right) = pool_size, padding
    return (tuple(dilation) == (1, 1) and max(kernel_h, kernel_w) <= MAX_SEPARABLE_WINDOW
            and 0 <= top < kernel_h and bottom < kernel_h and 0 <= left < kernel_w and right < kernel_w)


def max_pool2d(data, pool_size, strides, padding, dilation):
    """The max pool above; NCHW, padding (top, left, bottom, right)."""
    from tvm import te

    batch, channels, height, width = (int(e) for e in data.shape)
    (kernel_h, kernel_w), (stride_h, stride_w), (dilation_h, dilation_w) = pool_size, strides, dilation
    top, left, bottom, right = padding
    out_h = (height + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + left + right - dilation_w * (kernel_w - 1) - 1) // stride_w + 1
    if separable(pool_size, padding, dilation):
        first = min(-(-left // stride_w), out_w)  # the output columns whose window is inside the plane
        end = max(first, min((width + left - kernel_w) // stride_w + 1, out_w))
        rows = te.compute(
            (batch, channels, out_h, width),
            lambda n, c, y, x: _maximum([data[n, c, _clamp(y * stride_h + ky - top, height), x]
                                         for ky in range(kernel_h)]), name="pool_rows", attrs={ROWS_ATTR: [first, end]})
        return te.compute(
            (batch, channels, out_h, out_w),
            lambda n, c, y, x: _maximum([rows[n, c, y, _clamp(x * stride_w + kx - left, width)]
                                         for kx in range(kernel_w)]), name=POOL_BLOCK)
    dtype = str(data.dtype)
    plane, read = padded_plane(data, padding, stride_w, dilation_w, _lowest(dtype), dtype)
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (batch, channels, out_h, out_w),
        lambda n, c, y, x: te.max(read(n, c, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w),
                                  axis=[ry, rx]), name=POOL_BLOCK)


def legalize_max_pool2d(bb, call):
    """LegalizeOps hook for relax.nn.max_pool2d: NCHW without ceil mode as `max_pool2d` above,
    TVM's own legalization otherwise."""
    import tvm

    attrs = call.attrs
    if attrs.layout != "NCHW" or attrs.out_layout != "NCHW" or bool(attrs.ceil_mode):
        return tvm.ir.Op.get("relax.nn.max_pool2d").get_attr("FLegalize")(bb, call)
    return bb.call_te(max_pool2d, call.args[0], [int(k) for k in attrs.pool_size], [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
                      primfunc_name_hint="max_pool2d")


class SeparableMaxPoolRule(dl.ScheduleRule):
    """Schedule for the separable max pool (module docstring), with the elementwise ops after it."""

    name = "max-pool-separable"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or not all(info.is_injective() for info in infos):
            return None
        stages = [i for i, info in enumerate(infos) if ROWS_ATTR in sch.get(info.block_rv).annotations]
        if len(stages) != 1 or stages[0] + 1 >= len(infos):
            return None
        rows, pool = infos[stages[0]].block_rv, infos[stages[0] + 1].block_rv
        try:
            for info in infos[:stages[0]]:
                sch.compute_inline(info.block_rv)
            for info in reversed(infos[stages[0] + 2:]):
                sch.reverse_compute_inline(info.block_rv)
        except s_tir.ScheduleError:
            return None
        loops, stmt = sch.get_loops(pool), sch.get(pool)
        # the last loop must be the output columns (normalization drops unit dims: batch 1, one channel)
        if len(loops) < 2 or len(loops) != len(stmt.iter_vars) or \
                not stmt.writes[0].region[-1].min.same_as(stmt.iter_vars[-1].var):
            return None
        *outer, columns = loops
        task = sch.fuse(*outer)
        sch.parallel(task)
        sch.compute_at(rows, task)
        _vectorize_row(sch, sch.get_loops(rows)[-1], vector_lanes(target))
        first, end = (int(v) for v in sch.get(rows).annotations[ROWS_ATTR])
        partition_loop(sch, columns, first, end)  # the clamp of the columns between simplifies away
        return sch


def _vectorize_row(sch, loop, lanes: int) -> None:
    extent = int(sch.get(loop).extent)
    if extent % lanes == 0:
        sch.vectorize(sch.split(loop, [None, lanes])[1])
    elif extent <= ROW_VECTORS * lanes:
        sch.vectorize(loop)

