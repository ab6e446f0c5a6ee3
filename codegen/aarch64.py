"""aarch64 libraries from an x86 host: cross-linking, and running them without Python.

A library for an aarch64 target is linked with Debian's `aarch64-linux-gnu-g++`. It runs on
the device with the TVM runtime alone: `slimgraph-run` (codegen/runner/slimgraph_run.cc, about
150 lines of C++) loads it with the aarch64 `libtvm_runtime.so` and `libtvm_ffi.so` taken from
the `apache-tvm` / `apache-tvm-ffi` wheels of the versions installed here, so the runtime
matches the compiler. On an x86 host the same runner runs under `qemu-aarch64` (user-mode
emulation): outputs are exact, timings are the emulator's, not ARM speed.

The runtime libraries and the runner are built once per TVM version into the cache
(`$XDG_CACHE_HOME/slimgraph/aarch64-runtime/...`).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np

from slimgraph.ir.errors import SlimgraphError

from .cache import cache_dir

CROSS_COMPILER = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"  # where Debian's cross toolchain keeps the aarch64 libc
RUNNER_SOURCE = Path(__file__).with_name("runner") / "slimgraph_run.cc"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
RUNTIME_LIBRARIES = {"apache-tvm": "tvm/lib/libtvm_runtime.so", "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so"}


class CrossToolError(SlimgraphError):
    """A tool needed for an aarch64 library (cross compiler, qemu, runtime wheels) is missing or fails."""


def is_aarch64(config: dict) -> bool:
    return config.get("kind") == "llvm" and str(config.get("mtriple", "")).startswith(("aarch64", "arm64"))


def host_is_aarch64() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def cross_compiler() -> str:
    """The aarch64 C++ compiler (the host's own g++ on an aarch64 host)."""
    if host_is_aarch64():
        return shutil.which("g++") or "g++"
    found = shutil.which(CROSS_COMPILER)
    if found is None:
        raise CrossToolError(f"cross compiler '{CROSS_COMPILER}' not found: install Debian's g++-aarch64-linux-gnu "
                             "(apt-get install g++-aarch64-linux-gnu) to build aarch64 libraries")
    return found


def emulator() -> list[str]:
    """The command prefix that runs an aarch64 program here: nothing on aarch64, qemu elsewhere."""
    if host_is_aarch64():
        return []
    found = shutil.which(QEMU)
    if found is None:
        raise CrossToolError(f"'{QEMU}' not found: install Debian's qemu-user (apt-get install qemu-user) "
                             "to run aarch64 libraries on this host")
    return [found, "-L", SYSROOT]


def can_run() -> bool:
    try:
        cross_compiler(), emulator()
    except CrossToolError:
        return False
    return True


def _versions() -> dict[str, str]:
    return {name: package_metadata.version(name) for name in RUNTIME_LIBRARIES}


def _cache_root() -> Path:
    return cache_dir("aarch64-runtime")


def runner_dir() -> Path:
    """A folder with `slimgraph-run` and `lib/` (the aarch64 TVM runtime), built on first use."""
    versions = _versions()
    folder = _cache_root() / "-".join(f"{name}-{version}" for name, version in versions.items())
    if (folder / "slimgraph-run").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        _fetch_runtime(versions, staging / "lib")
        _build_runner(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: use theirs
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _fetch_runtime(versions: dict[str, str], lib: Path) -> None:
    wheels = lib.parent / "wheels"
    requirements = [f"{name}=={version}" for name, version in versions.items()]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", WHEEL_PLATFORM, "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
               "--dest", str(wheels), *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CrossToolError(f"cannot download the aarch64 TVM runtime wheels ({', '.join(requirements)}): {last}")
    lib.mkdir(parents=True)
    for name, member in RUNTIME_LIBRARIES.items():
        prefix = name.replace("-", "_") + "-"
        wheel = next((w for w in wheels.glob("*.whl") if w.name.startswith(prefix)), None)
        if wheel is None:
            raise CrossToolError(f"the aarch64 wheel of {name} has no file named {prefix}*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (lib / Path(member).name).write_bytes(archive.read(member))
    shutil.rmtree(wheels)


def _build_runner(folder: Path) -> None:
    import tvm_ffi

    include = Path(tvm_ffi.__file__).parent / "include"
    command = [cross_compiler(), "-std=c++17", "-O2", str(RUNNER_SOURCE), "-o", str(folder / "slimgraph-run"),
               f"-I{include}", f"-I{include / 'dlpack'}", f"-L{folder / 'lib'}", "-ltvm_ffi", "-ltvm_runtime",
               "-Wl,-rpath,$ORIGIN/lib"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise CrossToolError(f"building the aarch64 runner failed: {first}")


def run_library(library: str | os.PathLike, inputs: list[np.ndarray], repeat: int = 0,
                threads: int | None = None) -> tuple[list[np.ndarray], float | None]:
    """Run an aarch64 library on `inputs` with `slimgraph-run` (under qemu on a non-ARM host).

    Returns the outputs and, with `repeat` > 0, the median latency in ms over `repeat` runs.
    """
    runner = runner_dir()
    prefix = emulator()
    with tempfile.TemporaryDirectory(prefix="slimgraph-aarch64-") as work:
        work = Path(work)
        lines = []
        for position, array in enumerate(inputs):
            array = np.ascontiguousarray(array)
            path = work / f"input{position}.bin"
            path.write_bytes(array.tobytes())
            dims = "x".join(str(d) for d in array.shape) or "-"  # "-": a scalar
            lines.append(f"{array.dtype} {dims} {path}")
        (work / "inputs.txt").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "TVM_NUM_THREADS": str(threads or os.cpu_count() or 1)}
        done = subprocess.run([*prefix, str(runner / "slimgraph-run"), str(library), str(work / "inputs.txt"),
                               str(work), str(repeat)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise CrossToolError(f"running '{library}' on aarch64 failed: {last}")
        outputs = []
        for index, line in enumerate((work / "outputs.txt").read_text().splitlines()):
            dtype, dims = line.split()
            shape = tuple(int(d) for d in dims.split("x")) if dims != "-" else ()
            outputs.append(np.fromfile(work / f"output{index}.bin", dtype=dtype).reshape(shape))
    latency = next((float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("latency_ms")), None)
    return outputs, latency
