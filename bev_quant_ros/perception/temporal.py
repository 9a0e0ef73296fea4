"""Recurrent-state bookkeeping: ego poses between frames and when to reset.

The engine owns the BEV state tensor; this module decides, per frame, whether
that state may be used (and how the ego moved since it was made) or must be
reset, and it keeps the reason so diagnostics can say why detections lost
their history. No ROS imports.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from bev_quant_ros.perception.geometry import matrix_to_quaternion, quaternion_to_matrix
from bev_quant_ros.perception.preprocess import planar_velocity

NS_PER_S = 1_000_000_000


class ResetReason(str, Enum):
    """Why the recurrent state was dropped before a frame."""

    FIRST_FRAME = "first_frame"
    TIME_BACKWARDS = "time_backwards"  # e.g. a bag loop
    GAP = "gap"  # longer than max_gap_s since the previous frame
    EGO_JUMP = "ego_jump"  # implied speed or yaw rate impossible for a vehicle
    NO_EGO_POSE = "no_ego_pose"  # no odometry around the frame stamp
    REQUESTED = "requested"  # ~/reset service or a tool


def _slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact enough and avoids 0/0
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose between T0 (alpha 0) and T1 (alpha 1): lerp translation, slerp rotation."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(_slerp(matrix_to_quaternion(T0[:3, :3]),
                                            matrix_to_quaternion(T1[:3, :3]), alpha))
    T[:3, 3] = (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return T


class PoseBuffer:
    """Recent ego poses (odometry) to look up T_world_ego at a camera stamp."""

    def __init__(self, history_s: float = 2.0, max_extrapolation_s: float = 0.1) -> None:
        self.history_ns = int(history_s * NS_PER_S)
        self.max_extrapolation_ns = int(max_extrapolation_s * NS_PER_S)
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()

    def add(self, stamp_ns: int, T_world_ego: np.ndarray) -> None:
        """Insert a pose; a stamp far older than the newest starts a new timeline."""
        if self._stamps and stamp_ns < self._stamps[-1] - self.history_ns:
            self.clear()
        index = bisect.bisect(self._stamps, stamp_ns)
        self._stamps.insert(index, stamp_ns)
        self._poses.insert(index, np.asarray(T_world_ego, dtype=np.float64))
        while self._stamps[-1] - self._stamps[0] > self.history_ns:
            del self._stamps[0], self._poses[0]

    def pose_at(self, stamp_ns: int) -> np.ndarray | None:
        """Interpolated pose, the nearest end pose within max_extrapolation_s, or None."""
        if not self._stamps:
            return None
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            return self._poses[index]
        if 0 < index < len(self._stamps):
            t0, t1 = self._stamps[index - 1], self._stamps[index]
            return interpolate_pose(self._poses[index - 1], self._poses[index],
                                    (stamp_ns - t0) / (t1 - t0))
        nearest = 0 if index == 0 else len(self._stamps) - 1
        if abs(self._stamps[nearest] - stamp_ns) <= self.max_extrapolation_ns:
            return self._poses[nearest]
        return None

    def velocity_at(self, stamp_ns: int, window_s: float = 0.05) -> np.ndarray | None:
        """(vx, vy, yaw rate) in the ego frame over the ``window_s`` before ``stamp_ns``, or None."""
        earlier = self.pose_at(stamp_ns - int(window_s * NS_PER_S))
        later = self.pose_at(stamp_ns)
        if earlier is None or later is None:
            return None
        return planar_velocity(earlier, later, window_s)


@dataclass
class TemporalDecision:
    """What the engine should do with its state for this frame."""

    reset_reason: ResetReason | None  # None = keep the state and warp it
    T_world_ego_prev: np.ndarray | None  # pose of the previous frame (None after a reset)
    T_world_ego: np.ndarray | None  # pose of this frame
    dt_s: float = 0.0  # seconds since the previous processed frame; 0 after a reset (the model's `dt`)


@dataclass
class TemporalState:
    """Reset rules for the recurrent BEV state (first frame, time, gaps, jumps, requests)."""

    max_gap_s: float = 0.5
    max_ego_speed_mps: float = 70.0
    max_ego_yaw_rate_rps: float = 3.0
    reset_counts: Counter = field(default_factory=Counter)
    last_reset_reason: ResetReason | None = None
    _prev_stamp_ns: int | None = None
    _prev_pose: np.ndarray | None = None
    _reset_requested: bool = False

    def request_reset(self) -> None:
        """Drop the state before the next frame (service call, tool, operator)."""
        self._reset_requested = True

    def step(self, stamp_ns: int, T_world_ego: np.ndarray | None) -> TemporalDecision:
        """Decide for the frame at ``stamp_ns``; call once per processed frame, in order."""
        reason = self._reset_reason(stamp_ns, T_world_ego)
        prev_pose = None if reason is not None else self._prev_pose
        dt_s = 0.0 if reason is not None else (stamp_ns - self._prev_stamp_ns) / NS_PER_S
        if reason is not None:
            self.reset_counts[reason.value] += 1
            self.last_reset_reason = reason
        self._reset_requested = False
        self._prev_stamp_ns = stamp_ns
        self._prev_pose = T_world_ego
        return TemporalDecision(reason, prev_pose, T_world_ego, dt_s)

    def _reset_reason(self, stamp_ns: int, T_world_ego: np.ndarray | None) -> ResetReason | None:
        if self._reset_requested:
            return ResetReason.REQUESTED
        if self._prev_stamp_ns is None:
            return ResetReason.FIRST_FRAME
        if stamp_ns <= self._prev_stamp_ns:
            return ResetReason.TIME_BACKWARDS
        dt_s = (stamp_ns - self._prev_stamp_ns) / NS_PER_S
        if dt_s > self.max_gap_s:
            return ResetReason.GAP
        if T_world_ego is None or self._prev_pose is None:
            return ResetReason.NO_EGO_POSE
        T_prev_curr = np.linalg.solve(self._prev_pose, T_world_ego)
        speed = np.linalg.norm(T_prev_curr[:3, 3]) / dt_s
        yaw_rate = abs(np.arctan2(T_prev_curr[1, 0], T_prev_curr[0, 0])) / dt_s
        if speed > self.max_ego_speed_mps or yaw_rate > self.max_ego_yaw_rate_rps:
            return ResetReason.EGO_JUMP
        return None
