"""Fused regions: lowering compiles each region the `fuse` pass marked into one kernel.

Import tags every Relax binding with the IR node it came from (torch.export records each
exported node's origin in `meta["from_node"]`; the importer's `emit` is wrapped to note which
node is being converted). Each region's bindings are then outlined into a private Relax
function with `Primitive=1` (the form TVM's FuseOps produces), so after legalization FuseTIR
merges it into a single PrimFunc: one kernel per region, chosen by the IR, not by TVM.
"""
from __future__ import annotations

import torch

from slimgraph.ir import Graph
from slimgraph.ir.ops import conv_weight_shape, is_depthwise_conv, is_pointwise_conv

from .blocked_layout import LAYOUT_TRANSFORM_PREFIX


def _origin_name(node, graph_id: int) -> str | None:
    stack = list(node.meta.get("from_node") or [])
    while stack:
        source = stack.pop()
        if getattr(source, "graph_id", None) == graph_id:
            return source.name
        stack.extend(getattr(source, "from_node", None) or [])
    return None


def import_with_origins(graph: Graph, example) -> tuple[object, dict[str, str]]:
    """(Relax IRModule, {relax var name: IR node name}) for the graph's module."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    module = graph.module()
    graph_id = id(module.graph)
    program = torch.export.export(module, example).run_decompositions()
    origins: dict[str, str] = {}

    class TaggingImporter(ExportedProgramImporter):
        current: str | None = None

        def create_convert_map(self):
            def tagged(convert):
                def run(node, *rest):
                    TaggingImporter.current = _origin_name(node, graph_id)
                    return convert(node, *rest)
                return run
            return {key: tagged(value) for key, value in super().create_convert_map().items()}

        def _translate_fx_graph(self, *args, **kwargs):
            builder, emit = self.block_builder, self.block_builder.emit

            def tagging_emit(expr, name_hint=""):
                var = emit(expr, name_hint)
                if TaggingImporter.current is not None:
                    origins[var.name] = TaggingImporter.current
                return var

            builder.emit = tagging_emit
            try:
                return super()._translate_fx_graph(*args, **kwargs)
            finally:
                del builder.emit

    from .quant_import import CONVERTERS

    mod = TaggingImporter().from_exported_program(program, False, False, False, CONVERTERS)
    return mod, origins


def one_conv_per_region(graph: Graph, region_of: dict[str, int]) -> dict[str, int]:
    """`region_of` (node name -> region) with each region that holds more than one conv (the `fuse`
    pass's 1x1 + depthwise pairs) split before its second conv: a new region from there on."""
    split = dict(region_of)
    convs: dict[int, int] = {}
    renumbered: dict[int, int] = {}
    next_region = max(region_of.values(), default=-1) + 1
    for node in graph.fx_graph.nodes:
        region = region_of.get(node.name)
        if region is None:
            continue
        if node.target is torch.ops.aten.conv2d.default:
            convs[region] = convs.get(region, 0) + 1
            if convs[region] > 1:
                renumbered[region], next_region = next_region, next_region + 1
        split[node.name] = renumbered.get(region, region)
    return split


def outline_regions(mod, var_region: dict[str, int]):
    """Move each region's bindings in `main` into a private primitive function called once.

    A region whose values escape through more than one binding is left inline (its ops then
    become separate kernels) and reported in the returned list."""
    from tvm import relax

    main = mod["main"]
    blocks = main.body.blocks
    flow = [b for b in blocks if isinstance(b, relax.DataflowBlock)]
    if len(flow) != 1:
        return mod, ["main has no single dataflow block; regions left to TVM"]
    block = flow[0]
    uses = _uses(main)  # TVM objects get new Python wrappers on each access: key by var name
    region_by_name = {b.var.name: var_region.get(b.var.name) for b in block.bindings}
    for binding in reversed(block.bindings):  # helpers the importer emitted go with their only readers
        readers = {region_by_name.get(user) for user in uses.get(binding.var.name, ())}
        if region_by_name[binding.var.name] is None and len(readers) == 1 and None not in readers \
                and _may_join(binding, readers, region_by_name):
            region_by_name[binding.var.name] = readers.pop()
    members: dict[int, list] = {}
    for binding in block.bindings:
        if region_by_name[binding.var.name] is not None:
            members.setdefault(region_by_name[binding.var.name], []).append(binding)
    skipped, calls, outlined = [], {}, set()
    module_builder = relax.BlockBuilder(mod)  # gives the new functions' GlobalVars their types
    for region, bindings in members.items():
        names = {b.var.name for b in bindings}
        escaping = [b.var.name for b in bindings if uses.get(b.var.name, set()) - names]
        if escaping != [bindings[-1].var.name]:
            skipped.append(f"region {region}: {len(escaping)} values leave it; its ops stay separate kernels")
            continue
        calls[bindings[-1].var.name] = _make_function(module_builder, f"region_{region}", bindings, names)
        outlined |= names
    new_bindings = []
    for binding in block.bindings:
        if binding.var.name in calls:
            gv, inputs = calls[binding.var.name]
            new_bindings.append(relax.VarBinding(binding.var, relax.Call(gv, inputs)))
        elif binding.var.name not in outlined:
            new_bindings.append(binding)
    new_blocks = [relax.DataflowBlock(new_bindings) if b.same_as(block) else b for b in blocks]
    mod = module_builder.get()
    mod["main"] = relax.Function(main.params, relax.SeqExpr(new_blocks, main.body.body), main.ret_ty,
                                 main.is_pure, main.attrs)
    return mod, skipped


def _may_join(binding, readers: set, region_by_name: dict) -> bool:
    """A helper joins its reader's region; a layout transform (lowering.blocked_layout) only when it
    reads from that region too (a blocked mean before a flatten): at a region's edge it is its own kernel."""
    from tvm import relax

    if not binding.var.name.startswith(LAYOUT_TRANSFORM_PREFIX):
        return True
    return {region_by_name.get(v.name) for v in relax.analysis.free_vars(binding.value)} == readers


def _uses(function) -> dict[str, set[str]]:
    """For each var name, the names of the bindings that read it ("<output>" for the result)."""
    from tvm import relax

    uses: dict[str, set[str]] = {}
    for block in function.body.blocks:
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                uses.setdefault(var.name, set()).add(binding.var.name)
    for var in relax.analysis.free_vars(function.body.body):
        uses.setdefault(var.name, set()).add("<output>")
    return uses


def _make_function(module_builder, name: str, bindings, defined: set[str]):
    import tvm
    from tvm import relax

    inputs, seen = [], set()
    for binding in bindings:
        for var in relax.analysis.free_vars(binding.value):
            if var.name not in defined and var.name not in seen:
                inputs.append(var)
                seen.add(var.name)
    constants = []  # FuseTIR takes no tensor constants inside: they become parameters too
    for binding in bindings:
        relax.analysis.post_order_visit(binding.value, lambda e: constants.append(e) if isinstance(
            e, tvm.ir.GenericConst) and not any(e.same_as(c) for c in constants) else None)
    params = [relax.Var(v.name, v.ty) for v in inputs]
    constant_params = [relax.Var(f"const{i}", c.ty) for i, c in enumerate(constants)]
    mapping = {v.name: p for v, p in zip(inputs, params)}
    substitute = _substituter(list(zip(constants, constant_params)))
    params = params + constant_params
    builder = relax.BlockBuilder()
    with builder.function(name, params, attrs={"Primitive": 1}, private=True):  # as FuseOps marks them
        with builder.dataflow():
            for binding in bindings[:-1]:
                mapping[binding.var.name] = builder.emit(substitute(mapping).visit_expr(binding.value), binding.var.name)
            last = builder.emit_output(substitute(mapping).visit_expr(bindings[-1].value), bindings[-1].var.name)
        builder.emit_func_output(last)
    return module_builder.add_func(builder.get()[name], name), inputs + constants


def _substituter(constant_params):
    from tvm import relax

    @relax.expr_functor.mutator
    class Substitute(relax.PyExprMutator):
        def __init__(self, mapping):
            super().__init__()
            self.mapping = mapping

        def visit_generic_const_(self, constant):
            return next((p for c, p in constant_params if c.same_as(constant)), constant)

        def visit_var_(self, var):
            return self.mapping.get(var.name, var)

        def visit_dataflow_var_(self, var):
            return self.mapping.get(var.name, var)

    return Substitute


def depthwise_with_projection(graph: Graph, region_of: dict[str, int]) -> dict[str, int]:
    """`region_of` with each region anchored by a depthwise conv merged into the region of the 1x1 conv that
    alone reads its output (MobileNet's depthwise conv and projection): in the blocked layout one kernel computes
    both per band of rows (lowering.depthwise_projection), so the depthwise output never leaves the core's L2."""
    members: dict[int, list] = {}
    for node in graph.fx_graph.nodes:
        if node.name in region_of:
            members.setdefault(region_of[node.name], []).append(node)
    merged = dict(region_of)
    for region, nodes in members.items():
        readers = list(nodes[-1].users)
        if not _blocked_float_conv(nodes[0], is_depthwise_conv) or len(readers) != 1:
            continue
        reader_region = region_of.get(readers[0].name)
        if reader_region is None or reader_region == region or members[reader_region][0] is not readers[0] \
                or not _blocked_float_conv(readers[0], is_pointwise_conv):
            continue
        for node in nodes:
            merged[node.name] = reader_region
    return merged


def _blocked_float_conv(node, shape_test) -> bool:
    """A float32 conv passing `shape_test` (ir.ops) whose output channels take a block in the blocked layout (a
    multiple of 4, blocked_layout.channel_block; else it stays NCHW and no fused kernel takes it)."""
    value, shape = node.meta.get("val"), conv_weight_shape(node)
    return shape_test(node) and shape[0] % 4 == 0 and isinstance(value, torch.Tensor) and value.dtype == torch.float32
