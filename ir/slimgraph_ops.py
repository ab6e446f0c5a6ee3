"""slimgraph's own ops (`torch.ops.slimgraph.*`), registered with torch.library.

Each op has a real reference kernel and a fake (meta) kernel, so every graph runs in PyTorch
and exports again. The quantization and fusion issues add their ops here.

Quantization (affine, as PyTorch's quantized tensors and ONNX QuantizeLinear):

    quantize:    q = clamp(round_half_even(x / scale + zero_point), qmin, qmax)   (stored as dtype)
    dequantize:  x = (q - zero_point) * scale

Per tensor: scale and zero_point are floats/ints in the node; per channel: 1-D tensors (graph
parameters) along `axis`. `dtype` is "int8" or "uint8"; qmin/qmax default to the dtype's range.
Rounding and clamping match `torch.quantize_per_tensor` / `torch.quantize_per_channel`
(tests/test_quant_ops.py checks them against PyTorch on random and tie values). PyTorch adds
the zero point before rounding; ONNX's QuantizeLinear rounds first. The two differ only at
ties with an odd zero point.
"""
import torch

LIBRARY = torch.library.Library("slimgraph", "FRAGMENT")

QUANT_DTYPES = {"int8": torch.int8, "uint8": torch.uint8}
QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}  # (qmin, qmax) of each quantized dtype


def quant_dtype(name: str) -> torch.dtype:
    if name not in QUANT_DTYPES:
        raise ValueError(f"quantized dtype must be one of {', '.join(QUANT_DTYPES)}, got '{name}'")
    return QUANT_DTYPES[name]


def _channel_view(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


LIBRARY.define("quantize_per_tensor(Tensor x, float scale, int zero_point, int qmin, int qmax, str dtype) -> Tensor")
LIBRARY.define("dequantize_per_tensor(Tensor q, float scale, int zero_point) -> Tensor")
LIBRARY.define("quantize_per_channel(Tensor x, Tensor scales, Tensor zero_points, int axis, int qmin, int qmax, "
               "str dtype) -> Tensor")
LIBRARY.define("dequantize_per_channel(Tensor q, Tensor scales, Tensor zero_points, int axis) -> Tensor")


@torch.library.impl(LIBRARY, "quantize_per_tensor", "CompositeExplicitAutograd")
def quantize_per_tensor(x, scale, zero_point, qmin, qmax, dtype):
    # as torch.quantize_per_tensor (FBGEMM): round_half_even(fma(x, float32(1 / scale), zero_point)).
    # A product of two float32 values is exact in float64, so float64 then one rounding = the FMA.
    inverse = float(1.0 / torch.tensor(scale, dtype=torch.float32))  # 1.0f / float(scale), in float32
    q = torch.round((x.to(torch.float64) * inverse + zero_point).to(torch.float32))
    return torch.clamp(q, qmin, qmax).to(quant_dtype(dtype))


@torch.library.impl(LIBRARY, "dequantize_per_tensor", "CompositeExplicitAutograd")
def dequantize_per_tensor(q, scale, zero_point):
    return (q.to(torch.float32) - zero_point) * torch.tensor(scale, dtype=torch.float32)


@torch.library.impl(LIBRARY, "quantize_per_channel", "CompositeExplicitAutograd")
def quantize_per_channel(x, scales, zero_points, axis, qmin, qmax, dtype):
    # torch.quantize_per_channel divides by the float64 scale, then rounds half to even
    scaled = x.to(torch.float64) / _channel_view(scales.to(torch.float64), axis, x.dim())
    q = torch.round(scaled).to(torch.float32) + _channel_view(zero_points, axis, x.dim())
    return torch.clamp(q, qmin, qmax).to(quant_dtype(dtype))


@torch.library.impl(LIBRARY, "dequantize_per_channel", "CompositeExplicitAutograd")
def dequantize_per_channel(q, scales, zero_points, axis):
    zero = _channel_view(zero_points, axis, q.dim()).to(torch.float32)
    return (q.to(torch.float32) - zero) * _channel_view(scales.to(torch.float32), axis, q.dim())


@torch.library.register_fake("slimgraph::quantize_per_tensor")
def _quantize_per_tensor_fake(x, scale, zero_point, qmin, qmax, dtype):
    return torch.empty_like(x, dtype=quant_dtype(dtype))


@torch.library.register_fake("slimgraph::dequantize_per_tensor")
def _dequantize_per_tensor_fake(q, scale, zero_point):
    return torch.empty_like(q, dtype=torch.float32)


@torch.library.register_fake("slimgraph::quantize_per_channel")
def _quantize_per_channel_fake(x, scales, zero_points, axis, qmin, qmax, dtype):
    return torch.empty_like(x, dtype=quant_dtype(dtype))


@torch.library.register_fake("slimgraph::dequantize_per_channel")
def _dequantize_per_channel_fake(q, scales, zero_points, axis):
    return torch.empty_like(q, dtype=torch.float32)


from . import quant_ops  # noqa: E402,F401  (the integer conv / linear ops, which use LIBRARY)
