"""GPU schedules without search: TVM's dlight rules, kernel by kernel, with the rule named.

For each unscheduled kernel of the fused module the first rule that applies schedules it:

    Matmul (tiled, shared-memory staged GEMM, also conv as implicit GEMM where dlight sees one)
    -> GEMV -> LowBatchGEMV -> Reduction (row reductions: softmax, layer norm, mean)
    -> GeneralReduction -> Transpose -> Fallback (one thread per output element, fused loops)

A kernel no rule takes would compile into host code and no CUDA module (tvm-notes gotcha 6);
that is an error here naming the kernel, not a silent CPU fallback. Which rule scheduled each
kernel is a lowering note (the dump and the compile log show it): a Fallback kernel is
correct but plain, the first place to look when a GPU build is slow.
"""
from __future__ import annotations

from slimgraph.ir.errors import SlimgraphError

from .schedule_common import is_scheduled


class GpuScheduleError(SlimgraphError):
    """A kernel that no GPU rule can schedule."""


def gpu_rules():
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
            dl.gpu.Transpose(), dl.gpu.Fallback()]


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
