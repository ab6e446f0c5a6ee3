"""Per-kernel timing: `slimgraph bench` names each kernel with its time and fraction of peak."""
import re

import pytest

import slimgraph
from slimgraph.codegen.kernel_profile import dot_product_ops, peak_gflops, profile_kernels
from slimgraph.codegen.targets import resolve_target
from slimgraph.lowering import kernel_calls
from slimgraph.lowering.int8_kernels import has_vnni

from .test_cli import run_cli


def test_profile_covers_every_kernel_call_with_flops():
    compiled = slimgraph.compile("digit_cnn", check=False)
    calls = kernel_calls(compiled.lowered)
    assert sum(calls.values()) == compiled.report.kernel_launches
    target = resolve_target("x86").tvm_target()
    kernels = profile_kernels(compiled.lowered, target, min_repeat_ms=1, repeat=1)
    assert {k.name for k in kernels} == set(calls)
    assert all(k.seconds > 0 for k in kernels)
    convs = [k for k in kernels if k.flops >= 2 * 32 * 28 * 28 * 9]  # the 3x3 convs: at least 2*C*H*W*9 flops
    assert convs and all(0 < k.gflops < peak_gflops(target) * 1.5 for k in convs)
    totals = [k.total_seconds for k in kernels]
    assert totals == sorted(totals, reverse=True)


def test_peak_follows_the_target():
    avx512 = resolve_target('{"kind": "llvm", "mattr": ["+avx512f"], "num-cores": 2}').tvm_target()
    avx2 = resolve_target('{"kind": "llvm", "mattr": ["+avx2"], "num-cores": 2}').tvm_target()
    assert peak_gflops(avx512, threads=2) == pytest.approx(2 * peak_gflops(avx2, threads=2))
    assert peak_gflops(avx512, threads=2) == pytest.approx(2 * peak_gflops(avx512, threads=1))


def test_bench_command_lists_kernels(capsys):
    code, stdout, _ = run_cli(capsys, "bench", "digit_cnn", "--runs", "3", "--top", "2", "--min-repeat-ms", "1",
                              "--quiet")
    assert code == 0
    assert "% of peak" in stdout and "region_" in stdout
    assert "more kernels" in stdout and "whole model" in stdout


def test_bench_command_times_int8_kernels(capsys):
    """Tensorized (vpdpbusd / sdot) kernels are timed too, their rate in GOP/s against the int8 peak."""
    code, stdout, _ = run_cli(capsys, "bench", "digit_cnn", "--pipeline", "int8", "--runs", "3", "--top", "20",
                              "--min-repeat-ms", "1", "--quiet")
    assert code == 0
    assert "qconv" in stdout and "qdense" in stdout and "whole model" in stdout
    if has_vnni(resolve_target("x86").tvm_target()):
        assert "int8 peak" in stdout and re.search(r"\d\.\d\* ", stdout) and "* int8 kernels: GOP/s" in stdout


@pytest.mark.parametrize("case, multiply_adds", [
    ("pixels-40-outputs-float-out", 40 * 2 * 16 * 16),  # C_out x H x W x C_in: nothing padded
    ("depthwise-dot-32-wide-float-out", 3 * 4 * 32 * 3 * 4),  # C x H x W x kh x 4 taps (the 4th weight is 0)
])
def test_int8_kernels_ops_are_counted_from_their_dot_products(case, multiply_adds):
    from slimgraph.lowering import lower

    from .test_int8_kernels import conv_graph

    target = resolve_target("x86").tvm_target()
    if not has_vnni(target):
        pytest.skip("no VNNI on this host: the integer kernels are not tensorized")
    graph, _ = conv_graph(case)
    _, optimized, _ = lower(graph, target)
    counted = [dot_product_ops(optimized[gv]) for gv in optimized.get_global_vars() if "qconv" in gv.name_hint
               or "qdepthwise" in gv.name_hint]
    assert counted == [2 * multiply_adds]
