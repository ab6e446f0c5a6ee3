"""The text form: print is stable, parse(print(g)) equals g, save/load keeps parameters."""
import pytest
import torch

from slimgraph import ir
from slimgraph.ir.equality import graph_difference
from slimgraph.ir.errors import ParseError

from .conftest import MODEL_NAMES, imported_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_is_exact_for_builtin_models(name, tmp_path):
    module, inputs, graph = imported_model(name)
    text = ir.print_graph(graph)
    parsed = ir.parse(text, graph.params)
    assert graph_difference(graph, parsed) is None
    assert ir.print_graph(parsed) == text
    path = ir.save(graph, tmp_path / f"{name}.ir")
    loaded = ir.load(path)
    assert graph_difference(graph, loaded) is None
    torch.testing.assert_close(loaded.run(*inputs)[0], module(*inputs), rtol=0, atol=1e-5)


def test_printed_line_format():
    _, _, graph = imported_model("digit_cnn")
    lines = ir.print_graph(graph).splitlines()
    assert lines[0] == 'graph "digit_cnn" {'
    assert '  %x = input() : f32[1,1,8,8]' in lines
    assert '  %conv1_weight = param("conv1.weight") : f32[16,1,3,3]' in lines
    assert ('  %conv2d = aten.conv2d.default(%x, %conv1_weight, %conv1_bias, [1, 1], [1, 1])'
            ' : f32[1,16,8,8] loc("conv1")') in lines
    assert lines[-2] == "  return (%linear_1,)"


HAND_WRITTEN = '''
# a hand-written fixture
graph "tiny" {
  %x = input() : f32[2,4]
  %w = param("fc.weight") : f32[3,4]
  %lin = aten.linear.default(%x, %w) : f32[2,3] loc("fc", "fold-bn")
  %act = aten.leaky_relu.default(%lin, 0.125) : f32[2,3]
  %parts = aten.split_with_sizes.default(%act, [1, 2], 1) : (f32[2,1], f32[2,2])
  %first = getitem(%parts, 0) : f32[2,1]
  %cast = aten.to.dtype(%first, torch.float64) : f64[2,1]
  %big = aten.clamp.default(%act, min=-inf, max=1e+30) : f32[2,3]
  return (%cast, %big)
}
'''


def test_hand_written_text_parses_and_runs():
    weight = torch.randn(3, 4)
    graph = ir.parse(HAND_WRITTEN, {"fc.weight": weight})
    assert ir.provenance_of(graph.node("lin")) == ir.Provenance("fc", ("fold-bn",))
    assert graph.node("big").kwargs == {"min": float("-inf"), "max": 1e30}
    x = torch.randn(2, 4)
    cast, big = graph.run(x)
    expected = torch.nn.functional.leaky_relu(x @ weight.T, 0.125)
    torch.testing.assert_close(cast, expected[:, :1].double())
    torch.testing.assert_close(big, expected)
    assert ir.print_graph(ir.parse(ir.print_graph(graph), graph.params)) == ir.print_graph(graph)


@pytest.mark.parametrize("text, message", [
    ('graph "g" {\n  %y = aten.relu.default(%x) : f32[1]\n}', "<text>:2: use of undefined value %x"),
    ('graph "g" {\n  %x = input() : f32[1]\n  %y = aten.nope.default(%x) : f32[1]\n}', "<text>:3: unknown op 'aten.nope.default'"),
    ('graph "g" {\n  %x = input() : q9[1]\n}', "<text>:2: unknown dtype 'q9'"),
    ('graph "g" {\n  %w = param("missing") : f32[1]\n}', "<text>:2: parameter 'missing' of %w is not in the parameter file"),
    ('graph "g" {\n  %x = input() : f32[1] junk\n}', "<text>:2: unexpected 'junk' after the node's type"),
    ('%x = input() : f32[1]', "<text>:1: expected 'graph'"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ParseError) as info:
        ir.parse(text)
    assert str(info.value).startswith(message)


def test_load_of_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParseError, match="no such IR file"):
        ir.load(tmp_path / "nope.ir")


def test_input_keeps_its_user_name_when_fx_renames_the_node():
    module = torch.nn.Sequential(torch.nn.Linear(4, 2))  # forward(self, input): `input` shadows a builtin
    graph = ir.from_torch(module, (torch.randn(1, 4),), "seq")
    assert graph.input_specs()[0][0] == "input"
    text = ir.print_graph(graph)
    assert '%input_1 = input("input") : f32[1,4]' in text
    parsed = ir.parse(text, graph.params)
    assert graph_difference(graph, parsed) is None and parsed.input_specs() == graph.input_specs()
