"""A 1x1 conv and the depthwise conv reading it: one region in the IR when the expanded tensor is
large, one kernel after lowering (lowering/pointwise_depthwise.py), outputs as PyTorch's."""
import pytest
import torch
from tvm import tirx

import slimgraph
from slimgraph import ir
from slimgraph.codegen import aarch64
from slimgraph.codegen.targets import resolve_target
from slimgraph.ir.text import REGION
from slimgraph.lowering import kernel_launches, lower
from slimgraph.lowering.pointwise_depthwise import PointwiseDepthwiseRule
from slimgraph.rewrites.fuse_regions import POINTWISE_DEPTHWISE_MIN_BYTES
from slimgraph.rewrites.manager import PassManager
from slimgraph.rewrites.pipeline import parse_pipeline

aten = torch.ops.aten
AVX2_TARGET = '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": 2}'


def expansion_graph(batch, cin, expanded, height, width, stride, padding=1, kernel=3, activation="relu6",
                    project=0):
    """x -> 1x1 conv (cin -> expanded) -> act -> depthwise kxk conv -> act [-> 1x1 conv (-> project)]."""
    builder = ir.GraphBuilder("expansion")
    generator = torch.Generator().manual_seed(cin * 1000 + expanded)
    x = builder.input("x", (batch, cin, height, width), torch.float32)

    def act(y):
        if activation == "relu6":
            return builder.call(aten.hardtanh.default, y, 0.0, 6.0)
        return builder.call(aten.relu.default, y) if activation == "relu" else y

    w1 = builder.param("expand.weight", torch.randn(expanded, cin, 1, 1, generator=generator) / cin ** 0.5)
    b1 = builder.param("expand.bias", torch.randn(expanded, generator=generator))
    w2 = builder.param("dw.weight", torch.randn(expanded, 1, kernel, kernel, generator=generator) / kernel)
    b2 = builder.param("dw.bias", torch.randn(expanded, generator=generator))
    y = act(builder.call(aten.conv2d.default, x, w1, b1))
    y = act(builder.call(aten.conv2d.default, y, w2, b2, [stride, stride], [padding, padding], [1, 1], expanded))
    if project:
        w3 = builder.param("project.weight",
                           torch.randn(project, expanded, 1, 1, generator=generator) / expanded ** 0.5)
        y = builder.call(aten.conv2d.default, y, w3)
    builder.output(y)
    return builder.build()


@pytest.fixture(autouse=True)
def nchw_layout(monkeypatch):
    """These kernels are the NCHW path: with depthwise convs the CPU default is the blocked layout
    (lowering/blocked_layout.py; tests/test_blocked_layout.py)."""
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "0")


def optimized(graph, pipeline="default"):
    return PassManager(parse_pipeline(pipeline)).run(graph).graph


def regions(graph, pipeline="fuse"):
    fused = optimized(graph, pipeline)
    return [node.meta.get(REGION) for node in fused.fx_graph.nodes if node.op == "call_function"]


def test_the_depthwise_conv_joins_the_large_expansion_before_it():
    """1x1 + relu6 + depthwise + relu6 is one region; the projection after it starts the next."""
    graph = expansion_graph(1, 16, 96, 112, 112, 2, project=24)
    assert regions(graph) == [0, 0, 0, 0, 1]
    assert regions(graph, "fuse{depthwise=false}") == [0, 0, 1, 1, 2]


def test_a_small_expansion_stays_a_separate_kernel():
    """Below POINTWISE_DEPTHWISE_MIN_BYTES the two kernels are faster apart (fuse_regions.py)."""
    graph = expansion_graph(1, 32, 192, 28, 28, 1)
    assert 192 * 28 * 28 * 4 < POINTWISE_DEPTHWISE_MIN_BYTES
    assert regions(graph) == [0, 0, 1, 1]


