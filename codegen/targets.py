"""Target presets and raw TVM target JSON.

`x86` describes this host: LLVM's name for its CPU as `mcpu`, the ISA features it reports
(/proc/cpuinfo flags mapped to LLVM attributes) as `mattr`, and its core count. `arm64` is a
64-bit ARM CPU with NEON (any ARMv8-A core); `arm64-dotprod` an ARMv8.2-A core with the int8
dot-product instructions (Cortex-A76 class: Raspberry Pi 5, Graviton 2, Neoverse N1). Both
assume 4 cores, which only tuning reads (the runtime uses the device's own core count). `cuda`
is an NVIDIA GPU of compute capability 9.0 (H100/H200); `cuda:sm_XX` names another (sm_80 for
A100, sm_89 for L4/RTX 40xx); the host code is for this machine's x86 CPU. A raw target is a
JSON object (`{"kind": "llvm", ...}`) given inline or as a path to a .json file.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from slimgraph.ir.errors import SlimgraphError

# /proc/cpuinfo flag -> LLVM target attribute, for the features our kernels care about.
X86_FEATURES = {
    "sse4_2": "+sse4.2", "avx": "+avx", "avx2": "+avx2", "fma": "+fma", "f16c": "+f16c",
    "avx512f": "+avx512f", "avx512bw": "+avx512bw", "avx512dq": "+avx512dq", "avx512vl": "+avx512vl",
    "avx512cd": "+avx512cd", "avx512_vnni": "+avx512vnni", "avx_vnni": "+avxvnni",
    "avx512_bf16": "+avx512bf16", "avx512_fp16": "+avx512fp16", "amx_int8": "+amx-int8",
    "amx_bf16": "+amx-bf16", "amx_tile": "+amx-tile",
}


class TargetError(SlimgraphError):
    """An unknown preset or a malformed target description."""


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: the preset name (or "json") and the TVM target as a JSON dict."""

    name: str
    config: dict
    features: tuple[str, ...] = field(default=())

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.config)

    @property
    def device(self) -> str:
        return "cuda" if self.config.get("kind") == "cuda" else "cpu"

    @property
    def arch(self) -> str:
        """The CPU architecture the library's host code is for: "aarch64" or "x86_64"."""
        from .aarch64 import is_aarch64

        host = self.config.get("host") if self.config.get("kind") == "cuda" else self.config
        return "aarch64" if isinstance(host, dict) and is_aarch64(host) else "x86_64"


def host_cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def x86_host() -> TargetSpec:
    import tvm

    flags = host_cpu_flags()
    mattr = [attr for flag, attr in X86_FEATURES.items() if flag in flags]
    config = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
              "num-cores": os.cpu_count() or 1}
    if mattr:
        config["mattr"] = mattr
    return TargetSpec("x86", config, tuple(sorted(f for f in flags if f in X86_FEATURES)))


def arm64() -> TargetSpec:
    config = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
    return TargetSpec("arm64", config, ("neon",))


def arm64_dotprod() -> TargetSpec:
    config = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon", "+dotprod"],
              "num-cores": 4}
    return TargetSpec("arm64-dotprod", config, ("neon", "dotprod"))


DEFAULT_CUDA_ARCH = "sm_90"
# What every NVIDIA GPU since sm_30 allows one thread block; MetaSchedule's GPU rules and its code
# check (VerifyGPUCode) read them from the target and refuse a target without them.
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "thread_warp_size": 32,
               "registers_per_block": 65536}


def cuda(arch: str = DEFAULT_CUDA_ARCH) -> TargetSpec:
    if not re.fullmatch(r"sm_\d{2,3}[af]?", arch):
        raise TargetError(f"CUDA architecture '{arch}' is not of the form sm_XX (e.g. sm_80, sm_90, sm_90a)")
    host = {key: value for key, value in x86_host().config.items() if key != "num-cores"}
    config = {"kind": "cuda", "arch": arch, **CUDA_LIMITS, "host": host}
    return TargetSpec("cuda" if arch == DEFAULT_CUDA_ARCH else f"cuda:{arch}", config, (arch,))


PRESETS: dict[str, Callable[[], TargetSpec]] = {"x86": x86_host, "arm64": arm64, "arm64-dotprod": arm64_dotprod,
                                                "cuda": cuda}


def resolve_target(target: str | dict | TargetSpec) -> TargetSpec:
    """A preset name, a JSON object (dict or text), or a path to a .json file -> TargetSpec."""
    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, dict):
        return _from_json(target, "target dict")
    text = target.strip()
    if text in PRESETS:
        return PRESETS[text]()
    if text.startswith("cuda:"):
        return cuda(text.split(":", 1)[1].removeprefix("arch="))  # cuda:sm_80 or cuda:arch=sm_80
    if text.startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TargetError(f"target JSON is malformed: {exc.msg} at column {exc.colno}") from exc
        return _from_json(config, "target JSON")
    if text.endswith(".json"):
        path = Path(text)
        if not path.is_file():
            raise TargetError(f"target file '{path}' does not exist")
        try:
            return _from_json(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as exc:
            raise TargetError(f"target file '{path}' is malformed JSON: {exc.msg} at line {exc.lineno}") from exc
    known = ", ".join(sorted(PRESETS)).replace("cuda", "cuda (or cuda:sm_XX)")
    raise TargetError(f"unknown target '{text}'; presets: {known}, or a TVM target JSON object / .json file")


def _from_json(config, where: str) -> TargetSpec:
    import tvm

    if not isinstance(config, dict) or "kind" not in config:
        raise TargetError(f"{where}: a TVM target must be a JSON object with a 'kind' key")
    try:
        tvm.target.Target(config)
    except Exception as exc:  # noqa: BLE001 - TVM raises ValueError/TVMError variants
        first = str(exc).strip().splitlines()[0]
        raise TargetError(f"{where}: TVM rejects the target: {first}") from exc
    return TargetSpec("json", dict(config))
