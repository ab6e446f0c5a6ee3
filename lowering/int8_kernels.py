"""Integer conv2d and linear kernels (TE) for slimgraph.qconv2d / qlinear (ir/quant_ops.py).

Both are laid out for 4-way int8 dot products (x86 VNNI `vpdpbusd`, ARM `sdot`/`udot`):
4 consecutive reduction elements of the uint8 input meet 4 int8 weights of each of `block`
output channels, and the weights are packed once, at compile time (a kernel on a constant: FoldConstant runs it):

    conv2d:  Wp[o // b, c // 4, kh, kw, o % b, c % 4] = W[o, c, kh, kw]     (0 for c >= C)
             Xp[n, c // 4, h, w, c % 4] = x[n, c, h - pad_top, w - pad_left]  (z_x outside x and
                                                                             for c >= C)
             acc[n, o, oh, ow] = sum_{c4, kh, kw, i} Xp[n, c4, oh*sh + kh*dh, ow*sw + kw*dw, i]
                                                     * Wp[o // b, c4, kh, kw, o % b, i]
    linear:  Wp[n // b, k // 4, n % b, k % 4] = W[n, k];  A padded with z_x to a multiple of 4
             acc[m, n] = sum_{k4, i} A[m, 4 k4 + i] * Wp[n // b, k4, n % b, i]

Xp is a stage of the same kernel (computed per call, 8-bit: a quarter of the float padding's
traffic). It holds the data in the dtype the target's dot product takes (`kernel_data_dtype`):
uint8 for x86 VNNI, int8 for AArch64's `sdot`; an input of the other 8-bit type is shifted by 128
on the way (`data_shift`), and so is its zero point z_x. The zero point is folded into the
bias: padding with z_x makes sum (x - z_x) w = sum x w - z_x sum w, so
b' = b_q - z_x sum_{c,kh,kw} W[o] is a constant, and the rest of ir/quant_ops.py's arithmetic
(scale, round, zero point, clamp) is an elementwise epilogue that fusion puts into the same
kernel. b = 16 output channels (one zmm register of int32); when 16 does not divide them,
the kernel computes them padded to the next multiple (zero weights) and keeps the first O.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

SIGNED_DATA: ContextVar[bool] = ContextVar("slimgraph_int8_signed_data", default=False)
DOT_PRODUCT: ContextVar[bool] = ContextVar("slimgraph_int8_dot_product", default=False)


@contextmanager
def dot_product_data_for(target):
    """Inside: the kernels made for `target`, whose dot product takes int8 data (AArch64 `sdot`)
    or uint8 data (x86 VNNI, and the plain int32 kernels)."""
    token = SIGNED_DATA.set(has_signed_dot(target))
    dot_token = DOT_PRODUCT.set(has_signed_dot(target) or has_vnni(target))
    try:
        yield
    finally:
        DOT_PRODUCT.reset(dot_token)
        SIGNED_DATA.reset(token)


def _llvm_feature(target, feature: str, aarch64: bool) -> bool:
    """Does the LLVM `target` (an AArch64 one when `aarch64`, else not) have `feature`?"""
    from tvm.target import codegen

    if target is None or target.kind.name != "llvm":
        return False
    if str(target.attrs.get("mtriple", "")).startswith("aarch64") != aarch64:
        return False
    with target:
        return bool(codegen.target_has_features(feature))


def has_signed_dot(target) -> bool:
    return _llvm_feature(target, "dotprod", aarch64=True)


def has_vnni(target) -> bool:
    return _llvm_feature(target, "avx512vnni", aarch64=False)


def target_dot(target) -> str | None:
    """The 4-way int8 dot product of `target`: "vnni" (x86 vpdpbusd), "sdot" (AArch64), or None."""
    return "vnni" if has_vnni(target) else "sdot" if has_signed_dot(target) else None


def has_dot_product() -> bool:
    """Do the kernels being made run on a 4-way int8 dot product (x86 VNNI, AArch64 sdot)?"""
    return DOT_PRODUCT.get()


def kernel_data_dtype() -> str:
    """The 8-bit dtype the dot-product kernels being made hold their data in."""
    return "int8" if SIGNED_DATA.get() else "uint8"


def data_shift(dtype: str) -> int:
    """What to add to `dtype` data (and its zero point) to hold it as kernel_data_dtype(): +-128 or 0."""
    target = kernel_data_dtype()
    return 0 if dtype == target else (128 if target == "uint8" else -128)


def word_broadcast(buffer, copies: int):
    """The 4 bytes at buffer[0:4] repeated `copies` times: one int32 broadcast, for the tensor
    intrinsics' implementations (an expression: a named scalar in TVMScript becomes a buffer that
    the CPU code allocates from the workspace pool on every use)."""
    from tvm import tirx

    dtype = str(buffer.dtype)
    word = tirx.reinterpret("int32", buffer.vload([0], f"{dtype}x4"))
    return tirx.reinterpret(f"{dtype}x{copies * 4}", tirx.Broadcast(word, copies))


QCONV_BLOCK = "qconv2d_int8"
QDENSE_BLOCK = "qdense_int8"
BLOCK_ATTR = "slimgraph.int8_block"  # block annotation: output channels per packed weight block
OUTPUT_BLOCK = 16  # output channels per packed weight block: 16 int32 lanes of AVX-512


def pack_conv_weight(weight, block: int):
    """Wp[o // b, c // 4, kh, kw, o % b, c % 4] = W[o, c, kh, kw], 0 for c >= C and for o >= O (the
    output channels are padded to a multiple of b; the kernel drops the extra ones). TE: folded at
    compile time."""
    from tvm import te, tirx

    out_channels, in_channels, kernel_h, kernel_w = (int(e) for e in weight.shape)

    def element(o, c4, y, x, lane, i):
        channel, out = c4 * 4 + i, o * block + lane
        return tirx.if_then_else(tirx.all(channel < in_channels, out < out_channels),
                                 weight[tirx.min(out, out_channels - 1), tirx.min(channel, in_channels - 1), y, x],
                                 tirx.const(0, "int8"))

    shape = (-(-out_channels // block), -(-in_channels // 4), kernel_h, kernel_w, block, 4)
    return te.compute(shape, element, name="packed_weight")


def pack_dense_weight(weight, block: int):
    """Wp[n // b, k // 4, n % b, k % 4] = W[n, k], 0 for k >= K and n >= N (TE: folded at compile time)."""
    from tvm import te, tirx

    out_features, depth = (int(e) for e in weight.shape)

    def element(n, k4, lane, i):
        column, row = k4 * 4 + i, n * block + lane
        return tirx.if_then_else(tirx.all(column < depth, row < out_features),
                                 weight[tirx.min(row, out_features - 1), tirx.min(column, depth - 1)],
                                 tirx.const(0, "int8"))

    return te.compute((-(-out_features // block), -(-depth // 4), block, 4), element, name="packed_weight")


def _keep_channels(acc, channels: int, axis: int):
    """acc itself, or its first `channels` along `axis` when the packing padded them."""
    from tvm import te

    if int(acc.shape[axis]) == channels:
        return acc
    shape = [int(e) for e in acc.shape]
    shape[axis] = channels
    return te.compute(shape, lambda *index: acc[index], name="drop_padding")


def padded_input(data, n, channel, row, column, x_zero_point: int):
    """data[n, channel, row, column] as kernel_data_dtype() (shifted by data_shift), and the zero
    point z_x (shifted the same) outside the input and for channels past its last: the element of
    every packed, padded input copy the dot-product kernels make."""
    from tvm import tirx

    channels, height, width = (int(e) for e in data.shape[1:])
    dtype, shift = kernel_data_dtype(), data_shift(str(data.dtype))
    # each bound its own `likely`: the build partitions the copy's loops at the padding
    # (codegen.build.BUILD_CONFIG), which it cannot do for one `likely` over all of them at once
    # (a 3x3 conv's copy then stayed a scalar byte loop: 14 % of ResNet-18's 56x56 int8 conv)
    inside = tirx.all(*(tirx.likely(bound) for bound in
                        (channel < channels, row >= 0, row < height, column >= 0, column < width)))
    value = data[n, tirx.min(channel, channels - 1), tirx.max(tirx.min(row, height - 1), 0),
                 tirx.max(tirx.min(column, width - 1), 0)]
    if shift:
        value = (value.astype("int32") + shift).astype(dtype)
    return tirx.if_then_else(inside, value, tirx.const(x_zero_point + shift, dtype))


def qconv2d_acc(data, packed, out_channels: int, strides, padding, dilation, x_zero_point: int):
    """int32 accumulator of the packed conv (module docstring), without the bias; `out_channels`
    of the blocks * b it computes are kept. `data` is uint8 or int8 with zero point x_zero_point."""
    from tvm import te

    batch, _, height, width = (int(e) for e in data.shape)
    blocks, groups4, kernel_h, kernel_w, block, _ = (int(e) for e in packed.shape)
    (top, left), (stride_h, stride_w), (dilation_h, dilation_w) = padding, strides, dilation
    padded_h, padded_w = height + 2 * top, width + 2 * left
    out_h = (padded_h - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (padded_w - dilation_w * (kernel_w - 1) - 1) // stride_w + 1

    def gather(n, c4, h, w, i):
        return padded_input(data, n, c4 * 4 + i, h - top, w - left, x_zero_point)

    packed_data = te.compute((batch, groups4, padded_h, padded_w, 4), gather, name="pad_pack")
    rc = te.reduce_axis((0, groups4), name="rc")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    ri = te.reduce_axis((0, 4), name="ri")
    acc = te.compute(
        (batch, blocks * block, out_h, out_w),
        lambda n, o, y, x: te.sum(
            packed_data[n, rc, y * stride_h + ry * dilation_h, x * stride_w + rx * dilation_w, ri].astype("int32")
            * packed[o // block, rc, ry, rx, o % block, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name=QCONV_BLOCK, attrs={BLOCK_ATTR: block})
    return _keep_channels(acc, out_channels, 1)


def qdense_acc(data, packed, out_features: int):
    """int32 accumulator of the packed linear: data [M, 4 * K4] in kernel_data_dtype() (module docstring); the first
    `out_features` of the blocks * b it computes are kept."""
    from tvm import te

    rows = int(data.shape[0])
    blocks, groups4, block, _ = (int(e) for e in packed.shape)
    rk = te.reduce_axis((0, groups4), name="rk")
    ri = te.reduce_axis((0, 4), name="ri")
    acc = te.compute(
        (rows, blocks * block),
        lambda m, n: te.sum(data[m, rk * 4 + ri].astype("int32") * packed[n // block, rk, n % block, ri].astype("int32"),
                            axis=[rk, ri]),
        name=QDENSE_BLOCK, attrs={BLOCK_ATTR: block})
    return _keep_channels(acc, out_features, 1)


def exact_in_float32(reduction: int) -> bool:
    """Is every partial sum of `reduction` 8-bit x int8 products an integer float32 holds exactly?"""
    return reduction * 255 * 128 < 2 ** 24


def qgrouped_conv2d_acc(data, weight, strides, padding, dilation, groups: int, x_zero_point: int):
    """int32 accumulator of a grouped (depthwise: groups = channels) conv on 8-bit data padded with
    its zero point (lowering/grouped_conv.py); no dot-product layout (a depthwise conv reduces over
    only kh x kw), scheduled by the direct conv2d rule (lowering/cpu_schedules.Conv2dRule):

        acc[n, o, oh, ow] = sum_{c < C/g, kh, kw} pad(x)[n, (o // (O/g)) * C/g + c, ...] * W[o, c, kh, kw]

    When the reduction is short enough that every partial sum stays below 2**24 (a 3x3 depthwise
    conv: 9 x 255 x 128), the sum runs on float32 copies of the integers, exactly, with the float
    multiply-adds the CPU issues twice as fast as int32 multiplies (`weight` is then float32),
    and is converted to int32 at the end."""
    from tvm import te

    from .grouped_conv import grouped_conv2d

    (top, left) = padding
    dtype = str(weight.dtype) if str(weight.dtype) == "float32" else "int32"
    acc = grouped_conv2d(data, weight, strides, (top, left, top, left), dilation, groups, x_zero_point, dtype,
                         name="qconv2d_grouped")
    if dtype == "int32":
        return acc
    return te.compute(acc.shape, lambda *index: acc[index].astype("int32"), name="to_int32")
