"""`Graph`: slimgraph's one IR, a torch.fx graph in the canonical op set plus named parameters.

Node kinds:
- `placeholder`: a model input (`%x = input()`);
- `get_attr`: a parameter, buffer or constant, its target the stable state_dict / ONNX
  initializer name (`%conv1_weight = param("conv1.weight")`);
- `call_function`: an op of the canonical set (see `ir.ops`);
- `output`: the returned values.

Every node carries `meta["val"]` (a meta tensor, or a tuple of them, with the node's shape and
dtype) and `meta["provenance"]` (a `Provenance`: where it came from, which passes touched it).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

PROVENANCE = "provenance"


@dataclass(frozen=True)
class Provenance:
    """Where a node came from (module path or ONNX node name) and the passes that made or changed it."""

    source: str = ""
    passes: tuple[str, ...] = ()

    def touched_by(self, pass_name: str) -> "Provenance":
        if self.passes and self.passes[-1] == pass_name:
            return self
        return Provenance(self.source, self.passes + (pass_name,))


def provenance_of(node: fx.Node) -> Provenance:
    return node.meta.get(PROVENANCE, Provenance())


class Graph:
    """An fx graph in the canonical op set with its parameters by stable name."""

    def __init__(self, fx_graph: fx.Graph, params: dict[str, torch.Tensor], name: str = "model"):
        self.fx_graph = fx_graph
        self.params = params
        self.name = name

    # ----- structure -------------------------------------------------------------------
    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.fx_graph.nodes)

    @property
    def inputs(self) -> list[fx.Node]:
        return [n for n in self.fx_graph.nodes if n.op == "placeholder"]

    @property
    def output_node(self) -> fx.Node:
        return next(n for n in reversed(self.fx_graph.nodes) if n.op == "output")

    @property
    def outputs(self) -> list[fx.Node]:
        return output_values(self.output_node.args[0])

    def input_specs(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(n.target, tuple(n.meta["val"].shape), n.meta["val"].dtype) for n in self.inputs]

    def output_specs(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(n.name, tuple(n.meta["val"].shape), n.meta["val"].dtype) for n in self.outputs]

    def node(self, name: str) -> fx.Node:
        for n in self.fx_graph.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph '{self.name}' has no node '%{name}'")

    # ----- execution -------------------------------------------------------------------
    def module(self) -> fx.GraphModule:
        """A runnable GraphModule (on a copy of the graph) with the parameters as flat buffers.

        Stable names may nest ("fc.weight" and "fc.weight.t"), so buffers get flat names."""
        fx_graph = fx.Graph()
        fx_graph.output(fx_graph.graph_copy(self.fx_graph, {}))
        root, flat_names = torch.nn.Module(), {}
        for node in fx_graph.nodes:
            if node.op == "get_attr":
                if node.target not in flat_names:
                    flat_names[node.target] = f"p{len(flat_names)}_{sanitize_name(node.target)}"
                    root.register_buffer(flat_names[node.target], self.params[node.target])
                node.target = flat_names[node.target]
        return fx.GraphModule(root, fx_graph, class_name=_class_name(self.name))

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Reference semantics: run the graph in PyTorch; always returns a tuple."""
        with torch.no_grad():
            result = self.module()(*inputs)
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs matching the input specs (integers in [0, 10) for integer inputs)."""
        gen = torch.Generator().manual_seed(seed)
        tensors = []
        for _, shape, dtype in self.input_specs():
            if dtype.is_floating_point:
                tensors.append(torch.randn(shape, generator=gen).to(dtype))
            elif dtype == torch.bool:
                tensors.append(torch.randint(0, 2, shape, generator=gen).bool())
            else:
                tensors.append(torch.randint(0, 10, shape, generator=gen).to(dtype))
        return tuple(tensors)

    # ----- copying and maintenance -----------------------------------------------------
    def copy(self) -> "Graph":
        """A deep copy: new nodes, the same parameter tensors (passes replace, never mutate, them)."""
        new_graph = fx.Graph()
        value_remap: dict[fx.Node, fx.Node] = {}
        output = new_graph.graph_copy(self.fx_graph, value_remap)
        new_graph.output(output)
        for old, new in value_remap.items():
            new.meta = copy.copy(old.meta)
        new_graph.output_node().meta = copy.copy(self.output_node.meta)
        return Graph(new_graph, dict(self.params), self.name)

    def propagate_shapes(self) -> None:
        """Recompute `meta["val"]` of every node by running the graph on meta tensors."""
        from .shapes import propagate_shapes

        propagate_shapes(self)

    def rename(self, node: fx.Node, name: str) -> None:
        """Give `node` the free name `name` exactly (fx's own renaming would add a suffix: its
        namespace never frees the names of erased nodes)."""
        node.name = name
        self.fx_graph._graph_namespace._rename_object(node, name)

    def remove_unused_params(self) -> None:
        """Drop get_attr nodes nobody uses and the parameters no node refers to."""
        for n in list(self.fx_graph.nodes):
            if n.op == "get_attr" and not n.users:
                self.fx_graph.erase_node(n)
        used = {n.target for n in self.fx_graph.nodes if n.op == "get_attr"}
        self.params = {k: v for k, v in self.params.items() if k in used}

    def __repr__(self) -> str:
        return f"<slimgraph.ir.Graph '{self.name}': {len(self.fx_graph.nodes)} nodes, {len(self.params)} params>"

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name) or "model"
    return cleaned if not cleaned[0].isdigit() else f"m_{cleaned}"


def output_values(value: Any) -> list[fx.Node]:
    """Flatten an output node's argument into its nodes."""
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def sanitize_name(name: str) -> str:
    """A valid fx node name from any string (ONNX tensor names, state_dict names)."""
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name).strip("_") or "v"
    return cleaned if not cleaned[0].isdigit() else f"v{cleaned}"
