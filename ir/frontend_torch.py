"""PyTorch frontend: `torch.export` an `nn.Module` and turn the program into an `ir.Graph`.

Parameters, buffers and lifted constants become `param("state_dict.name")` nodes; each op keeps
the module path it came from (from `nn_module_stack`) as its provenance.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.fx as fx

from .errors import ModelImportError
from .graph import Graph, Provenance, PROVENANCE, sanitize_name
from .ops import canonicalize, unsupported_ops


def module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def from_torch(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], name: str | None = None) -> Graph:
    """Import `module` (put in eval mode) at the op level torch.export produces by default."""
    module = module.eval()
    name = name or type(module).__name__.lower()
    try:
        program = torch.export.export(module, tuple(example_inputs))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"torch.export failed for model '{name}': {first}") from exc
    return from_exported_program(program, name)


def from_exported_program(program: torch.export.ExportedProgram, name: str) -> Graph:
    signature = program.graph_signature
    state_names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
                   **signature.inputs_to_lifted_tensor_constants}
    tensors = {**program.state_dict, **program.constants}
    user_outputs = set(signature.user_outputs)

    new_graph = fx.Graph()
    remap: dict[fx.Node, fx.Node] = {}
    params: dict[str, torch.Tensor] = {}
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in state_names:
            state_name = state_names[node.name]
            params[state_name] = tensors[state_name].detach()
            new = new_graph.create_node("get_attr", state_name, name=sanitize_name(state_name))
        elif node.op == "output":
            outputs = [remap[v] for v in node.args[0] if isinstance(v, fx.Node) and v.name in user_outputs]
            new_graph.output(tuple(outputs))
            continue
        else:
            new = new_graph.node_copy(node, lambda n: remap[n])
            new.meta = {"val": node.meta.get("val")}
            if node.op == "call_function":
                new.meta[PROVENANCE] = Provenance(module_path(node))
        remap[node] = new

    canonicalize(new_graph)
    missing = unsupported_ops(new_graph)
    if missing:
        listing = ", ".join(f"{op} (x{count})" for op, count in sorted(missing.items()))
        raise ModelImportError(f"model '{name}' uses ops outside slimgraph's canonical op set: {listing}")
    graph = Graph(new_graph, params, name)
    graph.remove_unused_params()
    graph.propagate_shapes()
    return graph
