"""CUDA libraries: a real device binary at build time, on a machine with or without a GPU.

TVM's CUDA codegen hands the generated CUDA C to `libtvm_runtime_cuda.so`, which compiles it
through TVM's Python callback (nvcc -> fatbin here). That library links against the CUDA
driver (`libcuda.so.1`); on a build machine without a GPU driver it cannot load, and TVM then
silently embeds the CUDA *source* instead, leaving the compile to whoever loads the library.
So when no driver is installed we load a stand-in `libcuda.so.1` (nine entry points that all
answer CUDA_ERROR_NO_DEVICE; built once with the host C compiler into the cache directory):
the CUDA runtime library loads, nvcc runs at build time, and the shipped .so holds an sm_XX
fatbin that loads with no compiler on the device. Nothing ever launches through the stand-in:
with it, `tvm.cuda(0).exist` is False and running a CUDA library is refused.

`fatbin_images(library)` reads an exported library back and lists the device images in its
fatbins, so a build that fell back to host code or to source is caught, not shipped.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from slimgraph.ir.errors import SlimgraphError

from .cache import cache_dir

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)  # the header of every fatbin (fatbinary.h)
CUDA_SOURCE_MARK = b'extern "C" __global__'  # TVM's kernels in embedded CUDA source
DRIVER_ENTRY_POINTS = ("cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx", "cuModuleGetFunction",
                       "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled")
STUB_SOURCE = "\n".join([
    "/* slimgraph: a stand-in libcuda.so.1 for building CUDA libraries without a GPU driver. */",
    "#define CUDA_ERROR_NO_DEVICE 100",
    *[f"int {name}(void) {{ return CUDA_ERROR_NO_DEVICE; }}" for name in DRIVER_ENTRY_POINTS],
    'int cuGetErrorName(int e, const char **s) { if (s) *s = "CUDA_ERROR_NO_DEVICE"; return 0; }',
    'int cuGetErrorString(int e, const char **s) { if (s) *s = "no CUDA driver (slimgraph build stub)"; '
    "return 0; }",
    "",
])


class CudaError(SlimgraphError):
    """A CUDA library cannot be built here (no CUDA compiler) or has no device binary."""


def find_nvcc() -> str | None:
    """nvcc from $CUDA_PATH/bin, PATH, or /usr/local/cuda/bin."""
    candidates = [Path(os.environ["CUDA_PATH"]) / "bin" / "nvcc"] if os.environ.get("CUDA_PATH") else []
    found = shutil.which("nvcc")
    candidates += [Path(found)] if found else []
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    return next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def _real_driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


def _stub_driver() -> Path:
    """Build (once) the stand-in libcuda.so.1 into the cache directory."""
    folder = cache_dir("cuda-stub") / hashlib.sha256(STUB_SOURCE.encode()).hexdigest()[:12]  # new stub, new folder
    library = folder / "libcuda.so.1"
    if library.is_file():
        return library
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise CudaError("building a CUDA library without a GPU driver needs a C compiler (install Debian's gcc)")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "libcuda_stub.c"
    source.write_text(STUB_SOURCE)
    staged = folder / f".libcuda.so.1.{os.getpid()}"
    result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(staged),
                             str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CudaError(f"cannot build the stand-in CUDA driver with {compiler}: {result.stderr.strip()[:200]}")
    os.replace(staged, library)
    return library


def enable_cuda_codegen() -> str:
    """Make TVM compile CUDA kernels into a device binary in this process; returns how ("driver" /
    "stub driver"). Raises CudaError naming what to install when no CUDA compiler is found."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise CudaError("CUDA targets need NVIDIA's nvcc on PATH or in $CUDA_PATH/bin: install NVIDIA's CUDA "
                        "toolkit 13.x (TVM's CUDA runtime links libcudart.so.13)")
    os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    os.environ["PATH"] = f"{Path(nvcc).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return load_cuda_runtime()


