"""Property tests over random graphs: every generated graph verifies, prints, parses back equal,
and the parsed graph computes the same values."""
import operator

import torch
from hypothesis import given, settings, strategies as st

from slimgraph import ir
from slimgraph.ir.equality import graph_difference
from slimgraph.ir.verify import verify

aten = torch.ops.aten
UNARY = [aten.relu.default, aten.sigmoid.default, aten.tanh.default, aten.neg.default, aten.exp.default]


@st.composite
def random_graphs(draw):
    channels = draw(st.integers(1, 4))
    builder = ir.GraphBuilder("random")
    values = [builder.input("x", (1, channels, 3, 3), torch.float32)]
    for step in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "scalar", "conv", "permute", "split", "softmax"]))
        x = draw(st.sampled_from(values))
        source = f"step{step}"
        if kind == "unary":
            values.append(builder.call(draw(st.sampled_from(UNARY)), x, source=source))
        elif kind == "binary":
            y = draw(st.sampled_from([v for v in values if v.meta["val"].shape == x.meta["val"].shape]))
            op = draw(st.sampled_from([aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor]))
            values.append(builder.call(op, x, y, source=source))
        elif kind == "scalar":
            scalar = draw(st.floats(-4, 4, allow_nan=False, width=32))
            values.append(builder.call(aten.mul.Tensor, x, scalar, source=source))
        elif kind == "conv":
            weight = builder.param(f"conv{step}.weight", torch.randn(channels, x.meta["val"].shape[1], 1, 1))
            values.append(builder.call(aten.conv2d.default, x, weight, None, [1, 1], [0, 0], source=source))
        elif kind == "permute":
            there = builder.call(aten.permute.default, x, [0, 2, 3, 1], source=source)
            values.append(builder.call(aten.permute.default, there, [0, 3, 1, 2], source=source))
        elif kind == "split" and x.meta["val"].shape[2] > 1:
            rows = x.meta["val"].shape[2]
            parts = builder.call(aten.split_with_sizes.default, x, [1, rows - 1], 2, source=source)
            first = builder.call(operator.getitem, parts, 1, source=source)
            values.append(builder.call(aten.cat.default, [first, first], 2, source=source))
        elif kind == "softmax":
            values.append(builder.call(aten.softmax.int, x, draw(st.integers(-4, 3)), source=source))
    outputs = draw(st.lists(st.sampled_from(values[1:] or values), min_size=1, max_size=2, unique=True))
    builder.output(*outputs)
    return builder.build()


@settings(max_examples=60, deadline=None)
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_verify_and_round_trip(graph, seed):
    verify(graph)
    text = ir.print_graph(graph)
    parsed = ir.parse(text, graph.params)
    assert graph_difference(graph, parsed) is None
    assert ir.print_graph(parsed) == text
    inputs = graph.example_inputs(seed)
    for expected, actual in zip(graph.run(*inputs), parsed.run(*inputs)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
