"""Per-kernel time and fraction of the machine's peak: which kernel is slow, by name.

Each TIR kernel of the lowered module is built on its own and timed with TVM's
time_evaluator on random inputs of its buffer shapes (`calls` = how often `main` launches it).

    FLOPs     = tvm.s_tir.analysis.estimate_tir_flops(kernel)   (a multiply-add counts 2)
    GFLOP/s   = FLOPs / seconds per call
    peak      = cores x FMA units x fp32 lanes x 2 flops x clock (GHz)
    fraction  = GFLOP/s / peak

Integer kernels tensorized into 4-way int8 dot products (vpdpbusd, sdot), which TVM's estimate
cannot count, are counted from their dot-product instructions instead:

    OPs       = 2 x sum over dot-product calls of (int32 lanes x 4) x the extents of the loops around it
    int8 peak = 4 x fp32 peak   (one instruction does 4 multiply-adds per 32-bit lane where an FMA does 1)

so their rate is in GOP/s against the int8 peak. The count includes the work done on padding (channels
padded to 4, rows to whole vectors): it is the rate the machine runs at, not the model's useful work.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimgraph.lowering.pipeline import kernel_calls

# FMA units per core: 2 on every x86 core with AVX-512 or AVX2 we target and on Neoverse N1/V1;
# the peak is a ceiling for the ratio, so the common case is taken.
FMA_UNITS = 2


@dataclass
class KernelTime:
    name: str
    calls: int
    seconds: float  # per call
    flops: float  # per call
    integer: bool = False  # ops of int8 dot products (against the int8 peak), not float ops

    @property
    def total_seconds(self) -> float:
        return self.seconds * self.calls

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


def clock_ghz() -> float:
    """Nominal clock of the host: cpufreq max if the kernel exposes it, else /proc/cpuinfo."""
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if cpufreq.is_file():
        return int(cpufreq.read_text()) / 1e6
    try:
        match = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
    except OSError:
        match = None
    return float(match.group(1)) / 1000 if match else 2.0


def peak_gflops(target, threads: int | None = None) -> float:
    """fp32 peak of `threads` cores (default: TVM_NUM_THREADS or the target's num-cores)."""
    from slimgraph.lowering.schedule_common import vector_lanes

    cores = threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or int(target.attrs.get("num-cores", 1))
    return cores * FMA_UNITS * vector_lanes(target) * 2 * clock_ghz()


def int8_peak_gops(target, threads: int | None = None) -> float:
    """Peak of the 4-way int8 dot product: 4 multiply-adds per 32-bit lane per instruction."""
    return 4 * peak_gflops(target, threads)


DOT_PRODUCTS = ("llvm.x86.avx512.vpdpbusd.512", "llvm.x86.avx512.vpdpbusd.256", "llvm.x86.avx512.vpdpbusd.128",
                "llvm.aarch64.neon.sdot.v4i32.v16i8", "llvm.aarch64.neon.udot.v4i32.v16i8")  # 4 per 32-bit lane


def dot_product_ops(func) -> float:
    """2 x the multiply-adds of the kernel's int8 dot-product instructions, each weighted by the
    extents of the loops around it (module docstring); 0 when it has none."""
    import tvm
    from tvm import tirx
    from tvm.target.codegen import llvm_lookup_intrinsic_id

    dot_ids = {int(llvm_lookup_intrinsic_id(name)) for name in DOT_PRODUCTS}

    def call_ops(expr) -> float:  # the dot products in an expression tree (casts, arithmetic, calls)
        if isinstance(expr, tvm.ir.Call):
            first = expr.args[0] if expr.args else None
            is_dot = (getattr(expr.op, "name", "") == "tirx.call_llvm_pure_intrin" and isinstance(first, tirx.IntImm)
                      and int(first) in dot_ids)
            own = 2.0 * 4 * expr.ty.dtype.lanes if is_dot else 0.0  # 4 multiply-adds per 32-bit lane
            return own + sum(call_ops(arg) for arg in expr.args)
        children = [getattr(expr, key, None) for key in ("a", "b", "value", "condition", "true_value", "false_value")]
        return sum(call_ops(child) for child in children if isinstance(child, tvm.ir.expr.Expr))

    def walk(stmt, times: float) -> float:
        if isinstance(stmt, tirx.For):
            return walk(stmt.body, times * int(stmt.extent)) if isinstance(stmt.extent, tirx.IntImm) else 0.0
        if isinstance(stmt, tirx.SeqStmt):
            return sum(walk(child, times) for child in stmt.seq)
        if isinstance(stmt, tirx.BufferStore):
            return times * call_ops(stmt.value)
        children = [getattr(stmt, key, None) for key in ("block", "body", "then_case", "else_case")]
        return sum(walk(child, times) for child in children if isinstance(child, tirx.Stmt))

    return walk(func.body, 1.0)


def _random_args(func, device):
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    args = []
    for info in ArgInfo.from_prim_func(func):
        shape = [int(extent) for extent in info.shape]
        dtype = str(info.dtype)
        if dtype.startswith("float"):
            data = rng.standard_normal(shape).astype(dtype)
        else:
            data = rng.integers(0, 4, size=shape).astype(dtype)
        args.append(tvm.runtime.tensor(data, device))
    return args


def time_kernel(func, target, *, min_repeat_ms: int = 50, repeat: int = 3) -> float:
    """Median seconds per call of one TIR kernel, built alone, on random inputs."""
    import tvm

    from .build import build_context

    device = tvm.cpu()
    func = func.with_attr("global_symbol", "main")
    with build_context():
        executable = tvm.compile(tvm.IRModule({"main": func}), target)
    timer = executable.mod.time_evaluator("main", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return float(np.median(timer(*_random_args(func, device)).results))


def profile_kernels(mod, target, *, min_repeat_ms: int = 50, repeat: int = 3, progress=None) -> list[KernelTime]:
    """Time every kernel `main` calls; slowest total first. `progress(name)` is called per kernel."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    results = []
    for name, calls in kernel_calls(mod).items():
        if progress is not None:
            progress(name)
        seconds = time_kernel(mod[name], target, min_repeat_ms=min_repeat_ms, repeat=repeat)
        integer_ops = dot_product_ops(mod[name])
        try:
            flops = 0.0 if integer_ops else float(estimate_tir_flops(tvm.IRModule({"main": mod[name]})))
        except tvm.error.InternalError:  # other vector intrinsics it cannot count
            flops = 0.0
        results.append(KernelTime(name, calls, seconds, integer_ops or flops, integer=bool(integer_ops)))
    return sorted(results, key=lambda k: -k.total_seconds)
