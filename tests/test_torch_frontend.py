"""torch.export frontend: canonical ops, stable parameter names, provenance, clear rejections."""
import pytest
import torch

from slimgraph import ir
from slimgraph.ir.errors import ModelImportError
from slimgraph.ir.verify import verify

from .conftest import imported_model


def test_parameters_keep_state_dict_names_and_provenance_is_module_path():
    module, _, graph = imported_model("resnet18")
    state = module.state_dict()
    for key, tensor in graph.params.items():
        assert torch.equal(tensor, state[key]), key
    assert "bn1.num_batches_tracked" not in graph.params  # unused buffers are dropped
    conv = next(n for n in graph.nodes if n.target is torch.ops.aten.conv2d.default
                and n.args[1].target == "layer2.0.downsample.0.weight")
    assert ir.provenance_of(conv).source == "layer2.0.downsample.0"


class InPlaceAndDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        y = self.fc(x)
        z = y * 2
        torch.relu_(y)  # later readers of y see the mutated value
        return self.drop(y) + z + y


def test_in_place_ops_become_functional_and_eval_dropout_goes():
    module = InPlaceAndDropout().eval()
    x = torch.randn(2, 4)
    graph = ir.from_torch(module, (x,), "inplace")
    ops = {ir.text.op_name(n) for n in graph.nodes if n.op == "call_function"}
    assert "aten.relu.default" in ops and "aten.relu_.default" not in ops
    assert "aten.dropout.default" not in ops
    verify(graph)
    torch.testing.assert_close(graph.run(x)[0], module(x))


class UsesSort(torch.nn.Module):
    def forward(self, x):
        return torch.sort(x).values + torch.sort(x * 2).values + torch.cumsum(x, 0)


def test_ops_outside_the_canonical_set_are_listed_with_counts():
    with pytest.raises(ModelImportError) as info:
        ir.from_torch(UsesSort(), (torch.randn(5),), "sorter")
    message = str(info.value)
    assert "model 'sorter' uses ops outside slimgraph's canonical op set" in message
    assert "aten.sort.default (x2)" in message and "aten.cumsum.default (x1)" in message


class Broken(torch.nn.Module):
    def forward(self, x):
        return x @ torch.ones(3, 3)


def test_export_failure_is_one_clear_line():
    with pytest.raises(ModelImportError, match="torch.export failed for model 'broken'"):
        ir.from_torch(Broken(), (torch.randn(2, 5),), "broken")


def test_graph_copy_is_independent():
    _, inputs, graph = imported_model("digit_cnn")
    clone = graph.copy()
    clone.node("relu").target = torch.ops.aten.sigmoid.default
    assert graph.node("relu").target is torch.ops.aten.relu.default
    assert ir.print_graph(clone) != ir.print_graph(graph)
