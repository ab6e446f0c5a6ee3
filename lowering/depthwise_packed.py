"""Depthwise conv2d with channels as vector lanes: the padding pass re-lays the input out in
channel blocks, so every width and stride vectorizes. Used where the NCHW rule cannot vectorize
along the width (output widths no 4 divides, such as MobileNetV2's 14 and 7).

    Xb[n, c // cb, y, x, c % cb] = pad(X)[n, c, y, x]                 (one pass, in the kernel)
    Wb[c // cb, kh, kw, c % cb]  = W[c, 0, kh, kw]                    (a constant: folded once)
    out[n, c, oh, ow] = sum_{kh, kw} Xb[n, c // cb, oh*sh + kh*dh, ow*sw + kw*dw, c % cb]
                                     * Wb[c // cb, kh, kw, c % cb]

The conv block carries the same name and `slimgraph.lanes` annotation as the packed conv2d,
so `conv_packed.PackedConv2dRule` schedules it: lanes over c, a register tile of owt columns.
"""
from __future__ import annotations

from .conv_packed import LANES_ATTR, PACKED_CONV_BLOCK, channel_block


def _pack_depthwise_weight(weight, block: int):
    from tvm import te

    channels, _, kh, kw = weight.shape
    return te.compute((channels // block, kh, kw, block), lambda o, y, x, c: weight[o * block + c, 0, y, x],
                      name="packed_weight")


def _depthwise_packed(data, packed, strides, padding, dilation):
    from tvm import te, tirx

    batch, channels, height, width = data.shape
    blocks, kernel_h, kernel_w, block = packed.shape
    top, left, bottom, right = padding
    (stride_h, stride_w), (dilation_h, dilation_w) = strides, dilation
    padded_h, padded_w = height + top + bottom, width + left + right
    out_h = (padded_h - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (padded_w - dilation_w * (kernel_w - 1) - 1) // stride_w + 1

    def blocked_input(n, o, y, x, c):
        inside = tirx.all(y >= top, y < top + height, x >= left, x < left + width)
        return tirx.if_then_else(inside, data[n, o * block + c, y - top, x - left], tirx.const(0.0, data.dtype))

    blocked = te.compute((batch, blocks, padded_h, padded_w, block), blocked_input, name="pad_blocked")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (batch, channels, out_h, out_w),
        lambda n, c, y, x: te.sum(
            blocked[n, c // block, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w, c % block]
            * packed[c // block, ry, rx, c % block], axis=[ry, rx]),
        name=PACKED_CONV_BLOCK, attrs={LANES_ATTR: block})


def wants_blocked_depthwise(call) -> bool:
    """A depthwise conv whose output width no 4 divides: the NCHW rule (Conv2dRule) vectorizes along
    the width and is as fast or faster where it can (measured: width 56 0.26 vs 0.51 ms, 28 about
    equal); at widths 14 and 7 the blocked form is 2-3x faster."""
    groups = int(call.attrs.groups)
    data, weight = call.args
    return (groups > 1 and groups == int(data.ty.shape[1]) == int(weight.ty.shape[0])
            and int(weight.ty.shape[1]) == 1 and int(call.ty.shape[3]) % 4 != 0)


def emit_depthwise(bb, call, lanes: int):
    attrs = call.attrs
    data, weight = call.args
    block = channel_block(int(weight.ty.shape[0]), lanes)
    packed = bb.emit_te(_pack_depthwise_weight, weight, block, primfunc_name_hint="pack_depthwise_weight")
    return bb.call_te(_depthwise_packed, data, packed, [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
                      primfunc_name_hint="depthwise_conv2d")
