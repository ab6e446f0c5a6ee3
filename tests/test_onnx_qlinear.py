"""ONNX models in the integer-operator format (QLinearConv, QLinearMatMul, ConvInteger,
MatMulInteger), which TVM's own importer rejects, import into slimgraph's integer ops, compile,
and match ONNX Runtime within one quantization step."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import slimgraph
from slimgraph.ir.frontend_onnx import ModelImportError, from_onnx
from slimgraph.tests.test_cli import assert_one_line_error, run_cli

RNG = np.random.default_rng(0)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def save(path, nodes, initializers, output_type=TensorProto.FLOAT, output_shape=(1, 10)):
    graph = helper.make_graph(nodes, "qlinear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", output_type, list(output_shape))], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def qlinear_model(path, weight_zero=0, weight=None):
    w_conv = weight if weight is not None else RNG.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8)
    initializers = [
        const("x_s", np.float32(0.02)), const("x_z", np.uint8(128)),
        const("w", w_conv), const("w_s", (RNG.random(8) * 0.01 + 0.002).astype(np.float32)),
        const("w_z", np.full(8, weight_zero, np.int8)), const("c_s", np.float32(0.05)), const("c_z", np.uint8(3)),
        const("b", RNG.integers(-500, 500, 8).astype(np.int32)), const("shape", np.array([1, 512], np.int64)),
        const("m", RNG.integers(-127, 128, (512, 10)).astype(np.int8)), const("m_s", np.float32(0.004)),
        const("m_z", np.int8(0)), const("y_s", np.float32(0.1)), const("y_z", np.uint8(120)),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "x_s", "x_z", "w", "w_s", "w_z", "c_s", "c_z", "b"], ["c"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["flat"]),
             helper.make_node("QLinearMatMul", ["flat", "c_s", "c_z", "m", "m_s", "m_z", "y_s", "y_z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"])]
    return save(path, nodes, initializers)


def integer_model(path):
    initializers = [const("x_s", np.float32(0.02)), const("x_z", np.uint8(128)),
                    const("w", RNG.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8)),
                    const("shape", np.array([1, 8 * 6 * 6], np.int64)),
                    const("m", RNG.integers(-127, 128, (288, 10)).astype(np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             helper.make_node("ConvInteger", ["xq", "w", "x_z"], ["acc"]),
             helper.make_node("Clip", ["acc"], ["acc_c"]),  # keep int32 values as they are
             helper.make_node("Cast", ["acc_c"], ["acc_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["acc_f", "x_s"], ["scaled"]),
             helper.make_node("QuantizeLinear", ["scaled", "x_s", "x_z"], ["q2"]),
             helper.make_node("Reshape", ["q2", "shape"], ["flat"]),
             helper.make_node("MatMulInteger", ["flat", "m", "x_z"], ["y"])]
    return save(path, nodes, initializers, TensorProto.INT32)


def ort_run(path, x):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_qlinear_conv_and_matmul_import_as_integer_ops_and_match_onnx_runtime(tmp_path):
    path = qlinear_model(tmp_path / "qlinear.onnx")
    text = str(from_onnx(path))
    assert "slimgraph.qconv2d.default(%quantize_per_tensor, " in text and ', "uint8") : u8[1,8,8,8]' in text
    assert "slimgraph.qlinear.default(" in text and "aten.conv2d" not in text
    compiled = slimgraph.compile(path, check=True)
    assert compiled.report.reference == "ONNX Runtime"
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
        difference = np.abs(compiled(x)[0] - ort_run(path, x))
        assert difference.max() <= 0.1 + 1e-6  # one step of the output's scale (0.1)
        assert np.mean(difference > 1e-6) < 0.2


def test_conv_integer_and_matmul_integer_import_and_match_onnx_runtime(tmp_path):
    path = integer_model(tmp_path / "integer.onnx")
    assert "slimgraph.qconv2d.default" in str(from_onnx(path))
    compiled = slimgraph.compile(path, check=False)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected, actual = ort_run(path, x), compiled(x)[0]
    assert actual.dtype == np.int32
    # the int32 accumulators are exact; the one requantization in between may round a tie differently
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    q2_step_effect = np.abs(weights["m"].astype(np.int64)).sum(axis=0).max()
    assert np.abs(actual.astype(np.int64) - expected).max() <= q2_step_effect


def test_a_weight_zero_point_other_than_zero_is_a_one_line_error(tmp_path, capsys):
    path = qlinear_model(tmp_path / "zw.onnx", weight_zero=1)
    with pytest.raises(ModelImportError, match=r"node '.*' \(QLinearConv\): weight zero point must be 0"):
        from_onnx(path)
    code, _, err = run_cli(capsys, "compile", path, "-o", str(tmp_path / "out"))
    assert_one_line_error(code, err, "QLinearConv", "weight zero point must be 0")
    assert not list(tmp_path.glob("out*"))
