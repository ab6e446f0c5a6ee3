"""The runtime: `slimgraph.load(path)` returns a callable compiled model.

Inputs are checked against the metadata (count, shape, dtype) before anything runs; outputs
come back as numpy arrays, or as torch tensors when the inputs were torch tensors.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from slimgraph.codegen.artifact import artifact_paths, read_metadata, write_artifact
from slimgraph.ir.errors import SlimgraphError

# TVM halves hardware_concurrency() on x86 ("skip hyper-threads"): 1 thread on a 2-vCPU VM.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))


class InputError(SlimgraphError):
    """Inputs given to a compiled model do not match its metadata."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_json(cls, item: dict) -> "TensorSpec":
        return cls(item["name"], tuple(item["shape"]), item["dtype"])

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


class CompiledModel:
    """A built model: call it, benchmark it, export it. Built by `slimgraph.compile` or `load`.

    A library for another CPU architecture (an aarch64 build on an x86 host) runs through
    `slimgraph-run` under qemu (codegen/aarch64.py): same outputs, the emulator's timings.
    """

    def __init__(self, module, metadata: dict, executable=None, library: Path | None = None):
        import tvm

        self.metadata = metadata
        self.inputs = [TensorSpec.from_json(i) for i in metadata["inputs"]]
        self.outputs = [TensorSpec.from_json(o) for o in metadata["outputs"]]
        self._device = tvm.cuda(0) if metadata["target"].get("device") == "cuda" else tvm.cpu(0)
        self._executable = executable
        self._library = library  # on disk: where it was loaded from or exported to
        self._scratch = None  # a temporary export, for an emulated library built in this process
        self._vm = None
        if module is not None and not self.emulated and self.runnable:
            from tvm.runtime.vm import VirtualMachine

            self._vm = VirtualMachine(module, self._device)
        self.device_images: list[tuple[str, str]] = []  # CUDA: the fatbin's images, read back at export
        self.lowered = None  # the scheduled Relax module, when compiled in this process (slimgraph bench)

    @property
    def arch(self) -> str:
        return self.metadata["target"].get("arch", "x86_64")

    @property
    def executable(self):
        """The built TVM executable (None for a library loaded from disk)."""
        return self._executable

    @property
    def runnable(self) -> bool:
        """False for a CUDA library that cannot run here: no NVIDIA GPU, or one its cubin is not for."""
        return self.why_not_runnable is None

    @property
    def why_not_runnable(self) -> str | None:
        """Why this CUDA library cannot run on this machine, or None when it can (always for CPU builds)."""
        target = self.metadata["target"]
        if target.get("device") != "cuda":
            return None
        from slimgraph.codegen.cuda import cubin_runs_on, gpu_arch

        present = gpu_arch()
        if present is None:
            return "this machine has no NVIDIA GPU with a driver"
        built = target["config"].get("arch", "")
        if not cubin_runs_on(built, present):
            return f"its device code is for {built} and this machine's GPU is {present} (build it with " \
                   f"--target cuda:{present} to run it here)"
        return None

    def _machine(self):
        if self._vm is None:
            raise SlimgraphError(f"model '{self.metadata['model']}' is a CUDA library "
                                 f"({self.metadata['target']['name']}) that cannot run here: "
                                 f"{self.why_not_runnable}; run it where it can (it needs no CUDA compiler there)")
        return self._vm

    @property
    def emulated(self) -> bool:
        """True when the library is for another CPU architecture and runs under an emulator here."""
        from slimgraph.codegen.aarch64 import host_is_aarch64

        return self.arch == "aarch64" and not host_is_aarch64()

    def library_file(self) -> Path:
        if self._library is None:
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="slimgraph-")
            self._library, _ = self.export(Path(self._scratch.name) / "model.so")
        return self._library

    def check_inputs(self, inputs: Sequence[Any]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            names = ", ".join(f"{s.name}: {s}" for s in self.inputs)
            raise InputError(f"model '{self.metadata['model']}' takes {len(self.inputs)} input(s) ({names}), got {len(inputs)}")
        arrays = []
        for position, (spec, value) in enumerate(zip(self.inputs, inputs), start=1):
            array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            got = f"{array.dtype}[{','.join(map(str, array.shape))}]"
            if tuple(array.shape) != spec.shape or str(array.dtype) != spec.dtype:
                raise InputError(f"input '{spec.name}' (#{position}) of model '{self.metadata['model']}': "
                                 f"expected {spec}, got {got}")
            arrays.append(np.ascontiguousarray(array))
        return arrays

    def _tvm_inputs(self, inputs: Sequence[Any]) -> list:
        import tvm

        return [tvm.runtime.tensor(a, self._device) for a in self.check_inputs(inputs)]

    def __call__(self, *inputs):
        if self.emulated:
            from slimgraph.codegen.aarch64 import run_library

            arrays, _ = run_library(self.library_file(), self.check_inputs(inputs))
        else:
            result = self._machine()["main"](*self._tvm_inputs(inputs))
            values = list(result) if not hasattr(result, "numpy") else [result]
            arrays = [v.numpy() for v in values]
        if inputs and all(hasattr(i, "detach") for i in inputs):
            import torch

            return tuple(torch.from_numpy(a) for a in arrays)
        return tuple(arrays)

    def random_inputs(self, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = []
        for spec in self.inputs:
            if spec.dtype.startswith("float"):
                arrays.append(rng.standard_normal(spec.shape).astype(spec.dtype))
            else:
                arrays.append(rng.integers(0, 10, spec.shape).astype(spec.dtype))
        return arrays

    def benchmark(self, inputs: Sequence[Any] | None = None, repeat: int = 10, warmup: int = 1) -> dict:
        """Latency of `main` in milliseconds (median, mean, min over `repeat` timed runs).

        An emulated library reports only the median, with `emulated: True`: not the device's speed.
        """
        if self.emulated:
            from slimgraph.codegen.aarch64 import run_library

            arrays = self.check_inputs(inputs if inputs is not None else self.random_inputs())
            _, median = run_library(self.library_file(), arrays, repeat=repeat)
            return {"median_ms": median, "mean_ms": median, "min_ms": median, "runs": repeat, "emulated": True,
                    "runs_ms": [median]}
        machine = self._machine()
        machine.set_input("main", *self._tvm_inputs(inputs if inputs is not None else self.random_inputs()))
        for _ in range(warmup):
            machine.invoke_stateful("main")
        timer = machine.time_evaluator("invoke_stateful", self._device, number=1, repeat=repeat, min_repeat_ms=0)
        runs_ms = [t * 1e3 for t in timer("main").results]
        return {"median_ms": statistics.median(runs_ms), "mean_ms": statistics.fmean(runs_ms),
                "min_ms": min(runs_ms), "runs": len(runs_ms), "runs_ms": runs_ms}

    def export(self, output: str | os.PathLike) -> tuple[Path, Path]:
        """Write the library and its metadata JSON (atomically) to `output`."""
        if self._executable is None:
            raise SlimgraphError("this model was loaded from disk; copy its .so and .json files instead")
        metadata = {k: v for k, v in self.metadata.items() if k not in ("format", "library")}
        options = {}
        if self.arch == "aarch64":
            from slimgraph.codegen.aarch64 import cross_compiler

            options["cc"] = cross_compiler()
        verify = self._check_device_binary if self.metadata["target"].get("device") == "cuda" else None
        paths = write_artifact(self._executable, metadata, output, verify=verify, **options)
        if self._library is None:
            self._library = paths[0]
        return paths

    def _check_device_binary(self, library: Path) -> None:
        from slimgraph.codegen.cuda import check_device_binary

        self.device_images = check_device_binary(library, self.metadata["target"]["config"].get("arch"))

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s}" for s in self.inputs)
        return f"<CompiledModel '{self.metadata['model']}' ({ins}) for {self.metadata['target']['name']}>"


def load(path: str | os.PathLike) -> CompiledModel:
    """Load a library written by `slimgraph compile` (its metadata JSON must sit beside it)."""
    import tvm

    library, _ = artifact_paths(path)
    metadata = read_metadata(library)
    from slimgraph.codegen.aarch64 import host_is_aarch64

    if metadata["target"].get("arch") == "aarch64" and not host_is_aarch64():
        return CompiledModel(None, metadata, library=library)  # runs under qemu: see CompiledModel
    if metadata["target"].get("device") == "cuda":
        stand_in = CompiledModel(None, metadata, library=library)
        if not stand_in.runnable:  # no GPU (no module loader), or one its cubin is not for; calls say why
            return stand_in
    return CompiledModel(tvm.runtime.load_module(str(library)), metadata, library=library)
