"""Row reductions (layer norm, softmax, RMS norm) with their sums in vector registers.

TVM's CPU rule for these kernels (dlight `cpu.Reduction`) runs each row's reductions as scalar
loops: every add waits for the one before it (a 256-wide layer norm row: two chains of 256
dependent adds), and its note says why it does not vectorize them: TVM's rfactor needs the
reduction block first under its loop, which compute_at under the row loop breaks. Here rfactor
comes first, before any compute_at:

    s[row] = sum_k x[row, k]   ->   p[row, l] = sum_{ko} x[row, ko * L + l]    (L = the lanes)
                                    s[row]    = sum_l p[row, l]

(likewise max for softmax). Then, as in TVM's rule, the rows run in parallel with every block
computed under the row loop; each partial block keeps its L partial sums as one vector
(ko outer, l vectorized inside it), the L-wide final sums are short scalar loops, and the
injective blocks are vectorized along the row. Kernels whose reductions are not over a last
axis that L divides, at least 2 L long, are left to TVM's rule.

The summation order changes (L interleaved partial sums, then their sum), so results differ
from the scalar loops by rounding: measured on the encoder's layer norm (128 x 256), 7e-7 from
numpy in float64, 32 -> 4.4 us.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .schedule_common import vector_lanes

PARTIAL_SUFFIX = "_rf"  # the name TVM's rfactor gives the block of partial sums


class RowReductionRule(dl.ScheduleRule):
    """Vectorized partial sums for per-row reductions (module docstring)."""

    name = "row-reduction"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or len(infos) < 2 or not infos[-1].is_injective():
            return None
        reductions = [info for info in infos if not info.is_injective()]
        if not reductions:
            return None
        kinds = [info.dom_kind() for info in infos]
        leading = min(len(kind) - len(kind.lstrip("S")) for kind in kinds)
        if leading == 0:
            return None
        lanes = vector_lanes(target)
        for info in reductions:
            kind = info.dom_kind()
            extent = info.dom()[-1]
            if not (kind.endswith("R") and kind.count("R") == 1 and isinstance(extent, (int, tirx.IntImm))
                    and int(extent) % lanes == 0 and int(extent) >= 2 * lanes):
                return None
        for info in reductions:
            outer_loops = sch.get_loops(info.block_rv)
            _, lane = sch.split(outer_loops[-1], [None, lanes])
            sch.rfactor(lane, factor_axis=len(sch.get(info.block_rv).writes[0].source.shape))
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        last = blocks[-1]
        loops = sch.get_loops(last)
        rows = sch.fuse(*loops[:leading]) if leading > 1 else loops[0]
        sch.parallel(rows)
        _vectorize_inner(sch, last, lanes)
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, rows, preserve_unit_loops=True)
        for block in blocks[:-1]:
            stmt = sch.get(block)
            if stmt.name_hint.endswith(PARTIAL_SUFFIX):
                lane, *units, reduction = sch.get_loops(block)[1:]  # under the row loop: compute_at kept unit rows
                sch.reorder(*units, reduction, lane)
                sch.vectorize(lane)
            elif all(iv.iter_type == 0 for iv in stmt.iter_vars):
                _vectorize_inner(sch, block, lanes)
        return sch


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if len(loops) <= 1:
        return
    inner = loops[-1]
    extent = int(sch.get(inner).extent)
    if extent > lanes and extent % lanes == 0:
        sch.vectorize(sch.split(inner, [None, lanes])[1])
    elif 2 <= extent <= lanes:
        sch.vectorize(inner)
