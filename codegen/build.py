"""Build a lowered Relax module into an executable for a target."""
from __future__ import annotations

from .targets import TargetSpec

# TVM's LoopPartition splits a loop whose body tests a condition marked `tirx.likely` into the range
# where the condition holds (no test left) and the rest. The int8 kernels mark the zero-point
# padding of their packed inputs so (lowering.int8_kernels.padded_input): a 7x7 map's row of 49
# pixels padded to 56 is then copied by vector interleaves up to the padding and byte by byte only
# after it, where one test per byte kept the whole copy scalar. Unmarked conditions are left alone.
BUILD_CONFIG = {"s_tir.LoopPartition": {"partition_const_loop": True}}


def build_context(device: str = "cpu"):
    """The PassContext every CPU build of ours runs under (the model, a kernel timed alone, a
    tuning candidate), so that a kernel is the same code wherever it is measured. GPU builds keep
    TVM's defaults: dlight's kernels have none of the CPU kernels' padded copies."""
    import tvm

    if device == "cuda":
        return tvm.transform.PassContext()
    vectorize_nearbyint()
    return tvm.transform.PassContext(config=BUILD_CONFIG)


def vectorize_nearbyint() -> None:
    """Let TVM's VectorizeLoop keep `nearbyint` (round half to even: TOPI's `round`, every int8
    requantization) in vector form, as it does `round` and `floor`: without the op's TVectorizable
    attribute it turns each vectorized epilogue loop back into a scalar one and leaves it to LLVM
    to vectorize again, which LLVM often cannot (MobileNetV2's 56x56 projection with its residual
    add ran 151 scalar roundings per tile: 0.099 ms, 0.051 ms vectorized, same outputs). LLVM's
    nearbyint takes vectors of any width."""
    import tvm

    op = tvm.ir.Op.get("tirx.nearbyint")
    if op.get_attr("TVectorizable") is None:
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


def build(mod, spec: TargetSpec):
    """tvm.compile with the VM lowering pipeline; fusion and schedules were already decided by
    `lowering.lower`. A CUDA build compiles its kernels into a device binary here (codegen.cuda)
    and fails, naming the cause, when it produced no CUDA module."""
    import tvm

    target = spec.tvm_target()
    if spec.device == "cuda":
        from .cuda import CudaError, cuda_modules, enable_cuda_codegen

        enable_cuda_codegen()
    with target, build_context(spec.device):
        executable = tvm.compile(mod, target, relax_pipeline="default")
    if spec.device == "cuda" and not cuda_modules(executable):
        raise CudaError(f"the build for {spec.name} produced no CUDA module: the kernels became host code")
    return executable


SOURCE_FORMATS = ("cuda", "asm", "ll")


def generated_source(executable, spec: TargetSpec, source_format: str = "auto") -> str:
    """The generated code of a built executable: CUDA C for a CUDA target (its kernels), else the
    host code's assembly ("asm") or LLVM IR ("ll"); "auto" picks CUDA on GPUs, assembly on CPUs."""
    from slimgraph.ir.errors import SlimgraphError

    if source_format == "auto":
        source_format = "cuda" if spec.device == "cuda" else "asm"
    if source_format not in SOURCE_FORMATS:
        raise SlimgraphError(f"unknown source format '{source_format}'; choose one of {', '.join(SOURCE_FORMATS)}")
    if source_format == "cuda":
        if spec.device != "cuda":
            raise SlimgraphError(f"target '{spec.name}' generates no CUDA; its source formats are asm and ll")
        from .cuda import cuda_source

        return cuda_source(executable)
    host = [m for m in executable.mod.imports if m.kind == "llvm"]
    return "\n".join(str(m.inspect_source(source_format)) for m in host)
