"""What the schedule rules share: the target's vector shape, tile choice, the epilogue, and
whether a kernel is scheduled already (CPU and GPU rules alike)."""
from __future__ import annotations

import math

from tvm import tirx


def one_conv_with_epilogue(func, target, block_prefix: str):
    """(schedule, the conv's block info, the injective blocks before it, those after it) for a CPU
    kernel whose one reduction block is named `block_prefix`..., all other blocks injective, the
    elementwise chain after it inlined into its last block; None for any other kernel."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    reductions = [info for info in infos or [] if info.is_reduction()]
    if len(reductions) != 1 or not sch.get(reductions[0].block_rv).name_hint.startswith(block_prefix):
        return None
    conv = reductions[0]
    before, after = infos[:infos.index(conv)], infos[infos.index(conv) + 1:]
    if not all(info.is_injective() for info in before + after):
        return None
    for info in after[:-1]:  # the elementwise chain folds into its last block
        sch.compute_inline(info.block_rv)
    return sch, conv, before, after


def is_scheduled(func) -> bool:
    return isinstance(func, tirx.PrimFunc) and "tirx.is_scheduled" in func.attrs and \
        int(func.attrs["tirx.is_scheduled"]) == 1


def vector_lanes(target) -> int:
    """fp32 lanes of the target's widest vector registers."""
    attrs = [str(a) for a in (target.attrs.get("mattr") or [])]
    if "+avx512f" in attrs:
        return 16
    if "+avx2" in attrs or "+avx" in attrs:
        return 8
    return 4  # NEON, SSE, or nothing declared


def thread_count(target) -> int:
    """The cores the target declares (`num-cores`): the threads a parallel loop is split over."""
    return max(1, int(target.attrs.get("num-cores", 1)))


SPLIT_REDUCTION = True  # False: no 1x1 conv splits its input channels (for A/B measurements)


def splits_input_channels(in_channels: int, out_channels: int, threads: int) -> bool:
    """Does a 1x1 conv sum each thread's part of the input channels apart (`split_reduction`)? A
    projection (at least twice as many inputs as outputs) whose input channels the threads divide."""
    return SPLIT_REDUCTION and threads > 1 and in_channels >= 2 * out_channels and in_channels % threads == 0


def read_bytes(stmt, index: int) -> int:
    """Bytes of the buffer a block reads as its `index`-th read (a conv's 0: data, 1: weights)."""
    buffer = stmt.reads[index].source
    return math.prod(int(e) for e in buffer.shape) * buffer.dtype.bits // 8


def split_reduction(sch, block, reduction, threads: int):
    """Split the `reduction` loop of `block` into (part: threads) x (the rest) and give each part its
    own partial output (TVM's rfactor): R[t, ..] = the sum over part t. `block` then sums the parts
    (`schedule_sum_of_parts`). Returns (the block computing R, its part loop, its other loops)."""
    part, _ = sch.split(reduction, [threads, None])
    partial = sch.rfactor(part, 0)
    *outer, part, inner = sch.get_loops(partial)
    return partial, part, outer + [inner]


def schedule_sum_of_parts(sch, final, epilogue, spatial: int) -> None:
    """out = epilogue(sum_t R[t, ..]) (`split_reduction`): in parallel over the output's rows, one
    row at a time, vectorized along it; `spatial`: the output's loops (the row and column last)."""
    *outer, row, column, part = sch.get_loops(final)[:spatial + 1]
    sch.reorder(*outer, row, part, column)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, row)
        inner = sch.get_loops(epilogue)[spatial - 1:]
        sch.vectorize(sch.fuse(*inner) if len(inner) > 1 else inner[0])
    sch.parallel(sch.fuse(*outer, row))
    sch.vectorize(column)
    sch.unroll(part)
    sch.decompose_reduction(final, part)


def largest_divisor(n: int, candidates) -> int:
    return next((c for c in candidates if c and n % c == 0), 1)


def epilogue_at(sch, block, epilogue, loop, depth: int, width: int) -> None:
    """Compute the epilogue (or a cache of the output) per tile at `loop`, vectorized by `width`.

    The epilogue joins the tile only when it reads the output at its own indices; one that reads
    through a reshape (a 3-D linear is view, mm, view) would be mis-placed by TVM's
    reverse_compute_at (wrong results, seen in tests), so the output is cached instead."""
    epilogue = attach_epilogue(sch, block, epilogue, loop)
    inner = sch.get_loops(epilogue)[depth:]
    if inner and width >= 4:
        fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
        sch.vectorize(sch.split(fused, [None, width])[1])


# Tiles of 1 KB or more read from registers by their epilogue (`tile_in_registers`); False for A/B runs.
TILES_IN_REGISTERS = True
STACK_ALLOCA_LIMIT = 1024  # bytes: TVM's runtime::kMaxStackAlloca (a "global" buffer this large goes to the heap)


