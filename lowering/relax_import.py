"""ir.Graph -> TVM Relax IRModule, through torch.export and TVM's own torch importer.

The graph is exported again (`Graph.module()` runs in PyTorch, so it exports), then
`tvm.relax.frontend.torch.from_exported_program` converts it with decomposition on (TVM 0.27
mis-reads `aten.batch_norm.default` without it; see docs/architecture.md). Negative indices are
normalised first: TVM lowers `select(x, 0, -1)` into an unchecked out-of-bounds read.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from slimgraph.ir import Graph
from slimgraph.ir.errors import SlimgraphError

# In the blocked layout a depthwise conv and the 1x1 conv that alone reads it are one kernel
# (lowering.depthwise_projection); False: a kernel each (for A/B measurements).
DEPTHWISE_PROJECTION = True

aten = torch.ops.aten


class LoweringError(SlimgraphError):
    """The graph cannot be turned into Relax (an op TVM has no converter for, ...)."""


def normalize_negative_indices(graph: Graph) -> Graph:
    """select(x, d, -i) -> select(x, d, n-i); slice bounds and dims made non-negative. Exact."""
    graph = graph.copy()
    for node in graph.fx_graph.nodes:
        if node.op != "call_function" or node.target not in (aten.select.int, aten.slice.Tensor):
            continue
        shape = node.args[0].meta["val"].shape
        args = list(node.args)
        rank = len(shape)
        if len(args) > 1 and isinstance(args[1], int) and args[1] < 0:
            args[1] += rank
        size = int(shape[args[1]]) if len(args) > 1 else int(shape[0])
        index_positions = (2,) if node.target is aten.select.int else (2, 3)
        for position in index_positions:
            if position < len(args) and isinstance(args[position], int) and args[position] < 0:
                args[position] = max(args[position] + size, 0)
        node.args = tuple(args)
    return graph


def lower(graph: Graph, target, before_rules: Callable | None = None):
    """(imported Relax module, optimized module, notes). When the `fuse` pass marked regions, each
    region becomes one kernel (lowering.regions); otherwise TVM's FuseOps decides the fusion.
    Then `before_rules(fused module)` may schedule kernels first (the compiler passes the tuning
    database, codegen.tuning), and the schedule rules of the target (lowering.cpu_schedules on
    CPUs, lowering.gpu_schedules on GPUs) schedule the other kernels they know."""
    from .pipeline import fuse_regions, legalize_for_regions, optimize
    from slimgraph.ir.text import REGION

    from .blocked_layout import blocked_layout_wanted
    from .regions import depthwise_with_projection, import_with_origins, one_conv_per_region, outline_regions

    from .int8_kernels import dot_product_data_for

    region_of = {n.name: n.meta[REGION] for n in graph.fx_graph.nodes if n.meta.get(REGION) is not None}
    if not region_of:
        with dot_product_data_for(target):
            imported = to_relax(graph)
        optimized = optimize(imported, target, blocked_layout_wanted(imported, target))
        scheduled, notes = _schedule(_hook(optimized, before_rules), target)
        return imported, scheduled, notes
    graph = normalize_negative_indices(graph)
    try:
        with dot_product_data_for(target):
            imported, origins = import_with_origins(graph, _example_inputs(graph))
    except AssertionError as exc:
        raise _unsupported(graph, exc) from exc
    blocked = blocked_layout_wanted(imported, target)
    if target.kind.name != "llvm" or blocked:  # only the CPU rules schedule a 1x1 and a depthwise conv as
        region_of = one_conv_per_region(graph, region_of)  # one kernel, and only on NCHW tensors
    if blocked and DEPTHWISE_PROJECTION:  # blocked: a depthwise conv and its projection as one kernel
        region_of = depthwise_with_projection(graph, region_of)
    var_region = {var: region_of[node] for var, node in origins.items() if node in region_of}
    outlined, notes = outline_regions(legalize_for_regions(imported, target, blocked), var_region)
    scheduled, unscheduled = _schedule(_hook(fuse_regions(outlined, target), before_rules), target)
    return imported, scheduled, notes + unscheduled


def _schedule(mod, target):
    """The schedule rules of the target's kind: ours on CPUs, dlight's on GPUs."""
    from .cpu_schedules import schedule_cpu
    from .gpu_schedules import schedule_gpu

    return schedule_gpu(mod, target) if "gpu" in target.keys else schedule_cpu(mod, target)


def _hook(mod, before_rules):
    return before_rules(mod) if before_rules is not None else mod


def _example_inputs(graph: Graph) -> tuple[torch.Tensor, ...]:
    """Zeros of the input shapes: torch.export traces with them (values do not matter)."""
    return tuple(torch.zeros(shape, dtype=dtype) for _, shape, dtype in graph.input_specs())


def _unsupported(graph: Graph, exc: AssertionError) -> Exception:
    match = re.search(r"Unsupported function types \[(.*)\]", str(exc))
    if match:
        return LoweringError(f"graph '{graph.name}': TVM's importer has no converter for: {match.group(1)}")
    return exc


def to_relax(graph: Graph):
    """Convert the graph to a Relax IRModule whose `main` takes the graph's inputs in order."""
    from tvm.relax.frontend.torch import from_exported_program

    from .quant_import import CONVERTERS

    graph = normalize_negative_indices(graph)
    program = torch.export.export(graph.module(), _example_inputs(graph))
    try:
        return from_exported_program(program, keep_params_as_input=False, custom_convert_map=CONVERTERS)
    except AssertionError as exc:
        raise _unsupported(graph, exc) from exc
