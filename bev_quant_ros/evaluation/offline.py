"""Offline evaluation: frames -> pipeline -> nuScenes metrics, deterministic, no DDS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from bev_quant_ros.evaluation.metrics import DetectionMetrics, EvalConfig, evaluate_detections
from bev_quant_ros.evaluation.sources import EvalFrame
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.pipeline import BevPipeline


@dataclass
class EvaluationRun:
    """Detections next to their ground truth, frame by frame, plus stage timings."""

    predictions: list[Boxes3D] = field(default_factory=list)
    ground_truth: list[Boxes3D] = field(default_factory=list)
    gt_num_lidar_points: list[np.ndarray] | None = field(default_factory=list)
    engine_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    resets: int = 0

    def metrics(self, config: EvalConfig | None = None) -> DetectionMetrics:
        return evaluate_detections(self.predictions, self.ground_truth, config=config or EvalConfig(),
                                   gt_num_lidar_points=self.gt_num_lidar_points)

    def summary(self, condition: str, config: EvalConfig | None = None) -> dict[str, Any]:
        """The metrics JSON (keys mAP, NDS, mATE, ..., per_class, frames) plus condition and timing."""
        result = self.metrics(config).to_json()
        result["condition"] = condition
        result["state_resets"] = self.resets
        if self.engine_ms:
            result["engine_ms_median"] = float(np.median(self.engine_ms))
            result["pipeline_ms_median"] = float(np.median(self.total_ms))
        return result


def run_pipeline(pipeline: BevPipeline, frames: Iterable[EvalFrame]) -> EvaluationRun:
    """Process ``frames`` in order (the recurrent state carries over) and collect the results."""
    run = EvaluationRun()
    for frame in frames:
        result = pipeline.process(frame.sensors)
        run.predictions.append(result.detections)
        run.ground_truth.append(frame.ground_truth)
        if frame.gt_num_lidar_points is None or run.gt_num_lidar_points is None:
            run.gt_num_lidar_points = None  # unknown for some frame: no empty-box filter at all
        else:
            run.gt_num_lidar_points.append(frame.gt_num_lidar_points)
        run.engine_ms.append(result.timings.engine_ms)
        run.total_ms.append(result.timings.total_ms)
        run.resets += result.reset_reason is not None
    return run
