"""The IR text form: one node a line, stable and diffable, parsed back by `parse`.

    graph "digit_cnn" {
      %x = input() : f32[1,1,8,8]
      %conv1_weight = param("conv1.weight") : f32[16,1,3,3]
      %conv2d = aten.conv2d.default(%x, %conv1_weight, %conv1_bias, [1, 1], [1, 1]) : f32[1,16,8,8] loc("conv1")
      %getitem = getitem(%split, 0) : f32[1,8,8,8]
      return (%linear_1,)
    }

`region(N)` marks the fused region (one kernel after lowering) a node belongs to, when the
`fuse` pass has grouped them. `loc("source", "pass", ...)` is the provenance: the module path or ONNX node name, then the
passes that made or changed the node. Parameters live beside the text (`save` / `load`).
"""
from __future__ import annotations

import json
import math
import operator

import torch
import torch.fx as fx

from .dtypes import short_dtype
from .graph import Graph, Provenance, PROVENANCE, provenance_of
from .shapes import op_name

REGION = "region"  # meta key of a node's fused-region id (set by the fuse pass)

SPECIAL_ENUMS = {str(v): v for v in (
    torch.contiguous_format, torch.channels_last, torch.preserve_format, torch.strided,
)}


def format_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{short_dtype(value.dtype)}[{','.join(str(d) for d in value.shape)}]"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(format_type(v) for v in value) + ")"
    if value is None:
        return "none"
    return type(value).__name__


def format_value(value) -> str:
    if isinstance(value, fx.Node):
        return f"%{value.name}"
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.device):
        return f"device({json.dumps(str(value))})"
    if isinstance(value, (torch.memory_format, torch.layout)):
        return str(value)
    raise TypeError(f"cannot print argument of type {type(value).__name__}: {value!r}")


def format_node(node: fx.Node) -> str:
    if node.op == "output":
        return f"return {format_value(node.args[0])}"
    if node.op == "placeholder":  # the target is the user-facing name; fx may rename the node
        call = "input()" if node.target == node.name else f"input({json.dumps(node.target)})"
    elif node.op == "get_attr":
        call = f"param({json.dumps(node.target)})"
    else:
        parts = [format_value(a) for a in node.args]
        parts += [f"{k}={format_value(v)}" for k, v in node.kwargs.items()]
        call = f"{op_name(node)}({', '.join(parts)})"
    line = f"%{node.name} = {call} : {format_type(node.meta.get('val'))}"
    if node.meta.get(REGION) is not None:
        line += f" region({node.meta[REGION]})"
    prov = provenance_of(node)
    if node.op == "call_function" and (prov.source or prov.passes):
        line += " loc(" + ", ".join(json.dumps(s) for s in (prov.source, *prov.passes)) + ")"
    return line


def print_graph(graph: Graph) -> str:
    lines = [f"graph {json.dumps(graph.name)} {{"]
    lines += [f"  {format_node(n)}" for n in graph.fx_graph.nodes]
    lines.append("}")
    return "\n".join(lines) + "\n"


def resolve_op(name: str):
    """`aten.conv2d.default` -> torch.ops.aten.conv2d.default; `getitem` -> operator.getitem."""
    if name == "getitem":
        return operator.getitem
    parts = name.split(".")
    if len(parts) != 3:
        raise ValueError(f"unknown op '{name}': expected namespace.op.overload or getitem")
    namespace, op, overload = parts
    if namespace == "slimgraph":
        import slimgraph.ir.slimgraph_ops  # noqa: F401  (registers the slimgraph namespace)
    try:
        return getattr(getattr(getattr(torch.ops, namespace), op), overload)
    except (AttributeError, RuntimeError) as exc:
        raise ValueError(f"unknown op '{name}'") from exc


def set_provenance(node: fx.Node, source: str, passes: tuple[str, ...] = ()) -> None:
    node.meta[PROVENANCE] = Provenance(source, passes)

