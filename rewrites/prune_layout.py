"""Channel handlers for layout ops: reshapes (flatten into a linear, attention heads), permute,
transpose, and batched matmul over heads. Registered by rewrites/prune_handlers.py.

    flatten [N, C, rest...] -> [N, C prod(rest)]:  feature f carries element f // prod(rest)
    split into heads  [.., C] -> [.., H, C/H]:      the C/H channels of head h become one class,
                                                    and the heads axis carries one element per head
    merge heads       [.., H, D] -> [.., H D]:      feature f carries head f // D
    permute / transpose:                            the channel axis moves with its dimension
    matmul a @ b, channels on a batch axis of both: head h of a and head h of b are one class

So an encoder's q, k and v projections of head h, and the output projection's input columns of
that head, are removed together: whole heads go, never parts of one.
"""
from __future__ import annotations

import math

import torch

from .prune_groups import ChannelMap
from .prune_handlers import ChannelHandler, register_channel_handler

aten = torch.ops.aten


def _shape(value) -> list[int]:
    return list(value.meta["val"].shape)


class Reshape(ChannelHandler):
    """flatten / view / reshape (module docstring); any other reshape of the channel axis stops the group."""

    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is None:
            return None
        before, after, axis = _shape(node.args[0]), _shape(node), data.axis
        if before == after:
            return ChannelMap(axis, list(data.elements))
        if after[:axis] == before[:axis] and len(after) == axis + 1 and math.prod(before[axis:]) == after[axis]:
            inner = math.prod(before[axis + 1:])  # flatten from the channel axis on
            return ChannelMap(axis, [e for e in data.elements for _ in range(inner)])
        if after[:axis] == before[:axis] and after[axis + 2:] == before[axis + 1:] \
                and len(after) == len(before) + 1 and after[axis] * after[axis + 1] == before[axis]:
            width = after[axis + 1]  # split into heads: a head's channels are one class
            heads = [data.elements[h * width:(h + 1) * width] for h in range(after[axis])]
            for members in heads:
                for element in members[1:]:
                    analysis.unify(members[0], element)
            return ChannelMap(axis, [members[0] for members in heads])
        if after[:axis] == before[:axis] and after[axis + 1:] == before[axis + 2:] \
                and len(after) == len(before) - 1 and after[axis] == before[axis] * before[axis + 1]:
            return ChannelMap(axis, [e for e in data.elements for _ in range(before[axis + 1])])  # merge heads
        analysis.block(data.elements, f"%{node.name} reshapes the channel axis {before} -> {after}")
        return None

    def shrink(self, node, plan):
        keep = plan.keep(node)
        if keep is None or node.target not in (aten.view.default, aten.reshape.default):
            return
        shape = list(node.args[1])
        axis = plan.axis(node)
        if shape[axis] != -1:
            shape[axis] = len(keep)
            plan.set_arg(node, 1, shape)


class Permute(ChannelHandler):
    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is None:
            return None
        rank = len(_shape(node))
        if node.target is aten.permute.default:
            order = [d % rank for d in node.args[1]]
        else:  # transpose.int / t
            first, second = (node.args[1] % rank, node.args[2] % rank) if len(node.args) > 2 else (0, 1)
            order = list(range(rank))
            order[first], order[second] = order[second], order[first]
        return ChannelMap(order.index(data.axis), list(data.elements))


class MatMul(ChannelHandler):
    """Batched matmul with the channels (heads) on a batch axis of both operands."""

    def propagate(self, node, analysis):
        left, right = (analysis.map_of(v) for v in node.args[:2])
        if left is None and right is None:
            return None
        rank = len(_shape(node))
        ranks = [len(_shape(v)) for v in node.args[:2]]
        batch = [m is not None and m.axis + rank - r < rank - 2 for m, r in zip((left, right), ranks)]
        if left is not None and right is not None and all(batch) \
                and left.axis + rank - ranks[0] == right.axis + rank - ranks[1]:
            for a, b in zip(left.elements, right.elements):
                analysis.unify(a, b)
            return ChannelMap(left.axis + rank - ranks[0], list(left.elements))
        for mapped in (left, right):
            if mapped is not None:
                analysis.block(mapped.elements, f"%{node.name} multiplies over the channels (not per head)")
        return None


def register_layout_handlers() -> None:
    reshape = Reshape()
    for op in (aten.flatten.using_ints, aten.view.default, aten.reshape.default):
        register_channel_handler(op, reshape)
    permute = Permute()
    for op in (aten.permute.default, aten.transpose.int, aten.t.default):
        register_channel_handler(op, permute)
    matmul = MatMul()
    for op in (aten.matmul.default, aten.bmm.default):
        register_channel_handler(op, matmul)
