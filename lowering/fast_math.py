"""Vectorizable legalizations of exp, erf, tanh, softmax and GELU for fp32 on CPU targets.

TVM legalizes these into calls to libm's scalar `expf` / `erff` / `tanhf`, which LLVM cannot
vectorize (a dense+bias+GELU kernel spent two thirds of its time in erff; softmax ran at
5 ns per element). TOPI's `fast_exp`, `fast_erf` and `fast_tanh` are polynomial / rational
approximations in plain arithmetic, within a few fp32 ulps (fast_erf: 2.5e-7 absolute):

    softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)     (topi.nn.fast_softmax)
    gelu(x)      = x * (0.5 + 0.5 * erf(x / sqrt(2)))
Other dtypes keep TVM's legalization.
"""
from __future__ import annotations

SQRT_HALF = 0.7071067811865476


def _tvm_legalization(op_name: str):
    import tvm

    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _fp32_only(op_name: str, fast):
    """A legalizer that emits `fast(bb, call)` for fp32 calls and TVM's own otherwise."""
    def legalize(bb, call):
        if str(call.ty.dtype) != "float32":
            return _tvm_legalization(op_name)(bb, call)
        return fast(bb, call)
    return legalize


def _unary(topi_function_name: str, name: str):
    def emit(bb, call):
        from tvm import topi

        return bb.call_te(getattr(topi, topi_function_name), call.args[0], primfunc_name_hint=name)
    return emit


def _softmax(bb, call):
    from tvm import topi

    return bb.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis), primfunc_name_hint="softmax")


def _gelu(bb, call):
    from tvm import topi

    def gelu(x):
        erf = topi.fast_erf(topi.multiply(x, SQRT_HALF))
        return topi.multiply(x, topi.add(topi.multiply(erf, 0.5), 0.5))

    return bb.call_te(gelu, call.args[0], primfunc_name_hint="gelu")


FAST_MATH_LEGALIZATIONS = {
    "relax.exp": _fp32_only("relax.exp", _unary("fast_exp", "exp")),
    "relax.erf": _fp32_only("relax.erf", _unary("fast_erf", "erf")),
    "relax.tanh": _fp32_only("relax.tanh", _unary("fast_tanh", "tanh")),
    "relax.nn.softmax": _fp32_only("relax.nn.softmax", _softmax),
    "relax.nn.gelu": _fp32_only("relax.nn.gelu", _gelu),
}
