"""Channel-blocked layout for a CPU model's convs (`blocked_layout_wanted`: by default for models with
depthwise convs; SLIMGRAPH_BLOCKED_LAYOUT=1 / 0 forces it on / off).

With the layout on, the Relax module goes through, before legalization:

    clip(x, lo, hi)  ->  minimum(maximum(x, lo), hi)                 (same values; TVM's layout
                                                                      conversion keeps min / max on
                                                                      blocked tensors, not clip)
    ConvertLayout(conv2d: `conv_layouts`)                           each conv's own layouts
    FoldConstant                                                     (the weights' re-layout, once)

`conv_layouts`: a conv with C_in -> C_out channels takes NCHW{bi}c data, OIHW{bo}o weights and gives
NCHW{bo}c, where b of a tensor is the target's fp32 lanes, or the largest of 8 and 4 that divides its
channels (MobileNetV2's 24-channel tensors: blocks of 8 with 16 lanes); a depthwise conv has bi = bo,
a 3-channel image goes into the first conv as NCHW data; a conv no block fits stays NCHW. As every
conv reads its input in the block its producer wrote, TVM's ConvertLayout carries the layout through
the elementwise ops, adds and means between them and puts `layout_transform`s only where a tensor
changes layout: at the model's output (and input, unless the first conv reads NCHW), and around a
conv that stays NCHW. The blocked convs are legalized and scheduled by lowering.conv_blocked. The
transforms are renamed `layout_transform{i}` (ConvertLayout names them like the importer's bindings,
which the fused regions are keyed by) and join a region only from inside it (lowering.regions).

MobileNetV2 on a 2-core Xeon (AVX-512), one process, alternated: 3.19 ms blocked, 4.02 ms NCHW,
ONNX Runtime 3.24 ms.
"""
from __future__ import annotations

import os

from slimgraph.ir.errors import SlimgraphError

from .schedule_common import vector_lanes

LAYOUT_TRANSFORM_PREFIX = "layout_transform"


def blocked_layout_wanted(mod, target) -> bool:
    """Whether `mod`'s convs go to the blocked layout on `target`: SLIMGRAPH_BLOCKED_LAYOUT=1 / 0 forces
    it on / off for CPU targets; by default ("auto") it is on when `main` has a depthwise conv
    (MobileNets), whose NCHW form needs a plane per channel split by column parity, and off
    otherwise: ResNet-18's 3x3 convs go through Winograd in NCHW (9.1 ms; 13.6 blocked)."""
    setting = os.environ.get("SLIMGRAPH_BLOCKED_LAYOUT", "auto")
    if setting not in ("0", "1", "auto"):
        raise SlimgraphError(f"SLIMGRAPH_BLOCKED_LAYOUT={setting!r}: expected 0, 1 or auto")
    if target.kind.name != "llvm" or setting == "0":
        return False
    return setting == "1" or has_depthwise_conv(mod)


def conv_layout(mod, target) -> str:
    """What the compile report says of `mod`'s convs on `target`: "" without convs, else their layout."""
    if not _conv_calls(mod):
        return ""
    if blocked_layout_wanted(mod, target):
        return f"NCHW{vector_lanes(target)}c channel blocks (SLIMGRAPH_BLOCKED_LAYOUT=0: NCHW)"
    return "NCHW"


def has_depthwise_conv(mod) -> bool:
    return any(int(call.attrs.groups) > 1 and int(call.attrs.groups) == int(call.args[0].ty.shape[1])
               for call in _conv_calls(mod))


def _conv_calls(mod) -> list:
    """The relax.nn.conv2d calls of `mod`'s main."""
    from tvm import relax

    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call)
                                    and getattr(e.op, "name", "") == "relax.nn.conv2d" else None)
    return calls


def blocked_layout_passes(target, enabled: bool) -> list:
    """The passes of the module docstring for `target`; none when the layout is off."""
    from tvm import relax

    if not enabled:
        return []
    lanes = vector_lanes(target)

    def layouts(call):
        return {"relax.nn.conv2d": conv_layouts(call, lanes)} if call.op.name == "relax.nn.conv2d" else {}

    return [clip_as_min_max(), relax.transform.ConvertLayout({}, layouts),
            relax.transform.Normalize(), name_layout_transforms(), relax.transform.EliminateCommonSubexpr(),
            relax.transform.FoldConstant()]


def channel_block(channels: int, lanes: int) -> int | None:
    """The block of a tensor with `channels` channels: the lanes, or the largest of 8 and 4 that divides."""
    return next((b for b in (lanes, 8, 4) if b <= lanes and channels % b == 0), None)


def conv_layouts(call, lanes: int) -> list[str]:
    """[data, weight, output] layouts of one conv2d (module docstring)."""
    in_channels, out_channels = int(call.args[0].ty.shape[1]), int(call.args[1].ty.shape[0])
    groups = int(call.attrs.groups)
    out_block = channel_block(out_channels, lanes)
    in_block = out_block if groups > 1 else channel_block(in_channels, lanes)
    if out_block is None or groups not in (1, in_channels) or str(call.args[0].ty.dtype) != "float32":
        return ["NCHW", "OIHW", "NCHW"]
    return [f"NCHW{in_block}c" if in_block else "NCHW", f"OIHW{out_block}o", f"NCHW{out_block}c"]


def is_layout_transform(expr) -> bool:
    from tvm import relax

    return isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.layout_transform"


def clip_as_min_max():
    """clip(x, lo, hi) as minimum(maximum(x, lo), hi) on floating-point tensors."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class ClipAsMinMax(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            value = binding.value
            if getattr(getattr(value, "op", None), "name", "") != "relax.clip" \
                    or not str(value.args[0].ty.dtype).startswith("float"):
                return super().visit_var_binding_(binding)
            data, dtype = self.visit_expr(value.args[0]), str(value.args[0].ty.dtype)
            low, high = (relax.const(float(arg.value), dtype) for arg in value.args[1:3])
            # the maximum gets a name of its own: the regions are keyed by the importer's names
            at_least = self.builder_.emit(relax.op.maximum(data, low), f"{binding.var.name}_at_least")
            _rebind(self, binding.var, relax.op.minimum(at_least, high), binding.var.name)

    @tvm.transform.module_pass(opt_level=0, name="ClipAsMinMax")
    def run(mod, _context):
        return _mutate_functions(mod, ClipAsMinMax)

    return run


def name_layout_transforms():
    """Bind every layout_transform to a var of its own name, `layout_transform{i}`."""
    import tvm
    from tvm import relax

    count = [0]

    @relax.expr_functor.mutator
    class NameTransforms(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            if not is_layout_transform(binding.value):
                return super().visit_var_binding_(binding)
            count[0] += 1
            _rebind(self, binding.var, self.visit_expr(binding.value), f"{LAYOUT_TRANSFORM_PREFIX}{count[0]}")

    @tvm.transform.module_pass(opt_level=0, name="NameLayoutTransforms")
    def run(mod, _context):
        return _mutate_functions(mod, NameTransforms)

    return run


def _rebind(mutator, var, value, name: str) -> None:
    """Emit `value` as `name` in place of the binding of `var` (an output stays an output)."""
    from tvm import relax

    emit = mutator.builder_.emit if isinstance(var, relax.DataflowVar) else mutator.builder_.emit_output
    mutator.set_var_remap(var, emit(value, name))


def _mutate_functions(mod, mutator_class):
    from tvm import relax

    mutator = mutator_class(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()
