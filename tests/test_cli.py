"""The command line: bad input gives one line on stderr, a non-zero exit, nothing half-written."""
import subprocess
import sys

import numpy as np
import pytest

from slimgraph import cli
from slimgraph.codegen.artifact import ArtifactError, write_artifact

FACTORY = '''
import torch

def good():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), (torch.randn(2, 4),)

def broken():
    raise ValueError("weights file is gone")
'''


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("slimgraph: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "models_here.py"
    path.write_text(FACTORY)
    return path


def test_compile_and_run_a_factory_model(tmp_path, factory_file, capsys):
    out = tmp_path / "net.so"
    code, stdout, _ = run_cli(capsys, "compile", f"{factory_file}:good", "-o", str(out), "--runs", "2")
    assert code == 0 and out.is_file() and out.with_suffix(".json").is_file()
    assert "max |diff| vs PyTorch" in stdout
    inputs = tmp_path / "in.npz"
    np.savez(inputs, input=np.ones((2, 4), np.float32))  # nn.Sequential's argument is named `input`
    code, stdout, _ = run_cli(capsys, "run", str(out), "--inputs", str(inputs), "--runs", "2",
                              "--save", str(tmp_path / "y.npz"))
    assert code == 0 and "latency: median" in stdout
    assert np.load(tmp_path / "y.npz")["relu"].shape == (2, 3)

    np.savez(inputs, input=np.ones((2, 5), np.float32))
    code, _, err = run_cli(capsys, "run", str(out), "--inputs", str(inputs))
    assert_one_line_error(code, err, "input 'input' (#1)", "expected float32[2,4], got float32[2,5]")
    np.savez(inputs, input=np.ones((2, 4), np.int64))
    code, _, err = run_cli(capsys, "run", str(out), "--inputs", str(inputs))
    assert_one_line_error(code, err, "expected float32[2,4], got int64[2,4]")
    np.savez(inputs, y=np.ones((2, 4), np.float32))
    code, _, err = run_cli(capsys, "run", str(out), "--inputs", str(inputs))
    assert_one_line_error(code, err, "lacks input(s) input (it has: y)")


def test_factory_that_raises(tmp_path, factory_file, capsys):
    code, _, err = run_cli(capsys, "compile", f"{factory_file}:broken", "-o", str(tmp_path / "b.so"))
    assert_one_line_error(code, err, f"'{factory_file}:broken' raised ValueError: weights file is gone")
    code, _, err = run_cli(capsys, "compile", f"{factory_file}:absent", "-o", str(tmp_path / "b.so"))
    assert_one_line_error(code, err, "has no function 'absent'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models_here.py"]


def test_missing_model_file_and_unknown_name(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "a.so"))
    assert_one_line_error(code, err, "absent.onnx")
    code, _, err = run_cli(capsys, "compile", "resnet19")
    assert_one_line_error(code, err, "model 'resnet19' is neither a file nor a built-in model", "resnet18")
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "nope.py") + ":make")
    assert_one_line_error(code, err, "nope.py' does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing-folder", "folder"])
def test_unwritable_output_path(tmp_path, capsys, where):
    output = tmp_path / "no" / "such" / "dir" / "m.so" if where == "missing-folder" else tmp_path / "adir.so"
    if where == "folder":
        output.mkdir()
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "-o", str(output))
    assert_one_line_error(code, err, f"cannot write output '{output}'")
    assert not output.with_suffix(".json").exists()


def test_bad_target(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", "x87", "-o", str(tmp_path / "m.so"))
    assert_one_line_error(code, err, "unknown target 'x87'; presets: arm64, arm64-dotprod, cuda (or cuda:sm_XX), x86")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", '{"kind": "llvm",', "-o", str(tmp_path / "m.so"))
    assert_one_line_error(code, err, "target JSON is malformed")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", '{"kind": "llvm", "bogus": 1}', "-o", str(tmp_path / "m.so"))
    assert_one_line_error(code, err, "TVM rejects the target")
    assert list(tmp_path.iterdir()) == []


def test_run_of_missing_library(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", str(tmp_path / "none.so"))
    assert_one_line_error(code, err, "no compiled library at")


class ExplodingExecutable:
    def export_library(self, path, **_):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    with pytest.raises(ArtifactError, match="No space left on device"):
        write_artifact(ExplodingExecutable(), {"model": "m"}, tmp_path / "m.so")
    assert list(tmp_path.iterdir()) == []


def test_dump_prints_ir_and_statistics(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "dump", "digit_cnn", "--stats")
    assert code == 0
    assert 'graph "digit_cnn" {' in stdout and "aten.conv2d.default" in stdout and "MACs by node" in stdout
    code, _, _ = run_cli(capsys, "dump", "digit_cnn", "-o", str(tmp_path / "d.ir"))
    assert code == 0 and (tmp_path / "d.safetensors").is_file()
    code, stdout, _ = run_cli(capsys, "dump", str(tmp_path / "d.ir"))
    assert code == 0 and 'graph "digit_cnn" {' in stdout


def test_dump_stats_prints_the_pruning_plan(capsys):
    code, stdout, _ = run_cli(capsys, "dump", "digit_cnn", "--pipeline", "prune{ratio=0.5,round=1}", "--stats")
    assert code == 0
    stdout = " ".join(stdout.split())  # rich wraps long notes to the terminal
    assert "prune: group [conv2]: 32 -> 16 channels, removed [" in stdout  # brackets printed, not markup
    assert "prune: group [conv1]: 16 channels kept: layer %conv2d is protected" in stdout
    assert "%linear = aten.linear.default(%flatten, %fc1_weight, %fc1_bias) : f32[1,32]" in stdout
    code, _, stderr = run_cli(capsys, "dump", "digit_cnn", "--pipeline", "prune{ratio=2}")
    assert code != 0 and "prune: ratio must be in (0, 1), got 2.0" in stderr


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "slimgraph.cli", "compile", str(tmp_path / "x.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("slimgraph: error:")


def test_corrupt_and_unsupported_onnx_files(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    truncated = tmp_path / "truncated.onnx"
    node = helper.make_node("Relu", ["x"], ["y"], name="relu0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    good = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    truncated.write_bytes(good[: len(good) // 2])
    code, _, err = run_cli(capsys, "compile", str(truncated), "-o", str(tmp_path / "t.so"))
    assert_one_line_error(code, err, str(truncated))

    topk = [helper.make_node("TopK", ["x", "k"], [f"v{i}", f"i{i}"], name=f"topk{i}") for i in range(2)]
    graph = helper.make_graph(topk, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1, 2])],
                              initializer=[helper.make_tensor("k", TensorProto.INT64, [1], [2])])
    unsupported = tmp_path / "topk.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), unsupported)
    code, _, err = run_cli(capsys, "compile", str(unsupported), "-o", str(tmp_path / "u.so"))
    assert_one_line_error(code, err, "unsupported ONNX ops: TopK (x2)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topk.onnx", "truncated.onnx"]


def test_dump_rounds_pruned_channels_for_its_target(monkeypatch, capsys):
    """dump --target names the target prune measures its channel multiple for (it was always this host)."""
    from slimgraph.codegen import channel_widths

    asked = []
    monkeypatch.setattr(channel_widths, "measured_multiple", lambda spec: (asked.append(spec.name), (4, "stub"))[1])
    code, _, err = run_cli(capsys, "dump", "digit_cnn", "--pipeline", "prune{ratio=0.5}", "--target", "arm64")
    assert code == 0, err
    assert asked == ["arm64"]
