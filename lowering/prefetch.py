"""Software prefetch of the data a loop's next iteration will read, spread over the current one.

A kernel that streams its weights from memory in steps (a chunk of a conv's input channels, used
for all of its output rows) stalls at the start of every step: its first row finds none of the
step's cache lines in cache, and the hardware prefetcher (which stops at 4 KB page boundaries) does
not run far enough ahead of it. `prefetch_next_step` puts, at the start of each iteration r of a loop
inside the step (the rows), prefetches for an equal share of the lines the *next* step will read:

    box(s)     = the region of buffer B that one iteration s of the step loop reads
                 (its index expressions over the loops inside the step; a box of constant extents)
    lines      = the 64-byte lines of box(s + 1), as runs contiguous in memory x lines per run
    iteration r of the spread loop (extent E):  prefetch lines [r * ceil(L / E), (r + 1) * ceil(L / E))

so the next step's weights arrive in L1 while this step computes, in small pieces (a burst of all
of them in one row measured slower than none). The prefetches are `tirx.prefetch` calls (LLVM's
llvm.prefetch, `prefetcht0` on x86) outside any block, inserted after scheduling by replacing the
spread loop in the schedule's state.
"""
from __future__ import annotations

import math

CACHE_LINE_BYTES = 64
# How many steps ahead: ResNet-18, alternated in one process, 2 and 4 vs 1: 1.2 and 0.7 % faster, within the
# machine's noise, so the next one.
STEPS_AHEAD = 1


def prefetch_next_step(sch, block, buffer, step_loop, spread_loop) -> bool:
    """Prefetch what `block`'s read of `buffer` covers in the iteration of `step_loop` STEPS_AHEAD on, spread
    over the iterations of `spread_loop` (inside `step_loop`; module docstring). Returns whether
    prefetches were inserted (not when the box has a non-constant extent)."""
    from tvm import tirx
    from tvm.sym import Analyzer
    from tvm.sym.int_set import IntervalSet

    loops = list(sch.get_loops(block))
    stmt, step, spread = sch.get(block), sch.get(step_loop), sch.get(spread_loop)
    realize = sch.get(loops[-1]).body
    step_at = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(step))
    analyzer = Analyzer()
    for iter_var, value in zip(stmt.iter_vars, realize.iter_values):
        analyzer.bind(iter_var.var, value)
    inner = {sch.get(loop).loop_var: IntervalSet(0, sch.get(loop).extent - 1) for loop in loops[step_at + 1:]}
    region = next(read for read in stmt.reads if read.source.same_as(buffer))
    starts, extents = [], []
    for dim in region.region:
        bounds = analyzer.int_set(analyzer.simplify(dim.min), inner)
        extent = analyzer.simplify(bounds.max_value - bounds.min_value + dim.extent)
        if not isinstance(extent, tirx.IntImm):
            return False
        starts.append(bounds.min_value)
        extents.append(int(extent))
    next_step = tirx.Var("next_step", str(step.extent.ty))
    shifted = Analyzer()
    shifted.bind(step.loop_var, next_step)
    starts = [shifted.simplify(start) for start in starts]
    statement = _prefetch_lines(buffer, starts, extents, spread)
    if statement is None:
        return False
    guarded = tirx.IfThenElse(step.loop_var + STEPS_AHEAD < step.min + step.extent,
                              tirx.SeqStmt([tirx.LetStmt(next_step, step.loop_var + STEPS_AHEAD), statement]), None)
    new_spread = tirx.For(spread.loop_var, spread.min, spread.extent, spread.kind, tirx.SeqStmt([guarded, spread.body]),
                          spread.thread_binding, spread.annotations)
    sch.state.replace(sch.get_sref(spread_loop), new_spread)
    return True


def _prefetch_lines(buffer, starts, extents, spread):
    """The loop of prefetches for this iteration of `spread`: its share of the box's lines."""
    from tvm import tirx

    shape = [int(e) for e in buffer.shape]
    contiguous = len(shape) - 1  # the box's runs: dims [contiguous:] are whole but the first
    while contiguous > 0 and extents[contiguous] == shape[contiguous]:
        contiguous -= 1
    item_bytes = buffer.dtype.bits // 8
    inner_size = math.prod(shape[contiguous + 1:])
    run_items = extents[contiguous] * inner_size
    lines_per_run = math.ceil(run_items * item_bytes / CACHE_LINE_BYTES)
    runs = math.prod(extents[:contiguous])
    total = runs * lines_per_run
    if total == 0 or not isinstance(spread.extent, tirx.IntImm):
        return None
    share = math.ceil(total / int(spread.extent))
    dtype = str(spread.extent.ty)
    piece = tirx.Var("prefetch_line", dtype)
    line = spread.loop_var * share + piece
    run, item = line // lines_per_run, line % lines_per_run * (CACHE_LINE_BYTES // item_bytes)
    indices = []
    for d in range(contiguous):  # the run's position among the outer dims of the box
        below = math.prod(extents[d + 1:contiguous])
        indices.append(starts[d] + run // below % extents[d])
    indices.append(starts[contiguous] + item // inner_size)
    for d in range(contiguous + 1, len(shape)):
        indices.append(item // math.prod(shape[d + 1:]) % shape[d])
    address = tirx.address_of(tirx.BufferLoad(buffer, indices))
    call = tirx.Evaluate(tirx.call_intrin("void", "tirx.prefetch", address, 0, 3, 1))
    body = tirx.IfThenElse(line < total, call, None) if share * int(spread.extent) > total else call
    return tirx.For(piece, tirx.IntImm(dtype, 0), tirx.IntImm(dtype, share), tirx.ForKind.SERIAL, body)
