"""The quantize pass (Q/DQ insertion): IR before and after, numerics against the float model and
the compiled library against the quantized graph, exclusions, calibration data errors."""
import numpy as np
import pytest
import torch

import slimgraph
from slimgraph.ir.stats import graph_stats
from slimgraph.rewrites import PassError, PassManager, parse_pipeline
from slimgraph.rewrites.quantize import calibration_data
from slimgraph.tests.conftest import imported_model
from slimgraph.tests.test_cli import assert_one_line_error, run_cli


def sqnr_db(reference, actual) -> float:
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    with np.errstate(divide="ignore"):  # identical outputs: infinite SQNR
        return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - actual) ** 2)))


def quantized(name, pipeline="fold-bn,fold-constants,quantize", batches=None):
    _, _, graph = imported_model(name)
    with calibration_data(batches):
        result = PassManager(parse_pipeline(pipeline)).run(graph)
    return graph, result.graph, result.records[-1]


def test_ir_before_and_after_on_the_digit_cnn():
    graph, after, record = quantized("digit_cnn")
    text = str(after)
    assert "quantize_per_tensor" not in str(graph)
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert f'%{layer}_weight_int8 = param("{layer}.weight.int8") : i8[' in text
        assert f'param("{layer}.weight.scale") : f32[' in text and f'param("{layer}.weight")' not in text
    consumers = [line for line in text.splitlines() if "aten.conv2d" in line or "aten.linear" in line]
    assert len(consumers) == 4 and all("%dequantize_per_tensor" in c and "%dequantize_per_channel" in c
                                       for c in consumers)
    assert 'slimgraph.quantize_per_tensor.default(%x, ' in text and '"uint8") : u8[1,1,8,8]' in text
    assert record.stats == {"quantized": 4, "float": 0, "activations": 4}
    assert any("calibrated on 8 batches of seeded random inputs (no calibration data given)" in note
               for note in record.notes)
    assert graph_stats(after).parameter_bytes < graph_stats(graph).parameter_bytes / 3  # int8 weights
    sensitivity = [n for n in record.notes if "output SQNR" in n]
    assert len(sensitivity) == 4 and any(n.startswith("%conv2d (conv1): output SQNR ") for n in sensitivity)
    values = [float(n.split("output SQNR ")[1].split(" dB")[0]) for n in sensitivity]
    assert values == sorted(values) and all(v > 25 for v in values)  # most sensitive first


def test_sensitivity_in_dump_stats(capsys):
    code, stdout, _ = run_cli(capsys, "dump", "digit_cnn", "--pipeline", "fold-bn,quantize", "--stats")
    assert code == 0
    assert "quantize: calibrated on the model's example inputs (1 batch)" in stdout
    assert sum("output SQNR" in line and "dB vs float" in line for line in stdout.splitlines()) == 4


@pytest.mark.parametrize("method, float_sqnr", [("minmax", 30), ("percentile", 30), ("mse", 30), ("entropy", 12)])
def test_quantized_graph_and_library_match(method, float_sqnr):
    """The library computes what the quantized graph says. Against the float model: > 30 dB, but
    entropy (KL) calibration on this small model's 1024-value activations clips hard (15 dB)."""
    _, _, graph = imported_model("digit_cnn")
    batches = [graph.example_inputs(seed) for seed in range(16)]
    pipeline = f"fold-bn,fold-constants,quantize{{calibration={method}}},fuse"
    compiled = slimgraph.compile(graph, pipeline=pipeline, check=False, calibration_data=batches)
    x = graph.example_inputs(99)
    float_out, qdq_out = graph.run(*x)[0], compiled.graph.run(*x)[0]
    library_out = compiled(*[t.numpy() for t in x])[0]
    assert sqnr_db(float_out, qdq_out) > float_sqnr
    assert sqnr_db(qdq_out, library_out) > 60  # same arithmetic; only rounding ties may differ


def test_mobilenet_quantizes_and_compiles():
    _, _, graph = imported_model("mobilenet_v2")
    compiled = slimgraph.compile(graph, pipeline="default,quantize", check=False)
    x = graph.example_inputs(7)
    library_out = compiled(*[t.numpy() for t in x])[0]
    assert sqnr_db(graph.run(*x)[0], library_out) > 30
    assert sqnr_db(compiled.graph.run(*x)[0], library_out) > 40


def test_exclude_by_module_name_and_signed_activations():
    _, after, record = quantized("digit_cnn", "fold-bn,quantize{activations=s8,exclude=[conv1,fc2]}")
    text = str(after)
    assert 'param("conv1.weight")' in text and 'param("fc2.weight")' in text
    assert 'param("conv2.weight.int8")' in text and '"int8") : i8[' in text
    assert record.stats["quantized"] == 2 and record.stats["float"] == 2
    assert sum("stays float: excluded" in note for note in record.notes) == 2


def test_bad_options_and_data_are_one_line_errors():
    with pytest.raises(PassError, match="exclude 'conv9' matches no conv2d or linear node or module"):
        quantized("digit_cnn", "quantize{exclude=[conv9]}")
    with pytest.raises(PassError, match="unknown calibration 'kl' \\(known: minmax, percentile, entropy, mse\\)"):
        quantized("digit_cnn", "quantize{calibration=kl}")
    with pytest.raises(PassError, match="calibration data is empty"):
        quantized("digit_cnn", "quantize", batches=[])
    with pytest.raises(PassError, match="calibration data is empty"):  # not replaced by a stand-in
        slimgraph.compile("digit_cnn", pipeline="quantize", check=False, calibration_data=[])
    with pytest.raises(PassError, match=r"batch 1, input 'x': expected float32\[1, 1, 8, 8\], got float32\[1, 1, 9, 9\]"):
        quantized("digit_cnn", "quantize", batches=[(torch.zeros(1, 1, 8, 8),), (torch.zeros(1, 1, 9, 9),)])
    with pytest.raises(PassError, match="batch 0, input 'x': expected float32.*got int64"):
        quantized("digit_cnn", "quantize", batches=[(torch.zeros(1, 1, 8, 8, dtype=torch.int64),)])
    with pytest.raises(PassError, match="residuals must be auto or quantized or float, got 'int8'"):
        quantized("digit_cnn", "quantize{residuals=int8}")
    nan = torch.zeros(1, 1, 8, 8)
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(PassError, match="batch 0, input 'x' contains NaN"):
        quantized("digit_cnn", "quantize", batches=[(nan,)])


