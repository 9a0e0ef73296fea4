"""Detections of nuScenes keyframes as a nuScenes results JSON, and nuscenes-devkit's own metrics.

For bags from `bev-quant nuscenes-to-bag`: the sample token of each keyframe is on
``/nuscenes/sample_token`` (bag time = the keyframe's stamp) and the ego pose on the odom
topic (``odom`` = nuScenes global), so ego-frame detections go to the global frame the
devkit scores in. ``--devkit`` runs ``DetectionEval`` (detection_cvpr_2019) on the bags'
scenes through a custom split: the devkit reads ``<version>/splits.json``, which a
temporary overlay of the dataroot (symlinks) holds, so the dataroot itself is never written.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from bev_quant_ros.drives.nuscenes_bag import SAMPLE_TOKEN_TOPIC, open_nuscenes
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.errors import EvaluationInputError
from bev_quant_ros.evaluation.offline import EvaluationRun
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import matrix_to_quaternion
from bev_quant_ros.ros.detection_encoding import make_typestore
from bev_quant_ros.ros.message_decoding import odometry_to_pose, stamp_to_ns

CUSTOM_SPLIT = "bev_quant_eval"
RESULTS_META = {"use_camera": True, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}


def bag_keyframes(bag: Path, settings: ReaderSettings) -> tuple[dict[str, str], dict[int, tuple[str, np.ndarray]]]:
    """The bag's nuScenes metadata (custom_data) and keyframe stamp -> (sample token, T_global_ego)."""
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    custom = dict(info.get("custom_data") or {})
    store = make_typestore()
    tokens: dict[int, str] = {}
    poses: dict[int, np.ndarray] = {}
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic in (SAMPLE_TOKEN_TOPIC, settings.odom_topic)]
        if not any(c.topic == SAMPLE_TOKEN_TOPIC for c in wanted):
            raise EvaluationInputError(f"bag {bag} has no {SAMPLE_TOKEN_TOPIC} topic (not from nuscenes-to-bag)")
        for connection, timestamp, raw in reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == SAMPLE_TOKEN_TOPIC:
                tokens[timestamp] = msg.data
            else:
                poses[stamp_to_ns(msg.header.stamp)] = odometry_to_pose(msg)
    missing = sorted(set(tokens) - set(poses))
    if missing:
        raise EvaluationInputError(f"bag {bag}: no {settings.odom_topic} pose at keyframe stamp {missing[0]}")
    return custom, {stamp: (token, poses[stamp]) for stamp, token in tokens.items()}


