"""Shared by the passes that rewrite a layer's weights: read its constant bias, name and emit
the new parameters, and rebuild the layer call with them.

A match here binds "producer" (the conv / conv-transpose / linear node), "w" (its weight
parameter) and "b" (its bias: a parameter or None).
"""
from __future__ import annotations

import torch


def constant_bias(match, channels: int) -> torch.Tensor | str:
    """The layer's bias in float64 (zeros when it has none), or why it cannot be used."""
    b = match["b"]
    if b is None:
        return torch.zeros(channels, dtype=torch.float64)
    if getattr(b, "op", None) != "get_attr":
        return f"bias of %{match['producer'].name} is computed, not a constant"
    return match.tensor("b").double()


def bias_name(match) -> str:
    """The bias's own name, or the weight's name with `weight` -> `bias` for a new bias."""
    if match["b"] is not None:
        return match["b"].target
    weight = match["w"].target
    return weight[: -len("weight")] + "bias" if weight.endswith("weight") else weight + ".bias"


def rebuild_layer(match, rw, data, weight: torch.Tensor, bias: torch.Tensor):
    """The layer again on `data`, with new weight and bias (cast back to the weight's dtype)."""
    producer, dtype = match["producer"], match.tensor("w").dtype
    new_w = rw.param(match["w"].target, weight.to(dtype))
    new_b = rw.param(bias_name(match), bias.to(dtype))
    return rw.call(producer.target, data, new_w, new_b, *producer.args[3:], like=producer, **producer.kwargs)
