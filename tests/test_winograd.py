"""Winograd F(m x m, 3 x 3) convolution (lowering.winograd): the transform matrices, which convs
take it, and the scheduled kernels against PyTorch on a sweep of shapes and epilogues."""
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tvm import tirx

import slimgraph
from slimgraph import ir
from slimgraph.codegen import aarch64
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import lower
from slimgraph.lowering.cpu_schedules import is_scheduled
from slimgraph.lowering.winograd import GEMM_BLOCK, TRANSFORMS, winograd_tile

aten = torch.ops.aten
AVX2_TARGET = '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": 2}'


@pytest.mark.parametrize("m", sorted(TRANSFORMS))
def test_transforms_compute_the_3x3_correlation_of_a_tile(m):
    """A^T [(G g G^T) * (B^T d B)] A equals the m x m valid correlation of d with g, in float64."""
    b_t, g_mat, a_t = TRANSFORMS[m]
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
        winograd = a_t @ ((g_mat @ g @ g_mat.T) * (b_t @ d @ b_t.T)) @ a_t.T
        direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(winograd, direct, rtol=1e-12, atol=1e-12)


def conv_graph(batch, channels, out_channels, height, width, epilogue):
    builder = ir.GraphBuilder("winograd")
    generator = torch.Generator().manual_seed(channels * 100 + out_channels + height)
    x = builder.input("x", (batch, channels, height, width), torch.float32)
    w = builder.param("conv.weight", torch.randn(out_channels, channels, 3, 3, generator=generator) / (3 * channels ** 0.5))
    b = builder.param("conv.bias", torch.randn(out_channels, generator=generator))
    y = builder.call(aten.conv2d.default, x, w, b, [1, 1], [1, 1], [1, 1], 1)
    if epilogue == "residual":  # ResNet's basic block ends with conv + bias + identity, then ReLU
        y = builder.call(aten.relu.default, builder.call(aten.add.Tensor, y, x))
    elif epilogue == "relu6":
        y = builder.call(aten.hardtanh.default, y, 0.0, 6.0)
    builder.output(y)
    return builder.build()


@pytest.mark.parametrize("batch, channels, out_channels, height, width, epilogue, m", [
    (1, 64, 64, 56, 56, "residual", 4),   # ResNet-18's layer1 conv: 14 tiles of 4 per row
    (1, 32, 32, 32, 32, "relu6", 4),      # 8 x 8 tiles of 4
    (2, 32, 32, 28, 28, "residual", 4),   # batch 2; ResNet-18's layer2 size: 7 x 7 tiles of 4 per image
    (1, 48, 48, 16, 16, "relu6", 2),      # 4 x 4 tiles of 4 are too few (MIN_TILES): 8 x 8 tiles of 2
    (1, 128, 128, 14, 14, "none", 2),     # ResNet-18's layer3 size: 14 is no multiple of 4
    (1, 256, 256, 14, 14, "residual", 2),  # ResNet-18's layer3 conv: V as [eps, nu, tile group, ci, tile] (AVX-512)
    (1, 32, 24, 28, 30, "relu6", 2),      # 24 output channels: blocks of 8 lanes; not square
    (1, 20, 20, 32, 40, "none", 4),       # 20 channels: blocks of 4; 40 wide: 10 tiles per row
    (2, 128, 128, 7, 7, "residual", 2),   # batch 2, layer4's size: 2 x 4 x 4 tiles of 2 past the map; V by groups
    (2, 64, 64, 9, 13, "relu6", 2),       # batch 2, odd sides
])
@pytest.mark.parametrize("target", ["x86", AVX2_TARGET], ids=["host", "avx2"])
def test_winograd_conv_matches_pytorch(batch, channels, out_channels, height, width, epilogue, m, target):
    graph = conv_graph(batch, channels, out_channels, height, width, epilogue)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    kernels = [f for _, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and GEMM_BLOCK in f.script()]
    assert len(kernels) == 1 and is_scheduled(kernels[0])
    alpha = f"T.int64({m + 2})"  # alpha x alpha GEMMs: the tile size m the rule chose
    assert f"winograd_bgemm = T.sblock_alloc_buffer(({alpha}, {alpha}," in kernels[0].script()


@pytest.mark.parametrize("channels, size, v_shape", [
    (256, 14, (4, 4, 7, 256, 7)),    # layer3: 2 x 7 tiles, 256 lines of V + 512 of U per group: V by groups of 7 tiles
    (128, 28, (6, 6, 128, 1, 7, 7)),  # layer2 (m = 4): 128 x 3 lines fit L1: V stays [eps, nu, ci, n, ty, tx]
])
def test_the_transformed_data_is_laid_out_by_tile_group_where_a_group_outgrows_l1(monkeypatch, channels, size, v_shape):
    """The GEMM's tile of 2 channel blocks x 7 tiles reads, per input channel, 7 tiles of V and 2 vectors
    of U. Where those lines exceed L1 over the input channels, V is stored tile group first, so a group's
    7 tiles of all channels are one contiguous run; with TILE_GROUPS_OUTSIDE_CHANNELS off it never is."""
    from slimgraph.lowering import winograd
    from slimgraph.tests.test_blocked_layout import AVX512_TARGET

    def v_buffer():
        _, optimized, _ = lower(conv_graph(1, channels, channels, size, size, "none"),
                                resolve_target(AVX512_TARGET).tvm_target())
        (script,) = [f.script() for _, f in optimized.functions_items()
                     if isinstance(f, tirx.PrimFunc) and GEMM_BLOCK in f.script()]
        line = re.search(r"winograd_data = T\.sblock_alloc_buffer\(.*", script).group(0)
        return tuple(int(e) for e in re.findall(r"T\.int64\((\d+)\)", line))

    assert v_buffer() == v_shape
    monkeypatch.setattr(winograd, "TILE_GROUPS_OUTSIDE_CHANNELS", False)
    assert len(v_buffer()) == 6  # [eps, nu, ci, n, ty, tx]


