"""The `slimgraph` command line: compile, dump, run, bench, tune, passes, models, demo.

Every failure is one line on stderr (`slimgraph: error: ...`) and a non-zero exit code;
`--traceback` shows the Python traceback as well.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimgraph.cli_bench import add_bench_parser
from slimgraph.cli_dump import add_dump_parser, add_export_parser
from slimgraph.cli_options import add_pass_options, instrument_options
from slimgraph.cli_report import add_report_options, add_report_parser, report_dump_dir, write_compile_report
from slimgraph.cli_demo import add_demo_parser
from slimgraph.cli_tune import add_tune_parser, add_tuning_options, print_tuning_summary, tuning_options
from slimgraph.ir.errors import SlimgraphError

stdout = Console()
MAX_NOTES = 12  # per pass, in compile's summary
stderr = Console(stderr=True)


def _compile(args) -> int:
    import slimgraph
    from slimgraph.codegen.artifact import artifact_paths
    from slimgraph.models import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    output = args.output
    if output is None:
        stem = Path(str(model)).stem.split(":")[-1]
        Path("out").mkdir(exist_ok=True)
        slug = args.target.replace(":", "-") if re.fullmatch(r"[\w:-]+", args.target) else "custom"
        output = Path("out") / f"{stem}-{slug}.so"
    with tuning_options(args, args.quiet) as tuning, report_dump_dir(args) as dump_dir:
        compiled = slimgraph.compile(model, target=args.target, pipeline=args.pipeline, output=output,
                                     dump_dir=dump_dir, instruments=instrument_options(args),
                                     plugins=args.plugin, check=not args.no_check, bench_runs=args.runs,
                                     verbose=not args.quiet, tuning=tuning, calibration_data=args.calib)
        if args.report:
            write_compile_report(args, model, compiled, dump_dir)
    library, meta = artifact_paths(output)
    report = compiled.report
    table = Table(title=f"slimgraph compile: {compiled.metadata['model']}", show_header=False)
    target = compiled.metadata["target"]
    config = target["config"]
    if config.get("kind") == "cuda":
        summary = f"cuda, arch={config.get('arch')}, host code for {(config.get('host') or {}).get('mcpu', 'this CPU')}"
    else:
        summary = f"{config.get('kind')}, mcpu={config.get('mcpu', '-')}, {config.get('num-cores', '?')} cores, " \
                  f"{len(config.get('mattr', []))} ISA features"
    table.add_row("target", f"{target['name']}: {summary} "
                            f"(full target in {Path(str(output)).with_suffix('.json').name})")
    table.add_row("library", f"{library} ({library.stat().st_size / 1024:.0f} KiB), metadata {meta.name}")
    if report.device_binary:
        table.add_row("device binary", report.device_binary)
    table.add_row("pipeline", compiled.metadata["pipeline"] or "none")
    unscheduled = sum(1 for note in report.lowering_notes if "no schedule rule" in note)
    from_database = len(report.tuning.applied) if report.tuning else 0
    table.add_row("kernels", f"{len(report.kernels)} distinct ({len(report.kernels) - unscheduled - from_database} "
                             f"scheduled by rules, {from_database} from the tuning database), "
                             f"{report.kernel_launches} calls per inference")
    if report.conv_layout:
        table.add_row("conv layout", report.conv_layout)
    table.add_row("compile time", f"{sum(report.stage_seconds.values()):.1f} s")
    if report.max_abs_diff is not None:
        how = f" ({report.check_note})" if report.check_note else ""
        table.add_row(f"max |diff| vs {report.reference}", f"{report.max_abs_diff:.3g}{how}")
    elif report.check_note:
        table.add_row("check", report.check_note)
    if report.latency:
        emulated = " (emulated: not the device's speed)" if report.latency.get("emulated") else ""
        table.add_row("latency (median)",
                      f"{report.latency['median_ms']:.3f} ms over {report.latency['runs']} runs{emulated}")
    stdout.print(table)
    for record in (r for r in report.passes if r.pass_.lossy):  # quantize: calibration, per-layer SQNR
        for note in record.notes[:MAX_NOTES]:
            stdout.print(f"  {record.pass_.name}: {escape(note)}")
        if len(record.notes) > MAX_NOTES:
            stdout.print(f"  {record.pass_.name}: ... {len(record.notes) - MAX_NOTES} more: slimgraph dump MODEL "
                         f"--pipeline '{compiled.metadata['pipeline']}' --stats")
    if args.trials:
        print_tuning_summary(report.tuning)
    return 0


def _read_npz(path: str, model) -> list[np.ndarray]:
    from slimgraph.runtime import InputError

    if not Path(path).is_file():
        raise InputError(f"inputs file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"inputs file '{path}' is not a readable .npz: {exc}") from exc
    names = [spec.name for spec in model.inputs]
    if all(n in arrays for n in names):
        return [arrays[n] for n in names]
    missing = ", ".join(n for n in names if n not in arrays)
    raise InputError(f"inputs file '{path}' lacks input(s) {missing} (it has: {', '.join(arrays) or 'nothing'})")


def _run(args) -> int:
    import slimgraph

    model = slimgraph.load(args.library)
    inputs = _read_npz(args.inputs, model) if args.inputs else model.random_inputs()
    outputs = model(*inputs)
    table = Table(title=f"{model.metadata['model']} on {model.metadata['target']['name']}")
    for column in ("output", "type", "min", "max", "mean"):
        table.add_column(column)
    for spec, value in zip(model.outputs, outputs):
        table.add_row(spec.name, str(spec), f"{value.min():.4g}", f"{value.max():.4g}", f"{value.mean():.4g}")
    stdout.print(table)
    latency = model.benchmark(inputs, repeat=args.runs)
    emulated = " under qemu-aarch64 (emulated: not the device's speed)" if latency.get("emulated") else ""
    stdout.print(f"latency: median {latency['median_ms']:.3f} ms, min {latency['min_ms']:.3f} ms "
                 f"over {latency['runs']} runs{emulated}")
    if args.save:
        np.savez(args.save, **{spec.name: value for spec, value in zip(model.outputs, outputs)})
    return 0


def _passes(args) -> int:
    import dataclasses
    import typing

    from slimgraph.rewrites import NAMED_PIPELINES, PASS_REGISTRY, load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    table = Table(title="passes (use in --pipeline, e.g. fold-bn,fuse{parallel=false})")
    table.add_column("pass", no_wrap=True)
    table.add_column("options (type = default)")
    table.add_column("what it does")
    for name, cls in sorted(PASS_REGISTRY.items()):
        hints = typing.get_type_hints(cls)
        options = ", ".join(f"{f.name}: {getattr(hints[f.name], '__name__', hints[f.name])} = "
                            f"{(f.default_factory() if f.default is dataclasses.MISSING else f.default)!r}"
                            for f in dataclasses.fields(cls) if f.init)
        table.add_row(name, options or "-", cls.summary)
    stdout.print(table)
    for name, text in NAMED_PIPELINES.items():
        stdout.print(f"pipeline [bold]{name}[/bold] = {text or '(no passes)'}")
    return 0


def _models(args) -> int:
    from slimgraph.models import DEFAULT_MODEL, REFERENCE_MODELS

    table = Table(title="built-in reference models")
    table.add_column("name")
    table.add_column("description")
    for name, model in sorted(REFERENCE_MODELS.items()):
        table.add_row(name + (" (default)" if name == DEFAULT_MODEL else ""), model.description)
    stdout.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimgraph", description="Compile deep-learning models with slimgraph.")
    parser.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    compile_ = commands.add_parser("compile", help="compile a model into a shared library + metadata JSON")
    compile_.add_argument("model", nargs="?", help="built-in name, model.onnx, dump.ir or file.py:factory "
                                                   "(default: the built-in default model)")
    compile_.add_argument("--target", default="x86", help="preset (x86) or TVM target JSON / .json file")
    add_pass_options(compile_, default_pipeline="default")
    compile_.add_argument("-o", "--output", help="library path (default: out/MODEL-TARGET.so)")
    compile_.add_argument("--dump-dir", help="write one IR file per pass and the Relax module before/after "
                                             "optimization here")
    compile_.add_argument("--runs", type=int, default=10, help="timed runs for the latency figure (0: skip)")
    compile_.add_argument("--calib", help="calibration data for the quantize pass: an .npz (one array per input, "
                                          "[N, *shape] for N samples) or a folder of them")
    compile_.add_argument("--no-check", action="store_true", help="skip the comparison against the reference")
    compile_.add_argument("--quiet", action="store_true", help="no progress output")
    add_tuning_options(compile_, "--tune", default_trials=0)
    add_report_options(compile_)
    compile_.set_defaults(handler=_compile)

    add_dump_parser(commands)
    add_report_parser(commands)
    add_export_parser(commands)

    run = commands.add_parser("run", help="run a compiled library on random or given inputs")
    run.add_argument("library", help="a .so written by slimgraph compile")
    run.add_argument("--inputs", help=".npz with one array per input name")
    run.add_argument("--runs", type=int, default=10, help="timed runs")
    run.add_argument("--save", help="write the outputs to this .npz")
    run.set_defaults(handler=_run)

    passes = commands.add_parser("passes", help="list the rewrite passes, their options and named pipelines")
    passes.add_argument("--plugin", action="append", default=[], help="a .py file that registers passes")
    passes.set_defaults(handler=_passes)

    add_bench_parser(commands, add_pass_options)
    add_demo_parser(commands)
    add_tune_parser(commands, add_pass_options)

    models = commands.add_parser("models", help="list the built-in reference models")
    models.set_defaults(handler=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SlimgraphError as exc:
        if args.traceback:
            raise
        stderr.print(f"slimgraph: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        stderr.print("slimgraph: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
