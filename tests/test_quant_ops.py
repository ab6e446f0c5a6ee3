"""Quantize / dequantize reference ops match PyTorch's quantized tensors, and calibration
observers pick ranges that do what their math says."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimgraph.ir.slimgraph_ops  # noqa: F401  (registers torch.ops.slimgraph)
from slimgraph.rewrites.calibration import (ActivationObserver, activation_qparams,
                                            weight_qparams_per_channel)

ops = torch.ops.slimgraph
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # the reference we compare to
TORCH_DTYPE = {"uint8": torch.quint8, "int8": torch.qint8}


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(1e-4, 10.0), zero_point=st.integers(0, 255), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["uint8", "int8"]))
def test_quantize_per_tensor_matches_torch(scale, zero_point, seed, dtype):
    if dtype == "int8":
        zero_point -= 128
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(257, generator=generator) * scale * 100
    ties = (torch.arange(-20, 20, dtype=torch.float32) + 0.5) * scale  # exactly between two levels
    x = torch.cat([x, ties])
    expected = torch.quantize_per_tensor(x, scale, zero_point, TORCH_DTYPE[dtype])
    q = ops.quantize_per_tensor(x, scale, zero_point, qmin, qmax, dtype)
    assert q.dtype == getattr(torch, dtype)
    assert torch.equal(q, expected.int_repr())
    assert torch.equal(ops.dequantize_per_tensor(q, scale, zero_point), expected.dequantize())


def test_quantize_per_channel_matches_torch():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 3, 3, 3, generator=generator)
    scales, zero_points = weight_qparams_per_channel(weight)
    expected = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), 0, torch.qint8)
    q = ops.quantize_per_channel(weight, scales, zero_points, 0, -128, 127, "int8")
    assert torch.equal(q, expected.int_repr())
    restored = ops.dequantize_per_channel(q, scales, zero_points, 0)
    assert torch.equal(restored, expected.dequantize())
    # symmetric per channel: every channel's largest weight maps to +-127, error at most half a step
    assert q.abs().flatten(1).amax(1).tolist() == [127] * 8
    assert torch.all((restored - weight).abs() <= scales.view(-1, 1, 1, 1) / 2 + 1e-7)


def test_quantize_on_another_axis_and_clamp_range():
    x = torch.tensor([[-3.0, 0.2, 9.0], [1.0, -1.0, 0.49]])
    scales, zero_points = torch.tensor([0.1, 0.5, 1.0]), torch.tensor([0, 0, 0], dtype=torch.int32)
    q = ops.quantize_per_channel(x, scales, zero_points, 1, -5, 5, "int8")
    assert q.tolist() == [[-5, 0, 5], [5, -2, 0]]  # clamped to [-5, 5]; -1.0 / 0.5 = -2; 0.49 -> 0


def test_quant_ops_trace_through_torch_export():
    class QDQ(torch.nn.Module):
        def forward(self, x):
            return ops.dequantize_per_tensor(ops.quantize_per_tensor(x, 0.05, 128, 0, 255, "uint8"), 0.05, 128)

    x = torch.randn(2, 8)
    program = torch.export.export(QDQ(), (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["slimgraph.quantize_per_tensor.default", "slimgraph.dequantize_per_tensor.default"]
    assert torch.allclose(program.module()(x), x, atol=0.025 + 1e-6)


def observed(values) -> ActivationObserver:
    observer = ActivationObserver()
    for batch in values:
        observer.observe(torch.as_tensor(batch, dtype=torch.float32))
    return observer


def test_minmax_and_percentile_ranges():
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 2, 10000) for _ in range(3)] + [np.array([50.0])]  # one outlier, a later batch
    observer = observed(batches)
    assert observer.clip_range("minmax") == pytest.approx((observer.low, 50.0))
    low, high = observer.clip_range("percentile", percentile=99.9)
    assert 1.9 <= high <= 2.2 and -1.1 <= low <= -0.9  # the outlier is clipped
    assert observer.histogram.sum() == observer.count == 30001  # re-binning keeps every count


def sqnr_db(x: np.ndarray, low: float, high: float, dtype: str) -> float:
    params = activation_qparams(low, high, dtype)
    q = ops.quantize_per_tensor(torch.from_numpy(x), params.scale, params.zero_point, params.qmin,
                                params.qmax, dtype)
    restored = ops.dequantize_per_tensor(q, params.scale, params.zero_point).numpy()
    return 10 * np.log10(np.sum(x ** 2) / np.sum((x - restored) ** 2))


def heavy_tailed() -> np.ndarray:
    """Laplace(0, 1) values plus three far outliers."""
    x = np.random.default_rng(1).laplace(0, 1, 200000).astype(np.float32)
    x[:3] = [30.0, -25.0, 28.0]
    return x


def test_mse_clips_the_tail_and_beats_minmax():
    """Clipping three outliers buys a 2.5x finer step for everything else: lower total error."""
    x = heavy_tailed()
    observer = observed([x])
    low, high = observer.clip_range("mse")
    assert high < 25 and low > -25
    assert sqnr_db(x, low, high, "int8") > sqnr_db(x, *observer.clip_range("minmax"), "int8") + 1


def test_entropy_clips_outliers_but_keeps_the_bulk():
    x = heavy_tailed()
    low, high = observed([x]).clip_range("entropy")
    bulk = float(np.quantile(np.abs(x), 0.999))  # about 6.2 for Laplace(0, 1)
    assert bulk < high < 25 and -25 < low < -bulk


def test_activation_qparams_represent_zero_exactly():
    params = activation_qparams(0.5, 6.0, "uint8")  # a range without 0 is widened to include it
    assert params.zero_point == 0 and params.scale == pytest.approx(6.0 / 255)
    params = activation_qparams(-1.0, 3.0, "uint8")
    assert params.zero_point == 64 and params.scale == pytest.approx(4.0 / 255)
    zero = ops.quantize_per_tensor(torch.zeros(1), params.scale, params.zero_point, 0, 255, "uint8")
    assert ops.dequantize_per_tensor(zero, params.scale, params.zero_point).item() == 0.0
    params = activation_qparams(-1.0, 3.0, "int8")
    assert params.zero_point == 0 and params.scale == pytest.approx(6.0 / 255)  # [-3, 3] onto 255 steps


def test_observer_errors():
    with pytest.raises(ValueError, match="saw no values"):
        ActivationObserver().clip_range("minmax")
    with pytest.raises(ValueError, match="unknown calibration method 'kl'; known: minmax, percentile"):
        observed([np.ones(4)]).clip_range("kl")