def load_cuda_runtime() -> str:
    """Load TVM's CUDA runtime (libtvm_runtime_cuda.so: CUDA devices, the fatbin loader, the CUDA
    codegen's compile hook) into this process, over the stand-in driver where no real one is
    installed; returns "driver" or "stub driver". Raises CudaError when it cannot load."""
    import tvm
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    if "tvm_runtime_cuda" in _LOADED_LIBS:
        return "driver" if tvm.cuda(0).exist else "stub driver"
    how = "driver"
    if not _real_driver_present():
        ctypes.CDLL(str(_stub_driver()), mode=ctypes.RTLD_GLOBAL)
        how = "stub driver"
    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(package="tvm", target_name="tvm_runtime_cuda",
                                                           extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL")
    except (OSError, RuntimeError) as exc:
        raise CudaError(f"TVM's CUDA runtime (libtvm_runtime_cuda.so) cannot load: {str(exc)[:200]}; it needs "
                        f"the CUDA 13 runtime libcudart.so.13 (the CUDA toolkit, or pip's "
                        f"nvidia-cuda-runtime)") from exc
    return how


def gpu_present() -> bool:
    """A CUDA GPU with a real driver is usable from this process (TVM's CUDA runtime is loaded for it)."""
    if not _real_driver_present():
        return False
    try:
        import tvm

        load_cuda_runtime()
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - no CUDA runtime at all
        return False


def gpu_arch() -> str | None:
    """The SM architecture of the first CUDA GPU ("sm_90" for an H100 / H200), None without one."""
    if not gpu_present():
        return None
    import tvm

    return "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")


def cubin_runs_on(library_arch: str, gpu: str) -> bool:
    """Whether a cubin built for `library_arch` runs on a GPU of architecture `gpu` (both "sm_XY").

    CUDA's rule for machine code (no PTX is embedded to be compiled on load): a cubin for sm_XY runs
    on GPUs of the same major version X and a minor version of at least Y (a family target such
    as sm_100f likewise); one for an architecture-specific target (sm_90a) on exactly that GPU."""
    built, present = (re.fullmatch(r"sm_(\d+?)(\d)([af]?)", arch) for arch in (library_arch, gpu))
    if built is None or present is None:
        return False
    if built.group(3) == "a":
        return built.group(1, 2) == present.group(1, 2)
    return built.group(1) == present.group(1) and int(built.group(2)) <= int(present.group(2))


def fatbin_images(library: str | os.PathLike) -> list[tuple[str, str]]:
    """The images in every fatbin of a library file: (kind, arch), e.g. ("cubin", "sm_90").

    fatbin layout (CUDA's fatbinary.h): a 16-byte header (magic, version, header size, payload
    size), then entries, each a header (kind: 1 PTX / 2 ELF cubin; its size at byte 4, the
    payload's padded size at byte 8, the SM version at byte 28) followed by its payload."""
    data = Path(library).read_bytes()
    images, start = [], data.find(FATBIN_MAGIC)
    while start >= 0:
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
        offset, end = start + header_size, start + header_size + fat_size
        while offset + 32 <= min(end, len(data)):
            kind, _, entry_header, padded = struct.unpack_from("<HHIQ", data, offset)
            (sm,) = struct.unpack_from("<I", data, offset + 28)
            images.append(({1: "ptx", 2: "cubin"}.get(kind, f"kind{kind}"), f"sm_{sm}"))
            if entry_header == 0:
                break
            offset += entry_header + padded
        start = data.find(FATBIN_MAGIC, max(end, start + 1))
    return images


def check_device_binary(library: str | os.PathLike, arch: str | None = None) -> list[tuple[str, str]]:
    """Raise unless the exported library carries a CUDA device binary (for `arch`, when given,
    matching its SM number); returns the fatbin images."""
    images = fatbin_images(library)
    if not images:
        source = CUDA_SOURCE_MARK in Path(library).read_bytes()
        what = "CUDA source to be compiled on load" if source else "no CUDA module (the kernels became host code)"
        raise CudaError(f"'{library}' holds {what}, not a device binary; the CUDA build is broken")
    number = arch.removeprefix("sm_").rstrip("af") if arch else None
    if number and not any(sm == f"sm_{number}" for _, sm in images):
        found = ", ".join(f"{kind} {sm}" for kind, sm in images)
        raise CudaError(f"'{library}' holds no device binary for {arch} (it has: {found})")
    return images


def cuda_modules(executable) -> list:
    """The CUDA modules imported by a built executable (empty when the kernels became host code)."""
    found, stack = [], list(executable.mod.imports)
    while stack:
        module = stack.pop()
        if module.kind == "cuda":
            found.append(module)
        stack.extend(module.imports)
    return found


def cuda_source(executable) -> str:
    """The generated CUDA C of a built executable's kernels."""
    return "\n".join(str(module.inspect_source("")) for module in cuda_modules(executable))
