"""The world and the frame API: determinism, object counts, motions, timing of sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from bev_quant_ros.perception.boxes import CLASS_NAMES
from bev_quant_ros.sim import CONDITIONS, generate_frames
from bev_quant_ros.sim.world import World


@pytest.fixture(scope="module")
def day_frames():
    return list(generate_frames(3, "day", 4))


def test_frame_layout(day_frames):
    f = day_frames[0]
    assert f.images.shape == (6, 450, 800, 3) and f.images.dtype == np.uint8
    assert f.points.dtype == np.float32 and f.points.shape[1] == 5 and len(f.points) > 15_000
    assert (f.points[:, 4] <= 0).all() and (f.points[:, 4] >= -0.1).all()
    m = len(f.gt)
    assert 10 <= m <= 80
    assert f.gt_num_lidar_points.shape == (m,) and f.gt_visible_cameras.shape == (m, 6)
    assert set(f.gt.class_names) <= set(CLASS_NAMES)
    assert (np.linalg.norm(f.gt.centers[:, :2], axis=1) <= 60.0).all()
    assert f.gt.scores is None


def test_lidar_every_third_camera_frame(day_frames):
    stamps = [f.stamp_ns for f in day_frames]
    assert np.diff(stamps).tolist() == [33_333_333, 33_333_334, 33_333_333]
    lidar = [f.lidar_stamp_ns for f in day_frames]
    assert lidar[0] == lidar[1] == lidar[2] == stamps[0] and lidar[3] == stamps[3] == stamps[0] + 100_000_000
    assert day_frames[1].points is day_frames[0].points
    assert not np.array_equal(day_frames[3].points, day_frames[0].points)


def test_same_seed_same_content_different_seed_differs(day_frames):
    again = list(generate_frames(3, "day", 2))
    for a, b in zip(day_frames, again):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.gt.centers, b.gt.centers)
    other = next(generate_frames(4, "day", 1))
    assert not np.array_equal(other.gt.centers[:5], day_frames[0].gt.centers[:5])
    assert np.abs(other.images.astype(int) - day_frames[0].images).mean() > 10


def test_world_independent_of_condition_and_length():
    night = list(generate_frames(3, "night", 2))[1]
    day = list(generate_frames(3, "day", 5))[1]
    np.testing.assert_allclose(night.gt.centers, day.gt.centers)
    np.testing.assert_allclose(night.ego_pose, day.ego_pose)


def test_velocities_are_class_typical():
    world = World(11)
    speeds: dict[str, list[float]] = {name: [] for name in CLASS_NAMES}
    for t in np.arange(0.0, 40.0, 4.0):
        objects = world.objects_near(t, world.ego_pose(t)[:2, 3], 60.0)
        for kind, v in zip(objects.kind, np.linalg.norm(objects.velocity, axis=1)):
            if kind < len(CLASS_NAMES):
                speeds[CLASS_NAMES[kind]].append(v)
    assert max(speeds["traffic_cone"]) == 0.0
    assert 0.0 < max(speeds["pedestrian"]) <= 1.8
    assert 3.0 < max(speeds["bicycle"]) <= 7.0
    assert 7.0 < max(speeds["car"]) <= 15.5 and min(speeds["car"]) == 0.0  # moving and parked
    ego_speeds = [world.ego_velocity(t)[0] for t in np.arange(0.0, 60.0, 0.5)]
    assert min(ego_speeds) < 0.1 and 7.0 <= max(ego_speeds) <= 14.1  # cruises and stops


def test_gt_velocity_matches_motion():
    """GT velocity (ego axes) equals the finite difference of world positions."""
    f0, f1 = list(generate_frames(5, "day", 2))
    common, i0, i1 = np.intersect1d(f0.gt_track_ids, f1.gt_track_ids, return_indices=True)
    world0 = (f0.ego_pose[:3, :3] @ f0.gt.centers[i0].T).T + f0.ego_pose[:3, 3]
    world1 = (f1.ego_pose[:3, :3] @ f1.gt.centers[i1].T).T + f1.ego_pose[:3, 3]
    v_world = (world1 - world0)[:, :2] / ((f1.stamp_ns - f0.stamp_ns) * 1e-9)
    v_gt_world = f0.gt.velocities[i0] @ f0.ego_pose[:2, :2].T
    np.testing.assert_allclose(v_gt_world, v_world, atol=0.15)
    assert len(common) > 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown condition"):
        generate_frames(0, "snow", 1)
    with pytest.raises(ValueError, match="num_frames"):
        generate_frames(0, "day", -1)
    assert CONDITIONS == ("day", "night", "rain", "fog", "glare")
