"""Build a lowered Relax module into an executable for a target."""
from __future__ import annotations

from .targets import TargetSpec


def build(mod, spec: TargetSpec):
    """tvm.compile with the VM lowering pipeline; fusion and schedules were already decided by
    `lowering.lower`. A CUDA build compiles its kernels into a device binary here (codegen.cuda)
    and fails, naming the cause, when it produced no CUDA module."""
    import tvm

    target = spec.tvm_target()
    if spec.device == "cuda":
        from .cuda import CudaError, cuda_modules, enable_cuda_codegen

        enable_cuda_codegen()
    with target:
        executable = tvm.compile(mod, target, relax_pipeline="default")
    if spec.device == "cuda" and not cuda_modules(executable):
        raise CudaError(f"the build for {spec.name} produced no CUDA module: the kernels became host code")
    return executable
