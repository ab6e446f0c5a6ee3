"""ONNX frontend: the built-in models and hand-built per-op models against onnxruntime, text round
trips, and one-line errors for bad files and unsupported ops."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from slimgraph.ir import ModelImportError, parse, print_graph
from slimgraph.ir import frontend_onnx
from slimgraph.ir.frontend_onnx import from_onnx
from slimgraph.ir.onnx_spatial import COORDINATE_MODES
from slimgraph.ir.ops import is_canonical
from slimgraph.ir.shapes import op_name
from slimgraph.models import reference_model

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


# ----- hand-built models, one op family each ---------------------------------------------
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


X4 = randn(2, 3, 8, 8)
BN = {"s": rand(3) + 1, "b": rand(3), "m": rand(3), "v": np.abs(rand(3)) + 0.5}
SLICE = ["x", "starts", "ends", "axes", "steps"]
UNARY_CHAIN = [("Sqrt", "x", "a"), ("Log", "a", "b"), ("Exp", "b", "c"), ("Tanh", "c", "d"), ("Sigmoid", "d", "e"),
               ("Erf", "e", "f")]

# name -> ((model, inputs), canonical ops the import must contain)
CASES = {
    "batch_norm": (build([node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], {"x": X4},
                         inits=BN), {"aten.batch_norm.default"}),
    "conv_asymmetric_pads": (build([node("Conv", ["x", "w", "bias"], ["y"], pads=[0, 1, 2, 0])], {"x": X4},
                                   inits={"w": rand(4, 3, 3, 3), "bias": rand(4)}),
                             {"aten.constant_pad_nd.default", "aten.conv2d.default"}),
    "conv_same_upper": (build([node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], {"x": X4},
                              inits={"w": rand(4, 3, 3, 3)}), {"aten.conv2d.default"}),
    "conv1d_groups": (build([node("Conv", ["x", "w"], ["y"], group=2, dilations=[2], pads=[1, 1])],
                            {"x": randn(1, 4, 10)}, inits={"w": rand(4, 2, 3)}), {"aten.conv1d.default"}),
    "conv_transpose": (build([node("ConvTranspose", ["x", "w", "bias"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                   output_padding=[1, 1])], {"x": randn(1, 4, 5, 5)},
                             inits={"w": rand(4, 3, 3, 3), "bias": rand(3)}), {"aten.conv_transpose2d.input"}),
    "conv_transpose_asymmetric": (build([node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], group=2,
                                              pads=[0, 1, 1, 0])], {"x": randn(1, 4, 5, 5)},
                                        inits={"w": rand(4, 2, 3, 3)}),
                                  {"aten.conv_transpose2d.input", "aten.slice.Tensor"}),
    "conv_transpose1d": (build([node("ConvTranspose", ["x", "w"], ["y"], strides=[3])], {"x": randn(1, 2, 6)},
                               inits={"w": rand(2, 3, 4)}), {"aten.conv_transpose1d.default"}),
    "resize_nearest_scales": (resize("nearest", ("scales", [1, 1, 2, 2]), coordinate_transformation_mode="asymmetric",
                                     nearest_mode="floor"), {"aten.upsample_nearest2d.vec"}),
    "resize_nearest_half_pixel": (resize("nearest", ("sizes", [1, 2, 8, 15])), {"aten.index_select.default"}),
    "resize_linear_scales": (resize("linear", ("scales", [1, 1, 2, 2])), {"aten.upsample_bilinear2d.vec"}),
    "resize_linear_align_corners": (resize("linear", ("sizes", [1, 2, 7, 4]),
                                           coordinate_transformation_mode="align_corners"),
                                    {"aten.upsample_bilinear2d.vec"}),
    "resize_linear_asymmetric": (resize("linear", ("scales", [1, 1, 2, 1.5]),
                                        coordinate_transformation_mode="asymmetric"), {"aten.index_select.default"}),
    "upsample_opset9": (build([node("Upsample", ["x", "scales"], ["y"])], {"x": X4},
                              inits={"scales": np.array([1, 1, 2, 2], np.float32)}, opset=9),
                        {"aten.upsample_nearest2d.vec"}),
    "slice_negative": (build([node("Slice", SLICE, ["y"])], {"x": randn(4, 10, 6)},
                             inits={"starts": ints(-3, 1), "ends": ints(INT64_MAX, -1), "axes": ints(-1, 1),
                                    "steps": ints(1, 2)}), {"aten.slice.Tensor"}),
    "slice_negative_step": (build([node("Slice", SLICE, ["y"])], {"x": randn(4, 10)},
                                  inits={"starts": ints(-1), "ends": ints(-INT64_MAX), "axes": ints(1),
                                         "steps": ints(-3)}), {"aten.index_select.default"}),
    "split_sizes": (build([node("Split", ["x", "split"], ["a", "b"], axis=1)], {"x": X4}, {"a": F, "b": F},
                          {"split": ints(1, 2)}), {"aten.split_with_sizes.default", "getitem"}),
    "split_num_outputs": (build([node("Split", ["x"], ["a", "b", "c"], axis=-1, num_outputs=3)], {"x": X4},
                                {"a": F, "b": F, "c": F}, opset=18), {"aten.split_with_sizes.default"}),
    "gather_scalar": (build([node("Gather", ["x", "i"], ["y"], axis=1)], {"x": X4}, inits={"i": np.array(-1)}),
                      {"aten.select.int"}),
    "gather_indices_2d": (build([node("Gather", ["x", "i"], ["y"], axis=2)], {"x": X4},
                                inits={"i": np.array([[0, -2], [1, 1]])}),
                          {"aten.index_select.default", "aten.reshape.default"}),
    "gather_embedding": (build([node("Gather", ["table", "ids"], ["y"])], {"ids": torch.tensor([[1, 7, 3], [0, 9, 9]])},
                               inits={"table": rand(10, 4)}), {"aten.embedding.default"}),
    "expand_where_cast": (build([node("Expand", ["x", "shape"], ["e"]), node("Greater", ["e", "t"], ["c"]),
                                 node("Where", ["c", "e", "t"], ["w"]), node("Mul", ["w", "ten"], ["m"]),
                                 node("Cast", ["m"], ["i"], to=I64)],
                                {"x": randn(3, 1), "t": randn(4)}, {"w": F, "i": I64},
                                {"shape": ints(2, 3, 4), "ten": scalar(10.0)}),
                          {"aten.expand.default", "aten.gt.Tensor", "aten.where.self", "aten.to.dtype"}),
    "pad_reflect": (build([node("Pad", ["x", "pads"], ["y"], mode="reflect")], {"x": X4},
                          inits={"pads": ints(0, 0, 1, 2, 0, 0, 2, 1)}), {"aten.pad.default"}),
    "pad_edge": (build([node("Pad", ["x", "pads"], ["y"], mode="edge")], {"x": X4},
                       inits={"pads": ints(0, 0, 0, 3, 0, 0, 0, 1)}), {"aten.pad.default"}),
    "pad_constant": (build([node("Pad", ["x", "pads", "value"], ["y"])], {"x": X4},
                           inits={"pads": ints(0, 1, 1, 0, 0, 0, 2, 3), "value": scalar(1.5)}),
                     {"aten.constant_pad_nd.default"}),
    "reduce_opset13": (build([node("ReduceMean", ["x"], ["a"], axes=[2, 3]),
                              node("ReduceMax", ["x"], ["b"], axes=[1], keepdims=0),
                              node("ReduceSum", ["x", "axes"], ["c"], keepdims=0)],
                             {"x": X4}, {"a": F, "b": F, "c": F}, {"axes": ints(-1)}, opset=13),
                       {"aten.mean.dim", "aten.amax.default", "aten.sum.dim_IntList"}),
    "reduce_opset18": (build([node("ReduceMean", ["x", "axes"], ["a"], keepdims=0),
                              node("ReduceMax", ["x", "axes"], ["b"]), node("ReduceSum", ["x"], ["c"])],
                             {"x": X4}, {"a": F, "b": F, "c": F}, {"axes": ints(1, -1)}, opset=18),
                       {"aten.mean.dim", "aten.amax.default", "aten.sum.dim_IntList"}),
    "avg_pool_ceil": (one_op("AveragePool", X4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                      {"aten.avg_pool2d.default"}),
    "avg_pool_count_pad": (one_op("AveragePool", X4, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
                           {"aten.avg_pool2d.default"}),
    "avg_pool_asymmetric": (one_op("AveragePool", randn(1, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2],
                                   pads=[0, 0, 1, 1]), {"aten.avg_pool2d.default", "aten.div.Tensor"}),
    "max_pool_same": (one_op("MaxPool", X4, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
                      {"aten.max_pool2d.default", "aten.constant_pad_nd.default"}),
    "max_pool1d": (one_op("MaxPool", randn(1, 2, 9), kernel_shape=[3], strides=[2], pads=[1, 1]),
                   {"aten.max_pool2d.default"}),
    "global_pools": (build([node("GlobalAveragePool", ["x"], ["a"]), node("GlobalMaxPool", ["a"], ["y"])], {"x": X4}),
                     {"aten.adaptive_avg_pool2d.default", "aten.amax.default"}),
    "prelu": (build([node("PRelu", ["x", "slope"], ["y"])], {"x": X4}, inits={"slope": rand(3, 1, 1)}),
              {"aten.prelu.default"}),
    "leaky_relu": (one_op("LeakyRelu", X4, alpha=0.2), {"aten.leaky_relu.default"}),
    "hard_sigmoid": (one_op("HardSigmoid", X4), {"aten.clamp.default"}),
    "hard_sigmoid_torch": (one_op("HardSigmoid", X4, alpha=1 / 6), {"aten.hardsigmoid.default"}),
    "hard_swish": (one_op("HardSwish", X4, opset=14), {"aten.hardswish.default"}),
    "clip": (build([node("Clip", ["x", "lo", "hi"], ["y"])], {"x": X4}, inits={"lo": scalar(-1), "hi": scalar(0.5)}),
             {"aten.clamp.default"}),
    "pow": (build([node("Pow", ["x", "two"], ["a"]), node("Pow", ["x", "x"], ["b"])], {"x": randn(2, 3).abs() + 0.5},
                  {"a": F, "b": F}, {"two": scalar(2.0)}), {"aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor"}),
    "unary_chain": (build([node(op, [a], [b]) for op, a, b in UNARY_CHAIN], {"x": randn(2, 3).abs() + 0.1}),
                    {f"aten.{op.lower()}.default" for op, _, _ in UNARY_CHAIN}),
    "squeeze_unsqueeze": (build([node("Squeeze", ["x", "a"], ["s"]), node("Unsqueeze", ["s", "b"], ["y"])],
                                {"x": randn(1, 3, 1, 4)}, inits={"a": ints(0, 2), "b": ints(-1, 0)}),
                          {"aten.squeeze.dims", "aten.unsqueeze.default"}),
    "gemm_general": (build([node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)],
                           {"a": randn(4, 3)}, inits={"b": rand(5, 4), "c": rand(3, 5)}),
                     {"aten.permute.default", "aten.matmul.default", "aten.mul.Tensor", "aten.add.Tensor"}),
    "softmax_opset11": (build([node("Softmax", ["x"], ["a"]), node("LogSoftmax", ["x"], ["b"], axis=2)],
                              {"x": randn(2, 3, 4)}, {"a": F, "b": F}, opset=11),
                        {"aten.softmax.int", "aten.log_softmax.int", "aten.reshape.default"}),
    "layer_norm": (build([node("LayerNormalization", ["x", "s", "b"], ["y"], epsilon=1e-6)], {"x": randn(2, 3, 4)},
                         inits={"s": rand(4), "b": rand(4)}), {"aten.layer_norm.default"}),
    "flatten_axis2": (one_op("Flatten", X4, axis=2), {"aten.reshape.default"}),
    "binary_scalars": (build([node("Sub", ["one", "x"], ["a"]), node("Div", ["a", "four"], ["b"]),
                              node("Max", ["b", "x"], ["c"]), node("Min", ["c", "y"], ["d"])],
                             {"x": randn(2, 3), "y": randn(3)}, inits={"one": scalar(1.0), "four": scalar([4.0])}),
                       {"aten.rsub.Scalar", "aten.div.Tensor", "aten.maximum.default", "aten.minimum.default"}),
    "div_int": (build([node("Div", ["x", "three"], ["y"])], {"x": torch.arange(-10, 10).reshape(4, 5)}, {"y": I64},
                      {"three": np.array(3)}), {"aten.div.Tensor_mode"}),
    "constant_forms": (build([node("Constant", [], ["k1"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0]),
                              node("Constant", [], ["k2"], value_float=0.5),
                              node("Constant", [], ["k3"], value=numpy_helper.from_array(rand(4, 1), "v")),
                              node("Mul", ["x", "k1"], ["a"]), node("Add", ["a", "k2"], ["b"]),
                              node("Sub", ["b", "k3"], ["c"]), node("Identity", ["c"], ["y"])], {"x": randn(4, 5)}),
                       {"aten.mul.Tensor", "aten.add.Tensor", "aten.sub.Tensor"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_op_matches_onnxruntime(case, tmp_path):
    (model, inputs), expected_ops = CASES[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    graph = import_and_compare(path, inputs)
    assert expected_ops <= set(op_histogram(graph)), op_histogram(graph)
    text = print_graph(graph)
    assert print_graph(parse(text, graph.params)) == text


NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
RESIZES = [("scales", [1, 1, 2, 2]), ("scales", [1, 1, 3, 0.5]), ("scales", [1, 1, 0.6, 1.7]), ("sizes", [1, 2, 8, 15])]


@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_modes_match_onnxruntime(mode, coordinate_mode):
    """Every coordinate mode and rounding: torch's upsample kernels where exact, index maps elsewhere."""
    for spec, rounding in itertools.product(RESIZES, NEAREST_MODES if mode == "nearest" else [None]):
        attrs = {"coordinate_transformation_mode": coordinate_mode, **({"nearest_mode": rounding} if rounding else {})}
        model, inputs = resize(mode, spec, **attrs)
        expected = torch.from_numpy(run_ort(model, inputs)[0])
        torch.testing.assert_close(from_onnx(model).run(*inputs)[0], expected, rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"{spec} {rounding}: {m}")


