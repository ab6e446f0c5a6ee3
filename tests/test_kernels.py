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
def test_default_pipeline_never_adds_kernel_calls(name):
    assert launches(name, "default") <= launches(name, "none")


def test_merged_projections_cut_kernel_calls_in_the_encoder():
    # q/k/v projections of 4 layers become one matmul + split each (measured 100 -> 88)
    assert launches("bert_encoder", "default") < launches("bert_encoder", "none")