def test_only_a_pointwise_conv_takes_the_depthwise_conv():
    """A 3x3 conv before the depthwise one (not 1x1) keeps its own region."""
    builder = ir.GraphBuilder("dense_then_depthwise")
    x = builder.input("x", (1, 8, 128, 128), torch.float32)
    y = builder.call(aten.conv2d.default, x, builder.param("a.weight", torch.randn(32, 8, 3, 3)), None,
                     [1, 1], [1, 1])
    y = builder.call(aten.conv2d.default, y, builder.param("b.weight", torch.randn(32, 1, 3, 3)), None,
                     [1, 1], [1, 1], [1, 1], 32)
    builder.output(y)
    assert regions(builder.build()) == [0, 1]


@pytest.mark.parametrize("batch, cin, expanded, height, width, stride, padding, kernel, activation", [
    (1, 16, 96, 112, 112, 2, 1, 3, "relu6"),   # MobileNetV2's first expansion (4.8 MB), stride 2
    (1, 24, 144, 56, 56, 1, 1, 3, "relu6"),    # its 56x56 expansion, stride 1
    (2, 8, 36, 64, 65, 1, 1, 3, "relu"),       # batch 2, 36 channels (blocks of 4), odd width
    (1, 12, 80, 57, 58, 2, 1, 3, "none"),      # no activation, odd height, stride 2
    (1, 8, 40, 81, 83, 1, 0, 3, "relu6"),      # no padding: the depthwise reads the activation
    (1, 8, 64, 64, 64, 2, 2, 5, "relu6"),      # 5x5, stride 2
    (1, 48, 96, 64, 64, 1, 1, 3, "relu6"),     # 48 input channels: the 1x1's weight packed by channel blocks
])
@pytest.mark.parametrize("target", ["x86", AVX2_TARGET], ids=["host", "avx2"])
def test_fused_expansion_matches_pytorch(batch, cin, expanded, height, width, stride, padding, kernel, activation,
                                         target):
    graph = expansion_graph(batch, cin, expanded, height, width, stride, padding, kernel, activation)
    assert len(set(regions(graph))) == 1
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    tvm_target = resolve_target(target).tvm_target()
    kernels = []  # the fused kernel before the schedule rules (the rules replace it in the module)

    def keep_unscheduled(mod):
        kernels.extend(f for _, f in mod.functions_items()
                       if isinstance(f, tirx.PrimFunc) and "grouped_conv2d" in f.script())
        return mod

    _, lowered, _ = lower(optimized(graph), tvm_target, before_rules=keep_unscheduled)
    assert kernel_launches(lowered) == 1
    assert len(kernels) == 1
    with tvm_target:  # our rule takes it (not TVM's reduction rule, which would too, slowly)
        assert PointwiseDepthwiseRule().apply(kernels[0], tvm_target, False) is not None


def test_gpu_targets_keep_two_kernels():
    """Only the CPU rules schedule the pair as one kernel; a CUDA build splits the region again."""
    graph = optimized(expansion_graph(1, 16, 96, 112, 112, 2))
    _, cpu, _ = lower(graph, resolve_target("x86").tvm_target())
    _, gpu, _ = lower(graph, resolve_target("cuda").tvm_target())
    assert (kernel_launches(cpu), kernel_launches(gpu)) == (1, 2)


def test_mobilenet_v2_fuses_its_large_expansions(tmp_path):
    """Three pairs: 16 -> 96 at 112x112 and the two 24 -> 144 at 56x56; 54 - 3 kernel calls."""
    compiled = slimgraph.compile("mobilenet_v2", check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    fused = [f for _, f in compiled.lowered.functions_items()
             if isinstance(f, tirx.PrimFunc) and "grouped_conv2d" in f.script() and "conv2d_nchw" in f.script()]
    assert len(fused) == 3 and kernel_launches(compiled.lowered) == 51


@pytest.mark.skipif(not aarch64.can_run(), reason="needs g++-aarch64-linux-gnu and qemu-user (Debian packages)")
def test_fused_expansion_on_arm64_under_qemu():
    graph = expansion_graph(1, 16, 64, 72, 72, 2)
    compiled = slimgraph.compile(graph, target="arm64", check=True)
    assert compiled.emulated and compiled.report.max_abs_diff <= 1e-4
