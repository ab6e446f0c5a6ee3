"""fold-bn: fold inference-mode batch norms into the conv / conv-transpose / linear next to them.

With s = gamma / sqrt(var + eps) and t = beta - mean * s, a batch norm is y = x * s + t per channel.

- BN after conv (weight W[o, i, k...], bias b):       W' = W * s[o],          b' = b * s + t
- BN after conv-transpose (W[i, o/g, k...], groups g): W'[i, j] = W[i, j] * s[(i // (I/g)) * (O/g) + j], b' = b * s + t
- BN after linear on [N, C] (W[o, i]):                 W' = W * s[o],          b' = b * s + t
- linear after BN on [N, C]:                           W' = W * s[None, :],    b' = b + W @ t
- conv after BN, no padding, groups 1:                 W' = W * s[None, :, ...], b' = b + sum_{i,k} W[o, i, k] * t[i]
  (zero padding would pad x*s + t with zeros where the unfolded graph pads with t: not exact, so it declines.)

Declines, with the reason: the producer has other users, the norm is in training mode, the
weights or statistics are not constants, or the layout does not put channels where the BN
normalizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Pass, PassResult, register_pass
from .layer_params import constant_bias, rebuild_layer
from .patterns import Any, Const, Op
from .rules import Rule, RuleSet, apply_rules

aten = torch.ops.aten
CONVS = (aten.conv1d.default, aten.conv2d.default)


def _inference_mode(node, match):
    return "batch norm is in training mode (it uses batch statistics)" if node.args[5] else None


def _bn(inner) -> Op:
    return Op(aten.batch_norm.default, inner, Any("gamma"), Any("beta"), Const("mean"), Const("var"),
              Any(), Any(), Any("eps"), name="bn", where=_inference_mode)


def scale_and_shift(match) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(s, t) in float64, or the reason the affine parameters are unusable."""
    for key in ("gamma", "beta"):
        value = match[key]
        if value is not None and getattr(value, "op", None) != "get_attr":
            return f"batch norm {key} is computed (%{value.name}), not a constant"
    var, mean = match.tensor("var").double(), match.tensor("mean").double()
    gamma = match.tensor("gamma").double() if match["gamma"] is not None else torch.ones_like(var)
    beta = match.tensor("beta").double() if match["beta"] is not None else torch.zeros_like(var)
    s = gamma / torch.sqrt(var + float(match["eps"]))
    return s, beta - mean * s


def fold_into_producer(match, rw):
    producer = match["producer"]
    affine = scale_and_shift(match)
    if isinstance(affine, str):
        return rw.decline(affine)
    s, t = affine
    w = match.tensor("w").double()
    if producer.target is aten.conv_transpose2d.input:
        groups = producer.args[6] if len(producer.args) > 6 else 1
        in_per_group, out_per_group = w.shape[0] // groups, w.shape[1]
        channel = (torch.arange(w.shape[0])[:, None] // in_per_group) * out_per_group + torch.arange(out_per_group)
        scaled = w * s[channel].view(w.shape[0], out_per_group, *([1] * (w.dim() - 2)))
    else:
        if producer.target is aten.linear.default and producer.meta["val"].dim() != 2:
            return rw.decline("linear output is not [N, C]: the batch norm normalizes another axis")
        scaled = w * s.view(-1, *([1] * (w.dim() - 1)))
    bias = constant_bias(match, s.numel())
    if isinstance(bias, str):
        return rw.decline(bias)
    return rebuild_layer(match, rw, match["x"], scaled, bias * s + t)


def fold_into_consumer(match, rw):
    consumer = match["producer"]
    if match["bn"].args[0].meta["val"].dim() != 2 and consumer.target is aten.linear.default:
        return rw.decline("batch norm input is not [N, C]: channels are not the linear's input features")
    if consumer.target in CONVS:
        padding, groups = consumer.args[4] if len(consumer.args) > 4 else 0, consumer.args[6] if len(consumer.args) > 6 else 1
        if any(p != 0 for p in (padding if isinstance(padding, (list, tuple)) else [padding])):
            return rw.decline("the conv pads with zeros after the batch norm's shift: folding would not be exact")
        if groups != 1:
            return rw.decline("grouped conv after a batch norm is not folded")
    affine = scale_and_shift(match)
    if isinstance(affine, str):
        return rw.decline(affine)
    s, t = affine
    w = match.tensor("w").double()
    bias = constant_bias(match, w.shape[0])
    if isinstance(bias, str):
        return rw.decline(bias)
    view = (1, -1) + (1,) * (w.dim() - 2)
    shift = (w * t.view(view)).sum(dim=tuple(range(1, w.dim())))
    return rebuild_layer(match, rw, match["bn"].args[0], w * s.view(view), bias + shift)


PRODUCER = Op(CONVS + (aten.conv_transpose2d.input, aten.linear.default), Any("x"), Const("w"), Any("b"),
              name="producer", single_use=True)

FOLD_BN_RULES = RuleSet([
    Rule("fold-bn-into-producer", _bn(PRODUCER), fold_into_producer,
         "conv / conv-transpose / linear followed by an inference batch norm"),
    Rule("fold-bn-into-consumer",
         Op(CONVS + (aten.linear.default,), Op(aten.batch_norm.default, Any(), Any("gamma"), Any("beta"),
            Const("mean"), Const("var"), Any(), Any(), Any("eps"), name="bn", single_use=True,
            where=_inference_mode), Const("w"), Any("b"), name="producer"),
         fold_into_consumer, "inference batch norm followed by linear, or by conv without padding"),
])


@register_pass
@dataclass
class FoldBatchNorm(Pass):
    name: ClassVar[str] = "fold-bn"
    summary: ClassVar[str] = "fold inference batch norms into the neighbouring conv / conv-transpose / linear"

    def run(self, graph):
        report = apply_rules(graph, FOLD_BN_RULES, self.name)
        return PassResult(graph, bool(report.fired), {"folded": sum(report.fired.values())}, report.notes())
