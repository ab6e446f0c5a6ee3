"""Compiled integer kernels: every qconv2d / qlinear variant matches its PyTorch reference
exactly, x86 kernels use VNNI's vpdpbusd, whole models compile to int8 and stay close to the
realized graph and the float model, and the digit CNN keeps its accuracy on real data."""
import re

import numpy as np
import pytest
import torch

import slimgraph
from slimgraph import ir
from slimgraph.codegen.build import build
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import lower
from slimgraph.lowering.int8_kernels import has_vnni
from slimgraph.lowering.pipeline import kernel_calls, kernel_names
from slimgraph.rewrites import PassManager, parse_pipeline
from slimgraph.rewrites.quantize import calibration_data
from slimgraph.tests.conftest import imported_model
from slimgraph.tests.test_quantize_pass import sqnr_db

SHORT = {torch.uint8: "u8", torch.int8: "i8", torch.float32: "f32", torch.int32: "i32"}


def single_op_graph(x_shape, x_dtype, weight_shape, call: str, out: str, seed: int = 0):
    """A graph of one integer op with random int8 weights, int32 bias and float scales."""
    generator = torch.Generator().manual_seed(seed)
    out_channels = weight_shape[0]
    params = {"w": torch.randint(-127, 128, weight_shape, generator=generator, dtype=torch.int8),
              "b": torch.randint(-20000, 20000, (out_channels,), generator=generator, dtype=torch.int32),
              "s": torch.rand(out_channels, generator=generator) * 2e-4 + 1e-5}
    dims = ",".join(map(str, x_shape))
    text = (f'graph "single" {{\n  %x = input() : {SHORT[x_dtype]}[{dims}]\n'
            f'  %w = param("w") : i8[{",".join(map(str, weight_shape))}]\n'
            f'  %b = param("b") : i32[{out_channels}]\n  %s = param("s") : f32[{out_channels}]\n'
            f'  %y = {call} : {out}\n  return (%y,)\n}}\n')
    graph = ir.parse(text, params)
    low, high = (0, 256) if x_dtype == torch.uint8 else (-128, 128)
    x = torch.randint(low, high, x_shape, generator=generator, dtype=x_dtype)
    return graph, x


