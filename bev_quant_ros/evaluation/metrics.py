"""nuScenes detection metrics (mAP, ATE, ASE, AOE, AVE, NDS) over a list of frames.

Follows the nuScenes detection benchmark (``detection_cvpr_2019`` config): AP per class at
2D centre-distance thresholds 0.5/1/2/4 m, TP errors of the matches at 2 m, boxes beyond a
class-specific ego distance and GT boxes without lidar points removed first. Matching and
curves come from :mod:`bev_quant_ros.evaluation.matching` (checked against the devkit).

NDS differs from the leaderboard on purpose: we do not predict attributes, so AAE is
omitted and ``NDS = (5·mAP + Σ_{ATE,ASE,AOE,AVE} max(0, 1 − mTP)) / 9`` — the devkit's own
normalisation (``mean_ap_weight + number of TP metrics``) applied to the four we have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from bev_quant_ros.errors import ConfigError, EvaluationInputError
from bev_quant_ros.evaluation.matching import TP_ERROR_NAMES, ClassBoxes, accumulate, calc_ap, calc_tp
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D

# nuScenes detection_cvpr_2019 evaluation range (ego xy distance, metres) for our classes
DEFAULT_CLASS_RANGE_M: Mapping[str, float] = {
    "car": 50.0, "truck": 50.0, "pedestrian": 40.0, "bicycle": 40.0, "traffic_cone": 30.0,
}
TP_METRIC_LABELS: Mapping[str, str] = {
    "trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE", "vel_err": "AVE"}
# devkit evaluate.py: these errors are undefined for these classes (reported as NaN)
UNDEFINED_TP_ERRORS: Mapping[str, frozenset[str]] = {
    "traffic_cone": frozenset({"orient_err", "vel_err"}), "barrier": frozenset({"vel_err"})}

@dataclass(frozen=True)
class EvalConfig:
    """Evaluation parameters; defaults are nuScenes ``detection_cvpr_2019``."""

    dist_ths_m: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    dist_th_tp_m: float = 2.0
    min_recall: float = 0.1
    min_precision: float = 0.1
    mean_ap_weight: float = 5.0
    # None: no range filter; otherwise every evaluated class needs an entry
    class_range_m: Mapping[str, float] | None = field(
        default_factory=lambda: dict(DEFAULT_CLASS_RANGE_M))

    def __post_init__(self) -> None:
        if not self.dist_ths_m or any(not th > 0 for th in self.dist_ths_m):
            raise ConfigError(f"EvalConfig.dist_ths_m must be positive, got {self.dist_ths_m!r}")
        if self.dist_th_tp_m not in self.dist_ths_m:
            raise ConfigError(f"EvalConfig.dist_th_tp_m {self.dist_th_tp_m} must be one of "
                              f"dist_ths_m {self.dist_ths_m}")
        for name in ("min_recall", "min_precision"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"EvalConfig.{name} must be in [0, 1), got "
                                  f"{getattr(self, name)!r}")
        if not self.mean_ap_weight >= 0:
            raise ConfigError(f"EvalConfig.mean_ap_weight must be >= 0, got "
                              f"{self.mean_ap_weight!r}")


@dataclass
class DetectionMetrics:
    """Per-class AP and TP errors, and the nuScenes summaries derived from them."""

    class_names: tuple[str, ...]
    config: EvalConfig
    label_aps: dict[str, dict[float, float]]  # class → distance threshold → AP
    label_tp_errors: dict[str, dict[str, float]]  # class → TP error name → error (NaN: n/a)
    num_gt: dict[str, int]  # after filtering
    num_predictions: dict[str, int]  # after filtering
    frames: int

    @property
    def evaluated_classes(self) -> tuple[str, ...]:
        """Classes with ground truth in the evaluated frames (all of them if none has any).

        nuScenes never lacks a class; short synthetic sets can (a drive without trucks).
        The devkit would score such a class AP 0 and TP errors 1 and so penalise the
        model for objects that were not there; the class means leave it out instead and
        the JSON lists it under ``classes_without_gt``. Per-class values are unchanged.
        """
        present = tuple(c for c in self.class_names if self.num_gt[c] > 0)
        return present or self.class_names

    @property
    def mean_ap(self) -> float:
        """AP averaged over distance thresholds, then over the evaluated classes."""
        return float(np.mean([np.mean(list(self.label_aps[c].values()))
                              for c in self.evaluated_classes]))

    @property
    def tp_errors(self) -> dict[str, float]:
        """Each TP error averaged over the evaluated classes where it is defined."""
        return {name: _nanmean([self.label_tp_errors[c][name] for c in self.evaluated_classes])
                for name in TP_ERROR_NAMES}

    @property
    def nd_score(self) -> float:
        """NDS over the four TP metrics we have (see module docstring)."""
        tp_scores = [max(0.0, 1.0 - err) for err in self.tp_errors.values()]
        return ((self.config.mean_ap_weight * self.mean_ap + sum(tp_scores))
                / (self.config.mean_ap_weight + len(tp_scores)))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary; undefined values (NaN) become null."""
        tp = self.tp_errors
        per_class = {}
        for c in self.class_names:
            entry: dict[str, Any] = {"AP": _json_float(np.mean(list(self.label_aps[c].values())))}
            entry.update({f"AP@{th:.1f}": _json_float(ap) for th, ap in self.label_aps[c].items()})
            entry.update({TP_METRIC_LABELS[name]: _json_float(self.label_tp_errors[c][name])
                          for name in TP_ERROR_NAMES})
            entry.update(num_gt=self.num_gt[c], num_predictions=self.num_predictions[c])
            per_class[c] = entry
        summary = {"mAP": _json_float(self.mean_ap), "NDS": _json_float(self.nd_score)}
        summary.update({f"m{TP_METRIC_LABELS[name]}": _json_float(tp[name])
                        for name in TP_ERROR_NAMES})
        summary.update(per_class=per_class, frames=self.frames,
                       classes_without_gt=[c for c in self.class_names if c not in self.evaluated_classes],
                       **_notes(self.config))
        return summary


