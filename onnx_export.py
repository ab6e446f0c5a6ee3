"""Any IR stage as an ONNX file, to open in Netron or Model Explorer (`slimgraph export-onnx`).

The stage runs in PyTorch (`Graph.module()`), so torch.onnx's exporter (TorchScript path, opset
17) writes it; slimgraph's quantize / dequantize ops become ONNX QuantizeLinear /
DequantizeLinear (per tensor, or per axis), with a Clip when the op's integer range is
narrower than its dtype's. The integer ops of `realize` become the same arithmetic in
standard ONNX (ir/quant_ops.py states it):

    qconv2d -> ConvInteger(x, w, x_zero_point) + bias        (int32 accumulator, exact)
    qlinear -> MatMulInteger(x, w^T, x_zero_point) + bias
            -> Cast(float32) * scale[o] -> Clip                 (float32 output)
            -> Round (half to even) + out_zero_point -> Clip -> Cast(uint8 / int8)

so ONNX Runtime reproduces the reference kernels value for value.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from slimgraph import ir
from slimgraph.ir.errors import SlimgraphError

OPSET = 17
DTYPE_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


class ExportError(SlimgraphError):
    """A stage that cannot be written as ONNX."""


def _symbolics():
    from torch.onnx import symbolic_helper as helper

    def constant(g, value, dtype):
        return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

    def clip_to(g, quantized, qmin, qmax, dtype):
        if (qmin, qmax) == DTYPE_RANGE[dtype]:
            return quantized
        torch_dtype = getattr(torch, dtype)
        return g.op("Clip", quantized, constant(g, qmin, torch_dtype), constant(g, qmax, torch_dtype))

    @helper.parse_args("v", "f", "i", "i", "i", "s")
    def quantize_per_tensor(g, x, scale, zero_point, qmin, qmax, dtype):
        quantized = g.op("QuantizeLinear", x, constant(g, scale, torch.float32),
                         constant(g, zero_point, getattr(torch, dtype)))
        return clip_to(g, quantized, qmin, qmax, dtype)

    @helper.parse_args("v", "f", "i")
    def dequantize_per_tensor(g, q, scale, zero_point):
        dtype = q.type().dtype() if q.type().dtype() in (torch.int8, torch.uint8) else torch.uint8
        return g.op("DequantizeLinear", q, constant(g, scale, torch.float32), constant(g, zero_point, dtype))

    @helper.parse_args("v", "v", "v", "i", "i", "i", "s")
    def quantize_per_channel(g, x, scales, zero_points, axis, qmin, qmax, dtype):
        onnx_type = {"int8": 3, "uint8": 2}[dtype]  # TensorProto.INT8 / UINT8
        quantized = g.op("QuantizeLinear", x, g.op("Cast", scales, to_i=1), g.op("Cast", zero_points, to_i=onnx_type),
                         axis_i=axis)
        return clip_to(g, quantized, qmin, qmax, dtype)

    @helper.parse_args("v", "v", "v", "i")
    def dequantize_per_channel(g, q, scales, zero_points, axis):
        onnx_type = 2 if q.type().dtype() == torch.uint8 else 3
        return g.op("DequantizeLinear", q, g.op("Cast", scales, to_i=1), g.op("Cast", zero_points, to_i=onnx_type),
                    axis_i=axis)

    def requantize(g, acc, bias, scale, out_zero_point, out_min, out_max, out_dtype, per_channel_shape):
        acc = g.op("Add", acc, g.op("Reshape", bias, constant(g, per_channel_shape, torch.int64)))
        if out_dtype == "int32":
            return acc
        scale = g.op("Reshape", g.op("Cast", scale, to_i=1), constant(g, per_channel_shape, torch.int64))
        scaled = g.op("Mul", g.op("Cast", acc, to_i=1), scale)
        low, high = constant(g, out_min, torch.float32), constant(g, out_max, torch.float32)
        if out_dtype == "float32":
            return g.op("Clip", scaled, low, high)
        shifted = g.op("Add", g.op("Round", scaled), constant(g, float(out_zero_point), torch.float32))
        return g.op("Cast", g.op("Clip", shifted, low, high), to_i={"int8": 3, "uint8": 2}[out_dtype])

    @helper.parse_args("v", "v", "v", "v", "i", "i", "is", "is", "is", "i", "f", "f", "s")
    def qconv2d(g, x, weight, bias, scale, x_zero_point, out_zero_point, stride, padding, dilation, groups,
                out_min, out_max, out_dtype):
        acc = g.op("ConvInteger", x, weight, constant(g, x_zero_point, x.type().dtype()), strides_i=stride,
                   pads_i=list(padding) * 2, dilations_i=dilation, group_i=groups)
        return requantize(g, acc, bias, scale, out_zero_point, out_min, out_max, out_dtype, [1, -1, 1, 1])

    @helper.parse_args("v", "v", "v", "v", "i", "i", "f", "f", "s")
    def qlinear(g, x, weight, bias, scale, x_zero_point, out_zero_point, out_min, out_max, out_dtype):
        acc = g.op("MatMulInteger", x, g.op("Transpose", weight, perm_i=[1, 0]),
                   constant(g, x_zero_point, x.type().dtype()))
        return requantize(g, acc, bias, scale, out_zero_point, out_min, out_max, out_dtype, [-1])

    return {"quantize_per_tensor": quantize_per_tensor, "dequantize_per_tensor": dequantize_per_tensor,
            "quantize_per_channel": quantize_per_channel, "dequantize_per_channel": dequantize_per_channel,
            "qconv2d": qconv2d, "qlinear": qlinear}


def _register_symbolics() -> None:
    for name, function in _symbolics().items():
        torch.onnx.register_custom_op_symbolic(f"slimgraph::{name}", function, OPSET)


def _check_exportable(graph: ir.Graph) -> None:
    exportable = _symbolics()
    for node in graph.fx_graph.nodes:
        if node.op != "call_function":
            continue
        qualified = str(getattr(node.target, "_schema", "") and node.target._schema.name)
        if qualified.startswith("slimgraph::") and qualified.split("::")[1] not in exportable:
            raise ExportError(f"graph '{graph.name}': node %{node.name} ({qualified}) has no ONNX form in "
                              f"slimgraph's exporter yet; export a stage before the pass that made it")


def export_onnx(graph: ir.Graph, output: str | os.PathLike) -> Path:
    """Write `graph` as ONNX at `output` (atomically); input and output names are the graph's."""
    import onnx

    output = Path(output)
    if not output.parent.is_dir():
        raise ExportError(f"cannot write '{output}': folder '{output.parent}' does not exist")
    _check_exportable(graph)
    _register_symbolics()
    inputs = graph.example_inputs()
    input_names = [name for name, _, _ in graph.input_specs()]
    output_names = [name for name, _, _ in graph.output_specs()]
    staged = output.with_name(f".{output.name}.partial")
    try:
        torch.onnx.export(graph.module(), inputs, str(staged), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, do_constant_folding=False)
        model = onnx.load(str(staged))
        model.producer_name, model.doc_string = "slimgraph", f"slimgraph IR stage of '{graph.name}'"
        onnx.checker.check_model(model)
        onnx.save(model, str(staged))
        os.replace(staged, output)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises many error types; name the graph
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"graph '{graph.name}' cannot be exported to ONNX: {first}") from exc
    finally:
        staged.unlink(missing_ok=True)
    return output
