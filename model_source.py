"""Resolve what the user named as MODEL into an ir.Graph plus a reference to check against.

MODEL is an `nn.Module` (with example inputs), an `.onnx` file, an `.ir` dump, a
`path/to/file.py:factory` whose factory returns `(module, example_inputs)`, or the name of a
built-in reference model (`slimgraph.models`).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from slimgraph import ir
from slimgraph.ir.errors import ModelImportError
from slimgraph.models import REFERENCE_MODELS, reference_model


@dataclass
class LoadedModel:
    graph: ir.Graph
    example_inputs: tuple[torch.Tensor, ...]
    reference: Callable[[Sequence[torch.Tensor]], list[np.ndarray]]
    reference_name: str  # "PyTorch", "ONNX Runtime" or "slimgraph IR (PyTorch)"
    source: str


def _torch_reference(module: torch.nn.Module):
    def run(inputs):
        with torch.no_grad():
            out = module(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in outs]
    return run


def _graph_reference(graph: ir.Graph):
    return lambda inputs: [o.numpy() for o in graph.run(*inputs)]


def _onnx_reference(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})


def _load_factory(spec: str) -> tuple[torch.nn.Module, tuple]:
    file_part, _, factory_name = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise ModelImportError(f"model file '{path}' does not exist")
    module_name = f"slimgraph_user_model_{abs(hash(str(path.resolve())))}"
    try:
        loader = importlib.util.spec_from_file_location(module_name, path)
        user_module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = user_module
        loader.loader.exec_module(user_module)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise ModelImportError(f"importing '{path}' failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(user_module, factory_name, None)
    if not callable(factory):
        raise ModelImportError(f"'{path}' has no function '{factory_name}'")
    try:
        result = factory()
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise ModelImportError(f"'{spec}' raised {type(exc).__name__}: {exc}") from exc
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise ModelImportError(f"'{spec}' must return (nn.Module, example_inputs), got {type(result).__name__}")
    module, inputs = result
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return module, inputs


def _from_module(module, inputs, name, source) -> LoadedModel:
    graph = ir.from_torch(module, inputs, name)
    return LoadedModel(graph, tuple(inputs), _torch_reference(module), "PyTorch", source)


def load_model(model: Any, example_inputs: Sequence[torch.Tensor] | None = None,
               name: str | None = None) -> LoadedModel:
    if isinstance(model, ir.Graph):
        inputs = tuple(example_inputs) if example_inputs is not None else model.example_inputs()
        return LoadedModel(model, inputs, _graph_reference(model), "slimgraph IR (PyTorch)", model.name)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise ModelImportError(f"compiling an nn.Module ({type(model).__name__}) needs example_inputs")
        inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        return _from_module(model, inputs, name or type(model).__name__.lower(), type(model).__name__)
    spec = os.fspath(model)
    if spec in REFERENCE_MODELS:
        module, inputs = reference_model(spec)
        return _from_module(module, inputs, name or spec, f"built-in:{spec}")
    path = Path(spec)
    if path.suffix == ".onnx":
        from slimgraph.ir.frontend_onnx import from_onnx

        graph = from_onnx(path, name=name or path.stem)
        inputs = graph.example_inputs()
        return LoadedModel(graph, inputs, _onnx_reference(path), "ONNX Runtime", str(path))
    if path.suffix == ".ir":
        graph = ir.load(path)
        return LoadedModel(graph, graph.example_inputs(), _graph_reference(graph), "slimgraph IR (PyTorch)", str(path))
    if ".py:" in spec:
        module, inputs = _load_factory(spec)
        return _from_module(module, inputs, name or spec.rpartition(":")[2], spec)
    if path.suffix in (".py", ".onnx", ".ir") or path.exists():
        raise ModelImportError(f"cannot read model '{spec}': use an .onnx file, an .ir dump or file.py:factory")
    known = ", ".join(sorted(REFERENCE_MODELS))
    raise ModelImportError(f"model '{spec}' is neither a file nor a built-in model (built-ins: {known})")
