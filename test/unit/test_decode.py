"""Decode on hand-made head outputs gives exactly the boxes put in."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS
from bev_quant_ros.errors import ConfigError, ModelContractError
from bev_quant_ros.evaluation.metrics import EvalConfig, evaluate_detections
from bev_quant_ros.perception.box_decoding import (
    DecodeConfig,
    cell_centers,
    center_to_cell_offset,
    decode,
    offset_to_center,
)
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D

# 10 rows × 2 m along x, 40 columns × 1 m along y: unequal cells catch x/y mix-ups
HO, WO = 10, 40
CONFIG = DecodeConfig(x_range_m=(-10.0, 10.0), y_range_m=(-20.0, 20.0))


def config_with(**changes) -> DecodeConfig:
    return dataclasses.replace(CONFIG, **changes)
CH = {name: i for i, name in enumerate(BOX_REG_CHANNELS)}


def empty_outputs() -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.zeros((len(CLASS_NAMES), HO, WO), np.float32)
    box_reg = np.zeros((len(BOX_REG_CHANNELS), HO, WO), np.float32)
    box_reg[CH["cos_yaw"]] = 1.0
    return heatmap, box_reg


def put(heatmap, box_reg, cls, row, col, score, offset=(0.0, 0.0), z=0.0, size=(1.0, 1.0, 1.0),
        yaw=0.0, vel=(0.0, 0.0), yaw_norm=1.0) -> None:
    heatmap[CLASS_NAMES.index(cls), row, col] = score
    values = {"offset_x": offset[0], "offset_y": offset[1], "z": z, "log_l": math.log(size[0]),
              "log_w": math.log(size[1]), "log_h": math.log(size[2]),
              "sin_yaw": yaw_norm * math.sin(yaw), "cos_yaw": yaw_norm * math.cos(yaw),
              "vel_x": vel[0], "vel_y": vel[1]}
    for name, value in values.items():
        box_reg[CH[name], row, col] = value


def test_single_peak_decodes_to_exact_box():
    heatmap, box_reg = empty_outputs()
    put(heatmap, box_reg, "truck", 3, 7, 0.9, offset=(0.25, -0.4), z=1.25,
        size=(8.0, 2.5, 3.0), yaw=0.7, vel=(3.0, -1.0), yaw_norm=2.0)
    heatmap[1, 2:5, 6:9] = np.maximum(heatmap[1, 2:5, 6:9], 0.5)  # a blob around the peak
    boxes = decode(heatmap, box_reg, CONFIG)
    assert boxes.class_names == ["truck"]
    np.testing.assert_allclose(boxes.scores, [0.9], rtol=1e-6)
    # x = -10 + (3 + 0.5 + 0.25) * 2 ; y = -20 + (7 + 0.5 - 0.4) * 1
    np.testing.assert_allclose(boxes.centers, [[-2.5, -12.9, 1.25]], atol=1e-6)
    np.testing.assert_allclose(boxes.sizes, [[8.0, 2.5, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(boxes.yaws, [0.7], atol=1e-6)
    np.testing.assert_allclose(boxes.velocities, [[3.0, -1.0]], atol=1e-6)


def test_peaks_on_the_grid_border_are_found():
    heatmap, box_reg = empty_outputs()
    put(heatmap, box_reg, "car", 0, 0, 0.8)
    put(heatmap, box_reg, "car", HO - 1, WO - 1, 0.7)
    boxes = decode(heatmap, box_reg, CONFIG)
    np.testing.assert_allclose(boxes.centers[:, :2], [[-9.0, -19.5], [9.0, 19.5]])


def test_same_class_within_radius_keeps_only_the_best():
    heatmap, box_reg = empty_outputs()
    # truck radius 2.0 m: columns 5 and 7 with offsets ±0.1 → centres 1.8 m apart
    put(heatmap, box_reg, "truck", 4, 5, 0.6, offset=(0.0, 0.1))
    put(heatmap, box_reg, "truck", 4, 7, 0.8, offset=(0.0, -0.1))
    boxes = decode(heatmap, box_reg, CONFIG)
    assert boxes.class_names == ["truck"]
    np.testing.assert_allclose(boxes.scores, [0.8], rtol=1e-6)
    np.testing.assert_allclose(boxes.centers[0, 1], 7 + 0.5 - 0.1 - 20.0)


def test_same_class_outside_radius_keeps_both():
    heatmap, box_reg = empty_outputs()
    put(heatmap, box_reg, "truck", 4, 5, 0.6, offset=(0.0, -0.1))
    put(heatmap, box_reg, "truck", 4, 7, 0.8, offset=(0.0, 0.1))  # 2.2 m apart
    assert decode(heatmap, box_reg, CONFIG).class_names == ["truck", "truck"]


def test_different_classes_at_the_same_place_are_both_kept():
    heatmap, box_reg = empty_outputs()
    put(heatmap, box_reg, "pedestrian", 5, 20, 0.7)
    put(heatmap, box_reg, "bicycle", 5, 20, 0.6)
    boxes = decode(heatmap, box_reg, CONFIG)
    assert boxes.class_names == ["pedestrian", "bicycle"]
    np.testing.assert_allclose(boxes.centers[0], boxes.centers[1])


def test_score_threshold_is_inclusive_and_honoured():
    heatmap, box_reg = empty_outputs()
    put(heatmap, box_reg, "car", 2, 2, 0.1)
    put(heatmap, box_reg, "car", 6, 30, 0.0999)
    config = config_with(score_threshold=0.1)
    boxes = decode(heatmap.astype(np.float64), box_reg, config)
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes.scores, [0.1])


def test_max_detections_keeps_the_highest_scores_in_order():
    heatmap, box_reg = empty_outputs()
    scores = [0.3, 0.9, 0.5, 0.7, 0.2]
    for i, score in enumerate(scores):
        put(heatmap, box_reg, "car", 1 + 2 * i, 4 + 6 * i, score)
    config = config_with(max_detections=3)
    boxes = decode(heatmap, box_reg, config)
    np.testing.assert_allclose(boxes.scores, [0.9, 0.7, 0.5], rtol=1e-6)
    assert len(decode(heatmap, box_reg, CONFIG)) == 5


def test_only_local_maxima_become_candidates():
    heatmap, box_reg = empty_outputs()
    car = CLASS_NAMES.index("car")
    heatmap[car, 5, 10:20] = np.linspace(0.2, 0.6, 10)  # a ramp: one maximum at its end
    heatmap[car, 5, 25:28] = 0.5  # plateau: NMS keeps every other cell
    config = config_with(nms_center_distance_m=1.5)
    boxes = decode(heatmap, box_reg, config)
    np.testing.assert_allclose(boxes.centers[:, 1], [19.5 - 20.0, 25.5 - 20.0, 27.5 - 20.0])


def test_nan_heatmap_is_no_detection_and_nan_box_is_dropped_without_suppressing():
    heatmap, box_reg = empty_outputs()
    heatmap[0, 1, 1] = np.nan
    put(heatmap, box_reg, "car", 5, 10, 0.9)
    box_reg[CH["z"], 5, 10] = np.nan
    put(heatmap, box_reg, "car", 5, 11, 0.8, offset=(0.0, -0.8))  # 0.2 m from the NaN box
    boxes = decode(heatmap, box_reg, config_with(peak_kernel=1))
    np.testing.assert_allclose(boxes.scores, [0.8], rtol=1e-6)


@pytest.mark.parametrize("heatmap_shape, reg_shape", [
    ((len(CLASS_NAMES) + 1, HO, WO), (len(BOX_REG_CHANNELS), HO, WO)),
    ((len(CLASS_NAMES), HO, WO), (len(BOX_REG_CHANNELS) - 1, HO, WO)),
    ((len(CLASS_NAMES), HO, WO), (len(BOX_REG_CHANNELS), HO, WO + 1)),
    ((HO, WO), (len(BOX_REG_CHANNELS), HO, WO)),
])
def test_wrong_shapes_raise_model_contract_error(heatmap_shape, reg_shape):
    with pytest.raises(ModelContractError):
        decode(np.zeros(heatmap_shape, np.float32), np.zeros(reg_shape, np.float32), CONFIG)


@pytest.mark.parametrize("field, value", [
    ("x_range_m", (5.0, -5.0)), ("y_range_m", (0.0, float("nan"))), ("class_names", ()),
    ("class_names", ("car", "car")), ("score_threshold", 0.0), ("max_detections", 0),
    ("max_candidates", 2.5), ("peak_kernel", 4), ("nms_center_distance_m", -1.0),
    ("nms_center_distance_m", {"car": 1.0}),
])
def test_bad_config_field_is_named(field, value):
    kwargs = {"x_range_m": (-10.0, 10.0), "y_range_m": (-20.0, 20.0), field: value}
    with pytest.raises(ConfigError, match=field):
        DecodeConfig(**kwargs)


def test_cell_helpers_are_exact_inverses():
    x_centres, y_centres = cell_centers(CONFIG, HO, WO)
    np.testing.assert_allclose(x_centres, -9.0 + 2.0 * np.arange(HO))
    np.testing.assert_allclose(y_centres, -19.5 + np.arange(WO))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-12, 12, 500), rng.uniform(-22, 22, 500)
    cell = center_to_cell_offset(CONFIG, HO, WO, x, y)
    assert np.all((cell.offset_x >= -0.5) & (cell.offset_x < 0.5))
    assert np.all((cell.offset_y >= -0.5) & (cell.offset_y < 0.5))
    np.testing.assert_array_equal(cell.inside, (np.abs(x) < 10) & (np.abs(y) < 20))
    back_x, back_y = offset_to_center(CONFIG, HO, WO, cell.rows, cell.cols,
                                      cell.offset_x, cell.offset_y)
    np.testing.assert_allclose(back_x, x, atol=1e-12)
    np.testing.assert_allclose(back_y, y, atol=1e-12)


def test_boxes_encoded_with_the_helpers_decode_back_and_score_perfectly():
    rng = np.random.default_rng(7)
    config = DecodeConfig(x_range_m=(-51.2, 51.2), y_range_m=(-51.2, 51.2))
    num_cells = 64
    # one object per 4×4-cell block, so peaks and NMS radii never interact
    rows = rng.permutation(16)[:12] * 4 + 1
    cols = rng.permutation(16)[:12] * 4 + 2
    names = [CLASS_NAMES[i % len(CLASS_NAMES)] for i in range(12)]
    x, y = offset_to_center(config, num_cells, num_cells, rows, cols,
                            *rng.uniform(-0.5, 0.5, (2, 12)))
    gt = Boxes3D(np.c_[x, y, rng.uniform(0, 2, 12)], rng.uniform(0.3, 9, (12, 3)),
                 rng.uniform(-np.pi, np.pi, 12), rng.normal(0, 4, (12, 2)), names)

    cell = center_to_cell_offset(config, num_cells, num_cells, gt.centers[:, 0], gt.centers[:, 1])
    assert cell.inside.all()
    heatmap = np.zeros((len(CLASS_NAMES), num_cells, num_cells), np.float32)
    box_reg = np.zeros((len(BOX_REG_CHANNELS), num_cells, num_cells), np.float64)
    heatmap[[CLASS_NAMES.index(n) for n in names], cell.rows, cell.cols] = 0.5
    targets = np.stack([cell.offset_x, cell.offset_y, gt.centers[:, 2], *np.log(gt.sizes.T),
                        np.sin(gt.yaws), np.cos(gt.yaws), *gt.velocities.T])
    box_reg[:, cell.rows, cell.cols] = targets
    detections = decode(heatmap, box_reg, config)

    order = np.lexsort((detections.centers[:, 1], detections.centers[:, 0]))
    expected = np.lexsort((gt.centers[:, 1], gt.centers[:, 0]))
    np.testing.assert_allclose(detections.centers[order], gt.centers[expected], atol=1e-9)
    np.testing.assert_allclose(detections.sizes[order], gt.sizes[expected], rtol=1e-9)
    np.testing.assert_allclose(detections.yaws[order], gt.yaws[expected], atol=1e-9)
    np.testing.assert_allclose(detections.velocities[order], gt.velocities[expected], atol=1e-9)
    # the grid reaches past the nuScenes class ranges: evaluate everything on it
    metrics = evaluate_detections([detections], [gt], config=EvalConfig(class_range_m=None))
    metrics = metrics.to_json()
    assert metrics["mAP"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["mATE"] == pytest.approx(0.0, abs=1e-9)
