"""Calibration statistics with one task per recorded sequence, merged exactly.

A sequence's statistics depend only on that sequence (the FP32 model's own recurrent state
restarts with it), so each task runs `collect_activation_stats` on a one-sequence list and
the driver merges them per condition in sequence order with `TensorStats.merged`: the
histograms (power-of-two ranges, bin pairs merged when a range doubles), counts and extremes
equal a single process's; the float64 moment sums only differ in summation order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnx

from bev_quant_ros.errors import CalibrationError
from bev_quant_ros.fleet.runners import Runner, run_tasks
from bev_quant_ros.quant.calib_data import (
    ConditionStats,
    RecordedSequence,
    collect_activation_stats,
    merge_conditions,
)
from bev_quant_ros.quant.histogram import DEFAULT_BINS


def sequence_stats(model_path: str, sequence: RecordedSequence, tensor_names: Sequence[str],
                   bins: int) -> ConditionStats:
    """The worker's task: the model loaded here, one sequence streamed through it."""
    return collect_activation_stats(onnx.load(model_path), [sequence], tensor_names, bins)


def merge_condition_stats(parts: Sequence[ConditionStats]) -> ConditionStats:
    """Per condition and tensor, the statistics of ``parts`` together, merged in their order."""
    conditions = dict.fromkeys(c for part in parts for c in part)
    return {c: merge_conditions({str(i): part[c] for i, part in enumerate(parts) if c in part}) for c in conditions}


def parallel_activation_stats(model_path: str | Path, sequences: Sequence[RecordedSequence],
                              tensor_names: Sequence[str], runner: Runner,
                              bins: int = DEFAULT_BINS) -> ConditionStats:
    """`collect_activation_stats` with one task per sequence; a failed task is a CalibrationError
    (statistics without some sequences would be another calibration set)."""
    names = [f"{s.name} ({s.condition})" for s in sequences]
    results = run_tasks(runner, sequence_stats, names, [(str(model_path), s, list(tensor_names), bins)
                                                        for s in sequences], desc="sequences", fail_fast=True)
    failed = [r for r in results if not r.ok]
    if failed:
        raise CalibrationError(f"statistics of {failed[0].name} failed: {failed[0].error}")
    return merge_condition_stats([r.value for r in results])
