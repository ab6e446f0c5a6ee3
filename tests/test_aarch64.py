"""aarch64 builds: the same schedule rules with NEON widths, linked by the cross compiler, run
with the C++ runner (no Python) under qemu-aarch64 and checked against PyTorch.

Needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them); without them the
tests that run a library skip, and the error tests still run."""
import re
import shutil

import numpy as np
import pytest
from tvm import tirx

import slimgraph
from slimgraph.codegen import aarch64
from slimgraph.codegen.build import build
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import lower
from slimgraph.lowering.cpu_schedules import is_scheduled
from slimgraph.tests.conftest import MODEL_NAMES, imported_model
from slimgraph.tests.test_cli import assert_one_line_error, run_cli

needs_qemu = pytest.mark.skipif(not aarch64.can_run(),
                                reason="needs g++-aarch64-linux-gnu and qemu-user (Debian packages)")


@needs_qemu
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builtin_models_match_pytorch_on_arm64(name):
    _, _, graph = imported_model(name)
    compiled = slimgraph.compile(graph, target="arm64", check=True)
    assert compiled.emulated and compiled.report.check_note == "run under qemu-aarch64"
    assert compiled.report.max_abs_diff <= 1e-4


@needs_qemu
def test_dotprod_preset_runs():
    _, _, graph = imported_model("digit_cnn")
    compiled = slimgraph.compile(graph, target="arm64-dotprod", check=True)
    assert compiled.report.max_abs_diff <= 1e-5
    assert compiled.metadata["target"]["config"]["mattr"] == ["+neon", "+dotprod"]


def test_arm64_kernels_use_the_rules_with_neon_widths():
    """The rules read lanes (4) and the register file from the target: the conv weight is packed
    in blocks of 4 output channels and the assembly multiplies 4-lane vectors (fmla v.4s)."""
    _, _, graph = imported_model("digit_cnn")
    target = resolve_target("arm64").tvm_target()
    _, optimized, _ = lower(graph, target)
    kernels = [f for _, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and re.search("conv2d|matmul", f.script())]
    assert len(kernels) >= 3 and all(is_scheduled(f) for f in kernels)
    packed_conv = [f for f in kernels if "conv2d_packed" in f.script()]
    assert packed_conv and all('"slimgraph.lanes": T.int64(4)' in f.script() for f in packed_conv)
    assembly = build(optimized, resolve_target("arm64")).mod.imports[0].inspect_source("s")  # LLVM alone: no g++
    assert len(re.findall(r"fmla\s+v\d+\.4s", assembly)) >= 32
    assert not re.search(r"%zmm|%ymm", assembly)


@needs_qemu
@pytest.mark.parametrize("shape", [
    (2, 5, 7, 9, 3, 1, 0, 1),       # batch 2, channels no tile divides
    (1, 24, 24, 13, 3, 1, 1, 24),   # depthwise, 14 columns: channel-blocked
    (1, 3, 16, 31, 7, 2, 3, 1),     # stem: odd size, stride 2
])
def test_conv_rules_on_a_sweep_under_qemu(shape):
    from slimgraph.tests.test_cpu_schedules import conv_graph

    compiled = slimgraph.compile(conv_graph(*shape), target="arm64", check=True)
    assert compiled.report.max_abs_diff <= 1e-4


@needs_qemu
def test_compile_then_run_the_library_from_the_cli(tmp_path, capsys):
    out = tmp_path / "cnn.so"
    code, stdout, _ = run_cli(capsys, "compile", "digit_cnn", "--target", "arm64", "-o", str(out), "--runs", "2")
    assert code == 0 and "run under qemu-aarch64" in stdout and "emulated" in stdout
    assert open(out, "rb").read(20)[18] == 0xB7  # ELF e_machine = EM_AARCH64
    code, stdout, _ = run_cli(capsys, "run", str(out), "--runs", "2", "--save", str(tmp_path / "y.npz"))
    assert code == 0 and "under qemu-aarch64" in stdout
    loaded = slimgraph.load(out)
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    module, _, _ = imported_model("digit_cnn")
    import torch

    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(loaded(x)[0], expected, atol=1e-5)


