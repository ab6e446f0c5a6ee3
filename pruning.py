"""`slimgraph.prune(module, example_inputs, ...)`: the `prune` pass's plan applied to the user's
nn.Module in place, so they fine-tune it with their own training loop and then compile it.

The module is imported (torch.export) and planned exactly as the pass plans the graph; then every
parameter and buffer the plan slices is replaced by its slice (a new nn.Parameter, so build the
optimizer after pruning), and the module attributes that describe the shapes follow:
Conv / ConvTranspose in_channels, out_channels (and groups of a depthwise conv), Linear
in_features / out_features, BatchNorm num_features, LayerNorm normalized_shape, GroupNorm
num_channels, Embedding embedding_dim. A plan that would have to change a shape written in the
module's forward (a view, reshape or split size) is refused before anything changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from slimgraph.ir.errors import SlimgraphError
from slimgraph.ir.stats import graph_stats
from slimgraph.model_source import load_model
from slimgraph.rewrites.prune import Prune, count_removed, shrink

aten = torch.ops.aten
SHAPES_IN_CODE = (aten.view.default, aten.reshape.default, aten.split_with_sizes.default, aten.split.Tensor,
                  aten.chunk.default)


@dataclass
class PruneReport:
    """What `prune` did: the plan's notes, and parameters / MACs before and after."""

    notes: list[str] = field(default_factory=list)
    parameters: tuple[int, int] = (0, 0)
    macs: tuple[int, int] = (0, 0)
    channels_removed: int = 0


def prune(module: nn.Module, example_inputs: Sequence[torch.Tensor], *, ratio: float = 0.5, importance: str = "l2",
          round: int = 1, protect: Sequence[str] = ()) -> PruneReport:  # noqa: A002 - the pass's option name
    """Prune `module` in place (module docstring); options as the `prune` pass's."""
    training = module.training
    graph = load_model(module, example_inputs).graph
    module.train(training)
    planner = Prune(ratio=ratio, importance=importance, round=round, protect=list(protect))
    analysis, removed, notes = planner.plan(graph)
    before = graph_stats(graph)
    edit = shrink(graph, analysis, removed) if removed else None
    report = PruneReport(notes, (before.parameters, before.parameters), (before.macs, before.macs))
    if edit is None:
        return report
    fixed = [node for node in edit.changed_args if node.target in SHAPES_IN_CODE]
    if fixed:
        node = fixed[0]
        raise SlimgraphError(f"prune: the plan changes the shape argument of %{node.name} ({node.target}), which "
                             f"{type(module).__name__}.forward fixes in code; protect the layers feeding it, or "
                             f"prune the graph with the `prune` pass instead")
    depthwise = {name for name, m in module.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels}
    for (name, dim), keep in edit.slices.items():
        _slice_tensor(module, name, dim, keep)
    for name, child in module.named_modules():
        _update_attributes(child, depthwise_conv=name in depthwise)
    after = graph_stats(graph)
    report.parameters, report.macs = (before.parameters, after.parameters), (before.macs, after.macs)
    report.channels_removed = count_removed(analysis, removed)
    return report


def _slice_tensor(module: nn.Module, name: str, dim: int, keep: list[int]) -> None:
    owner_path, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    old = getattr(owner, attribute)
    new = old.detach().index_select(dim, torch.tensor(keep, dtype=torch.long)).clone()
    if isinstance(old, nn.Parameter):
        setattr(owner, attribute, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        owner._buffers[attribute] = new


def _update_attributes(child: nn.Module, depthwise_conv: bool) -> None:
    if isinstance(child, nn.modules.conv._ConvNd):
        if child.transposed:
            child.in_channels, child.out_channels = child.weight.shape[0], child.weight.shape[1] * child.groups
        else:
            if depthwise_conv:
                child.groups = child.weight.shape[0]
            child.out_channels, child.in_channels = child.weight.shape[0], child.weight.shape[1] * child.groups
    elif isinstance(child, nn.Linear):
        child.out_features, child.in_features = child.weight.shape
    elif isinstance(child, nn.modules.batchnorm._BatchNorm):
        child.num_features = child.running_mean.shape[0] if child.running_mean is not None else child.weight.shape[0]
    elif isinstance(child, nn.LayerNorm) and child.weight is not None:
        child.normalized_shape = (child.weight.shape[0],)
    elif isinstance(child, nn.GroupNorm) and child.weight is not None:
        child.num_channels = child.weight.shape[0]
    elif isinstance(child, nn.Embedding):
        child.embedding_dim = child.weight.shape[1]
