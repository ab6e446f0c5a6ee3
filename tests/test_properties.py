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


@st.composite
def model_like_graphs(draw):
    """conv / batch-norm / linear / elementwise / reshape / permute chains with constant weights."""
    builder = ir.GraphBuilder("net")
    channels = draw(st.integers(1, 4))
    x = builder.input("x", (2, channels, 4, 4), torch.float32)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 1000)))

    def param(name, *shape, positive=False):
        value = torch.randn(*shape, generator=generator)
        return builder.param(name, value.abs() + 0.5 if positive else value)

    for step in range(draw(st.integers(1, 6))):
        c = x.meta["val"].shape[1]
        kind = draw(st.sampled_from(["conv", "bn", "affine", "act", "pad-conv", "permute-pair"]))
        if kind == "conv":
            out = draw(st.integers(1, 4))
            bias = param(f"c{step}.bias", out) if draw(st.booleans()) else None
            x = builder.call(aten.conv2d.default, x, param(f"c{step}.weight", out, c, 3, 3), bias, [1, 1], [1, 1])
        elif kind == "bn":
            x = builder.call(aten.batch_norm.default, x, param(f"bn{step}.weight", c), param(f"bn{step}.bias", c),
                             param(f"bn{step}.running_mean", c), param(f"bn{step}.running_var", c, positive=True),
                             False, 0.1, 1e-5, False)
        elif kind == "affine":
            op = draw(st.sampled_from([aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor]))
            x = builder.call(op, x, param(f"k{step}", c, 1, 1))
        elif kind == "act":
            x = builder.call(draw(st.sampled_from([aten.relu.default, aten.sigmoid.default, aten.hardswish.default])), x)
        elif kind == "pad-conv":
            padded = builder.call(aten.constant_pad_nd.default, x, [1, 1, 1, 1], 0.0)
            x = builder.call(aten.conv2d.default, padded, param(f"pc{step}.weight", c, c, 3, 3), None, [1, 1], [0, 0])
        else:
            there = builder.call(aten.permute.default, x, [0, 2, 3, 1])
            x = builder.call(aten.permute.default, there, [0, 3, 1, 2])
    flat = builder.call(aten.flatten.using_ints, x, 1)
    features = flat.meta["val"].shape[1]
    hidden = builder.call(aten.linear.default, flat, param("fc1.weight", 5, features), param("fc1.bias", 5))
    if draw(st.booleans()):
        hidden = builder.call(aten.batch_norm.default, hidden, param("bnf.weight", 5), param("bnf.bias", 5),
                              param("bnf.running_mean", 5), param("bnf.running_var", 5, positive=True),
                              False, 0.1, 1e-5, False)
    out = builder.call(aten.linear.default, hidden, param("fc2.weight", 3, 5), None)
    builder.output(out)
    return builder.build()


@settings(max_examples=40, deadline=None)
@given(graph=model_like_graphs(), pipeline=st.sampled_from(["fold-bn", "fold-constants", "fuse", "default",
                                                           "fuse,fold-bn,fuse"]))
def test_passes_keep_outputs_on_random_models(graph, pipeline):
    from slimgraph.rewrites import PassManager
    from slimgraph.rewrites.instruments import CheckNumerics, VerifyEach

    result = PassManager(pipeline, [VerifyEach(), CheckNumerics()]).run(graph)  # raises naming pass + node
    inputs = graph.example_inputs(1)
    torch.testing.assert_close(result.graph.run(*inputs)[0], graph.run(*inputs)[0], rtol=1e-4, atol=1e-4)
