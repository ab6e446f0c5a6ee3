"""Fused regions: marked by the fuse pass, visible in the IR, one kernel each after lowering."""
import numpy as np
import torch

import slimgraph
from slimgraph import ir
from slimgraph.codegen.targets import x86_host
from slimgraph.lowering import kernel_launches, lower

from .passes_util import body, graph_from_text, run_pass

BLOCK = '''graph "block" {
  %x = input() : f32[1,4,6,6]
  %w1 = param("a.weight") : f32[4,4,3,3]
  %w2 = param("b.weight") : f32[4,4,3,3]
  %a = aten.conv2d.default(%x, %w1, None, [1, 1], [1, 1]) : f32[1,4,6,6]
  %a_relu = aten.relu.default(%a) : f32[1,4,6,6]
  %b = aten.conv2d.default(%a_relu, %w2, None, [1, 1], [1, 1]) : f32[1,4,6,6]
  %total = aten.add.Tensor(%x, %b) : f32[1,4,6,6]
  %out = aten.relu.default(%total) : f32[1,4,6,6]
  %pool = aten.max_pool2d.default(%out, [2, 2], [2, 2]) : f32[1,4,3,3]
  %flat = aten.flatten.using_ints(%pool, 1) : f32[1,36]
  return (%flat,)
}'''


def test_fuse_marks_regions_in_the_ir():
    result = run_pass(graph_from_text(BLOCK), "fuse")
    assert body(result.graph) == [
        "%a = aten.conv2d.default(%x, %w1, None, [1, 1], [1, 1]) : f32[1,4,6,6] region(0)",
        "%a_relu = aten.relu.default(%a) : f32[1,4,6,6] region(0)",
        "%b = aten.conv2d.default(%a_relu, %w2, None, [1, 1], [1, 1]) : f32[1,4,6,6] region(1)",
        # the residual input %x comes from outside; the add joins the conv it follows
        "%total = aten.add.Tensor(%x, %b) : f32[1,4,6,6] region(1)",
        "%out = aten.relu.default(%total) : f32[1,4,6,6] region(1)",
        # pooling starts its own region (a conv + pooling kernel has no fast schedule rule)
        "%pool = aten.max_pool2d.default(%out, [2, 2], [2, 2]) : f32[1,4,3,3] region(2)",
        "%flat = aten.flatten.using_ints(%pool, 1) : f32[1,36] region(2)",
        "return (%flat,)",
    ]
    assert result.records[0].stats["regions"] == 3
    text = ir.print_graph(result.graph)
    assert ir.print_graph(ir.parse(text, result.graph.params)) == text


def test_each_region_becomes_one_kernel_and_outputs_match():
    graph = run_pass(graph_from_text(BLOCK), "fuse").graph
    _, optimized, notes = lower(graph, x86_host().tvm_target())
    assert not [n for n in notes if n.startswith("region")] and kernel_launches(optimized) == 3
    compiled = slimgraph.compile(graph, check=True)
    assert compiled.report.kernel_launches == 3 and compiled.report.max_abs_diff < 1e-5
    plain = slimgraph.compile(graph_from_text(BLOCK), pipeline="none", check=False)
    assert plain.report.kernel_launches == 3  # TVM's own fusion: conv+relu, conv+add+relu, pool; the flatten a view


def test_a_region_whose_inside_value_escapes_stays_separate_kernels():
    text = BLOCK.replace("return (%flat,)", "return (%flat, %a)")
    graph = graph_from_text(text)
    for node in graph.nodes:  # mark regions by hand as a stale or hand-edited dump might
        if node.op == "call_function":
            node.meta["region"] = 0 if node.name in ("a", "a_relu") else 1 if node.name in ("b", "total", "out") else 2
    _, optimized, notes = lower(graph, x86_host().tvm_target())
    assert "region 0: 2 values leave it; its ops stay separate kernels" in notes
    compiled = slimgraph.compile(graph, pipeline="none", check=False)
    x = torch.randn(1, 4, 6, 6)
    expected = [t.numpy() for t in graph.run(x)]
    for got, want in zip(compiled(x.numpy()), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
