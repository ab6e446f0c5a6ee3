"""`slimgraph dump`: a model's IR text and statistics after passes, or (--source) the generated code."""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimgraph.cli_options import add_pass_options, instrument_options

stdout = Console()
stderr = Console(stderr=True)


def _dump(args) -> int:
    from slimgraph import ir
    from slimgraph.ir.stats import graph_stats
    from slimgraph.model_source import load_model
    from slimgraph.rewrites import PassManager, load_plugin, parse_pipeline, trace_rules

    if args.source:
        return _dump_source(args)
    for plugin in args.plugin:
        load_plugin(plugin)
    pipeline = parse_pipeline(args.pipeline or "none")
    options = instrument_options(args).merged_with_env()
    if args.dump_dir:
        options.dump_dir = args.dump_dir
    loaded = load_model(args.model)
    graph, records = loaded.graph, []
    if len(pipeline) or options.dump_dir:
        from slimgraph.calibration_io import calibration_scope
        from slimgraph.codegen.channel_widths import measured_multiple
        from slimgraph.codegen.targets import resolve_target
        from slimgraph.rewrites.prune import channel_multiple_from

        with trace_rules(set(options.trace_rule)), \
                calibration_scope(args.calib, graph.input_specs(), loaded.example_inputs), \
                channel_multiple_from(lambda: measured_multiple(resolve_target(args.target))):
            result = PassManager(pipeline, options.build(inputs=loaded.example_inputs),
                                 repro_dir=options.dump_dir).run(graph)
            graph, records = result.graph, result.records
    if args.output:
        ir.save(graph, args.output)
        stderr.print(f"wrote {args.output} and its parameters {Path(args.output).with_suffix('.safetensors').name}")
    else:
        sys.stdout.write(ir.print_graph(graph))
    stats = graph_stats(graph)
    stdout.print(f"[bold]{graph.name}[/bold]: {stats.summary()}")
    table = Table()
    table.add_column("op")
    table.add_column("count", justify="right")
    for op, count in stats.ops.most_common():
        table.add_row(op, str(count))
    stdout.print(table)
    if args.stats:
        heavy = Table(title="MACs by node (top 15)")
        heavy.add_column("node")
        heavy.add_column("M MACs", justify="right")
        for node, macs in sorted(stats.macs_by_node.items(), key=lambda item: -item[1])[:15]:
            heavy.add_row(f"%{node}", f"{macs / 1e6:,.1f}")
        stdout.print(heavy)
        for record in records:  # e.g. quantize: per-layer SQNR, most sensitive first
            for note in record.notes:
                stdout.print(f"{record.pass_.name}: {escape(note)}")
    return 0


def _dump_source(args) -> int:
    """dump --source: compile (default pipeline unless --pipeline) and print the generated code."""
    import slimgraph
    from slimgraph.codegen.build import generated_source
    from slimgraph.codegen.targets import resolve_target

    spec = resolve_target(args.target)
    compiled = slimgraph.compile(args.model, target=spec, pipeline=args.pipeline or "default",
                                 plugins=args.plugin, check=False, calibration_data=args.calib,
                                 instruments=instrument_options(args))
    sys.stdout.write(generated_source(compiled.executable, spec, args.source) + "\n")
    notes = compiled.report.lowering_notes
    stderr.print(f"{compiled.metadata['model']} for {compiled.metadata['target']['name']}: "
                 f"{len(compiled.report.kernels)} kernels", markup=False)
    for note in notes:
        stderr.print(f"  {note}", markup=False)
    return 0


def add_dump_parser(commands) -> None:
    dump = commands.add_parser("dump", help="print a model's IR text and statistics")
    dump.add_argument("model", help="built-in name, model.onnx, dump.ir or file.py:factory")
    dump.add_argument("-o", "--output", help="save the IR (.ir + .safetensors) instead of printing it")
    dump.add_argument("--stats", action="store_true",
                      help="also list the heaviest nodes by MACs and the passes' notes (quantize: per-layer SQNR)")
    dump.add_argument("--dump-dir", help="write one IR file per pass here")
    dump.add_argument("--calib", help="calibration data for the quantize pass (.npz or a folder of them)")
    dump.add_argument("--source", nargs="?", const="auto", choices=["auto", "cuda", "asm", "ll"],
                      help="compile and print the generated code instead of the IR: CUDA C for a CUDA target, "
                           "else assembly (asm) or LLVM IR (ll); the pipeline defaults to 'default' here")
    dump.add_argument("--target", default="x86", help="target for --source and for prune's channel rounding: x86, "
                                                      "arm64, arm64-dotprod, cuda, cuda:sm_XX or TVM target JSON")
    add_pass_options(dump, default_pipeline=None)
    dump.set_defaults(handler=_dump)


def _export_onnx(args) -> int:
    """export-onnx: the graph after the first --stage passes of --pipeline (all of them by default)."""
    from slimgraph.calibration_io import calibration_scope
    from slimgraph.ir.errors import SlimgraphError
    from slimgraph.model_source import load_model
    from slimgraph.onnx_export import export_onnx
    from slimgraph.rewrites import PassManager, load_plugin, parse_pipeline
    from slimgraph.rewrites.pipeline import Pipeline

    for plugin in args.plugin:
        load_plugin(plugin)
    pipeline = parse_pipeline(args.pipeline)
    stage = len(pipeline) if args.stage is None else args.stage
    if not 0 <= stage <= len(pipeline):
        raise SlimgraphError(f"--stage {stage} is outside 0..{len(pipeline)} (pipeline '{pipeline}' has "
                             f"{len(pipeline)} passes; 0 is the imported graph)")
    loaded = load_model(args.model)
    graph = loaded.graph
    if stage:
        with calibration_scope(args.calib, graph.input_specs(), loaded.example_inputs):
            graph = PassManager(Pipeline(pipeline.passes[:stage])).run(graph).graph
    output = args.output or f"{graph.name}-stage{stage}.onnx"
    path = export_onnx(graph, output)
    done = ", ".join(p.name for p in pipeline.passes[:stage]) or "none"
    stdout.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB): '{graph.name}' after {done}", markup=False)
    return 0


def add_export_parser(commands) -> None:
    parser = commands.add_parser("export-onnx", help="write the IR after some passes as ONNX (Netron, Model Explorer)")
    parser.add_argument("model", help="built-in name, model.onnx, a stage's .ir (from --dump-dir) or file.py:factory")
    parser.add_argument("-o", "--output", help="the .onnx file (default: MODEL-stageN.onnx)")
    parser.add_argument("--pipeline", default="none", help="passes to run first (default: none)")
    parser.add_argument("--stage", type=int, help="run only the first STAGE passes of --pipeline (0: as imported)")
    parser.add_argument("--calib", help="calibration data for a quantize pass (.npz or a folder of them)")
    parser.add_argument("--plugin", action="append", default=[], help="a .py file that registers passes")
    parser.set_defaults(handler=_export_onnx)