def filter_by_range(boxes: Boxes3D, class_range_m: Mapping[str, float]) -> Boxes3D:
    """Boxes strictly closer (ego xy distance) than their class's evaluation range."""
    missing = sorted(set(boxes.class_names) - set(class_range_m))
    if missing:
        raise ConfigError(f"class_range_m has no range for classes {missing}")
    max_dist = np.array([class_range_m[c] for c in boxes.class_names], dtype=float)
    return boxes.select(_in_range(boxes.centers, max_dist))


def evaluate_detections(predictions: Sequence[Boxes3D], ground_truth: Sequence[Boxes3D],
                        class_names: Sequence[str] = CLASS_NAMES, config: EvalConfig | None = None,
                        gt_num_lidar_points: Sequence[np.ndarray] | None = None
                        ) -> DetectionMetrics:
    """nuScenes detection metrics of per-frame predictions against per-frame ground truth.

    ``predictions[i]`` and ``ground_truth[i]`` are the same frame, in the ego frame.
    Boxes of classes not in ``class_names`` are ignored. ``gt_num_lidar_points[i]`` (optional)
    holds the lidar point count of each GT box of frame i; boxes with 0 points are dropped.
    """
    config = config or EvalConfig()
    class_names = tuple(class_names)
    _check_inputs(predictions, ground_truth, class_names, config, gt_num_lidar_points)
    gt, gt_class = _flatten(ground_truth, class_names, with_scores=False)
    pred, pred_class = _flatten(predictions, class_names, with_scores=True)
    gt_keep, pred_keep = gt_class >= 0, pred_class >= 0
    if gt_num_lidar_points is not None:
        gt_keep &= np.concatenate([np.asarray(p).reshape(-1) for p in gt_num_lidar_points]) != 0
    if config.class_range_m is not None:
        max_dist = np.array([config.class_range_m[c] for c in class_names] + [np.inf])
        gt_keep &= _in_range(gt.centers, max_dist[gt_class])
        pred_keep &= _in_range(pred.centers, max_dist[pred_class])

    label_aps: dict[str, dict[float, float]] = {}
    label_tp_errors: dict[str, dict[str, float]] = {}
    num_gt, num_predictions = {}, {}
    for k, c in enumerate(class_names):
        gt_c, pred_c = gt.take(gt_keep & (gt_class == k)), pred.take(pred_keep & (pred_class == k))
        num_gt[c], num_predictions[c] = len(gt_c.frame), len(pred_c.frame)
        curves = {th: accumulate(gt_c, pred_c, c, len(ground_truth), th)
                  for th in config.dist_ths_m}
        label_aps[c] = {th: calc_ap(curves[th], config.min_recall, config.min_precision)
                        for th in config.dist_ths_m}
        tp_curves = curves[config.dist_th_tp_m]
        label_tp_errors[c] = {
            name: (math.nan if name in UNDEFINED_TP_ERRORS.get(c, ())
                   else calc_tp(tp_curves, config.min_recall, name))
            for name in TP_ERROR_NAMES}
    return DetectionMetrics(class_names, config, label_aps, label_tp_errors, num_gt,
                            num_predictions, len(ground_truth))


