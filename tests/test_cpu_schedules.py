"""CPU schedule rules: every scheduled kernel still computes what the IR says, on a sweep of
shapes (odd sizes, sizes no vector width divides, batch > 1, fused epilogues)."""
import re

import pytest
import torch

from tvm import tirx

import slimgraph
from slimgraph import ir
from slimgraph.codegen.targets import resolve_target, x86_host
from slimgraph.lowering import lower
from slimgraph.lowering.cpu_schedules import is_scheduled
from slimgraph.lowering.conv_packed import channel_block, choose_tile
from slimgraph.lowering.schedule_common import register_budget, vector_lanes
from slimgraph.lowering.winograd import MIN_MULTIPLY_ADDS, MIN_TILES

aten = torch.ops.aten


def dense_graph(batch, m, k, n, epilogue):
    builder = ir.GraphBuilder("dense")
    generator = torch.Generator().manual_seed(m * 1000 + n)
    x = builder.input("x", (batch, m, k) if batch else (m, k), torch.float32)
    w = builder.param("fc.weight", torch.randn(n, k, generator=generator))
    b = builder.param("fc.bias", torch.randn(n, generator=generator))
    y = builder.call(aten.linear.default, x, w, b)
    if epilogue == "gelu":
        y = builder.call(aten.gelu.default, y)
    elif epilogue == "residual":
        y = builder.call(aten.relu.default, builder.call(aten.add.Tensor, y, builder.param("r", torch.randn(n))))
    builder.output(y)
    return builder.build()


def batched_matmul_graph(batch, m, k, n):
    builder = ir.GraphBuilder("bmm")
    a = builder.input("a", (batch, 2, m, k), torch.float32)
    b = builder.input("b", (batch, 2, k, n), torch.float32)
    builder.output(builder.call(aten.softmax.int, builder.call(aten.matmul.default, a, b), -1))
    return builder.build()


@pytest.mark.parametrize("batch, m, k, n, epilogue", [
    (0, 128, 256, 1024, "gelu"),     # the encoder's FFN shape
    (1, 128, 64, 256, "none"),
    (2, 7, 5, 33, "residual"),       # nothing divides by the vector width
    (3, 12, 17, 48, "gelu"),
    (0, 2, 9, 3, "none"),
    (1, 1, 64, 10, "none"),          # batch-1 dense: TVM's GEMV rule
])
def test_dense_rule_matches_the_reference(batch, m, k, n, epilogue):
    graph = dense_graph(batch, m, k, n, epilogue)
    compiled = slimgraph.compile(graph, check=True)
    assert compiled.report.max_abs_diff <= 1e-4 * max(1.0, k ** 0.5)
    _, optimized, _ = lower(graph, x86_host().tvm_target())
    dense_kernels = [f for gv, f in optimized.functions_items() if "matmul" in gv.name_hint]
    if m > 1:
        assert dense_kernels and all(is_scheduled(f) for f in dense_kernels)


