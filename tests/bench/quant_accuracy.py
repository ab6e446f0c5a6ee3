"""Accuracy of the quantize pass (Q/DQ stage) on every built-in model: output SQNR of the
compiled library against the float PyTorch model, and against the quantized graph run in PyTorch.

Calibration: 16 inputs drawn like the model's example input (a pixel permutation of it, or random
token ids); measured on 3 other such inputs, worst case reported.

    python -m slimgraph.tests.bench.quant_accuracy [--pipeline 'default,quantize{calibration=mse}']
"""
import argparse

import numpy as np
import torch

import slimgraph
from slimgraph.models import REFERENCE_MODELS, reference_model


def sqnr_db(reference, actual) -> float:
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - actual) ** 2)))


def drawn_like(inputs, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [t.flatten()[torch.randperm(t.numel(), generator=generator)].reshape(t.shape) if t.is_floating_point()
            else torch.randint(0, 1000, t.shape, generator=generator) for t in inputs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="default,quantize")
    args = parser.parse_args(argv)
    print(f"| model | layers quantized | library vs float (dB) | library vs quantized graph (dB) |\n|---|---|---|---|")
    for name in sorted(REFERENCE_MODELS):
        module, inputs = reference_model(name)
        compiled = slimgraph.compile(module, inputs, name=name, pipeline=args.pipeline, check=False,
                                     calibration_data=[drawn_like(inputs, 100 + i) for i in range(16)])
        against_float, against_graph = [], []
        for seed in range(3):
            x = drawn_like(inputs, seed)
            with torch.no_grad():
                expected = module(*x)
            expected = expected[0] if isinstance(expected, tuple) else expected
            library = compiled(*[t.numpy() for t in x])[0]
            against_float.append(sqnr_db(expected.numpy(), library))
            against_graph.append(sqnr_db(compiled.graph.run(*x)[0].numpy(), library))
        record = next(r for r in compiled.report.passes if r.pass_.name == "quantize")
        print(f"| {name} | {record.stats['quantized']} | {min(against_float):.1f} | {min(against_graph):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
