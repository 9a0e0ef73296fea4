"""The node's diagnostic status as a pure function of what it measured.

No rclpy here: the level, message and key/values are computed from the runtime
statistics and the last frame's result, so every rule is unit-tested without DDS;
the node only copies them into a `diagnostic_msgs/DiagnosticStatus`. The sensor mode of a
frame (`fused`, `camera_only`, `lidar_only`) is reported here too, and `ModeTracker` turns the
per-frame modes into one log line per transition (the modes: `perception/sensor_mode.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Mapping, Sequence

from bev_quant_ros.perception.pipeline import PipelineResult
from bev_quant_ros.perception.sensor_mode import SensorMode, sensor_mode


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


# why a frame is in a mode: the end of the transition log line
MODE_CAUSES = {SensorMode.FUSED: "lidar and cameras", SensorMode.CAMERA_ONLY: "no lidar sweep",
               SensorMode.LIDAR_ONLY: "no valid camera"}


class ModeTracker:
    """The current sensor mode, starting fused (what the node expects); `update` returns the line
    to log when a frame changes the mode and None while it stays, so a long outage logs once."""

    def __init__(self) -> None:
        self.mode = SensorMode.FUSED

    def update(self, mode: SensorMode) -> str | None:
        if mode is self.mode:
            return None
        line = f"mode: {self.mode.value} -> {mode.value} ({MODE_CAUSES[mode]})"
        self.mode = mode
        return line


@dataclass(frozen=True)
class PipelineStatus:
    level: Level
    message: str
    values: dict[str, str]
    error_total: int  # bad inputs counted so far: the next report compares against it


def degraded_inputs(last: PipelineResult, camera_names: Sequence[str]) -> list[str]:
    """What the last frame ran without, in words (empty when it had everything)."""
    missing = [name for name, valid in zip(camera_names, last.camera_valid) if not valid]
    problems = [f"camera(s) missing: {', '.join(missing)}"] if missing else []
    if not last.lidar_used:
        problems.append("no lidar sweep")
    if not last.ego_pose_used:
        problems.append("no ego pose")
    return problems


def pipeline_status(header: Mapping[str, str], stats_values: Mapping[str, str], last: PipelineResult | None,
                    camera_names: Sequence[str], errors_at_last_report: int) -> PipelineStatus:
    """WARN while waiting for data, after new bad inputs and while an input is missing (both said); else OK."""
    values = dict(header)
    if last is not None:
        for name, valid in zip(camera_names, last.camera_valid):
            values[f"camera_valid.{name}"] = str(bool(valid))
        values["last_frame.mode"] = sensor_mode(last.camera_valid, last.lidar_used).value
        values["last_frame.lidar_used"] = str(last.lidar_used)
        values["last_frame.ego_pose_used"] = str(last.ego_pose_used)
        values["last_frame.detections"] = str(len(last.detections))
    values.update(stats_values)
    errors = sum(int(value) for key, value in stats_values.items() if key.startswith("error."))
    if last is None:
        return PipelineStatus(Level.WARN, "waiting for sensor data", values, errors)
    parts = [f"{errors - errors_at_last_report} bad inputs since last report"] if errors > errors_at_last_report else []
    problems = degraded_inputs(last, camera_names)
    if problems:
        mode = sensor_mode(last.camera_valid, last.lidar_used)
        parts.append(("degraded: " if mode is SensorMode.FUSED else f"degraded ({mode.value}): ") + "; ".join(problems))
    if parts:
        return PipelineStatus(Level.WARN, "; ".join(parts), values, errors)
    return PipelineStatus(Level.OK, "running", values, errors)
