"""The driver: the whole compiler pipeline, top to bottom, in `compile`.

    MODEL --frontend--> ir.Graph --passes (PassManager)--> ir.Graph --to_relax--> Relax
          --optimize(target)--> fused Relax --build--> executable --export--> model.so + model.json

Each stage is timed and shown on a progress display; the result is checked against the
reference (PyTorch, ONNX Runtime, or the IR run in PyTorch) when `check=True`.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rich.console import Console

import slimgraph
from slimgraph import ir
from slimgraph.calibration_io import calibration_scope
from slimgraph.ir.errors import SlimgraphError
from slimgraph.codegen.aarch64 import QEMU, can_run, cross_compiler
from slimgraph.codegen.artifact import check_writable
from slimgraph.codegen.build import build, generated_source
from slimgraph.codegen.channel_widths import measured_multiple
from slimgraph.codegen.targets import TargetSpec, resolve_target
from slimgraph.codegen.tuning import TuningOptions, TuningReport, tune_and_apply
from slimgraph.lowering import kernel_launches, kernel_names, lower
from slimgraph.lowering.blocked_layout import conv_layout
from slimgraph.model_source import LoadedModel, load_model
from slimgraph.rewrites import InstrumentOptions, PassManager, load_plugin, parse_pipeline, trace_rules
from slimgraph.rewrites.manager import PassRecord
from slimgraph.rewrites.prune import channel_multiple_from
from slimgraph.runtime import CompiledModel


@dataclass
class CompileReport:
    stage_seconds: dict[str, float] = field(default_factory=dict)
    kernels: list[str] = field(default_factory=list)  # distinct kernels (TIR PrimFuncs)
    kernel_launches: int = 0  # kernel calls per inference
    max_abs_diff: float | None = None
    reference: str = ""
    latency: dict | None = None
    passes: list[PassRecord] = field(default_factory=list)
    lowering_notes: list[str] = field(default_factory=list)  # e.g. regions left to separate kernels
    check_note: str = ""  # why the numerical check did not run, or how it ran (emulated)
    tuning: TuningReport | None = None  # kernels from the tuning database, tuned this time
    device_binary: str = ""  # CUDA: what the library holds, e.g. "cubin for sm_90 (in the library's fatbin)"
    conv_layout: str = ""  # the convs' tensor layout (lowering.blocked_layout), "" without convs


@contextmanager
def _stage(report: CompileReport, console: Console | None, label: str):
    start = time.perf_counter()
    if console is None:
        yield
    else:
        with console.status(f"[bold]{label}[/bold]..."):
            yield
    report.stage_seconds[label] = time.perf_counter() - start
    if console is not None:
        console.print(f"  [green]done[/green] {label:<28} {report.stage_seconds[label]:7.2f} s")


def _versions() -> dict:
    import onnx
    import tvm

    return {"slimgraph": slimgraph.__version__, "tvm": tvm.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__}


def _metadata(graph: ir.Graph, spec: TargetSpec, source: str, kernels: list[str], launches: int,
              pipeline: str) -> dict:
    from slimgraph.ir.dtypes import numpy_dtype_name

    def specs(items):
        return [{"name": n, "shape": list(s), "dtype": numpy_dtype_name(d)} for n, s, d in items]

    return {"model": graph.name, "source": source, "inputs": specs(graph.input_specs()),
            "outputs": specs(graph.output_specs()),
            "target": {"name": spec.name, "device": spec.device, "arch": spec.arch, "config": spec.config,
                       "features": list(spec.features)},
            "pipeline": pipeline, "kernels": len(kernels), "kernel_launches": launches, "versions": _versions()}


def max_abs_diff(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    diffs = [float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
             for a, e in zip(actual, expected)]
    return max(diffs, default=0.0)


def compile(model: Any, example_inputs: Sequence[torch.Tensor] | None = None, *, target: str | dict = "x86",
            pipeline: str = "default", output: str | os.PathLike | None = None,
            dump_dir: str | os.PathLike | None = None, instruments: InstrumentOptions | None = None,
            plugins: Sequence[str | os.PathLike] = (), name: str | None = None, check: bool = True,
            bench_runs: int = 0, verbose: bool = False, tuning: TuningOptions | None = None,
            calibration_data: Any = None) -> CompiledModel:
    """Compile `model` for `target`; see docs/user-guide.md. Returns a callable CompiledModel.

    `model`: nn.Module (with `example_inputs`), ir.Graph, .onnx / .ir path, `file.py:factory`,
    or a built-in model name. `pipeline`: rewrite passes (`slimgraph passes` lists them; "none"
    for no passes). `output`: write `output.so` + `output.json` (atomically). `dump_dir`: one IR
    file per pass plus the Relax module before/after optimization. `instruments`: what the pass
    manager prints, checks and times (also SLIMGRAPH_PASS_DEBUG). `plugins`: files registering passes.
    `tuning`: MetaSchedule trials and the tuning database (default: apply the database in the user's
    cache directory, no search; see docs/tuning.md). `calibration_data`: what the `quantize` pass
    calibrates on: batches (tuples of the model's inputs) or an .npz file / folder (calibration_io).
    """
    console = Console(stderr=True) if verbose else None
    report = CompileReport()
    for plugin in plugins:  # before the pipeline parses: plugins add passes to it
        load_plugin(plugin)
    passes = parse_pipeline(pipeline)
    if calibration_data is not None and not any(p.name in ("quantize", "prune") for p in passes.passes):
        raise SlimgraphError(f"calibration data given, but pipeline '{passes}' has no quantize or prune pass")
    options = (instruments or InstrumentOptions()).merged_with_env()
    if dump_dir is not None and options.dump_dir is None:
        options.dump_dir = str(dump_dir)
    spec = resolve_target(target)
    if spec.arch == "aarch64":
        cross_compiler()  # fail before the work: an aarch64 library cannot be linked without it
    if output is not None:
        check_writable(output)
    with _stage(report, console, "import"):
        loaded: LoadedModel = load_model(model, example_inputs, name)
        graph = loaded.graph
    if len(passes) or options.dump_dir:
        with _stage(report, console, f"passes: {passes or 'none'}"), trace_rules(set(options.trace_rule)):
            manager = PassManager(passes, options.build(inputs=loaded.example_inputs), repro_dir=options.dump_dir)
            with calibration_scope(calibration_data, graph.input_specs(), loaded.example_inputs), \
                    channel_multiple_from(lambda: measured_multiple(spec)):
                result = manager.run(graph)
            graph, report.passes = result.graph, result.records
    tuning = tuning or TuningOptions()
    label = f"tune ({tuning.trials} trials) and lower for {spec.name}" if tuning.trials else \
        f"lower and optimize for {spec.name}"
    with _stage(report, console, label):
        target = spec.tvm_target()
        mod, optimized, report.lowering_notes = lower(
            graph, target, before_rules=lambda fused: tune_and_apply(fused, target, tuning))
        report.tuning = tuning.report
        report.conv_layout = conv_layout(mod, target)
        report.kernels, report.kernel_launches = kernel_names(optimized), kernel_launches(optimized)
    if options.dump_dir is not None:
        _dump(Path(options.dump_dir), mod, optimized)
    with _stage(report, console, "build"):
        executable = build(optimized, spec)
    if options.dump_dir is not None:
        suffix = "cu" if spec.device == "cuda" else "s"
        (Path(options.dump_dir) / f"kernels.{suffix}").write_text(generated_source(executable, spec))
    metadata = _metadata(graph, spec, loaded.source, report.kernels, report.kernel_launches, str(passes))
    compiled = CompiledModel(executable, metadata, executable)
    compiled.graph, compiled.report, compiled.lowered = graph, report, optimized
    if output is not None:
        with _stage(report, console, "export"):
            compiled.export(output)
    runnable = compiled.runnable
    if spec.device == "cuda":
        compiled.library_file()  # exported (checked, its images read back) if `output` did not already
        report.device_binary = ", ".join(f"{kind} for {sm}" for kind, sm in compiled.device_images) + \
            " (in the library's fatbin)"
        if not runnable:
            report.check_note = f"not run: {compiled.why_not_runnable} (the library is built and holds its " \
                                f"device binary)"
    if compiled.emulated:
        runnable = can_run()
        report.check_note = "run under qemu-aarch64" if runnable else \
            f"not run: {QEMU} not found (install Debian's qemu-user to run aarch64 libraries here)"
    if check and runnable:
        with _stage(report, console, f"check against {loaded.reference_name}"):
            expected = loaded.reference(loaded.example_inputs)
            actual = compiled(*[t.numpy() for t in loaded.example_inputs])
            report.max_abs_diff, report.reference = max_abs_diff(actual, expected), loaded.reference_name
    if bench_runs and runnable:
        with _stage(report, console, "benchmark"):
            report.latency = compiled.benchmark([t.numpy() for t in loaded.example_inputs], repeat=bench_runs)
    return compiled


def _dump(folder: Path, imported, optimized) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "relax-imported.py").write_text(imported.script(show_meta=False))
    (folder / "relax-optimized.py").write_text(optimized.script(show_meta=False))
