"""fold-constants and fuse: IR before/after, numerics (checked after every pass), and refusals."""
import pytest
import torch

from slimgraph import ir

from .conftest import imported_model
from .passes_util import body, graph_from_text, run_pass


def test_constant_subgraphs_fold_and_dead_nodes_go():
    graph = graph_from_text('''graph "c" {
  %x = input() : f32[2,3]
  %w = param("fc.weight") : f32[3,4]
  %wt = aten.t.default(%w) : f32[4,3]
  %scaled = aten.mul.Tensor(%wt, 2.0) : f32[4,3]
  %unused = aten.relu.default(%x) : f32[2,3]
  %y = aten.linear.default(%x, %scaled) : f32[2,4]
  return (%y,)
}''')
    result = run_pass(graph, "fold-constants")
    assert body(result.graph) == ["%y = aten.linear.default(%x, %fc_weight_t_mul) : f32[2,4]", "return (%y,)"]
    assert set(result.graph.params) == {"fc.weight.t.mul"}
    assert result.records[0].stats["folded"] == 2 and result.records[0].stats["removed"] == 3  # t, mul, relu


def test_size_limit_keeps_big_constants_unmaterialised():
    graph = graph_from_text('''graph "c" {
  %x = input() : f32[64,64]
  %w = param("w") : f32[64]
  %big = aten.expand.default(%w, [64, 64]) : f32[64,64]
  %y = aten.add.Tensor(%x, %big) : f32[64,64]
  return (%y,)
}''')
    result = run_pass(graph, "fold-constants{max_bytes=1024}")
    assert not result.modified
    assert result.records[0].notes == ["%big (aten.expand.default) not folded: its 0.0 MiB value exceeds max_bytes=1024"]


def test_position_embedding_lookup_folds_in_the_encoder():
    _, _, graph = imported_model("bert_encoder")
    result = run_pass(graph, "fold-constants")
    assert result.records[0].stats["folded"] == 1  # embedding(position table, constant position ids)
    assert sum(1 for n in result.graph.nodes if n.target is torch.ops.aten.embedding.default) == 1


CONV = '''graph "f" {
  %x = input() : f32[1,2,5,5]
  %w = param("conv.weight") : f32[3,2,3,3]
  %b = param("conv.bias") : f32[3]
  %c = param("shift") : f32[3,1,1]
  %s = param("scale") : f32[1,3,1,1]
  %conv = aten.conv2d.default(%x, %w, %b, [1, 1], [1, 1]) : f32[1,3,5,5] loc("conv")
  %shifted = aten.add.Tensor(%conv, %c) : f32[1,3,5,5]
  %scaled = aten.mul.Tensor(%shifted, %s) : f32[1,3,5,5]
  %half = aten.div.Tensor(%scaled, 2.0) : f32[1,3,5,5]
  %out = aten.relu.default(%half) : f32[1,3,5,5]
  return (%out,)
}'''


def test_shift_scale_and_division_merge_into_the_conv():
    result = run_pass(graph_from_text(CONV), "fuse{regions=false}")
    assert body(result.graph) == [
        "%conv = aten.conv2d.default(%x, %conv_weight, %conv_bias, [1, 1], [1, 1]) : f32[1,3,5,5] loc(\"conv\", \"fuse\")",
        "%out = aten.relu.default(%conv) : f32[1,3,5,5]",
        "return (%out,)",
    ]
    assert result.records[0].stats["add-into-bias"] == 1 and result.records[0].stats["div-into-weights"] == 1


def test_a_non_per_channel_constant_is_refused_with_its_shape():
    text = CONV.replace('%c = param("shift") : f32[3,1,1]', '%c = param("shift") : f32[1,1,5]')
    result = run_pass(graph_from_text(text), "fuse{regions=false}")
    assert ("add-into-bias did not fire at %shifted: constant of shape [1, 1, 5] is not one value per output "
            "channel (3)") in result.records[0].notes


def test_pad_merges_into_conv_padding():
    graph = graph_from_text('''graph "p" {
  %x = input() : f32[1,2,5,5]
  %w = param("conv.weight") : f32[3,2,3,3]
  %padded = aten.constant_pad_nd.default(%x, [2, 2, 1, 1], 0.0) : f32[1,2,7,9]
  %conv = aten.conv2d.default(%padded, %w, None, [1, 1], [1, 0]) : f32[1,3,7,7]
  return (%conv,)
}''')
    result = run_pass(graph, "fuse{regions=false}")
    assert body(result.graph)[0] == "%conv = aten.conv2d.default(%x, %w, None, [1, 1], [2, 2]) : f32[1,3,7,7] loc(\"\", \"fuse\")"


