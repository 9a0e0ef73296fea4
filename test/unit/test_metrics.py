"""nuScenes detection metrics: exact numbers on hand-made frames, agreement with the devkit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bev_quant_ros.errors import ConfigError, EvaluationInputError
from bev_quant_ros.evaluation.metrics import DEFAULT_CLASS_RANGE_M, EvalConfig, evaluate_detections, filter_by_range
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D

SIZE = {"car": (4.5, 1.9, 1.6), "truck": (8.0, 2.6, 3.2), "pedestrian": (0.7, 0.7, 1.8),
        "bicycle": (1.8, 0.6, 1.3), "traffic_cone": (0.4, 0.4, 0.8)}


def boxes(rows: list[tuple], scores: list[float] | None = None) -> Boxes3D:
    """rows: (class, x, y, yaw, vx, vy[, size]) → Boxes3D."""
    if not rows:
        return Boxes3D.empty(with_scores=scores is not None)
    sizes = [r[6] if len(r) > 6 else SIZE[r[0]] for r in rows]
    return Boxes3D(np.array([[r[1], r[2], 0.8] for r in rows], float), np.array(sizes, float),
                   np.array([r[3] for r in rows], float), np.array([[r[4], r[5]] for r in rows],
                                                                  float),
                   [r[0] for r in rows], None if scores is None else np.array(scores, float))


def as_detections(gt: Boxes3D, score: float = 0.9) -> Boxes3D:
    return Boxes3D(gt.centers.copy(), gt.sizes.copy(), gt.yaws.copy(), gt.velocities.copy(),
                   list(gt.class_names), np.full(len(gt), score))


def test_perfect_predictions_score_one_and_zero_errors():
    rng = np.random.default_rng(3)
    gts = [boxes([(c, *rng.uniform(-25, 25, 2), rng.uniform(-3, 3), *rng.normal(size=2))
                  for c in CLASS_NAMES for _ in range(2)]) for _ in range(4)]
    metrics = evaluate_detections([as_detections(g) for g in gts], gts)
    out = metrics.to_json()
    assert out["frames"] == 4
    assert out["mAP"] == pytest.approx(1.0, abs=1e-12)
    assert out["NDS"] == pytest.approx(1.0, abs=1e-12)
    for c in CLASS_NAMES:
        entry = out["per_class"][c]
        assert entry["num_gt"] == 8 and entry["num_predictions"] == 8
        for key in ("AP", "AP@0.5", "AP@1.0", "AP@2.0", "AP@4.0"):
            assert entry[key] == pytest.approx(1.0, abs=1e-12)
        assert entry["ATE"] == pytest.approx(0.0, abs=1e-12)
        assert entry["ASE"] == pytest.approx(0.0, abs=1e-12)
    assert out["per_class"]["traffic_cone"]["AOE"] is None
    assert out["per_class"]["traffic_cone"]["AVE"] is None
    assert out["per_class"]["car"]["AOE"] == pytest.approx(0.0, abs=1e-12)
    assert "AAE" in out["nds_note"] and "/ 9." in out["nds_note"]


def test_false_positive_with_the_highest_score_gives_ap_0_2():
    # recall 0 → 1 while precision rises 0 → 0.5: interpolated precision is r/2, whose
    # clipped mean over recall 0.11..1.00 is 0.18, i.e. AP = 0.18 / 0.9 = 0.2
    gt = boxes([("car", 10.0, 0.0, 0.0, 0.0, 0.0)])
    pred = boxes([("car", 30.0, 0.0, 0.0, 0.0, 0.0), ("car", 10.0, 0.0, 0.0, 0.0, 0.0)],
                 scores=[0.9, 0.5])
    metrics = evaluate_detections([pred], [gt], class_names=("car",))
    for th in (0.5, 1.0, 2.0, 4.0):
        assert metrics.label_aps["car"][th] == pytest.approx(0.2, abs=1e-12)
    assert metrics.label_tp_errors["car"]["trans_err"] == pytest.approx(0.0, abs=1e-12)


def test_offset_of_1_5_m_matches_at_2_m_not_at_1_m_with_exact_tp_errors():
    gt = boxes([("car", 20.0, 5.0, 3.1, 1.0, 0.0, (4.0, 2.0, 1.5))])
    pred = boxes([("car", 21.5, 5.0, -3.1, 1.0, 2.0, (8.0, 2.0, 1.5))], scores=[0.7])
    metrics = evaluate_detections([pred], [gt], class_names=("car",))
    assert metrics.label_aps["car"] == pytest.approx({0.5: 0.0, 1.0: 0.0, 2.0: 1.0, 4.0: 1.0},
                                                     abs=1e-12)
    assert metrics.mean_ap == pytest.approx(0.5)
    errors = metrics.label_tp_errors["car"]
    assert errors["trans_err"] == pytest.approx(1.5)
    assert errors["scale_err"] == pytest.approx(0.5)  # twice the length: IoU 1/2
    assert errors["orient_err"] == pytest.approx(2 * math.pi - 6.2)  # across the ±π wrap
    assert errors["vel_err"] == pytest.approx(2.0)
    expected_nds = (5 * 0.5 + 0.0 + 0.5 + (1 - (2 * math.pi - 6.2)) + 0.0) / 9
    assert metrics.nd_score == pytest.approx(expected_nds)


def test_matching_is_per_frame_and_one_gt_is_taken_once():
    gt = [boxes([("pedestrian", 5.0, 5.0, 0.0, 0.0, 0.0)]), boxes([])]
    # frame 1 has no GT: its perfect-looking detection is a FP; the duplicate in frame 0 too
    pred = [boxes([("pedestrian", 5.0, 5.0, 0.0, 0.0, 0.0), ("pedestrian", 5.1, 5.0, 0, 0, 0)],
                  scores=[0.8, 0.6]),
            boxes([("pedestrian", 5.0, 5.0, 0.0, 0.0, 0.0)], scores=[0.9])]
    metrics = evaluate_detections(pred, gt, class_names=("pedestrian",))
    # order FP(0.9), TP(0.8), FP(0.6): the FP-first curve (clipped sum 16.2 over 90 points),
    # except that recall 1.0 is reached twice and interpolation takes the last precision, 1/3
    expected = (16.2 - (0.5 - 0.1) + (1 / 3 - 0.1)) / 90 / 0.9
    assert metrics.label_aps["pedestrian"][0.5] == pytest.approx(expected, abs=1e-12)


def test_range_filter_and_empty_gt_removal():
    gt = boxes([("car", 10.0, 0.0, 0, 0, 0), ("car", 0.0, 55.0, 0, 0, 0),
                ("traffic_cone", 29.0, 0.0, 0, 0, 0), ("traffic_cone", 0.0, -31.0, 0, 0, 0),
                ("pedestrian", 3.0, 3.0, 0, 0, 0)])
    # detects only the in-range boxes, plus a FP far beyond the car range
    pred = boxes([("car", 10.0, 0.0, 0, 0, 0), ("traffic_cone", 29.0, 0.0, 0, 0, 0),
                  ("car", 70.0, 0.0, 0, 0, 0)], scores=[0.5, 0.5, 0.9])
    points = [np.array([10, 3, 7, 1, 0])]  # the pedestrian has no lidar points
    classes = ("car", "traffic_cone", "pedestrian")
    metrics = evaluate_detections([pred], [gt], class_names=classes, gt_num_lidar_points=points)
    assert metrics.num_gt == {"car": 1, "traffic_cone": 1, "pedestrian": 0}
    assert metrics.num_predictions == {"car": 1, "traffic_cone": 1, "pedestrian": 0}
    assert metrics.label_aps["car"][2.0] == pytest.approx(1.0, abs=1e-12)
    assert metrics.label_aps["traffic_cone"][2.0] == pytest.approx(1.0, abs=1e-12)

    unfiltered = evaluate_detections([pred], [gt], class_names=classes,
                                     config=EvalConfig(class_range_m=None))
    assert unfiltered.num_gt == {"car": 2, "traffic_cone": 2, "pedestrian": 1}
    assert unfiltered.label_aps["car"][2.0] < 0.5
    assert unfiltered.label_aps["pedestrian"][2.0] == 0.0
    assert unfiltered.label_tp_errors["pedestrian"]["trans_err"] == 1.0  # devkit: no match → 1


def test_filter_by_range_is_strict_and_needs_every_class():
    edge = boxes([("car", 30.0, 40.0, 0, 0, 0), ("car", 29.9, 40.0, 0, 0, 0)])  # 50 m, 49.9 m
    assert len(filter_by_range(edge, DEFAULT_CLASS_RANGE_M)) == 1
    with pytest.raises(ConfigError, match="bus"):
        filter_by_range(Boxes3D(np.zeros((1, 3)), np.ones((1, 3)), np.zeros(1), np.zeros((1, 2)),
                                ["bus"]), DEFAULT_CLASS_RANGE_M)


def test_bad_inputs_raise_typed_errors():
    gt = boxes([("car", 1.0, 0.0, 0, 0, 0)])
    with pytest.raises(EvaluationInputError, match="frames"):
        evaluate_detections([], [gt])
    with pytest.raises(EvaluationInputError, match="no frames"):
        evaluate_detections([], [])
    with pytest.raises(EvaluationInputError, match="scores"):
        evaluate_detections([gt], [gt])
    zero = boxes([("car", 1.0, 0.0, 0, 0, 0, (0.0, 1.0, 1.0))], scores=[0.5])
    with pytest.raises(EvaluationInputError, match="sizes"):
        evaluate_detections([zero], [gt])
    with pytest.raises(EvaluationInputError, match="gt_num_lidar_points"):
        evaluate_detections([as_detections(gt)], [gt], gt_num_lidar_points=[np.array([1, 2])])
    with pytest.raises(ConfigError, match="dist_th_tp_m"):
        EvalConfig(dist_th_tp_m=3.0)
    with pytest.raises(ConfigError, match="class_range_m"):
        evaluate_detections([as_detections(gt)], [gt], class_names=("car", "bus"))


# ---------------------------------------------------------------------------------------
# Agreement with nuscenes-devkit on random boxes


def random_frames(seed: int, num_frames: int = 8) -> tuple[list[Boxes3D], list[Boxes3D],
                                                            list[np.ndarray]]:
    """GT with lidar counts and predictions: near matches at several offsets, FPs, duplicates,
    wrong classes, flipped headings, and scores on a coarse grid (many ties)."""
    rng = np.random.default_rng(seed)
    gts, preds, points = [], [], []
    for _ in range(num_frames):
        gt_rows, pred_rows = [], []
        for c in CLASS_NAMES:
            for _ in range(rng.poisson(4)):
                row = (c, *rng.uniform(-60, 60, 2), rng.uniform(-math.pi, math.pi),
                       *rng.normal(0, 3, 2), tuple(np.array(SIZE[c]) * rng.uniform(0.7, 1.3, 3)))
                gt_rows.append(row)
                for _ in range(rng.choice([0, 1, 1, 1, 2])):
                    sigma = rng.choice([0.1, 0.4, 0.9, 1.8, 3.5])
                    yaw = row[3] + rng.normal(0, 0.3) + (math.pi if rng.random() < 0.1 else 0)
                    cls = c if rng.random() > 0.1 else rng.choice(CLASS_NAMES)
                    pred_rows.append((cls, *(np.array(row[1:3]) + rng.normal(0, sigma, 2)), yaw,
                                      *(np.array(row[4:6]) + rng.normal(0, 1, 2)),
                                      tuple(np.array(row[6]) * rng.uniform(0.6, 1.5, 3))))
            for _ in range(rng.poisson(2)):
                pred_rows.append((c, *rng.uniform(-60, 60, 2), rng.uniform(-4, 4),
                                  *rng.normal(0, 3, 2), SIZE[c]))
        scores = list(np.round(rng.uniform(0.05, 1.0, len(pred_rows)) * 20) / 20)
        gts.append(boxes(gt_rows))
        preds.append(boxes(pred_rows, scores=scores))
        points.append(rng.choice([0, 1, 5, 30], size=len(gt_rows), p=[0.15, 0.25, 0.3, 0.3]))
    return gts, preds, points


def to_devkit(frames: list[Boxes3D], detection_box, eval_boxes_cls, quaternion,
              num_points: list[np.ndarray] | None = None):
    eval_boxes = eval_boxes_cls()
    for i, b in enumerate(frames):
        rows = []
        for j in range(len(b)):
            translation = tuple(float(v) for v in b.centers[j])
            rows.append(detection_box(
                sample_token=f"frame{i}", translation=translation,
                size=tuple(float(v) for v in b.sizes[j]),
                rotation=tuple(quaternion(axis=[0, 0, 1], angle=float(b.yaws[j])).elements),
                velocity=tuple(float(v) for v in b.velocities[j]), ego_translation=translation,
                num_pts=-1 if num_points is None else int(num_points[i][j]),
                detection_name=b.class_names[j],
                detection_score=-1.0 if b.scores is None else float(b.scores[j])))
        eval_boxes.add_boxes(f"frame{i}", rows)
    return eval_boxes


class _NoBikeRacks:
    """The one devkit NuScenes lookup filter_eval_boxes makes: sample → no annotations."""

    def get(self, table: str, token: str) -> dict:
        assert table == "sample"
        return {"anns": []}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_nuscenes_devkit(seed):
    reason = ("nuscenes-devkit not importable; install: pip install --no-deps "
              "nuscenes-devkit==1.2.0 and pyquaternion matplotlib scikit-learn tqdm cachetools")
    algo = pytest.importorskip("nuscenes.eval.detection.algo", reason=reason)
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import filter_eval_boxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion

    gts, preds, points = random_frames(seed)
    ours = evaluate_detections(preds, gts, gt_num_lidar_points=points)

    class_range = {**DEFAULT_CLASS_RANGE_M, "bus": 50, "trailer": 50, "construction_vehicle": 50,
                   "motorcycle": 40, "barrier": 30}
    gt_boxes = filter_eval_boxes(_NoBikeRacks(), to_devkit(gts, DetectionBox, EvalBoxes,
                                                           Quaternion, points), class_range)
    pred_boxes = filter_eval_boxes(_NoBikeRacks(), to_devkit(preds, DetectionBox, EvalBoxes,
                                                             Quaternion), class_range)
    checked = 0
    for c in CLASS_NAMES:
        for th in (0.5, 1.0, 2.0, 4.0):
            md = algo.accumulate(gt_boxes, pred_boxes, c, center_distance, th)
            assert ours.label_aps[c][th] == pytest.approx(algo.calc_ap(md, 0.1, 0.1), abs=1e-6)
            checked += 1
        md = algo.accumulate(gt_boxes, pred_boxes, c, center_distance, 2.0)
        for name in ("trans_err", "scale_err", "orient_err", "vel_err"):
            if c == "traffic_cone" and name in ("orient_err", "vel_err"):
                assert math.isnan(ours.label_tp_errors[c][name])
                continue
            assert ours.label_tp_errors[c][name] == pytest.approx(
                algo.calc_tp(md, 0.1, name), abs=1e-6), (c, name)
            checked += 1
    assert checked == 20 + 18
    # the random set exercises the interesting regimes, not only trivial ones
    aps = [ap for c in CLASS_NAMES for ap in ours.label_aps[c].values()]
    assert max(aps) > 0.3 and len({round(ap, 6) for ap in aps}) > 10


def test_classes_absent_from_ground_truth_are_left_out_of_the_means():
    rng = np.random.default_rng(4)
    gts = [boxes([("car", *rng.uniform(-25, 25, 2), rng.uniform(-3, 3), *rng.normal(size=2))
                  for _ in range(3)]) for _ in range(3)]
    out = evaluate_detections([as_detections(g) for g in gts], gts).to_json()
    assert out["classes_without_gt"] == ["truck", "pedestrian", "bicycle", "traffic_cone"]
    assert out["mAP"] == pytest.approx(1.0, abs=1e-12)  # the devkit's class mean would give 0.2
    assert out["NDS"] == pytest.approx(1.0, abs=1e-12)
    assert out["per_class"]["truck"]["AP"] == 0.0 and out["per_class"]["truck"]["num_gt"] == 0
