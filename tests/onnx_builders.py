"""Building small ONNX models by hand and checking their import against ONNX Runtime: shared by the
ONNX frontend's tests (test_onnx_frontend.py, test_onnx_ops.py)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from slimgraph.ir.frontend_onnx import from_onnx
from slimgraph.ir.ops import is_canonical
from slimgraph.ir.shapes import op_name

F, I64 = TensorProto.FLOAT, TensorProto.INT64
TORCH_TO_ONNX = {torch.float32: F, torch.int64: I64, torch.bool: TensorProto.BOOL}
INT64_MAX = 2**63 - 1

def op_histogram(graph) -> Counter:
    return Counter(op_name(n) for n in graph.nodes if n.op == "call_function")


def run_ort(path_or_model, inputs) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about deprecated resize modes
    source = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})


def import_and_compare(path, inputs, rtol=1e-5, atol=1e-5, **kwargs):
    graph = from_onnx(path, **kwargs)
    expected, actual = run_ort(path, inputs), graph.run(*inputs)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, torch.from_numpy(want), rtol=rtol, atol=atol)
    assert all(is_canonical(n.target) for n in graph.nodes if n.op == "call_function"), op_histogram(graph)
    return graph


GEN = torch.Generator().manual_seed(0)


def randn(*shape) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def rand(*shape) -> np.ndarray:
    return randn(*shape).numpy()


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=f"{op}_{outputs[0]}", **attrs)


def make_model(graph, opset: int = 17):
    """A model whose graph outputs carry shapes (the checker wants them): onnx's shape inference fills them."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def build(nodes, inputs: dict, outputs: dict | None = None, inits: dict | None = None, opset: int = 17):
    """(model, example inputs) from nodes, example input tensors by name and output element types by name
    (default: the last node's first output, float)."""
    outputs = outputs or {nodes[-1].output[0]: F}
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TORCH_TO_ONNX[t.dtype], list(t.shape)) for n, t in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()])
    return make_model(graph, opset), list(inputs.values())


def one_op(op, x, opset=17, **attrs):
    return build([node(op, ["x"], ["y"], **attrs)], {"x": x}, opset=opset)


def resize(mode, spec, shape=(1, 2, 5, 6), **attrs):
    """A Resize of x to spec = ("scales", [...]) or ("sizes", [...])."""
    key, values = spec
    ins = ["x", "", "scales"] if key == "scales" else ["x", "", "", "sizes"]
    inits = {key: np.array(values, np.float32 if key == "scales" else np.int64)}
    return build([node("Resize", ins, ["y"], mode=mode, **attrs)], {"x": randn(*shape)}, inits=inits)


def ints(*values) -> np.ndarray:
    return np.array(values, np.int64)


def scalar(value) -> np.ndarray:
    return np.array(value, np.float32)

