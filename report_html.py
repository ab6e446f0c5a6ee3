"""The compile report: one self-contained HTML page (no scripts, no fetches) from a dump folder.

    header     model, source, target, pipeline
    timeline   per pass: changed?, time, nodes / parameters / bytes / MACs before -> after,
               numerics (max |diff| vs the stage before and vs the original, SQNR for lossy
               passes), with bars for the time each pass and each build stage took
    stages     the imported graph, then one section per pass: its notes, the per-layer SQNR of
               a quantization, the graph drawn after it with what it added / changed marked
               (report_graph), what it removed, and its IR text
    library    target, kernels, size, device binary, the check, and a bar chart of latency
               against the build without rewrite passes when `--bench` ran
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path

from slimgraph.report_data import ReportData, load_report_data
from slimgraph.report_graph import ReportError, diff, legend_html, parse_ir_text, render_svg

SQNR_NOTE = re.compile(r"^%(?P<node>\S+) \((?P<module>[^)]*)\): output SQNR (?P<db>[\d.]+|inf) dB")
STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #d0d5dd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #d0d5dd;padding:3px 8px;text-align:right}
th{background:#f2f4f7} td.l,th.l{text-align:left} .meta{color:#5b6472;font-size:14px}
.changed{color:#b54708;font-weight:bold} .same{color:#667085} section.pass{margin-bottom:28px}
.graph{overflow:auto;border:1px solid #e4e7ec;max-height:900px;padding:4px} .graph svg{max-width:none}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #5b6472;margin:0 4px 0 12px}
pre{background:#f8f9fb;border:1px solid #e4e7ec;padding:8px;font-size:12px;overflow:auto;max-height:500px}
.notes li{font-size:13px} .bar text{font-size:12px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _mib(count: int) -> str:
    return f"{count / 2**20:.2f}"


def bar_chart(rows: list[tuple[str, float]], unit: str, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG: one bar per (label, value)."""
    if not rows:
        return ""
    top = max(value for _, value in rows) or 1.0
    height = 22 * len(rows) + 8
    bars = []
    for i, (label, value) in enumerate(rows):
        length = max(1.0, (width - 260) * value / top)
        y = 4 + 22 * i
        bars.append(f'<text x="0" y="{y + 14}">{_e(label)}</text>'
                    f'<rect x="200" y="{y}" width="{length:.1f}" height="16" fill="#5b8def"><title>{_e(label)}: '
                    f'{value:.4g} {unit}</title></rect>'
                    f'<text x="{205 + length:.1f}" y="{y + 14}">{value:.4g} {unit}</text>')
    return f'<svg class="bar" width="{width}" height="{height}" role="img">{"".join(bars)}</svg>'


def _numerics(stats: dict) -> str:
    parts = []
    if "max_abs_diff" in stats:
        parts.append(f"{float(stats['max_abs_diff']):.3g} vs before")
    if "max_abs_diff_vs_original" in stats:
        parts.append(f"{float(stats['max_abs_diff_vs_original']):.3g} vs original")
    if "sqnr_db" in stats:
        parts.append(f"SQNR {stats['sqnr_db']} dB")
    return "; ".join(parts) or "-"


