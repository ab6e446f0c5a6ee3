"""Benchmark: structured pruning, MACs and compiled latency against the unpruned model, in one run.

    python -m slimgraph.tests.bench.bench_prune [--models resnet18,mobilenet_v2] [--ratio 0.5] [--runs 30]
                                                [--markdown FILE]

Both builds use the default pipeline (fold-bn, fold-constants, fuse) and rule schedules (no
tuning database); the pruned one runs `prune{ratio=R}` first (l2 importance, round=auto: the
channel multiple measured on this host). Median latency in ms, batch 1, all cores; the two
builds of a model are timed alternately, `--runs` each, in rounds of 5. A benchmark, not a test.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import slimgraph  # noqa: E402
from slimgraph.codegen.tuning import TuningOptions  # noqa: E402
from slimgraph.ir.stats import graph_stats  # noqa: E402
from slimgraph.tests.bench.bench_models import bench_parser, machine_description, show_table  # noqa: E402

DEFAULT = "fold-bn,fold-constants,fuse"


def bench_model(name: str, ratio: float, runs: int) -> dict:
    builds = {label: slimgraph.compile(name, pipeline=pipeline, tuning=TuningOptions(use_database=False))
              for label, pipeline in
              (("unpruned", DEFAULT), ("pruned", f"prune{{ratio={ratio}}},{DEFAULT}"))}
    arrays = [t.numpy() for t in slimgraph.model_source.load_model(name).example_inputs]
    times = {label: [] for label in builds}
    for _ in range(max(1, runs // 5)):
        for label, compiled in builds.items():
            times[label].append(compiled.benchmark(arrays, repeat=5)["median_ms"])
    result = {label: float(np.median(values)) for label, values in times.items()}
    for label, compiled in builds.items():
        result[f"{label} MACs"] = graph_stats(compiled.graph).macs
        result[f"{label} params"] = graph_stats(compiled.graph).parameters
    result["notes"] = builds["pruned"].report.passes[0].notes
    return result


def main() -> None:
    parser = bench_parser(__doc__, "resnet18,mobilenet_v2", 30)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    headers = ["model", "M MACs unpruned", "M MACs pruned", "MACs ratio", "params unpruned", "params pruned",
               "ms unpruned", "ms pruned", "speed-up"]
    table = Table(title=f"prune ratio {args.ratio} (ms, median), {machine_description()}")
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    rows = []
    for name in args.models.split(","):
        r = bench_model(name, args.ratio, args.runs)
        row = [name, f"{r['unpruned MACs'] / 1e6:,.0f}", f"{r['pruned MACs'] / 1e6:,.0f}",
               f"{r['unpruned MACs'] / r['pruned MACs']:.2f}x", f"{r['unpruned params']:,}", f"{r['pruned params']:,}",
               f"{r['unpruned']:.2f}", f"{r['pruned']:.2f}", f"{r['unpruned'] / r['pruned']:.2f}x"]
        rows.append(row)
        table.add_row(*row)
        round_note = next((n for n in r["notes"] if n.startswith("round=auto")), "")
        Console().print(f"{name}: {round_note}")
    show_table(table, headers, rows, args.markdown)


if __name__ == "__main__":
    main()
