"""Importance of each channel element for pruning (rewrites/prune.py): of the layer that creates
it, over its output slice W[c, ...] (W[:, c] for conv-transpose and embedding):

    l1:       sum |w|
    l2:       sqrt(sum w^2)
    bn-scale: |gamma[c]| of the batch norm that reads the channel (l2 where none does)
    taylor:   sum over calibration batches b of (sum_{w in W[c, ...]} w * dL_b/dw)^2, the first-order
              estimate of the loss change when the channel is removed (Molchanov et al., 2019)

The Taylor loss needs no labels: a classifier's logits [N, K] use the cross-entropy against the
model's own predictions, any other output 0.5 * mean(y^2). Batches: the calibration data
(`compile(..., calibration_data=...)`, `--calib`), or 8 seeded random batches with a note.
"""
from __future__ import annotations

import torch

IMPORTANCE = ("l1", "l2", "bn-scale", "taylor")
RANDOM_BATCHES = 8
aten = torch.ops.aten


def _weight_of(node):
    """(weight node, output-channel dim) of a layer that creates channels."""
    if node.target is aten.embedding.default:
        return node.args[0], 1
    return node.args[1], 1 if node.target is aten.conv_transpose2d.input else 0


def _per_channel(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    return tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1)


def _norms(graph, analysis, how: str) -> dict[int, float]:
    result = {}
    for space in analysis.spaces:
        weight, dim = _weight_of(space.node)
        rows = _per_channel(graph.params[weight.target].detach().double(), dim)
        values = rows.abs().sum(1) if how == "l1" else rows.pow(2).sum(1).sqrt()
        result.update({space.first + i: float(v) for i, v in enumerate(values)})
    return result


def _bn_scales(graph, analysis) -> dict[int, float]:
    scales: dict[int, float] = {}
    for node in graph.fx_graph.nodes:
        if node.op == "call_function" and node.target is aten.batch_norm.default and node.args[1] is not None:
            mapped = analysis.map_of(node.args[0])
            if mapped is not None:
                gamma = graph.params[node.args[1].target].detach().double().abs()
                for element, value in zip(mapped.elements, gamma.tolist()):
                    scales[element] = scales.get(element, 0.0) + value
    return scales


def _unsupervised_loss(output: torch.Tensor) -> torch.Tensor:
    if output.dim() == 2 and output.is_floating_point():
        return torch.nn.functional.cross_entropy(output, output.argmax(1).detach())
    return 0.5 * output.float().pow(2).mean()


def _taylor(graph, analysis, batches) -> dict[int, float]:
    probe = graph.copy()
    weights = {_weight_of(space.node)[0].target for space in analysis.spaces}  # not BN statistics
    probe.params = {k: v.detach().clone().requires_grad_(k in weights and v.is_floating_point())
                    for k, v in graph.params.items()}
    module = probe.module()  # its buffers are these tensors: their .grad is what backward fills
    scores: dict[int, float] = {}
    for batch in batches:
        for tensor in probe.params.values():
            tensor.grad = None
        output = module(*batch)
        output = output[0] if isinstance(output, (tuple, list)) else output
        _unsupervised_loss(output).backward()
        for space in analysis.spaces:
            weight, dim = _weight_of(space.node)
            tensor = probe.params[weight.target]
            if tensor.grad is None:
                continue
            change = _per_channel((tensor * tensor.grad).detach().double(), dim).sum(1).pow(2)
            for index, value in enumerate(change.tolist()):
                scores[space.first + index] = scores.get(space.first + index, 0.0) + value
    return scores


def importance_of(graph, analysis, how: str) -> tuple[dict[int, float], str]:
    """Importance per element, and a note when Taylor ran on stand-in data."""
    if how in ("l1", "l2"):
        return _norms(graph, analysis, how), ""
    if how == "bn-scale":
        norms, scales = _norms(graph, analysis, "l2"), _bn_scales(graph, analysis)
        return {e: scales.get(e, value) for e, value in norms.items()}, ""
    from .quantize import _CALIBRATION

    batches, note = _CALIBRATION.get() or (None, "")
    if batches is None:
        batches = [graph.example_inputs(seed) for seed in range(RANDOM_BATCHES)]
        note = f"{RANDOM_BATCHES} batches of seeded random inputs"
    return _taylor(graph, analysis, batches), (f"taylor importance on {note} (no calibration data given)" if note else "")
