"""Schedules for the integer conv2d / linear kernels (lowering/int8_kernels.py).

Both put `b` output channels in the vector lanes, like the float rules, and keep a tile of
int32 accumulators in registers over the whole reduction:

    conv2d:  o -> (oo, ov, ol: b lanes),  ow -> (owo, owt)
             order (n, oo, oh, owo | c4, kh, kw, ov, owt, ol, i);  (n, oo, oh) parallel
    linear:  n -> (no, nv, nl: b lanes),  m -> (mo, mt)
             order (mo, no | k4, mt, nv, nl, i);  (mo, no) parallel

On x86 with AVX512-VNNI and b = 16, the innermost (ol, i) = 16 x 4 loop nest is one `vpdpbusd`:
acc[16 x int32] += sum_{i<4} broadcast(x[4 x uint8])[i] * Wp[16 x 4 int8][.., i], tensorized with
the intrinsic below (TVM's own `dot_16x4_vnni` does not pass LLVM 22's verifier:
../shared/tvm-notes.md gotcha 8); on AArch64 with the dot-product extension it is four `sdot`
on int8 data (x - 128). The tile is sized in 16-lane accumulators: 1 zmm, 2 ymm or 4 NEON
registers each. Elsewhere the same tile runs as int32 multiply-adds
vectorized over ol (i outside it). The requantization epilogue is computed per tile, so each
output is written once.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .int8_kernels import BLOCK_ATTR, QCONV_BLOCK, QDENSE_BLOCK, target_dot, word_broadcast
from .schedule_common import attach_epilogue, choose_tile, inline_side_inputs, register_budget, vector_lanes

VNNI_INTRIN = "slimgraph_vnni_16x4_u8i8i32"
SDOT_INTRIN = "slimgraph_sdot_16x4_i8i8i32"


def _description(data_dtype: str):
    """The 16 x 4 step both intrinsics implement: c[i] += sum_k int32(a[k]) * int32(b[i, k]), on
    `data_dtype` a. Our own copy of TVM's u8 x i8 one: importing tvm.s_tir.tensor_intrin parses
    every target's intrinsics (tens of seconds)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(a: T.Buffer((4,), data_dtype, offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                    c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for i, k in T.grid(16, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    return description


def _vnni():
    """x86 AVX512-VNNI: one vpdpbusd, with the 4 uint8 of a broadcast to all 16 lanes (TVM's own
    `dot_16x4_vnni` does not pass LLVM 22's verifier)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vnni(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], dtype="int32x16"),
                word_broadcast(a, 16), b.vload([0, 0], dtype="int8x64"),
                dtype="int32x16")

    return vnni


def _sdot():
    """AArch64 dot product on int8 data: four sdot, each adding 4-byte dot products into 4 int32
    lanes: c[4j + l] += sum_k broadcast(a[0:4])[k] * b[4j + l, k]."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def sdot(a: T.Buffer((4,), "int8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for j in T.unroll(4):
                c[T.ramp(j * 4, 1, 4)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), c.vload([j * 4], dtype="int32x4"),
                    b.vload([j * 4, 0], dtype="int8x16"), word_broadcast(a, 4),
                    dtype="int32x4")

    return sdot


def _registered(name: str, data_dtype: str, implementation) -> str:
    """`name`, registered with TVM on first use (parsing the TVMScript costs about a second)."""
    from tvm.s_tir import TensorIntrin

    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _description(data_dtype), implementation())
    return name


def register_channel_intrinsic(dot: str) -> str:
    """The channel-lane step's intrinsic for `dot` ("vnni" or "sdot"), registered on first use."""
    return _registered(VNNI_INTRIN, "uint8", _vnni) if dot == "vnni" else _registered(SDOT_INTRIN, "int8", _sdot)


def dot_product_intrinsic(target, block: int) -> str | None:
    """The tensor intrinsic for a 16 x 4 int8 step on `target`; None: none."""
    dot = target_dot(target)
    return register_channel_intrinsic(dot) if dot and block == 16 else None


