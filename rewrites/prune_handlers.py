"""Per-op channel handlers for structured pruning: how an op carries channels (propagate) and how
it shrinks once the plan is known (shrink). `register_channel_handler(op, handler)` adds one for
a user's op; an op with none stops every group that reaches it (rewrites/prune_groups.py).

    conv2d (groups 1) / linear / conv-transpose (groups 1):
        new elements for the output channels;  W' = W[keep_out][:, keep_in], b' = b[keep_out]
    depthwise conv (groups = C_in = C_out): channel c carries its input's element;  W' = W[keep]
    grouped conv (1 < groups < C_in): input channels stay (blocked); output channel j of every
        group is one class, so every group loses the same channels and stays equal in size
    embedding: new elements for the embedding dimension;  E' = E[:, keep]
    batch / layer / group norm, activations, pooling, dropout: pass through, params sliced
    a + b, a * b: a[c] and b[c] become one class (a per-channel constant is sliced instead)
    cat / split on the channel axis: elements concatenated / sliced; split sizes recounted
    reshapes, permute / transpose, matmul over attention heads: rewrites/prune_layout.py
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .prune_groups import ChannelAnalysis, ChannelMap

aten = torch.ops.aten


class ChannelHandler:
    """Subclass and register: propagate(node, analysis) -> ChannelMap | list | None and
    shrink(node, plan) (plan: `PruneEdit` in rewrites/prune.py)."""

    def propagate(self, node: fx.Node, analysis: ChannelAnalysis):
        raise NotImplementedError

    def shrink(self, node: fx.Node, plan) -> None:
        pass


CHANNEL_HANDLERS: dict[object, ChannelHandler] = {}


def register_channel_handler(op, handler: ChannelHandler) -> None:
    """Make `handler` the way pruning treats `op` (an OpOverload such as torch.ops.my.op.default)."""
    CHANNEL_HANDLERS[op] = handler


def _rank(node) -> int:
    return node.meta["val"].dim()


class LayerHandler(ChannelHandler):
    """conv2d / linear / conv-transpose / embedding (module docstring)."""

    def __init__(self, out_dim: int, in_dim: int | None, channel_axis: int, data_arg: int = 0):
        self.out_dim, self.in_dim, self.channel_axis, self.data_arg = out_dim, in_dim, channel_axis, data_arg

    def _axis(self, node) -> int:
        return self.channel_axis % _rank(node)

    def propagate(self, node, analysis):
        groups = _groups(node)
        data = analysis.map_of(node.args[self.data_arg])
        if node.target is aten.conv_transpose2d.input and groups != 1:
            if data is not None:
                analysis.block(data.elements, f"grouped conv-transpose %{node.name}")
            return ChannelMap(1, analysis.new_space(node, node.meta["val"].shape[1]))
        if data is not None and self.in_dim is not None and data.axis != self._axis(node.args[0]):
            analysis.block(data.elements, f"%{node.name} reads the channels on another axis than its input features")
            data = None
        out_channels = node.meta["val"].shape[self._axis(node)]
        if groups == 1:
            return ChannelMap(self._axis(node), analysis.new_space(node, out_channels))
        if _depthwise(node):
            return ChannelMap(1, list(data.elements)) if data is not None else \
                ChannelMap(1, analysis.new_space(node, out_channels))
        if data is not None:
            analysis.block(data.elements, f"input channels of grouped conv %{node.name} (groups={groups}) are kept")
        elements = analysis.new_space(node, out_channels)
        per_group = out_channels // groups
        for index in range(per_group, out_channels):
            analysis.unify(elements[index], elements[index % per_group])
        return ChannelMap(1, elements)

    def shrink(self, node, plan):
        weight = node.args[1 - self.data_arg]
        keep_out = plan.keep(node)
        keep_in = plan.keep(node.args[self.data_arg]) if self.in_dim is not None else None
        if _groups(node) != 1:  # grouped: the input channels stay; depthwise: they follow the output
            keep_in = None
            if _depthwise(node) and keep_out is not None:
                plan.set_arg(node, 6, len(keep_out))
        plan.slice_param(weight, self.out_dim, keep_out)
        plan.slice_param(weight, self.in_dim, keep_in)
        bias = node.args[2] if self.data_arg == 0 and len(node.args) > 2 else None
        plan.slice_param(bias, 0, keep_out)


def _groups(node) -> int:
    grouped = node.target in (aten.conv2d.default, aten.conv1d.default, aten.conv_transpose2d.input)
    return node.args[6] if grouped and len(node.args) > 6 else 1


def _depthwise(node) -> bool:
    """A conv with groups = C_in = C_out (channel c reads only input channel c)."""
    return node.target is not aten.conv_transpose2d.input and \
        _groups(node) == node.args[0].meta["val"].shape[1] == node.meta["val"].shape[1] != 1


class PassThrough(ChannelHandler):
    """Ops that keep the channel axis in place; `params` are (argument index, dim) to slice."""

    def __init__(self, params: tuple[tuple[int, int], ...] = (), shape_arg: int | None = None):
        self.params, self.shape_arg = params, shape_arg

    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is None:
            return None
        if self.shape_arg is not None and data.axis != _rank(node) - 1:
            analysis.block(data.elements, f"%{node.name} normalizes over other axes than the channels")
        return ChannelMap(data.axis, list(data.elements))

    def shrink(self, node, plan):
        keep = plan.keep(node.args[0])
        for index, dim in self.params:
            if index < len(node.args):
                plan.slice_param(node.args[index], dim, keep)
        if self.shape_arg is not None and keep is not None:
            plan.set_arg(node, self.shape_arg, [len(keep)])


class Elementwise(ChannelHandler):
    """a (op) b with broadcasting: equal channels join; a per-channel constant is sliced."""

    def propagate(self, node, analysis):
        tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        mapped = [analysis.map_of(a) for a in tensors]
        present = [m for m in mapped if m is not None]
        if not present:
            return None
        out = ChannelMap(present[0].axis + _rank(node) - _rank(tensors[mapped.index(present[0])]),
                         list(present[0].elements))
        for value, mapping in zip(tensors, mapped):
            axis = out.axis - (_rank(node) - _rank(value))
            size = value.meta["val"].shape[axis] if axis >= 0 else 1
            if mapping is not None:
                for a, b in zip(out.elements, mapping.elements):
                    analysis.unify(a, b)
            elif size != 1 and value.op != "get_attr":
                analysis.block(out.elements, f"%{node.name} combines the channels with an untracked tensor")
        return out

    def shrink(self, node, plan):
        keep = plan.keep(node)
        for value in node.args[:2]:
            if isinstance(value, fx.Node) and value.op == "get_attr":
                axis = plan.axis(node) - (_rank(node) - _rank(value))
                if axis >= 0 and value.meta["val"].shape[axis] != 1:
                    plan.slice_param(value, axis, keep)


class Concat(ChannelHandler):
    def propagate(self, node, analysis):
        values, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
        mapped = [analysis.map_of(v) for v in values]
        dim %= _rank(node)
        if all(m is not None and m.axis == dim for m in mapped):
            return ChannelMap(dim, [e for m in mapped for e in m.elements])
        for m in mapped:
            if m is not None and m.axis == dim:
                analysis.block(m.elements, f"%{node.name} concatenates channels with untracked ones")
        present = [m for m in mapped if m is not None]
        if len(present) != len(mapped) or any(m.axis != present[0].axis for m in present):
            for m in present:
                analysis.block(m.elements, f"%{node.name} concatenates along another axis than the channels")
            return None
        for m in present[1:]:
            for a, b in zip(present[0].elements, m.elements):
                analysis.unify(a, b)
        return ChannelMap(present[0].axis, list(present[0].elements))


class Split(ChannelHandler):
    """split.Tensor / split_with_sizes / chunk on the channel axis: a list of maps."""

    def _sizes(self, node) -> list[int]:
        return [piece.shape[self._dim(node)] for piece in node.meta["val"]]

    def _dim(self, node) -> int:
        return (node.args[2] if len(node.args) > 2 else 0) % node.args[0].meta["val"].dim()

    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is None:
            return None
        if data.axis != self._dim(node):
            return [ChannelMap(data.axis, list(data.elements)) for _ in node.meta["val"]]
        pieces, start = [], 0
        for size in self._sizes(node):
            pieces.append(ChannelMap(data.axis, data.elements[start:start + size]))
            start += size
        return pieces

    def shrink(self, node, plan):
        data = plan.analysis.map_of(node.args[0])
        if data is None or data.axis != self._dim(node) or plan.keep(node.args[0]) is None:
            return
        pieces = plan.analysis.maps[node]
        kept = [sum(1 for e in piece.elements if plan.kept(e)) for piece in pieces]
        plan.replace_target(node, aten.split_with_sizes.default, (node.args[0], kept, self._dim(node)))


class GetItem(ChannelHandler):
    def propagate(self, node, analysis):
        pieces = analysis.maps.get(node.args[0])
        return pieces[node.args[1]] if isinstance(pieces, list) else None


class GroupNorm(PassThrough):
    """Channel j of every group is one class: each group loses the same channels, stays equal."""

    def propagate(self, node, analysis):
        out = super().propagate(node, analysis)
        if out is not None:
            per_group = len(out.elements) // node.args[1]
            for index in range(per_group, len(out.elements)):
                analysis.unify(out.elements[index], out.elements[index % per_group])
        return out


class Softmax(PassThrough):
    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is not None and node.args[1] % _rank(node) == data.axis:
            analysis.block(data.elements, f"%{node.name} normalizes over the channels")
        return super().propagate(node, analysis)


class SpatialMean(ChannelHandler):
    """mean over other axes than the channels: the channels stay (moved left by dropped axes)."""

    def propagate(self, node, analysis):
        data = analysis.map_of(node.args[0])
        if data is None:
            return None
        dims = [d % _rank(node.args[0]) for d in node.args[1]]
        if data.axis in dims:
            analysis.block(data.elements, f"%{node.name} averages over the channels")
            return None
        keepdim = len(node.args) > 2 and node.args[2]
        return ChannelMap(data.axis - (0 if keepdim else sum(d < data.axis for d in dims)), list(data.elements))


def _register_defaults() -> None:
    layer = LayerHandler(out_dim=0, in_dim=1, channel_axis=1)
    register_channel_handler(aten.conv2d.default, layer)
    register_channel_handler(aten.conv1d.default, layer)
    register_channel_handler(aten.linear.default, LayerHandler(out_dim=0, in_dim=1, channel_axis=-1))
    register_channel_handler(aten.conv_transpose2d.input, LayerHandler(out_dim=1, in_dim=0, channel_axis=1))
    register_channel_handler(aten.embedding.default, LayerHandler(out_dim=1, in_dim=None, channel_axis=-1, data_arg=1))
    same = PassThrough()
    for op in (aten.relu.default, aten.hardtanh.default, aten.relu6.default, aten.clamp.default, aten.gelu.default,
               aten.sigmoid.default, aten.silu.default, aten.tanh.default, aten.hardswish.default,
               aten.hardsigmoid.default, aten.leaky_relu.default, aten.elu.default, aten.dropout.default,
               aten.clone.default, aten.max_pool2d.default, aten.avg_pool2d.default,
               aten.adaptive_avg_pool2d.default, aten.contiguous.default, aten.upsample_nearest2d.vec,
               aten.upsample_bilinear2d.vec, aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar):
        register_channel_handler(op, same)
    register_channel_handler(aten.batch_norm.default, PassThrough(((1, 0), (2, 0), (3, 0), (4, 0))))
    register_channel_handler(aten.layer_norm.default, PassThrough(((2, 0), (3, 0)), shape_arg=1))
    register_channel_handler(aten.group_norm.default, GroupNorm(((2, 0), (3, 0))))
    binary = Elementwise()
    for op in (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor):
        register_channel_handler(op, binary)
    register_channel_handler(aten.cat.default, Concat())
    for op in (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default):
        register_channel_handler(op, Split())
    register_channel_handler(operator.getitem, GetItem())
    from .prune_layout import register_layout_handlers  # reshapes, permutes, matmul over heads

    register_layout_handlers()
    register_channel_handler(aten.softmax.int, Softmax())
    register_channel_handler(aten.mean.dim, SpatialMean())


_register_defaults()
