"""slimgraph's tensor intrinsics, registered by name.

The integer kernels' rules register the intrinsics they tensorize with on first use. A tuning
database's records name them in their traces, and TVM refuses to read a database whose traces
name an intrinsic it does not know: before a database is opened, `register_named_in(text)`
registers every slimgraph intrinsic its files name, from the name alone:

    slimgraph_{vnni|sdot}_16x4_...            channel lanes   (lowering/int8_schedules.py)
    slimgraph_{vnni|sdot}_pixels_{L}x4_...    pixel lanes     (lowering/int8_pixels.py)
    slimgraph_{vnni|sdot}_window_{L}s{S}_...  depthwise rows  (lowering/int8_depthwise.py)
"""
from __future__ import annotations

import re

NAME = re.compile(r"slimgraph_(vnni|sdot)_(?:(16)x4|pixels_(\d+)x4|window_(\d+)s(\d+))_[ui]8i8i32")


def register_named_in(text: str) -> list[str]:
    """Register every slimgraph intrinsic `text` names; the names."""
    from .int8_depthwise import register_window_intrinsic
    from .int8_pixels import register_pixel_intrinsic
    from .int8_schedules import register_channel_intrinsic

    names = []
    for dot, channel, pixel_lanes, window_lanes, stride in sorted(set(NAME.findall(text))):
        if channel:
            names.append(register_channel_intrinsic(dot))
        elif pixel_lanes:
            names.append(register_pixel_intrinsic(dot, int(pixel_lanes)))
        else:
            names.append(register_window_intrinsic(dot, int(window_lanes), int(stride)))
    return names
