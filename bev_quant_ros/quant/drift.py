"""Recurrent drift: FP32 and INT8 side by side over a long sequence, frame by frame.

Both engines see the same inputs; each feeds back its own state, as deployed.
Per frame: cosine similarity and relative L2 error of `bev_state`, and detection
agreement (INT8 detections matched to FP32 ones, same class within 1 m: F1).
A growing error means quantization error accumulates through the state (MISSION
problem 9); comparing plans with the state path float vs int8 shows whether
keeping it float is what stops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from bev_quant_ros.engine.contract import STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.engine.io_check import consumers
from bev_quant_ros.perception.box_decoding import decode
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.quant.assess import REFERENCE_SCORE_THRESHOLD, decode_config_for, frame_outputs
from bev_quant_ros.quant.calib_data import RecordedSequence

MATCH_DISTANCE_M = 1.0


@dataclass
class DriftCurve:
    cosine: list[float] = field(default_factory=list)
    relative_error: list[float] = field(default_factory=list)
    detection_f1: list[float] = field(default_factory=list)

    def at(self, frame: int) -> dict[str, float]:
        """Values at `frame` (1-based, clamped to the sequence)."""
        i = min(frame, len(self.cosine)) - 1
        return {"frame": i + 1, "cosine": self.cosine[i], "relative_error": self.relative_error[i],
                "detection_f1": self.detection_f1[i]}

    def to_dict(self) -> dict[str, list[float]]:
        return {"cosine": self.cosine, "relative_error": self.relative_error, "detection_f1": self.detection_f1}


def detection_f1(reference: Boxes3D, candidate: Boxes3D, max_distance_m: float = MATCH_DISTANCE_M) -> float:
    """Greedy same-class centre matching of candidate to reference detections; F1 (1 when both empty)."""
    if len(reference) == 0 and len(candidate) == 0:
        return 1.0
    used = np.zeros(len(reference), bool)
    matches = 0
    for i in range(len(candidate)):
        same = np.array([c == candidate.class_names[i] for c in reference.class_names], bool) & ~used
        if not same.any():
            continue
        distance = np.linalg.norm(reference.centers[:, :2] - candidate.centers[i, :2], axis=1)
        distance[~same] = np.inf
        j = int(np.argmin(distance))
        if distance[j] <= max_distance_m:
            used[j] = True
            matches += 1
    return 2.0 * matches / (len(reference) + len(candidate))


def drift_curve(fp32_path: str | Path, int8_path: str | Path, sequence: RecordedSequence,
                score_threshold: float = REFERENCE_SCORE_THRESHOLD, threads: int = 1) -> DriftCurve:
    """Side-by-side run (module docstring); the reference is always the FP32 model's detections
    >= ``score_threshold`` (the node's default), so a drive needs no ground truth."""
    decode_config = decode_config_for(fp32_path, score_threshold)
    curve = DriftCurve()
    for ref, cand in zip(frame_outputs(fp32_path, sequence, threads), frame_outputs(int8_path, sequence, threads)):
        a, b = np.asarray(ref[STATE_OUTPUT], np.float64).ravel(), np.asarray(cand[STATE_OUTPUT], np.float64).ravel()
        norm = np.linalg.norm(a)
        curve.cosine.append(float(a @ b / max(norm * np.linalg.norm(b), 1e-30)))
        curve.relative_error.append(float(np.linalg.norm(b - a) / max(norm, 1e-30)))
        curve.detection_f1.append(detection_f1(decode(ref["heatmap"], ref["box_reg"], decode_config),
                                               decode(cand["heatmap"], cand["box_reg"], decode_config)))
    return curve


def state_path_nodes(model: onnx.ModelProto, candidates: Sequence[str]) -> list[str]:
    """Candidate nodes on a path from `prev_bev` to `bev_state` (the recurrent loop)."""
    readers = consumers(model.graph)
    producers = {out: node for node in model.graph.node for out in node.output}
    downstream: set[str] = set()
    frontier = [STATE_INPUT]
    while frontier:
        for node in readers.get(frontier.pop(), []):
            if node.name not in downstream:
                downstream.add(node.name)
                frontier += list(node.output)
    upstream: set[str] = set()
    frontier = [STATE_OUTPUT]
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and node.name not in upstream:
            upstream.add(node.name)
            frontier += list(node.input)
    loop = downstream & upstream
    return [name for name in candidates if name in loop]
