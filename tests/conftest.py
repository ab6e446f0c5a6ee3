"""Shared fixtures: built-in models imported once per test session."""
import functools
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)

from slimgraph import ir  # noqa: E402
from slimgraph.models import REFERENCE_MODELS, reference_model  # noqa: E402

MODEL_NAMES = sorted(REFERENCE_MODELS)


@functools.lru_cache(maxsize=None)
def imported_model(name: str):
    """(module, example inputs, ir.Graph) for a built-in model; cached for the session."""
    module, inputs = reference_model(name)
    return module, inputs, ir.from_torch(module, inputs, name)


@functools.lru_cache(maxsize=None)
def onnx_file(name: str, folder: str) -> str:
    module, inputs = reference_model(name)
    path = f"{folder}/{name}.onnx"
    torch.onnx.export(module, inputs, path, dynamo=False, opset_version=17)
    return path


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(autouse=True, scope="session")
def private_tuning_database(tmp_path_factory):
    """Tests never read or write the user's tuning database (~/.cache/slimgraph/tuning)."""
    import os

    previous = os.environ.get("SLIMGRAPH_TUNING_DB")
    os.environ["SLIMGRAPH_TUNING_DB"] = str(tmp_path_factory.mktemp("tuning-db"))
    yield
    if previous is None:
        os.environ.pop("SLIMGRAPH_TUNING_DB", None)
    else:
        os.environ["SLIMGRAPH_TUNING_DB"] = previous
