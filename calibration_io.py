"""Calibration data for the quantize pass: from disk (`--calib PATH`) and as the pass's context.

PATH is an `.npz` file or a folder of them. Each file holds one array per graph input, named as
the input: either one sample (the input's exact shape) or N samples stacked on a new first axis
(`[N, *shape]`, N batches). A folder's files are read in name order. Only plain arrays are read
(`allow_pickle=False`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from slimgraph.ir.errors import SlimgraphError
from slimgraph.rewrites.quantize import calibration_data

STAND_IN = "the model's example inputs (1 batch)"


class CalibrationDataError(SlimgraphError):
    """Calibration data on disk that cannot feed the model."""


def calibration_scope(data, input_specs, example_inputs):
    """The context `compile` and `dump` run the passes in: `data` (batches, or an .npz file /
    folder) for the quantize pass or, when it is None, the model's example inputs as a stand-in."""
    if data is None:
        return calibration_data([example_inputs], STAND_IN)
    if isinstance(data, (str, os.PathLike)):
        data = read_calibration(data, input_specs)
    return calibration_data(data)


def read_calibration(path: str | os.PathLike, input_specs) -> list[tuple[torch.Tensor, ...]]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise CalibrationDataError(f"calibration folder '{path}' has no .npz files")
    elif path.is_file():
        files = [path]
    else:
        raise CalibrationDataError(f"calibration data '{path}' does not exist")
    batches = []
    for file in files:
        batches.extend(_batches_of(file, input_specs))
    if not batches:
        raise CalibrationDataError(f"calibration data '{path}' holds no samples")
    return batches


def _batches_of(file: Path, input_specs) -> list[tuple[torch.Tensor, ...]]:
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"calibration file '{file}' is not a readable .npz: {exc}") from exc
    columns = []
    for name, shape, dtype in input_specs:
        if name not in arrays:
            raise CalibrationDataError(f"calibration file '{file}' has no array '{name}' "
                                       f"(it has: {', '.join(arrays) or 'nothing'})")
        array, shape = arrays[name], tuple(shape)
        if array.shape == shape:
            array = array[None]
        if array.shape[1:] != shape:
            raise CalibrationDataError(f"calibration file '{file}', input '{name}': expected {list(shape)} or "
                                       f"[N, {', '.join(map(str, shape))}], got {list(array.shape)}")
        columns.append(torch.from_numpy(np.ascontiguousarray(array)))
    counts = {len(c) for c in columns}
    if len(counts) > 1:
        raise CalibrationDataError(f"calibration file '{file}': inputs hold different sample counts {sorted(counts)}")
    return [tuple(column[i] for column in columns) for i in range(counts.pop())]
