"""`slimgraph bench`: whole-model latency and a per-kernel table (time, share, GFLOP/s, % of peak)."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def bench(args) -> int:
    import slimgraph
    from slimgraph.codegen.kernel_profile import int8_peak_gops, peak_gflops, profile_kernels
    from slimgraph.lowering import kernel_calls
    from slimgraph.models import DEFAULT_MODEL

    compiled = slimgraph.compile(args.model or DEFAULT_MODEL, target=args.target, pipeline=args.pipeline,
                                 plugins=args.plugin, check=False, bench_runs=args.runs, verbose=not args.quiet)
    target = compiled.metadata["target"]
    if target.get("device") != "cpu" and target["config"].get("kind") != "llvm":
        stdout.print("per-kernel timing runs on the CPU host; this target's kernels are not timed here")
        return 0
    from slimgraph.codegen.targets import resolve_target

    tvm_target = resolve_target(target["config"]).tvm_target()
    with Progress(TextColumn("timing kernels"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  console=stderr, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("", total=len(kernel_calls(compiled.lowered)))
        kernels = profile_kernels(compiled.lowered, tvm_target, min_repeat_ms=args.min_repeat_ms,
                                  progress=lambda name: progress.update(task, advance=1, description=name))
    peak, int8_peak = peak_gflops(tvm_target), int8_peak_gops(tvm_target)
    integer = any(k.integer for k in kernels)
    total = sum(k.total_seconds for k in kernels)
    latency = compiled.report.latency["median_ms"] if compiled.report.latency else None
    table = Table(title=f"slimgraph bench: {compiled.metadata['model']} ({args.pipeline}), "
                        f"fp32 peak {peak:.0f} GFLOP/s" + (f", int8 peak {int8_peak:.0f} GOP/s" if integer else ""))
    for column in ("kernel", "calls", "ms/call", "ms total", "share", "GFLOP/s", "% of peak"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    for kernel in kernels[:args.top]:
        share = kernel.total_seconds / total if total else 0.0
        ceiling = int8_peak if kernel.integer else peak
        speed = f"{kernel.gflops:.1f}" + ("*" if kernel.integer else "") if kernel.flops else "-"
        table.add_row(kernel.name, str(kernel.calls), f"{kernel.seconds * 1e3:.3f}", f"{kernel.total_seconds * 1e3:.3f}",
                      f"{share:.1%}", speed, f"{kernel.gflops / ceiling:.1%}" if kernel.flops else "-")
    stdout.print(table)
    if integer:
        stdout.print("* int8 kernels: GOP/s of their dot products (padding included), % of the int8 peak")
    hidden = len(kernels) - args.top
    if hidden > 0:
        stdout.print(f"({hidden} more kernels, {sum(k.total_seconds for k in kernels[args.top:]) * 1e3:.3f} ms)")
    summary = f"sum of kernel times {total * 1e3:.3f} ms"
    if latency is not None:
        summary += f"; whole model {latency:.3f} ms (median of {compiled.report.latency['runs']} runs)"
    stdout.print(summary)
    return 0


def add_bench_parser(commands, add_pass_options) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "bench", help="time a model and each of its kernels (GFLOP/s and fraction of the machine's peak)")
    parser.add_argument("model", nargs="?", help="built-in name, model.onnx, dump.ir or file.py:factory")
    parser.add_argument("--target", default="x86", help="preset (x86) or TVM target JSON / .json file")
    add_pass_options(parser, default_pipeline="default")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of the whole model")
    parser.add_argument("--top", type=int, default=20, help="kernels to list, slowest total first")
    parser.add_argument("--min-repeat-ms", type=int, default=50, help="minimum timing window per kernel")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=bench)
