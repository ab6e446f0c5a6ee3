"""Integer conv2d and linear (`torch.ops.slimgraph.qconv2d` / `qlinear`): what the realization
step (rewrites/quant_realize.py) turns dequantize -> conv / linear -> [activation] -> quantize
chains into, with reference kernels that define the arithmetic the compiled kernels reproduce.

    acc[o, ...] = sum (x - x_zero_point) * weight[o, ...] + bias[o]           exact, in int32
    y[o, ...]   = float32(acc[o, ...]) * scale[o]                              float32 multiply

and then, by `out_dtype`:

    uint8 / int8:  q = clamp(round_half_even(y) + out_zero_point, out_min, out_max)
    float32:       y = clamp(y, out_min, out_max)          (+-inf bounds when no activation)
    int32:         acc                                      (ONNX ConvInteger / MatMulInteger)

x is uint8 or int8 (per-tensor zero point), weight int8 (symmetric per output channel, zero
point 0), bias int32 (already divided by the input scale times the weight scale), scale float32
per output channel: the requantization multiplier s_x * s_w[o] / s_out for an integer output,
the dequantization scale s_x * s_w[o] for a float one. A fused ReLU / ReLU6 / clamp is folded
into out_min / out_max. Padding pads x with its zero point (the value of a real 0).

The references accumulate in float64, which is exact here: every product is at most 255 * 128 in
magnitude and the sums stay far below 2**53.
"""
import torch
import torch.nn.functional as F

from .slimgraph_ops import LIBRARY, QUANT_DTYPES

OUT_DTYPES = {**QUANT_DTYPES, "float32": torch.float32, "int32": torch.int32}

LIBRARY.define("qconv2d(Tensor x, Tensor weight, Tensor bias, Tensor scale, int x_zero_point, int out_zero_point, "
               "int[] stride, int[] padding, int[] dilation, int groups, float out_min, float out_max, "
               "str out_dtype) -> Tensor")
LIBRARY.define("qlinear(Tensor x, Tensor weight, Tensor bias, Tensor scale, int x_zero_point, int out_zero_point, "
               "float out_min, float out_max, str out_dtype) -> Tensor")


def out_dtype_of(name: str) -> torch.dtype:
    if name not in OUT_DTYPES:
        raise ValueError(f"integer op out_dtype must be one of {', '.join(OUT_DTYPES)}, got '{name}'")
    return OUT_DTYPES[name]


def requantize(acc: torch.Tensor, scale: torch.Tensor, out_zero_point: int, out_min: float, out_max: float,
               out_dtype: str, channel_axis: int) -> torch.Tensor:
    """The shared tail: int32 accumulator (as exact float64) -> scaled float32 -> output dtype."""
    if out_dtype == "int32":  # ONNX ConvInteger / MatMulInteger: the accumulator itself
        return acc.to(torch.int32)
    shape = [1] * acc.dim()
    shape[channel_axis] = -1
    scaled = acc.to(torch.float32) * scale.to(torch.float32).reshape(shape)
    if out_dtype == "float32":
        return torch.clamp(scaled, out_min, out_max)
    quantized = torch.round(scaled) + out_zero_point
    return torch.clamp(quantized, out_min, out_max).to(out_dtype_of(out_dtype))


@torch.library.impl(LIBRARY, "qconv2d", "CompositeExplicitAutograd")
def qconv2d(x, weight, bias, scale, x_zero_point, out_zero_point, stride, padding, dilation, groups,
            out_min, out_max, out_dtype):
    shifted = x.to(torch.float64) - x_zero_point  # zero padding of x - zp is padding x with zp
    acc = F.conv2d(shifted, weight.to(torch.float64), bias.to(torch.float64), stride, padding, dilation, groups)
    return requantize(acc, scale, out_zero_point, out_min, out_max, out_dtype, 1)


@torch.library.impl(LIBRARY, "qlinear", "CompositeExplicitAutograd")
def qlinear(x, weight, bias, scale, x_zero_point, out_zero_point, out_min, out_max, out_dtype):
    acc = F.linear(x.to(torch.float64) - x_zero_point, weight.to(torch.float64), bias.to(torch.float64))
    return requantize(acc, scale, out_zero_point, out_min, out_max, out_dtype, -1)


@torch.library.register_fake("slimgraph::qconv2d")
def _qconv2d_fake(x, weight, bias, scale, x_zero_point, out_zero_point, stride, padding, dilation, groups,
                  out_min, out_max, out_dtype):
    batch, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    return x.new_empty((batch, out_channels, out_h, out_w), dtype=out_dtype_of(out_dtype))


@torch.library.register_fake("slimgraph::qlinear")
def _qlinear_fake(x, weight, bias, scale, x_zero_point, out_zero_point, out_min, out_max, out_dtype):
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype_of(out_dtype))
