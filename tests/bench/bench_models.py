"""Benchmark: PyTorch eager, torch.compile, ONNX Runtime, plain TVM and slimgraph in one run.

    python -m slimgraph.tests.bench.bench_models [--models resnet18,bert_encoder] [--runs 20]
                                                 [--markdown docs/benchmarks.md]

Median latency (ms, batch 1) per engine, and each engine's ratio to ONNX Runtime fp32 with the
same thread count (< 1 means faster than ORT). "plain TVM" is TVM's own torch importer and default
CPU build with no slimgraph stage in between; "slimgraph, no passes" is `--pipeline none`;
"slimgraph rules" the default pipeline with rule schedules only (no tuning database);
"slimgraph tuned" the same with the tuning database (--db, default: the user's cache) where it
holds records for the model's kernels ("-" when it holds none). Kernel calls per inference are
listed too. A benchmark, not a test: run it by hand, on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import slimgraph  # noqa: E402
from slimgraph.codegen.tuning import TuningOptions  # noqa: E402
from slimgraph.models import REFERENCE_MODELS, reference_model  # noqa: E402

ENGINES = ["PyTorch eager", "torch.compile", "ONNX Runtime", "plain TVM", "slimgraph, no passes", "slimgraph rules",
           "slimgraph tuned"]


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_model(name: str, runs: int, use_torch_compile: bool, folder: str, database) -> dict[str, float]:
    module, inputs = reference_model(name)
    results: dict[str, float] = {}
    with torch.no_grad():
        results["PyTorch eager"] = median_ms(lambda: module(*inputs), runs)
        if use_torch_compile:
            compiled_module = torch.compile(module)
            results["torch.compile"] = median_ms(lambda: compiled_module(*inputs), runs, warmup=3)

    import onnxruntime

    path = os.path.join(folder, f"{name}.onnx")
    torch.onnx.export(module, inputs, path, dynamo=False, opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    results["ONNX Runtime"] = median_ms(lambda: session.run(None, feeds), runs)

    results["plain TVM"] = plain_tvm_latency(module, inputs, runs)
    arrays = [t.numpy() for t in inputs]
    for engine, pipeline, use_database in (("slimgraph, no passes", "none", False),
                                           ("slimgraph rules", "default", False), ("slimgraph tuned", "default", True)):
        tuning = TuningOptions(database=database, use_database=use_database)
        compiled = slimgraph.compile(module, inputs, name=name, pipeline=pipeline, check=False, tuning=tuning)
        if use_database and not tuning.report.applied:
            continue
        results[engine] = compiled.benchmark(arrays, repeat=runs)["median_ms"]
        results[f"{engine} kernel calls"] = compiled.report.kernel_launches
    return results


def plain_tvm_latency(module, inputs, runs: int) -> float:
    """TVM alone: from_exported_program + tvm.compile's default CPU pipeline."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from slimgraph.codegen.targets import x86_host

    program = torch.export.export(module, tuple(inputs))
    mod = from_exported_program(program)
    executable = tvm.compile(mod, x86_host().tvm_target())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(t.numpy()) for t in inputs]
    return median_ms(lambda: vm["main"](*args), runs, warmup=1)


def write_markdown(path: str, headers: list[str], rows: list[list[str]]) -> None:
    """The table as a markdown table in `path` (docs/benchmarks.md takes it as is)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip() or cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(sorted(REFERENCE_MODELS)))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    parser.add_argument("--db", help="tuning database for the 'slimgraph tuned' column (default: the user's cache)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    engines = [e for e in ENGINES if not (args.no_torch_compile and e == "torch.compile")]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            Console(stderr=True).print(f"benchmarking {name} ...")
            rows[name] = bench_model(name, args.runs, not args.no_torch_compile, folder, args.db)
    table = Table(title=f"median latency, ms (ratio = engine / ONNX Runtime) on {machine_description()}")
    table.add_column("model")
    for engine in engines:
        table.add_column(engine, justify="right")
    table.add_column("kernel calls (none -> default)", justify="right")
    lines = ["| model | " + " | ".join(engines) + " | kernel calls (none -> default) |",
             "|---" * (len(engines) + 2) + "|"]
    for name, result in rows.items():
        ort = result["ONNX Runtime"]
        cells = [f"{result[e]:.2f} ({result[e] / ort:.2f}x)" if e in result else "-" for e in engines]
        cells.append(f"{result['slimgraph, no passes kernel calls']} -> {result['slimgraph rules kernel calls']}")
        table.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    Console().print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
