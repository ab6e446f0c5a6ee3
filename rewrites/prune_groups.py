"""Channel dependency groups on the IR, for structured pruning (rewrites/prune.py).

Every channel a layer creates (an output channel of a conv / linear / embedding) is an element;
handlers (rewrites/prune_handlers.py, one per op, in `CHANNEL_HANDLERS`) propagate, for every
value, which element each index of its channel axis carries, and join elements that must go
together:

    residual  a + b:                 element a[c] == element b[c]          (one class)
    concat on channels:              the output carries [a's elements, b's elements]
    split on channels:               each piece carries its slice
    flatten [N, C, H, W] -> [N, CHW]: feature f carries element f // (H W)   (a linear after it
                                                                             loses H W columns)
    depthwise conv, batch norm, activations, pooling: channel c carries the same element

A class (union-find root) is what the pruner removes or keeps as one. An element is *blocked*
(never removed) when it reaches the model output, a protected layer creates it, or an op without
a handler reads it; the reason is kept for the plan. `ChannelAnalysis.groups()` gathers the
classes into groups: classes whose elements come from the same set of layers (a residual stream
through ResNet's stage is one group).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch.fx as fx

from slimgraph.ir import Graph


@dataclass
class ChannelMap:
    """The element each index of a value's channel axis carries."""

    axis: int
    elements: list[int]


@dataclass
class Space:
    """The channels one layer creates: its node, and the elements 0..size-1 it made."""

    node: fx.Node
    first: int
    size: int


@dataclass
class ChannelGroup:
    """Classes whose elements come from the same layers; `classes[i]` is a list of elements."""

    spaces: list[Space]
    classes: list[list[int]]
    blocked: dict[int, str] = field(default_factory=dict)  # class index -> why it stays


class ChannelAnalysis:
    """Union-find over channel elements, with the maps handlers computed for every node."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.parent: list[int] = []
        self.owner: list[Space] = []
        self.spaces: list[Space] = []
        self.maps: dict[fx.Node, object] = {}  # ChannelMap, a list of them (split), or None
        self.blocked: dict[int, str] = {}
        self.stops: list[str] = []  # handlers missing: where and why groups stop

    # ----- elements --------------------------------------------------------------------
    def new_space(self, node: fx.Node, size: int) -> list[int]:
        space = Space(node, len(self.parent), size)
        self.spaces.append(space)
        for _ in range(size):
            self.parent.append(len(self.parent))
            self.owner.append(space)
        return list(range(space.first, space.first + size))

    def find(self, element: int) -> int:
        while self.parent[element] != element:
            self.parent[element] = self.parent[self.parent[element]]
            element = self.parent[element]
        return element

    def unify(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def block(self, elements, reason: str) -> None:
        for element in elements:
            self.blocked.setdefault(element, reason)

    def map_of(self, value) -> ChannelMap | None:
        found = self.maps.get(value) if isinstance(value, fx.Node) else None
        return found if isinstance(found, ChannelMap) else None

    # ----- groups ----------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        classes: dict[int, list[int]] = defaultdict(list)
        for element in range(len(self.parent)):
            classes[self.find(element)].append(element)
        by_spaces: dict[tuple[int, ...], list[list[int]]] = defaultdict(list)
        for members in classes.values():
            key = tuple(sorted({id(self.owner[e]) for e in members}))
            by_spaces[key].append(members)
        space_by_id = {id(s): s for s in self.spaces}
        result = []
        for key, members in by_spaces.items():
            members.sort(key=min)
            spaces = sorted((space_by_id[i] for i in key), key=lambda s: s.first)
            group = ChannelGroup(spaces, members)
            for index, elements in enumerate(members):
                reason = next((self.blocked[e] for e in elements if e in self.blocked), None)
                if reason is not None:
                    group.blocked[index] = reason
            result.append(group)
        return sorted(result, key=lambda g: g.spaces[0].first)


def analyze(graph: Graph, protected: set[str] = frozenset()) -> ChannelAnalysis:
    """Run every node's handler in order; `protected` node names keep the channels they create."""
    from .prune_handlers import CHANNEL_HANDLERS

    analysis = ChannelAnalysis(graph)
    for node in graph.fx_graph.nodes:
        if node.op == "output":
            for value in _flatten(node.args[0]):
                mapped = analysis.map_of(value)
                if mapped is not None:
                    analysis.block(mapped.elements, "reaches the model output")
            continue
        if node.op != "call_function":
            analysis.maps[node] = None
            continue
        handler = CHANNEL_HANDLERS.get(node.target)
        if handler is None:
            tracked = [v for v in _flatten((node.args, node.kwargs)) if analysis.map_of(v) is not None]
            if tracked:
                reason = f"no pruning handler for {node.target} (node %{node.name})"
                analysis.stops.append(reason)
                for value in tracked:
                    analysis.block(analysis.map_of(value).elements, reason)
            analysis.maps[node] = None
            continue
        analysis.maps[node] = handler.propagate(node, analysis)
        if node.name in protected:
            for space in (s for s in analysis.spaces if s.node is node):
                analysis.block(range(space.first, space.first + space.size), f"layer %{node.name} is protected")
    return analysis


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flatten(item)]
    if isinstance(value, dict):
        return [x for item in value.values() for x in _flatten(item)]
    return [value]
