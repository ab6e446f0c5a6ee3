"""Exact algebraic merges used by the `fuse` pass (rules as data).

P is a conv (weight W[o, ...], bias b) or a linear (W[o, i], bias b); c is a constant that is
one value per output channel (or a scalar).
- add-into-bias:     P(x) + c  ->  P'(x) with b' = b + c            (also c + P(x), P(x) - c)
- mul-into-weights:  P(x) * c  ->  P'(x) with W' = W * c[o], b' = b * c   (also P(x) / c: c -> 1/c)
- pad-into-conv:     conv(pad(x, [l, r, t, b], 0), padding p) -> conv(x, padding p + pad)  when l = r and t = b
- linear-linear:     linear(linear(x, W1, b1), W2, b2) -> linear(x, W2 W1, W2 b1 + b2)
- permute-permute:   permute(permute(x, p), q) -> permute(x, [p[q[i]]]), or x when that is the identity
- transpose-transpose: transpose(transpose(x, a, b), a, b) -> x
- reshape-reshape:   reshape(reshape(x, s1), s2) -> reshape(x, s2);  reshape(x, shape(x)) -> x
"""
from __future__ import annotations

import torch

from .layer_params import constant_bias, rebuild_layer
from .patterns import Any, Const, Miss, Op
from .rules import Rule, RuleSet

aten = torch.ops.aten
CONVS = (aten.conv1d.default, aten.conv2d.default)
PRODUCERS = CONVS + (aten.linear.default,)
RESHAPES = (aten.reshape.default, aten.view.default)


def _producer() -> Op:
    return Op(PRODUCERS, Any("x"), Const("w"), Any("b"), name="producer", single_use=True)


def per_channel(match, value) -> torch.Tensor | str:
    """The constant as a 1-D per-output-channel vector (float64), or why it is not one."""
    producer = match["producer"]
    out = producer.meta["val"]
    channels = out.shape[-1] if producer.target is aten.linear.default else out.shape[1]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((channels,), float(value), dtype=torch.float64)
    if getattr(value, "op", None) != "get_attr":
        return f"%{value.name} is computed, not a constant"
    tensor = match.graph.params[value.target].double()
    if tensor.numel() == 1:
        return tensor.reshape(1).expand(channels).clone()
    if producer.target is aten.linear.default:
        fits = tensor.dim() <= out.dim() and tensor.shape[-1] == channels and tensor.numel() == channels
    else:
        trailing = out.dim() - 2
        fits = tensor.numel() == channels and tensor.dim() >= trailing + 1 and \
            tensor.shape[-trailing - 1] == channels and tensor.dim() <= out.dim()
    if not fits:
        return f"constant of shape {list(tensor.shape)} is not one value per output channel ({channels})"
    return tensor.reshape(channels)


def _affine(sign: float = 1.0, scale: bool = False, reciprocal: bool = False):
    def rewrite(match, rw):
        if match["producer"].meta["val"].dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            return rw.decline("not a floating-point producer")
        c = per_channel(match, match["c"])
        bias = constant_bias(match, match.tensor("w").shape[0])
        for problem in (c, bias):
            if isinstance(problem, str):
                return rw.decline(problem)
        weight = match.tensor("w").double()
        if not scale:
            return rebuild_layer(match, rw, match["x"], weight, bias + sign * c)
        c = 1.0 / c if reciprocal else c
        return rebuild_layer(match, rw, match["x"], weight * c.view(-1, *([1] * (weight.dim() - 1))), bias * c)
    return rewrite


def fold_pad(match, rw):
    conv, pads = match["producer"], list(match["pads"])
    spatial = conv.meta["val"].dim() - 2
    if float(match["value"]) != 0.0 or len(pads) != 2 * spatial:
        return rw.decline(f"pad {pads} with value {match['value']} is not a zero pad of exactly the spatial dims")
    # constant_pad_nd lists (left, right) of the last dim first
    per_dim = [(pads[2 * i], pads[2 * i + 1]) for i in range(spatial)][::-1]
    if any(lo != hi or lo < 0 for lo, hi in per_dim):
        return rw.decline(f"asymmetric or negative pad {pads} cannot become conv padding")
    args = list(conv.args) + [None] * (5 - len(conv.args))
    stride = args[3] if args[3] is not None else [1] * spatial
    padding = args[4] if args[4] is not None else [0] * spatial
    if isinstance(padding, str):
        return rw.decline(f"conv uses padding mode '{padding}'")
    padding = list(padding) * spatial if len(padding) == 1 else list(padding)
    new_padding = [p + lo for p, (lo, _) in zip(padding, per_dim)]
    rest = list(conv.args[5:])
    return rw.call(conv.target, match["x"], conv.args[1], conv.args[2], stride, new_padding, *rest, like=conv)


