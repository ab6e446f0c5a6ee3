"""slimgraph: a compiler-style graph rewriting framework for deep-learning models.

    compiled = slimgraph.compile(model, example_inputs, target="x86", output="out/model.so")
    outputs = slimgraph.load("out/model.so")(*inputs)
"""
__version__ = "0.1.0"

import warnings

# torch 2.13's own pytree code warns about its own deprecated LeafSpec on every export.
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)

from slimgraph.compiler import compile  # noqa: E402,A001
from slimgraph.pruning import prune  # noqa: E402
from slimgraph.runtime import CompiledModel, load  # noqa: E402

__all__ = ["compile", "load", "prune", "CompiledModel", "__version__"]
