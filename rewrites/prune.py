"""prune: structured channel pruning that shrinks the parameters for real.

1. Groups (rewrites/prune_groups.py): channels that must go together are one class (a residual
   stream's channel c in every layer that writes it); classes from the same layers are a group.
2. Importance of a class = the sum over its elements (rewrites/prune_importance.py):
       l1:  sum |W[c, ...]|     l2:  sqrt(sum W[c, ...]^2)     bn-scale: |gamma[c]| of the norm after it
       taylor: sum over calibration batches of (sum_{i in W[c, ...]} w_i dL/dw_i)^2
3. Allocation: in every group, the floor(ratio * n) least important unblocked classes go, with
   n - removed rounded up to a multiple of `round` (`auto`: the multiple measured fastest on the
   target, codegen/channel_widths.py); `ratios=[name:r,...]` sets r for the groups of the named
   layers (0 keeps them whole); a class is blocked when it reaches the model
   output, a protected layer creates it (`protect=[...]`, default: the first layer that reads a
   model input, i.e. the first conv), or an op without a handler reads it.
4. Shrinking: each op's handler slices its parameters (rewrites/prune_handlers.py) and fixes
   shape arguments; the graph's shapes are recomputed.

The plan (group, removed channel indices per layer, importance range) is in the notes, which
`slimgraph dump --stats` and the compile log print. Pruning changes outputs on purpose (a lossy
pass); a model whose removed channels were zero gives the same outputs pruned.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
import torch.fx as fx

from slimgraph.ir.graph import provenance_of

from .base import Pass, PassError, PassResult, register_pass
from .prune_groups import ChannelAnalysis, ChannelGroup, analyze
from .prune_handlers import CHANNEL_HANDLERS, LayerHandler
from .prune_importance import IMPORTANCE, importance_of

aten = torch.ops.aten
_MULTIPLE: ContextVar[Callable[[], tuple[int, str]] | None] = ContextVar("slimgraph_channel_multiple", default=None)


@contextmanager
def channel_multiple_from(provider: Callable[[], tuple[int, str]]):
    """Inside: `round=auto` asks `provider()` for (multiple, note); compile and dump measure the
    target there (codegen/channel_widths.py), since rewrites do not reach the kernels."""
    token = _MULTIPLE.set(provider)
    try:
        yield
    finally:
        _MULTIPLE.reset(token)


class PruneEdit:
    """What the handlers call while shrinking: kept indices of a value, parameter slices, args."""

    def __init__(self, graph, analysis: ChannelAnalysis, removed: set[int]):
        self.graph, self.analysis, self.removed = graph, analysis, removed
        self.slices: dict[tuple[str, int], list[int]] = {}  # (parameter, dim) -> kept indices
        self.changed_args: list[fx.Node] = []  # nodes whose non-parameter arguments changed

    def kept(self, element: int) -> bool:
        return self.analysis.find(element) not in self.removed

    def keep(self, value) -> list[int] | None:
        mapped = self.analysis.map_of(value)
        if mapped is None:
            return None
        keep = [i for i, e in enumerate(mapped.elements) if self.kept(e)]
        return None if len(keep) == len(mapped.elements) else keep

    def axis(self, value) -> int:
        return self.analysis.map_of(value).axis

    def slice_param(self, value, dim: int | None, keep: list[int] | None) -> None:
        if keep is None or dim is None or not isinstance(value, fx.Node):
            return
        if value.op != "get_attr":
            raise PassError(f"prune: %{value.name} feeds a pruned layer but is computed, not a parameter")
        tensor = self.graph.params[value.target]
        if (value.target, dim) in self.slices:  # a parameter two nodes read is sliced once
            return
        self.slices[value.target, dim] = keep
        self.graph.params[value.target] = tensor.index_select(dim, torch.tensor(keep, dtype=torch.long)).contiguous()

    def set_arg(self, node: fx.Node, index: int, value) -> None:
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
        self.changed_args.append(node)

    def replace_target(self, node: fx.Node, target, args) -> None:
        node.target, node.args = target, tuple(args)
        self.changed_args.append(node)


@register_pass
@dataclass
class Prune(Pass):
    name: ClassVar[str] = "prune"
    summary: ClassVar[str] = "structured channel pruning: dependency groups, importance, real shrinking"
    lossy: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False  # each run removes `ratio` of what is left
    ratio: float = 0.5
    importance: str = "l2"
    round: str = "auto"  # or a channel multiple: 1, 8, 16, ...
    protect: list[str] = field(default_factory=list)  # node or module names; the first layer is always kept
    ratios: list[str] = field(default_factory=list)  # per layer: "module.name:0.3" (its group's ratio)

    def _check(self, graph) -> tuple[set[str], dict[str, float]]:
        if not 0 < self.ratio < 1:
            raise PassError(f"prune: ratio must be in (0, 1), got {self.ratio}")
        if self.importance not in IMPORTANCE:
            raise PassError(f"prune: unknown importance '{self.importance}' (known: {', '.join(IMPORTANCE)})")
        if self.round != "auto" and not (str(self.round).isdigit() and int(self.round) >= 1):
            raise PassError(f"prune: round must be 'auto' or a positive channel multiple, got '{self.round}'")
        layers = [n for n in graph.fx_graph.nodes if n.op == "call_function"
                  and isinstance(CHANNEL_HANDLERS.get(n.target), LayerHandler)]
        protected = set()
        for name in self.protect:
            hits = _matching(layers, name)
            if not hits:
                raise PassError(f"prune: protect '{name}' matches no conv, linear or embedding node or module")
            protected.update(hits)
        layer_ratios: dict[str, float] = {}
        for entry in self.ratios:
            name, _, value = entry.rpartition(":")
            try:
                ratio = float(value)
            except ValueError:
                ratio = -1.0
            if not name or not 0 <= ratio < 1:
                raise PassError(f"prune: ratios entry '{entry}' must be name:ratio with a ratio in [0, 1)")
            hits = _matching(layers, name)
            if not hits:
                raise PassError(f"prune: ratios entry '{entry}' matches no conv, linear or embedding node or module")
            layer_ratios.update(dict.fromkeys(hits, ratio))
        first = next((n for n in layers if any(a.op == "placeholder" for a in n.args if isinstance(a, fx.Node))), None)
        if first is not None:
            protected.add(first.name)
        return protected, layer_ratios

    def plan(self, graph) -> tuple[ChannelAnalysis, set[int], list[str]]:
        """The analysis, the classes (union-find roots) to remove, and the notes describing it."""
        protected, layer_ratios = self._check(graph)
        analysis = analyze(graph, protected)
        element_importance, note = importance_of(graph, analysis, self.importance)
        multiple, round_note = self._multiple()
        removed, notes = set(), list(dict.fromkeys(analysis.stops)) + [n for n in (note, round_note) if n]
        for group in analysis.groups():
            chosen = self._allocate(group, element_importance, multiple, layer_ratios)
            removed.update(analysis.find(group.classes[i][0]) for i in chosen)
            notes.append(self._describe(group, chosen, element_importance))
        return analysis, removed, notes

    def run(self, graph):
        analysis, removed, notes = self.plan(graph)
        if not removed:
            return PassResult(graph, False, {"channels_removed": 0}, notes)
        shrink(graph, analysis, removed)
        return PassResult(graph, True, {"channel_classes_removed": len(removed),
                                        "channels_removed": count_removed(analysis, removed)},
                          notes)

    def _multiple(self) -> tuple[int, str]:
        if self.round != "auto":
            return int(self.round), ""
        provider = _MULTIPLE.get()
        if provider is None:
            return 1, "round=auto: no target measured in this run (compile and dump measure one); channels not rounded"
        return provider()

    def _allocate(self, group: ChannelGroup, importance: dict[int, float], multiple: int,
                  layer_ratios: dict[str, float]) -> list[int]:
        free = [i for i in range(len(group.classes)) if i not in group.blocked]
        if not free or group.blocked:
            return []  # a group is pruned whole or not at all: its blocked classes say why
        total = len(group.classes)
        named = [layer_ratios[s.node.name] for s in group.spaces if s.node.name in layer_ratios]
        ratio = max(named) if named else self.ratio  # a group with several named layers: the largest
        keep = max(1, total - math.floor(ratio * total))
        keep = min(total, math.ceil(keep / multiple) * multiple)
        ranked = sorted(free, key=lambda i: sum(importance[e] for e in group.classes[i]))
        return sorted(ranked[:total - keep])

    def _describe(self, group: ChannelGroup, chosen: list[int], importance) -> str:
        layers = ", ".join(provenance_of(s.node).source or s.node.name for s in group.spaces)
        if not chosen:
            reason = next(iter(group.blocked.values()), "nothing to remove at this ratio")
            return f"group [{layers}]: {len(group.classes)} channels kept: {reason}"
        per_layer = len(group.classes[0]) // len(group.spaces)
        unit = f"blocks of {per_layer} channels per layer" if per_layer > 1 else "channels"
        scores = [sum(importance[e] for e in group.classes[i]) for i in range(len(group.classes))]
        kept = [s for i, s in enumerate(scores) if i not in set(chosen)]
        removed = [scores[i] for i in chosen]
        return (f"group [{layers}]: {len(group.classes)} -> {len(group.classes) - len(chosen)} {unit}, removed "
                f"{_short(chosen)} (importance {min(removed):.3g}..{max(removed):.3g}, kept {min(kept):.3g}..{max(kept):.3g})")


def _matching(layers, name: str) -> list[str]:
    return [n.name for n in layers if n.name == name or provenance_of(n).source == name
            or provenance_of(n).source.startswith(name + ".")]


def shrink(graph, analysis: ChannelAnalysis, removed: set[int]) -> PruneEdit:
    """Apply the plan to `graph` in place (every handler's shrink); returns what was sliced."""
    edit = PruneEdit(graph, analysis, removed)
    for node in list(graph.fx_graph.nodes):
        if node.op == "call_function" and node.target in CHANNEL_HANDLERS:
            CHANNEL_HANDLERS[node.target].shrink(node, edit)
    graph.remove_unused_params()
    graph.propagate_shapes()
    return edit


def removed_channels(analysis: ChannelAnalysis, removed: set[int]) -> dict[str, list[int]]:
    """Per layer node name: the output channel indices the plan removes."""
    result = {}
    for space in analysis.spaces:
        indices = [i for i in range(space.size) if analysis.find(space.first + i) in removed]
        if indices:
            result[space.node.name] = indices
    return result


def count_removed(analysis: ChannelAnalysis, removed: set[int]) -> int:
    """Channel elements (over all layers) in the removed classes."""
    return sum(1 for element in range(len(analysis.parent)) if analysis.find(element) in removed)


def _short(indices: list[int]) -> str:
    text = ",".join(str(i) for i in indices[:12])
    return f"[{text}{',...' if len(indices) > 12 else ''}]"
