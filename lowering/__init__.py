"""Lowering: ir.Graph to a TVM Relax module, then the per-target Relax pipeline."""
from .pipeline import kernel_calls, kernel_launches, kernel_names, optimize
from .relax_import import LoweringError, lower, normalize_negative_indices, to_relax

__all__ = ["lower", "to_relax", "optimize", "kernel_names", "kernel_calls", "kernel_launches", "LoweringError", "normalize_negative_indices"]
