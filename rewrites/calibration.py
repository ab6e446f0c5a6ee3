"""Calibration: quantization parameters from observed values (the first step of int8 quantization).

An `ActivationObserver` sees every batch of one tensor during calibration and keeps a running
range plus a histogram (2048 bins over [-a, a], a = the largest |x| so far; the histogram is
re-binned when the range grows). From it each method picks a clipping range [lo, hi]:

    minmax:      [min x, max x]
    percentile:  the `percentile` and 100 - `percentile` quantiles of |x| histogram mass
                 (default 99.99: the top 0.01 % of outliers are clipped)
    entropy:     the threshold t minimizing KL(P || Q), P = the histogram clipped to [-t, t]
                 (outliers folded into the edge bins), Q = P quantized to 2^bits - 1 levels
                 (TensorRT's calibration, symmetric)
    mse:         the threshold t minimizing E[(x - dequant(quant(x; t)))^2] over the histogram

then the affine parameters for the dtype's range [qmin, qmax]:

    scale = (hi - lo) / (qmax - qmin),  zero_point = clamp(round(qmin - lo / scale), qmin, qmax)
    (int8 activations are symmetric: lo = -hi, zero_point = 0)

Weights are int8, symmetric, per output channel (axis 0): scale_c = max |W_c| / 127.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from slimgraph.ir.slimgraph_ops import QUANT_RANGES

METHODS = ("minmax", "percentile", "entropy", "mse")
BINS = 2048


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: str


class ActivationObserver:
    """Running min / max and a symmetric histogram of |x| for one tensor."""

    def __init__(self):
        self.low, self.high = np.inf, -np.inf
        self.bound = 0.0  # histogram covers [-bound, bound]
        self.histogram = np.zeros(BINS, dtype=np.float64)
        self.count = 0

    def observe(self, value: torch.Tensor) -> None:
        data = value.detach().to(torch.float64).flatten().numpy()
        if data.size == 0:
            return
        self.low, self.high = min(self.low, float(data.min())), max(self.high, float(data.max()))
        bound = max(abs(self.low), abs(self.high))
        if bound > self.bound:
            self._rebin(bound)
        if self.bound > 0:
            self.histogram += np.histogram(data, bins=BINS, range=(-self.bound, self.bound))[0]
        self.count += data.size

    def _rebin(self, bound: float) -> None:
        """Move the counts so far into bins over the wider range [-bound, bound]."""
        if self.bound > 0 and self.histogram.any():
            old_edges = np.linspace(-self.bound, self.bound, BINS + 1)
            centers = (old_edges[:-1] + old_edges[1:]) / 2
            self.histogram = np.histogram(centers, bins=BINS, range=(-bound, bound), weights=self.histogram)[0]
        self.bound = bound

    def clip_range(self, method: str, bits: int = 8, percentile: float = 99.99) -> tuple[float, float]:
        if self.count == 0:
            raise ValueError("the observer saw no values")
        if method == "minmax" or self.bound == 0:
            return self.low, self.high
        if method == "percentile":
            threshold = self._quantile_of_magnitude(percentile / 100)
        elif method == "entropy":
            threshold = self._entropy_threshold(bits)
        elif method == "mse":
            threshold = self._mse_threshold(bits)
        else:
            raise ValueError(f"unknown calibration method '{method}'; known: {', '.join(METHODS)}")
        return max(self.low, -threshold), min(self.high, threshold)

    def _magnitude_histogram(self) -> np.ndarray:
        """Counts of |x| in BINS // 2 bins over [0, bound]."""
        half = BINS // 2
        return self.histogram[half:] + self.histogram[:half][::-1]

    def _quantile_of_magnitude(self, fraction: float) -> float:
        counts = self._magnitude_histogram()
        cumulative = np.cumsum(counts) / counts.sum()
        index = int(np.searchsorted(cumulative, fraction))
        return (index + 1) * self.bound / len(counts)

    def _candidates(self, bits: int) -> range:
        levels = 2 ** (bits - 1)
        return range(levels, BINS // 2 + 1, 16)

    def _entropy_threshold(self, bits: int) -> float:
        counts = self._magnitude_histogram()
        levels = 2 ** (bits - 1)
        best, best_divergence = len(counts), np.inf
        for stop in self._candidates(bits):
            reference = counts[:stop].copy()
            reference[-1] += counts[stop:].sum()  # outliers clip into the last bin
            quantized = np.zeros(stop)
            for chunk in np.array_split(np.arange(stop), levels):  # merge into `levels` bins, spread back
                nonzero = counts[chunk] > 0
                total = counts[chunk].sum()  # Q from the clipped range alone: clipped mass is P's only
                if nonzero.any():
                    quantized[chunk[nonzero]] = total / nonzero.sum()
            divergence = _kl(reference, quantized)
            if divergence < best_divergence:
                best, best_divergence = stop, divergence
        return best * self.bound / len(counts)

    def _mse_threshold(self, bits: int) -> float:
        counts = self._magnitude_histogram()
        width = self.bound / len(counts)
        centers = (np.arange(len(counts)) + 0.5) * width
        levels = 2 ** (bits - 1) - 1
        best, best_error = self.bound, np.inf
        for stop in self._candidates(bits):
            threshold = stop * width
            step = threshold / levels
            restored = np.clip(np.round(centers / step), -levels, levels) * step
            error = float(np.sum(counts * (centers - restored) ** 2))
            if error < best_error:
                best, best_error = threshold, error
        return best


def _smoothed(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Normalized, with eps moved onto the empty bins so that KL stays finite."""
    empty = counts == 0
    if empty.all():
        return np.full(counts.shape, 1.0 / counts.size)
    p = counts / counts.sum()
    taken = eps * empty.sum() / (~empty).sum()
    return np.where(empty, eps, p - taken)


def _kl(reference: np.ndarray, quantized: np.ndarray) -> float:
    p, q = _smoothed(reference), _smoothed(quantized)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def activation_qparams(low: float, high: float, dtype: str) -> QParams:
    """Affine parameters that map [low, high] (widened to include 0) onto the dtype's range."""
    qmin, qmax = QUANT_RANGES[dtype]
    low, high = min(low, 0.0), max(high, 0.0)
    if dtype == "int8":  # symmetric: zero_point 0
        high = max(-low, high)
        low = -high
    span = high - low
    scale = span / (qmax - qmin) if span > 0 else 1.0
    zero_point = 0 if dtype == "int8" else int(np.clip(round(qmin - low / scale), qmin, qmax))
    return QParams(float(np.float32(scale)), zero_point, qmin, qmax, dtype)


def weight_qparams_per_channel(weight: torch.Tensor, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 symmetric scales (float32) and zero points (int32, all 0) per slice along `axis`."""
    magnitude = weight.detach().abs().transpose(0, axis).reshape(weight.shape[axis], -1).amax(dim=1)
    scales = torch.where(magnitude > 0, magnitude / 127.0, torch.ones_like(magnitude)).to(torch.float32)
    return scales, torch.zeros_like(scales, dtype=torch.int32)
