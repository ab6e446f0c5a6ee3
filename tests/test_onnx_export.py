"""export-onnx: every stage of a pipeline written as ONNX passes onnx.checker and gives the stage's own
outputs in ONNX Runtime; a quantized stage keeps its Q/DQ nodes; a realized stage becomes ConvInteger /
MatMulInteger with the requantization spelled out."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from slimgraph.calibration_io import calibration_scope
from slimgraph.onnx_export import export_onnx
from slimgraph.rewrites import PassManager, parse_pipeline
from slimgraph.rewrites.instruments import output_sqnr_db
from slimgraph.rewrites.pipeline import Pipeline

from .conftest import imported_model
from .test_cli import assert_one_line_error, run_cli


def stages(name: str, pipeline: str):
    module, inputs, graph = imported_model(name)
    passes = parse_pipeline(pipeline)
    yield 0, graph
    with calibration_scope(None, graph.input_specs(), inputs):
        for count in range(1, len(passes) + 1):
            yield count, PassManager(Pipeline(passes.passes[:count])).run(graph).graph


def run_onnx(path, graph):
    inputs = graph.example_inputs(seed=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed), [t.numpy() for t in graph.run(*inputs)]


@pytest.mark.parametrize("name", ["mobilenet_v2", "bert_encoder"])
def test_every_stage_of_the_default_pipeline_matches_in_onnx_runtime(name, tmp_path):
    for stage, graph in stages(name, "default"):
        path = export_onnx(graph, tmp_path / f"{name}-{stage}.onnx")
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == [n for n, _, _ in graph.input_specs()]
        got, expected = run_onnx(path, graph)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4, err_msg=f"{name} stage {stage}")


def test_a_quantized_stage_keeps_its_quantize_nodes(tmp_path):
    *_, (_, graph) = stages("digit_cnn", "fold-bn,fold-constants,quantize")
    path = export_onnx(graph, tmp_path / "q.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8  # activations and weights
    got, expected = run_onnx(path, graph)
    assert output_sqnr_db([torch.from_numpy(e) for e in expected], [torch.from_numpy(g) for g in got]) > 40


@pytest.mark.parametrize("name", ["digit_cnn", "mobilenet_v2"])
def test_a_realized_stage_is_integer_onnx_with_the_same_outputs(name, tmp_path):
    *_, (_, graph) = stages(name, "int8")
    path = export_onnx(graph, tmp_path / "r.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"ConvInteger", "Round"} <= ops and "Conv" not in ops
    got, expected = run_onnx(path, graph)
    if name == "digit_cnn":  # integer ops only between input and output quantization: exact
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    else:  # float ops between the integer layers (residual adds) may round one step apart
        assert output_sqnr_db([torch.from_numpy(e) for e in expected], [torch.from_numpy(g) for g in got]) > 45


def test_export_onnx_command(tmp_path, capsys):
    out = tmp_path / "fold-bn.onnx"
    code, stdout, err = run_cli(capsys, "export-onnx", "digit_cnn", "--pipeline", "default", "--stage", "1",
                                "-o", str(out))
    assert code == 0, err
    assert "after fold-bn" in stdout and "BatchNormalization" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    code, _, err = run_cli(capsys, "export-onnx", "digit_cnn", "--pipeline", "default", "--stage", "7")
    assert_one_line_error(code, err, "--stage 7 is outside 0..3")


def test_export_to_a_missing_folder_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "export-onnx", "digit_cnn", "-o", str(tmp_path / "no" / "m.onnx"))
    assert_one_line_error(code, err, "cannot write", "folder", "does not exist")
    assert not list(tmp_path.iterdir())
