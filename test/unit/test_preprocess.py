"""Preprocessing: camera sampling grid, lidar raster with motion compensation, ego-motion affine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.geometry import invert_transform, load_rig
from bev_quant_ros.perception.model_config import load_model_config
from bev_quant_ros.perception.preprocess import (
    OUTSIDE_IMAGE,
    bev_points,
    camera_image_grids,
    camera_sampling_grid,
    canvas_x,
    ego_motion_affine,
    lidar_bev,
    prepare_images,
)

ROOT = Path(__file__).resolve().parents[2]
CFG = load_model_config(ROOT / "models" / "bev_tiny.yaml")  # 0.8 m cells, x/y in [-51.2, 51.2)
RIG = load_rig(ROOT / "config" / "rig_nuscenes.yaml")


def translation(x: float, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def test_ego_motion_affine_forward_translation_is_analytic():
    d = 4.0  # metres forward between prev and current
    theta = ego_motion_affine(np.eye(4), translation(d), CFG)
    # grid x (columns, ego y) unchanged; grid y (rows, ego x) shifted by d / half-range
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, d / 51.2]], np.float32)
    np.testing.assert_allclose(theta, expected, atol=1e-7)


def test_ego_motion_affine_rotation_maps_cells_like_the_pose():
    yaw = np.deg2rad(10.0)
    T_curr = translation(2.0, 1.0)
    T_curr[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    theta = ego_motion_affine(np.eye(4), T_curr, CFG).astype(np.float64)
    p_curr = np.array([10.0, -5.0])  # a ground point in the current ego frame
    p_prev = (T_curr @ np.array([*p_curr, 0.0, 1.0]))[:2]

    def to_norm(p: np.ndarray) -> np.ndarray:
        return np.array([p[1] / 51.2, p[0] / 51.2])  # (col, row) normalised

    np.testing.assert_allclose(theta @ np.array([*to_norm(p_curr), 1.0]), to_norm(p_prev), atol=1e-6)


def test_cam_grid_matches_rig_projection_on_the_camera_canvas():
    grid = camera_sampling_grid(RIG, CFG)
    assert grid.shape == (CFG.Z * CFG.Ho, CFG.Wo, 2) and grid.dtype == np.float32
    z_index, h, w = 2, 50, 30  # a cell 29.6 m ahead, 2.4 m right -> seen only by CAM_FRONT (camera 0)
    xs, ys = CFG.bev_cell_centers(CFG.output_stride)
    point = np.array([[xs[h], ys[w], CFG.z_values_m[z_index]]])
    uv, _ = RIG.project(point)
    cam = RIG.cameras[0]
    image_xy = [(2 * uv[0, 0, 0] + 1) / cam.width - 1, (2 * uv[0, 0, 1] + 1) / cam.height - 1]
    # camera 0 owns the first sixth of the canvas width: x in [-1, -2/3]
    expected = [-1 + (image_xy[0] + 1) / 6, image_xy[1]]
    np.testing.assert_allclose(grid[z_index * CFG.Ho + h, w], expected, atol=1e-6)
    assert np.abs(image_xy).max() < 1


def test_cam_grid_overlap_cell_samples_the_camera_it_is_most_central_in():
    grids = camera_image_grids(RIG, bev_points(CFG, CFG.output_stride).reshape(-1, 3))
    seen = (grids[..., 0] != OUTSIDE_IMAGE)
    overlap = np.flatnonzero(seen.sum(axis=0) == 2)
    assert overlap.size > 0  # neighbouring cameras overlap
    i = overlap[0]
    cams = np.flatnonzero(seen[:, i])
    best = cams[np.argmin(np.abs(grids[cams, i]).max(axis=-1))]
    got = camera_sampling_grid(RIG, CFG).reshape(-1, 2)[i]
    np.testing.assert_allclose(got, [canvas_x(best, grids[best, i, 0]), grids[best, i, 1]], atol=1e-6)


def test_cam_grid_every_cell_in_range_is_seen_by_some_camera():
    grid = camera_sampling_grid(RIG, CFG)
    seen = (np.abs(grid) <= 1).all(-1).reshape(CFG.Z, CFG.Ho, CFG.Wo)
    xs, ys = CFG.bev_cell_centers(CFG.output_stride)
    ring = (np.hypot(*np.meshgrid(xs, ys, indexing="ij")) > 10) & (np.hypot(*np.meshgrid(xs, ys, indexing="ij")) < 40)
    assert seen[1][ring].mean() > 0.97  # the nuScenes-like rig covers 360 deg


def _lidar_points(ego_xyz: np.ndarray, t: np.ndarray) -> np.ndarray:
    T_lidar_ego = invert_transform(RIG.T_ego_lidar)
    p = (T_lidar_ego[:3, :3] @ ego_xyz.T).T + T_lidar_ego[:3, 3]
    return np.column_stack([p, np.full(len(p), 0.7 * 255), t]).astype(np.float32)


def test_lidar_point_lands_in_expected_cell_and_slice():
    points = _lidar_points(np.array([[20.2, -3.0, 1.5]]), np.zeros(1))
    raster = lidar_bev(points, RIG.T_ego_lidar, np.eye(4), np.eye(4), 0.0, CFG)
    h, w = int((20.2 + 51.2) / 0.8), int((-3.0 + 51.2) / 0.8)  # 89, 60
    occupied = np.argwhere(raster[:CFG.Cl - 3] > 0)
    np.testing.assert_array_equal(occupied, [[2, h, w]])  # z bin [1.0, 2.0)
    assert raster[-3, h, w] == pytest.approx(0.7)  # max intensity
    assert raster[-2, h, w] == pytest.approx(np.log(2) / np.log(64))  # one point
    assert raster[:, :, :].sum() == pytest.approx(1 + 0.7 + np.log(2) / np.log(64))  # lag 0


def test_motion_compensation_moves_point_by_ego_displacement():
    # ego drives forward at 16 m/s: in 50 ms it moves 0.8 m, one cell
    x = np.array([[20.2, 0.4, 1.5]] * 2)
    points = _lidar_points(x, np.array([0.0, -0.05]))
    # same stamp for camera and sweep: the velocity comes from odometry
    raster = lidar_bev(points, RIG.T_ego_lidar, np.eye(4), np.eye(4), 0.0, CFG,
                       ego_velocity_xy_yawrate=np.array([16.0, 0.0, 0.0]))
    rows = sorted(np.argwhere(raster[2] > 0)[:, 0].tolist())
    assert rows == [88, 89]  # 20.2 m stays, captured 50 ms earlier -> 19.4 m
    # camera 50 ms after the sweep: both shift one more cell back, velocity from the two poses
    raster = lidar_bev(points, RIG.T_ego_lidar, np.eye(4), translation(0.8), 0.05, CFG)
    rows = sorted(np.argwhere(raster[2] > 0)[:, 0].tolist())
    assert rows == [87, 88]
    lag = raster[-1][raster[2] > 0]
    np.testing.assert_allclose(sorted(lag), [0.05 / 0.2, 0.1 / 0.2], atol=1e-6)


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(InvalidMessageError):
        lidar_bev(np.zeros((4, 3), np.float32), RIG.T_ego_lidar, np.eye(4), np.eye(4), 0.0, CFG)
    with pytest.raises(InvalidMessageError):
        prepare_images(np.zeros((5, 45, 80, 3), np.uint8), CFG)


def test_prepare_images_resizes_to_model_input():
    small = dataclasses.replace(CFG, image_height=45, image_width=80)
    images = np.zeros((6, 450, 800, 3), np.uint8)
    images[2, :, :400, 0] = 200  # left half red in camera 2
    out = prepare_images(images, small)
    assert out.shape == (6, 3, 45, 80) and out.dtype == np.float32
    np.testing.assert_array_equal(out[2, 0, :, :40], 200)
    np.testing.assert_array_equal(out[2, 0, :, 40:], 0)
    assert out[[0, 1, 3, 4, 5]].max() == 0


def test_prepare_images_averages_when_shrinking_2x_and_interpolates_below():
    small = dataclasses.replace(CFG, image_height=2, image_width=2)
    stripes = np.zeros((6, 4, 4, 3), np.uint8)
    stripes[:, :, 1::2] = 200  # columns alternate 0 / 200
    np.testing.assert_array_equal(prepare_images(stripes, small), 100)  # area average of each 2x2 block
    near = dataclasses.replace(CFG, image_height=3, image_width=3)  # 4 -> 3: bilinear between columns
    out = prepare_images(stripes, near)[0, 0, 0]  # samples at x = 1/6, 3/2, 17/6 (area would give 50, 100, 150)
    np.testing.assert_allclose(out, [200 / 6, 100, 200 * 5 / 6], atol=1.0)