def test_batch_norm_has_torch_export_arguments(tmp_path):
    (model, _), _ = CASES["batch_norm"]
    graph = from_onnx(model)
    bn = next(n for n in graph.nodes if op_name(n) == "aten.batch_norm.default")
    assert [a.target for a in bn.args[1:5]] == ["s", "b", "m", "v"] and bn.args[5:] == (False, 0.1, 0.001, False)


@pytest.mark.parametrize("simplify", [True, False])
def test_shape_chain_folds_to_a_static_reshape(simplify, tmp_path, monkeypatch):
    if not simplify:  # the frontend's own folding, without onnxsim's
        monkeypatch.setattr(frontend_onnx, "_simplify", lambda model, label: model)
    nodes = [node("Shape", ["x"], ["shape"]), node("Gather", ["shape", "zero"], ["batch"]),
             node("Unsqueeze", ["batch", "axes"], ["batch1"]), node("Concat", ["batch1", "minus1"], ["target"], axis=0),
             node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0), "axes": ints(0), "minus1": ints(-1)}
    model, inputs = build(nodes, {"x": randn(2, 3, 4)}, inits=inits)
    onnx.save(model, str(tmp_path / "chain.onnx"))
    graph = import_and_compare(tmp_path / "chain.onnx", inputs)
    assert op_histogram(graph) == Counter({"aten.reshape.default": 1}) and not graph.params
    assert next(n for n in graph.nodes if n.op == "call_function").args[1] == [2, 12]


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
