"""Plain-Python parts of the node: latest-wins slot, runtime stats, live calibration."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bev_quant_ros.ros.rig_from_tf import RigCalibration, StaticTransforms
from bev_quant_ros.ros.frame_slot import LatestSlot
from bev_quant_ros.perception.geometry import load_rig, pose_matrix, yaw_to_quaternion
from bev_quant_ros.ros.runtime_stats import LatencyWindow, RateMeter, RuntimeStats


def test_latest_slot_keeps_newest_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0.1) == 4
    assert (slot.accepted, slot.dropped) == (5, 4)
    assert slot.take(0.01) is None  # empty: times out


def test_slot_of_capacity_two_keeps_the_two_newest_in_order():
    slot: LatestSlot[int] = LatestSlot(capacity=2)
    for i in range(5):
        slot.put(i)
    assert [slot.take(0.1), slot.take(0.1), slot.take(0.01)] == [3, 4, None]
    assert (slot.accepted, slot.dropped) == (5, 3)
    slot.put(5)
    slot.put(6)  # a burst of two within capacity: nothing dropped
    assert [slot.take(0.1), slot.take(0.1)] == [5, 6] and slot.dropped == 3
    with pytest.raises(ValueError, match="capacity"):
        LatestSlot(capacity=0)


def test_latest_slot_close_wakes_a_waiting_worker():
    slot: LatestSlot[int] = LatestSlot()
    results = []
    worker = threading.Thread(target=lambda: results.append(slot.take(10.0)))
    worker.start()
    slot.close()
    worker.join(2.0)
    assert not worker.is_alive() and results == [None] and slot.closed


def test_latency_percentiles_and_rate():
    window = LatencyWindow(size=100)
    for v in range(1, 201):  # only the last 100 (101..200) are kept
        window.add(float(v))
    p = window.percentiles()
    assert p["p50"] == pytest.approx(150.5) and p["p99"] == pytest.approx(199.01)
    now = [0.0]
    meter = RateMeter(window_s=5.0, clock=lambda: now[0])
    for _ in range(31):
        meter.tick()
        now[0] += 1 / 30
    assert meter.rate_hz() == pytest.approx(30.0)
    now[0] += 10.0
    assert meter.rate_hz() == 0.0  # window emptied


def test_runtime_stats_key_values():
    stats = RuntimeStats(["engine"])
    stats.add_latency("engine", 20.0)
    stats.count("frames_dropped", 3)
    assert stats.error("/lidar/points: InvalidMessageError") == 1
    assert stats.error("/lidar/points: InvalidMessageError") == 2
    values = stats.key_values()
    assert values["latency_ms.engine.p95"] == "20.00"
    assert values["count.frames_dropped"] == "3"
    assert values["error./lidar/points: InvalidMessageError"] == "2"


def test_static_transform_chains_resolve():
    tf = StaticTransforms()
    tf.add("base_link", "cam", pose_matrix([1.0, 0, 1.5], yaw_to_quaternion(np.pi / 2)))
    tf.add("cam", "cam_optical", pose_matrix([0.0, 0.5, 0], [0, 0, 0, 1]))
    T = tf.lookup("base_link", "cam_optical")
    np.testing.assert_allclose(T[:3, 3], [0.5, 0, 1.5], atol=1e-12)  # 0.5 m along cam y = -base x
    assert tf.lookup("base_link", "unknown") is None
    tf.add("cam_optical", "cam", np.eye(4))  # a loop must not hang
    assert tf.lookup("base_link", "cam") is None


def test_rig_calibration_applies_camera_info_and_tf_only_on_change():
    rig = load_rig()
    calibration = RigCalibration(rig)
    cam = rig.cameras[0]
    assert not calibration.update_intrinsics(0, cam.K.copy(), cam.width, cam.height, "cam_front_optical")
    K = cam.K.copy()
    K[0, 0] += 10.0
    assert calibration.update_intrinsics(0, K, cam.width, cam.height, "cam_front_optical")
    assert calibration.rig.cameras[0].K[0, 0] == K[0, 0] and calibration.rig.cameras[1] is rig.cameras[1]
    T = cam.T_ego_cam.copy()
    T[0, 3] += 0.2
    assert calibration.add_static_transform("base_link", "cam_front_optical", T)
    np.testing.assert_allclose(calibration.rig.cameras[0].T_ego_cam, T)
    assert not calibration.add_static_transform("base_link", "cam_front_optical", T)  # unchanged


def test_runtime_stats_mirrors_external_counters():
    stats = RuntimeStats([])
    stats.set_count("sync.frames_partial", 7)
    stats.set_count("sync.frames_partial", 9)
    assert stats.key_values()["count.sync.frames_partial"] == "9"
