"""ONNX frontend: the built-in models against onnxruntime and through text, dynamic input shapes, and
one-line errors for bad files and unsupported ops (one op family per model: test_onnx_ops.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from slimgraph.ir import ModelImportError, parse, print_graph
from slimgraph.ir.frontend_onnx import from_onnx
from slimgraph.ir.shapes import op_name
from slimgraph.models import reference_model

from .onnx_builders import F, I64, build, import_and_compare, make_model, node, op_histogram, randn, resize
from .test_onnx_ops import CASES


# ----- the built-in models, exported by torch.onnx ---------------------------------------
BUILTIN_OPS = {
    "resnet18": {"aten.conv2d.default", "aten.linear.default", "aten.max_pool2d.default",
                 "aten.adaptive_avg_pool2d.default", "aten.flatten.using_ints", "aten.relu.default"},
    "mobilenet_v2": {"aten.conv2d.default", "aten.hardtanh.default", "aten.linear.default"},
    "bert_encoder": {"aten.layer_norm.default", "aten.matmul.default", "aten.embedding.default", "aten.softmax.int"},
    "digit_cnn": {"aten.conv2d.default", "aten.linear.default", "aten.max_pool2d.default"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (path of the torch.onnx export at opset 17, example inputs), exported once."""
    folder, cache = tmp_path_factory.mktemp("onnx_models"), {}

    def get(name):
        if name not in cache:
            module, inputs = reference_model(name)
            path = folder / f"{name}.onnx"
            torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=17)
            cache[name] = (path, inputs)
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(BUILTIN_OPS))
def test_builtin_model_matches_onnxruntime(name, exported):
    path, inputs = exported(name)
    graph = import_and_compare(path, inputs, rtol=1e-4, atol=1e-4)
    histogram = op_histogram(graph)
    assert BUILTIN_OPS[name] <= set(histogram), histogram
    assert graph.name == name and graph.inputs[0].name == "input_1"
    if name == "mobilenet_v2":  # Clip(0, 6) is ReLU6 as torch.export writes it
        clip = next(n for n in graph.nodes if op_name(n) == "aten.hardtanh.default")
        assert clip.args[1:] == (0.0, 6.0)
    if name == "resnet18":  # initializers keep their ONNX names; unused ones are dropped
        assert "fc.weight" in graph.params and all(n.target in graph.params for n in graph.nodes if n.op == "get_attr")
        assert {n.meta["provenance"].source for n in graph.nodes if op_name(n) == "aten.linear.default"} == {"/fc/Gemm"}


@pytest.mark.parametrize("name", sorted(BUILTIN_OPS))
def test_builtin_import_round_trips_through_text(name, exported):
    graph = from_onnx(exported(name)[0])
    text = print_graph(graph)
    assert print_graph(parse(text, graph.params)) == text


def test_dynamic_input_needs_input_shapes(tmp_path):
    graph = helper.make_graph([node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", F, ["batch", 3])],
                              [helper.make_tensor_value_info("y", F, None)])
    path = tmp_path / "dynamic.onnx"
    onnx.save(make_model(graph), str(path))
    with pytest.raises(ModelImportError, match=r"input 'x' has a dynamic shape \(\[batch, 3\]\)"):
        from_onnx(path)
    assert from_onnx(path, input_shapes={"x": [5, 3]}).input_specs() == [("x", (5, 3), torch.float32)]


# ----- errors: one line naming the file (and the node) -----------------------------------
def import_error(path_or_model, **kwargs) -> str:
    with pytest.raises(ModelImportError) as info:
        from_onnx(path_or_model, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert import_error(tmp_path / "nope.onnx") == f"{tmp_path / 'nope.onnx'}: no such file"


def test_truncated_and_foreign_files(tmp_path, exported):
    truncated, text = tmp_path / "truncated.onnx", tmp_path / "notes.onnx"
    truncated.write_bytes(exported("digit_cnn")[0].read_bytes()[:100])
    text.write_text("this is not an ONNX model\n")
    for path in (truncated, text):
        assert import_error(path).startswith(f"{path}: ")


def test_unsupported_ops_are_listed_with_counts(tmp_path):
    k = numpy_helper.from_array(np.array([2]), "k")
    nodes = [node("TopK", ["x", "k"], ["v1", "i1"]), node("TopK", ["v1", "k"], ["v2", "i2"]),
             helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms")]
    inputs = [helper.make_tensor_value_info(n, F, shape) for n, shape in
              (("x", [4, 5]), ("boxes", [1, 4, 4]), ("scores", [1, 1, 4]))]
    outputs = [helper.make_tensor_value_info("v2", F, None), helper.make_tensor_value_info("sel", I64, None)]
    path = tmp_path / "model.onnx"
    onnx.save(make_model(helper.make_graph(nodes, "g", inputs, outputs, [k])), str(path))
    message = import_error(path)
    assert message.startswith(f"{path}: unsupported ONNX ops: NonMaxSuppression (x1), TopK (x2); supported: ")
    assert "Conv" in message and "Resize" in message


def test_non_constant_shape_input_names_the_node(tmp_path):
    model, _ = build([node("Reshape", ["x", "s"], ["y"])], {"x": randn(2, 6), "s": torch.tensor([3, 4])})
    assert "node 'Reshape_y' (Reshape): input 1 ('s', the shape) must be a constant" in import_error(model)


def test_unsupported_resize_mode_names_the_node(tmp_path):
    model, _ = resize("linear", ("scales", [1, 1, 2, 2]), coordinate_transformation_mode="tf_crop_and_resize")
    assert "node 'Resize_y' (Resize): coordinate_transformation_mode 'tf_crop_and_resize'" in import_error(model)
    model, _ = resize("cubic", ("scales", [1, 1, 2, 2]))
    assert "node 'Resize_y' (Resize): mode 'cubic' is not supported" in import_error(model)


def test_broken_onnx_is_refused(tmp_path):
    graph = helper.make_graph([node("Relu", ["missing"], ["y"])], "g", [helper.make_tensor_value_info("x", F, [2])],
                              [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert import_error(model).startswith("g: invalid ONNX model (")


def test_onnxsim_failure_falls_back_with_a_warning(tmp_path, monkeypatch):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simplifier exploded")
    monkeypatch.setattr(onnxsim, "simplify", broken)
    model, inputs = CASES["expand_where_cast"][0]
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.warns(UserWarning, match="onnxsim failed \\(simplifier exploded\\); importing the unsimplified model"):
        import_and_compare(tmp_path / "m.onnx", inputs)