CONVS = {  # name: (x shape, x dtype, weight shape, stride, padding, groups, out range, out dtype)
    "vnni-3x3-u8-out": ((1, 8, 9, 9), torch.uint8, (16, 8, 3, 3), 1, 1, 1, (0.0, 255.0), "uint8"),
    "odd-channels-int8-in-float-out-batch2": ((2, 5, 11, 13), torch.int8, (32, 5, 3, 3), 2, 1, 1, (0.0, "inf"),
                                              "float32"),
    "24-outputs-no-16-block": ((1, 16, 7, 7), torch.uint8, (24, 16, 1, 1), 1, 0, 1, (-128.0, 127.0), "int8"),
    "depthwise-stride2": ((1, 16, 10, 10), torch.uint8, (16, 1, 3, 3), 2, 1, 16, (3.0, 200.0), "uint8"),
    "grouped": ((1, 8, 6, 6), torch.uint8, (8, 4, 3, 3), 1, 1, 2, ("-inf", "inf"), "float32"),
    # 64 channels x 3 x 3 per group: sums too long for exact float32, so the int32 kernel; int8 input
    "grouped-int32-sums-int8-in": ((1, 128, 6, 6), torch.int8, (32, 64, 3, 3), 1, 1, 2, (-128.0, 127.0), "int8"),
    # a 3x3 conv on 16 or more channels: the channel-lane kernel even though 8 divides its width
    "3x3-16-channels-8-wide-channel-lanes": ((1, 16, 5, 8), torch.uint8, (16, 16, 3, 3), 1, 1, 1, (0.0, 255.0),
                                             "uint8"),
    # ... and on a wider map, whose padded channel-interleaving copy must vectorize
    "3x3-16-channels-56-wide": ((1, 16, 4, 56), torch.uint8, (16, 16, 3, 3), 1, 1, 1, (0.0, 255.0), "uint8"),
    # output width divisible by 8: the pixel-lane kernel (lowering/int8_pixels.py)
    "pixels-16-lanes-6-channels": ((1, 6, 3, 32), torch.uint8, (24, 6, 1, 1), 1, 0, 1, (0.0, 255.0), "uint8"),
    "pixels-8-lanes-int8-in-batch2": ((2, 20, 3, 56), torch.int8, (16, 20, 1, 1), 1, 0, 1, (-128.0, 127.0), "int8"),
    "pixels-40-outputs-float-out": ((1, 16, 2, 16), torch.uint8, (40, 16, 1, 1), 1, 0, 1, (0.0, "inf"), "float32"),
    "pixels-3x3-stride2-3-channels": ((1, 3, 9, 32), torch.uint8, (32, 3, 3, 3), 2, 1, 1, (0.0, 255.0), "uint8"),
    "pixels-7x7-stride2-pad3-int8-in": ((1, 3, 10, 31), torch.int8, (16, 3, 7, 7), 2, 3, 1, (-128.0, 127.0), "int8"),
    "pixels-3x3-pad1-8-lanes-batch2": ((2, 12, 5, 8), torch.uint8, (8, 12, 3, 3), 1, 1, 1, (0.0, "inf"), "float32"),
    "pixels-1x1-3-channels-one-group": ((1, 3, 2, 16), torch.uint8, (8, 3, 1, 1), 1, 0, 1, (0.0, 255.0), "uint8"),
    # 1x1 on a map whose width 8 does not divide: its H x W pixels as one row, padded to whole vectors
    "pixels-flat-14x14": ((1, 24, 14, 14), torch.uint8, (32, 24, 1, 1), 1, 0, 1, (0.0, 255.0), "uint8"),
    "pixels-flat-7x7-int8-in-batch2-partial": ((2, 20, 7, 7), torch.int8, (16, 20, 1, 1), 1, 0, 1, (-128.0, 127.0), "int8"),
    "pixels-flat-7x7-4-channels-partial": ((1, 4, 7, 7), torch.uint8, (8, 4, 1, 1), 1, 0, 1, (0.0, 255.0), "uint8"),
    "pixels-flat-28x28-float-out": ((1, 8, 28, 28), torch.uint8, (16, 8, 1, 1), 1, 0, 1, (0.0, "inf"), "float32"),
    # multiplier-1 depthwise, kw <= 4: the dot-product depthwise kernel (lowering/int8_depthwise.py)
    "depthwise-dot-14-wide": ((1, 5, 14, 14), torch.uint8, (5, 1, 3, 3), 1, 1, 5, (0.0, 255.0), "uint8"),
    "depthwise-dot-stride2-int8-in-batch2": ((2, 6, 15, 16), torch.int8, (6, 1, 3, 3), 2, 1, 6, (-128.0, 127.0), "int8"),
    "depthwise-dot-one-output-row": ((1, 4, 2, 16), torch.uint8, (4, 1, 3, 3), 2, 1, 4, (0.0, 255.0), "uint8"),
    "depthwise-dot-1x3-kernel-batch2": ((2, 4, 5, 16), torch.uint8, (4, 1, 1, 3), 1, 0, 4, (0.0, 255.0), "uint8"),
    "depthwise-dot-7-wide-partial-rows": ((1, 4, 7, 7), torch.int8, (4, 1, 3, 3), 1, 1, 4, (-128.0, 127.0), "int8"),
    "depthwise-dot-32-wide-float-out": ((1, 3, 4, 32), torch.uint8, (3, 1, 3, 3), 1, 1, 3, (0.0, "inf"), "float32"),
}
PIXEL_CASES = [case for case in CONVS if case.startswith(("pixels", "depthwise-dot")) and "partial" not in case]


def conv_call(stride, padding, groups, out_range, out_dtype) -> str:
    low, high = out_range
    return (f"slimgraph.qconv2d.default(%x, %w, %b, %s, 9, 4, [{stride}, {stride}], [{padding}, {padding}], [1, 1], "
            f'{groups}, {low}, {high}, "{out_dtype}")')


def out_type(reference: torch.Tensor) -> str:
    return f"{SHORT[reference.dtype]}[{','.join(map(str, reference.shape))}]"


def compiled_equals_reference(graph, x):
    expected = graph.run(x)[0]
    compiled = slimgraph.compile(graph, target="x86", pipeline="none", check=False)
    got = torch.as_tensor(np.asarray(compiled(x)[0]))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), f"max |diff| {float((got.double() - expected.double()).abs().max())}"


@pytest.mark.parametrize("case", list(CONVS))
def test_compiled_qconv2d_matches_its_reference_exactly(case):
    compiled_equals_reference(*conv_graph(case))


LINEARS = {  # name: (x shape, x dtype, out features, out dtype, out range)
    "3d-odd-depth-float-out": ((2, 3, 30), torch.uint8, 16, "float32", (0.0, "inf")),
    "one-row-10-outputs": ((1, 64), torch.uint8, 10, "uint8", (0.0, 255.0)),
    "int8-in": ((4, 32), torch.int8, 32, "int8", (-128.0, 127.0)),
}


