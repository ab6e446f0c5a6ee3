"""CUDA libraries: every built-in model builds for sm_90 into a library whose fatbin holds an sm_90
cubin, with dlight's GPU rules named per kernel; `dump --source` shows the kernels. Building needs
nvcc (the CUDA toolkit), not a GPU: without nvcc these tests skip. Running a library needs an
NVIDIA GPU: those tests skip without one, and the refusal to run is tested where there is none."""
import contextlib
import copy
import json
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
