"""ONNX QDQ models from ONNX Runtime's quantize_static import into slimgraph's quantize /
dequantize ops, compile, and match ONNX Runtime within a quantization step."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import slimgraph
from slimgraph.ir.frontend_onnx import from_onnx


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"x": batch}


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(8)]
    torch.onnx.export(SmallNet().eval(), (torch.from_numpy(batches[0]),), str(folder / "float.onnx"),
                      input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    quantize_static(str(folder / "float.onnx"), str(folder / "qdq.onnx"), Reader(batches),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return str(folder / "qdq.onnx")


def test_qdq_import_uses_slimgraph_ops(qdq_model):
    ops = {n.op_type for n in onnx.load(qdq_model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    text = str(from_onnx(qdq_model))
    assert "slimgraph.quantize_per_tensor.default" in text and "slimgraph.dequantize_per_tensor.default" in text


def test_qdq_model_compiles_and_matches_onnx_runtime(qdq_model):
    compiled = slimgraph.compile(qdq_model, check=True)
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(qdq_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    actual = compiled(x)[0]
    step = np.abs(expected).max() / 127  # the output's quantization step is at most this
    assert np.abs(actual - expected).max() <= 2 * step
    assert compiled.report.reference == "ONNX Runtime" and compiled.report.max_abs_diff <= 2 * step


def qdq_file(path, zero_points: np.ndarray) -> str:
    """x -> QuantizeLinear -> DequantizeLinear, one scale per channel (axis 1) of x[1, 4, 5, 5]."""
    from onnx import TensorProto, helper, numpy_helper

    scales = numpy_helper.from_array(np.array([0.02, 0.05, 0.1, 0.3], np.float32), "s")
    zeros = numpy_helper.from_array(zero_points, "z")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, name="quant"),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, name="dequant")],
        "per_axis", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], initializer=[scales, zeros])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    return str(path)


def test_quantize_linear_to_int16_is_a_one_line_error(tmp_path):
    from slimgraph.ir.errors import ModelImportError

    path = qdq_file(tmp_path / "int16.onnx", np.zeros(4, np.int16))
    with pytest.raises(ModelImportError, match="QuantizeLinear to int16 is not supported \\(int8, uint8\\)") as error:
        from_onnx(path)
    assert "quant" in str(error.value) and "\n" not in str(error.value)


def test_per_axis_quantize_linear_compiles_and_matches_onnx_runtime(tmp_path):
    """QuantizeLinear / DequantizeLinear with one scale per channel (axis 1) on an activation:
    both per-channel ops stay in the compiled graph (nothing to fold)."""
    path = qdq_file(tmp_path / "per_axis.onnx", np.array([0, 3, -7, 1], np.int8))
    text = str(from_onnx(str(path)))
    assert "slimgraph.quantize_per_channel.default" in text and "slimgraph.dequantize_per_channel.default" in text
    x = np.random.default_rng(2).standard_normal((1, 4, 5, 5)).astype(np.float32) * 5
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    actual = slimgraph.compile(str(path), check=False)(x)[0]
    step = np.array([0.02, 0.05, 0.1, 0.3], np.float32).reshape(1, 4, 1, 1)
    assert np.all(np.abs(actual - expected) <= step + 1e-6)  # ties may round one step apart
    assert np.mean(actual == expected) > 0.95


def test_qdq_model_realizes_into_integer_ops_and_matches_onnx_runtime(qdq_model):
    """The int8 weights stay int8 through import and fold-constants; realize makes both layers
    integer (ORT's ReLU is folded into the quantize range), and the library still matches ORT."""
    graph = from_onnx(qdq_model)
    assert "slimgraph.dequantize_per_channel.default" in str(graph)  # not folded into a float weight
    compiled = slimgraph.compile(qdq_model, pipeline="fold-constants,realize", check=True)
    x = np.random.default_rng(6).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(qdq_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    actual = compiled(x)[0]
    step = 0.0045011285692453384  # the output's scale (y_QuantizeLinear)
    assert np.abs(actual - expected).max() <= 2 * step + 1e-6
    from slimgraph.rewrites import PassManager, parse_pipeline

    realized = PassManager(parse_pipeline("fold-constants,realize")).run(graph).graph
    assert str(realized).count("slimgraph.qconv2d.default") == 1 and str(realized).count("slimgraph.qlinear.default") == 1
