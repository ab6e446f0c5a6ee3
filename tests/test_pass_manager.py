"""The pass manager's instruments and contract checks, from the API, the CLI and the env variable."""
import io
import os
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from slimgraph import cli, ir
from slimgraph.rewrites import InstrumentOptions, Pass, PassError, PassManager, PassResult, register_pass

from .conftest import imported_model
from .passes_util import graph_from_text

aten = torch.ops.aten


@register_pass
@dataclass
class BreakRelu(Pass):
    """Test pass: relu -> sigmoid (changes values)."""
    name: ClassVar[str] = "test-break-relu"

    def run(self, graph):
        for node in graph.fx_graph.nodes:
            if node.target is aten.relu.default:
                node.target = aten.sigmoid.default
        return PassResult(graph, True)


@register_pass
@dataclass
class BadShapes(Pass):
    """Test pass: records a wrong shape on the output node."""
    name: ClassVar[str] = "test-bad-shapes"

    def run(self, graph):
        graph.outputs[0].meta["val"] = torch.empty(7, device="meta")
        return PassResult(graph, True)


@register_pass
@dataclass
class Liar(Pass):
    """Test pass: changes the graph but says it did not."""
    name: ClassVar[str] = "test-liar"

    def run(self, graph):
        graph.outputs[0].target = aten.sigmoid.default
        return PassResult(graph, False)


@register_pass
@dataclass
class Crash(Pass):
    """Test pass: throws."""
    name: ClassVar[str] = "test-crash"

    def run(self, graph):
        raise KeyError("no such thing")


TEXT = '''graph "small" {
  %x = input() : f32[2,4]
  %w = param("fc.weight") : f32[3,4]
  %fc = aten.linear.default(%x, %w) : f32[2,3] loc("fc")
  %act = aten.relu.default(%fc) : f32[2,3] loc("act")
  %out = aten.mul.Tensor(%act, 1.0) : f32[2,3]
  return (%out,)
}'''


def small():
    return graph_from_text(TEXT)


def test_print_ir_after_change_shows_a_diff_and_says_when_nothing_changed():
    stream = io.StringIO()
    options = InstrumentOptions(print_ir_after_change=True)
    PassManager("fold-constants,test-break-relu", options.build(stream)).run(small())
    text = stream.getvalue()
    assert "// ----- fold-constants (#1): no change -----" in text
    assert "// ----- test-break-relu (#2) changed the IR -----" in text
    assert '-  %act = aten.relu.default(%fc) : f32[2,3] loc("act")' in text
    assert '+  %act = aten.sigmoid.default(%fc) : f32[2,3] loc("act")' in text


def test_print_ir_before_and_after_all():
    stream = io.StringIO()
    options = InstrumentOptions(print_ir_after_all=True, print_ir_before=["fuse"])
    PassManager("fold-bn,fuse", options.build(stream)).run(small())
    text = stream.getvalue()
    assert text.count('graph "small" {') == 3
    assert "// ----- IR before fuse (#2) -----" in text and "// ----- IR after fold-bn (#1) -----" in text


def test_dump_dir_writes_one_file_per_pass_that_parses_back(tmp_path):
    module, inputs, graph = imported_model("digit_cnn")
    options = InstrumentOptions(dump_dir=str(tmp_path))
    result = PassManager("default", options.build()).run(graph)
    names = sorted(p.name for p in tmp_path.glob("*.ir"))
    assert names == ["000-input.ir", "001-fold-bn.ir", "002-fold-constants.ir", "003-fuse.ir"]
    assert (tmp_path / "pipeline.txt").read_text() == "fold-bn,fold-constants,fuse\n"
    assert ir.print_graph(ir.load(tmp_path / "000-input.ir")) == ir.print_graph(graph)
    last = ir.load(tmp_path / "003-fuse.ir")
    assert ir.print_graph(last) == ir.print_graph(result.graph)
    torch.testing.assert_close(last.run(*inputs)[0], module(*inputs), rtol=1e-4, atol=1e-4)
    # unchanged stages reuse earlier parameter files instead of copying them
    assert not (tmp_path / "002-fold-constants.safetensors").exists()


def test_verify_each_names_the_pass():
    with pytest.raises(PassError, match=r"pass 'test-bad-shapes' \(#2\) left a broken graph: node %out"):
        PassManager("fold-bn,test-bad-shapes", InstrumentOptions(verify_each=True).build()).run(small())


def test_check_numerics_names_the_pass_and_the_first_diverging_node():
    with pytest.raises(PassError) as info:
        PassManager("fuse,test-break-relu", InstrumentOptions(check_numerics=True).build()).run(small())
    message = str(info.value)
    assert message.startswith("pass 'test-break-relu' (#2) changed the outputs: output #0 max abs diff")
    assert "first diverging node %act (max abs diff" in message


def test_a_pass_that_lies_about_modified_is_refused():
    with pytest.raises(PassError, match="pass 'test-liar' broke its contract: it reported modified=False but changed the graph"):
        PassManager("test-liar").run(small())


def test_a_crash_names_the_pass_and_writes_a_replayable_reproducer(tmp_path, capsys):
    with pytest.raises(PassError) as info:
        PassManager("fold-bn,fuse,test-crash", repro_dir=tmp_path).run(small())
    message = str(info.value)
    assert message.startswith("pass 'test-crash' (#3, after: fold-bn,fuse) failed: KeyError: 'no such thing'; reproducer: slimgraph dump ")
    repro = message.split("slimgraph dump ")[1].split(" --pipeline")[0]
    assert message.endswith(f"{repro} --pipeline 'test-crash'")
    assert os.path.isfile(repro)
    # the reproducer holds the IR before the failing pass and replays the failure
    code = cli.main(["dump", repro, "--pipeline", "test-crash"])
    assert code == 1 and "pass 'test-crash' (#1, after: none) failed: KeyError" in capsys.readouterr().err
    assert cli.main(["dump", repro]) == 0
    assert 'graph "small" {' in capsys.readouterr().out


def test_environment_variable_turns_instruments_on(monkeypatch):
    monkeypatch.setenv("SLIMGRAPH_PASS_DEBUG", "verify-each,print-ir-before=fuse,dump-dir=/tmp/x")
    options = InstrumentOptions().merged_with_env()
    assert options.verify_each and options.print_ir_before == ["fuse"] and options.dump_dir == "/tmp/x"
    monkeypatch.setenv("SLIMGRAPH_PASS_DEBUG", "verify-everything")
    with pytest.raises(PassError, match="SLIMGRAPH_PASS_DEBUG: unknown setting 'verify-everything'"):
        InstrumentOptions().merged_with_env()


def test_cli_compile_with_instruments(tmp_path, capsys):
    code = cli.main(["compile", "digit_cnn", "-o", str(tmp_path / "d.so"), "--runs", "0", "--quiet",
                     "--print-ir-after-change", "--verify-each", "--check-numerics", "--timing",
                     "--dump-dir", str(tmp_path / "dump"), "--trace-rule", "fold-bn-into-consumer"])
    captured = capsys.readouterr()
    assert code == 0
    assert "// ----- fold-bn (#1) changed the IR -----" in captured.err
    assert "[trace fold-bn-into-consumer] at %conv2d: no match: argument #0 of %conv2d: expected aten.batch_norm.default" in captured.err
    assert "max_abs_diff=" in captured.err  # the timing table carries the numerics per pass
    assert (tmp_path / "dump" / "003-fuse.ir").is_file() and (tmp_path / "dump" / "relax-optimized.py").is_file()
    assert "fold-bn,fold-constants,fuse" in captured.out
