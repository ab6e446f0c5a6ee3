"""The channel multiple a target runs fast, measured once per target and kept on disk: what the
`prune` pass's `round=auto` rounds channel counts to.

A 3x3 conv from 64 channels at 14x14 is compiled with the project's own rules for every output
width w in 36, 40, ..., 64 and timed (min of repeated runs). A pruned layer that needs w channels
and keeps roundup(w, m) of them costs time(roundup(w, m)); for each candidate multiple m (4, 8,
16, 32) the score is that cost averaged over w = 33..64, and the answer is the smallest m whose
score is within 5 % of the best: the coarser multiple only where the kernels need it (on an
AVX-512 host 48 and 64 output channels took 108 us and 56 took 640 us: the packed conv's
channel block is the 16 vector lanes). The table
(times per width, speed per multiple) is stored as JSON under $XDG_CACHE_HOME/slimgraph/
channel-widths/ (~/.cache without it), one file per target, and reused by every later compile.
Targets this host cannot run (aarch64 under emulation, CUDA without a GPU) are not measured:
their lanes (NEON: 4 fp32 lanes; CUDA: 32 threads of a warp) stand in, and the note says so.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import torch

from .cache import cache_dir

CANDIDATES = (4, 8, 16, 32)
WIDTHS = range(36, 65, 4)
NEEDED = range(33, 65)
TOLERANCE = 0.05


def table_dir() -> Path:
    return cache_dir("channel-widths")


def _conv_graph(width: int):
    from slimgraph.ir.builder import GraphBuilder

    aten = torch.ops.aten
    builder = GraphBuilder(f"width{width}")
    x = builder.input("x", (1, 64, 14, 14), torch.float32)
    weight = builder.param("conv.weight", torch.randn(width, 64, 3, 3, generator=torch.Generator().manual_seed(width)))
    builder.output(builder.call(aten.conv2d.default, x, weight, None, [1, 1], [1, 1]))
    return builder.build()


def _time_width(width: int, target) -> float:
    import tvm

    from slimgraph.lowering import lower

    from .kernel_profile import time_kernel

    _, optimized, _ = lower(_conv_graph(width), target)
    kernels = [f for _, f in optimized.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return sum(time_kernel(f, target, min_repeat_ms=20, repeat=5) for f in kernels)


def choose_multiple(seconds: dict[int, float]) -> tuple[int, dict[int, float]]:
    """(the multiple, mean microseconds of a layer rounded to it) from measured times per width."""
    def rounded(width: int, multiple: int) -> int:
        return -(-width // multiple) * multiple

    cost = {m: statistics.mean(seconds[rounded(w, m)] for w in NEEDED) * 1e6 for m in CANDIDATES}
    best = min(cost.values())
    return next(m for m in CANDIDATES if cost[m] <= (1 + TOLERANCE) * best), cost


def measured_multiple(spec, progress=None) -> tuple[int, str]:
    """(multiple, note) for `spec` (a codegen.targets.TargetSpec), measuring once per target."""
    from .aarch64 import host_is_aarch64

    if spec.device != "cpu" or (spec.arch == "aarch64") != host_is_aarch64():
        multiple = 32 if spec.device == "cuda" else 4
        return multiple, f"round=auto: {multiple} ({spec.name} is not measurable here: its vector width stands in)"
    key = hashlib.sha256(json.dumps(spec.config, sort_keys=True).encode()).hexdigest()[:16]
    path = table_dir() / f"{key}.json"
    if path.is_file():
        table = json.loads(path.read_text())
        table["seconds"] = {int(w): t for w, t in table["seconds"].items()}
    else:
        target = spec.tvm_target()
        seconds = {}
        for width in WIDTHS:
            if progress is not None:
                progress(width)
            seconds[width] = _time_width(width, target)
        multiple, cost = choose_multiple(seconds)
        table = {"target": spec.config, "seconds": seconds, "cost_us": cost, "multiple": multiple}
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(table, indent=1))
        temporary.replace(path)
    costs = ", ".join(f"{m}: {float(us):.0f} us" for m, us in table["cost_us"].items())
    return int(table["multiple"]), (f"round=auto: {table['multiple']} from measured conv latency on {spec.name} "
                                    f"(a 33..64-channel layer rounded to each multiple: {costs}; table {path})")
