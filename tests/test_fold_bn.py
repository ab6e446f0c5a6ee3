"""fold-bn: IR before/after, numerics, and the reasons it declines."""
import pytest
import torch

from slimgraph import ir

from .conftest import imported_model
from .passes_util import body, graph_from_text, run_pass

PARAMS = '''
  %g = param("bn.weight") : f32[C]
  %beta = param("bn.bias") : f32[C]
  %mean = param("bn.running_mean") : f32[C]
  %var = param("bn.running_var") : f32[C]'''


def with_bn_params(text: str, channels: int) -> str:
    return text.replace("PARAMS", PARAMS.replace("C", str(channels)))


CONV_BN = with_bn_params('''graph "convbn" {
  %x = input() : f32[1,2,4,4]
  %w = param("conv.weight") : f32[3,2,1,1]
  %b = param("conv.bias") : f32[3]
  PARAMS
  %conv = aten.conv2d.default(%x, %w, %b) : f32[1,3,4,4] loc("conv")
  %bn = aten.batch_norm.default(%conv, %g, %beta, %mean, %var, TRAINING, 0.1, 1e-05, False) : f32[1,3,4,4] loc("bn")
  %out = aten.relu.default(%bn) : f32[1,3,4,4] loc("relu")
  return (OUTPUTS)
}''', 3)

AFTER = '''graph "convbn" {
  %x = input() : f32[1,2,4,4]
  %conv_weight = param("conv.weight") : f32[3,2,1,1]
  %conv_bias = param("conv.bias") : f32[3]
  %conv = aten.conv2d.default(%x, %conv_weight, %conv_bias) : f32[1,3,4,4] loc("conv", "fold-bn")
  %out = aten.relu.default(%conv) : f32[1,3,4,4] loc("relu")
  return (%out,)
}
'''


def conv_bn(training="False", outputs="%out,"):
    return graph_from_text(CONV_BN.replace("TRAINING", training).replace("OUTPUTS", outputs))


def test_conv_bn_folds_into_the_conv_exactly_as_expected():
    graph = conv_bn()
    result = run_pass(graph, "fold-bn")
    assert ir.print_graph(result.graph) == AFTER
    assert result.records[0].stats["folded"] == 1
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(result.graph.run(x)[0], graph.run(x)[0], rtol=1e-5, atol=1e-5)


def test_declines_when_the_conv_output_has_other_users():
    result = run_pass(conv_bn(outputs="%out, %conv"), "fold-bn")
    assert not result.modified
    assert ("fold-bn-into-producer did not fire at %bn: argument #0 of %bn: %conv has 2 users (%bn, the graph output); "
            "folding would duplicate it") in result.records[0].notes


def test_declines_in_training_mode():
    result = run_pass(conv_bn(training="True"), "fold-bn")
    assert not result.modified
    assert "fold-bn-into-producer did not fire at %bn: %bn: batch norm is in training mode (it uses batch statistics)" \
        in result.records[0].notes


def test_declines_when_weights_are_not_constants():
    text = CONV_BN.replace("TRAINING", "False").replace("OUTPUTS", "%out,").replace(
        '%w = param("conv.weight") : f32[3,2,1,1]', '%w = input() : f32[3,2,1,1]')
    result = run_pass(graph_from_text(text), "fold-bn")
    assert not result.modified
    assert ("fold-bn-into-producer did not fire at %bn: argument #0 of %bn: argument #1 of %conv: "
            "expected a constant, got %w (placeholder)") in result.records[0].notes


def test_trace_rule_prints_each_candidate(capsys):
    from slimgraph.rewrites import trace_rules

    with trace_rules({"fold-bn-into-producer"}):
        run_pass(conv_bn(training="True"), "fold-bn")
    assert "[trace fold-bn-into-producer] at %bn: declined: %bn: batch norm is in training mode" in capsys.readouterr().err


@pytest.mark.parametrize("name, kind", [
    ("conv-transpose grouped", '''graph "t" {
  %x = input() : f32[1,4,3,3]
  %w = param("up.weight") : f32[4,3,2,2]
  PARAMS
  %up = aten.conv_transpose2d.input(%x, %w, None, [2, 2], [0, 0], [0, 0], 2) : f32[1,6,6,6]
  %bn = aten.batch_norm.default(%up, %g, %beta, %mean, %var, False, 0.1, 1e-05, False) : f32[1,6,6,6]
  return (%bn,)
}''' + "@6"),
    ("linear then bn1d", '''graph "t" {
  %x = input() : f32[5,4]
  %w = param("fc.weight") : f32[3,4]
  %b = param("fc.bias") : f32[3]
  PARAMS
  %fc = aten.linear.default(%x, %w, %b) : f32[5,3]
  %bn = aten.batch_norm.default(%fc, %g, %beta, %mean, %var, False, 0.1, 0.001, False) : f32[5,3]
  return (%bn,)
}''' + "@3"),
    ("bn1d then linear", '''graph "t" {
  %x = input() : f32[5,3]
  %w = param("fc.weight") : f32[2,3]
  PARAMS
  %bn = aten.batch_norm.default(%x, %g, %beta, %mean, %var, False, 0.1, 1e-05, False) : f32[5,3]
  %fc = aten.linear.default(%bn, %w) : f32[5,2]
  return (%fc,)
}''' + "@3"),
    ("bn then unpadded conv", '''graph "t" {
  %x = input() : f32[1,3,5,5]
  %w = param("conv.weight") : f32[4,3,3,3]
  PARAMS
  %bn = aten.batch_norm.default(%x, %g, %beta, %mean, %var, False, 0.1, 1e-05, False) : f32[1,3,5,5]
  %conv = aten.conv2d.default(%bn, %w, None, [1, 1], [0, 0]) : f32[1,4,3,3]
  return (%conv,)
}''' + "@3"),
])
def test_other_neighbours_fold_with_the_same_numerics(name, kind):
    text, channels = kind.rsplit("@", 1)
    graph = graph_from_text(with_bn_params(text, int(channels)))
    result = run_pass(graph, "fold-bn")  # CheckNumerics inside raises if outputs moved
    assert result.modified, result.records[0].notes
    assert not any("batch_norm" in line for line in body(result.graph))


def test_bn_before_a_padded_conv_is_not_folded():
    text = with_bn_params('''graph "t" {
  %x = input() : f32[1,3,5,5]
  %w = param("conv.weight") : f32[4,3,3,3]
  PARAMS
  %bn = aten.batch_norm.default(%x, %g, %beta, %mean, %var, False, 0.1, 1e-05, False) : f32[1,3,5,5]
  %conv = aten.conv2d.default(%bn, %w, None, [1, 1], [1, 1]) : f32[1,4,5,5]
  return (%conv,)
}''', 3)
    result = run_pass(graph_from_text(text), "fold-bn")
    assert not result.modified
    assert ("fold-bn-into-consumer did not fire at %conv: the conv pads with zeros after the batch norm's shift: "
            "folding would not be exact") in result.records[0].notes


@pytest.mark.parametrize("name, count", [("resnet18", 20), ("mobilenet_v2", 52), ("digit_cnn", 2)])
def test_builtin_cnns_lose_every_batch_norm(name, count):
    module, inputs, graph = imported_model(name)
    result = run_pass(graph, "fold-bn")
    assert result.records[0].stats["folded"] == count
    assert not any(n.target is torch.ops.aten.batch_norm.default for n in result.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(result.graph.run(*inputs)[0], module(*inputs), rtol=1e-4, atol=1e-4)
