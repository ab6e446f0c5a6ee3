"""ONNX layout and constant converters: Reshape, Flatten, Transpose, Concat, Split, Slice, Squeeze,
Unsqueeze, Expand, Gather, Pad, and the ops that make constants (Constant, Shape, Size, Range, ...).

Collected into `onnx_converters.CONVERTERS`. Shape-like inputs (Reshape's shape, Slice's starts,
Pad's pads, axes) must be constants and come out as Python lists in the aten call.
"""
from __future__ import annotations

import math
import operator

import torch

from .onnx_context import NodeContext, converter_table, python_scalar, tensor_from_proto
from .onnx_spatial import torch_pad_list

aten = torch.ops.aten
CONVERTERS, converter = converter_table()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def reshape(ctx: NodeContext, value, shape: list[int]):
    return ctx.call(aten.reshape.default, value, [int(d) for d in shape])


# ----- layout ---------------------------------------------------------------------------
@converter("Reshape")
def _reshape_node(ctx: NodeContext):
    shape, in_shape = ctx.ints(1, "shape"), ctx.shape(0)
    out = [in_shape[i] if d == 0 and not ctx.attr("allowzero", 0) else d for i, d in enumerate(shape)]
    total, known = math.prod(in_shape), math.prod(d for d in out if d != -1)
    if out.count(-1) > 1 or (-1 in out and (known == 0 or total % known)) or (-1 not in out and known != total):
        raise ctx.error(f"cannot reshape {in_shape} to {shape}")
    out = [total // known if d == -1 else d for d in out]
    return ctx.input(0) if out == in_shape else reshape(ctx, ctx.input(0), out)


@converter("Flatten")
def _flatten(ctx: NodeContext):
    shape = ctx.shape(0)
    axis = _axis(ctx.attr("axis", 1), len(shape))
    if axis == 1 and len(shape) >= 2:
        return ctx.call(aten.flatten.using_ints, ctx.input(0), 1)
    return reshape(ctx, ctx.input(0), [math.prod(shape[:axis]), math.prod(shape[axis:])])


@converter("Transpose")
def _transpose(ctx: NodeContext):
    perm = ctx.attr("perm") or list(reversed(range(ctx.rank(0))))
    return ctx.input(0) if list(perm) == sorted(perm) else ctx.call(aten.permute.default, ctx.input(0), list(perm))


@converter("Concat")
def _concat(ctx: NodeContext):
    indices = [i for i in range(ctx.num_inputs) if ctx.has(i)]
    axis = _axis(ctx.attr("axis"), ctx.rank(indices[0]))
    kept = [i for i in indices if ctx.shape(i)[axis] != 0] or indices  # ONNX allows empty pieces
    if len(kept) == 1:
        return ctx.input(kept[0])
    return ctx.call(aten.cat.default, [ctx.input(i) for i in kept], ctx.attr("axis"))


@converter("Split")
def _split(ctx: NodeContext):
    shape = ctx.shape(0)
    axis = _axis(ctx.attr("axis", 0), len(shape))
    sizes = ctx.ints(1, "split") if ctx.opset >= 13 else ctx.attr("split")
    if not sizes:
        parts = ctx.attr("num_outputs", len(ctx.node.output))
        chunk = -(-shape[axis] // parts)
        sizes = [chunk] * (parts - 1) + [shape[axis] - chunk * (parts - 1)]
    pieces = ctx.call(aten.split_with_sizes.default, ctx.input(0), list(sizes), axis)
    return [ctx.call(operator.getitem, pieces, i) for i in range(len(sizes))]


@converter("Slice")
def _slice(ctx: NodeContext):
    if ctx.opset < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    else:
        starts, ends, axes, steps = (ctx.ints(i, what) for i, what in enumerate(("starts", "ends", "axes", "steps"), 1))
    shape, x = ctx.shape(0), ctx.input(0)
    axes = axes if axes is not None else list(range(len(starts)))
    for axis, start, end, step in zip(axes, starts, ends, steps or [1] * len(starts)):
        axis, dim = _axis(axis, len(shape)), shape[_axis(axis, len(shape))]
        if end in (2**31 - 1, 2**63 - 1) and step < 0:  # INT_MAX means "to the end", either way (onnxruntime)
            end = -dim - 1
        start, end = (v + dim if v < 0 else v for v in (start, end))
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            if (start, end, step) != (0, dim, 1):
                x = ctx.call(aten.slice.Tensor, x, axis, start, end, step)
        elif step < 0:  # torch slices have no negative steps: gather the indices
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            indices = torch.tensor(list(range(start, end, step)), dtype=torch.int64)
            x = ctx.call(aten.index_select.default, x, axis, ctx.param(f"indices_{axis}", indices))
        else:
            raise ctx.error("a slice step of 0 is invalid")
    return x


@converter("Squeeze")
def _squeeze(ctx: NodeContext):
    shape = ctx.shape(0)
    axes = ctx.attr("axes") if ctx.opset < 13 else ctx.ints(1, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted(_axis(a, len(shape)) for a in axes)
    if any(shape[a] != 1 for a in axes):
        raise ctx.error(f"cannot squeeze axes {axes} of shape {shape}")
    if not axes:
        return ctx.input(0)
    if len(axes) == 1:
        return ctx.call(aten.squeeze.dim, ctx.input(0), axes[0])
    return ctx.call(aten.squeeze.dims, ctx.input(0), axes)


@converter("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    axes = ctx.attr("axes") if ctx.opset < 13 else ctx.ints(1, "axes")
    rank, x = ctx.rank(0) + len(axes), ctx.input(0)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = ctx.call(aten.unsqueeze.default, x, axis)
    return x


@converter("Expand")
def _expand(ctx: NodeContext):
    shape = ctx.shape(0)
    out = list(torch.broadcast_shapes(tuple(shape), tuple(ctx.ints(1, "shape"))))
    return ctx.input(0) if out == shape else ctx.call(aten.expand.default, ctx.input(0), out)


@converter("Gather")
def _gather(ctx: NodeContext):
    data_shape = ctx.shape(0)
    axis = _axis(ctx.attr("axis", 0), len(data_shape))
    out_shape = data_shape[:axis] + ctx.shape(1) + data_shape[axis + 1:]
    if ctx.is_const(1):
        indices = ctx.const(1).to(torch.int64)
        indices = torch.where(indices < 0, indices + data_shape[axis], indices)
        if indices.dim() == 0:
            return ctx.call(aten.select.int, ctx.input(0), axis, int(indices))
        flat = ctx.call(aten.index_select.default, ctx.input(0), axis, ctx.param("indices", indices.flatten()))
        return flat if indices.dim() == 1 else reshape(ctx, flat, out_shape)
    if ctx.is_const(0) and len(data_shape) == 2 and axis == 0 and ctx.dtype(1) in (torch.int64, torch.int32):
        return ctx.call(aten.embedding.default, ctx.input(0), ctx.input(1))  # nn.Embedding
    indices = ctx.input(1) if ctx.rank(1) == 1 else reshape(ctx, ctx.input(1), [math.prod(ctx.shape(1))])
    flat = ctx.call(aten.index_select.default, ctx.input(0), axis, indices)
    return flat if ctx.rank(1) == 1 else reshape(ctx, flat, out_shape)


@converter("Pad")
def _pad(ctx: NodeContext):
    rank, mode = ctx.rank(0), ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = ctx.attr("pads"), ctx.attr("value", 0.0)
    else:
        pads = ctx.ints(1, "pads")
        value = python_scalar(ctx.const(2, "constant value")) if ctx.has(2) else 0
    if ctx.has(3):  # opset 18: pads only for the listed axes
        axes, full = [_axis(a, rank) for a in ctx.ints(3, "axes")], [0] * (2 * rank)
        for j, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[j], pads[j + len(axes)]
        pads = full
    pad = torch_pad_list(list(zip(pads[:rank], pads[rank:])))
    if not pad:
        return ctx.input(0)
    if mode == "constant":
        return ctx.call(aten.constant_pad_nd.default, ctx.input(0), pad, value)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    spatial = max(len(pad) // 2, min(rank - 2, 3))  # torch pads the last 1-3 dims after 1 or 2 leading ones
    if torch_mode is None or spatial > 3:
        raise ctx.error(f"mode '{mode}' padding of a {rank}-D tensor ({pads}) is not supported")
    shape, x = ctx.shape(0), ctx.input(0)
    lead = shape[:rank - spatial]
    if len(lead) not in (1, 2):  # fold the leading (unpadded) dims into one
        x = reshape(ctx, x, [math.prod(lead), *shape[rank - spatial:]])
    out = ctx.call(aten.pad.default, x, pad + [0] * (2 * spatial - len(pad)), torch_mode)
    if len(lead) not in (1, 2):
        out = reshape(ctx, out, [d + b + e for d, b, e in zip(shape, pads[:rank], pads[rank:])])
    return out


# ----- constants and shapes (always folded) ---------------------------------------------
@converter("Constant")
def _constant(ctx: NodeContext):
    attrs, where = ctx.attrs, f"node '{ctx.source}'"
    if "value" in attrs:
        return attrs["value"]
    if "sparse_value" in attrs:
        sparse = next(a.sparse_tensor for a in ctx.node.attribute if a.name == "sparse_value")
        values, indices = tensor_from_proto(sparse.values, where), tensor_from_proto(sparse.indices, where)
        dense = torch.zeros(list(sparse.dims), dtype=values.dtype)
        if indices.dim() == 1:
            dense.view(-1)[indices] = values
        else:
            dense[tuple(indices.t())] = values
        return dense
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise ctx.error(f"unsupported constant form ({', '.join(attrs) or 'no value'})")


@converter("Shape")
def _shape(ctx: NodeContext):
    shape = ctx.shape(0)[slice(ctx.attr("start", 0), ctx.attr("end"))]
    return torch.tensor(shape, dtype=torch.int64)


@converter("Size")
def _size(ctx: NodeContext):
    return torch.tensor(math.prod(ctx.shape(0)), dtype=torch.int64)


def _fold_only(fn):
    def convert(ctx: NodeContext):
        if not ctx.eager:
            raise ctx.error("only supported when all its inputs are constants (it has no canonical aten op)")
        return fn(ctx, *ctx.inputs())
    return convert


CONVERTERS.update({
    "ConstantOfShape": _fold_only(lambda ctx, shape: torch.full(
        shape.tolist(), ctx.attr("value", torch.zeros(1)).item(), dtype=ctx.attr("value", torch.zeros(1)).dtype)),
    "Range": _fold_only(lambda ctx, start, limit, delta: torch.arange(start.item(), limit.item(), delta.item(),
                                                                      dtype=start.dtype)),
    "Not": _fold_only(lambda ctx, x: torch.logical_not(x)),
    "And": _fold_only(lambda ctx, x, y: torch.logical_and(x, y)),
    "Or": _fold_only(lambda ctx, x, y: torch.logical_or(x, y)),
    "Floor": _fold_only(lambda ctx, x: torch.floor(x)),
    "Ceil": _fold_only(lambda ctx, x: torch.ceil(x)),
    "Mod": _fold_only(lambda ctx, x, y: torch.fmod(x, y) if ctx.attr("fmod", 0) else torch.remainder(x, y)),
})