def _timeline(info: dict) -> str:
    rows = ["<tr><th>#</th><th class='l'>pass</th><th>changed</th><th>time (ms)</th><th>nodes</th>"
            "<th>parameters</th><th>MiB</th><th>M MACs</th><th class='l'>max |diff|</th></tr>"]
    for p in info["passes"]:
        b, a = p["before"], p["after"]
        seconds = f"{p['seconds'] * 1e3:.1f}" if p.get("seconds") is not None else "-"
        changed = "<span class='changed'>yes</span>" if p["modified"] else "<span class='same'>no</span>"
        rows.append(f"<tr><td>{_e(p['label'][:3])}</td><td class='l'><a href='#pass-{_e(p['label'])}'>"
                    f"{_e(p['name'])}</a></td><td>{changed}</td><td>{seconds}</td>"
                    f"<td>{b['nodes']} &rarr; {a['nodes']}</td><td>{b['parameters']:,} &rarr; {a['parameters']:,}</td>"
                    f"<td>{_mib(b['parameter_bytes'])} &rarr; {_mib(a['parameter_bytes'])}</td>"
                    f"<td>{b['macs'] / 1e6:,.1f} &rarr; {a['macs'] / 1e6:,.1f}</td>"
                    f"<td class='l'>{_e(_numerics(p['stats']))}</td></tr>")
    times = [(p["name"], p["seconds"] * 1e3) for p in info["passes"] if p.get("seconds") is not None]
    build = (info.get("build") or {}).get("stage_seconds") or {}
    times += [(stage, seconds * 1e3) for stage, seconds in build.items() if not stage.startswith("passes")]
    chart = f"<h3>time per step</h3>{bar_chart(times, 'ms')}" if times else ""
    return f"<h2 id='timeline'>Pipeline</h2><table>{''.join(rows)}</table>{chart}"


def _sqnr_chart(notes: list[str]) -> str:
    rows = [(f"{m['module'] or m['node']}", float(m["db"])) for n in notes if (m := SQNR_NOTE.match(n))
            and m["db"] != "inf"]
    if not rows:
        return ""
    return f"<h4>per-layer quantization error (output SQNR vs float, dB; lower is worse)</h4>" \
           f"{bar_chart(sorted(rows, key=lambda r: r[1])[:40], 'dB')}"


def _stage_section(stage, previous, pass_info: dict | None, link: str | None = None) -> str:
    picture = parse_ir_text(stage.text)
    title = "imported graph" if pass_info is None else f"after {pass_info['name']}"
    parts = [f"<section class='pass' id='pass-{_e(stage.label)}'><h2>{_e(stage.label)}: {_e(title)}</h2>"]
    modified = pass_info is None or pass_info["modified"]
    if pass_info is not None:
        seconds = f", {pass_info['seconds'] * 1e3:.1f} ms" if pass_info.get("seconds") is not None else ""
        parts.append(f"<p class='meta'>{'changed the graph' if modified else 'no change'}{seconds}; numerics: "
                     f"{_e(_numerics(pass_info['stats']))}</p>")
        notes = pass_info.get("notes") or []
        if notes:
            items = "".join(f"<li>{_e(n)}</li>" for n in notes[:200])
            parts.append(f"<details{' open' if len(notes) <= 8 else ''}><summary>{len(notes)} note(s)</summary>"
                         f"<ul class='notes'>{items}</ul></details>")
            parts.append(_sqnr_chart(notes))
    if modified:
        before = parse_ir_text(previous.text) if previous is not None else None
        status, removed = diff(before, picture)
        counts = {k: sum(1 for v in status.values() if v == k) for k in ("added", "changed")}
        parts.append(f"<p class='meta'>{len(picture.nodes)} nodes drawn; {counts['added']} added, "
                     f"{counts['changed']} changed, {len(removed)} removed. {legend_html()}</p>")
        ghosts = [before.nodes[name] for name in removed] if before is not None else []
        parts.append(f"<div class='graph'>{render_svg(picture, status, f'{stage.label} {title}', ghosts)}</div>")
        if removed:
            parts.append(f"<p class='meta'>removed: {_e(', '.join('%' + r for r in removed[:60]))}"
                         f"{' ...' if len(removed) > 60 else ''}</p>")
    file_link = f" <a href='{_e(link)}'>{_e(stage.label)}.ir</a>" if link else ""
    parts.append(f"<p class='meta'>IR of this stage:{file_link}</p><details><summary>IR text ({stage.label}.ir)"
                 f"</summary><pre>{_e(stage.text)}</pre></details>")
    return "".join(parts) + "</section>"


