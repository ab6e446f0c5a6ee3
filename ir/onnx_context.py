"""What an ONNX converter sees of its node: attributes, inputs (nodes or constants), and `call`.

A converter (see `onnx_converters`) is written once for both modes of `NodeContext`:
- graph mode: `ctx.input(i)` gives fx nodes (constants become parameters) and `ctx.call` adds
  a node through `GraphBuilder.call`;
- eager mode (every input of the node is a constant): `ctx.input(i)` gives tensors and
  `ctx.call` evaluates the op at once, so the node folds into a constant.
Inputs ONNX requires to be constants (shapes, axes, pads, scales) are read with `ctx.ints`,
`ctx.floats` or `ctx.const`, which name the node when the value is not a constant.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
import torch.fx as fx
from onnx import numpy_helper

from .errors import ModelImportError

ONNX_TO_TORCH = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def torch_dtype(elem_type: int, where: str) -> torch.dtype:
    if elem_type not in ONNX_TO_TORCH:
        names = dict(zip(onnx.TensorProto.DataType.values(), onnx.TensorProto.DataType.keys()))
        raise ModelImportError(f"{where}: unsupported tensor type {names.get(elem_type, elem_type)}")
    return ONNX_TO_TORCH[elem_type]


def tensor_from_proto(proto: onnx.TensorProto, where: str) -> torch.Tensor:
    dtype = torch_dtype(proto.data_type, where)
    if dtype == torch.bfloat16:  # numpy has no bfloat16: widen the raw 16-bit patterns to float32
        bits = np.asarray(numpy_helper.to_array(proto)).view(np.uint16).astype(np.uint32) << 16
        return torch.from_numpy(bits.view(np.float32).copy()).to(torch.bfloat16)
    return torch.from_numpy(np.array(numpy_helper.to_array(proto))).to(dtype)  # np.array: a writable copy


def f32_scalar(value: float) -> float:
    """A float32 value as the shortest Python float that rounds to it (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def python_scalar(tensor: torch.Tensor):
    """The single value of a tensor as a Python number, floats printed short for float32."""
    value = tensor.reshape(()).item()
    if tensor.dtype == torch.bool:
        return bool(value)
    if tensor.dtype.is_floating_point:
        return f32_scalar(value) if tensor.dtype != torch.float64 else float(value)
    return int(value)


def _equals_default(value: Any, default: Any) -> bool:
    if isinstance(value, fx.Node) or isinstance(value, torch.Tensor):
        return False
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        return len(value) == len(default) and all(_equals_default(v, d) for v, d in zip(value, default))
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default) and value == default
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return value == default
    return (value is None and default is None) or (isinstance(value, str) and value == default)


def trim_defaults(op, args: tuple) -> tuple:
    """Drop trailing positional arguments equal to the schema's defaults, as torch.export prints them."""
    if not isinstance(op, torch._ops.OpOverload):
        return args
    schema = [a for a in op._schema.arguments if not a.kwarg_only]
    args = list(args)
    while args and len(args) <= len(schema):
        arg = schema[len(args) - 1]
        if not arg.has_default_value() or not _equals_default(args[-1], arg.default_value):
            break
        args.pop()
    return tuple(args)


def attribute_value(attr: onnx.AttributeProto, where: str) -> Any:
    if attr.type == onnx.AttributeProto.TENSOR:
        return tensor_from_proto(attr.t, where)
    if attr.type == onnx.AttributeProto.FLOAT:
        return f32_scalar(attr.f)
    if attr.type == onnx.AttributeProto.FLOATS:
        return [f32_scalar(v) for v in attr.floats]
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def converter_table():
    """A converter table and the decorator that registers a function under ONNX op types."""
    table: dict = {}

    def converter(*op_types: str):
        def register(fn):
            for op_type in op_types:
                table[op_type] = fn
            return fn
        return register
    return table, converter


class NodeContext:
    def __init__(self, importer, node: onnx.NodeProto, source: str, eager: bool):
        self.importer = importer
        self.node = node
        self.op_type = node.op_type
        self.source = source
        self.eager = eager
        self.opset = importer.opset
        where = f"node '{source}' ({node.op_type})"
        self.attrs = {a.name: attribute_value(a, where) for a in node.attribute}

    # ----- errors and attributes -------------------------------------------------------
    def error(self, message: str) -> ModelImportError:
        return ModelImportError(f"node '{self.source}' ({self.op_type}): {message}")

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    # ----- inputs ----------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def is_const(self, i: int) -> bool:
        return self.has(i) and self.node.input[i] in self.importer.consts

    def const(self, i: int, what: str = "") -> torch.Tensor | None:
        """The constant value of input i (None when absent); an error when it is computed at run time."""
        if not self.has(i):
            return None
        name = self.node.input[i]
        if name not in self.importer.consts:
            label = f"input {i} ('{name}'{', the ' + what if what else ''})"
            raise self.error(f"{label} must be a constant (computed from initializers and static shapes only)")
        return self.importer.consts[name]

    def ints(self, i: int, what: str = "") -> list[int] | None:
        tensor = self.const(i, what)
        return None if tensor is None else [int(v) for v in tensor.flatten().tolist()]

    def floats(self, i: int, what: str = "") -> list[float] | None:
        tensor = self.const(i, what)
        return None if tensor is None else [python_scalar(v) for v in tensor.flatten()]

    def input(self, i: int):
        """Input i as an fx node (graph mode) or a tensor (eager mode); None when absent."""
        if not self.has(i):
            return None
        name = self.node.input[i]
        return self.importer.consts[name] if self.eager else self.importer.node_for(name)

    def inputs(self) -> list:
        return [self.input(i) for i in range(self.num_inputs) if self.has(i)]

    def value(self, i: int) -> torch.Tensor:
        """A tensor with the shape and dtype of input i (the constant, or the node's meta value)."""
        name = self.node.input[i]
        return self.importer.consts[name] if name in self.importer.consts else self.importer.values[name].meta["val"]

    def shape(self, i: int) -> list[int]:
        return list(self.value(i).shape)

    def dtype(self, i: int) -> torch.dtype:
        return self.value(i).dtype

    def rank(self, i: int) -> int:
        return self.value(i).dim()

    def scalar_const(self, i: int, other: int | None = None):
        """Input i as a Python number when it is a one-element constant that broadcasting cannot widen."""
        if not self.is_const(i):
            return None
        tensor = self.importer.consts[self.node.input[i]]
        if tensor.numel() != 1 or (other is not None and tensor.dim() > self.rank(other)):
            return None
        return python_scalar(tensor)

    # ----- outputs ---------------------------------------------------------------------
    def call(self, op, *args, **kwargs):
        if self.eager:
            return op(*args, **kwargs)
        return self.importer.builder.call(op, *trim_defaults(op, args), source=self.source, **kwargs)

    def param(self, suffix: str, tensor: torch.Tensor):
        """A constant the converter made (index maps, weights): a parameter named after the node's output."""
        if self.eager:
            return tensor
        base = next((o for o in self.node.output if o), self.source)
        name = f"{base}_{suffix}".replace(".", "_")
        while name in self.importer.builder.params or name in self.importer.onnx_names:
            name += "_"
        return self.importer.builder.param(name, tensor)