def attach_epilogue(sch, block, epilogue, loop):
    """Compute the epilogue (or, when there is none or it does not read the output directly, a copy
    of the output) per tile at `loop`, so the tile of `block` stays in registers; returns it."""
    if epilogue is None or not reads_directly(sch, epilogue, block):
        epilogue = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(epilogue, loop)
    return epilogue


def tile_in_registers(sch, epilogue, loop, tile_bytes: int) -> None:
    """Unroll the `epilogue`'s loops over a tile of accumulators (those inside `loop`, the tile loop it
    was attached at, but its innermost: the vector lanes) when TVM puts the tile on the heap: a buffer
    of 1 KB or more (TVM's kMaxStackAlloca, 16 AVX-512 vectors) becomes a workspace, which LLVM zeroed
    with a memset before every tile and reloaded vector by vector in the epilogue's loop. With every
    access at a constant index, LLVM forwards the accumulators from registers to the epilogue instead;
    only the tile's stores remain (dead, but the workspace escapes to TVMBackendFreeWorkspace). Smaller
    tiles are stack arrays that LLVM already promotes; unrolling their epilogues measured slower."""
    if not TILES_IN_REGISTERS or tile_bytes < STACK_ALLOCA_LIMIT:
        return
    loops = sch.get_loops(epilogue)
    tile_at = next(i for i, candidate in enumerate(loops) if sch.get_sref(candidate).same_as(sch.get_sref(loop)))
    for inner in loops[tile_at + 1:-1]:
        sch.unroll(inner)


def reads_directly(sch, consumer, producer) -> bool:
    """Does `consumer` read the producer's output exactly at its own iteration indices?"""
    output = sch.get(producer).writes[0].source  # TVM 0.27: TensorRegion.source is the buffer
    block = sch.get(consumer)
    indices = [iv.var for iv in block.iter_vars]
    for region in block.reads:
        if region.source.same_as(output):  # unit dims (batch 1) are read at a constant 0
            mins = [r.min for r in region.region if not isinstance(r.min, tirx.IntImm)]
            return len(mins) == len(indices) and all(m.same_as(v) for m, v in zip(mins, indices))
    return False



def iter_kinds(sch, block) -> str:
    """The block's iterators as a string of S (spatial) and R (reduction), outermost first."""
    return "".join("R" if iv.iter_type == 2 else "S" for iv in sch.get(block).iter_vars)


def column_tile(width: int, lanes: int, rows: int, budget: int) -> int:
    """Columns of a direct conv's register tile along an output row of `width` (rows x columns
    accumulators): two vectors, one, or 8 / 4 / 2 where they divide the row; a short row that 4 does
    not divide (14, 7) whole, as one partial vector (beats 2-wide ones), if the budget holds it."""
    columns = largest_divisor(width, (2 * lanes, lanes, 8, 4, 2))
    if columns < 4 and width <= 2 * lanes and rows * -(-width // lanes) <= budget:
        return width
    return columns


def row_vector_width(width: int) -> int:
    """Lanes to vectorize a row of `width` elements by: a divisor of it, as wide as 16 at most."""
    return next((d for d in (16, 14, 8, 7, 4) if width % d == 0), 1)


def choose_tile(blocks: int, width: int, budget: int) -> tuple[int, int]:
    """(v channel blocks, owt columns) with v * owt <= budget accumulators, most FMAs per load."""
    best, best_score = (1, 1), 0.0
    for v in (4, 3, 2, 1):
        if blocks % v:
            continue
        owt = max((t for t in range(1, min(width, budget // v) + 1) if width % t == 0), default=1)
        score = v * owt / (v + owt)
        if score > best_score:
            best, best_score = (v, owt), score
    return best


def register_budget(target) -> int:
    """Vector registers the accumulators may take: 24 of the 32 of AVX-512 or NEON, else 12 of 16."""
    attrs = [str(a) for a in (target.attrs.get("mattr") or [])]
    triple = str(target.attrs.get("mtriple", ""))
    return 24 if "+avx512f" in attrs or "+neon" in attrs or triple.startswith("aarch64") else 12


def inline_side_inputs(sch, infos: list, reduction) -> list:
    """`infos` without the blocks before `reduction` that it does not read, which are inlined into
    their readers: elementwise work on another input of the epilogue (a residual's dequantize,
    (q - z) * s), computed per element where the epilogue reads it. Left as blocks they would sit
    outside the tile loop that the epilogue moves into."""
    position = infos.index(reduction)
    needed = {region.source for region in sch.get(reduction.block_rv).reads}
    feeding = set()
    for index in range(position - 1, -1, -1):
        stmt = sch.get(infos[index].block_rv)
        if stmt.writes[0].source in needed:
            feeding.add(index)
            needed |= {region.source for region in stmt.reads}
    for index in range(position):
        if index not in feeding:
            sch.compute_inline(infos[index].block_rv)
    return [info for index, info in enumerate(infos) if index >= position or index in feeding]
