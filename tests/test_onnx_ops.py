"""ONNX frontend, one op family per hand-built model: the import against ONNX Runtime, the canonical ops
it must contain, and its text round trip; every Resize mode; shapes folded to constants."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimgraph.ir import parse, print_graph
from slimgraph.ir import frontend_onnx
from slimgraph.ir.frontend_onnx import from_onnx
from slimgraph.ir.onnx_spatial import COORDINATE_MODES
from slimgraph.ir.shapes import op_name

from .onnx_builders import (F, I64, INT64_MAX, build, import_and_compare, ints, node, one_op, op_histogram, rand,
                            randn, resize, run_ort, scalar)


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


