"""The canonical op set: the aten ops torch.export produces by default, plus slimgraph ops.

Both frontends produce only these ops, so every pass is written once. `canonicalize` turns the
few non-canonical forms torch.export leaves (in-place ops, eval-mode dropout, aliasing copies)
into canonical ones.
"""
from __future__ import annotations

import operator
from collections import Counter

import torch
import torch.fx as fx

aten = torch.ops.aten

CANONICAL_OPS: set = {
    operator.getitem,
    # convolution, normalization, dense
    aten.conv1d.default, aten.conv2d.default, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
    aten.batch_norm.default, aten.layer_norm.default, aten.group_norm.default,
    aten.linear.default, aten.matmul.default, aten.mm.default, aten.bmm.default, aten.addmm.default,
    aten.embedding.default,
    # elementwise
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.div.Tensor_mode,
    aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar, aten.rsub.Scalar,
    aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.neg.default, aten.abs.default,
    aten.reciprocal.default, aten.maximum.default, aten.minimum.default,
    aten.relu.default, aten.relu6.default, aten.hardtanh.default, aten.clamp.default, aten.clamp.Tensor,
    aten.sigmoid.default, aten.hardsigmoid.default, aten.hardswish.default, aten.silu.default,
    aten.tanh.default, aten.leaky_relu.default, aten.prelu.default, aten.gelu.default, aten.erf.default,
    aten.sqrt.default, aten.rsqrt.default, aten.exp.default, aten.log.default,
    aten.where.self, aten.eq.Tensor, aten.eq.Scalar, aten.lt.Tensor, aten.gt.Tensor,
    aten.to.dtype, aten._to_copy.default,
    # reductions and pooling
    aten.softmax.int, aten.log_softmax.int, aten.mean.dim, aten.sum.dim_IntList, aten.amax.default,
    aten.amin.default, aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default,
    aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec,
    # layout
    aten.constant_pad_nd.default, aten.pad.default, aten.reshape.default, aten.view.default,
    aten.flatten.using_ints, aten.permute.default, aten.transpose.int, aten.t.default, aten.cat.default,
    aten.split_with_sizes.default, aten.split.Tensor, aten.chunk.default, aten.slice.Tensor,
    aten.squeeze.dims, aten.squeeze.dim, aten.unsqueeze.default, aten.select.int, aten.index_select.default,
    aten.expand.default,
}

IDENTITY_OPS = {aten.dropout.default, aten.alias.default, aten.detach.default, aten.clone.default,
                aten.contiguous.default, aten.lift_fresh_copy.default}


def register_canonical_op(op) -> None:
    """Admit an op (e.g. a user's torch.library op) into the canonical set."""
    CANONICAL_OPS.add(op)


def is_canonical(target) -> bool:
    if target in CANONICAL_OPS:
        return True
    return isinstance(target, torch._ops.OpOverload) and target.namespace == "slimgraph"


def functional_variant(target):
    """aten.relu_.default -> aten.relu.default; None when the op is not an in-place aten op."""
    if not isinstance(target, torch._ops.OpOverload) or target.namespace != "aten":
        return None
    base = target._schema.name.split("::")[1]
    if not base.endswith("_") or base.startswith("_"):
        return None
    packet = getattr(aten, base[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def canonicalize(fx_graph: fx.Graph) -> None:
    """Rewrite in-place ops to functional ones and drop identity ops (eval dropout, aliases)."""
    order = {n: i for i, n in enumerate(fx_graph.nodes)}
    for node in list(fx_graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in IDENTITY_OPS:
            node.replace_all_uses_with(node.args[0])
            fx_graph.erase_node(node)
            continue
        functional = functional_variant(node.target)
        if functional is None:
            continue
        mutated = node.args[0]
        later_users = [u for u in mutated.users if u is not node and order.get(u, -1) > order[node]]
        for user in later_users:  # readers after the mutation see the new value
            user.replace_input_with(mutated, node)
        node.target = functional
    fx_graph.eliminate_dead_code()


def unsupported_ops(fx_graph: fx.Graph) -> Counter:
    from .shapes import op_name

    return Counter(op_name(n) for n in fx_graph.nodes if n.op == "call_function" and not is_canonical(n.target))


def conv2d_attrs(node: fx.Node) -> tuple[list[int], list[int], list[int], int]:
    """(stride, padding, dilation, groups) of an aten.conv2d node, defaults filled in, each spatial
    attribute as a pair."""
    defaults = (None, None, None, 1, 0, 1, 1)
    args = list(node.args) + list(defaults[len(node.args):])
    return _pair(args[3]), _pair(args[4]), _pair(args[5]), int(args[6])


def _pair(value) -> list[int]:
    """An int or a 1- or 2-element list (aten broadcasts one value to both sides) as [h, w]."""
    values = [int(value)] if isinstance(value, int) else [int(e) for e in value]
    return values * 2 if len(values) == 1 else values


def conv_weight_shape(node: fx.Node) -> tuple | None:
    """(O, I/g, kh, kw) of a 2-D conv whose weight is a parameter, else None."""
    if node.target is not aten.conv2d.default or len(node.args) < 2 or node.args[1].op != "get_attr":
        return None
    return tuple(node.args[1].meta["val"].shape)


def is_pointwise_conv(node: fx.Node) -> bool:
    """A 1x1 conv, stride 1, no padding, no groups."""
    shape = conv_weight_shape(node)
    if shape is None or shape[2:] != (1, 1):
        return False
    stride, padding, _, groups = conv2d_attrs(node)
    return stride == [1, 1] and padding == [0, 0] and groups == 1


def is_depthwise_conv(node: fx.Node) -> bool:
    """A conv with one input channel per group and as many groups as channels."""
    shape = conv_weight_shape(node)
    return shape is not None and shape[1] == 1 and conv2d_attrs(node)[3] == shape[0] > 1
