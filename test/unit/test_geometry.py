"""Rig loading, projection and transform helpers, checked against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.geometry import (
    CAMERA_ORDER,
    load_rig,
    matrix_to_translation_quaternion,
    pose_matrix,
    quaternion_to_yaw,
    yaw_to_quaternion,
)


@pytest.fixture(scope="module")
def rig():
    return load_rig()


def test_rig_layout(rig):
    assert rig.camera_names == CAMERA_ORDER
    assert all((cam.width, cam.height) == (800, 450) for cam in rig.cameras)
    assert rig.T_ego_lidar[2, 3] == pytest.approx(1.84)
    # front camera looks along +x: its optical z axis is ego +x
    np.testing.assert_allclose(rig.cameras[0].T_ego_cam[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)
    # front-left camera is yawed +55 deg (to the left)
    z_axis = rig.cameras[5].T_ego_cam[:3, 2]
    assert np.degrees(np.arctan2(z_axis[1], z_axis[0])) == pytest.approx(55.0)


@pytest.mark.parametrize("cam_index", range(6))
def test_point_projects_to_expected_pixel(rig, cam_index):
    """A point at depth 10 m, 2 m right and 0.5 m below the optical axis: u = cx + fx*0.2, v = cy + fy*0.05."""
    cam = rig.cameras[cam_index]
    point_cam = np.array([2.0, 0.5, 10.0, 1.0])
    point_ego = (cam.T_ego_cam @ point_cam)[:3]
    uv, depth = rig.project(point_ego[None])
    fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]
    np.testing.assert_allclose(uv[cam_index, 0], [cx + fx * 0.2, cy + fy * 0.05], atol=1e-9)
    assert depth[cam_index, 0] == pytest.approx(10.0)


def test_front_camera_analytic(rig):
    """Ego point (11.70, -1.0, 1.51) is 10 m ahead of CAM_FRONT (x=1.70, z=1.51) and 1 m right."""
    uv, depth = rig.project(np.array([[11.70, -1.0, 1.51]]))
    np.testing.assert_allclose(uv[0, 0], [400.0 + 560.0 * 0.1, 225.0], atol=1e-9)
    assert depth[0, 0] == pytest.approx(10.0)
    # the back camera sees it behind: negative depth, NaN pixel
    assert depth[3, 0] < 0 and np.isnan(uv[3, 0]).all()


def test_pose_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[3] >= 0 else -q
        t = rng.normal(size=3)
        T = pose_matrix(t, q)
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
        t2, q2 = matrix_to_translation_quaternion(T)
        np.testing.assert_allclose(t2, t)
        np.testing.assert_allclose(q2, q, atol=1e-12)


@pytest.mark.parametrize("yaw", [0.0, 0.3, -1.2, 3.0, -3.0])
def test_yaw_quaternion(yaw):
    q = yaw_to_quaternion(yaw)
    assert quaternion_to_yaw(q) == pytest.approx(yaw)
    R = pose_matrix([0, 0, 0], q)[:3, :3]
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [np.cos(yaw), np.sin(yaw), 0.0], atol=1e-12)


def test_bad_rig_file(tmp_path):
    bad = tmp_path / "rig.yaml"
    bad.write_text("cameras: []\nlidar: {translation: [0, 0, 1]}\n")
    with pytest.raises(ConfigError, match="cameras must be"):
        load_rig(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rig(tmp_path / "missing.yaml")
