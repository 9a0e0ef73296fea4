"""Run a model over recorded sequences: detections, NDS per condition, output error vs a reference.

Every comparison (baselines, sensitivity, plan search, drift) uses these functions
on the same recorded inputs, so FP32 and INT8 rows differ only by the model. The
engine is the production ONNX Runtime backend and decoding is the production
decoder; only the simulation and preprocessing are replayed from the recording.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from bev_quant_ros.engine.factory import create_engine
from bev_quant_ros.evaluation.metrics import EvalConfig, evaluate_detections
from bev_quant_ros.perception.box_decoding import DecodeConfig, decode
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.model_config import model_config_for_onnx
from bev_quant_ros.quant.calib_data import RecordedSequence

EVAL_SCORE_THRESHOLD = 0.05  # as `bev-quant evaluate`: AP integrates over the whole score range
HEAD_OUTPUTS = ("heatmap", "box_reg")


@dataclass
class ModelRun:
    """Per-frame detections and head outputs of one model over a list of sequences."""

    conditions: list[str] = field(default_factory=list)
    detections: list[Boxes3D] = field(default_factory=list)
    heads: list[dict[str, np.ndarray]] = field(default_factory=list)


def frame_outputs(model_path: str | Path, sequence: RecordedSequence,
                  threads: int = 1) -> Iterator[Mapping[str, np.ndarray]]:
    """The engine's outputs frame by frame (views valid until the next frame), resets as recorded."""
    engine = create_engine(model_path, backend="onnxruntime", intra_op_num_threads=threads)
    for feed, reset in zip(sequence.feeds, sequence.resets):
        if reset:
            engine.reset_state()
        yield engine.infer(feed)


def decode_config_for(model_path: str | Path, score_threshold: float = EVAL_SCORE_THRESHOLD) -> DecodeConfig:
    config = model_config_for_onnx(model_path)
    return DecodeConfig(x_range_m=config.x_range_m, y_range_m=config.y_range_m, class_names=config.classes,
                        score_threshold=score_threshold)


def run_model(model_path: str | Path, sequences: Sequence[RecordedSequence], threads: int = 1,
              keep_heads: bool = False) -> ModelRun:
    """Detections (and optionally head outputs) for every frame of every sequence."""
    decode_config = decode_config_for(model_path)
    run = ModelRun()
    for sequence in sequences:
        for outputs in frame_outputs(model_path, sequence, threads):
            run.conditions.append(sequence.condition)
            run.detections.append(decode(outputs["heatmap"], outputs["box_reg"], decode_config))
            if keep_heads:
                run.heads.append({name: np.array(outputs[name]) for name in HEAD_OUTPUTS})
    return run


def nds_by_condition(run: ModelRun, sequences: Sequence[RecordedSequence],
                     config: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """{condition: {"NDS", "mAP", "frames"}} plus "all" over every frame."""
    ground_truth = [gt for s in sequences for gt in s.ground_truth]
    points = [p for s in sequences for p in s.gt_num_lidar_points]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, condition in enumerate(run.conditions):
        groups[condition].append(index)
    groups["all"] = list(range(len(run.conditions)))
    result = {}
    for condition, indices in groups.items():
        have_points = all(points[i] is not None for i in indices)
        metrics = evaluate_detections([run.detections[i] for i in indices], [ground_truth[i] for i in indices],
                                      config=config or EvalConfig(),
                                      gt_num_lidar_points=[points[i] for i in indices] if have_points else None)
        result[condition] = {"NDS": float(metrics.nd_score), "mAP": float(metrics.mean_ap), "frames": len(indices)}
    return result


def head_error(reference: ModelRun, candidate: ModelRun) -> float:
    """Output-space proxy of detection damage: mean relative L2 error of heatmap and box_reg.

    box_reg only matters where there are objects, so its error is weighted by the
    reference heatmap's class maximum (the decoder reads box_reg at heatmap peaks).
    """
    errors = []
    for ref, cand in zip(reference.heads, candidate.heads):
        heat = np.linalg.norm(cand["heatmap"] - ref["heatmap"]) / max(np.linalg.norm(ref["heatmap"]), 1e-12)
        weight = ref["heatmap"].max(axis=0, keepdims=True)
        box = (np.linalg.norm((cand["box_reg"] - ref["box_reg"]) * weight)
               / max(np.linalg.norm(ref["box_reg"] * weight), 1e-12))
        errors.append(0.5 * (heat + box))
    return float(np.mean(errors))
