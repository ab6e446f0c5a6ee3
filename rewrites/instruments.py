"""Instruments of the pass manager: print IR, dump one file per pass, verify, check numerics,
time. Each is reachable from the CLI flags, the Python API (`InstrumentOptions`) and the
environment variable SLIMGRAPH_PASS_DEBUG, e.g.

    SLIMGRAPH_PASS_DEBUG="print-ir-after-change,verify-each,dump-dir=/tmp/d,trace-rule=fold-bn-conv"
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from slimgraph.ir import Graph, print_graph
from slimgraph.ir.errors import VerifyError
from slimgraph.ir.verify import verify

from .base import PassError
from .manager import Instrument, PassRecord
from .numerics import compare_outputs, first_divergence

ENV_VARIABLE = "SLIMGRAPH_PASS_DEBUG"


@dataclass
class InstrumentOptions:
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    print_ir_before: list[str] = field(default_factory=list)
    dump_dir: str | None = None
    verify_each: bool = False
    check_numerics: bool = False
    timing: bool = False
    trace_rule: list[str] = field(default_factory=list)

    def merged_with_env(self) -> "InstrumentOptions":
        """These options plus whatever SLIMGRAPH_PASS_DEBUG turns on."""
        text = os.environ.get(ENV_VARIABLE, "").strip()
        if not text:
            return self
        known = {f.name.replace("_", "-"): f for f in fields(self)}
        merged = InstrumentOptions(**{f.name: getattr(self, f.name) for f in fields(self)})
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            if key not in known:
                raise PassError(f"{ENV_VARIABLE}: unknown setting '{key}' (settings: {', '.join(known)})")
            name = known[key].name
            current = getattr(merged, name)
            if isinstance(current, list):
                current.append(value)
            elif isinstance(current, bool):
                setattr(merged, name, True)
            else:
                setattr(merged, name, value)
        return merged

    def build(self, stream=None, inputs=None) -> list[Instrument]:
        stream = stream or sys.stderr
        instruments: list[Instrument] = []
        if self.print_ir_after_all or self.print_ir_after_change or self.print_ir_before:
            instruments.append(PrintIR(self.print_ir_after_all, self.print_ir_after_change,
                                       set(self.print_ir_before), stream))
        if self.dump_dir:
            instruments.append(DumpIR(Path(self.dump_dir)))
        if self.verify_each:
            instruments.append(VerifyEach())
        if self.check_numerics:
            instruments.append(CheckNumerics(inputs))
        if self.timing:
            instruments.append(Timing(stream))
        return instruments


class PrintIR(Instrument):
    def __init__(self, after_all: bool, after_change: bool, before: set[str], stream):
        self.after_all, self.after_change, self.before, self.stream = after_all, after_change, before, stream

    def before_pass(self, index, pass_, graph):
        if pass_.name in self.before:
            self.stream.write(f"// ----- IR before {pass_.name} (#{index}) -----\n{print_graph(graph)}")

    def after_pass(self, record, before, after):
        if self.after_all:
            self.stream.write(f"// ----- IR after {record.pass_.name} (#{record.index}) -----\n{print_graph(after)}")
        elif self.after_change:
            if not record.modified:
                self.stream.write(f"// ----- {record.pass_.name} (#{record.index}): no change -----\n")
                return
            diff = difflib.unified_diff(print_graph(before).splitlines(), print_graph(after).splitlines(),
                                        f"before {record.pass_.name}", f"after {record.pass_.name}", n=1, lineterm="")
            self.stream.write(f"// ----- {record.pass_.name} (#{record.index}) changed the IR -----\n"
                              + "\n".join(diff) + "\n")


class DumpIR(Instrument):
    """`000-input.ir`, then `NNN-pass.ir` per pass; each file's parameters are the tensors new
    at that stage (`NNN-pass.safetensors`), listed with earlier files in a `# params:` line."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.written: dict[str, tuple[torch.Tensor, str]] = {}  # name -> (tensor, file holding it)

    def start(self, graph, pipeline):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "pipeline.txt").write_text(f"{pipeline}\n")
        self._write("000-input", graph)

    def after_pass(self, record, before, after):
        self._write(record.label, after)

    def _write(self, label: str, graph: Graph) -> None:
        from safetensors.torch import save_file

        fresh = {k: v for k, v in graph.params.items() if k not in self.written or self.written[k][0] is not v}
        files = sorted({self.written[k][1] for k in graph.params if k not in fresh})
        if fresh:
            save_file({k: v.detach().contiguous().clone() for k, v in fresh.items()},
                      str(self.folder / f"{label}.safetensors"))
            files.append(f"{label}.safetensors")
            self.written.update({k: (v, f"{label}.safetensors") for k, v in fresh.items()})
        header = f"# params: {' '.join(sorted(files))}\n" if files else ""
        (self.folder / f"{label}.ir").write_text(header + print_graph(graph))


