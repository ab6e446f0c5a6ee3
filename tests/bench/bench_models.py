"""Benchmark: PyTorch eager, torch.compile, ONNX Runtime, plain TVM and slimgraph in one run.

    python -m slimgraph.tests.bench.bench_models [--models resnet18,bert_encoder] [--runs 20]
                                                 [--markdown docs/benchmarks.md]

Median latency (ms, batch 1) per engine, and each engine's ratio to ONNX Runtime fp32 with the
same thread count (< 1 means faster than ORT). "plain TVM" is TVM's own torch importer and default
CPU build with no slimgraph stage in between; "slimgraph, no passes" is `--pipeline none`;
"slimgraph rules" the default pipeline with rule schedules only (no tuning database);
"slimgraph tuned" the same with the tuning database (--db, default: the user's cache) and the
records shipped with slimgraph, where they hold records for the model's kernels ("-" when none).
Kernel calls per inference are listed too. The engines are timed in turn, in rounds
(`interleaved_medians`), so that a slow spell of the machine does not fall on one engine only.
A benchmark, not a test: run it by hand, on a quiet machine.
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
from typing import Callable

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import slimgraph  # noqa: E402
from slimgraph.codegen.tuning import TuningOptions  # noqa: E402
from slimgraph.models import REFERENCE_MODELS, reference_model  # noqa: E402

ROUNDS = 5  # timed runs are split into rounds that visit every engine in turn
PAUSE_SECONDS = 0.5  # before each turn: the previous engine's thread pool goes idle (after 0.05 s, ORT ran 2-3x slower)
ENGINES = ["PyTorch eager", "torch.compile", "ONNX Runtime", "plain TVM", "slimgraph, no passes", "slimgraph rules",
           "slimgraph tuned"]


def timed(fn, warmup: int = 1) -> Callable[[int], list[float]]:
    """count -> the ms of `count` calls of `fn`, after `warmup` untimed ones."""
    def run(count: int) -> list[float]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return times

    return run


def interleaved_medians(engines: dict[str, Callable[[int], list[float]]], runs: int,
                        rounds: int = ROUNDS) -> dict[str, float]:
    """Median ms per engine over `runs` timed runs each, split into `rounds` rounds that visit the
    engines in turn: a slow spell of a shared machine (minutes long on the development VM) then
    falls on every engine alike instead of on whichever was being timed. A short pause before each
    engine lets the previous one's thread pool stop spinning."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    per_round = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for name, run in engines.items():
            time.sleep(PAUSE_SECONDS)
            times[name] += run(per_round)
    return {name: statistics.median(values) for name, values in times.items()}


def vm_runs(compiled, arrays) -> Callable[[int], list[float]]:
    """count -> ms of `count` runs of a compiled slimgraph model (TVM's VM timer, no Python per run)."""
    return lambda count: compiled.benchmark(arrays, repeat=count)["runs_ms"]


def bench_model(name: str, runs: int, use_torch_compile: bool, folder: str, database) -> dict[str, float]:
    module, inputs = reference_model(name)
    results: dict[str, float] = {}
    engines: dict[str, Callable[[int], list[float]]] = {}
    engines["PyTorch eager"] = timed(lambda: module(*inputs))
    if use_torch_compile:
        compiled_module = torch.compile(module)
        with torch.no_grad():
            timed(lambda: compiled_module(*inputs), warmup=3)(1)  # torch.compile compiles here, untimed
        engines["torch.compile"] = timed(lambda: compiled_module(*inputs))

    import onnxruntime

    path = os.path.join(folder, f"{name}.onnx")
    torch.onnx.export(module, inputs, path, dynamo=False, opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    engines["ONNX Runtime"] = timed(lambda: session.run(None, feeds))

    engines["plain TVM"] = plain_tvm_runs(module, inputs)
    arrays = [t.numpy() for t in inputs]
    for engine, pipeline, use_database in (("slimgraph, no passes", "none", False),
                                           ("slimgraph rules", "default", False), ("slimgraph tuned", "default", True)):
        tuning = TuningOptions(database=database, use_database=use_database)
        compiled = slimgraph.compile(module, inputs, name=name, pipeline=pipeline, check=False, tuning=tuning)
        if use_database and not tuning.report.applied:
            continue
        engines[engine] = vm_runs(compiled, arrays)
        results[f"{engine} kernel calls"] = compiled.report.kernel_launches
    with torch.no_grad():
        results.update(interleaved_medians(engines, runs))
    return results


def plain_tvm_runs(module, inputs) -> Callable[[int], list[float]]:
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
    return timed(lambda: vm["main"](*args))


def bench_parser(doc: str, models: str, runs: int) -> argparse.ArgumentParser:
    """The options every model benchmark takes: --models, --runs and --markdown."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=models)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    return parser


def show_table(table, headers: list[str], rows: list[list[str]], markdown: str | None) -> None:
    """Print the rich table; with --markdown also write its rows as a markdown table."""
    Console().print(table)
    if markdown:
        write_markdown(markdown, headers, rows)


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
    parser = bench_parser(__doc__, ",".join(sorted(REFERENCE_MODELS)), 20)
    parser.add_argument("--no-torch-compile", action="store_true")
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
