"""Benchmark: slimgraph int8 against slimgraph fp32 and ONNX Runtime fp32 / int8, in one run.

    python -m slimgraph.tests.bench.bench_int8 [--models resnet18,mobilenet_v2,bert_encoder] [--runs 30]
                                               [--markdown FILE]

Both int8 builds calibrate on the same 8 batches of seeded random inputs (minmax): ours with
`--pipeline int8` (fold-bn, fold-constants, quantize, realize), ORT's with `quantize_static`
(QDQ format, uint8 activations, int8 weights per channel) on the exported ONNX model. Median
latency in ms, batch 1, all cores, no tuning database (rule schedules only), the four engines
timed in turn, in rounds (bench_models.interleaved_medians); output SQNR of each int8 build
against the float model on a held-out input. A benchmark, not a test.
"""
from __future__ import annotations

import os
import tempfile
import warnings

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.table import Table  # noqa: E402

import slimgraph  # noqa: E402
from slimgraph import ir  # noqa: E402
from slimgraph.codegen.tuning import TuningOptions  # noqa: E402
from slimgraph.models import reference_model  # noqa: E402
from slimgraph.tests.bench.bench_models import (  # noqa: E402
    bench_parser, interleaved_medians, machine_description, show_table, timed, vm_runs)

CALIBRATION_BATCHES = 8
COLUMNS = ["ORT fp32", "ORT int8", "slimgraph fp32", "slimgraph int8"]


def sqnr_db(reference, actual) -> float:
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - actual) ** 2)))


def ort_session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def bench_model(name: str, runs: int, folder: str) -> dict[str, float]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    module, inputs = reference_model(name)
    graph = ir.from_torch(module, inputs, name)
    batches = [graph.example_inputs(seed) for seed in range(CALIBRATION_BATCHES)]
    held_out = graph.example_inputs(100)
    with torch.no_grad():
        expected = module(*held_out)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    results: dict[str, float] = {}

    path, path_int8 = os.path.join(folder, f"{name}.onnx"), os.path.join(folder, f"{name}.int8.onnx")
    torch.onnx.export(module, inputs, path, dynamo=False, opset_version=17)
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{n: t.numpy() for n, t in zip(names, b)} for b in batches])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(path, path_int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    engines = {}
    sessions = {}
    for column, onnx_path in (("ORT fp32", path), ("ORT int8", path_int8)):
        session = sessions[column] = ort_session(onnx_path)
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}
        engines[column] = timed(lambda session=session, feeds=feeds: session.run(None, feeds))
    held = {n: t.numpy() for n, t in zip(names, held_out)}
    results["ORT int8 SQNR"] = sqnr_db(expected, sessions["ORT int8"].run(None, held)[0])

    arrays = [t.numpy() for t in inputs]
    no_database = TuningOptions(use_database=False)
    for column, pipeline in (("slimgraph fp32", "default"), ("slimgraph int8", "int8")):
        compiled = slimgraph.compile(module, inputs, name=name, pipeline=pipeline, check=False, tuning=no_database,
                                     calibration_data=batches if pipeline == "int8" else None)
        engines[column] = vm_runs(compiled, arrays)
        if pipeline == "int8":
            results["slimgraph int8 SQNR"] = sqnr_db(expected, compiled(*[t.numpy() for t in held_out])[0])
    results.update(interleaved_medians(engines, runs))
    return results


def main() -> None:
    args = bench_parser(__doc__, "resnet18,mobilenet_v2,bert_encoder", 30).parse_args()
    table = Table(title=f"int8 latency (ms, median of {args.runs}), {machine_description()}")
    headers = ["model", *COLUMNS, "int8 vs our fp32", "vs ORT int8", "SQNR ours / ORT (dB)"]
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            r = bench_model(name, args.runs, folder)
            row = [name, *(f"{r[c]:.2f}" for c in COLUMNS), f"{r['slimgraph fp32'] / r['slimgraph int8']:.2f}x faster",
                   f"{r['slimgraph int8'] / r['ORT int8']:.2f}x", f"{r['slimgraph int8 SQNR']:.1f} / {r['ORT int8 SQNR']:.1f}"]
            rows.append(row)
            table.add_row(*row)
    show_table(table, headers, rows, args.markdown)


if __name__ == "__main__":
    main()
