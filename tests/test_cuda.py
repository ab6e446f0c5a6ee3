"""CUDA libraries: every built-in model builds for sm_90 into a library whose fatbin holds an sm_90
cubin, with dlight's GPU rules named per kernel; `dump --source` shows the kernels. Building needs
nvcc (the CUDA toolkit), not a GPU: without nvcc these tests skip. Running a library needs an
NVIDIA GPU: those tests skip without one, and the refusal to run is tested where there is none."""
import contextlib
import copy
import json
import re
import tarfile

import numpy as np
import pytest
import torch

import slimgraph
from slimgraph.cli import main
from slimgraph.codegen import cuda
from slimgraph.codegen.targets import resolve_target
from slimgraph.codegen.tuning import TuningOptions
from slimgraph.ir.errors import SlimgraphError
from slimgraph.runtime import CompiledModel

from .conftest import MODEL_NAMES, imported_model
from .test_cli import run_cli

needs_nvcc = pytest.mark.skipif(cuda.find_nvcc() is None, reason="CUDA builds need nvcc (the CUDA toolkit)")
HAS_GPU = cuda.gpu_present()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU with its driver")


@needs_nvcc
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builtin_models_build_an_sm90_device_binary(name, tmp_path):
    module, inputs, graph = imported_model(name)
    compiled = slimgraph.compile(graph, target="cuda", output=tmp_path / "model.so", check=HAS_GPU)
    images = cuda.fatbin_images(tmp_path / "model.so")
    assert ("cubin", "sm_90") in images
    assert cuda.CUDA_SOURCE_MARK not in (tmp_path / "model.so").read_bytes()  # a binary, not source to JIT
    metadata = json.loads((tmp_path / "model.json").read_text())
    assert metadata["target"]["device"] == "cuda" and metadata["target"]["config"]["arch"] == "sm_90"
    rules = {note.split("GPU rule ")[1] for note in compiled.report.lowering_notes if "GPU rule" in note}
    assert len([n for n in compiled.report.lowering_notes if "GPU rule" in n]) == len(compiled.report.kernels)
    assert "Matmul" in rules  # convs and linears take the tiled GEMM rule, not the one-thread fallback
    if HAS_GPU:
        assert compiled.report.max_abs_diff < 1e-3
    else:
        assert "no NVIDIA GPU" in compiled.report.check_note


@needs_nvcc
def test_other_architecture_and_dump_source(capsys):
    assert main(["dump", "digit_cnn", "--source", "--target", "cuda:sm_80"]) == 0
    captured = capsys.readouterr()
    kernels = [line for line in captured.out.splitlines() if line.startswith('extern "C" __global__')]
    assert kernels and all("_kernel(" in line for line in kernels)
    assert "digit_cnn for cuda:sm_80" in captured.err and "GPU rule Matmul" in captured.err


@needs_nvcc
def test_a_library_without_the_named_architecture_is_refused(tmp_path):
    slimgraph.compile("digit_cnn", target="cuda:sm_80", output=tmp_path / "m.so", check=False,
                      dump_dir=tmp_path / "dump")
    assert cuda.fatbin_images(tmp_path / "m.so") == [("cubin", "sm_80")]
    assert '__global__ void' in (tmp_path / "dump" / "kernels.cu").read_text()  # --dump-dir keeps the CUDA C
    with pytest.raises(cuda.CudaError, match="no device binary for sm_90 .*cubin sm_80"):
        cuda.check_device_binary(tmp_path / "m.so", "sm_90")


def test_a_cpu_library_has_no_device_binary(tmp_path):
    slimgraph.compile("digit_cnn", target="x86", output=tmp_path / "cpu.so", check=False, dump_dir=tmp_path / "dump")
    assert "vfmadd" in (tmp_path / "dump" / "kernels.s").read_text()  # --dump-dir keeps the assembly
    with pytest.raises(cuda.CudaError, match="no CUDA module"):
        cuda.check_device_binary(tmp_path / "cpu.so")


