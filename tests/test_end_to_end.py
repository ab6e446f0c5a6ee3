"""Every built-in model, through both frontends, compiles to an x86 library that matches its
reference within 1e-4: PyTorch for the torch.export path, ONNX Runtime for the ONNX path."""
import functools
import json

import numpy as np
import onnxruntime
import pytest
import torch

import slimgraph
from slimgraph.codegen.artifact import ArtifactError
from slimgraph.runtime import InputError

from .conftest import MODEL_NAMES, imported_model, onnx_file


@functools.lru_cache(maxsize=None)
def compiled_from_torch(name):
    _, inputs, graph = imported_model(name)
    return slimgraph.compile(graph, inputs, target="x86", check=False)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torch_path_matches_pytorch(name):
    module, inputs, _ = imported_model(name)
    compiled = compiled_from_torch(name)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    (actual,) = compiled(*[t.numpy() for t in inputs])
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-4


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_path_matches_onnx_runtime(name, onnx_dir):
    path = onnx_file(name, onnx_dir)
    compiled = slimgraph.compile(path, target="x86", check=False)
    _, inputs, _ = imported_model(name)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    (expected,) = session.run(None, feeds)
    (actual,) = compiled(*feeds.values())
    assert np.abs(actual - expected).max() <= 1e-4


def test_export_then_load_runs_the_same_and_checks_inputs(tmp_path):
    compiled = compiled_from_torch("digit_cnn")
    library, meta = compiled.export(tmp_path / "digit.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.json", "digit.so"]
    metadata = json.loads(meta.read_text())
    assert metadata["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert metadata["outputs"][0]["shape"] == [1, 10]
    assert metadata["target"]["config"]["kind"] == "llvm" and metadata["target"]["config"]["mcpu"]
    assert set(metadata["versions"]) >= {"slimgraph", "tvm", "torch"}
    assert len(metadata["library"]["sha256"]) == 64
    loaded = slimgraph.load(library)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(loaded(x)[0], compiled(x)[0], rtol=0, atol=0)
    with pytest.raises(InputError, match=r"input 'x' \(#1\) of model 'digit_cnn': expected float32\[1,1,8,8\], got float32\[1,1,9,9\]"):
        loaded(np.zeros((1, 1, 9, 9), np.float32))
    with pytest.raises(InputError, match=r"expected float32\[1,1,8,8\], got float64\[1,1,8,8\]"):
        loaded(np.zeros((1, 1, 8, 8)))
    with pytest.raises(InputError, match=r"takes 1 input\(s\) \(x: float32\[1,1,8,8\]\), got 2"):
        loaded(x, x)


def test_a_modified_library_is_refused(tmp_path):
    library, _ = compiled_from_torch("digit_cnn").export(tmp_path / "digit.so")
    with open(library, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ArtifactError, match="does not match the checksum"):
        slimgraph.load(library)


def test_compile_checks_against_the_reference_and_benchmarks():
    compiled = slimgraph.compile("digit_cnn", bench_runs=3)
    assert compiled.report.reference == "PyTorch"
    assert compiled.report.max_abs_diff <= 1e-5
    assert compiled.report.latency["runs"] == 3 and compiled.report.latency["median_ms"] > 0
    assert len(compiled.report.kernels) >= 3
    timed = compiled.benchmark(repeat=5)  # every run's time too (the benchmarks interleave engines with them)
    assert len(timed["runs_ms"]) == 5 and timed["median_ms"] == sorted(timed["runs_ms"])[2]