def linear_graph(case):
    x_shape, x_dtype, out_features, out_dtype, (low, high) = LINEARS[case]
    call = f'slimgraph.qlinear.default(%x, %w, %b, %s, 11, 2, {low}, {high}, "{out_dtype}")'
    weight_shape = (out_features, x_shape[-1])
    probe, x = single_op_graph(x_shape, x_dtype, weight_shape, call, "f32[1]")
    return single_op_graph(x_shape, x_dtype, weight_shape, call, out_type(probe.run(x)[0]))


def conv_graph(case):
    x_shape, x_dtype, weight_shape, stride, padding, groups, out_range, out_dtype = CONVS[case]
    call = conv_call(stride, padding, groups, out_range, out_dtype)
    probe, x = single_op_graph(x_shape, x_dtype, weight_shape, call, "f32[1]")  # to learn the output type
    return single_op_graph(x_shape, x_dtype, weight_shape, call, out_type(probe.run(x)[0]))


@pytest.mark.parametrize("case", list(LINEARS))
def test_compiled_qlinear_matches_its_reference_exactly(case):
    compiled_equals_reference(*linear_graph(case))


def x86_assembly(graph) -> str:
    spec = resolve_target("x86")
    if not has_vnni(spec.tvm_target()):
        pytest.skip("this host has no AVX512-VNNI")
    _, optimized, notes = lower(graph, spec.tvm_target())
    assert not [n for n in notes if "no schedule rule" in n]
    return build(optimized, spec).mod.imports[0].inspect_source("s")


@pytest.mark.parametrize("graph_of,case", [(conv_graph, "24-outputs-no-16-block"), (linear_graph, "one-row-10-outputs"),
                                           (linear_graph, "int8-in")])
def test_channels_not_divisible_by_16_and_single_rows_still_use_vnni(graph_of, case):
    """Output channels are padded to 16 inside the kernel and a single-row linear keeps its rule."""
    assert x86_assembly(graph_of(case)[0]).count("vpdpbusd") >= 1


@pytest.mark.parametrize("case", PIXEL_CASES)
def test_pixel_lane_convs_use_vnni_on_pixel_vectors_and_store_whole_rows(case):
    """The pixel-lane kernels: vpdpbusd on zmm (16 pixels) or ymm (8) registers, and an epilogue
    that writes each output row with vector stores, no byte-by-byte scatter (rows of 7 are
    stored in parts: the "partial" cases are only checked for exactness)."""
    graph, _ = conv_graph(case)
    assembly = x86_assembly(graph)  # skips without VNNI: then no dot product, no pixel-lane kernels
    _, optimized, _ = lower(graph, resolve_target("x86").tvm_target())
    kernel = "qdepthwise" if case.startswith("depthwise") else "qconv_pixels"
    assert [name for name in kernel_names(optimized) if kernel in name], kernel_names(optimized)
    register = "zmm" if "16-lanes" in case else "[yz]mm"  # 16 pixels a zmm, 8 a ymm
    assert re.search(rf"vpdpbusd\s+\S+, %{register}\d+, %{register}\d+", assembly), f"no vpdpbusd on {register}"
    assert "vpextrb" not in assembly and "vpscatter" not in assembly
    # a named scalar in an intrinsic's TVMScript becomes a local buffer that the CPU code takes from
    # the workspace pool on every tile: once half the time of a depthwise conv on 7x7 maps
    scripts = [optimized[gv].script() for gv in optimized.get_global_vars() if kernel in gv.name_hint]
    assert not any("alloc_local" in script for script in scripts)


def test_deep_3x3_convs_take_the_channel_lane_kernel():
    """Only shallow inputs (a first conv) put a larger kernel's pixels in the lanes; deeper ones
    amortize the channel-lane kernel's transposing epilogue (lowering/int8_pixels.pixel_layout)."""
    graph, _ = conv_graph("3x3-16-channels-8-wide-channel-lanes")
    _, optimized, _ = lower(graph, resolve_target("x86").tvm_target())
    names = kernel_names(optimized)
    if not has_vnni(resolve_target("x86").tvm_target()):
        pytest.skip("this host has no AVX512-VNNI")
    assert [n for n in names if "qconv2d" in n] and not [n for n in names if "qconv_pixels" in n], names


def test_a_padded_pixel_row_is_interleaved_by_vector_shuffles():
    """A 14x14 map's 196 pixels are packed as a row of 208: the copy up to the padding has no
    per-byte test left (codegen.build.BUILD_CONFIG's loop partition), so it runs as byte
    unpacks of whole vectors instead of one byte load and store per element."""
    assembly = x86_assembly(conv_graph("pixels-flat-14x14")[0])
    assert re.search(r"vpunpck[lh]bw", assembly), "the interleaving copy is not vectorized"