def test_a_classifier_keeps_its_accumulators_in_whole_vectors():
    """A batch-1 linear to 1000 outputs (MobileNetV2's classifier): the weight in 8-wide panels, a tile of
    5 panels (40 columns) on AVX-512. Its epilogue runs in whole 8-wide vectors: as one 40-float vector,
    LLVM split the tile into scalars and rebuilt the accumulators lane by lane at every k (1.5x slower)."""
    from slimgraph.codegen.build import generated_source
    from slimgraph.tests.test_blocked_layout import AVX512_TARGET

    compiled = slimgraph.compile(dense_graph(0, 1, 256, 1000, "none"), target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4 * 16
    (script,) = [f.script() for gv, f in compiled.lowered.functions_items() if gv.name_hint.startswith("region")]
    assert "T.vectorized(T.int64(8))" in script and "T.vectorized(T.int64(40))" not in script
    llvm_ir = generated_source(compiled.executable, resolve_target(AVX512_TARGET), "ll")
    assert "<40 x float>" not in llvm_ir


@pytest.mark.parametrize("batch, m, k, n", [(1, 128, 64, 128), (2, 5, 3, 7)])
def test_batched_matmul_is_scheduled_and_exact(batch, m, k, n):
    graph = batched_matmul_graph(batch, m, k, n)
    compiled = slimgraph.compile(graph, check=True)
    assert compiled.report.max_abs_diff <= 1e-5


AVX2_TARGET = '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": 2}'


def conv_graph(batch, cin, cout, size, kernel, stride, padding, groups, dilation=1):
    builder = ir.GraphBuilder("conv")
    generator = torch.Generator().manual_seed(cin * 100 + cout)
    x = builder.input("x", (batch, cin, size, size + 1), torch.float32)
    w = builder.param("conv.weight", torch.randn(cout, cin // groups, kernel, kernel, generator=generator))
    b = builder.param("conv.bias", torch.randn(cout, generator=generator))
    y = builder.call(aten.conv2d.default, x, w, b, [stride, stride], [padding, padding], [dilation, dilation], groups)
    builder.output(builder.call(aten.hardtanh.default, y, 0.0, 6.0))
    return builder.build()


@pytest.mark.parametrize("batch, cin, cout, size, kernel, stride, padding, groups", [
    (1, 64, 64, 56, 3, 1, 1, 1),      # ResNet-18's layer1 conv (57 wide): Winograd, tiles past the edge
    (1, 3, 16, 31, 7, 2, 3, 1),       # a stem: odd size, stride 2
    (2, 5, 7, 9, 3, 1, 0, 1),         # batch 2, channels no tile divides
    (1, 32, 32, 15, 3, 2, 1, 32),     # depthwise, stride 2
    (1, 8, 12, 10, 1, 1, 0, 1),       # 1x1
    (1, 8, 8, 6, 3, 1, 1, 2),         # grouped
    (1, 16, 24, 14, 3, 1, 2, 1),      # 24 channels: blocks of 8 with 16 lanes; dilation 2 below
    (2, 32, 48, 7, 3, 1, 1, 1),       # batch 2, 7 columns (too small for Winograd)
    (1, 24, 24, 13, 3, 1, 1, 24),     # depthwise, 14 columns: one partial vector per row
    (2, 16, 16, 11, 3, 2, 1, 16),     # depthwise, batch 2, stride 2, 6 columns
    (1, 16, 16, 12, 5, 2, 2, 16),     # depthwise 5x5, stride 2, odd padded width (17): parity planes differ
    (1, 8, 8, 9, 3, 2, 0, 8),         # depthwise, stride 2, no padding: no border to split off
    (1, 8, 16, 10, 3, 2, 1, 4),       # grouped, stride 2
    (1, 4, 8, 31, 1, 1, 0, 1),        # 4 multiply-adds per output, 32 columns: the NCHW rule
    (1, 3, 32, 31, 3, 2, 1, 1),       # a MobileNet stem: 27 multiply-adds, stride 2: the packed conv
])
@pytest.mark.parametrize("target", ["x86", AVX2_TARGET], ids=["host", "avx2"])
def test_conv_rule_matches_the_reference(batch, cin, cout, size, kernel, stride, padding, groups, target):
    dilation = 2 if cout == 24 else 1
    graph = conv_graph(batch, cin, cout, size, kernel, stride, padding, groups, dilation)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    convs = [f for gv, f in optimized.functions_items()
             if isinstance(f, tirx.PrimFunc) and re.search("conv2d|winograd_bgemm", f.script())]
    assert convs and all(is_scheduled(f) for f in convs)
    packed = [f for f in convs if "conv2d_packed" in f.script()]
    winograd = [f for f in convs if "winograd_bgemm" in f.script()]
    out_width = (size + 1 + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    lanes = vector_lanes(resolve_target(target).tvm_target())
    short_reduction = stride == 1 and cin * kernel * kernel <= 2 * lanes and out_width % min(lanes, 8) == 0
    takes_winograd = ((kernel, stride, padding, dilation, groups) == (3, 1, 1, 1, 1) and cin >= 16  # test_winograd.py
                      and cin * cout * size * (size + 1) * 9 >= MIN_MULTIPLY_ADDS
                      and batch * -(-size // 2) * -(-(size + 1) // 2) >= MIN_TILES)
    assert bool(winograd) == takes_winograd
    assert bool(packed) == (groups == 1 and not short_reduction and not takes_winograd)


@pytest.mark.parametrize("blocks, width, budget, expected", [
    (4, 56, 24, (4, 4)), (32, 7, 24, (2, 7)), (16, 14, 24, (2, 7)),
    (3, 13, 12, (3, 1)), (1, 13, 24, (1, 13)), (1, 1, 12, (1, 1)),
])
def test_conv_tile_fits_the_register_budget(blocks, width, budget, expected):
    v, owt = choose_tile(blocks, width, budget)
    assert (v, owt) == expected
    assert v * owt <= budget and blocks % v == 0 and width % owt == 0


def test_tiles_come_from_the_target_not_this_machine():
    avx512 = resolve_target('{"kind": "llvm", "mattr": ["+avx512f"]}').tvm_target()
    avx2 = resolve_target(AVX2_TARGET).tvm_target()
    neon = resolve_target('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}').tvm_target()
    assert [register_budget(t) for t in (avx512, avx2, neon)] == [24, 12, 24]
    assert [channel_block(64, vector_lanes(t)) for t in (avx512, avx2, neon)] == [16, 8, 4]
    assert channel_block(24, 16) == 8 and channel_block(7, 16) == 1


def test_vector_width_comes_from_the_target():
    assert vector_lanes(resolve_target('{"kind": "llvm", "mattr": ["+avx512f"]}').tvm_target()) == 16
    assert vector_lanes(resolve_target('{"kind": "llvm", "mattr": ["+avx2", "+fma"]}').tvm_target()) == 8
    assert vector_lanes(resolve_target('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}')
                        .tvm_target()) == 4


def test_encoder_kernels_are_scheduled():
    compiled = slimgraph.compile("bert_encoder", check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    unscheduled = [n for n in compiled.report.lowering_notes if "no schedule rule" in n]
    assert len(unscheduled) < len(compiled.report.kernels) / 2


def test_stride2_depthwise_reads_a_parity_split_plane_with_a_branch_free_interior(monkeypatch):
    """The padding of a stride-2 depthwise conv is stored by column parity and partitioned: its
    interior copy has no condition per element and copies both parities of a column pair in one
    step (contiguous input, which LLVM vectorizes; a vectorized loop per parity was a gather).
    The NCHW path: a model with depthwise convs is otherwise blocked (test_blocked_layout.py)."""
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "0")
    graph = conv_graph(1, 32, 32, 15, 3, 2, 1, 32)
    _, optimized, _ = lower(graph, resolve_target("x86").tvm_target())
    (conv,) = [f for gv, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and "pad_temp" in f.script()]
    text = conv.script()
    assert "T.int64(2), T.int64(9)" in text  # pad_temp[1, 32, 17, 2, 9]: 17 columns split by parity
    interior = re.search(r"for (\w+) in range\(T\.int64\(1\), T\.int64\(8\)\):\n +for (\w+) in range\(T\.int64\(2\)\):"
                         r"\n +with T\.sblock\(\"(\w+)\"\)", text)
    assert interior and interior.group(3).startswith("pad_temp") and "_partition" in text  # columns, then parity


@pytest.mark.parametrize("stride, packed", [(2, True), (1, False)])
def test_a_stem_with_a_short_reduction_takes_the_packed_conv_only_when_strided(stride, packed):
    """27 multiply-adds per output (3 -> 32, 3x3): with stride 2 the packed conv (inputs broadcast,
    weights packed), with stride 1 the NCHW rule (vectors along the width)."""
    graph = conv_graph(1, 3, 32, 31, 3, stride, 1, 1)
    _, optimized, _ = lower(graph, resolve_target("x86").tvm_target())
    (conv,) = [f for gv, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and "pad_temp" in f.script()]
    assert ("conv2d_packed" in conv.script()) == packed


@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (1, 512, 7, 7), (2, 3, 5, 100), (1, 3, 224, 224), (37,)])
def test_elementwise_rule_keeps_vectors_inside_rows(shape):
    """A standalone quantize (what a residual add leaves between integer convs) matches PyTorch's
    rounding exactly, and its vectors load and store contiguous rows: no gathers, no byte scatters
    (a row's or plane's last partial vector may end in a byte store; a scatter takes one a lane)."""
    from slimgraph.codegen.build import generated_source

    builder = ir.GraphBuilder("quantize")
    x = builder.input("x", shape, torch.float32)
    builder.output(builder.call(torch.ops.slimgraph.quantize_per_tensor.default, x, 0.0125, 3, 0, 255, "uint8"))
    graph = builder.build()
    compiled = slimgraph.compile(graph, check=True, pipeline="none")
    assert compiled.report.max_abs_diff == 0
    assert compiled.report.lowering_notes == []  # scheduled by a rule
    assembly = generated_source(compiled.executable, x86_host(), "asm")
    assert "vgatherdps" not in assembly and assembly.count("vpextrb") < 8


def max_pool_graph(shape, kernel, stride, padding, ceil_mode=False, dilation=1):
    builder = ir.GraphBuilder("pool")
    x = builder.input("x", shape, torch.float32)
    builder.output(builder.call(aten.max_pool2d.default, x, [kernel, kernel], [stride, stride], [padding, padding],
                                [dilation, dilation], ceil_mode))
    return builder.build()


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode, dilation", [
    ((1, 64, 112, 112), 3, 2, 1, False, 1),  # ResNet-18's pool
    ((2, 5, 9, 13), 2, 2, 0, False, 1),      # batch 2, odd sizes, no padding
    ((1, 8, 10, 11), 3, 1, 1, False, 1),     # stride 1
    ((1, 3, 7, 7), 7, 1, 3, False, 1),       # a window as large as the plane, padding on every side
    ((1, 4, 12, 12), 3, 2, 1, False, 2),     # dilation: over the padded plane
    ((1, 4, 9, 9), 3, 2, 0, True, 1),        # ceil mode: TVM's own legalization
])
def test_max_pool_matches_pytorch_and_reads_whole_vectors(shape, kernel, stride, padding, ceil_mode, dilation):
    """Max pooling with dilation 1 is separable (lowering/pooling.py): a vectorized row stage over clamped rows,
    then the output columns, split where a window reaches past the plane; with dilation, a reduction over the padded
    plane (padding with the lowest value, a branch-free vectorized interior) scheduled by the direct conv rule;
    ceil mode keeps TVM's legalization. All match PyTorch, also where every value is negative (clamping or padding
    never brings in a value from outside the window)."""
    graph = max_pool_graph(shape, kernel, stride, padding, ceil_mode, dilation)
    compiled = slimgraph.compile(graph, target="x86", pipeline="none", check=False)
    x = -torch.rand(shape) - 1.0
    torch.testing.assert_close(torch.as_tensor(compiled(x.numpy())[0]), graph.run(x)[0], rtol=0, atol=0)
    _, optimized, _ = lower(graph, resolve_target("x86").tvm_target())
    (pool,) = [f for gv, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert is_scheduled(pool)
    script = pool.script()
    assert ("pool_rows" in script) == (not ceil_mode and dilation == 1)
    assert "pad_temp" in script or dilation == 1  # the padded plane
    assert ("_partition" in script) == (not ceil_mode and padding > 0)
    if "pool_rows" in script:  # the row stage in whole vectors
        assert "T.vectorized(T.int64(16))" in script or shape[-1] % 16


def test_a_classifier_gemv_keeps_several_weight_panels_in_registers():
    """1280 -> 1000 at batch 1, weights in 8-wide panels (16 lanes do not divide 1000): tiles of 5
    panels (40 outputs, 5 independent accumulators), so 25 parallel tiles, not 125 of one panel."""
    graph = dense_graph(0, 1, 1280, 1000, "none")
    compiled = slimgraph.compile(graph, check=True)
    assert compiled.report.max_abs_diff <= 1e-4 * 1280 ** 0.5  # outputs of about 36: float32 rounding
    _, optimized, _ = lower(graph, x86_host().tvm_target())
    script = next(f.script() for gv, f in optimized.functions_items() if "matmul" in gv.name_hint)
    assert "T.parallel(T.int64(25))" in script and "T.vectorized(T.int64(8))" in script