def global_boxes(boxes: Boxes3D, sample_token: str, T_global_ego: np.ndarray) -> list[dict[str, Any]]:
    """Ego-frame detections as nuScenes result boxes (global frame, size w-l-h, quaternion w-x-y-z)."""
    R, t = T_global_ego[:3, :3], T_global_ego[:3, 3]
    records = []
    for i in range(len(boxes)):
        c, s = np.cos(boxes.yaws[i]), np.sin(boxes.yaws[i])
        x, y, z, w = matrix_to_quaternion(R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
        length, width, height = boxes.sizes[i]
        velocity = R @ np.array([*boxes.velocities[i], 0.0])
        records.append({"sample_token": sample_token, "translation": (R @ boxes.centers[i] + t).tolist(),
                        "size": [float(width), float(length), float(height)],
                        "rotation": [float(w), float(x), float(y), float(z)],
                        "velocity": velocity[:2].tolist(), "detection_name": boxes.class_names[i],
                        "detection_score": float(boxes.scores[i]), "attribute_name": ""})
    return records


def results_json(bags: Sequence[Path | None], runs: Sequence[EvaluationRun], settings: ReaderSettings
                 ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The results JSON of every keyframe of ``bags`` (one with no frame out: no boxes), the bags'
    nuScenes version per bag and their scene names."""
    results: dict[str, list[dict[str, Any]]] = {}
    versions, scenes = {}, []
    for bag, run in zip(bags, runs):
        if bag is None:
            raise EvaluationInputError("--nuscenes-results / --devkit need bags from nuscenes-to-bag, not synth drives")
        custom, keyframes = bag_keyframes(bag, settings)
        versions[str(bag)] = custom.get("nuscenes_version", "")
        scenes.append(custom.get("nuscenes_scene", ""))
        for token, _ in keyframes.values():
            results[token] = []
        for stamp, detections in zip(run.stamps_ns, run.predictions):
            if stamp in keyframes:
                token, pose = keyframes[stamp]
                results[token] = global_boxes(detections, token, pose)
    return {"meta": RESULTS_META, "results": results}, versions, scenes


def devkit_metrics(dataroot: Path, version: str, scenes: Sequence[str], results_path: Path) -> dict[str, Any]:
    """nuscenes-devkit ``DetectionEval`` (detection_cvpr_2019) on ``scenes``: its serialized metrics."""
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    open_nuscenes(dataroot, version)  # one-line errors for a bad dataroot before the overlay
    with tempfile.TemporaryDirectory(prefix="bev_quant_devkit_") as tmp:
        overlay = Path(tmp) / "dataroot"
        (overlay / version).mkdir(parents=True)
        for entry in Path(dataroot).iterdir():
            if entry.name != version:
                (overlay / entry.name).symlink_to(entry.resolve())
        for table in (Path(dataroot) / version).glob("*.json"):
            (overlay / version / table.name).symlink_to(table.resolve())
        (overlay / version / "splits.json").write_text(json.dumps({CUSTOM_SPLIT: list(scenes)}))
        with redirect_stdout(StringIO()):  # the devkit prints even with verbose=False
            nusc = open_nuscenes(overlay, version)
            evaluator = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(results_path),
                                      eval_set=CUSTOM_SPLIT, output_dir=str(Path(tmp) / "out"), verbose=False)
            metrics, _ = evaluator.evaluate()
    return metrics.serialize()


def comparison_lines(ours: dict[str, Any], devkit: dict[str, Any]) -> str:
    """Per-class AP of ours next to the devkit's, and why the class means differ."""
    lines = ["nuscenes-devkit (detection_cvpr_2019) next to ours:", "  class          AP ours   AP devkit"]
    for name, entry in ours["per_class"].items():
        dk = float(np.mean(list(devkit["label_aps"][name].values())))
        ap = entry["AP"]
        lines.append(f"  {name:<14} {'   n/a' if ap is None else f'{ap:.6f}'}  {dk:.6f}")
    lines.append(f"  devkit mAP {devkit['mean_ap']:.4f} NDS {devkit['nd_score']:.4f} over its 10 classes "
                 f"(classes the model lacks, and ours without ground truth, score AP 0 there; "
                 f"ours {ours['mAP']:.4f} averages the {len(ours['per_class']) - len(ours['classes_without_gt'])} "
                 f"classes with ground truth)")
    aae = devkit["tp_errors"]["attr_err"]
    lines.append(f"  devkit mAAE {aae:.3f}: we predict no attribute (every one empty), so the devkit's AAE "
                 "is 1 or undefined and its NDS counts it; ours leaves AAE out (NDS over 4 TP metrics). "
                 "The devkit also drops ground truth without lidar/radar points, which a bag does not carry.")
    return "\n".join(lines)


def nuscenes_report(bags: Sequence[Path | None], runs: Sequence[EvaluationRun], settings: ReaderSettings,
                    ours: dict[str, Any], results_path: Path | None, devkit_dataroot: Path | None) -> str:
    """Write the results JSON (to ``results_path``, or a temporary file for the devkit alone) and,
    with ``devkit_dataroot``, the devkit's metrics next to ours."""
    results, versions, scenes = results_json(bags, runs, settings)
    lines = []
    with tempfile.TemporaryDirectory(prefix="bev_quant_results_") as tmp:
        path = results_path or Path(tmp) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results) + "\n")
        if results_path:
            lines.append(f"nuScenes results: {path} ({len(results['results'])} samples)")
        if devkit_dataroot:
            version_set = set(versions.values())
            if len(version_set) != 1 or "" in version_set:
                raise EvaluationInputError(f"--devkit needs bags of one nuScenes version, found {sorted(version_set)}")
            if "mAP" not in ours:
                raise EvaluationInputError("--devkit needs ground truth in the bags")
            lines.append(comparison_lines(ours, devkit_metrics(devkit_dataroot, version_set.pop(), scenes, path)))
    return "\n".join(lines)