class VerifyEach(Instrument):
    def after_pass(self, record, before, after):
        try:
            verify(after)
        except VerifyError as exc:
            raise PassError(f"pass '{record.pass_.name}' (#{record.index}) left a broken graph: {exc}") from exc


def signal_and_noise(expected, actual) -> tuple[float, float]:
    """(sum e^2, sum (e - a)^2) over the floating-point tensors of two output lists."""
    signal = noise = 0.0
    for e, a in zip(expected, actual):
        if e.is_floating_point():
            signal += float((e.double() ** 2).sum())
            noise += float(((e.double() - a.double()) ** 2).sum())
    return signal, noise


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): inf when there is no noise, -inf when there is no signal."""
    import math

    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def output_sqnr_db(expected, actual) -> float:
    """Signal-to-quantization-noise ratio of the float outputs, in dB (inf when equal)."""
    return sqnr_db(*signal_and_noise(expected, actual))


class CheckNumerics(Instrument):
    """Outputs after each pass against those before it (and the original), tolerance by dtype.
    A lossy pass (quantize) is not held to the tolerance: its SQNR goes into the record instead."""

    def __init__(self, inputs=None, seed: int = 0):
        self.inputs, self.seed = inputs, seed
        self.results: dict[str, dict[str, float]] = {}

    def start(self, graph, pipeline):
        self.inputs = tuple(self.inputs) if self.inputs is not None else graph.example_inputs(self.seed)
        self.original = graph.run(*self.inputs)
        self.previous = self.original

    def after_pass(self, record, before, after):
        outputs = after.run(*self.inputs)
        failure, worst = compare_outputs(self.previous, outputs)
        _, from_original = compare_outputs(self.original, outputs)
        self.results[record.label] = {"vs_previous": worst, "vs_original": from_original}
        record.stats["max_abs_diff"] = worst
        record.stats["max_abs_diff_vs_original"] = from_original
        if record.pass_.lossy:  # quantization error is the point: report its size, do not fail
            record.stats["sqnr_db"] = round(output_sqnr_db(self.previous, outputs), 1)
        elif failure:
            where = first_divergence(before, after, self.inputs)
            raise PassError(f"pass '{record.pass_.name}' (#{record.index}) changed the outputs: {failure}; {where}")
        self.previous = outputs


class Timing(Instrument):
    def __init__(self, stream):
        self.stream = stream

    def finish(self, graph, records):
        from rich.console import Console

        Console(file=self.stream, width=140).print(pass_table(records))


def pass_table(records: list[PassRecord]):
    from rich.table import Table

    table = Table(title="passes")
    for column in ("#", "pass", "changed", "time ms", "nodes", "parameters", "M MACs", "stats"):
        table.add_column(column, justify="right" if column not in ("pass", "stats") else "left")
    for r in records:
        stats = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.stats.items())
        table.add_row(str(r.index), r.pass_.name, "yes" if r.modified else "no", f"{r.seconds * 1e3:.1f}",
                      f"{r.before.nodes} -> {r.after.nodes}", f"{r.before.parameters:,} -> {r.after.parameters:,}",
                      f"{r.before.macs / 1e6:,.1f} -> {r.after.macs / 1e6:,.1f}", stats)
    return table

