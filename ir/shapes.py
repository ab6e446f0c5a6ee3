"""Shape and dtype propagation: run the graph on meta tensors and store `meta["val"]`."""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from .errors import VerifyError


def to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta") \
            if value.is_contiguous() else torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(to_meta(v) for v in value)
    return value


def infer_values(graph, *, strict_inputs: bool = True) -> dict[fx.Node, Any]:
    """Meta value of every node, computed from input specs and parameter shapes."""
    values: dict[fx.Node, Any] = {}
    for node in graph.fx_graph.nodes:
        if node.op == "placeholder":
            values[node] = to_meta(node.meta["val"])
        elif node.op == "get_attr":
            if node.target not in graph.params:
                raise VerifyError(f"node %{node.name}: parameter '{node.target}' is missing from the graph's parameters")
            values[node] = to_meta(graph.params[node.target])
        elif node.op == "call_function":
            args = fx.node.map_arg(node.args, values.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
            try:
                values[node] = to_meta(node.target(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - re-raised with the node's name
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise VerifyError(f"node %{node.name} ({op_name(node)}): shape propagation failed: {first_line}") from exc
        elif node.op == "output":
            continue
        else:
            raise VerifyError(f"node %{node.name}: unsupported node kind '{node.op}'")
    return values


def propagate_shapes(graph) -> None:
    for node, value in infer_values(graph).items():
        node.meta["val"] = value


def op_name(node: fx.Node) -> str:
    """The printed name of a node's op: `aten.conv2d.default`, `getitem`, `slimgraph.quantize.default`."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))
