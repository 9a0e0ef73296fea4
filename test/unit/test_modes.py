"""Sensor modes of the node: fused / camera_only / lidar_only per frame, one log line per transition,
the mode in the diagnostics (pure Python, no DDS)."""

from __future__ import annotations

import numpy as np

from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.pipeline import PipelineResult, StageTimings
from bev_quant_ros.perception.sensor_mode import SensorMode, sensor_mode
from bev_quant_ros.ros.diagnostics import Level, ModeTracker, pipeline_status

CAMERAS = [f"cam{i}" for i in range(6)]
ALL, NONE = np.ones(6, np.float32), np.zeros(6, np.float32)


def _result(camera_valid: np.ndarray, lidar_used: bool) -> PipelineResult:
    return PipelineResult(0, Boxes3D.empty(), camera_valid, lidar_used, None, StageTimings(1.0, 1.0, 1.0))


def test_mode_follows_what_the_frame_ran_with():
    assert sensor_mode(ALL, lidar_used=True) is SensorMode.FUSED
    assert sensor_mode(np.array([0, 0, 1, 0, 0, 0], np.float32), lidar_used=True) is SensorMode.FUSED
    assert sensor_mode(ALL, lidar_used=False) is SensorMode.CAMERA_ONLY
    assert sensor_mode(NONE, lidar_used=True) is SensorMode.LIDAR_ONLY


def test_tracker_says_each_transition_once_not_per_frame():
    tracker = ModeTracker()
    fused, camera_only, lidar_only = SensorMode.FUSED, SensorMode.CAMERA_ONLY, SensorMode.LIDAR_ONLY
    modes = [fused] * 3 + [camera_only] * 90 + [fused] * 5 + [lidar_only] * 2
    lines = [line for line in map(tracker.update, modes) if line is not None]
    assert lines == ["mode: fused -> camera_only (no lidar sweep)", "mode: camera_only -> fused (lidar and cameras)",
                     "mode: fused -> lidar_only (no valid camera)"]
    assert tracker.mode is SensorMode.LIDAR_ONLY


def test_a_node_that_starts_without_lidar_says_so_on_its_first_frame():
    assert ModeTracker().update(SensorMode.CAMERA_ONLY) == "mode: fused -> camera_only (no lidar sweep)"


def test_diagnostics_show_the_mode_and_warn_while_degraded():
    fused = pipeline_status({}, {}, _result(ALL, True), CAMERAS, 0)
    assert fused.level == Level.OK and fused.values["last_frame.mode"] == "fused"
    camera_only = pipeline_status({}, {}, _result(ALL, False), CAMERAS, 0)
    assert camera_only.level == Level.WARN and camera_only.values["last_frame.mode"] == "camera_only"
    assert camera_only.message == "degraded (camera_only): no lidar sweep"
    lidar_only = pipeline_status({}, {}, _result(NONE, True), CAMERAS, 0)
    assert lidar_only.level == Level.WARN and lidar_only.values["last_frame.mode"] == "lidar_only"
    assert lidar_only.message.startswith("degraded (lidar_only): camera(s) missing: cam0, cam1")