def test_asymmetric_pad_stays():
    graph = graph_from_text('''graph "p" {
  %x = input() : f32[1,2,5,5]
  %w = param("conv.weight") : f32[3,2,3,3]
  %padded = aten.constant_pad_nd.default(%x, [0, 1, 0, 1], 0.0) : f32[1,2,6,6]
  %conv = aten.conv2d.default(%padded, %w) : f32[1,3,4,4]
  return (%conv,)
}''')
    result = run_pass(graph, "fuse{regions=false}")
    assert not result.modified
    assert "pad-into-conv did not fire at %conv: asymmetric or negative pad [0, 1, 0, 1] cannot become conv padding" \
        in result.records[0].notes


def test_linear_chains_permutes_and_reshapes_collapse():
    graph = graph_from_text('''graph "l" {
  %x = input() : f32[2,3,4]
  %w1 = param("a.weight") : f32[5,4]
  %b1 = param("a.bias") : f32[5]
  %w2 = param("b.weight") : f32[6,5]
  %h = aten.linear.default(%x, %w1, %b1) : f32[2,3,5]
  %y = aten.linear.default(%h, %w2) : f32[2,3,6]
  %p = aten.permute.default(%y, [2, 0, 1]) : f32[6,2,3]
  %q = aten.permute.default(%p, [1, 2, 0]) : f32[2,3,6]
  %r = aten.reshape.default(%q, [6, 6]) : f32[6,6]
  %s = aten.view.default(%r, [2, 3, 6]) : f32[2,3,6]
  %t = aten.transpose.int(%s, 0, 1) : f32[3,2,6]
  %u = aten.transpose.int(%t, 1, 0) : f32[2,3,6]
  return (%u,)
}''')
    result = run_pass(graph, "fuse{regions=false}")
    assert body(result.graph) == ["%y = aten.linear.default(%x, %b_weight_a_weight, %b_weight_a_weight_bias) : f32[2,3,6] loc(\"\", \"fuse\")",
                                  "return (%y,)"]


def test_parallel_linears_become_one_matmul():
    graph = graph_from_text('''graph "qkv" {
  %x = input() : f32[1,8,16]
  %wq = param("q.weight") : f32[16,16]
  %bq = param("q.bias") : f32[16]
  %wk = param("k.weight") : f32[16,16]
  %wv = param("v.weight") : f32[8,16]
  %bv = param("v.bias") : f32[8]
  %q = aten.linear.default(%x, %wq, %bq) : f32[1,8,16]
  %k = aten.linear.default(%x, %wk) : f32[1,8,16]
  %v = aten.linear.default(%x, %wv, %bv) : f32[1,8,8]
  %qk = aten.add.Tensor(%q, %k) : f32[1,8,16]
  return (%qk, %v)
}''')
    result = run_pass(graph, "fuse{regions=false}")
    lines = body(result.graph)
    assert lines[0].startswith("%linear = aten.linear.default(%x, %q_weight_k_weight_v_weight, ") and lines[0].endswith(': f32[1,8,40] loc("", "fuse")')
    assert lines[1] == "%split_with_sizes = aten.split_with_sizes.default(%linear, [16, 16, 8], -1) : (f32[1,8,16], f32[1,8,16], f32[1,8,8]) loc(\"\", \"fuse\")"
    assert lines[2:5] == ['%q = getitem(%split_with_sizes, 0) : f32[1,8,16] loc("", "fuse")',
                          '%k = getitem(%split_with_sizes, 1) : f32[1,8,16] loc("", "fuse")',
                          '%v = getitem(%split_with_sizes, 2) : f32[1,8,8] loc("", "fuse")']


def test_encoder_projections_merge():
    _, inputs, graph = imported_model("bert_encoder")
    result = run_pass(graph, "fuse{regions=false}")
    assert result.records[0].stats["parallel-linears"] == 4  # q/k/v of each layer
    linears = sum(1 for n in result.graph.nodes if n.target is torch.ops.aten.linear.default)
    assert linears == 24 - 4 * 2


@pytest.mark.parametrize("pipeline", ["fuse{algebra=false,regions=false}", "fuse{algebra=false,parallel=false,regions=false}"])
def test_options_switch_parts_off(pipeline):
    result = run_pass(graph_from_text(CONV), pipeline)
    assert not result.modified
