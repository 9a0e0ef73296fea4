"""Camera renderer and lidar ray-cast: geometry against ground truth, and condition effects."""

from __future__ import annotations

import numpy as np
import pytest

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.sim import CONDITIONS, generate_frames
from bev_quant_ros.sim.conditions import condition_params
from bev_quant_ros.sim.frames import FrameGenerator
from bev_quant_ros.sim.lidar import HIT_GROUND, BoxesInSweep, LidarModel, sweep_points
from bev_quant_ros.sim.render import ID_SCALE, CameraRenderer, DrawParts


@pytest.fixture(scope="module")
def rig():
    return load_rig()


def _one_box(center, yaw=0.3, half=(2.2, 0.9, 0.75)) -> DrawParts:
    c = np.array([center], float)
    return DrawParts(centers=c, yaws=np.array([yaw]), halves=np.array([half], float),
                     colours=np.array([[0.8, 0.1, 0.1]]), emissive=np.zeros(1, bool), stack=np.zeros(1, np.int32),
                     object_center=c, draw_id=np.array([7], np.uint16))


@pytest.mark.parametrize("cam_index", range(6))
def test_box_centre_projects_inside_its_painted_region(rig, cam_index):
    renderer = CameraRenderer(rig, condition_params("day", 0), seed=0)
    cam = rig.cameras[cam_index]
    center = (cam.T_ego_cam @ np.array([1.0, 0.4, 15.0, 1.0]))[:3]
    center[2] = 0.75  # on the ground
    rng = np.random.default_rng(0)
    with_box, ids = renderer.render([], _one_box(center), rng, np.array([0.0, 0.0, 1.0]))
    without, _ = renderer.render([], _one_box(center + [500.0, 0.0, 0.0]), np.random.default_rng(0),
                                 np.array([0.0, 0.0, 1.0]))
    uv, _ = rig.project(center[None])
    u, v = uv[cam_index, 0]
    painted = np.abs(with_box[cam_index].astype(int) - without[cam_index]).sum(axis=2) > 30
    assert painted[int(v), int(u)]
    assert ids[cam_index, int(v) // ID_SCALE, int(u) // ID_SCALE] == 7
    scale = (cam.K[0, 0] / 560.0) ** 2  # the back camera is wider: fewer pixels per metre
    assert 1_500 * scale < painted.sum() < 30_000 * scale  # a car-sized blob at 15 m, not the whole image
    others = [i for i in range(6) if i != cam_index and (ids[i] == 7).any()]
    assert all(abs(i - cam_index) in (1, 5) for i in others)  # at most the neighbouring cameras


def test_frame_gt_centres_hit_their_objects(rig, monkeypatch):
    """In a full scene, most (object, camera) pairs flagged visible show that object at the centre pixel."""
    gen = FrameGenerator(2, "day", rig, 30.0, 10.0)
    captured = {}
    render = gen.renderer.render

    def spy(*args, **kwargs):
        captured["out"] = render(*args, **kwargs)
        return captured["out"]

    monkeypatch.setattr(gen.renderer, "render", spy)
    frame = gen.frame(0)
    _, ids = captured["out"]
    uv, depth = rig.project(frame.gt.centers)
    hits = total = 0
    for m, c in zip(*np.nonzero(frame.gt_visible_cameras)):
        u, v = uv[c, m]
        if depth[c, m] <= 0 or not (0 <= u < 800 and 0 <= v < 450):
            continue
        total += 1
        hits += ids[c, int(v) // ID_SCALE, int(u) // ID_SCALE] == m + 1
    assert total > 15 and hits / total > 0.6
    # every camera sees something and far objects behind the rig are not visible in CAM_FRONT
    assert frame.gt_visible_cameras.any(axis=0).all()
    assert not frame.gt_visible_cameras[frame.gt.centers[:, 0] < -5.0, 0].any()


def test_lidar_returns_lie_on_ground_and_box_surfaces():
    model = LidarModel()
    dirs = model.ray_directions()
    params = condition_params("day", 0)
    center = np.array([[8.0, 3.0, -1.84 + 0.8]])
    half = np.array([[2.3, 1.0, 0.8]])
    yaw = np.array([0.4])
    boxes = BoxesInSweep(center, center, yaw, yaw, half, np.array([0.6]))
    points, hit = sweep_points(model, dirs, -1.84, boxes, params, 0.1, np.random.default_rng(1))
    sigma = params.lidar_range_noise_m
    ground = hit == HIT_GROUND
    assert np.abs(points[ground, 2] + 1.84).max() < 5 * sigma * 1.0 + 0.02
    on_box = points[hit == 0, :3] - center
    c, s = np.cos(-yaw[0]), np.sin(-yaw[0])
    local = np.stack([c * on_box[:, 0] - s * on_box[:, 1], s * on_box[:, 0] + c * on_box[:, 1], on_box[:, 2]], 1)
    dist_to_surface = np.abs(np.abs(local) - half[0]).min(axis=1)
    assert (np.abs(local) <= half[0] + 5 * sigma).all()
    assert dist_to_surface.max() < 5 * sigma
    assert (hit == 0).sum() > 300 and ground.sum() > 10_000
    assert (points[:, 3] >= 0).all() and (points[:, 3] <= 255).all()


def test_moving_box_points_at_capture_time():
    """A box moving at 15 m/s: each return lies on the box where it was at that column's time."""
    model = LidarModel()
    params = condition_params("day", 0)
    c0 = np.array([[10.0, -1.5, -1.0]])
    c1 = c0 + [1.5, 0.0, 0.0]  # 15 m/s over the 0.1 s sweep
    half = np.array([[2.0, 0.9, 0.8]])
    boxes = BoxesInSweep(c0, c1, np.zeros(1), np.zeros(1), half, np.array([0.6]))
    points, hit = sweep_points(model, model.ray_directions(), -1.84, boxes, params, 0.1, np.random.default_rng(2))
    p = points[hit == 0]
    frac = (p[:, 4] + 0.1) / 0.1
    center_at_t = c0 + frac[:, None] * (c1 - c0)
    local = np.abs(p[:, :3] - center_at_t)
    assert len(p) > 100 and (local <= half + 0.1).all()


def test_conditions_change_image_and_lidar_statistics():
    frames = {c: next(generate_frames(6, c, 1)) for c in CONDITIONS}
    mean = {c: f.images.mean() for c, f in frames.items()}
    std = {c: f.images.std() for c, f in frames.items()}
    saturated = {c: (f.images >= 250).mean() for c, f in frames.items()}
    assert mean["night"] < 0.5 * mean["day"]
    assert std["fog"] < 0.7 * std["day"] and std["rain"] < std["day"]
    assert saturated["glare"] > 3 * saturated["day"] + 0.005
    n = {c: len(f.points) for c, f in frames.items()}
    assert n["night"] == pytest.approx(n["day"], rel=0.02)  # the lidar does not care about light
    assert n["rain"] < 0.92 * n["day"] and n["fog"] < 0.9 * n["day"]
    near = {c: (np.linalg.norm(f.points[:, :3], axis=1) < 2.0).sum() for c, f in frames.items()}
    assert near["fog"] > near["day"] + 100 and near["rain"] > near["day"] + 100  # spurious returns


def test_day_points_never_below_ground():
    f = next(generate_frames(8, "day", 1))
    z_ego = f.points[:, 2] + load_rig().T_ego_lidar[2, 3]
    assert z_ego.min() > -0.12
    assert (np.abs(z_ego) < 0.1).mean() > 0.5
