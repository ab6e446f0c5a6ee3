"""exp / erf / tanh / softmax / GELU legalize without libm's scalar calls, and stay accurate."""
import pytest
import torch

import slimgraph
from slimgraph import ir
from slimgraph.codegen.targets import x86_host
from slimgraph.lowering import lower

aten = torch.ops.aten


def unary_graph(op, *args):
    builder = ir.GraphBuilder("fast_math")
    x = builder.input("x", (2, 8, 77), torch.float32)
    builder.output(builder.call(op, builder.call(aten.mul.Tensor, x, 4.0), *args))
    return builder.build()


@pytest.mark.parametrize("op, args, scalar_call", [
    (aten.exp.default, (), "T.exp("),
    (aten.tanh.default, (), "T.tanh("),
    (aten.gelu.default, (), "T.erf("),
    (aten.softmax.int, (-1,), "T.exp("),
])
def test_fast_math_is_accurate_and_vectorizable(op, args, scalar_call):
    graph = unary_graph(op, *args)
    compiled = slimgraph.compile(graph, check=False)
    x = torch.randn(2, 8, 77, generator=torch.Generator().manual_seed(0))
    expected, actual = graph.module()(x)[0], compiled(x)[0]
    torch.testing.assert_close(actual, expected, rtol=2e-6, atol=1e-6)
    _, optimized, _ = lower(graph, x86_host().tvm_target())
    assert scalar_call not in optimized.script()
