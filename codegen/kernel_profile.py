"""Per-kernel time and fraction of the machine's peak: which kernel is slow, by name.

Each TIR kernel of the lowered module is built on its own and timed with TVM's
time_evaluator on random inputs of its buffer shapes (`calls` = how often `main` launches it).

    FLOPs     = tvm.s_tir.analysis.estimate_tir_flops(kernel)   (a multiply-add counts 2)
    GFLOP/s   = FLOPs / seconds per call
    peak      = cores x FMA units x fp32 lanes x 2 flops x clock (GHz)
    fraction  = GFLOP/s / peak
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

    device = tvm.cpu()
    func = func.with_attr("global_symbol", "main")
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
        try:
            flops = float(estimate_tir_flops(tvm.IRModule({"main": mod[name]})))
        except tvm.error.InternalError:  # a tensorized kernel (vpdpbusd) has vector ops it cannot count
            flops = 0.0
        results.append(KernelTime(name, calls, seconds, flops))
    return sorted(results, key=lambda k: -k.total_seconds)