def Conv(channels=64, out_channels=64, size=56, kernel=3, stride=1, padding=1, dilation=1, groups=1):
    """A stand-in for the relax call winograd_tile reads: shapes and conv attributes."""
    def typed(dims):
        return SimpleNamespace(ty=SimpleNamespace(shape=[tirx.IntImm("int64", d) for d in dims]))

    return SimpleNamespace(
        args=[typed([1, channels, size, size]), typed([out_channels, channels // groups, kernel, kernel])],
        attrs=SimpleNamespace(strides=[stride] * 2, padding=[padding] * 4, dilation=[dilation] * 2, groups=groups))


@pytest.mark.parametrize("conv, lanes, expected", [
    (Conv(), 16, 4), (Conv(size=28), 16, 4), (Conv(size=14), 16, 2),
    (Conv(channels=128, out_channels=128, size=16), 16, 2),  # 16 tiles of 4 are too few; 64 of 2
    (Conv(channels=512, out_channels=512, size=7), 16, None),  # ResNet-18's layer4: 16 tiles of 2, too few
    (Conv(channels=128, out_channels=128, size=11), 16, 2),  # 11 rows: the last tile reaches past the map
    (Conv(size=7), 16, None),             # 1.8 M multiply-adds: too little work for four parallel steps
    (Conv(channels=16, out_channels=32, size=8), 16, None),  # the digit CNN's second conv
    (Conv(stride=2), 16, None), (Conv(padding=0), 16, None), (Conv(dilation=2), 16, None),
    (Conv(kernel=5, padding=2), 16, None), (Conv(groups=2), 16, None),
    (Conv(channels=3), 16, None),         # a stem: 3 input channels, too short a reduction
    (Conv(out_channels=6), 16, None),     # channel blocks of 2: too narrow for the vector lanes
    (Conv(out_channels=20), 4, 4),        # blocks of 4 fill NEON's 4 lanes
])
def test_which_convs_take_winograd(conv, lanes, expected):
    assert winograd_tile(conv, lanes) == expected


def test_a_symbolic_size_keeps_the_direct_conv():
    conv = Conv()
    conv.args[0].ty.shape[0] = tirx.Var("batch", "int64")
    assert winograd_tile(conv, 16) is None


def test_resnet18_uses_winograd_where_it_applies(tmp_path):
    """Its 3x3 stride-1 convs on 56, 28 and 14 wide maps take Winograd (6 distinct kernels: with and
    without the residual add, per map size); layer4's 7 x 7 ones (16 tiles: MIN_TILES), the stem, the
    stride-2 convs and the 1x1 downsamples keep the packed direct conv."""
    compiled = slimgraph.compile("resnet18", dump_dir=tmp_path, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    optimized = (tmp_path / "relax-optimized.py").read_text()
    assert optimized.count(f'sblock("{GEMM_BLOCK}_update"') == 6
    assert optimized.count('sblock("conv2d_packed_update"') == 9


@pytest.mark.skipif(not aarch64.can_run(),
                    reason="needs g++-aarch64-linux-gnu and qemu-user (Debian packages)")
@pytest.mark.parametrize("shape", [(1, 32, 32, 32, 32, "residual", 4), (1, 64, 40, 14, 14, "relu6", 2)])
def test_winograd_on_arm64_under_qemu(shape):
    """NEON: channel blocks of 4 lanes, the same rule; run under qemu-aarch64 against PyTorch."""
    graph = conv_graph(*shape[:-1])
    compiled = slimgraph.compile(graph, target="arm64", check=True)
    assert compiled.emulated and compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target("arm64").tvm_target())
    kernels = [f for _, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and GEMM_BLOCK in f.script()]
    assert len(kernels) == 1 and re.search(r'"slimgraph.lanes": (T.int64\()?4\b', kernels[0].script())


def test_a_winograd_kernel_tunes_and_the_database_replays_it(tmp_path):
    """MetaSchedule takes the Winograd kernel (the rule schedule measured as its starting point);
    a later compile applies the record without search and still matches PyTorch."""
    from slimgraph.codegen.tuning import TuningOptions

    graph = conv_graph(1, 32, 32, 22, 22, "residual")  # m = 2: 11 x 11 tiles
    database = tmp_path / "db"
    tuned = slimgraph.compile(graph, tuning=TuningOptions(trials=2, database=database), check=True)
    assert tuned.report.max_abs_diff <= 1e-5 and len(tuned.report.kernels) == 1
    assert len((database / "database_workload.json").read_text().splitlines()) == 1
    replayed = slimgraph.compile(graph, tuning=TuningOptions(database=database), check=True)
    assert replayed.report.tuning.applied == replayed.report.kernels and not replayed.report.tuning.tuned
    assert replayed.report.max_abs_diff <= 1e-5
