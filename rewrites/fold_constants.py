"""fold-constants: evaluate once what depends only on constants, and remove dead nodes.

A node all of whose tensor inputs are parameters computes the same value on every run:
    f(c1, ..., ck)  ->  c'   where c' = f(c1, ..., ck) evaluated now, in PyTorch.
It becomes a new parameter named after its first input and the op (`fc.weight.t`), so shape
arithmetic, transposed or cast weights and position-embedding lookups leave the graph. A
dequantize of an 8-bit weight is kept (it is the quantized form, which `realize` makes integer). A result
larger than `max_bytes` is not materialised (noted with its size). Nodes whose values nobody
uses are removed, and so are parameters no node reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx

from slimgraph.ir.graph import sanitize_name
from slimgraph.ir.shapes import op_name, to_meta

from .base import Pass, PassResult, register_pass


# dequantize of an 8-bit weight: folding it would give back the float weight the quantization
# removed (4x the bytes) and hide the layer from `realize`
KEPT_QUANTIZED = ("slimgraph::dequantize_per_channel", "slimgraph::dequantize_per_tensor")


def _is_constant_call(node: fx.Node) -> bool:
    inputs = node.all_input_nodes
    if node.op != "call_function" or not inputs or not all(n.op == "get_attr" for n in inputs):
        return False
    return getattr(node.target, "name", lambda: "")() not in KEPT_QUANTIZED


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(v) for v in value) if isinstance(value, (tuple, list)) else 0


@register_pass
@dataclass
class FoldConstants(Pass):
    name: ClassVar[str] = "fold-constants"
    summary: ClassVar[str] = "evaluate nodes whose inputs are all constants; remove dead nodes"
    max_bytes: int = 64 * 2**20

    def run(self, graph):
        fx_graph, folded, notes = graph.fx_graph, 0, []
        for node in list(fx_graph.nodes):
            if not _is_constant_call(node) or not node.users:
                continue
            values = fx.node.map_arg(node.args, lambda n: graph.params[n.target])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: graph.params[n.target])
            size = _nbytes(node.meta.get("val"))
            if size > self.max_bytes:
                notes.append(f"%{node.name} ({op_name(node)}) not folded: its {size / 2**20:.1f} MiB value "
                             f"exceeds max_bytes={self.max_bytes}")
                continue
            with torch.no_grad():
                result = node.target(*values, **kwargs)
            stem = f"{node.all_input_nodes[0].target}.{op_name(node).split('.')[1] if '.' in op_name(node) else op_name(node)}"
            if isinstance(result, torch.Tensor):
                node.replace_all_uses_with(self._constant(graph, node, stem, result))
                folded += 1
            else:  # multi-output op: each getitem reader becomes its own constant
                for user in list(node.users):
                    index = user.args[1]
                    user.replace_all_uses_with(self._constant(graph, user, f"{stem}.{index}", result[index]))
                folded += 1
        calls_before = sum(1 for n in fx_graph.nodes if n.op == "call_function")
        fx_graph.eliminate_dead_code()
        removed = calls_before - sum(1 for n in fx_graph.nodes if n.op == "call_function")
        params_before = len(graph.params)
        graph.remove_unused_params()
        modified = folded > 0 or removed > 0 or params_before != len(graph.params)
        return PassResult(graph, modified, {"folded": folded, "removed": removed}, notes)

    @staticmethod
    def _constant(graph, node: fx.Node, stem: str, value: torch.Tensor) -> fx.Node:
        name, index = stem, 1
        while name in graph.params:
            name, index = f"{stem}_{index}", index + 1
        graph.params[name] = value.detach().contiguous()
        with graph.fx_graph.inserting_before(node):
            constant = graph.fx_graph.create_node("get_attr", name, name=sanitize_name(name))
        constant.meta["val"] = to_meta(value)
        return constant