def test_the_channel_lane_copy_is_interleaved_by_vector_shuffles():
    """The channel-lane kernel's padded copy (4 channels interleaved per pixel) is partitioned at its
    padding only when each bound has its own `likely` (int8_kernels.padded_input); under a single
    `likely` over all of them it stayed one byte load and store per element (14 % of ResNet-18's
    56x56 conv)."""
    assembly = x86_assembly(conv_graph("3x3-16-channels-56-wide")[0])
    assert re.search(r"vpunpck[lh]bw", assembly), "the interleaving copy is not vectorized"


def test_x86_integer_kernels_use_vnni_dot_products():
    _, _, graph = imported_model("resnet18")
    assembly = x86_assembly(PassManager(parse_pipeline("int8")).run(graph).graph)
    assert assembly.count("vpdpbusd") >= 200  # 19 of the 20 convs and the classifier, unrolled tiles
    # every integer kernel's requantization rounds whole vectors: TVM's vectorizer scalarized
    # nearbyint, and LLVM re-vectorized only some of those loops (10 scalar roundings here before
    # codegen.build.vectorize_nearbyint)
    functions = re.split(r"^(\w+):$", assembly, flags=re.M)
    integer = [body for name, body in zip(functions[1::2], functions[2::2]) if "qconv" in name or "qdense" in name]
    assert integer and not [body for body in integer if "vroundss" in body]


def test_resnet18_int8_pools_and_adds_residuals_in_8_bits():
    """With residuals read quantized and the quantize moved before the max pool (rewrites/quantize,
    rewrites/quant_realize), the stem writes uint8, the pool runs on uint8, and each identity
    block's residual is dequantized inside the conv kernel that adds it: the only quantize that is
    not part of another kernel is the model input's; the 3 downsampling blocks still add two float conv outputs."""
    _, _, graph = imported_model("resnet18")
    realized = PassManager(parse_pipeline("int8")).run(graph).graph
    _, optimized, _ = lower(realized, resolve_target("x86").tvm_target())
    calls = kernel_calls(optimized)
    pool = optimized[next(gv for gv in optimized.get_global_vars() if gv.name_hint == "max_pool2d")]
    signature = next(line for line in pool.script().splitlines() if line.lstrip().startswith("def "))
    assert signature.count('"uint8")') == 2 and "float32" not in signature, signature
    standalone = [n for n in calls if "qconv" not in n and "qdense" not in n and "mean" not in n and "round" in n]
    assert len(standalone) == 1, standalone  # (the classifier's input is quantized with the global mean)
    residual_kernels = [n for n in calls if n.startswith("fused_cast") and "qconv2d" in n]
    assert sum(calls[n] for n in residual_kernels) == 5, calls


@pytest.mark.parametrize("name", ["digit_cnn", "resnet18", "mobilenet_v2", "bert_encoder"])
def test_every_built_in_model_compiles_to_int8(name):
    _, _, graph = imported_model(name)
    result = PassManager(parse_pipeline("int8")).run(graph)
    realized = result.graph
    assert "aten.conv2d" not in str(realized) and "aten.linear" not in str(realized)
    compiled = slimgraph.compile(realized, target="x86", pipeline="none", check=False)
    assert not compiled.report.lowering_notes  # every kernel scheduled, standalone quantizes included
    x = graph.example_inputs(5)
    got = torch.as_tensor(np.asarray(compiled(*x)[0]))
    # float32 rounding (LLVM fuses multiply-adds) may move an 8-bit value by one step, which later layers carry
    assert sqnr_db(realized.run(*x)[0], got) > 40
    assert sqnr_db(graph.run(*x)[0], got) > 30


def test_digit_cnn_trained_on_real_digits_keeps_its_accuracy_in_int8():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    train, test = slice(0, 1400), slice(1400, None)
    torch.manual_seed(0)
    model = slimgraph.models.DigitCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for start in range(0, 1400, 50):
            batch = slice(start, start + 50)
            loss = torch.nn.functional.cross_entropy(model(images[train][batch]), labels[train][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        float_accuracy = float((model(images[test]).argmax(1) == labels[test]).float().mean())
    calibration = [(images[i:i + 1],) for i in range(0, 1400, 7)]
    compiled = slimgraph.compile(model, (images[:1],), pipeline="int8", calibration_data=calibration)
    predictions = [int(np.argmax(np.asarray(compiled(images[i:i + 1])[0]))) for i in range(1400, len(labels))]
    int8_accuracy = float(np.mean(np.array(predictions) == labels[test].numpy()))
    assert float_accuracy > 0.9
    assert int8_accuracy >= float_accuracy - 0.01, (float_accuracy, int8_accuracy)