def accumulator_budget(target) -> int:
    """Tiles of 16 int32 accumulators that fit the register budget (1 zmm, 2 ymm or 4 NEON q each)."""
    return max(1, register_budget(target) // max(1, 16 // vector_lanes(target)))


def find_int8_kernel(func, target, block_name: str):
    """(schedule, infos, the accumulator's info, its lane block) when `func` is that kernel, else None."""
    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    reductions = [info for info in infos or [] if info.is_reduction()]
    if len(reductions) != 1 or not sch.get(reductions[0].block_rv).name_hint.startswith(block_name):
        return None
    if not all(info.is_injective() for info in infos if info is not reductions[0]):
        return None
    infos = inline_side_inputs(sch, infos, reductions[0])
    stmt = sch.get(reductions[0].block_rv)
    if BLOCK_ATTR not in stmt.annotations:
        return None
    return sch, infos, reductions[0], int(stmt.annotations[BLOCK_ATTR])


def _finish(sch, block, first_reduction, lanes_loop, intrinsic: str | None) -> None:
    if intrinsic is None:  # a reduction block's loop is vectorized before its init is split off
        sch.vectorize(lanes_loop)
    init = sch.decompose_reduction(block, first_reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    if intrinsic is not None:
        sch.tensorize(lanes_loop, intrinsic)


def _vectorize_epilogue(sch, epilogue, tile: list[int]) -> None:
    """The epilogue of a tile whose two inner loops are (rows, contiguous columns of the output):
    vectorized along the columns, so each output row is written with whole vector stores (along
    the channel lanes each element would be a scattered store to another row)."""
    inner = sch.get_loops(epilogue)[-2:]
    if len(inner) == 2 and [int(sch.get(loop).extent) for loop in inner] == tile and tile[1] >= 4:
        sch.vectorize(inner[1])


class Int8Conv2dRule(dl.ScheduleRule):
    """Schedule for the `qconv2d_int8` kernels (module docstring)."""

    name = "conv2d-int8"

    def apply(self, func, target, tunable):
        found = find_int8_kernel(func, target, QCONV_BLOCK)
        if found is None:
            return None
        sch, infos, conv, cb = found
        before, after = infos[:infos.index(conv)], infos[infos.index(conv) + 1:]
        for info in after[:-1]:
            sch.compute_inline(info.block_rv)
        block = conv.block_rv
        stmt = sch.get(block)
        batch, channels, out_h, out_w = (int(e) for e in stmt.writes[0].source.shape)
        spatial = [iv for iv in stmt.iter_vars if iv.iter_type == 0]
        if len(spatial) != 3 + (batch > 1):
            return None
        loops = sch.get_loops(block)
        *batch_loops, co, oh, ow = loops[:len(spatial)]
        *outer_reduction, inner = loops[len(spatial):]
        intrinsic = dot_product_intrinsic(target, cb)
        v, owt = choose_tile(channels // cb, out_w, accumulator_budget(target))
        coo, cv, cl = sch.split(co, [None, v, cb])
        owo, owi = sch.split(ow, [None, owt])
        lanes_last = [cl, inner] if intrinsic else [inner, cl]
        sch.reorder(*batch_loops, coo, oh, owo, *outer_reduction, cv, owi, *lanes_last)
        epilogue = attach_epilogue(sch, block, after[-1].block_rv if after else None, owo)
        sch.transform_layout(block, ("write", 0), lambda n, c, y, x: (n, c // cb, y, x, c % cb))
        _vectorize_epilogue(sch, epilogue, [v * cb, owt])
        sch.parallel(sch.fuse(*batch_loops, coo, oh))
        sch.unroll(cv)
        sch.unroll(owi)
        for info in before:  # the padded, channel-interleaved copy of the input: its own parallel pass
            pad_loops = sch.get_loops(info.block_rv)
            sch.parallel(sch.fuse(*pad_loops[:-2]) if len(pad_loops) > 3 else pad_loops[0])
        _finish(sch, block, (outer_reduction or [cv])[0], cl, intrinsic)  # 1x1 over <= 4 channels: only i reduces
        return sch


class Int8DenseRule(dl.ScheduleRule):
    """Schedule for the `qdense_int8` kernels (module docstring)."""

    name = "dense-int8"

    def apply(self, func, target, tunable):
        found = find_int8_kernel(func, target, QDENSE_BLOCK)
        if found is None:
            return None
        sch, infos, dense, nb = found
        after = infos[infos.index(dense) + 1:]
        if infos.index(dense) != 0:
            return None
        for info in after[:-1]:
            sch.compute_inline(info.block_rv)
        block = dense.block_rv
        rows, columns = (int(e) for e in sch.get(block).writes[0].source.shape)
        loops = sch.get_loops(block)
        if len(loops) != 3 + (rows > 1):  # a single row has no row loop after normalization
            return None
        *row_loop, n, rk, ri = loops
        intrinsic = dot_product_intrinsic(target, nb)
        nv, mt = choose_tile(columns // nb, rows, accumulator_budget(target))
        no, nvl, nl = sch.split(n, [None, nv, nb])
        row_tile = list(sch.split(row_loop[0], [None, mt])) if row_loop else []
        lanes_last = [nl, ri] if intrinsic else [ri, nl]
        sch.reorder(*row_tile[:1], no, rk, *row_tile[1:], nvl, *lanes_last)
        epilogue = attach_epilogue(sch, block, after[-1].block_rv if after else None, no)
        _vectorize_epilogue(sch, epilogue, [mt, nv * nb])
        sch.parallel(sch.fuse(*row_tile[:1], no))
        for loop in row_tile[1:]:
            sch.unroll(loop)
        sch.unroll(nvl)
        _finish(sch, block, rk, nl, intrinsic)
        return sch
