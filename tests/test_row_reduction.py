"""Row reductions (lowering.row_reduction): layer norm, softmax and RMS norm with vectorized
partial sums, against PyTorch, and the kernels TVM's own reduction rule keeps."""
import pytest
import torch
from tvm import tirx

import slimgraph
from slimgraph import ir
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import lower

aten = torch.ops.aten
AVX2_TARGET = '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": 2}'


def row_graph(kind, shape):
    builder = ir.GraphBuilder(kind)
    generator = torch.Generator().manual_seed(shape[-1])
    x = builder.input("x", shape, torch.float32)
    width = shape[-1]
    if kind == "layer_norm":
        weight = builder.param("ln.weight", torch.randn(width, generator=generator))
        bias = builder.param("ln.bias", torch.randn(width, generator=generator))
        y = builder.call(aten.layer_norm.default, x, [width], weight, bias, 1e-5)
    elif kind == "softmax":
        y = builder.call(aten.softmax.int, builder.call(aten.mul.Tensor, x, 4.0), -1)
    else:  # RMS norm, written out as a model would: x * rsqrt(mean(x^2) + eps)
        mean = builder.call(aten.mean.dim, builder.call(aten.mul.Tensor, x, x), [-1], True)
        y = builder.call(aten.mul.Tensor, x, builder.call(aten.rsqrt.default, builder.call(aten.add.Tensor, mean, 1e-6)))
    builder.output(y)
    return builder.build()


def partial_sum_kernels(graph, target):
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    return [f for _, f in optimized.functions_items() if isinstance(f, tirx.PrimFunc) and '_rf"' in f.script()]


@pytest.mark.parametrize("kind", ["layer_norm", "softmax"])
@pytest.mark.parametrize("shape, vectorized", [
    ((1, 128, 256), True),     # the encoder's layer norm
    ((3, 5, 64), True),        # batch 3, odd row count
    ((2, 7, 48), True),        # 48: 3 AVX-512 vectors per row
    ((1, 9, 100), False),      # 100: no multiple of 16 (nor of AVX2's 8): TVM's rule
    ((4, 16), False),          # rows shorter than two vectors: TVM's rule
])
@pytest.mark.parametrize("target", ["x86", AVX2_TARGET], ids=["host", "avx2"])
def test_row_reductions_match_pytorch(kind, shape, vectorized, target):
    graph = row_graph(kind, shape)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 2e-5
    assert not [n for n in compiled.report.lowering_notes if "no schedule rule" in n]
    lanes = 16 if target == "x86" else 8
    expected = shape[-1] % lanes == 0 and shape[-1] >= 2 * lanes
    assert bool(partial_sum_kernels(graph, target)) == expected
    if target == "x86":
        assert expected == vectorized


def test_rms_norm_sums_its_squares_in_vectors():
    """x * rsqrt(mean(x^2) + eps): the square is its own kernel (fusion keeps the elementwise op
    before a reduction apart), the mean and the scaling one row-reduction kernel."""
    graph = row_graph("rms_norm", (1, 128, 256))
    compiled = slimgraph.compile(graph, check=True)
    assert compiled.report.max_abs_diff <= 2e-5
    assert len(partial_sum_kernels(graph, "x86")) == 1


def test_partial_sums_are_vectors_of_the_target_lanes():
    """Each row's partial sums are one vector: the rf block's lane loop is vectorized, 16 wide."""
    kernel, = partial_sum_kernels(row_graph("layer_norm", (1, 128, 256)), "x86")
    script = kernel.script()
    assert script.count("T.vectorized(T.int64(16))") >= 3  # two partial sums and the normalized row
