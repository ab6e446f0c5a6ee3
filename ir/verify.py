"""The verifier: known ops, arity and argument types, topological order, no dangling uses, and
shapes/dtypes that agree with re-propagation. Every error names the node."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .errors import VerifyError
from .graph import Graph
from .ops import is_canonical
from .shapes import infer_values, op_name
from .text import format_type


def verify(graph: Graph) -> None:
    """Raise VerifyError naming the first broken node; return None when the graph is sound."""
    nodes = list(graph.fx_graph.nodes)
    seen: set[fx.Node] = set()
    outputs = [n for n in nodes if n.op == "output"]
    if len(outputs) != 1 or nodes[-1] is not outputs[0]:
        raise VerifyError(f"graph '{graph.name}': expected exactly one output node, at the end")
    for node in nodes:
        for used in node.all_input_nodes:
            if used.graph is not graph.fx_graph:
                raise VerifyError(f"node %{node.name}: uses %{used.name}, which belongs to another graph")
            if used not in seen:
                raise VerifyError(f"node %{node.name}: uses %{used.name} before it is defined (not in topological order)")
        if node.op == "call_function":
            _check_call(node)
        elif node.op == "get_attr" and node.target not in graph.params:
            raise VerifyError(f"node %{node.name}: parameter '{node.target}' is missing")
        elif node.op == "placeholder" and not isinstance(node.meta.get("val"), torch.Tensor):
            raise VerifyError(f"node %{node.name}: input has no shape/dtype (meta['val'])")
        seen.add(node)
    recomputed = infer_values(graph)
    for node, value in recomputed.items():
        stored = node.meta.get("val")
        if format_type(stored) != format_type(value):
            raise VerifyError(f"node %{node.name} ({_kind(node)}): recorded type {format_type(stored)} "
                              f"but its inputs give {format_type(value)}")


def _kind(node: fx.Node) -> str:
    return op_name(node) if node.op == "call_function" else node.op


def _check_call(node: fx.Node) -> None:
    if not is_canonical(node.target):
        raise VerifyError(f"node %{node.name}: op {op_name(node)} is not in the canonical op set")
    if node.target is operator.getitem:
        if len(node.args) != 2 or not isinstance(node.args[1], int):
            raise VerifyError(f"node %{node.name}: getitem takes (value, int index)")
        return
    schema = node.target._schema
    positional = [a for a in schema.arguments if not a.kwarg_only]
    if len(node.args) > len(positional):
        raise VerifyError(f"node %{node.name}: {op_name(node)} takes at most {len(positional)} positional "
                          f"arguments, got {len(node.args)}")
    given = {a.name: v for a, v in zip(positional, node.args)}
    known = {a.name for a in schema.arguments}
    for key, value in node.kwargs.items():
        if key not in known:
            raise VerifyError(f"node %{node.name}: {op_name(node)} has no argument '{key}'")
        given[key] = value
    for argument in schema.arguments:
        if argument.name not in given:
            if not argument.has_default_value():
                raise VerifyError(f"node %{node.name}: {op_name(node)} is missing argument '{argument.name}'")
            continue
        if not _type_ok(argument.type, given[argument.name]):
            raise VerifyError(f"node %{node.name}: argument '{argument.name}' of {op_name(node)} should be "
                              f"{argument.type}, got {type(given[argument.name]).__name__}")


def _type_ok(schema_type, value) -> bool:
    kind = schema_type.kind()
    if kind == "OptionalType":
        return value is None or _type_ok(schema_type.getElementType(), value)
    if kind == "TensorType":  # torch.export passes Python scalars to binary ops (div.Tensor(x, 8.0))
        return isinstance(value, (fx.Node, int, float))
    if kind == "ListType":
        element = schema_type.getElementType()
        return isinstance(value, (list, tuple)) and all(_type_ok(element, v) for v in value)
    if kind == "IntType" or kind == "SymIntType":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FloatType":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BoolType":
        return isinstance(value, bool)
    if kind in ("NumberType", "ScalarTypeType"):
        return isinstance(value, (int, float, bool, torch.dtype))
    return True  # strings, devices, layouts, memory formats: accepted as given
