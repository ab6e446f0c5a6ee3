"""The channel-blocked layout (lowering/blocked_layout.py, lowering/conv_blocked.py): which convs take
it and in which block, the Relax module before and after the layout passes, the schedule of the
blocked convs, and the outputs against PyTorch."""
import re

import numpy as np
import pytest
import torch
from torch import nn
from tvm import tirx

import slimgraph
from slimgraph.codegen import aarch64
from slimgraph.codegen.targets import resolve_target
from slimgraph.ir.errors import SlimgraphError
from slimgraph.lowering.conv_blocked import DEPTHWISE_ATTR
from slimgraph.lowering.blocked_layout import blocked_layout_passes, blocked_layout_wanted
from slimgraph.lowering.pipeline import kernel_calls
from slimgraph.lowering.relax_import import to_relax

AVX512_TARGET = '{"kind": "llvm", "mcpu": "skylake-avx512", "mattr": ["+avx512f", "+avx2", "+fma"], "num-cores": 2}'
AVX2_TARGET = '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": 2}'


class InvertedResidual(nn.Module):
    """MobileNetV2's block shape: 3 -> 32 stem (3x3 / 2), 1x1 expansion, depthwise 3x3 (stride s),
    1x1 projection to 24 channels (blocks of 8), a residual add, a 24 -> 48 expansion, a mean."""

    def __init__(self, stride: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.expand = nn.Conv2d(32, 64, 1)
        self.depthwise = nn.Conv2d(64, 64, 3, stride=stride, padding=1, groups=64)
        self.project = nn.Conv2d(64, 24, 1)
        self.shortcut = nn.Conv2d(32, 24, 1, stride=stride)
        self.head = nn.Conv2d(24, 48, 1)

    def forward(self, x):
        x = torch.clamp(self.stem(x), 0, 6)
        y = torch.clamp(self.expand(x), 0, 6)
        y = torch.clamp(self.depthwise(y), 0, 6)
        y = self.project(y) + self.shortcut(x)
        return torch.relu(self.head(y)).mean((2, 3))


def example(stride: int = 1):
    torch.manual_seed(stride)
    return InvertedResidual(stride).eval(), (torch.randn(1, 3, 30, 26),)


def layout_passes_text(target: str) -> str:
    import tvm

    module, inputs = example()
    graph = slimgraph.compile(module, inputs, check=False).graph
    tvm_target = resolve_target(target).tvm_target()
    with tvm_target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(blocked_layout_passes(tvm_target, True))(to_relax(graph))
    return mod["main"].script()


@pytest.mark.parametrize("target, block", [(AVX512_TARGET, 16), (AVX2_TARGET, 8)])
def test_convs_take_the_lanes_as_their_block_and_8_where_16_does_not_divide(target, block):
    """Each conv's layouts in the Relax module after the layout passes: NCHW data for the stem (3
    channels), the lanes as the block elsewhere, 8 for the 24-channel tensors; clip is min / max, and
    the only layout transform is the output's (the mean's 48 channels back to the model's order)."""
    text = layout_passes_text(target)
    layouts = re.findall(r'data_layout="(\w+)", kernel_layout="(\w+)", out_layout="(\w+)"', text)
    b = f"NCHW{block}c"
    assert layouts == [("NCHW", f"OIHW{block}o", b), (b, f"OIHW{block}o", b), (b, f"OIHW{block}o", b),
                       (b, "OIHW8o", "NCHW8c"), (b, "OIHW8o", "NCHW8c"), ("NCHW8c", f"OIHW{block}o", b)]
    assert "R.clip(" not in text and text.count("R.minimum(") == text.count("R.maximum(") == 3
    assert text.count("R.layout_transform") == 1


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("target", [AVX512_TARGET, AVX2_TARGET])
def test_a_model_with_depthwise_convs_runs_blocked_and_matches_pytorch(target, stride):
    """Every conv is a blocked kernel, one kernel per conv but the depthwise conv and its projection, which
    are one (no layout transform kernel but the output's), outputs as PyTorch's."""
    module, inputs = example(stride)
    compiled = slimgraph.compile(module, inputs, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    blocked = [str(f) for name, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    conv_blocks = sorted(f.count(f'"{DEPTHWISE_ATTR}"') // 2 for f in blocked)  # a conv's init and update blocks
    assert len(blocked) == 5 and conv_blocks == [1, 1, 1, 1, 2]
    functions = [str(f) for _, f in compiled.lowered.functions_items()]
    assert not any("conv2d_packed" in f or "grouped_conv2d" in f for f in functions)
    assert sum(kernel_calls(compiled.lowered).values()) <= 7 + 1
    assert compiled.report.conv_layout.startswith(f"NCHW{16 if 'avx512f' in target else 8}c channel blocks")


def test_the_layout_is_chosen_per_model_and_forced_by_the_environment(monkeypatch):
    """Auto: on with a depthwise conv, off without (ResNet's Winograd convs stay NCHW); 1 / 0 force it;
    never for a GPU target."""
    module, inputs = example()
    mod = to_relax(slimgraph.compile(module, inputs, check=False).graph)
    plain = to_relax(slimgraph.compile(nn.Conv2d(3, 16, 3), (torch.randn(1, 3, 8, 8),), check=False).graph)
    cpu, gpu = resolve_target(AVX2_TARGET).tvm_target(), resolve_target("cuda").tvm_target()
    monkeypatch.delenv("SLIMGRAPH_BLOCKED_LAYOUT", raising=False)
    assert (blocked_layout_wanted(mod, cpu), blocked_layout_wanted(plain, cpu), blocked_layout_wanted(mod, gpu)) == \
        (True, False, False)
    assert slimgraph.compile(nn.Conv2d(3, 16, 3), (torch.randn(1, 3, 8, 8),), check=False).report.conv_layout == "NCHW"
    assert slimgraph.compile(nn.Linear(4, 4), (torch.randn(1, 4),), check=False).report.conv_layout == ""
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "0")
    assert not blocked_layout_wanted(mod, cpu)
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    assert blocked_layout_wanted(plain, cpu)


def test_a_bad_layout_setting_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "yes")
    module, inputs = example()
    with pytest.raises(SlimgraphError, match=r"^SLIMGRAPH_BLOCKED_LAYOUT='yes': expected 0, 1 or auto$"):
        slimgraph.compile(module, inputs, check=False)


def test_a_blocked_conv_without_a_blocked_kernel_is_an_error_not_left_unlegalized():
    """A grouped conv (2 groups of 16 channels) in NCHW16c, which blocked_layout never makes: the
    legalization names its layouts instead of leaving the op to fail later in the build (raised inside
    TVM's LegalizeOps, the error reaches the caller through TVM's FFI as a RuntimeError with its message)."""
    from tvm import relax

    from slimgraph.lowering.pipeline import cpu_legalize_map

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 8, 8, 16), "float32"))
    weight = relax.const(np.zeros((2, 16, 3, 3, 16), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit_output(relax.op.nn.conv2d(x, weight, padding=1, groups=2, data_layout="NCHW16c",
                                                       kernel_layout="OIHW16o"))
        builder.emit_func_output(y)
    target = resolve_target(AVX512_TARGET).tvm_target()
    with target, pytest.raises((SlimgraphError, RuntimeError),
                               match="conv2d NCHW16c x OIHW16o -> NCHW16c, groups 2: no blocked"):
        relax.transform.LegalizeOps(customize_legalize_map=cpu_legalize_map(target))(builder.get())


def test_blocked_schedule_vectorizes_the_lanes_and_reads_depthwise_padding_in_place():
    """The blocked convs' loops: the lane loop vectorized; the depthwise conv has no padded copy of its
    input (each tap's load guarded by the pixel's bounds) and one parallel loop."""
    module, inputs = example(2)
    compiled = slimgraph.compile(module, inputs, target=AVX512_TARGET, check=False)
    scripts = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    for script in scripts:
        assert re.search(r"for \w+ in T\.vectorized\(T\.int64\((16|8)\)\)", script)
    (depthwise,) = [s for s in scripts if f'"{DEPTHWISE_ATTR}": 1' in s]
    assert depthwise.count("T.parallel(") == 1 and 'T.sblock("pad_temp")' not in depthwise
    update = depthwise[depthwise.index('T.sblock("conv2d_blocked_update")'):]
    assert "T.if_then_else(" in update


@pytest.mark.parametrize("cin, cout, size, groups", [
    (64, 64, 32, 64),     # depthwise
    (32, 128, 27, 1),     # 1x1, 27 rows, 96 KB of data, 16 KB of weights
])
def test_the_parallel_loop_takes_rows_outside_channel_blocks(monkeypatch, cin, cout, size, groups):
    """Each thread's share of the tasks is then a band of rows of all channels, which the conv before
    (rows first as well) wrote on the same core. Read from the conv's update block: the row index is
    the parallel loop // the channel blocks (with channels outside, the channel block would be)."""
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    kernel = 3 if groups > 1 else 1
    graph = conv_graph(1, cin, cout, size, kernel, 1, kernel // 2, groups)
    compiled = slimgraph.compile(graph, target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    block, row = re.search(r'sblock\("conv2d_blocked_update"\):\n\s+v0 = (.*)\n\s+v1 = (.*)\n', script).groups()
    assert "//" in row and "//" not in block


def test_a_depthwise_conv_whose_rows_do_not_split_evenly_takes_channel_blocks_per_thread(monkeypatch):
    """7 rows on 2 cores (MobileNetV2's 7x7 layers): the parallel loop runs over the 4 channel blocks and
    each task computes all 7 rows, as the 1x1 conv before it does, so a thread reads what its own core wrote."""
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    compiled = slimgraph.compile(conv_graph(1, 64, 64, 7, 3, 1, 1, 64), target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    parallel = re.search(r"for (\w+) in T\.parallel\(T\.int64\(4\)\)", script).group(1)
    block, row = re.search(r'sblock\("conv2d_blocked_update"\):\n\s+v0 = (.*)\n\s+v1 = (.*)\n', script).groups()
    assert parallel in block and parallel not in row


def test_a_depthwise_tile_leaves_registers_for_its_weights(monkeypatch):
    """112 columns: a depthwise tile of 14 columns (DEPTHWISE_ACCUMULATORS), not the 16 of the dense convs' budget
    of 24 accumulators, since the 9 taps' weight vectors stay in registers beside it."""
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    compiled = slimgraph.compile(conv_graph(1, 16, 16, 111, 3, 1, 1, 16), target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    update = script[:script.index('T.sblock("conv2d_blocked_update")')]
    assert "T.unroll(T.int64(14))" in update[update.rindex("T.unroll(T.int64(3))"):]


def test_a_dense_conv_whose_rows_split_evenly_takes_a_band_of_rows_per_thread(monkeypatch):
    """28 rows, 2 cores: tasks (band of 14 rows, channel-block group), the band's rows inside each task
    (the weights of one group stay in L1 over them); with THREAD_ROW_BANDS off, a task per row."""
    from slimgraph.lowering import conv_blocked
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")

    def scheduled():
        compiled = slimgraph.compile(conv_graph(1, 32, 128, 28, 1, 1, 0, 1), target=AVX512_TARGET, check=True)
        assert compiled.report.max_abs_diff <= 1e-4
        (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
        tasks = int(re.search(r"T\.parallel\(T\.int64\((\d+)\)", script).group(1))
        row = re.search(r'sblock\("conv2d_blocked_update"\):\n\s+v0 = .*\n\s+v1 = (.*)\n', script).group(1)
        return tasks, row

    tasks, row = scheduled()
    assert tasks == 2 * 2 and "T.int64(14) +" in row  # 8 blocks of 16 in groups of 4: 2 groups per band
    monkeypatch.setattr(conv_blocked, "THREAD_ROW_BANDS", False)
    tasks, row = scheduled()
    assert tasks == 28 * 2


def test_a_conv_with_uneven_rows_and_heavy_weights_splits_channel_blocks_among_the_threads(monkeypatch):
    """1x1 at 7x7, 256 KB of weights, 50 KB of data: tasks = groups of channel blocks (each thread half the
    weights), all 7 rows inside each; with CHANNELS_FOR_UNEVEN_ROWS off, a task per (row, group)."""
    from slimgraph.lowering import conv_blocked
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")

    def tasks():
        compiled = slimgraph.compile(conv_graph(1, 256, 256, 7, 1, 1, 0, 1), target=AVX512_TARGET, check=True)
        assert compiled.report.max_abs_diff <= 1e-4
        (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
        return int(re.search(r"T\.parallel\(T\.int64\((\d+)\)", script).group(1))

    assert tasks() == 4  # 16 blocks of 16 in groups of 4
    monkeypatch.setattr(conv_blocked, "CHANNELS_FOR_UNEVEN_ROWS", False)
    assert tasks() == 7 * 4


def test_a_stem_pads_its_band_of_input_rows_in_its_own_task(monkeypatch):
    """3 -> 32 (one group of channel blocks), 3x3 / 2 with padding: one parallel loop, the padding inside it
    (without thread bands the padding is a parallel pass of its own)."""
    from slimgraph.lowering import conv_blocked
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")

    def scheduled():
        compiled = slimgraph.compile(conv_graph(1, 3, 32, 28, 3, 2, 1, 1), target=AVX512_TARGET, check=True)
        assert compiled.report.max_abs_diff <= 1e-4
        (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
        return script

    script = scheduled()
    assert script.count("T.parallel(") == 1 and script.index("T.parallel(") < script.index('T.sblock("pad_temp")')
    monkeypatch.setattr(conv_blocked, "THREAD_ROW_BANDS", False)
    assert scheduled().count("T.parallel(") == 2


@pytest.mark.parametrize("cin, cout, size", [
    (32, 16, 27),   # one block of 16 output channels (MobileNetV2's 32 -> 16 projection), 28 columns
    (64, 32, 1),    # one output row
])
def test_a_conv_with_an_output_dim_of_one_still_takes_the_blocked_schedule(monkeypatch, cin, cout, size):
    """dlight's normalization drops a dim of extent 1 from the conv's block; the rule tiles the rest:
    tasks of whole rows, a tile of pixels unrolled (the fallback took one pixel per task)."""
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    compiled = slimgraph.compile(conv_graph(1, cin, cout, size, 1, 1, 0, 1), target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    tasks = int(re.search(r"T\.parallel\(T\.int64\((\d+)\)", script).group(1))
    tile = max(int(e) for e in re.findall(r"T\.unroll\((?:T\.int64\()?(\d+)", script))
    assert tasks <= size * (cout // 16) and tile > 1


@pytest.mark.skipif(not aarch64.can_run(), reason="needs g++-aarch64-linux-gnu and qemu-user (Debian packages)")
def test_blocked_model_on_arm64_under_qemu():
    """NEON: 4 lanes, NCHW4c (24 channels: 4 as well)."""
    module, inputs = example(2)
    compiled = slimgraph.compile(module, inputs, target="arm64", check=True)
    assert compiled.emulated and compiled.report.max_abs_diff <= 1e-4


def test_a_tile_of_16_vectors_reaches_its_epilogue_in_registers(monkeypatch):
    """1x1 32 -> 64 on 32 columns: a tile of 4 channel blocks x 4 pixels, 16 AVX-512 vectors (1 KB, which TVM
    puts on the heap). The epilogue's loops over the tile are unrolled (it then takes the accumulators from
    registers), and the LLVM IR no longer zeroes the tile with a memset; with TILES_IN_REGISTERS off it does."""
    from slimgraph.codegen.build import generated_source
    from slimgraph.codegen.targets import resolve_target
    from slimgraph.lowering import schedule_common
    from slimgraph.tests.test_cpu_schedules import conv_graph

    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")

    def compiled_conv():
        compiled = slimgraph.compile(conv_graph(1, 32, 64, 31, 1, 1, 0, 1), target=AVX512_TARGET, check=True)
        assert compiled.report.max_abs_diff <= 1e-4
        (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
        epilogue_loops = re.search(r"((?:for [^\n]*\n\s*)+)with T\.sblock\(\"T_minimum\"\)", script).group(1)
        llvm_ir = generated_source(compiled.executable, resolve_target(AVX512_TARGET), "ll")
        return epilogue_loops, re.search(r"@llvm\.memset[^\n]* i64 1024,", llvm_ir)

    epilogue_loops, tile_memset = compiled_conv()
    assert epilogue_loops.count("T.unroll(T.int64(4))") == 2 and "T.vectorized(T.int64(16))" in epilogue_loops
    assert not tile_memset
    monkeypatch.setattr(schedule_common, "TILES_IN_REGISTERS", False)
    epilogue_loops, tile_memset = compiled_conv()
    assert "T.unroll(" not in epilogue_loops and tile_memset


@pytest.mark.parametrize("size, stride, residual", [(7, 1, True), (14, 2, False), (28, 1, True)])
def test_a_depthwise_conv_and_its_projection_are_one_kernel_computed_per_band_of_rows(monkeypatch, size, stride,
                                                                                        residual):
    """depthwise 3x3 -> clamp -> 1x1 (-> + residual): one kernel (lowering/depthwise_projection.py) in parallel over
    one band of output rows per thread (7 rows: 4 and 3), each task computing the depthwise conv for its band's rows
    of all channels before the projection reads them; outputs as PyTorch's. Apart (DEPTHWISE_PROJECTION off), two."""
    from slimgraph.lowering import relax_import

    class DepthwiseProjection(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(64, 64, 3, stride=stride, padding=1, groups=64)
            self.project = nn.Conv2d(64, 32, 1)

        def forward(self, x, shortcut):
            y = self.project(torch.clamp(self.depthwise(x), 0, 6))
            return y + shortcut if residual else y

    torch.manual_seed(size)
    out = -(-size // stride)
    inputs = (torch.randn(1, 64, size, size), torch.randn(1, 32, out, out))
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    compiled = slimgraph.compile(DepthwiseProjection().eval(), inputs, target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4 and not compiled.report.lowering_notes
    (script,) = [f.script() for _, f in compiled.lowered.functions_items() if "conv2d_blocked" in str(f)]
    assert script.count(f'"{DEPTHWISE_ATTR}"') == 4 and script.count("T.parallel(") == 1  # 2 convs: init, update
    assert re.search(r"for \w+ in T\.parallel\(T\.int64\(2\)\)", script)  # a band of rows per thread
    after_parallel = script[script.index("T.parallel("):]
    assert after_parallel.index('T.sblock("conv2d_blocked_update")') < after_parallel.index("conv2d_blocked1_update")
    monkeypatch.setattr(relax_import, "DEPTHWISE_PROJECTION", False)
    apart = slimgraph.compile(DepthwiseProjection().eval(), inputs, target=AVX512_TARGET, check=True)
    assert len([f for _, f in apart.lowered.functions_items() if "conv2d_blocked" in str(f)]) == 2


def test_a_depthwise_conv_whose_channels_take_no_block_stays_apart_from_its_projection(monkeypatch):
    """6 channels: no block of 4 or more divides them, so the depthwise conv stays NCHW (its own kernel, the NCHW
    rule) and is not merged with the 1x1 conv after it, which no fused rule would then take; outputs as PyTorch's."""
    class SixChannels(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
            self.project = nn.Conv2d(6, 16, 1)

        def forward(self, x):
            return self.project(torch.clamp(self.depthwise(x), 0, 6))

    torch.manual_seed(0)
    monkeypatch.setenv("SLIMGRAPH_BLOCKED_LAYOUT", "1")
    compiled = slimgraph.compile(SixChannels().eval(), (torch.randn(1, 6, 14, 14),), target=AVX512_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4 and not compiled.report.lowering_notes
    scripts = [f.script() for _, f in compiled.lowered.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert len([s for s in scripts if "grouped_conv2d" in s and "conv2d_blocked" not in s]) == 1
