"""GPU schedules without search: TVM's dlight rules, kernel by kernel, with the rule named.

For each unscheduled kernel of the fused module the first rule that applies schedules it:

    Matmul (tiled, shared-memory staged GEMM, also conv as implicit GEMM where dlight sees one)
    -> GEMV -> LowBatchGEMV -> SmallReduction (ours, below)
    -> Reduction (row reductions: softmax, layer norm, mean) -> GeneralReduction -> Transpose
    -> Fallback (one thread per output element, fused loops)

SmallReduction: a kernel whose reductions sum at most SMALL_REDUCTION terms per output, such as a
k x k depthwise conv y[c,i,j] = sum_{a,b<k} x[c,i+a,j+b] * w[c,a,b] (9, 25 or 49 terms), gets
one thread per output: its R multiply-adds in sequence into a register, then its epilogue
(bias, ReLU6) in the same thread. GeneralReduction would give every output a block of 256
threads, of which R do work, then a shared-memory tree reduction (Reduction, for the same kernel
in another form, a block of 8 threads per output): MobileNetV2's first depthwise conv became
401,408 blocks of 256 threads. Measured on an H200 (2026-11-30), MobileNetV2 built that way took
2.42 ms against 0.76 ms for plain TVM, whose unfused depthwise convs GeneralReduction declines
and Fallback takes.

A kernel no rule takes would compile into host code and no CUDA module (tvm-notes gotcha 6);
that is an error here naming the kernel, not a silent CPU fallback. Which rule scheduled each
kernel is a lowering note (the dump and the compile log show it): a Fallback kernel is
correct but plain, the first place to look when a GPU build is slow.
"""
from __future__ import annotations

import math

from slimgraph.ir.errors import SlimgraphError

from .schedule_common import is_scheduled


class GpuScheduleError(SlimgraphError):
    """A kernel that no GPU rule can schedule."""


SMALL_REDUCTION = 64  # terms per output up to which one thread per output beats a block per output


def reduction_terms(func) -> int:
    """The largest number of terms any block of `func` reduces into one output (0: no reduction)."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    infos = normalize_prim_func(Schedule(func)) or []
    terms = [math.prod(int(i.dom) if isinstance(i.dom, int) else int(i.dom.value) for i in info.iters
                       if i.kind == "R") for info in infos if info.is_reduction()]
    return max(terms, default=0)


class SmallReduction:
    """One thread per output for kernels that reduce few terms per output (module docstring);
    declines every other kernel.

    A kernel of one reduction and an elementwise epilogue over its output (a depthwise conv with
    its bias and ReLU6) stays one GPU kernel: the epilogue runs in the thread that computed its
    value, which stays in a register. Any other kernel gets dlight's Fallback schedule, which
    launches one GPU kernel per block of the TIR function."""

    def __init__(self):
        from tvm.s_tir import dlight as dl

        self.fallback = dl.gpu.Fallback()

    def apply(self, func, target, tunable):
        terms = reduction_terms(func)
        if not 0 < terms <= SMALL_REDUCTION:
            return None
        try:
            fused = _thread_per_output(func, target)
        except Exception:  # noqa: BLE001 - a shape the fused form does not fit
            fused = None
        return fused if fused is not None else self.fallback.apply(func, target, tunable)


def _thread_per_output(func, target):
    """Reduction + epilogue in one kernel: the reduction's spatial loops fused and split over
    blocks of max_threads_per_block threads, its sum kept in a register, the epilogue computed
    at the thread loop. None when the kernel is not of that form."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.dlight import base
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline

    sch = Schedule(func)
    infos = try_inline(sch, normalize_prim_func(sch) or [])  # zero padding and other producers
    if len(infos) != 2 or not infos[0].is_reduction() or infos[1].is_reduction():
        return None
    reduction, epilogue = infos[0].block_rv, infos[1].block_rv
    kinds = infos[0].dom_kind()
    loops = sch.get_loops(reduction)
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == "S"]
    summed = [loop for loop, kind in zip(loops, kinds) if kind == "R"]
    if not spatial or len(spatial) + len(summed) != len(loops):
        return None
    sch.reorder(*spatial, *summed)
    block_x, thread_x = sch.split(sch.fuse(*spatial), factors=[None, base.max_threads_per_block(target)])
    sch.bind(block_x, "blockIdx.x")
    sch.bind(thread_x, "threadIdx.x")
    sch.reverse_compute_at(epilogue, thread_x, preserve_unit_loops=True)
    sch.set_scope(reduction, 0, "local")
    sch.decompose_reduction(reduction, summed[0])
    return sch


def gpu_rules():
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), SmallReduction(), dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(), dl.gpu.Transpose(), dl.gpu.Fallback()]


def first_gpu_schedule(func, target, rules=None) -> tuple[str, object] | None:
    """(rule name, schedule) from the first dlight rule that takes `func` (under `target`), or None."""
    for rule in rules if rules is not None else gpu_rules():
        try:
            space = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001 - a dlight rule that trips on a shape declines
            space = None
        if space is not None:
            return type(rule).__name__, space[0] if isinstance(space, list) else space
    return None


def schedule_gpu(mod, target) -> tuple[object, list[str]]:
    """Schedule every kernel with the first dlight rule that applies; notes name the rule per kernel."""
    from tvm import tirx

    rules = gpu_rules()
    notes, scheduled = [], {}
    with target:
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            found = first_gpu_schedule(func, target, rules)
            if found is None:
                raise GpuScheduleError(f"kernel {gv.name_hint}: no GPU schedule rule applies (it would run as "
                                       f"host code); report the op it computes")
            rule_name, schedule = found
            scheduled[gv] = schedule.mod["main"].with_attr("tirx.is_scheduled", True)
            notes.append(f"kernel {gv.name_hint}: GPU rule {rule_name}")
    for gv, func in scheduled.items():
        mod[gv] = func
    return mod, sorted(notes)