def merge_linears(match, rw):
    inner, outer = match["inner"], match["producer"]
    w1, w2 = match.tensor("w1").double(), match.tensor("w").double()
    b1 = match.tensor("b1").double() if match["b1"] is not None else torch.zeros(w1.shape[0], dtype=torch.float64)
    b2 = constant_bias(match, w2.shape[0])
    if isinstance(b2, str) or (match["b1"] is not None and match["b1"].op != "get_attr"):
        return rw.decline("a bias is computed, not a constant")
    dtype = match.tensor("w").dtype
    name = f"{match['w'].target}@{match['w1'].target}"
    weight = rw.param(name, (w2 @ w1).to(dtype))
    bias = rw.param(f"{name}.bias", (w2 @ b1 + b2).to(dtype))
    return rw.call(aten.linear.default, inner.args[0], weight, bias, like=outer)


def compose_permutes(match, rw):
    first, second = list(match["p"]), list(match["q"])
    composed = [first[i] for i in second]
    if composed == sorted(composed):
        return match["x"]
    return rw.call(aten.permute.default, match["x"], composed, like=match["producer"])


def cancel_transposes(match, rw):
    inner, outer = match["inner"], match["producer"]
    rank = inner.meta["val"].dim()
    dims_in = sorted(d % rank for d in inner.args[1:3])
    dims_out = sorted(d % rank for d in outer.args[1:3])
    return match["x"] if dims_in == dims_out else rw.decline(f"transposes of dims {dims_in} and {dims_out}")


def merge_reshapes(match, rw):
    outer = match["producer"]
    x = match["x"]
    if tuple(x.meta["val"].shape) == tuple(outer.meta["val"].shape):
        return x
    return rw.call(aten.reshape.default, x, list(outer.meta["val"].shape), like=outer)


def _same_shape(node, match):
    same = tuple(node.args[0].meta["val"].shape) == tuple(node.meta["val"].shape)
    return None if same else Miss.make("the reshape changes the shape", structural=True)


ALGEBRA_RULES = RuleSet([
    Rule("add-into-bias", Op(aten.add.Tensor, _producer(), Any("c")), _affine(+1.0)),
    Rule("add-into-bias-left", Op(aten.add.Tensor, Any("c"), _producer()), _affine(+1.0)),
    Rule("sub-into-bias", Op(aten.sub.Tensor, _producer(), Any("c")), _affine(-1.0)),
    Rule("mul-into-weights", Op(aten.mul.Tensor, _producer(), Any("c")), _affine(scale=True)),
    Rule("mul-into-weights-left", Op(aten.mul.Tensor, Any("c"), _producer()), _affine(scale=True)),
    Rule("div-into-weights", Op(aten.div.Tensor, _producer(), Any("c")), _affine(scale=True, reciprocal=True)),
    Rule("pad-into-conv", Op(CONVS, Op(aten.constant_pad_nd.default, Any("x"), Any("pads"), Any("value"),
                                       single_use=True), name="producer"), fold_pad),
    Rule("linear-linear", Op(aten.linear.default, Op(aten.linear.default, Any(), Const("w1"), Any("b1"), name="inner",
                                                     single_use=True), Const("w"), Any("b"), name="producer"),
         merge_linears),
    Rule("permute-permute", Op(aten.permute.default, Op(aten.permute.default, Any("x"), Any("p"), single_use=True),
                               Any("q"), name="producer"), compose_permutes),
    Rule("transpose-transpose", Op(aten.transpose.int, Op(aten.transpose.int, Any("x"), Any(), Any(), name="inner",
                                                          single_use=True), Any(), Any(), name="producer"),
         cancel_transposes),
    Rule("reshape-reshape", Op(RESHAPES, Op(RESHAPES, Any("x"), Any(), single_use=True), Any(), name="producer"),
         merge_reshapes),
    Rule("noop-reshape", Op(RESHAPES, Any("x"), Any(), where=_same_shape), lambda match, rw: match["x"]),
])
