"""CenterPoint targets: encode -> decode returns the ground-truth boxes; focal loss behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bev_quant_ros.model.targets import draw_gaussian, encode_targets, gaussian_radius
from bev_quant_ros.perception.box_decoding import DecodeConfig, decode
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.model_config import load_model_config

ROOT = Path(__file__).resolve().parents[2]
CFG = load_model_config(ROOT / "models" / "bev_tiny.yaml")


def _gt() -> Boxes3D:
    return Boxes3D(
        centers=np.array([[10.3, -4.1, 0.8], [-22.0, 15.7, 1.6], [5.05, 5.05, 0.9], [40.0, -30.0, 0.35]]),
        sizes=np.array([[4.5, 1.9, 1.6], [9.0, 2.6, 3.2], [0.7, 0.7, 1.8], [0.4, 0.4, 0.7]]),
        yaws=np.array([0.3, -2.8, 1.2, 0.0]),
        velocities=np.array([[8.0, -0.5], [-3.0, 2.0], [1.0, 0.2], [0.0, 0.0]]),
        class_names=["car", "truck", "pedestrian", "traffic_cone"])


def test_encode_then_decode_returns_ground_truth():
    gt = _gt()
    targets = encode_targets(gt, CFG)
    assert targets.reg_mask.sum() == len(gt)
    assert (targets.heatmap == 1.0).sum() == len(gt)  # exactly one peak per object
    det = decode(targets.heatmap, targets.box_reg,
                 DecodeConfig(x_range_m=CFG.x_range_m, y_range_m=CFG.y_range_m, class_names=CFG.classes))
    assert len(det) == len(gt)
    order = [det.class_names.index(c) for c in gt.class_names]
    det = det.select(np.array(order))
    np.testing.assert_allclose(det.centers, gt.centers, atol=1e-5)
    np.testing.assert_allclose(det.sizes, gt.sizes, rtol=1e-5)
    np.testing.assert_allclose(det.yaws, gt.yaws, atol=1e-6)
    np.testing.assert_allclose(det.velocities, gt.velocities, atol=1e-6)
    np.testing.assert_allclose(det.scores, 1.0)


def test_boxes_off_grid_are_skipped():
    gt = _gt()
    gt.centers[0, 0] = 60.0  # beyond x_max = 51.2
    assert encode_targets(gt, CFG).reg_mask.sum() == len(gt) - 1


def test_gaussian_radius_grows_with_box_and_peak_is_one():
    assert gaussian_radius(6.0, 2.5) > gaussian_radius(3.0, 1.2) > 0
    plane = np.zeros((9, 9), np.float32)
    draw_gaussian(plane, 0, 4, radius=2)  # clipped at the top border
    assert plane[0, 4] == 1.0 and plane[2, 4] == pytest.approx(np.exp(-4 / (2 * (5 / 6) ** 2)), rel=1e-6)
    assert plane[3:].max() == 0.0
