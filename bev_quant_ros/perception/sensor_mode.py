"""Which sensors a frame ran on: one vocabulary for the node's diagnostics and for calibration,
which records windows in a mode (camera-only: every lidar sweep withheld)."""

from __future__ import annotations

from enum import Enum

import numpy as np


class SensorMode(str, Enum):
    """Which sensors a frame ran on."""

    FUSED = "fused"
    CAMERA_ONLY = "camera_only"  # no lidar sweep (absent or older than max_lidar_age_s)
    LIDAR_ONLY = "lidar_only"  # no valid camera


def sensor_mode(camera_valid: np.ndarray, lidar_used: bool) -> SensorMode:
    """The mode of a frame from what it ran with (a frame has a camera or a sweep, never neither)."""
    if not lidar_used:
        return SensorMode.CAMERA_ONLY
    return SensorMode.FUSED if np.any(camera_valid) else SensorMode.LIDAR_ONLY
