"""Max pooling as a windowed reduction over the padded plane of lowering/grouped_conv.py.

    P[n, c, y, x]  = x_in[n, c, y - top, x - left]  inside the input,  lowest(dtype) outside
    out[n, c, oh, ow] = max_{kh, kw} P[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

TVM's own legalization pads with an `if_then_else` per element and, with stride 2, reads every
other element of a row, so its loops stay scalar (ResNet-18's 3x3 / 2 pool at 112x112: 0.14 ms).
Written over `padded_plane`, the padding carries its interior annotation (a branch-free,
vectorized copy) and a stride-2 plane is split by column parity, so the direct conv rule
(lowering/cpu_schedules.Conv2dRule, which takes it as a depthwise reduction: per channel, the
plane padded in cache right before it is read) loads whole vectors.
"""
from __future__ import annotations

from .grouped_conv import padded_plane

POOL_BLOCK = "pool_max"


def _lowest(dtype: str):
    import numpy as np

    return float(np.finfo(dtype).min) if dtype.startswith("float") else int(np.iinfo(dtype).min)


def max_pool2d(data, pool_size, strides, padding, dilation):
    """The max pool above; NCHW, padding (top, left, bottom, right)."""
    from tvm import te

    batch, channels, height, width = (int(e) for e in data.shape)
    (kernel_h, kernel_w), (stride_h, stride_w), (dilation_h, dilation_w) = pool_size, strides, dilation
    top, left, bottom, right = padding
    dtype = str(data.dtype)
    plane, read = padded_plane(data, padding, stride_w, dilation_w, _lowest(dtype), dtype)
    out_h = (height + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + left + right - dilation_w * (kernel_w - 1) - 1) // stride_w + 1
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (batch, channels, out_h, out_w),
        lambda n, c, y, x: te.max(read(n, c, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w),
                                  axis=[ry, rx]), name=POOL_BLOCK)


def legalize_max_pool2d(bb, call):
    """LegalizeOps hook for relax.nn.max_pool2d: NCHW without ceil mode as `max_pool2d` above,
    TVM's own legalization otherwise."""
    import tvm

    attrs = call.attrs
    if attrs.layout != "NCHW" or attrs.out_layout != "NCHW" or bool(attrs.ceil_mode):
        return tvm.ir.Op.get("relax.nn.max_pool2d").get_attr("FLegalize")(bb, call)
    return bb.call_te(max_pool2d, call.args[0], [int(k) for k in attrs.pool_size], [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
                      primfunc_name_hint="max_pool2d")
