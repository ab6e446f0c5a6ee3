"""Benchmark on an NVIDIA GPU: PyTorch eager, torch.compile, plain TVM and slimgraph in one run.

    python -m slimgraph.tests.bench.bench_cuda [--models resnet18,bert_encoder] [--runs 50]
                                               [--db DIR] [--markdown FILE] [--json FILE]

Median latency (ms, batch 1, fp32) per engine and each engine's ratio to torch.compile (< 1 means
faster). Every engine runs on the same GPU, with TF32 off in PyTorch (cuDNN and cuBLAS would
otherwise round fp32 inputs to 10-bit mantissas, which TVM's fp32 kernels do not). "plain TVM" is
TVM's torch importer and its default CUDA build (dlight's rules) with no slimgraph stage in
between; "slimgraph" the default pipeline with dlight's rules per kernel; "slimgraph tuned" the
same with the MetaSchedule records of --db (and those shipped with slimgraph), where they hold
records for the model's kernels. A PyTorch run is timed from the call to the end of the GPU's
work (torch.cuda.synchronize); TVM's by its VM timer, which also waits for the GPU. The engines
are timed in turn, in rounds (bench_models.interleaved_medians). The largest output difference of
slimgraph's library from PyTorch on the GPU is listed too. A benchmark, not a test.
"""
from __future__ import annotations

import copy
import json
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import slimgraph  # noqa: E402
from slimgraph.codegen.tuning import TuningOptions  # noqa: E402
from slimgraph.models import REFERENCE_MODELS, reference_model  # noqa: E402

from .bench_models import (bench_parser, interleaved_medians, machine_description, show_table,  # noqa: E402
                           timed, vm_runs)

ENGINES = ["PyTorch eager", "torch.compile", "plain TVM", "slimgraph", "slimgraph tuned"]
BASELINE = "torch.compile"


def synchronized(fn):
    """count -> ms of `count` calls of `fn`, each timed until the GPU has finished its work."""
    return timed(lambda: (fn(), torch.cuda.synchronize()), warmup=3)


def plain_tvm_runs(module, inputs):
    """TVM alone on the GPU: from_exported_program + tvm.compile's default CUDA pipeline (dlight)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from slimgraph.codegen.cuda import enable_cuda_codegen
    from slimgraph.codegen.targets import cuda

    enable_cuda_codegen()
    target = cuda().tvm_target()
    mod = from_exported_program(torch.export.export(module, tuple(inputs)))
    with target:
        executable = tvm.compile(mod, target)
    device = tvm.cuda(0)
    vm = relax.VirtualMachine(executable, device)
    args = [tvm.runtime.tensor(t.numpy(), device) for t in inputs]
    vm.set_input("main", *args)
    vm.invoke_stateful("main")
    return lambda count: [t * 1e3 for t in vm.time_evaluator("invoke_stateful", device, number=1, repeat=count,
                                                             min_repeat_ms=0)("main").results]


def bench_model(name: str, runs: int, database) -> dict:
    module, inputs = reference_model(name)
    gpu_module, gpu_inputs = copy.deepcopy(module).cuda().eval(), [t.cuda() for t in inputs]
    engines = {"PyTorch eager": synchronized(lambda: gpu_module(*gpu_inputs))}
    compiled_module = torch.compile(gpu_module)
    with torch.no_grad():
        reference = gpu_module(*gpu_inputs)
        engines["torch.compile"] = synchronized(lambda: compiled_module(*gpu_inputs))
        engines["torch.compile"](1)  # compiles here, untimed
    results: dict = {}
    engines["plain TVM"] = plain_tvm_runs(module, inputs)
    arrays = [t.numpy() for t in inputs]
    for engine, use_database in (("slimgraph", False), ("slimgraph tuned", True)):
        tuning = TuningOptions(database=database, use_database=use_database)
        compiled = slimgraph.compile(module, inputs, name=name, target="cuda", check=False, tuning=tuning)
        if use_database and not tuning.report.applied:
            continue
        outputs = compiled(*arrays)  # a tuple of numpy arrays
        expected = reference if isinstance(reference, (list, tuple)) else [reference]
        results[f"{engine} max |diff|"] = max(float(abs(torch.as_tensor(o) - e.cpu()).max())
                                              for o, e in zip(outputs, expected))
        results[f"{engine} kernels"] = compiled.report.kernel_launches
        results[f"{engine} tuned kernels"] = len(tuning.report.applied)
        engines[engine] = vm_runs(compiled, arrays)
    with torch.no_grad():
        results.update(interleaved_medians(engines, runs))
    return results


def main() -> None:
    parser = bench_parser(__doc__, ",".join(sorted(REFERENCE_MODELS)), 50)
    parser.add_argument("--db", help="tuning database for the 'slimgraph tuned' column (default: the user's cache)")
    parser.add_argument("--json", help="also write the measurements as JSON to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda: PyTorch sees no CUDA GPU on this machine")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    console = Console(stderr=True)
    rows, measured = [], {}
    for name in args.models.split(","):
        console.print(f"[bold]{name}[/bold] ...")
        results = measured[name] = bench_model(name, args.runs, args.db)
        base = results[BASELINE]
        row = [name]
        for engine in ENGINES:
            row.append(f"{results[engine]:.3f} ({results[engine] / base:.2f}x)" if engine in results else "-")
        row.append(f"{results['slimgraph max |diff|']:.1e}")
        rows.append(row)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"machine": machine_description(), "gpu": torch.cuda.get_device_name(), "models": measured},
                          handle, indent=1)
    headers = ["model", *[f"{e} ms (vs {BASELINE})" for e in ENGINES], "slimgraph vs PyTorch max |diff|"]
    table = Table(*headers, title=f"batch 1, fp32, {torch.cuda.get_device_name()}; {machine_description()}")
    for row in rows:
        table.add_row(*row)
    show_table(table, headers, rows, args.markdown)


if __name__ == "__main__":
    main()