@needs_nvcc
@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the library runs")
def test_running_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert main(["compile", "digit_cnn", "--target", "cuda", "-o", str(tmp_path / "m.so"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.so")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no NVIDIA GPU" in err and "digit_cnn" in err
    with pytest.raises(SlimgraphError, match="no NVIDIA GPU"):
        slimgraph.load(tmp_path / "m.so")(np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("built, gpu, runs", [
    ("sm_90", "sm_90", True), ("sm_80", "sm_86", True), ("sm_86", "sm_80", False), ("sm_80", "sm_90", False),
    ("sm_90a", "sm_90", True), ("sm_90a", "sm_100", False), ("sm_100f", "sm_103", True), ("sm_100", "sm_120", False),
])
def test_a_cubin_runs_on_later_gpus_of_its_major_version_only(built, gpu, runs):
    assert cuda.cubin_runs_on(built, gpu) is runs


@needs_nvcc
def test_a_library_for_another_gpu_generation_is_built_not_run(tmp_path, monkeypatch, capsys):
    """An sm_80 cubin on an sm_90 GPU (as on the H200 these tests also run on): the compile succeeds and
    says why it did not check; running says it in one line, naming the target to build instead."""
    monkeypatch.setattr(cuda, "gpu_arch", lambda: "sm_90")
    compiled = slimgraph.compile("digit_cnn", target="cuda:sm_80", output=tmp_path / "m.so")
    assert compiled.report.max_abs_diff is None
    assert "its device code is for sm_80 and this machine's GPU is sm_90" in compiled.report.check_note
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.so")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target cuda:sm_90" in err and "digit_cnn" in err
    monkeypatch.setattr(cuda, "gpu_arch", lambda: "sm_86")  # a GPU it runs on: load's stand-in sees it
    stand_in = CompiledModel(None, json.loads((tmp_path / "m.json").read_text()))
    assert stand_in.runnable and stand_in.why_not_runnable is None


@contextlib.contextmanager
def full_fp32_on_the_gpu():
    """PyTorch's GPU reference in fp32 proper: cuDNN's convolutions default to TF32 (10-bit mantissas)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@needs_gpu
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builtin_models_match_pytorch_on_the_gpu(name, tmp_path):
    module, inputs, _ = imported_model(name)
    slimgraph.compile(module, inputs, target="cuda", output=tmp_path / "m.so")
    outputs = slimgraph.load(tmp_path / "m.so")(*inputs)
    with torch.no_grad(), full_fp32_on_the_gpu():
        expected = copy.deepcopy(module).cuda()(*[i.cuda() for i in inputs])
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got.numpy(), want.cpu().numpy(), atol=1e-3, rtol=1e-3)


@needs_nvcc
def test_default_output_is_named_after_the_target(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "digit_cnn", "--target", "cuda:sm_80", "--quiet"]) == 0
    assert (tmp_path / "out" / "digit_cnn-cuda-sm_80.so").is_file()


def test_bad_cuda_targets_are_one_line_errors(capsys):
    with pytest.raises(SlimgraphError, match="'sm90' is not of the form sm_XX"):
        resolve_target("cuda:sm90")
    assert resolve_target("cuda:arch=sm_86").config["arch"] == "sm_86"
    assert resolve_target("cuda").config["arch"] == "sm_90" and resolve_target("cuda").name == "cuda"
    assert main(["compile", "digit_cnn", "--target", "cuda:ampere", "--quiet"]) == 1
    assert "'ampere' is not of the form sm_XX" in capsys.readouterr().err


def test_missing_nvcc_names_the_toolkit(monkeypatch):
    monkeypatch.setattr(cuda, "find_nvcc", lambda: None)
    with pytest.raises(cuda.CudaError, match="need NVIDIA's nvcc .*CUDA toolkit 13"):
        slimgraph.compile("digit_cnn", target="cuda", check=False)


@needs_nvcc
def test_the_stand_in_driver_is_only_used_without_a_real_one():
    how = cuda.enable_cuda_codegen()
    assert how == ("driver" if HAS_GPU else "stub driver")


@needs_nvcc
@needs_gpu
def test_tuning_on_the_gpu_fills_a_database_that_later_builds_use(tmp_path, capsys):
    database = tmp_path / "db"
    code, out, _ = run_cli(capsys, "tune", "digit_cnn", "--target", "cuda", "--trials", "16", "--db", str(database),
                           "--runs", "0", "--quiet")
    assert code == 0, out
    records = [json.loads(line) for line in (database / "database_tuning_record.json").read_text().splitlines()]
    assert len(records) > 5 and all(record[2]["kind"] == "cuda" and record[2]["arch"] == "sm_90"
                                    for _, record in records)
    compiled = slimgraph.compile("digit_cnn", target="cuda", tuning=TuningOptions(database=database),
                                 output=tmp_path / "m.so")
    assert compiled.report.tuning.applied == compiled.report.kernels  # MetaSchedule's, or dlight's if it won
    assert compiled.report.max_abs_diff < 1e-3
    assert ("cubin", "sm_90") in cuda.fatbin_images(tmp_path / "m.so")


@needs_nvcc
def test_cuda_tuning_candidates_compile_to_device_code(tmp_path):
    """The half of CUDA tuning that needs no GPU: a MetaSchedule candidate for a conv kernel (its
    CUDA design space, post-processed as the search does) and dlight's schedule that seeds the
    search both build, in the tuning builder's workers, into sm_90 cubins."""
    from tvm.s_tir import meta_schedule as ms

    from slimgraph.codegen import tuning
    from slimgraph.codegen.tuning_measure import rule_schedule, workload_of
    from slimgraph.lowering import lower

    target = resolve_target("cuda").tvm_target()
    kernels = {}
    lower(imported_model("digit_cnn")[2], target, before_rules=lambda mod: kernels.update(tuning.kernels(mod)) or mod)
    name = next(n for n in kernels if "conv2d" in n)
    workload = workload_of(kernels[name])
    for seed in range(20):  # a sampled candidate that MetaSchedule's GPU checks (VerifyGPUCode, ...) accept
        context = ms.TuneContext(mod=workload, target=target, space_generator="post-order-apply", task_name=name,
                                 rand_state=seed)
        candidate = context.generate_design_space()[0]
        if all(postproc.apply(candidate) for postproc in context.space_generator.postprocs):
            break
    else:
        pytest.fail(f"no candidate of {name} passed MetaSchedule's post-processors in 20 samples")
    with target:
        dlight = rule_schedule(workload["main"], target)
    built = tuning.candidate_builder(target, max_workers=1).build(
        [ms.builder.BuilderInput(schedule.mod, target) for schedule in (candidate, dlight)])
    for result in built:
        assert result.error_msg is None, result.error_msg[-500:]
        with tarfile.open(result.artifact_path) as archive:  # the candidate as the runner gets it
            (tmp_path / "devc.o").write_bytes(archive.extractfile("devc.o").read())
        assert cuda.fatbin_images(tmp_path / "devc.o") == [("cubin", "sm_90")]


def test_cuda_records_are_kept_apart_by_architecture():
    from slimgraph.codegen import tuning

    sm90, sm80 = (resolve_target(name).tvm_target() for name in ("cuda", "cuda:sm_80"))
    assert tuning.same_machine_kind(sm90, resolve_target("cuda").tvm_target())
    assert not tuning.same_machine_kind(sm80, sm90)  # an sm_80 record is not applied to an sm_90 build


def _gpu_schedule_of(*tensors):
    """(rule name, scheduled TIR text) of the PrimFunc computing tensors[-1] from the others, for sm_90."""
    from tvm import te

    from slimgraph.codegen.targets import cuda as cuda_target
    from slimgraph.lowering.gpu_schedules import first_gpu_schedule

    target = cuda_target().tvm_target()
    with target:
        rule, schedule = first_gpu_schedule(te.create_prim_func(list(tensors)), target)
    return rule, schedule.mod.script()


def _depthwise_relu6(channels, size):
    from tvm import te, topi

    data = te.placeholder((1, channels, size + 2, size + 2), name="x")
    weight = te.placeholder((channels, 1, 3, 3), name="w")
    return data, weight, topi.clip(topi.nn.depthwise_conv2d_nchw(data, weight, 1, 0, 1), 0.0, 6.0)


def test_a_depthwise_conv_gets_one_gpu_thread_per_output():
    """3x3 depthwise + ReLU6, 32 x 112 x 112 outputs of 9 terms each: SmallReduction gives 401,408
    threads in blocks of 1024, one kernel, each sum in a register (dlight's rules gave a block of
    8 or 256 threads to every output, 9 of them working)."""
    rule, text = _gpu_schedule_of(*_depthwise_relu6(32, 112))
    assert rule == "SmallReduction"
    bindings = re.findall(r'T\.thread_binding\((\d+), thread="(\w+\.x)"', text)
    assert bindings == [("392", "blockIdx.x"), ("1024", "threadIdx.x")]  # one kernel: the ReLU6 inside
    assert 'scope="local"' in text


@pytest.mark.parametrize("channels, size", [(32, 112), (192, 14), (5, 3)])
def test_the_thread_per_output_schedule_computes_the_depthwise_conv(channels, size):
    """The scheduled loops, with each thread binding run as a serial loop on the CPU, against
    PyTorch: 37,632 or 45 outputs leave the last block partly idle (its bound test is checked)."""
    import tvm

    rule, text = _gpu_schedule_of(*_depthwise_relu6(channels, size))
    assert rule == "SmallReduction"
    serial = re.sub(r'T\.thread_binding\((\d+), thread="[\w.]+"\)', r"T.serial(\1)", text)
    kernel = tvm.compile(tvm.script.from_source(serial), target="llvm")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, size + 2, size + 2), dtype=np.float32)
    w = rng.standard_normal((channels, 1, 3, 3), dtype=np.float32)
    got = tvm.runtime.tensor(np.full((1, channels, size, size), np.nan, np.float32))
    kernel["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), got)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=channels).clamp(0, 6)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_a_long_reduction_keeps_a_block_of_threads_per_output():
    """Sums of 3 x 7 x 7 = 147 terms per output (a 7x7 conv over 3 channels, no GEMM rule taking it
    in this form) stay with a cooperative rule: more terms than SMALL_REDUCTION."""
    from tvm import te

    data = te.placeholder((8, 3, 7, 7), name="x")
    c, i, j = te.reduce_axis((0, 3), "c"), te.reduce_axis((0, 7), "i"), te.reduce_axis((0, 7), "j")
    out = te.compute((8,), lambda n: te.sum(data[n, c, i, j] * data[n, c, i, j], axis=[c, i, j]), name="sq")
    rule, _ = _gpu_schedule_of(data, out)
    assert rule in ("Reduction", "GeneralReduction")
