"""Helpers for pass tests: build a graph from IR text with random parameters, run one pass."""
import re

import torch

from slimgraph import ir
from slimgraph.ir.dtypes import SHORT_TO_DTYPE
from slimgraph.rewrites import PassManager
from slimgraph.rewrites.instruments import CheckNumerics, VerifyEach


PARAM_LINE = re.compile(r'param\("([^"]+)"\) : (\w+)\[([0-9,]*)\]')


def graph_from_text(text: str, seed: int = 0) -> ir.Graph:
    """Parse IR text; each param gets seeded values (running variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, dtype, dims in PARAM_LINE.findall(text):
        shape = [int(d) for d in dims.split(",") if d]
        value = torch.randn(shape, generator=generator).to(SHORT_TO_DTYPE[dtype])
        params[name] = value.abs() + 0.5 if "var" in name else value
    return ir.parse(text, params)


def run_pass(graph: ir.Graph, pipeline: str):
    """Run `pipeline` with the verifier and the numerics check after each pass."""
    return PassManager(pipeline, [VerifyEach(), CheckNumerics()]).run(graph)


def body(graph: ir.Graph) -> list[str]:
    """The op lines of the printed IR (no params, no header)."""
    return [line.strip() for line in ir.print_graph(graph).splitlines() if " = aten." in line or "getitem(" in line
            or line.strip().startswith("return")]
