"""Every registered pass, on every built-in model: runs, keeps its contract (the manager checks
`modified`), leaves a verifiable graph, and keeps the outputs (checked after each pass)."""
import pytest
import torch

from slimgraph import ir
from slimgraph.ir.verify import verify
from slimgraph.rewrites import PASS_REGISTRY, PassManager
from slimgraph.rewrites.instruments import CheckNumerics, VerifyEach
from slimgraph.rewrites.quantize import calibration_data

from .conftest import MODEL_NAMES, imported_model

BUILT_IN_PASSES = sorted(name for name in PASS_REGISTRY if not name.startswith("test-")
                         and PASS_REGISTRY[name].__module__.startswith("slimgraph.rewrites"))


def test_the_built_in_passes_are_registered():
    assert {"fold-bn", "fold-constants", "fuse"} <= set(BUILT_IN_PASSES)


@pytest.mark.parametrize("pass_name", BUILT_IN_PASSES)
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_pass_on_builtin_model(pass_name, model):
    module, inputs, graph = imported_model(model)
    before = ir.print_graph(graph)
    with calibration_data([inputs]):  # quantize calibrates on the model's inputs
        result = PassManager(pass_name, [VerifyEach(), CheckNumerics(inputs)]).run(graph)
    assert ir.print_graph(graph) == before, "a pass changed the graph it was given, not its copy"
    verify(result.graph)
    second = PassManager(pass_name).run(result.graph)
    if PASS_REGISTRY[pass_name].idempotent:
        assert not second.modified, f"{pass_name} is not idempotent on {model}: {second.records[0].stats}"
    with torch.no_grad():
        approximates = PASS_REGISTRY[pass_name].idempotent  # quantize approximates; prune removes channels
        if PASS_REGISTRY[pass_name].lossy and approximates:  # quantize: close, not equal
            assert result.records[0].stats["sqnr_db"] > 30
        elif PASS_REGISTRY[pass_name].lossy:  # prune: smaller layers, the same output shapes
            assert [o.shape for o in result.graph.run(*inputs)] == [module(*inputs).shape]
        else:
            torch.testing.assert_close(result.graph.run(*inputs)[0], module(*inputs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_default_pipeline_keeps_outputs_and_text_round_trip(model):
    module, inputs, graph = imported_model(model)
    result = PassManager("default", [VerifyEach(), CheckNumerics(inputs)]).run(graph)
    text = ir.print_graph(result.graph)
    assert ir.print_graph(ir.parse(text, result.graph.params)) == text
    with torch.no_grad():
        torch.testing.assert_close(result.graph.run(*inputs)[0], module(*inputs), rtol=1e-4, atol=1e-4)
