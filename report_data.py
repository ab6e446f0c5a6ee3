"""What the compile report shows, kept beside the IR dump: `report.json` in the dump folder.

`compile` with a dump folder writes it (the passes' records, the build, the benchmark);
`slimgraph report DUMP_DIR` reads it back with the per-pass IR files. A folder written by
`slimgraph dump --dump-dir` has no report.json: the stages' statistics are then computed from
the IR files themselves, and the timeline has no times.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from slimgraph.report_graph import ReportError

REPORT_FILE = "report.json"


def _stats_json(stats) -> dict:
    return {"nodes": stats.nodes, "parameters": stats.parameters, "parameter_bytes": stats.parameter_bytes,
            "macs": stats.macs}


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def write_report_json(folder: Path, compiled, baseline_latency: dict | None = None) -> Path:
    """Record a finished compile for the report (called by the CLI after `compile`)."""
    report, metadata = compiled.report, compiled.metadata
    library = compiled.library_file()
    data = {
        "model": metadata["model"], "source": metadata["source"], "pipeline": metadata["pipeline"],
        "target": metadata["target"],
        "passes": [{"label": r.label, "name": r.pass_.name, "modified": r.modified, "seconds": r.seconds,
                    "before": _stats_json(r.before), "after": _stats_json(r.after),
                    "stats": {k: _plain(v) for k, v in r.stats.items()}, "notes": list(r.notes)}
                   for r in report.passes],
        "build": {"stage_seconds": report.stage_seconds, "kernels": report.kernels,
                  "kernel_launches": report.kernel_launches, "lowering_notes": report.lowering_notes,
                  "max_abs_diff": report.max_abs_diff, "reference": report.reference,
                  "check_note": report.check_note, "device_binary": report.device_binary,
                  "conv_layout": report.conv_layout,
                  "library": str(library), "library_bytes": library.stat().st_size},
        "latency": report.latency, "baseline_latency": baseline_latency,
    }
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


@dataclass
class Stage:
    label: str  # 000-input, 001-fold-bn, ...
    text: str  # the IR text


@dataclass
class ReportData:
    folder: Path
    stages: list[Stage]
    info: dict = field(default_factory=dict)  # report.json, or computed from the IR files


def load_report_data(folder: str | Path) -> ReportData:
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"dump folder '{folder}' does not exist (write one with compile --dump-dir DIR)")
    files = sorted(folder.glob("[0-9][0-9][0-9]-*.ir"))
    if not files or files[0].stem != "000-input":
        raise ReportError(f"'{folder}' holds no IR dump (000-input.ir, 001-PASS.ir, ...): "
                          f"write one with 'slimgraph compile MODEL --dump-dir {folder}'")
    stages = [Stage(f.stem, f.read_text()) for f in files]
    info_file = folder / REPORT_FILE
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text())
        except json.JSONDecodeError as exc:
            raise ReportError(f"'{info_file}' is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    else:
        info = _info_from_ir(folder, files)
    return ReportData(folder, stages, info)


def _info_from_ir(folder: Path, files: list[Path]) -> dict:
    from slimgraph import ir
    from slimgraph.ir.stats import graph_stats

    stats = [_stats_json(graph_stats(ir.load(f))) for f in files]
    pipeline = (folder / "pipeline.txt").read_text().strip() if (folder / "pipeline.txt").is_file() else ""
    passes = [{"label": f.stem, "name": f.stem.split("-", 1)[1], "seconds": None,
               "modified": files[i].read_text().split("\n", 1)[-1] != f.read_text().split("\n", 1)[-1],
               "before": stats[i], "after": stats[i + 1], "stats": {}, "notes": []}
              for i, f in enumerate(files[1:])]
    return {"model": files[0].read_text().split('graph "', 1)[-1].split('"', 1)[0], "pipeline": pipeline,
            "passes": passes, "target": None, "build": None, "latency": None, "baseline_latency": None}
