"""Verifier errors name the node; statistics count what they should."""
import pytest
import torch

from slimgraph import ir
from slimgraph.ir.errors import VerifyError
from slimgraph.ir.stats import graph_stats
from slimgraph.ir.verify import verify

from .conftest import MODEL_NAMES, imported_model

TINY = '''graph "tiny" {
  %x = input() : f32[1,4]
  %w = param("w") : f32[3,4]
  %lin = aten.linear.default(%x, %w) : f32[1,3]
  %act = aten.relu.default(%lin) : f32[1,3]
  return (%act,)
}'''


def tiny():
    return ir.parse(TINY, {"w": torch.randn(3, 4)})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builtin_models_verify(name):
    verify(imported_model(name)[2])


def test_unknown_op_is_named():
    graph = tiny()
    graph.node("act").target = torch.ops.aten.sin.default
    with pytest.raises(VerifyError, match=r"node %act: op aten.sin.default is not in the canonical op set"):
        verify(graph)


def test_wrong_arity_and_argument_type():
    graph = tiny()
    graph.node("act").args = (graph.node("lin"), 1, 2)
    with pytest.raises(VerifyError, match=r"node %act: aten.relu.default takes at most 1 positional arguments, got 3"):
        verify(graph)
    graph = tiny()
    graph.node("lin").args = (graph.node("x"), "w")
    with pytest.raises(VerifyError, match=r"node %lin: argument 'weight' of aten.linear.default should be Tensor"):
        verify(graph)


def test_shape_mismatch_is_reported():
    graph = tiny()
    graph.node("act").meta["val"] = torch.empty(1, 5, device="meta")
    with pytest.raises(VerifyError, match=r"node %act \(aten.relu.default\): recorded type f32\[1,5\] but its inputs give f32\[1,3\]"):
        verify(graph)


def test_topological_order_is_checked():
    graph = tiny()
    lin, act = graph.node("lin"), graph.node("act")
    lin.prepend(act)  # act now comes before the linear it reads
    with pytest.raises(VerifyError, match=r"node %act: uses %lin before it is defined"):
        verify(graph)


def test_missing_parameter_is_reported():
    graph = tiny()
    graph.params.clear()
    with pytest.raises(VerifyError, match=r"node %w: parameter 'w' is missing"):
        verify(graph)


def test_statistics_of_resnet18():
    stats = graph_stats(imported_model("resnet18")[2])
    assert stats.ops["aten.conv2d.default"] == 20
    assert stats.ops["aten.batch_norm.default"] == 20
    # torchvision's ResNet-18: 11,689,512 parameters plus 9,600 BN running statistics.
    assert stats.parameters == 11_689_512 + 9_600
    assert stats.parameter_bytes == 4 * stats.parameters
    assert round(stats.macs / 1e9, 2) == 1.81  # the well-known 1.8 GMACs at 224x224
    assert stats.macs_by_node["conv2d"] == 112 * 112 * 64 * 3 * 7 * 7


def test_statistics_of_the_encoder_count_matmuls():
    stats = graph_stats(imported_model("bert_encoder")[2])
    per_layer = 4 * 128 * 256 * 256 + 2 * 128 * 256 * 1024 + 2 * 4 * 128 * 128 * 64
    assert stats.macs == 4 * per_layer