def test_missing_cross_compiler_is_one_line_error(monkeypatch, capsys, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(aarch64.shutil, "which", lambda name: None if "aarch64" in name else real_which(name))
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", "arm64", "-o", str(tmp_path / "m.so"))
    assert_one_line_error(code, err, "cross compiler 'aarch64-linux-gnu-g++' not found",
                          "install Debian's g++-aarch64-linux-gnu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which(aarch64.CROSS_COMPILER) is None, reason="needs g++-aarch64-linux-gnu")
def test_without_qemu_the_check_is_skipped_with_a_reason(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(aarch64.shutil, "which", lambda name: None if "qemu" in name else real_which(name))
    _, _, graph = imported_model("digit_cnn")
    compiled = slimgraph.compile(graph, target="arm64", check=True)
    assert compiled.report.max_abs_diff is None
    assert "qemu-aarch64 not found" in compiled.report.check_note and "qemu-user" in compiled.report.check_note


@needs_qemu
@pytest.mark.parametrize("preset", ["arm64", "arm64-dotprod"])
def test_int8_digit_cnn_on_arm64_matches_its_realized_graph_exactly(preset, tmp_path):
    """The integer ops build for aarch64 too (the same kernels, int32 multiply-adds on NEON, no
    dot-product tensorization yet) and give the realized graph's outputs bit for bit under qemu."""
    from slimgraph.rewrites import PassManager, parse_pipeline

    _, _, graph = imported_model("digit_cnn")
    realized = PassManager(parse_pipeline("int8")).run(graph).graph
    compiled = slimgraph.compile(realized, target=preset, pipeline="none", check=False, output=tmp_path / "int8")
    x = graph.example_inputs(2)
    assert compiled.emulated
    np.testing.assert_array_equal(np.asarray(compiled(*x)[0]), realized.run(*x)[0].numpy())


@needs_qemu
@pytest.mark.parametrize("preset", ["arm64", "arm64-dotprod"])
@pytest.mark.parametrize("case,kernel", [("pixels-16-lanes-6-channels", "qconv_pixels"),
                                         ("pixels-8-lanes-int8-in-batch2", "qconv_pixels"),
                                         ("pixels-3x3-stride2-3-channels", "qconv_pixels"),
                                         ("pixels-flat-14x14", "qconv_pixels"),
                                         ("depthwise-dot-14-wide", "qdepthwise"),
                                         ("depthwise-dot-stride2-int8-in-batch2", "qdepthwise"),
                                         ("depthwise-dot-7-wide-partial-rows", "qdepthwise"),
                                         ("depthwise-dot-one-output-row", "qdepthwise"),
                                         ("pixels-1x1-3-channels-one-group", "qconv_pixels")])
def test_pixel_lane_int8_convs_match_their_reference_exactly_on_arm64(case, kernel, preset):
    """arm64-dotprod runs the pixel-lane kernels (lowering/int8_pixels.py, int8_depthwise.py: L / 4
    sdot per step), plain arm64 the channel-lane and float32-sum ones; all bit for bit under qemu."""
    from slimgraph.tests.test_int8_kernels import conv_graph

    graph, x = conv_graph(case)
    compiled = slimgraph.compile(graph, target=preset, pipeline="none", check=False)
    assert any(kernel in name for name in compiled.report.kernels) == (preset == "arm64-dotprod")
    np.testing.assert_array_equal(np.asarray(compiled(x.numpy())[0]), graph.run(x)[0].numpy())


def test_arm64_dotprod_integer_kernels_use_sdot():
    """On arm64-dotprod the integer kernels hold the data as int8 (x - 128) and each 16 x 4 step is
    four `sdot`; plain arm64 has no dot product and uses none."""
    from slimgraph.rewrites import PassManager, parse_pipeline

    _, _, graph = imported_model("digit_cnn")
    realized = PassManager(parse_pipeline("int8")).run(graph).graph
    for preset, expected in (("arm64-dotprod", True), ("arm64", False)):
        _, optimized, _ = lower(realized, resolve_target(preset).tvm_target())
        assembly = build(optimized, resolve_target(preset)).mod.imports[0].inspect_source("s")
        count = len(re.findall(r"\bsdot\s+v\d+\.4s", assembly))
        assert (count >= 16) if expected else count == 0, (preset, count)
