"""Fault injection over DDS: the README's bad-input promises, one fault at a time.

One node process serves the module. Each test injects one fault into an otherwise
healthy simulated drive and asserts that the node stays alive, still publishes the
frames it can process, logs one line naming the cause, and counts the cause in its
own diagnostics counter; then healthy input brings the output back to normal.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.ros.message_encoding import ns_to_stamp, points_to_pointcloud, rgb_to_image
from bev_quant_ros.sim import generate_frames
from integration.node_harness import OUTPUT_TIMEOUT_S, Harness, running_node
from integration.ros_helpers import spin_until

LIDAR = "/lidar/points"
CAMERA = 2  # CAM_BACK_RIGHT carries the camera faults
CAMERA_NAME = "CAM_BACK_RIGHT"
CAMERA_FRAME = load_rig().cameras[CAMERA].frame_id


class Drive:
    """Consecutive simulated frames handed out in order, so stamps and poses only move forward."""

    def __init__(self, frames: Iterable) -> None:
        self._frames: Iterator = iter(frames)

    def take(self, n: int = 1, every: int = 1) -> list:
        return [f for i, f in enumerate(next(self._frames) for _ in range(n * every)) if i % every == 0]

    def next_sweep(self) -> object:
        """The next frame whose lidar sweep is new (a replaced sweep is then used by this frame)."""
        previous = None
        while True:
            frame = next(self._frames)
            if previous is not None and frame.lidar_stamp_ns != previous.lidar_stamp_ns:
                return frame
            previous = frame


@pytest.fixture(scope="module")
def drive():
    return Drive(generate_frames(100_003, "day", 450))  # rendered as the tests take them


@pytest.fixture(scope="module")
def harness(tiny_model_path):
    with running_node(tiny_model_path) as h:
        yield h


def _error_key(topic: str, cause: str) -> str:
    return f"error.{topic}: {cause}"


def _assert_fault_reported(harness: Harness, topic: str, cause: str, inject: Callable[[], list[int]]) -> dict:
    """Run ``inject`` (which publishes the faulty frame(s) and returns the stamps that must still
    come out); assert output, one log line and the counter; return the next diagnostics report."""
    key = _error_key(topic, cause)
    before, log_start = harness.counter(key), len(harness.log.lines)
    stamps = inject()
    assert all(stamp in harness.detections for stamp in stamps), "the faulty frame was not processed"
    after = harness.diagnostics_after()
    assert int(after.get(key, "0")) > before, f"no counter {key}: {sorted(k for k in after if k.startswith('error'))}"
    spin_until(harness.node, lambda: harness.log.count(f"{topic}: {cause} (#", log_start) > 0, 2.0)
    assert harness.log.count(f"{topic}: {cause} (#", log_start) == 1, harness.log.lines[log_start:]
    assert harness.process.poll() is None
    return after


def _healthy(harness: Harness, drive: Drive, n: int = 4) -> dict:
    """Healthy frames after a fault: all published; the report after them."""
    stamps = harness.stream(drive.take(n))
    assert all(stamp in harness.detections for stamp in stamps)
    return harness.diagnostics_after()


# ---- PointCloud2 -------------------------------------------------------------------------------
def _stream_with_sweep(harness: Harness, frame, cloud: PointCloud2) -> list[int]:
    """Publish ``cloud`` as the frame's sweep and let it arrive before the cameras: over DDS a big
    sweep can come after a small camera set, which would then be fused with the previous sweep."""
    cloud.header.stamp = ns_to_stamp(frame.lidar_stamp_ns + harness.offset_ns)
    harness.sensors.lidar.publish(cloud)
    spin_until(harness.node, lambda: False, 0.3)  # < camera_timeout_s: not yet a lidar-only frame
    return harness.stream([frame], publish_lidar=False)


def _drop_z(cloud: PointCloud2) -> PointCloud2:
    cloud.fields = [f for f in cloud.fields if f.name != "z"]
    return cloud


def _wrong_step(cloud: PointCloud2) -> PointCloud2:
    cloud.point_step += 4
    return cloud


def _truncated(cloud: PointCloud2) -> PointCloud2:
    cloud.data = cloud.data[: len(cloud.data) // 2]
    return cloud


def _integer_xyz(cloud: PointCloud2) -> PointCloud2:
    xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 5)[:, :3]
    out = PointCloud2(height=1, width=len(xyz), is_bigendian=False, point_step=6, row_step=6 * len(xyz),
                      fields=[PointField(name=n, offset=2 * i, datatype=PointField.INT16, count=1)
                              for i, n in enumerate("xyz")], header=cloud.header)
    out.data = np.round(xyz).astype("<i2").tobytes()
    return out


def _nan_only(cloud: PointCloud2) -> PointCloud2:
    cloud.data = np.full(len(cloud.data) // 4, np.nan, np.float32).tobytes()
    return cloud


def _empty(cloud: PointCloud2) -> PointCloud2:
    cloud.width, cloud.row_step, cloud.data = 0, 0, b""
    return cloud


@pytest.mark.parametrize("corrupt, cause", [
    (_drop_z, "missing_z_field"),
    (_wrong_step, "bad_point_step"),
    (_truncated, "truncated"),
    (_integer_xyz, "non_float_coordinates"),
    (_nan_only, "no_finite_points"),
    (_empty, "empty_cloud"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_malformed_point_cloud_runs_the_frame_without_lidar(harness, drive, corrupt, cause):
    frame = drive.next_sweep()

    def inject() -> list[int]:
        cloud = corrupt(points_to_pointcloud(frame.points, 0, harness.sensors.rig.lidar_frame_id))
        return _stream_with_sweep(harness, frame, cloud)

    after = _assert_fault_reported(harness, LIDAR, cause, inject)
    assert after["last_frame.lidar_used"] == "False" and "no lidar sweep" in after["message"]
    drive.next_sweep()  # the broken sweep ages out
    assert _healthy(harness, drive)["last_frame.lidar_used"] == "True"


def test_big_endian_cloud_is_decoded_like_the_little_endian_one(harness, drive):
    frame = drive.next_sweep()
    cloud = points_to_pointcloud(frame.points, 0, harness.sensors.rig.lidar_frame_id)
    cloud.is_bigendian = True
    cloud.data = np.frombuffer(bytes(cloud.data), "<f4").astype(">f4").tobytes()
    errors_before = sum(int(v) for k, v in harness.diagnostics_after().items() if k.startswith("error."))
    stamps = _stream_with_sweep(harness, frame, cloud)
    after = harness.diagnostics_after()
    assert stamps[0] in harness.detections and after["last_frame.lidar_used"] == "True"
    assert sum(int(v) for k, v in after.items() if k.startswith("error.")) == errors_before


def test_two_million_point_cloud_is_processed_in_bounded_time(harness, drive):
    frame = drive.next_sweep()
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-50, 50, (2_000_000, 2)), rng.uniform(-1, 3, 2_000_000),
                              rng.uniform(0, 255, 2_000_000), rng.uniform(-0.1, 0, 2_000_000)]).astype(np.float32)
    start = time.monotonic()
    stamps = _stream_with_sweep(harness, frame, points_to_pointcloud(points, 0, harness.sensors.rig.lidar_frame_id))
    assert stamps[0] in harness.detections, f"no output within {OUTPUT_TIMEOUT_S} s for a 2 M point sweep"
    assert time.monotonic() - start < OUTPUT_TIMEOUT_S
    assert harness.diagnostics_after()["last_frame.lidar_used"] == "True"
    assert harness.process.poll() is None


# ---- Image and CameraInfo ------------------------------------------------------------------------
def _image(frame, transform: Callable[[Image], Image]) -> Image:
    return transform(rgb_to_image(frame.images[CAMERA], 0, CAMERA_FRAME))


def _unsupported(msg: Image) -> Image:
    msg.encoding = "yuv422"
    return msg


def _half_size(msg: Image) -> Image:
    pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)[::2, ::2]
    return rgb_to_image(np.ascontiguousarray(pixels), 0, msg.header.frame_id)


def _truncated_image(msg: Image) -> Image:
    msg.data = bytes(msg.data)[:-100]
    return msg


@pytest.mark.parametrize("corrupt, cause", [
    (_unsupported, "unsupported_encoding"),
    (_half_size, "size_differs_from_camera_info"),
    (_truncated_image, "truncated"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_malformed_image_makes_only_its_camera_invalid(harness, drive, corrupt, cause):
    frame = drive.take()[0]
    topic = f"/{CAMERA_NAME}/image_raw"
    after = _assert_fault_reported(harness, topic, cause,
                                   lambda: harness.stream([frame], images={CAMERA: _image(frame, corrupt)}))
    assert after[f"camera_valid.{CAMERA_NAME}"] == "False" and after["camera_valid.CAM_FRONT"] == "True"
    assert _healthy(harness, drive)[f"camera_valid.{CAMERA_NAME}"] == "True"


def test_image_with_a_padded_step_is_decoded(harness, drive):
    frame = drive.take()[0]
    rgb = frame.images[CAMERA]
    padded = np.zeros((rgb.shape[0], rgb.shape[1] * 3 + 64), np.uint8)
    padded[:, : rgb.shape[1] * 3] = rgb.reshape(rgb.shape[0], -1)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=padded.shape[1])
    msg.data = padded.tobytes()
    stamps = harness.stream([frame], images={CAMERA: msg})
    after = harness.diagnostics_after()
    assert stamps[0] in harness.detections and after[f"camera_valid.{CAMERA_NAME}"] == "True"
    assert not any(k.startswith(f"error./{CAMERA_NAME}/image_raw") and "padded" in k for k in after)


@pytest.mark.parametrize("k, camera", [([0.0] * 9, 1), ([math.nan, 0, 400, 0, 500, 225, 0, 0, 1], 4)],
                         ids=["zero_k", "nan_k"])  # two cameras: one cause per topic, each logged once
def test_camera_info_with_invalid_k_keeps_the_last_intrinsics(harness, drive, k, camera):
    frame = drive.take()[0]
    rig_camera = harness.sensors.rig.cameras[camera]
    info = CameraInfo(width=rig_camera.width, height=rig_camera.height, k=[float(v) for v in k])
    info.header.frame_id = rig_camera.frame_id
    after = _assert_fault_reported(harness, f"/{rig_camera.name}/camera_info", "invalid_intrinsics",
                                   lambda: harness.stream([frame], infos={camera: info}))
    assert after[f"camera_valid.{rig_camera.name}"] == "True"  # the image is still used, with the last good K


# ---- Timestamps ----------------------------------------------------------------------------------
def test_duplicate_camera_set_gives_one_output(harness, drive):
    frame = drive.take()[0]
    before = harness.counter("count.sync.late_camera_messages")
    stamp = harness.stream([frame])[0]
    harness.sensors.publish_frame(frame, harness.offset_ns)  # the same six images again
    _healthy(harness, drive, n=2)
    assert harness.arrivals.count(stamp) == 1
    # the repeated set's frame was already emitted: its six images are counted late and dropped
    assert harness.counter("count.sync.late_camera_messages") == before + 6


def test_stamps_going_backwards_reset_the_state(harness, drive):
    before = harness.counter("count.resets.time_backwards")
    back_ns = 5_000_000_000 + 7_000_000  # a bag loop; off the 30 Hz grid, so no stamp was seen before
    stamps = harness.stream(drive.take(2), offset_ns=harness.offset_ns - back_ns)
    assert all(s in harness.detections for s in stamps)
    assert harness.counter("count.resets.time_backwards") == before + 1
    gaps = harness.counter("count.resets.gap")
    _healthy(harness, drive)  # back on the drive's clock: 5 s ahead, one gap reset, then normal
    assert harness.counter("count.resets.gap") == gaps + 1


def test_far_future_stamp_is_a_gap_and_the_clock_mismatch_is_said_once(harness, drive):
    gaps, log_start = harness.counter("count.resets.gap"), len(harness.log.lines)
    mismatches = harness.counter("count.clock_mismatch")
    day_ns = 86_400 * 1_000_000_000 + 7_000_000
    stamps = harness.stream(drive.take(2), offset_ns=harness.offset_ns + day_ns)
    assert all(s in harness.detections for s in stamps)
    assert harness.counter("count.resets.gap") == gaps + 1
    spin_until(harness.node, lambda: harness.log.count("away from the node clock", log_start) > 0, 2.0)
    assert harness.log.count("away from the node clock", log_start) == 1
    assert harness.counter("count.clock_mismatch") == min(mismatches + 1, 1)  # said once in the node's life
    harness.offset_ns += day_ns  # stay on the future clock: stamps keep moving forward
    _healthy(harness, drive)


def test_zero_stamp_is_rejected_and_never_published(harness, drive):
    topic = f"/{CAMERA_NAME}/image_raw"

    def inject() -> list[int]:
        frame = drive.take()[0]
        msg = rgb_to_image(frame.images[CAMERA], 0, CAMERA_FRAME)
        harness.sensors.images[CAMERA].publish(msg)  # header stamp 0 (unset)
        return harness.stream([frame])

    _assert_fault_reported(harness, topic, "zero_stamp", inject)
    assert 0 not in harness.detections


# ---- Sensors going silent for 3 s, then back -------------------------------------------------------
SILENT_FRAMES = 10  # 10 frames 0.3 s apart: 3 s of drive time without the sensor
SPACING = 9


def test_camera_silent_for_3_s_then_back(harness, drive):
    stamps = harness.stream(drive.take(SILENT_FRAMES, every=SPACING), skip_cameras=[CAMERA])
    assert all(s in harness.detections for s in stamps)
    during = harness.diagnostics_after()
    assert during[f"camera_valid.{CAMERA_NAME}"] == "False" and during["level"] == "1"
    assert f"camera(s) missing: {CAMERA_NAME}" in during["message"]
    back = _healthy(harness, drive)
    assert back[f"camera_valid.{CAMERA_NAME}"] == "True" and back["message"] == "running"


def test_lidar_silent_for_3_s_then_back(harness, drive):
    stamps = harness.stream(drive.take(SILENT_FRAMES, every=SPACING), publish_lidar=False)
    assert all(s in harness.detections for s in stamps)
    during = harness.diagnostics_after()
    assert during["last_frame.lidar_used"] == "False" and "no lidar sweep" in during["message"]
    assert during["level"] == "1"
    back = _healthy(harness, drive)
    assert back["last_frame.lidar_used"] == "True" and back["message"] == "running"


def test_odometry_silent_for_3_s_then_back(harness, drive):
    resets, log_start = harness.counter("count.resets.no_ego_pose"), len(harness.log.lines)
    stamps = harness.stream(drive.take(SILENT_FRAMES, every=SPACING), publish_odom=False)
    assert all(s in harness.detections for s in stamps)
    during = harness.diagnostics_after()
    assert "no ego pose" in during["message"] and during["last_frame.ego_pose_used"] == "False"
    assert harness.counter("count.resets.no_ego_pose") >= resets + SILENT_FRAMES - 1
    assert harness.log.count("recurrent state reset: no_ego_pose", log_start) <= 1  # throttled per reason
    back = _healthy(harness, drive)
    assert back["last_frame.ego_pose_used"] == "True" and back["message"] == "running"


# ---- Degraded sensor modes ---------------------------------------------------------------------


def test_lidar_silent_for_3_s_runs_camera_only_with_one_transition_line_each_way(harness):
    # its own drive, stamped after the module's 450 frames (15 s), so the shared drive lasts for the others
    own, offset = Drive(generate_frames(100_004, "day", 8 + SILENT_FRAMES * SPACING)), harness.offset_ns + 16 * 10**9
    assert all(s in harness.detections for s in harness.stream(own.take(4), offset))  # fused before the outage
    camera_only, log_start = harness.counter("count.mode.camera_only"), len(harness.log.lines)
    stamps = harness.stream(own.take(SILENT_FRAMES, every=SPACING), offset, publish_lidar=False)
    assert all(s in harness.detections for s in stamps)
    during = harness.diagnostics_after()
    assert during["last_frame.mode"] == "camera_only" and during["level"] == "1"
    # the first silent frame still fuses the last sweep (younger than max_lidar_age_s), the rest cannot
    assert int(during["count.mode.camera_only"]) == camera_only + SILENT_FRAMES - 1
    assert harness.log.count("mode: fused -> camera_only (no lidar sweep)", log_start) == 1
    assert all(s in harness.detections for s in harness.stream(own.take(4), offset))
    back = harness.diagnostics_after()
    assert back["last_frame.mode"] == "fused" and back["message"] == "running"
    spin_until(harness.node, lambda: harness.log.count("mode: camera_only -> fused", log_start) > 0, 2.0)
    assert harness.log.count("mode: ", log_start) == 2, harness.log.lines[log_start:]


def test_all_cameras_silent_runs_lidar_only_on_each_new_sweep(harness):
    # its own drive after the camera-only test's (which ends before 16 + 4 s of stamps)
    own, offset = Drive(generate_frames(100_005, "day", 40)), harness.offset_ns + 22 * 10**9
    assert all(s in harness.detections for s in harness.stream(own.take(3), offset))  # fused first
    lidar_only, log_start = harness.counter("count.mode.lidar_only"), len(harness.log.lines)
    sweeps = []
    for _ in range(3):  # three sweeps with no camera at all: each becomes a frame of its own
        frame = own.next_sweep()
        harness.sensors.publish_frame(frame, offset, skip_cameras=range(6))
        sweep = frame.lidar_stamp_ns + offset
        assert spin_until(harness.node, lambda: sweep in harness.detections, OUTPUT_TIMEOUT_S), "no lidar-only output"
        sweeps.append(sweep)
    during = harness.diagnostics_after()
    assert during["last_frame.mode"] == "lidar_only" and during["level"] == "1"
    assert int(during["count.mode.lidar_only"]) == lidar_only + 3
    assert int(during["count.sync.frames_lidar_only"]) >= 3
    assert harness.log.count("mode: fused -> lidar_only", log_start) == 1
    assert all(s in harness.detections for s in harness.stream(own.take(3), offset))  # the cameras are back
    assert harness.diagnostics_after()["last_frame.mode"] == "fused"