def _library(info: dict) -> str:
    build = info.get("build")
    if not build:
        return ""
    target = info.get("target") or {}
    rows = [("target", f"{target.get('name')} ({target.get('config', {}).get('kind')})"),
            ("kernels", f"{len(build['kernels'])} distinct, {build['kernel_launches']} calls per inference"),
            ("library", f"{build['library']} ({build['library_bytes'] / 1024:,.0f} KiB)")]
    if build.get("device_binary"):
        rows.append(("device binary", build["device_binary"]))
    if build.get("conv_layout"):
        rows.append(("conv layout", build["conv_layout"]))
    if build.get("max_abs_diff") is not None:
        rows.append((f"max |diff| vs {build['reference']}", f"{build['max_abs_diff']:.3g}"))
    elif build.get("check_note"):
        rows.append(("check", build["check_note"]))
    table = "".join(f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_e(v)}</td></tr>" for k, v in rows)
    bars = []
    if info.get("baseline_latency"):
        bars.append(("no rewrite passes", info["baseline_latency"]["median_ms"]))
    if info.get("latency"):
        pipeline = info["pipeline"] or "none"
        bars.append((f"pipeline {pipeline if len(pipeline) <= 24 else pipeline[:22] + '..'}",
                     info["latency"]["median_ms"]))
    emulated = " under qemu-aarch64: the emulator's time, not the device's" if (info.get("latency") or {}).get(
        "emulated") else ""
    chart = f"<h3>latency (median, ms{emulated})</h3>{bar_chart(bars, 'ms')}" if bars else ""
    notes = "".join(f"<li>{_e(n)}</li>" for n in build.get("lowering_notes", []))
    notes = f"<details><summary>lowering notes ({len(build.get('lowering_notes', []))})</summary><ul class='notes'>" \
            f"{notes}</ul></details>" if notes else ""
    return f"<h2 id='library'>Library</h2><table>{table}</table>{chart}{notes}"


def render_report(data: ReportData, links_from: Path | None = None) -> str:
    """The page; `links_from` (the report's folder) adds links to the stages' .ir files in the dump."""
    info = data.info
    by_label = {p["label"]: p for p in info["passes"]}
    sections, previous = [], None
    for stage in data.stages:
        link = None
        if links_from is not None:
            link = Path(os.path.relpath(data.folder / f"{stage.label}.ir", links_from)).as_posix()
        sections.append(_stage_section(stage, previous, by_label.get(stage.label), link))
        previous = stage
    target = (info.get("target") or {}).get("name", "-")
    header = (f"<h1>slimgraph compile report: {_e(info['model'])}</h1>"
              f"<p class='meta'>source {_e(info.get('source', '-'))}"
              f" &middot; target {_e(target)} &middot; pipeline <code>{_e(info.get('pipeline') or 'none')}</code>"
              f" &middot; <a href='#timeline'>pipeline</a> &middot; <a href='#library'>library</a></p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>slimgraph report: "
            f"{_e(info['model'])}</title><style>{STYLE}</style></head><body>{header}{_timeline(info)}"
            f"{''.join(sections)}{_library(info)}</body></html>\n")


def check_report_path(output: str | Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"report '{output}' must be an .html file")
    if not output.parent.is_dir():
        raise ReportError(f"cannot write report '{output}': folder '{output.parent}' does not exist")
    return output


def write_report(dump_dir: str | Path, output: str | Path, link_stages: bool = True) -> Path:
    """Render DUMP_DIR into one HTML file at `output`, written atomically; `link_stages` links each
    stage to its .ir file (not for a dump folder that is deleted afterwards)."""
    import tempfile

    data = load_report_data(dump_dir)
    output = check_report_path(output)
    page = render_report(data, output.parent.resolve() if link_stages else None)
    descriptor, staged = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(page)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o666 & ~umask)
    os.replace(staged, output)
    return output
