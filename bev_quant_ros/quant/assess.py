"""Run a model over recorded sequences: detections, NDS per condition, output error vs a reference.

NDS is scored against ground truth where the sequence has it, else against the FP32 model's
own confident detections (`reference_for`); every output names which one (`Reference.label`).

Every comparison (baselines, sensitivity, plan search, drift) uses these functions
on the same recorded inputs, so FP32 and INT8 rows differ only by the model. The
engine is the production ONNX Runtime backend and decoding is the production
decoder; only the simulation and preprocessing are replayed from the recording.
"""

from __future__ import annotations

import dataclasses
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
# Without ground truth, FP32 detections at the node's default score_threshold are the reference boxes
REFERENCE_SCORE_THRESHOLD = 0.3
HEAD_OUTPUTS = ("heatmap", "box_reg")


@dataclass
class ModelRun:
    """Per-frame detections and head outputs of one model over a list of sequences."""

    conditions: list[str] = field(default_factory=list)  # per frame its sequence's group (condition[/mode])
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
            run.conditions.append(sequence.group)
            run.detections.append(decode(outputs["heatmap"], outputs["box_reg"], decode_config))
            if keep_heads:
                run.heads.append({name: np.array(outputs[name]) for name in HEAD_OUTPUTS})
    return run


def fp32_reference_label(score_threshold: float) -> str:
    return f"FP32 detections >= {score_threshold:g}"


@dataclass
class Reference:
    """What a model's detections are scored against, frame by frame, and the name every output quotes."""

    boxes: list[Boxes3D]
    gt_num_lidar_points: list[np.ndarray | None]
    label: str  # "ground truth", "FP32 detections >= 0.3", or both joined by " + " for a mixed set


def reference_for(sequences: Sequence[RecordedSequence], fp32: ModelRun,
                  score_threshold: float = REFERENCE_SCORE_THRESHOLD) -> Reference:
    """The one place the reference is chosen: a sequence's ground truth where it has some, else the
    FP32 model's own detections (``fp32``: its run over ``sequences``) with score >= ``score_threshold``.

    Scored against its own confident detections, the FP32 model gets mAP 1 and NDS 1; an INT8
    model's loss is then how far it departs from FP32, which is what quantization must bound.
    """
    boxes: list[Boxes3D] = []
    points: list[np.ndarray | None] = []
    labels = []
    start = 0
    for sequence in sequences:
        stop = start + len(sequence)
        if sequence.has_ground_truth:
            boxes += sequence.ground_truth
            points += sequence.gt_num_lidar_points
            labels.append("ground truth")
        else:
            for detections in fp32.detections[start:stop]:
                confident = detections.select(detections.scores >= score_threshold)
                boxes.append(dataclasses.replace(confident, scores=None))
            points += [None] * len(sequence)
            labels.append(fp32_reference_label(score_threshold))
        start = stop
    return Reference(boxes, points, " + ".join(dict.fromkeys(labels)))


def nds_by_condition(run: ModelRun, reference: Reference,
                     config: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """{group: {"NDS", "mAP", "frames"}} plus "all" over every frame, scored against ``reference``; a group
    is a condition, or a condition and sensor mode ("night/camera_only", `calib_data.group_key`)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, condition in enumerate(run.conditions):
        groups[condition].append(index)
    groups["all"] = list(range(len(run.conditions)))
    result = {}
    for condition, indices in groups.items():
        points = [reference.gt_num_lidar_points[i] for i in indices]
        metrics = evaluate_detections([run.detections[i] for i in indices], [reference.boxes[i] for i in indices],
                                      config=config or EvalConfig(),
                                      gt_num_lidar_points=points if all(p is not None for p in points) else None)
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
