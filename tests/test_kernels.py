"""What the default pipeline does to the built library: kernel calls per inference, and outputs."""
import functools

import pytest

import slimgraph

from .conftest import MODEL_NAMES


@functools.lru_cache(maxsize=None)
def launches(name: str, pipeline: str) -> int:
    compiled = slimgraph.compile(name, pipeline=pipeline, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    return compiled.report.kernel_launches


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_pipeline_makes_fewer_kernel_calls(name):
    # measured: digit_cnn 6 -> 5, resnet18 24 -> 23, mobilenet_v2 55 -> 54, bert_encoder 100 -> 54
    assert launches(name, "default") < launches(name, "none")
