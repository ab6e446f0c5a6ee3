"""The per-target Relax pipeline: legalize ops into TIR, fold constants, fuse into kernels.

    decompose-for-inference -> LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR

`codegen.build` then runs TVM's VM lowering ("default" build pipeline) on the result, so the
fusion decided here is the one that ships. On CPU targets our own legalizations replace TVM's
for some ops (`cpu_legalize_map`); schedules come after (lowering.cpu_schedules).
"""
from __future__ import annotations


def cpu_legalize_map(target) -> dict:
    """Our legalizations that replace TVM's for CPU targets: conv2d and matmul with weights packed
    at compile time, max pooling over a padded plane that vectorizes (lowering.pooling),
    exp / erf / tanh / softmax / GELU without libm's scalar calls (lowering.fast_math).
    FoldConstant runs before them, so a transposed weight is a constant."""
    from .conv_packed import legalize_conv2d
    from .dense_packed import legalize_matmul
    from .fast_math import FAST_MATH_LEGALIZATIONS
    from .pooling import legalize_max_pool2d

    if target.kind.name != "llvm":
        return {}
    return {"relax.nn.conv2d": legalize_conv2d, "relax.matmul": legalize_matmul,
            "relax.nn.max_pool2d": legalize_max_pool2d, **FAST_MATH_LEGALIZATIONS}


def optimize(mod, target, blocked_layout: bool = False):
    """Run the fusion pipeline for `target` (a tvm.target.Target) and return the new IRModule;
    `blocked_layout`: convs in lowering.blocked_layout's channel-blocked layout."""
    import tvm
    from tvm import relax

    from .blocked_layout import blocked_layout_passes

    passes = tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        *blocked_layout_passes(target, blocked_layout),
        relax.transform.LegalizeOps(customize_legalize_map=cpu_legalize_map(target)),
        relax.get_pipeline("zero"),
        *views_for_reshapes(),
    ])
    with target, tvm.transform.PassContext(opt_level=3):
        return passes(mod)


def legalize_for_regions(mod, target, blocked_layout: bool = False):
    """Before regions are outlined: ops become TIR calls and constant-only work is folded, so the
    kernels of a region compute only what depends on the inputs."""
    import tvm
    from tvm import relax

    from .blocked_layout import blocked_layout_passes

    passes = tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        *blocked_layout_passes(target, blocked_layout),
        relax.transform.LegalizeOps(customize_legalize_map=cpu_legalize_map(target)),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
    ])
    with target, tvm.transform.PassContext(opt_level=3):
        return passes(mod)


def fuse_regions(mod, target):
    """After outlining: FuseTIR makes one kernel of each region's primitive function."""
    import tvm
    from tvm import relax

    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential([relax.transform.FuseTIR(), *views_for_reshapes()])(mod)


def views_for_reshapes():
    """Passes that make every kernel that only reshapes a view of its input (R.reshape: no copy, no
    launch) and drop the dead kernels. TVM's build does the same, but only for kernels whose TIR still
    has the plain reshape pattern: after our schedule rules split and vectorized their loops, each
    stayed a copy kernel (33 calls per inference of MobileNetV2 int8, from its flattened 1x1 convs)."""
    from tvm import relax

    return [relax.transform.RewriteDataflowReshape(), relax.transform.DeadCodeElimination()]


def kernel_calls(mod) -> dict[str, int]:
    """How often `main` of a lowered module calls each TIR kernel (its `call_tir`s, by kernel name)."""
    from tvm import relax

    calls: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            name = expr.args[0].name_hint
            calls[name] = calls.get(name, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def kernel_launches(mod) -> int:
    """Kernel calls one inference makes."""
    return sum(kernel_calls(mod).values())


def kernel_names(mod) -> list[str]:
    """Names of the TIR kernels (PrimFuncs) in a lowered module."""
    import tvm

    return sorted(gv.name_hint for gv, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc))
