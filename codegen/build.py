"""Build a lowered Relax module into an executable for a target."""
from __future__ import annotations

from .targets import TargetSpec


def build(mod, spec: TargetSpec):
    """tvm.compile with the VM lowering pipeline; fusion was already decided by `lowering.optimize`."""
    import tvm

    target = spec.tvm_target()
    with target:
        return tvm.compile(mod, target, relax_pipeline="default")
