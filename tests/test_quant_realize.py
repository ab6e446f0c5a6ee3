"""Realization: Q/DQ chains become slimgraph.qconv2d / qlinear. IR before and after, the
reference kernels against an independent integer computation, and numerics against the Q/DQ
graph and the float model."""
import math

import numpy as np
import pytest
import torch

from slimgraph.ir.quant_ops import qconv2d, qlinear
from slimgraph.rewrites import PassManager, parse_pipeline
from slimgraph.tests.conftest import imported_model
from slimgraph.tests.test_quantize_pass import quantized, sqnr_db


def integer_conv(x, w, bias, x_zero, stride, padding, groups):
    """int64 numpy conv: the arithmetic of qconv2d's accumulator, written out."""
    x = np.pad(x.astype(np.int64) - x_zero, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    for oc in range(o):
        first = oc // (o // groups) * cg
        for y in range(oh):
            for xx in range(ow):
                patch = x[:, first:first + cg, y * stride:y * stride + kh, xx * stride:xx * stride + kw]
                out[:, oc, y, xx] = (patch * w[oc].astype(np.int64)).sum(axis=(1, 2, 3))
    return out + bias[None, :, None, None]


@pytest.mark.parametrize("x_dtype,out_dtype,groups", [("uint8", "uint8", 1), ("int8", "float32", 1),
                                                      ("uint8", "int8", 4)])
def test_qconv2d_reference_is_the_integer_arithmetic(x_dtype, out_dtype, groups):
    generator = torch.Generator().manual_seed(0)
    low, high = (0, 256) if x_dtype == "uint8" else (-128, 128)
    x = torch.randint(low, high, (2, 8, 7, 9), generator=generator, dtype=getattr(torch, x_dtype))
    w = torch.randint(-127, 128, (12, 8 // groups, 3, 3), generator=generator, dtype=torch.int8)
    bias = torch.randint(-5000, 5000, (12,), generator=generator, dtype=torch.int32)
    scale = torch.rand(12, generator=generator) * 1e-3
    out_min, out_max = (0.0, math.inf) if out_dtype == "float32" else (2.0, 100.0)
    got = qconv2d(x, w, bias, scale, 5, 3, [2, 2], [1, 1], [1, 1], groups, out_min, out_max, out_dtype)
    acc = integer_conv(x.numpy(), w.numpy(), bias.numpy(), 5, 2, 1, groups)
    scaled = acc.astype(np.float32) * scale.numpy()[None, :, None, None]
    if out_dtype == "float32":
        expected = np.maximum(scaled, 0)
    else:
        expected = np.clip(np.round(scaled) + 3, 2, 100)  # np.round: half to even, as torch
    assert got.dtype == getattr(torch, out_dtype)
    np.testing.assert_array_equal(got.numpy().astype(np.float64), expected.astype(np.float64))


def test_qlinear_reference_is_the_integer_arithmetic():
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 3, 30), generator=generator, dtype=torch.uint8)
    w = torch.randint(-127, 128, (10, 30), generator=generator, dtype=torch.int8)
    bias = torch.randint(-500, 500, (10,), generator=generator, dtype=torch.int32)
    scale = torch.rand(10, generator=generator) * 1e-2
    got = qlinear(x, w, bias, scale, 7, 0, -math.inf, math.inf, "float32")
    acc = (x.numpy().astype(np.int64) - 7) @ w.numpy().astype(np.int64).T + bias.numpy()
    np.testing.assert_array_equal(got.numpy(), acc.astype(np.float32) * scale.numpy())


def test_ir_before_and_after_on_the_digit_cnn():
    _, qdq, _ = quantized("digit_cnn")
    result = PassManager(parse_pipeline("realize")).run(qdq)
    text, record = str(result.graph), result.records[-1]
    assert "dequantize" not in text and "aten.conv2d" not in text and "aten.linear" not in text
    assert "aten.relu" not in text  # every ReLU fused: into a requantization range or a float clamp
    conv1 = next(line for line in text.splitlines() if line.strip().startswith("%conv2d = "))
    # input quantized to u8; ReLU then quantize folded: range [zero point, 255] and a u8 result
    assert "slimgraph.qconv2d.default(%quantize_per_tensor_default, %conv1_weight_int8, %conv1_bias_int32, " \
           "%conv1_requant_scale, " in conv1 and conv1.rstrip().endswith('"uint8") : u8[1,16,8,8] '
                                                                         'loc("conv1", "fold-bn", "quantize", "realize")')
    assert 'param("conv1.bias_int32") : i32[16]' in text and 'param("conv1.requant_scale") : f32[16]' in text
    # conv2's quantize moved before max-pool and flatten (exact: they keep order): the ReLU's range
    # and a u8 result, the pool on u8, and fc1 reads the flattened u8 directly
    assert ', 0.0, 255.0, "uint8") : u8[1,32,8,8]' in text
    assert "aten.max_pool2d.default(%conv2d_1, [2, 2], [2, 2]) : u8[1,32,4,4]" in text
    assert "slimgraph.qlinear.default(%flatten, " in text
    assert record.stats == {"qconv2d": 2, "qlinear": 2, "integer_out": 3, "float_out": 1, "moved_before_quantize": 2}
    assert record.notes[:2] == ["2 conv2d and 2 linear now integer: 3 requantize to 8 bits, 1 give float outputs",
                                "quantize moved before %flatten, %max_pool2d: they commute with it, and now run on 8 bits"]


def test_realize_without_quantize_changes_nothing_and_says_why():
    _, _, graph = imported_model("digit_cnn")
    result = PassManager(parse_pipeline("fold-bn,realize")).run(graph)
    assert not result.records[-1].modified
    assert result.records[-1].notes == ["no quantized conv2d / linear (run quantize first)"]


def test_an_excluded_layer_keeps_its_float_conv_and_the_next_layer_its_quantize():
    _, qdq, _ = quantized("digit_cnn", "fold-bn,fold-constants,quantize{exclude=[conv2]}")
    realized = PassManager(parse_pipeline("realize")).run(qdq).graph
    text = str(realized)
    assert text.count("slimgraph.qconv2d") == 1 and text.count("aten.conv2d") == 1
    x = qdq.example_inputs(3)
    assert sqnr_db(qdq.run(*x)[0], realized.run(*x)[0]) > 40


@pytest.mark.parametrize("name", ["digit_cnn", "resnet18", "mobilenet_v2", "bert_encoder"])
def test_every_built_in_model_realizes_close_to_its_qdq_graph(name):
    graph, qdq, _ = quantized(name)
    result = PassManager(parse_pipeline("realize")).run(qdq)
    text = str(result.graph)
    assert "dequantize_per_channel" not in text and "aten.conv2d" not in text and "aten.linear" not in text
    for seed in (0, 1):
        x = graph.example_inputs(seed)
        reference, fake, integer = graph.run(*x)[0], qdq.run(*x)[0], result.graph.run(*x)[0]
        assert sqnr_db(fake, integer) > 40  # two roundings differ: the int32 bias and the requantization
        assert sqnr_db(reference, integer) > 30
