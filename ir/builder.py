"""`GraphBuilder`: build an `ir.Graph` node by node with shapes computed as you go.

Frontends and tests use it; each `call` runs the op on meta tensors at once, so a bad op is
reported with the source (module path or ONNX node name) that produced it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from .errors import ModelImportError
from .graph import Graph, Provenance, PROVENANCE, sanitize_name
from .shapes import op_name, to_meta


class GraphBuilder:
    def __init__(self, name: str = "model"):
        self.fx_graph = fx.Graph()
        self.params: dict[str, torch.Tensor] = {}
        self.name = name
        self._param_nodes: dict[str, fx.Node] = {}

    def input(self, name: str, shape, dtype: torch.dtype) -> fx.Node:
        # fx turns placeholder targets into Python argument names: ONNX's "input.1" becomes input_1.
        node = self.fx_graph.create_node("placeholder", sanitize_name(name), name=sanitize_name(name))
        node.meta["val"] = torch.empty(tuple(shape), dtype=dtype, device="meta")
        return node

    def param(self, name: str, tensor: torch.Tensor) -> fx.Node:
        """A parameter under its stable name; asking twice for one name gives the same node."""
        if name in self._param_nodes:
            return self._param_nodes[name]
        self.params[name] = tensor
        node = self.fx_graph.create_node("get_attr", name, name=sanitize_name(name))
        node.meta["val"] = to_meta(tensor)
        self._param_nodes[name] = node
        return node

    def constant_value(self, value: Any) -> torch.Tensor | None:
        """The tensor behind a parameter node, or None for computed values."""
        if isinstance(value, fx.Node) and value.op == "get_attr":
            return self.params[value.target]
        return None

    def call(self, op, *args, source: str = "", **kwargs) -> fx.Node:
        base = op._schema.name.split("::")[1] if isinstance(op, torch._ops.OpOverload) else op.__name__
        node = self.fx_graph.create_node("call_function", op, tuple(args), kwargs, name=base)
        meta_args = fx.node.map_arg(node.args, lambda n: n.meta["val"])
        meta_kwargs = fx.node.map_arg(node.kwargs, lambda n: n.meta["val"])
        try:
            node.meta["val"] = to_meta(op(*meta_args, **meta_kwargs))
        except Exception as exc:  # noqa: BLE001 - re-raised naming the source
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f"'{source}'" if source else f"%{node.name}"
            raise ModelImportError(f"node {where}: {op_name(node)} rejects its inputs: {message}") from exc
        node.meta[PROVENANCE] = Provenance(source)
        return node

    def output(self, *values: fx.Node) -> None:
        self.fx_graph.output(tuple(values))

    def build(self) -> Graph:
        return Graph(self.fx_graph, self.params, self.name)
