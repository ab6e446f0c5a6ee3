"""matmul with a constant right-hand side packed at compile time (linear layers).

    Bp[j // nb, k, j % nb] = B[k, j]                      (a kernel on a constant: FoldConstant
                                                         runs it once)
    C[b.., i, j] = sum_k A[b.., i, k] * Bp[j // nb, k, j % nb]

nb = the target's fp32 vector lanes, or the largest of 8, 4, 2 that divides N. The dense schedule
rule (lowering.cpu_schedules.DenseRule) tiles j by a multiple of nb, so every tile reads one
contiguous K x nb panel of Bp per lane group instead of K rows N floats apart.
"""
from __future__ import annotations

from .conv_packed import channel_block
from .schedule_common import vector_lanes


def _pack_rhs(rhs, block: int):
    from tvm import te

    depth, width = rhs.shape
    return te.compute((width // block, depth, block), lambda o, k, c: rhs[k, o * block + c], name="packed_rhs")


def _matmul_packed(lhs, packed):
    from tvm import te

    *batch, rows, depth = lhs.shape
    blocks, _, block = packed.shape
    k = te.reduce_axis((0, depth), name="k")
    return te.compute(
        (*batch, rows, blocks * block),
        lambda *idx: te.sum(lhs[(*idx[:-1], k)] * packed[idx[-1] // block, k, idx[-1] % block], axis=k),
        name="matmul")


def legalize_matmul(bb, call):
    """LegalizeOps hook for relax.matmul: pack a constant 2-D fp32 right-hand side; TVM's otherwise."""
    import tvm
    from tvm.relax.transform.legalize_ops.linear_algebra import _matmul

    lhs, rhs = call.args
    target = tvm.target.Target.current(allow_none=True)
    if (target is None or target.kind.name != "llvm" or not isinstance(rhs, tvm.ir.expr.GenericConst)
            or len(rhs.ty.shape) != 2 or len(lhs.ty.shape) < 2 or str(lhs.ty.dtype) != "float32"
            or str(rhs.ty.dtype) != "float32" or str(call.ty.dtype) != "float32"):
        return _matmul(bb, call)
    block = channel_block(int(rhs.ty.shape[1]), vector_lanes(target))
    packed = bb.emit_te(_pack_rhs, rhs, block, primfunc_name_hint="pack_matmul_weight")
    return bb.call_te(_matmul_packed, lhs, packed, primfunc_name_hint="matmul")
