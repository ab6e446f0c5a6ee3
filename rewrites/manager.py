"""The pass manager: runs a pipeline, checks each pass's contract, and calls instruments.

For each pass: instruments see the graph before it; the pass runs on a copy; the manager checks
that `modified` is honest (IR text or parameters changed exactly when it says so); instruments
see the result (print, dump, verify, check numerics, time). A pass that throws becomes one
PassError naming it and the passes before it, with a reproducer on disk: the IR before the
pass and the one-pass pipeline that `slimgraph dump repro.ir --pipeline P` replays.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from slimgraph.ir import Graph, print_graph, save
from slimgraph.ir.stats import GraphStats, graph_stats

from .base import Pass, PassError, PassResult
from .pipeline import Pipeline, format_pass, parse_pipeline


@dataclass
class PassRecord:
    index: int
    pass_: Pass
    modified: bool
    seconds: float
    before: GraphStats
    after: GraphStats
    stats: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.index:03d}-{self.pass_.name}"


class Instrument:
    """Hooks around each pass; subclasses override what they need."""

    def start(self, graph: Graph, pipeline: Pipeline) -> None: ...
    def before_pass(self, index: int, pass_: Pass, graph: Graph) -> None: ...
    def after_pass(self, record: PassRecord, before: Graph, after: Graph) -> None: ...
    def finish(self, graph: Graph, records: list[PassRecord]) -> None: ...


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord]

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.records)


def _params_changed(before: Graph, after: Graph) -> bool:
    return before.params.keys() != after.params.keys() or any(
        after.params[k] is not v for k, v in before.params.items())


class PassManager:
    def __init__(self, pipeline: Pipeline | str, instruments: list[Instrument] | None = None,
                 repro_dir: str | Path | None = None):
        self.pipeline = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self.instruments = list(instruments or [])
        self.repro_dir = Path(repro_dir) if repro_dir else None

    def run(self, graph: Graph) -> PipelineResult:
        records: list[PassRecord] = []
        for instrument in self.instruments:
            instrument.start(graph, self.pipeline)
        for index, pass_ in enumerate(self.pipeline.passes, start=1):
            for instrument in self.instruments:
                instrument.before_pass(index, pass_, graph)
            before_text, before_stats = print_graph(graph), graph_stats(graph)
            started = time.perf_counter()
            try:
                result = pass_.run(graph.copy())
            except PassError:
                raise
            except Exception as exc:  # noqa: BLE001 - any pass bug becomes one named error
                raise self._failure(index, pass_, graph, exc) from exc
            seconds = time.perf_counter() - started
            self._check_contract(pass_, graph, result, before_text)
            record = PassRecord(index, pass_, result.modified, seconds, before_stats, graph_stats(result.graph),
                                dict(result.stats), list(result.notes))
            records.append(record)
            for instrument in self.instruments:
                instrument.after_pass(record, graph, result.graph)
            graph = result.graph
        for instrument in self.instruments:
            instrument.finish(graph, records)
        return PipelineResult(graph, records)

    def _check_contract(self, pass_: Pass, before: Graph, result: PassResult, before_text: str) -> None:
        if not isinstance(result, PassResult):
            raise PassError(f"pass '{pass_.name}' returned {type(result).__name__}, not a PassResult")
        changed = print_graph(result.graph) != before_text or _params_changed(before, result.graph)
        if changed != result.modified:
            said = "modified=True but changed nothing" if result.modified else "modified=False but changed the graph"
            raise PassError(f"pass '{pass_.name}' broke its contract: it reported {said}")

    def _failure(self, index: int, pass_: Pass, graph: Graph, exc: Exception) -> PassError:
        earlier = ",".join(format_pass(p) for p in self.pipeline.passes[: index - 1]) or "none"
        folder = Path(tempfile.mkdtemp(prefix=f"slimgraph-repro-{pass_.name}-", dir=self._repro_parent()))
        save(graph, folder / "repro.ir")
        one_pass = format_pass(pass_)
        (folder / "pipeline.txt").write_text(one_pass + "\n")
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return PassError(f"pass '{pass_.name}' (#{index}, after: {earlier}) failed: {type(exc).__name__}: "
                         f"{message}; reproducer: slimgraph dump {folder / 'repro.ir'} --pipeline '{one_pass}'")

    def _repro_parent(self) -> str | None:
        if self.repro_dir is None:
            return None
        self.repro_dir.mkdir(parents=True, exist_ok=True)
        return str(self.repro_dir)