def _check_inputs(predictions: Sequence[Boxes3D], ground_truth: Sequence[Boxes3D],
                  class_names: tuple[str, ...], config: EvalConfig,
                  gt_num_lidar_points: Sequence[np.ndarray] | None) -> None:
    """Raise a typed error naming the first frame or setting that cannot be evaluated."""
    if not ground_truth:
        raise EvaluationInputError("no frames to evaluate")
    if len(predictions) != len(ground_truth):
        raise EvaluationInputError(f"{len(predictions)} prediction frames but "
                                   f"{len(ground_truth)} ground-truth frames")
    if gt_num_lidar_points is not None and len(gt_num_lidar_points) != len(ground_truth):
        raise EvaluationInputError(f"gt_num_lidar_points has {len(gt_num_lidar_points)} frames, "
                                   f"ground truth {len(ground_truth)}")
    if not class_names or len(set(class_names)) != len(class_names):
        raise ConfigError(f"class_names must be non-empty and unique, got {class_names!r}")
    if config.class_range_m is not None:
        missing = [c for c in class_names if c not in config.class_range_m]
        if missing:
            raise ConfigError(f"EvalConfig.class_range_m has no range for classes {missing}")
    for i, (pred, gt) in enumerate(zip(predictions, ground_truth)):
        if len(pred) and (pred.scores is None or not np.all(np.isfinite(pred.scores))):
            raise EvaluationInputError(f"frame {i}: predictions need finite scores")
        if gt_num_lidar_points is not None and np.shape(gt_num_lidar_points[i]) != (len(gt),):
            raise EvaluationInputError(f"frame {i}: gt_num_lidar_points has shape "
                                       f"{np.shape(gt_num_lidar_points[i])}, expected ({len(gt)},)")
        for kind, boxes in (("ground truth", gt), ("prediction", pred)):
            if not np.all(boxes.sizes > 0):
                raise EvaluationInputError(f"frame {i}: {kind} box sizes must be > 0")


def _flatten(frames: Sequence[Boxes3D], class_names: tuple[str, ...], with_scores: bool
             ) -> tuple[ClassBoxes, np.ndarray]:
    """All frames' boxes concatenated in frame order, and each box's class index (-1: other)."""
    lookup = {c: k for k, c in enumerate(class_names)}
    class_index = np.array([lookup.get(c, -1) for b in frames for c in b.class_names], np.int64)
    frame = np.repeat(np.arange(len(frames), dtype=np.int64), [len(b) for b in frames])

    def cat(attr: str, width: tuple[int, ...]) -> np.ndarray:
        arrays = [getattr(b, attr) for b in frames if len(b)]
        return np.concatenate(arrays) if arrays else np.zeros((0, *width))

    boxes = ClassBoxes(frame, cat("centers", (3,)), cat("sizes", (3,)), cat("yaws", ()),
                       cat("velocities", (2,)), cat("scores", ()) if with_scores else None)
    return boxes, class_index


def _in_range(centers: np.ndarray, max_dist: np.ndarray) -> np.ndarray:
    """Ego xy distance strictly below max_dist (devkit ``ego_dist < class_range``)."""
    return np.linalg.norm(centers[:, :2], axis=1) < max_dist


def _notes(cfg: EvalConfig) -> dict[str, str]:
    """What the numbers mean, written next to them in every JSON result."""
    weight = cfg.mean_ap_weight
    ranges = (f"boxes at or beyond the class range {dict(cfg.class_range_m)} m (ego xy distance)"
              if cfg.class_range_m is not None else "no range filter")
    return {
        "nds_note": (f"NDS = ({weight:g}*mAP + sum over ATE, ASE, AOE, AVE of max(0, 1 - mTP)) / "
                     f"{weight + 4:g}. Attributes are not predicted, so AAE is omitted and NDS "
                     "is normalised over 4 TP metrics instead of the leaderboard's 5: not "
                     "directly comparable to published nuScenes NDS."),
        "notes": (f"AP at 2D centre-distance thresholds {list(cfg.dist_ths_m)} m, 101-point "
                  f"interpolation, min recall {cfg.min_recall:g}, min precision "
                  f"{cfg.min_precision:g}; TP errors of the matches at {cfg.dist_th_tp_m:g} m. "
                  f"Removed before matching: {ranges}, and GT boxes with 0 lidar points. "
                  "Classes without GT score AP 0 and TP errors 1 (devkit) but are left out of "
                  "the class means (classes_without_gt). null: error undefined for the class "
                  "(traffic_cone AOE/AVE)."),
    }


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
