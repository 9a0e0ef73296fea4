"""Reset rules of the recurrent state and ego-pose interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from bev_quant_ros.perception.geometry import pose_matrix, yaw_to_quaternion
from bev_quant_ros.perception.temporal import PoseBuffer, ResetReason, TemporalState, interpolate_pose

MS = 1_000_000


def pose(x: float, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    return pose_matrix([x, y, 0.0], yaw_to_quaternion(yaw))


def drive(state: TemporalState, stamps_ms, xs):
    return [state.step(t * MS, pose(x)).reset_reason for t, x in zip(stamps_ms, xs)]


def test_first_frame_resets_then_state_is_kept():
    state = TemporalState()
    reasons = drive(state, [0, 33, 66], [0.0, 0.3, 0.6])  # 9 m/s
    assert reasons == [ResetReason.FIRST_FRAME, None, None]
    decision = state.step(99 * MS, pose(0.9))
    np.testing.assert_allclose(decision.T_world_ego_prev[:3, 3], [0.6, 0, 0])
    assert state.reset_counts == {"first_frame": 1}


@pytest.mark.parametrize("stamps_ms, xs, expected", [
    ([0, 33, 20], [0, 0.3, 0.6], ResetReason.TIME_BACKWARDS),
    ([0, 33, 33], [0, 0.3, 0.3], ResetReason.TIME_BACKWARDS),   # repeated stamp
    ([0, 33, 600], [0, 0.3, 5.0], ResetReason.GAP),              # 567 ms > 500 ms
    ([0, 33, 66], [0, 0.3, 3.0], ResetReason.EGO_JUMP),          # 2.7 m in 33 ms = 82 m/s
])
def test_reset_rules(stamps_ms, xs, expected):
    state = TemporalState(max_gap_s=0.5, max_ego_speed_mps=70.0)
    assert drive(state, stamps_ms, xs)[-1] == expected
    assert state.last_reset_reason == expected


def test_yaw_jump_resets():
    state = TemporalState(max_ego_yaw_rate_rps=3.0)
    state.step(0, pose(0.0))
    assert state.step(33 * MS, pose(0.1, yaw=0.05)).reset_reason is None  # 1.5 rad/s
    assert state.step(66 * MS, pose(0.2, yaw=0.25)).reset_reason is ResetReason.EGO_JUMP  # 6 rad/s


def test_requested_reset_applies_to_the_next_frame_only():
    state = TemporalState()
    drive(state, [0, 33], [0, 0.3])
    state.request_reset()
    assert drive(state, [66, 99], [0.6, 0.9]) == [ResetReason.REQUESTED, None]
    assert state.reset_counts["requested"] == 1


def test_missing_pose_resets():
    state = TemporalState()
    state.step(0, pose(0.0))
    decision = state.step(33 * MS, None)
    assert decision.reset_reason is ResetReason.NO_EGO_POSE and decision.T_world_ego_prev is None


def test_pose_buffer_interpolates_translation_and_rotation():
    buffer = PoseBuffer(max_extrapolation_s=0.05)
    buffer.add(0, pose(0.0, yaw=0.0))
    buffer.add(100 * MS, pose(1.0, 2.0, yaw=0.4))
    mid = buffer.pose_at(25 * MS)
    np.testing.assert_allclose(mid[:3, 3], [0.25, 0.5, 0.0], atol=1e-12)
    assert np.arctan2(mid[1, 0], mid[0, 0]) == pytest.approx(0.1, abs=1e-9)
    np.testing.assert_allclose(buffer.pose_at(140 * MS), pose(1.0, 2.0, yaw=0.4))  # held 40 ms
    assert buffer.pose_at(160 * MS) is None  # 60 ms past the newest: unknown
    assert buffer.pose_at(-60 * MS) is None


def test_pose_buffer_drops_history_and_restarts_on_time_jump():
    buffer = PoseBuffer(history_s=1.0)
    for k in range(30):
        buffer.add(k * 100 * MS, pose(k * 1.0))
    assert buffer.pose_at(500 * MS) is None  # older than the 1 s history
    buffer.add(0, pose(-5.0))  # timeline restarted (bag loop)
    np.testing.assert_allclose(buffer.pose_at(0)[:3, 3], [-5.0, 0, 0])
    assert buffer.pose_at(2900 * MS) is None


def test_interpolate_pose_endpoints():
    a, b = pose(1.0, yaw=-0.3), pose(4.0, 1.0, yaw=2.0)
    np.testing.assert_allclose(interpolate_pose(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(a, b, 1.0), b, atol=1e-12)


def test_pose_buffer_velocity_over_the_window_before_a_stamp():
    buffer = PoseBuffer()
    for k in range(10):  # 10 m/s forward, turning at 0.5 rad/s, 30 Hz odometry
        t = k / 30
        buffer.add(int(t * 1e9), pose(10.0 * t, yaw=0.5 * t))
    vx, vy, yaw_rate = buffer.velocity_at(200 * MS, window_s=0.05)
    assert yaw_rate == pytest.approx(0.5, abs=1e-6)  # slerp falls back to lerp for tiny angles
    assert np.hypot(vx, vy) == pytest.approx(10.0, rel=2e-3)  # chord of a gentle arc
    assert buffer.velocity_at(2000 * MS) is None  # beyond the odometry
