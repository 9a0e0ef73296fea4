"""Offline evaluation: drive frames -> pipeline -> nuScenes metrics, deterministic, no DDS.

Every frame runs (the recurrent state needs them all); metrics are computed over the
frames that have ground truth (all of a synthetic drive, the keyframes of a nuScenes
scene). A drive without ground truth still runs: detections and timings are kept (the
quantization tools score INT8 against the FP32 model's detections instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from bev_quant_ros.drives.frames import DriveFrame
from bev_quant_ros.evaluation.metrics import DetectionMetrics, EvalConfig, evaluate_detections
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.pipeline import BevPipeline


@dataclass
class EvaluationRun:
    """Detections of every frame next to its ground truth (None where it has none), plus timings."""

    predictions: list[Boxes3D] = field(default_factory=list)
    ground_truth: list[Boxes3D | None] = field(default_factory=list)
    stamps_ns: list[int] = field(default_factory=list)
    gt_num_lidar_points: list[np.ndarray | None] = field(default_factory=list)
    engine_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    resets: int = 0

    @property
    def scored(self) -> list[int]:
        """Indices of the frames with ground truth."""
        return [i for i, truth in enumerate(self.ground_truth) if truth is not None]

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.scored)

    def metrics(self, config: EvalConfig | None = None) -> DetectionMetrics:
        scored = self.scored
        counts = [self.gt_num_lidar_points[i] for i in scored]
        return evaluate_detections([self.predictions[i] for i in scored], [self.ground_truth[i] for i in scored],
                                   config=config or EvalConfig(),
                                   gt_num_lidar_points=None if any(c is None for c in counts) else counts)

    @classmethod
    def merged(cls, runs: Iterable["EvaluationRun"]) -> "EvaluationRun":
        """All frames of ``runs`` as one run, so metrics are computed once over them (exact, not
        an average of per-drive metrics)."""
        total = cls()
        for r in runs:
            total.predictions += r.predictions
            total.ground_truth += r.ground_truth
            total.stamps_ns += r.stamps_ns
            total.gt_num_lidar_points += r.gt_num_lidar_points
            total.engine_ms += r.engine_ms
            total.total_ms += r.total_ms
            total.resets += r.resets
        return total

    def summary(self, condition: str, config: EvalConfig | None = None) -> dict[str, Any]:
        """The metrics JSON (keys mAP, NDS, mATE, ..., per_class, frames = scored frames) plus
        condition and timing; without ground truth only frames, detections per frame and timing."""
        if self.has_ground_truth:
            result = self.metrics(config).to_json()
        else:
            result = {"frames": len(self.predictions), "ground_truth": False}
        result["frames_run"] = len(self.predictions)
        result["detections_per_frame"] = float(np.mean([len(p) for p in self.predictions])) if self.predictions else 0.0
        result["condition"] = condition
        result["state_resets"] = self.resets
        if self.engine_ms:
            result["engine_ms_median"] = float(np.median(self.engine_ms))
            result["pipeline_ms_median"] = float(np.median(self.total_ms))
        return result


def run_pipeline(pipeline: BevPipeline, frames: Iterable[DriveFrame]) -> EvaluationRun:
    """Process ``frames`` in order (the recurrent state carries over) and collect the results."""
    run = EvaluationRun()
    for frame in frames:
        result = pipeline.process(frame.sensors)
        run.predictions.append(result.detections)
        run.stamps_ns.append(frame.sensors.stamp_ns)
        run.ground_truth.append(frame.ground_truth)
        run.gt_num_lidar_points.append(frame.gt_num_lidar_points)
        run.engine_ms.append(result.timings.engine_ms)
        run.total_ms.append(result.timings.total_ms)
        run.resets += result.reset_reason is not None
    return run
