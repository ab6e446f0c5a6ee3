"""How the packed conv (lowering/conv_packed.py) spreads its memory traffic over the threads and the
caches: weights in chunks, padding and input copies per thread, bands of rows, split sums. Each
test reads the scheduled loop nest and checks the outputs against PyTorch."""
import re

import pytest

import slimgraph
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import lower
from slimgraph.tests.test_cpu_schedules import AVX2_TARGET, conv_graph


def avx2_target(cores: int) -> str:
    return '{"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx2", "+fma"], "num-cores": %d}' % cores


@pytest.mark.parametrize("batch, cin, cout, size, stride, chunks", [
    (1, 512, 32, 11, 2, 128),   # 4 x 8 outputs x 512 x 9 x 4 B = 576 KiB a task: 4 inputs a chunk
    (2, 480, 32, 15, 2, 80),    # batch 2, 480 inputs: 540 KiB a task, 6 inputs a chunk
    (1, 128, 64, 13, 2, None),  # 8 outputs x 128 x 9 x 4 B = 36 KiB a task: no chunks
])
def test_a_conv_with_large_task_weights_goes_through_them_in_chunks(batch, cin, cout, size, stride, chunks):
    """The chunk loop sits outside the rows (the conv's update loop nest starts with the chunks, then
    the output rows) and the epilogue follows the last chunk; the outputs match PyTorch. AVX2 target:
    8 lanes, 12 accumulators, so the task sizes above hold on any x86 host."""
    graph = conv_graph(batch, cin, cout, size, 3, stride, 1, 1)
    compiled = slimgraph.compile(graph, target=AVX2_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-3
    _, optimized, _ = lower(graph, resolve_target(AVX2_TARGET).tvm_target())
    (script,) = [f.script() for gv, f in optimized.functions_items() if "conv2d_packed" in f.script()]
    init_to_update = script[script.index('sblock("conv2d_packed_init")'):script.index('sblock("conv2d_packed_update")')]
    update_loops = init_to_update.split("T.grid(", 1)[1]  # (each row then prefetches part of the next chunk)
    out_rows = (size - 1) // stride + 1
    assert update_loops.startswith(f"T.int64({chunks}), T.int64({out_rows})") == (chunks is not None)


@pytest.mark.parametrize("batch, cin, size, stride, cores", [
    (1, 64, 55, 2, 2),   # ResNet-18's first stride-2 conv (56 x 56 -> 28 x 28)
    (2, 20, 9, 1, 3),    # batch 2, three threads, channels no block divides
    (1, 16, 13, 2, 1),   # one core: the padding stays one shared parallel pass
])
def test_a_padded_conv_pads_its_input_once_per_thread(batch, cin, size, stride, cores):
    """With T > 1 threads the parallel loop is one share per thread, and the padding block runs
    inside it (each thread pads the whole input into its own buffer, allocated in the parallel
    loop's body); with one core the padding is its own parallel loop before the conv's."""
    target = avx2_target(cores)
    graph = conv_graph(batch, cin, 24, size, 3, stride, 1, 1)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    (script,) = [f.script() for gv, f in optimized.functions_items() if "conv2d_packed" in f.script()]
    parallel_loops = re.findall(  # (indent, extent, the first block under the parallel loop)
        r"^( *)for \w+ in T\.parallel\(T\.int64\((\d+)\)\):\n\1    for .*\n(?:.*\n){0,3}? *with T\.sblock\(\"(\w+)\"\)",
        script, re.MULTILINE)
    blocks_under_parallel = {(int(extent), block) for _, extent, block in parallel_loops}
    if cores > 1:
        assert (cores, "pad_temp") in blocks_under_parallel
    else:
        assert all(block != "pad_temp" or extent != cores for extent, block in blocks_under_parallel)
        assert script.index("pad_temp[") < script.index("conv2d_packed_init")


@pytest.mark.parametrize("cin, cout, size, kernel, stride, padding, rows_first", [
    (64, 128, 55, 1, 2, 0, True),    # ResNet's downsample: 32 KB of weights, 770 KB of input
    (64, 128, 55, 3, 2, 1, True),    # its stride-2 3x3 conv at 56x56: 288 KB of weights
    (64, 128, 55, 1, 1, 0, False),   # stride 1: channel blocks first (what a depthwise conv after it splits)
    (128, 256, 13, 3, 2, 1, False),  # weights (1.2 MB) larger than the input (91 KB)
])
def test_a_strided_conv_with_small_weights_splits_its_rows_among_the_threads(cin, cout, size, kernel, stride,
                                                                             padding, rows_first):
    """The parallel loop fuses (oh, coo) with the rows outside, so a thread's share is a band of rows
    (the output row is the fused index // the channel blocks); otherwise (coo, oh)."""
    graph = conv_graph(1, cin, cout, size, kernel, stride, padding, 1)
    compiled = slimgraph.compile(graph, target=AVX2_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-3
    _, optimized, _ = lower(graph, resolve_target(AVX2_TARGET).tvm_target())
    (script,) = [f.script() for gv, f in optimized.functions_items() if "conv2d_packed" in f.script()]
    out_rows = (size + 2 * padding - kernel) // stride + 1
    row = re.search(r'sblock\("conv2d_packed_init"\):\n(?:.*\n)*? +v1 = T\.axis\.spatial\(T\.int64\(%d\), (.*)\)\n'
                    % out_rows, script).group(1)
    assert (" // " in row and " % " not in row) == rows_first, row


@pytest.mark.parametrize("batch, width, stride, cores, copies", [
    (1, 14, 1, 2, True),    # MobileNet's 14x14 layers: one share per thread, each copying the input first
    (2, 7, 1, 4, True),     # batch 2 over 4 threads
    (1, 14, 1, 1, False),   # one core: nothing to share
    (1, 28, 1, 2, False),   # longer rows: read in place
    (1, 14, 2, 2, False),   # ResNet's stride-2 downsample reads a quarter of its input: in place
])
def test_a_pointwise_conv_with_short_rows_copies_its_input_per_thread(batch, width, stride, cores, copies):
    """A 1x1 conv on short rows: the parallel loop is one share per thread, and each share copies the
    whole input into its own buffer (allocated inside the parallel loop) before reading it; not when
    a stride skips most of the input."""
    target = avx2_target(cores)
    size = stride * width - 1  # conv_graph's maps are size x (size + 1)
    graph = conv_graph(batch, 96, 64, size, 1, stride, 0, 1)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    (script,) = [f.script() for gv, f in optimized.functions_items() if "conv2d_packed" in f.script()]
    assert ("x_global[" in script) == copies
    assert (f"T.parallel(T.int64({cores}))" in script) == copies


@pytest.mark.parametrize("batch, cin, cout, width, cores, splits", [
    (1, 96, 16, 56, 2, True),    # a projection (MobileNet's 96 -> 24 at 56x56): one part per thread
    (2, 96, 32, 7, 3, True),     # batch 2, three threads
    (1, 97, 16, 14, 2, False),   # input channels the threads do not divide: the input copied instead
    (1, 32, 32, 56, 2, False),   # as many inputs as outputs: no split
    (1, 96, 16, 56, 1, False),   # one core
])
def test_a_projection_splits_its_input_channels_among_the_threads(batch, cin, cout, width, cores, splits):
    """out = epilogue(sum over t of R[t]), R[t] summing thread t's part of the input channels: a
    (cores, ..) buffer of partial outputs, each part's tasks in parallel, and the same result."""
    target = avx2_target(cores)
    graph = conv_graph(batch, cin, cout, width - 1, 1, 1, 0, 1)
    compiled = slimgraph.compile(graph, target=target, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    _, optimized, _ = lower(graph, resolve_target(target).tvm_target())
    (script,) = [f.script() for gv, f in optimized.functions_items() if "conv2d_packed" in f.script()]
    partial = re.search(r"conv2d_packed_intermediate_rf = T.sblock_alloc_buffer\(\(T.int64\((\d+)\)", script)
    assert (partial is not None and int(partial.group(1)) == cores) == splits
    assert ("x_global[" in script) == (not splits and cores > 1 and width <= 14)