def test_cli_calibration_file(tmp_path, capsys):
    samples = np.random.default_rng(0).standard_normal((6, 1, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=samples)
    out = tmp_path / "q.so"
    code, stdout, _ = run_cli(capsys, "compile", "digit_cnn", "--pipeline", "default,quantize{calibration=mse}",
                              "--calib", str(tmp_path / "calib.npz"), "-o", str(out), "--runs", "0")
    assert code == 0 and out.is_file()
    np.savez(tmp_path / "bad.npz", y=samples)
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--pipeline", "quantize", "--calib",
                           str(tmp_path / "bad.npz"), "-o", str(tmp_path / "b.so"))
    assert_one_line_error(code, err, "bad.npz' has no array 'x' (it has: y)")
    np.savez(tmp_path / "bad.npz", x=samples[:, 0, :, :4])
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--pipeline", "quantize", "--calib",
                           str(tmp_path / "bad.npz"), "-o", str(tmp_path / "b.so"))
    assert_one_line_error(code, err, "input 'x': expected [1, 1, 8, 8] or [N, 1, 1, 8, 8], got [6, 1, 4, 8]")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--calib", str(tmp_path / "calib.npz"),
                           "-o", str(tmp_path / "c.so"))
    assert_one_line_error(code, err, "calibration data given, but pipeline", "has no quantize or prune pass")
    assert not (tmp_path / "b.so").exists() and not (tmp_path / "c.so").exists()


def test_min_sqnr_keeps_the_fewest_layers_float():
    """digit_cnn's output SQNR with every layer quantized is about 42 dB on its example input:
    asking for 48 dB sends the layers that hurt most alone back to float, until it holds."""
    module, inputs, graph = imported_model("digit_cnn")
    _, everything, record = quantized("digit_cnn", "quantize{min_sqnr=20}", batches=[inputs])
    assert record.stats["quantized"] == 4 and any("every layer quantized" in n for n in record.notes)
    _, after, record = quantized("digit_cnn", "quantize{min_sqnr=48}", batches=[inputs])
    kept = record.stats["float"]
    assert 1 <= kept < 4 and record.stats["quantized"] == 4 - kept
    note = next(n for n in record.notes if n.startswith("min_sqnr 48 dB:"))
    assert f"{kept} layer(s) kept float" in note
    assert sqnr_db(graph.run(*inputs)[0], after.run(*inputs)[0]) >= 48
    assert sqnr_db(graph.run(*inputs)[0], everything.run(*inputs)[0]) < 48
    with pytest.raises(PassError, match="min_sqnr must be >= 0 dB, got -1.0"):
        quantized("digit_cnn", "quantize{min_sqnr=-1}")


def _first_residual_add(graph):
    return next(n for n in graph.fx_graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.add.Tensor)


def test_residual_adds_read_the_quantized_value_when_it_costs_no_accuracy():
    """ResNet-18's first residual add reads the max-pool output, which layer1's first conv reads
    quantized: with residuals=auto the add reads the same dequantize (as ONNX Runtime's quantizer
    does), since that costs under 1 dB of output SQNR; residuals=float keeps the float value."""
    graph, after, record = quantized("resnet18")
    add = _first_residual_add(after)
    dequantized = [a for a in add.args if a.target == torch.ops.slimgraph.dequantize_per_tensor.default]
    assert len(dequantized) == 1 and dequantized[0].args[0].args[0].name == "max_pool2d"
    note = next(n for n in record.notes if "residual" in n)
    assert note.startswith("5 residual add(s) read 8-bit values: output SQNR ")  # the 5 blocks without downsampling
    x = graph.example_inputs(2)
    assert sqnr_db(graph.run(*x)[0], after.run(*x)[0]) > 35
    _, floating, record = quantized("resnet18", "fold-bn,fold-constants,quantize{residuals=float}")
    assert "max_pool2d" in [a.name for a in _first_residual_add(floating).args]
    assert not any("residual" in n for n in record.notes)


def test_residuals_stay_float_where_quantizing_them_costs_accuracy():
    """The encoder's residual stream feeds LayerNorm: 8-bit residuals would cost it about 14 dB of
    output SQNR, so residuals=auto keeps them float and says why; residuals=quantized forces them."""
    graph, after, record = quantized("bert_encoder")
    note = next(n for n in record.notes if "residual" in n)
    assert note.startswith("residual adds keep float values: 8-bit ones would cost ")
    assert not any(a.target == torch.ops.slimgraph.dequantize_per_tensor.default
                   for a in _first_residual_add(after).args if isinstance(a, torch.fx.Node))
    _, forced, _ = quantized("bert_encoder", "fold-bn,fold-constants,quantize{residuals=quantized}")
    x = graph.example_inputs(0)
    reference = graph.run(*x)[0]
    assert sqnr_db(reference, after.run(*x)[0]) > sqnr_db(reference, forced.run(*x)[0]) + 5
