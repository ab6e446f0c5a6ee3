"""quantize: calibrate, then insert int8 quantize / dequantize around every conv2d and linear.

For each conv2d / linear y = op(x, W, b) that is not excluded:

    x  ->  x' = dequantize(quantize(x; s_x, z_x))     s_x, z_x from calibration (per tensor,
                                                      uint8 asymmetric or int8 symmetric)
    W  ->  W' = dequantize_per_channel(W_q; s_W, 0)   W_q = round(W / s_W) stored as an int8
                                                      parameter, s_W[c] = max |W[c]| / 127

and y = op(x', W', b) keeps a float bias. The graph still runs in PyTorch (the ops are
`torch.ops.slimgraph.*`, see ir/slimgraph_ops.py), and its outputs are what int8 arithmetic with
these scales gives. This is the Q/DQ form only: the realization into integer conv / matmul
kernels is a later step, and until then the compiled kernels compute in float.

Calibration data: `calibration_data(batches)` around the pass (`slimgraph.compile(...,
calibration_data=...)` does it; without data, compile passes the model's example inputs as a
stand-in); with nothing at all, the graph's seeded random inputs (8 batches). A note says which.
Ranges come from rewrites/calibration.py (`calibration=minmax, percentile, entropy or mse`). A
layer whose weight is not a constant stays float, with the reason in the notes;
`exclude=[name,...]` keeps the named nodes or modules (and their children) float.

Residuals: a residual add `a + b` whose `a` some layer reads quantized can read the same
x_a' = dequantize(quantize(a)) instead of `a` (`residuals=quantized`; `float` keeps `a`). Then
nothing reads `a` in float, and realize writes it in 8 bits only. `auto` (default) compares the
model's output SQNR on the sensitivity batches both ways and keeps 8-bit residuals when they cost
at most RESIDUAL_SQNR_COST dB.

Sensitivity: after insertion, each quantized layer's output is compared with the float graph's
on up to 4 calibration batches; the notes list every layer's SQNR, lowest (most sensitive) first,
which is where to look for a layer to `exclude`. `min_sqnr=30` automates it: while the model's
output SQNR (same batches) is below 30 dB, the layer whose quantization alone hurts the output
most goes back to float (greedy, one-at-a-time sensitivity).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Sequence

import torch
import torch.fx as fx

import slimgraph.ir.slimgraph_ops  # noqa: F401  (registers torch.ops.slimgraph)
from slimgraph.ir.graph import PROVENANCE, Graph, Provenance, provenance_of
from slimgraph.ir.shapes import to_meta

from .base import Pass, PassError, PassResult, register_pass
from .instruments import output_sqnr_db, signal_and_noise, sqnr_db
from .calibration import METHODS, ActivationObserver, activation_qparams, weight_qparams_per_channel

aten = torch.ops.aten
QUANTIZABLE = (aten.conv2d.default, aten.linear.default)
ACTIVATION_DTYPES = {"u8": "uint8", "s8": "int8"}
RESIDUALS = ("auto", "quantized", "float")
RESIDUAL_SQNR_COST = 1.0  # dB of output SQNR that residuals=auto gives up for 8-bit residual reads
RESIDUAL_ADDS = (aten.add.Tensor,)
RANDOM_BATCHES = 8
SENSITIVITY_BATCHES = 4  # calibration batches the per-layer SQNR is measured on

_CALIBRATION: ContextVar[list | None] = ContextVar("slimgraph_calibration_data", default=None)


@contextmanager
def calibration_data(batches: Iterable[Sequence[torch.Tensor]] | None, fallback_note: str = ""):
    """Make `batches` (each a tuple of the graph's inputs) the data the quantize pass calibrates on;
    a `fallback_note` says they are a stand-in for real data (it goes into the pass's notes)."""
    token = _CALIBRATION.set(None if batches is None else ([tuple(b) for b in batches], fallback_note))
    try:
        yield
    finally:
        _CALIBRATION.reset(token)


def check_batches(graph: Graph, batches: list) -> None:
    """One-line errors for calibration data that cannot be what the graph takes."""
    if not batches:
        raise PassError("quantize: the calibration data is empty")
    specs = graph.input_specs()
    for index, batch in enumerate(batches):
        if len(batch) != len(specs):
            raise PassError(f"quantize: calibration batch {index} has {len(batch)} input(s), the graph takes "
                            f"{len(specs)}")
        for (name, shape, dtype), value in zip(specs, batch):
            value = torch.as_tensor(value)
            if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
                raise PassError(f"quantize: calibration batch {index}, input '{name}': expected "
                                f"{str(dtype).replace('torch.', '')}{list(shape)}, got "
                                f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise PassError(f"quantize: calibration batch {index}, input '{name}' contains NaN or infinity")


class _Recording(fx.Interpreter):
    """Runs a graph module and keeps the values of the nodes named `names`."""

    def __init__(self, module, names):
        super().__init__(module)
        self.names, self.values = set(names), {}

    def run_node(self, node):
        value = super().run_node(node)
        if node.name in self.names:
            self.values[node.name] = value
        return value


def _record(module, names, batch) -> dict[str, torch.Tensor]:
    recording = _Recording(module, names)
    with torch.no_grad():
        recording.run(*[torch.as_tensor(v) for v in batch])
    return recording.values


def layer_sqnr(float_module, quantized_module, names: list[str], batches) -> dict[str, float]:
    """Per-layer sensitivity: 10 log10(sum y^2 / sum (y - y_q)^2) of each layer's output y in the
    float graph against y_q in the quantized one (errors of earlier layers included), over `batches`."""
    sums = {name: [0.0, 0.0] for name in names}
    for batch in batches:
        expected, actual = _record(float_module, names, batch), _record(quantized_module, names, batch)
        for name in names:
            signal, noise = signal_and_noise([expected[name]], [actual[name]])
            sums[name][0] += signal
            sums[name][1] += noise
    return {name: sqnr_db(*sums[name]) for name in names}


def _matches(node: fx.Node, name: str) -> bool:
    source = provenance_of(node).source
    return node.name == name or source == name or source.startswith(name + ".")


@register_pass
@dataclass
class Quantize(Pass):
    name: ClassVar[str] = "quantize"
    summary: ClassVar[str] = "int8: calibrate, weights per channel, quantize/dequantize around conv2d and linear"
    lossy: ClassVar[bool] = True
    calibration: str = "minmax"
    activations: str = "u8"
    percentile: float = 99.99
    exclude: list[str] = field(default_factory=list)
    min_sqnr: float = 0.0  # > 0: keep the fewest layers float that hold the output SQNR (dB) above it
    residuals: str = "auto"  # quantized | float | auto: what a residual add reads of a value a layer quantizes

    def run(self, graph):
        if self.calibration not in METHODS:
            raise PassError(f"quantize: unknown calibration '{self.calibration}' (known: {', '.join(METHODS)})")
        if self.activations not in ACTIVATION_DTYPES:
            raise PassError(f"quantize: activations must be u8 or s8, got '{self.activations}'")
        if self.residuals not in RESIDUALS:
            raise PassError(f"quantize: residuals must be {' or '.join(RESIDUALS)}, got '{self.residuals}'")
        if self.min_sqnr < 0:
            raise PassError(f"quantize: min_sqnr must be >= 0 dB, got {self.min_sqnr}")
        if not 50 < self.percentile <= 100:
            raise PassError(f"quantize: percentile must be in (50, 100], got {self.percentile}")
        candidates = [n for n in graph.fx_graph.nodes if n.op == "call_function" and n.target in QUANTIZABLE]
        for name in self.exclude:
            if not any(_matches(n, name) for n in candidates):
                raise PassError(f"quantize: exclude '{name}' matches no conv2d or linear node or module")
        notes, layers = [], []
        for node in candidates:
            if any(_matches(node, name) for name in self.exclude):
                notes.append(f"%{node.name} ({provenance_of(node).source or node.name}) stays float: excluded")
            elif node.args[1].op != "get_attr":
                notes.append(f"%{node.name} stays float: its weight is not a constant")
            else:
                layers.append(node)
        if not layers:
            return PassResult(graph, False, {"quantized": 0}, notes)
        batches, fallback_note = _CALIBRATION.get() or (None, "")
        if batches is None:
            batches = [graph.example_inputs(seed) for seed in range(RANDOM_BATCHES)]
            fallback_note = f"{RANDOM_BATCHES} batches of seeded random inputs"
        if fallback_note:
            notes.append(f"calibrated on {fallback_note} (no calibration data given): ranges of real data will differ")
        check_batches(graph, batches)
        observers = {n.args[0].name: ActivationObserver() for n in layers}
        module = graph.module()
        for batch in batches:
            for name, value in _record(module, observers, batch).items():
                observers[name].observe(value)
        dtype = ACTIVATION_DTYPES[self.activations]
        activation_params = {}
        for node in layers:
            low, high = observers[node.args[0].name].clip_range(self.calibration, percentile=self.percentile)
            activation_params[node.args[0].name] = activation_qparams(low, high, dtype)
        chosen = [n.name for n in layers]
        evaluation = batches[:SENSITIVITY_BATCHES]
        expected = []  # the float graph's outputs on the evaluation batches, run once when first needed

        def output_sqnr(candidate: Graph) -> float:
            if not expected:
                expected.extend(t for batch in evaluation for t in graph.run(*batch))
            return output_sqnr_db(expected, [t for batch in evaluation for t in candidate.run(*batch)])

        residuals = self.residuals != "float"
        quantized, rewired = self._quantized_copy(graph, chosen, activation_params, residuals)
        if self.residuals == "auto" and rewired:
            residuals, quantized = self._choose_residuals(graph, quantized, rewired, chosen, activation_params,
                                                          output_sqnr, notes)
        if self.min_sqnr > 0:
            chosen, quantized = self._hold_output_sqnr(graph, quantized, chosen, activation_params, residuals,
                                                       output_sqnr, notes)
        sensitivity = layer_sqnr(module, quantized.module(), chosen, evaluation)
        source = {n.name: provenance_of(n).source or "-" for n in layers}
        for name in sorted(chosen, key=sensitivity.get):  # the most sensitive first
            notes.append(f"%{name} ({source[name]}): output SQNR {sensitivity[name]:.1f} dB vs float")
        activations = len({graph.node(name).args[0].name for name in chosen})
        stats = {"quantized": len(chosen), "float": len(candidates) - len(chosen), "activations": activations}
        return PassResult(quantized, bool(chosen), stats, notes)

    def _quantized_copy(self, graph: Graph, names: list[str], activation_params: dict,
                        residuals: bool) -> tuple[Graph, int]:
        """A copy of `graph` with the layers `names` quantized (see the module docstring), its residual
        adds reading the quantized values when `residuals`; and how many adds do."""
        result = graph.copy()
        inserted: dict[str, fx.Node] = {}
        for name in names:
            node = result.node(name)
            activation = node.args[0]
            if activation.name not in inserted:
                inserted[activation.name] = self._qdq_activation(result, activation, activation_params[activation.name])
            node.args = (inserted[activation.name], self._qdq_weight(result, node), *node.args[2:])
            node.meta[PROVENANCE] = provenance_of(node).touched_by(self.name)
        rewired = self._residuals_read_quantized(result, inserted) if residuals else 0
        result.remove_unused_params()
        return result, rewired

    def _residuals_read_quantized(self, graph: Graph, restored: dict[str, fx.Node]) -> int:
        """A residual add `a + b` whose `a` a layer reads quantized reads the same dequantize(quantize(a))
        (ONNX Runtime's quantize_static does the same). `a` then has no float reader left, so realize
        can write it in 8 bits only; the add reads it as one (x - z) * s, fused into the kernel that
        adds: a quarter of the float value's memory traffic, and no float copy to write. Returns how
        many adds now read a quantized value."""
        rewired = 0
        for node in graph.fx_graph.nodes:
            if node.op == "call_function" and node.target in RESIDUAL_ADDS:
                args = tuple(restored[a.name] if isinstance(a, fx.Node) and a.name in restored else a for a in node.args)
                rewired += args != node.args
                node.args = args
        return rewired

    def _choose_residuals(self, graph, quantized, rewired, chosen, activation_params, output_sqnr, notes):
        """residuals=auto: 8-bit residual reads unless they cost the model more than
        RESIDUAL_SQNR_COST dB of output SQNR against float residuals (on the sensitivity batches).
        A transformer's residual stream feeds LayerNorm, which divides by its spread: BERT-style
        encoders lose 10-15 dB that way, CNNs a few tenths. Returns (8-bit residuals?, the graph)."""
        with_quantized = output_sqnr(quantized)
        floating, _ = self._quantized_copy(graph, chosen, activation_params, residuals=False)
        with_float = output_sqnr(floating)
        if with_float - with_quantized <= RESIDUAL_SQNR_COST:
            notes.append(f"{rewired} residual add(s) read 8-bit values: output SQNR {with_quantized:.1f} dB "
                         f"({with_float:.1f} with float residuals)")
            return True, quantized
        notes.append(f"residual adds keep float values: 8-bit ones would cost {with_float - with_quantized:.1f} dB "
                     f"of output SQNR ({with_quantized:.1f} vs {with_float:.1f} dB; residuals=quantized forces them)")
        return False, floating

    def _hold_output_sqnr(self, graph, quantized, chosen, activation_params, residuals, output_sqnr, notes):
        """Automatic float fallback: while the model's output SQNR is below `min_sqnr`, give back to
        float the layer that hurts most when quantized alone (one-at-a-time sensitivity)."""
        achieved = output_sqnr(quantized)
        if achieved >= self.min_sqnr:
            notes.append(f"output SQNR {achieved:.1f} dB >= min_sqnr {self.min_sqnr:g}: every layer quantized")
            return chosen, quantized
        alone = {name: output_sqnr(self._quantized_copy(graph, [name], activation_params, residuals)[0])
                 for name in chosen}
        kept_float = []
        for name in sorted(chosen, key=alone.get):
            kept_float.append(name)
            chosen = [n for n in chosen if n != name]
            quantized, _ = self._quantized_copy(graph, chosen, activation_params, residuals)
            achieved = output_sqnr(quantized)
            if achieved >= self.min_sqnr:
                break
        listed = ", ".join(f"%{n} ({alone[n]:.1f} dB alone)" for n in kept_float)
        notes.append(f"min_sqnr {self.min_sqnr:g} dB: {len(kept_float)} layer(s) kept float ({listed}); "
                     f"output SQNR now {achieved:.1f} dB")
        return chosen, quantized

    def _stamp(self, node: fx.Node, source: str, value: torch.Tensor) -> fx.Node:
        node.meta["val"] = to_meta(value)
        node.meta[PROVENANCE] = Provenance(source, (self.name,))
        return node

    def _qdq_activation(self, graph: Graph, activation: fx.Node, params) -> fx.Node:
        ops, source = torch.ops.slimgraph, provenance_of(activation).source
        example = activation.meta["val"]
        with graph.fx_graph.inserting_after(activation):
            quantized = graph.fx_graph.call_function(
                ops.quantize_per_tensor.default,
                (activation, params.scale, params.zero_point, params.qmin, params.qmax, params.dtype))
        with graph.fx_graph.inserting_after(quantized):
            restored = graph.fx_graph.call_function(ops.dequantize_per_tensor.default,
                                                    (quantized, params.scale, params.zero_point))
        self._stamp(quantized, source, torch.empty(example.shape, dtype=getattr(torch, params.dtype)))
        return self._stamp(restored, source, torch.empty(example.shape, dtype=torch.float32))

    def _qdq_weight(self, graph: Graph, node: fx.Node) -> fx.Node:
        ops, weight_node = torch.ops.slimgraph, node.args[1]
        weight = graph.params[weight_node.target]
        scales, zero_points = weight_qparams_per_channel(weight)
        quantized = ops.quantize_per_channel(weight, scales, zero_points, 0, -127, 127, "int8")
        stem, source = weight_node.target, provenance_of(node).source
        with graph.fx_graph.inserting_before(node):
            attrs = []
            for suffix, tensor in (("int8", quantized), ("scale", scales), ("zero_point", zero_points)):
                graph.params[f"{stem}.{suffix}"] = tensor
                attr = graph.fx_graph.get_attr(f"{stem}.{suffix}")
                attrs.append(self._stamp(attr, source, tensor))
            restored = graph.fx_graph.call_function(ops.dequantize_per_channel.default, (*attrs, 0))
        return self._stamp(restored, source, weight)
