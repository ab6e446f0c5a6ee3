"""`slimgraph tune` and the tuning options of `compile`: MetaSchedule search into a database on disk."""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def add_tuning_options(parser: argparse.ArgumentParser, trials_flag: str, default_trials: int) -> None:
    group = parser.add_argument_group("tuning (MetaSchedule; see docs/tuning.md)")
    group.add_argument(trials_flag, dest="trials", type=int, default=default_trials, metavar="TRIALS",
                       help=f"MetaSchedule candidates to measure, over all kernels (default {default_trials})")
    group.add_argument("--db", help="tuning database directory (default: $SLIMGRAPH_TUNING_DB or "
                                    "~/.cache/slimgraph/tuning)")
    group.add_argument("--no-db", action="store_true", help="ignore the tuning database: rule schedules only")
    group.add_argument("--rpc", metavar="HOST:PORT", help="measure candidates on the devices of this TVM RPC tracker "
                                                          "instead of this machine (a device farm)")
    group.add_argument("--device-key", metavar="KEY", help="with --rpc: the key the devices' rpc_server registered")
    group.add_argument("--kernels", metavar="NAMES", help="tune only these kernels (comma-separated, as "
                                                          "`slimgraph bench` names them)")


@contextmanager
def tuning_options(args, quiet: bool):
    """TuningOptions from the flags, with a progress display (one line per kernel) while searching."""
    from slimgraph.codegen.tuning import TuningError, TuningOptions

    if args.trials < (1 if args.command == "tune" else 0):
        flag = "--trials" if args.command == "tune" else "--tune"
        raise TuningError(f"{flag} must be {'at least 1' if args.command == 'tune' else '0 or more'}, got {args.trials}")
    device = None
    if args.rpc or args.device_key:
        from slimgraph.codegen.rpc import free_servers, parse_rpc

        if args.trials <= 0:
            raise TuningError(f"--rpc {args.rpc or ''} measures tuning candidates: give --tune TRIALS too")
        device = parse_rpc(args.rpc or "", args.device_key)
        free_servers(device)  # unreachable tracker or unknown key: one line now, not after the import
    if args.kernels and args.trials <= 0:
        raise TuningError(f"--kernels {args.kernels} picks kernels to tune: give --tune TRIALS too")
    kernels = tuple(name.strip() for name in (args.kernels or "").split(",") if name.strip())
    options = TuningOptions(trials=args.trials, database=Path(args.db) if args.db else None,
                            use_database=not args.no_db, rpc=device, kernels=kernels)
    if options.trials <= 0 or quiet:
        yield options
        return
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[best]}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr) as progress:
        overall = progress.add_task("all kernels", total=options.trials, best="")
        rows: dict[str, int] = {}
        done: dict[str, int] = {}

        def report(kernel: str, trials: int, best: float | None) -> None:
            if kernel not in rows:
                rows[kernel] = progress.add_task(kernel, total=None, best="")
            best_text = f"best {best * 1e6:.1f} us" if best is not None else "no valid candidate yet"
            progress.update(rows[kernel], completed=trials, best=best_text)
            done[kernel] = trials
            progress.update(overall, completed=sum(done.values()))

        options.progress = report
        yield options


def print_tuning_summary(report) -> None:
    if report is None or not (report.rule_seconds or report.applied):
        return
    if report.rule_seconds:
        table = Table(title="tuning: rule schedule vs best in the database")
        for column in ("kernel", "rules (us)", "best (us)", "speed-up", "re-timed back to back: rules / best (us)"):
            table.add_column(column, justify="left" if column == "kernel" else "right")
        for kernel, rule in sorted(report.rule_seconds.items(), key=lambda item: -item[1]):
            best = report.tuned.get(kernel, rule)
            again = report.rechecked.get(kernel)
            table.add_row(kernel, f"{rule * 1e6:.1f}", f"{best * 1e6:.1f}", f"{rule / best:.2f}x" if best else "-",
                          f"{again[0] * 1e6:.1f} / {again[1] * 1e6:.1f}" if again else "-")
        stdout.print(table)
        if report.rechecked:
            stdout.print("rules and best measured at different times can differ by the machine's load; the re-timed "
                         "pair ran back to back (docs/tuning.md)")
    shipped = f" ({len(report.shipped)} from the records shipped with slimgraph)" if report.shipped else ""
    stdout.print(f"{len(report.applied)} kernel(s) scheduled from the tuning database{shipped}")


def tune(args) -> int:
    import slimgraph
    from slimgraph.models import DEFAULT_MODEL

    with tuning_options(args, args.quiet) as options:
        compiled = slimgraph.compile(args.model or DEFAULT_MODEL, target=args.target, pipeline=args.pipeline,
                                     plugins=args.plugin, check=True, bench_runs=args.runs, verbose=not args.quiet,
                                     tuning=options)
    report = compiled.report
    print_tuning_summary(report.tuning)
    stdout.print(f"database: {options.directory}")
    if report.max_abs_diff is not None:
        stdout.print(f"max |diff| vs {report.reference}: {report.max_abs_diff:.3g}")
    if report.latency:
        stdout.print(f"latency with the tuned kernels: {report.latency['median_ms']:.3f} ms "
                     f"(median of {report.latency['runs']} runs)")
    return 0


def add_tune_parser(commands, add_pass_options) -> None:
    parser = commands.add_parser("tune", help="search kernel schedules with MetaSchedule into the tuning database")
    parser.add_argument("model", nargs="?", help="built-in name, model.onnx, dump.ir or file.py:factory")
    parser.add_argument("--target", default="x86", help="preset (x86) or TVM target JSON / .json file")
    add_pass_options(parser, default_pipeline="default")
    add_tuning_options(parser, "--trials", default_trials=200)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of the tuned model (0: skip)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=tune)
