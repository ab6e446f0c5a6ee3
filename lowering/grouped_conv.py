"""Grouped and depthwise conv2d (fp32, and the integer sums of slimgraph.qconv2d), with a padding
stage the schedule can split into its border and a branch-free interior.

    P[n, c, y, x] = x_in[n, c, y - top, x - left]  inside the input,  z  outside    (z: 0, or the
                                                                                 zero point)
    out[n, o, oh, ow] = sum_{c < C/g, kh, kw} P[n, (o // (O/g)) * C/g + c, oh*sh + kh*dh, ow*sw + kw*dw]
                                              * W[o, c, kh, kw]

With stride 2 along the width (and no dilation) the plane is stored split by column parity,
P2[n, c, y, p, q] = P[n, c, y, 2q + p], so that output column ow reads P2[.., (kw % 2), ow + kw // 2]:
consecutive output columns read consecutive elements instead of every other one, and the
vectorized loop loads whole vectors (the stride-2 form read one lane at a time).

The padding stage carries its interior as a block annotation (`INTERIOR_ATTR`: first and end row,
first and end column of the last axis, where every element is a copy of the input for every
parity). `schedule_padding` partitions the loops there: the interior copy has no condition and
is vectorized, the border is a constant store. (An `if_then_else` per element kept the padding
scalar and branchy: 96 channels at 112x112 with stride 2, 0.72 ms, of which the conv itself
0.33 ms.) In a parity-split plane the parity loop goes inside the column loop and the interior
columns are left to LLVM's loop vectorizer: each step copies x[2q - left + p] for p = 0, 1, an
interleaved pair that LLVM reads as whole vectors and splits by shuffles, where a vectorized
loop per parity read every other element (a gather). ResNet-18's 3x3 / 2 max pool at 112x112
alone: 0.118 -> 0.080 ms; MobileNetV2's stride-2 depthwise convs at 112x112 (96 channels) and
56x56 (144): 0.184 -> 0.142 and 0.089 -> 0.060 ms (2-core Xeon).
"""
from __future__ import annotations

from tvm import tirx

INTERIOR_ATTR = "slimgraph.pad_interior"


def padded_plane(data, padding, stride_w: int, dilation_w: int, pad_value, dtype: str, convert=None):
    """The padding stage P (or P2 for stride 2), converted to `dtype` (by `convert(value)` when
    given); returns (P, read) where read(n, c, y, x) is P at plane column x. A negative bottom or
    right padding leaves out the input's last rows or columns (a plane cut to what a kernel reads)."""
    from tvm import te

    batch, channels, height, width = (int(e) for e in data.shape)
    top, left, bottom, right = padding
    rows, columns = height + top + bottom, width + left + right
    fill = tirx.const(pad_value, dtype)

    def element(n, c, y, x):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        value = data[n, c, y - top, x - left]
        return tirx.if_then_else(inside, convert(value) if convert else value.astype(dtype), fill)

    if stride_w == 2 and dilation_w == 1:
        half = (columns + 1) // 2
        # q inside for both parities: 2q >= left and 2q + 1 < width + left
        first, end = (left + 1) // 2, (width + left - 1) // 2
        plane = te.compute((batch, channels, rows, 2, half), lambda n, c, y, p, q: element(n, c, y, 2 * q + p),
                           name="pad_temp", attrs={INTERIOR_ATTR: [top, height + top, first, max(first, end)]})
        return plane, lambda n, c, y, x: plane[n, c, y, x % 2, x // 2]
    plane = te.compute((batch, channels, rows, columns), element, name="pad_temp",
                       attrs={INTERIOR_ATTR: [top, min(height + top, rows), left, min(width + left, columns)]})
    return plane, lambda n, c, y, x: plane[n, c, y, x]


def grouped_conv2d(data, weight, strides, padding, dilation, groups: int, pad_value=0.0,
                   dtype: str = "float32", name: str = "grouped_conv2d"):
    """The grouped conv above, summed in `dtype` (`weight` converted to it); NCHW / OIHW,
    padding (top, left, bottom, right)."""
    from tvm import te

    _, _, height, width = (int(e) for e in data.shape)
    out_channels, group_channels, kernel_h, kernel_w = (int(e) for e in weight.shape)
    top, left, bottom, right = padding
    (stride_h, stride_w), (dilation_h, dilation_w) = strides, dilation
    plane, read = padded_plane(data, padding, stride_w, dilation_w, pad_value, dtype)
    out_h = (height + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + left + right - dilation_w * (kernel_w - 1) - 1) // stride_w + 1
    per_group = out_channels // groups
    rc = te.reduce_axis((0, group_channels), name="rc")
    ry = te.reduce_axis((0, kernel_h), name="ry")
    rx = te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (int(data.shape[0]), out_channels, out_h, out_w),
        lambda n, o, y, x: te.sum(
            read(n, o // per_group * group_channels + rc, y * stride_h + ry * dilation_h,
                 x * stride_w + rx * dilation_w) * weight[o, rc, ry, rx].astype(dtype),
            axis=[rc, ry, rx]), name=name)


def legalize_grouped_conv2d(bb, call):
    """relax.nn.conv2d with groups > 1 (fp32, NCHW / OIHW) as `grouped_conv2d`."""
    attrs = call.attrs
    data, weight = call.args
    return bb.call_te(grouped_conv2d, data, weight, [int(s) for s in attrs.strides],
                      [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation], int(attrs.groups),
                      primfunc_name_hint="grouped_conv2d")


def schedule_padding(sch, block, vector_width: int) -> bool:
    """Split the padding stage's row and column loops at its interior (module docstring), and
    vectorize the interior columns (a parity-split plane's: by LLVM, the parity loop inside);
    False when `block` has no interior annotation."""
    interior = sch.get(block).annotations.get(INTERIOR_ATTR)
    if interior is None:
        return False
    row_first, row_end, column_first, column_end = (int(v) for v in interior)
    depth = plane_depth(sch, block)
    parity_split = depth == 3  # both parities of a column pair in one step (module docstring)
    if parity_split:
        *_, parity, columns = sch.get_loops(block)
        sch.reorder(columns, parity)
    rows = sch.get_loops(block)[-depth]
    row_parts = partition_loop(sch, rows, row_first, row_end)
    for interior_block in sch.get_child_blocks(row_parts[1 if row_first else 0]):
        columns = sch.get_loops(interior_block)[-2 if parity_split else -1]
        column_parts = partition_loop(sch, columns, column_first, column_end)
        interior_columns = column_parts[1 if column_first else 0]
        if not parity_split and vector_width >= 4 and int(sch.get(interior_columns).extent) >= 4:
            sch.vectorize(interior_columns)  # a partitioned loop cannot be split; LLVM splits the vector
    return True


def plane_depth(sch, block) -> int:
    """Loops of the padding stage inside one channel's plane: rows, [parity,] columns."""
    return len(sch.get(block).writes[0].source.shape) - 2


def partition_loop(sch, loop, first: int, end: int) -> list:
    """`loop` split into [0, first), [first, end), [end, extent) (the non-empty ones)."""
    extent = int(sch.get(loop).extent)
    factors = [f for f in (first, end - first, extent - end) if f > 0]
    if len(factors) == 1:
        return [loop]
    return sch.loop_partition(loop, factors=factors[:-1] + [None])
