"""`slimgraph report DUMP_DIR` and `compile --report`: the compile report as one HTML page."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

stderr = Console(stderr=True)


def add_report_options(parser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--report", metavar="FILE.html", help="write the compile report: the passes' timeline, the "
                                                             "graph after each pass, numerics, the library")
    group.add_argument("--bench", action="store_true", help="with --report: also build without rewrite passes and "
                                                            "chart both latencies (--runs timed runs each)")


@contextmanager
def report_dump_dir(args):
    """The dump folder the report is drawn from: --dump-dir, else a temporary one."""
    if not args.report:
        yield args.dump_dir
        return
    from slimgraph.report_html import check_report_path

    check_report_path(args.report)  # before the work
    if args.dump_dir:
        yield args.dump_dir
        return
    with tempfile.TemporaryDirectory(prefix="slimgraph-report-") as folder:
        yield folder


def write_compile_report(args, model, compiled, dump_dir: str) -> None:
    import slimgraph
    from slimgraph.report_data import write_report_json
    from slimgraph.report_html import write_report

    baseline = None
    if args.bench and args.runs and compiled.runnable:
        plain = slimgraph.compile(model, target=args.target, pipeline="none", check=False, bench_runs=args.runs,
                                  plugins=args.plugin, verbose=not args.quiet)
        baseline = plain.report.latency
    write_report_json(Path(dump_dir), compiled, baseline)
    path = write_report(dump_dir, args.report, link_stages=bool(args.dump_dir))
    stderr.print(f"wrote the report {path} ({path.stat().st_size / 1024:,.0f} KiB)", markup=False)


def report(args) -> int:
    from slimgraph.report_html import write_report

    output = args.output or str(Path(args.dump_dir) / "report.html")
    path = write_report(args.dump_dir, output)
    print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)")
    return 0


def add_report_parser(commands) -> None:
    parser = commands.add_parser("report", help="render a dump folder (compile --dump-dir) as one HTML page")
    parser.add_argument("dump_dir", help="a folder written by compile --dump-dir or dump --dump-dir")
    parser.add_argument("-o", "--output", help="the HTML file (default: DUMP_DIR/report.html)")
    parser.set_defaults(handler=report)
