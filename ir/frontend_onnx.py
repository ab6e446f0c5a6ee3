"""ONNX frontend: load an ONNX model and import it into the canonical aten op set.

The import goes: load and check the file, refuse unsupported ops (all of them listed at once),
fix the input shapes, simplify with onnxsim (constant folding and shape inference only: its fusion
passes would make `com.microsoft` ops), then convert node by node with the table
`onnx_converters.CONVERTERS`. A node whose inputs are all constants (initializers, `Constant`s,
`Shape` of a static tensor, ...) is evaluated with torch at once; its result becomes a parameter
named after the ONNX output when a real op uses it. Initializers keep their ONNX names.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.fx as fx

from .builder import GraphBuilder
from .errors import ModelImportError
from .graph import Graph
from .onnx_context import NodeContext, first_line as _first_line, tensor_from_proto, torch_dtype
from .onnx_converters import CONVERTERS

DEFAULT_DOMAINS = ("", "ai.onnx")


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def unsupported_onnx_ops(model: onnx.ModelProto) -> Counter:
    return Counter(_op_key(n) for n in model.graph.node if _op_key(n) not in CONVERTERS)


def _load(path_or_model, name: str | None) -> tuple[onnx.ModelProto, str, str]:
    """The model, the label used in messages (the file, or the model's name) and the graph name."""
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        label = name or model.graph.name or "<onnx model>"
        graph_name = name or model.graph.name or "model"
    else:
        path = Path(os.fspath(path_or_model))
        label, graph_name = str(path), name or path.stem
        if not path.exists():
            raise ModelImportError(f"{label}: no such file")
        if not path.is_file():
            raise ModelImportError(f"{label}: not a file")
        if path.stat().st_size == 0:
            raise ModelImportError(f"{label}: empty file, not an ONNX model")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ...
            raise ModelImportError(f"{label}: not a readable ONNX model ({_first_line(exc)})") from exc
    try:
        if model.ByteSize() > 2**31 - 1 and not isinstance(path_or_model, onnx.ModelProto):
            onnx.checker.check_model(str(path_or_model))
        else:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
        raise ModelImportError(f"{label}: invalid ONNX model ({_first_line(exc)})") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelImportError(f"{label}: invalid ONNX model (the graph has no nodes and no outputs)")
    return model, label, graph_name


def _check_supported(model: onnx.ModelProto, label: str) -> None:
    missing = unsupported_onnx_ops(model)
    if missing:
        listing = ", ".join(f"{op} (x{count})" for op, count in sorted(missing.items()))
        raise ModelImportError(f"{label}: unsupported ONNX ops: {listing}; supported: {', '.join(sorted(CONVERTERS))}")


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _fix_input_shapes(model: onnx.ModelProto, label: str, input_shapes: dict[str, list[int]] | None) -> onnx.ModelProto:
    """The model with every input of a static shape (from the file, or `input_shapes` on a copy)."""
    overrides = dict(input_shapes or {})
    inputs = _real_inputs(model)
    unknown = sorted(set(overrides) - {i.name for i in inputs})
    if unknown:
        names, known = ", ".join(unknown), ", ".join(i.name for i in inputs)
        raise ModelImportError(f"{label}: input_shapes names no input of the model: {names} (inputs: {known})")
    fixed = model
    if overrides:  # edit a copy: the caller's ModelProto stays as it was
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
    for value in _real_inputs(fixed):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelImportError(f"{label}: input '{value.name}' is not a tensor")
        if value.name in overrides:
            shape = [int(d) for d in overrides[value.name]]
            if any(d < 0 for d in shape):
                raise ModelImportError(f"{label}: input_shapes['{value.name}'] = {shape} has a negative dimension")
            tensor_type.shape.ClearField("dim")
            for d in shape:
                tensor_type.shape.dim.add().dim_value = d
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
        if not tensor_type.HasField("shape") or any(isinstance(d, str) for d in dims):
            shown = "unknown rank" if not tensor_type.HasField("shape") else "[" + ", ".join(str(d) for d in dims) + "]"
            hint = f"input_shapes={{'{value.name}': [...]}}"
            raise ModelImportError(f"{label}: input '{value.name}' has a dynamic shape ({shown}); pass {hint} to fix it")
    return fixed


def _simplify(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """onnxsim's constant folding and shape inference; the unsimplified model when it fails."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model, perform_optimization=False)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises many kinds
        warnings.warn(f"{label}: onnxsim failed ({_first_line(exc)}); importing the unsimplified model", stacklevel=3)
        return model
    if not ok:
        warnings.warn(f"{label}: onnxsim's check failed; importing the unsimplified model", stacklevel=3)
        return model
    same_io = [i.name for i in _real_inputs(simplified)] == [i.name for i in _real_inputs(model)] and \
        [o.name for o in simplified.graph.output] == [o.name for o in model.graph.output]
    if not same_io or unsupported_onnx_ops(simplified):
        warnings.warn(f"{label}: onnxsim changed the model's interface or ops; importing the unsimplified model",
                      stacklevel=3)
        return model
    return simplified


def _safe_param_names(names: list[str]) -> dict[str, str]:
    """Parameter names `Graph.module()` can nest: no empty dotted part, no name a module prefix of another."""
    known = set(names)
    result: dict[str, str] = {}
    for n in names:
        parts = n.split(".")
        if any(not p for p in parts) or any(".".join(parts[:i]) in known for i in range(1, len(parts))):
            safe = n.replace(".", "_")
            while safe in known:
                safe += "_"
            known.add(safe)
            result[n] = safe
    return result


def from_onnx(path_or_model, name: str | None = None, input_shapes: dict[str, list[int]] | None = None) -> Graph:
    """Import an ONNX file (or ModelProto) into an `ir.Graph` in the canonical aten op set.

    `input_shapes` fixes the shape of inputs with dynamic dimensions, by input name.
    """
    model, label, graph_name = _load(path_or_model, name)
    _check_supported(model, label)
    model = _fix_input_shapes(model, label, input_shapes)
    if not _has_quantized_weights(model):  # onnxsim would fold their DequantizeLinear into float weights
        model = _simplify(model, label)
    return _Importer(model, label, graph_name).run()


def _has_quantized_weights(model: onnx.ModelProto) -> bool:
    """Does a DequantizeLinear read an 8-bit initializer (a QDQ model's quantized weight)?"""
    eight_bit = {i.name for i in model.graph.initializer
                 if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    return any(n.op_type == "DequantizeLinear" and n.input and n.input[0] in eight_bit for n in model.graph.node)


class _Importer:
    def __init__(self, model: onnx.ModelProto, label: str, name: str):
        self.model, self.label = model, label
        self.builder = GraphBuilder(name)
        self.values: dict[str, fx.Node] = {}       # ONNX value name -> node
        self.consts: dict[str, torch.Tensor] = {}  # ONNX value name -> constant tensor
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)
        graph = model.graph
        self.used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        all_names = [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output if o]
        self.param_names = _safe_param_names(all_names)
        self.onnx_names = set(all_names) | {i.name for i in graph.input} | set(self.param_names.values())

    def run(self) -> Graph:
        graph = self.model.graph
        for init in graph.initializer:
            self.consts[init.name] = tensor_from_proto(init, f"{self.label}: initializer '{init.name}'")
        for value in _real_inputs(self.model):
            tensor_type = value.type.tensor_type
            dtype = torch_dtype(tensor_type.elem_type, f"{self.label}: input '{value.name}'")
            shape = [d.dim_value for d in tensor_type.shape.dim]
            self.values[value.name] = self.builder.input(value.name, shape, dtype)
        for node in graph.node:
            self.convert(node)
        outputs = []
        for out in graph.output:
            if out.name not in self.values and out.name not in self.consts:
                raise ModelImportError(f"{self.label}: graph output '{out.name}' is produced by no node")
            outputs.append(self.node_for(out.name))
        self.builder.output(*outputs)
        result = self.builder.build()
        result.fx_graph.eliminate_dead_code()
        result.remove_unused_params()
        result.propagate_shapes()
        return result

    def node_for(self, name: str) -> fx.Node:
        """The node of an ONNX value; constants become parameters named after the value."""
        if name in self.values:
            return self.values[name]
        return self.builder.param(self.param_names.get(name, name), self.consts[name])

    def convert(self, node: onnx.NodeProto) -> None:
        source = node.name or next((o for o in node.output if o), node.op_type)
        for name in node.input:
            if name and name not in self.values and name not in self.consts:
                raise ModelImportError(f"{self.label}: node '{source}' ({node.op_type}) reads undefined value '{name}'")
        eager = all(not name or name in self.consts for name in node.input)
        ctx = NodeContext(self, node, source, eager)
        try:
            result = CONVERTERS[_op_key(node)](ctx)
        except ModelImportError as exc:
            message = str(exc)
            raise ModelImportError(message if message.startswith(self.label) else f"{self.label}: {message}") from exc
        except Exception as exc:  # noqa: BLE001 - torch errors while folding constants
            raise ModelImportError(f"{self.label}: node '{source}' ({node.op_type}): {_first_line(exc)}") from exc
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for index, out in enumerate(node.output):
            if not out:
                continue
            if index >= len(results):
                if out in self.used:
                    where = f"node '{source}' ({node.op_type})"
                    raise ModelImportError(f"{self.label}: {where}: output {index} ('{out}') is not supported")
                continue
            self.store(out, results[index])

    def store(self, name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):  # a folded constant: its own storage, so saved params share none
            self.consts[name] = value.clone(memory_format=torch.contiguous_format)
        else:
            self.values[name] = value
