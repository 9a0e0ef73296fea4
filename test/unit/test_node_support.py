"""Plain-Python parts of the node: latest-wins slot, runtime stats, live calibration."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.frame_assembly import AssembledFrame
from bev_quant_ros.perception.geometry import load_rig, pose_matrix, yaw_to_quaternion
from bev_quant_ros.perception.pipeline import PipelineResult, StageTimings
from bev_quant_ros.ros.diagnostics import Level, pipeline_status
from bev_quant_ros.ros.frame_slot import LatestSlot
from bev_quant_ros.ros.rig_from_tf import RigCalibration, StaticTransforms
from bev_quant_ros.ros.runtime_stats import LatencyWindow, RateMeter, RuntimeStats
from bev_quant_ros.ros.sensor_frames import EgoPoses, SensorFrameBuilder
from bev_quant_ros.ros.stage_worker import StageWorker


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


def _result(camera_valid=(1, 1, 1, 1, 1, 1), lidar_used=True, ego_pose_used=True) -> PipelineResult:
    return PipelineResult(0, Boxes3D.empty(), np.array(camera_valid, np.float32), lidar_used, None,
                          StageTimings(1.0, 2.0, 3.0), ego_pose_used=ego_pose_used)


def test_pipeline_status_levels_follow_what_the_last_frame_had():
    names = [f"cam{i}" for i in range(6)]
    header = {"backend": "onnxruntime"}
    waiting = pipeline_status(header, {}, None, names, 0)
    assert (waiting.level, waiting.message) == (Level.WARN, "waiting for sensor data")
    ok = pipeline_status(header, {"count.frames_processed": "3"}, _result(), names, 0)
    assert (ok.level, ok.message) == (Level.OK, "running")
    assert ok.values["backend"] == "onnxruntime" and ok.values["last_frame.lidar_used"] == "True"
    degraded = pipeline_status(header, {}, _result((1, 0, 1, 1, 0, 1), lidar_used=False, ego_pose_used=False),
                               names, 0)
    assert degraded.level == Level.WARN
    assert degraded.message == "degraded (camera_only): camera(s) missing: cam1, cam4; no lidar sweep; no ego pose"
    assert degraded.values["camera_valid.cam1"] == "False" and degraded.values["camera_valid.cam0"] == "True"


def test_pipeline_status_warns_once_per_new_bad_input():
    names = [f"cam{i}" for i in range(6)]
    stats = {"error./lidar/points: no z field": "2", "count.frames_processed": "9"}
    first = pipeline_status({}, stats, _result(), names, errors_at_last_report=0)
    assert (first.level, first.message, first.error_total) == (Level.WARN, "2 bad inputs since last report", 2)
    again = pipeline_status({}, stats, _result(), names, errors_at_last_report=first.error_total)
    assert again.level == Level.OK  # no new bad input since the last report


def test_stage_worker_survives_a_failing_item_and_stops_on_close():
    slot: LatestSlot[int] = LatestSlot(capacity=4)
    handled, failures = [], []

    def handle(item: int) -> None:
        if item == 1:
            raise ValueError("bad frame")
        handled.append(item)

    worker = StageWorker("test", slot, handle, failures.append, poll_s=0.01)
    worker.start()
    for item in (0, 1, 2):
        slot.put(item)
    deadline = time.monotonic() + 5.0
    while len(handled) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop(timeout_s=2.0)
    assert handled == [0, 2] and [str(e) for e in failures] == ["bad frame"]
    assert not worker.alive


def _raw_image(width: int, height: int, encoding: str = "rgb8") -> SimpleNamespace:
    pixels = np.random.default_rng(width).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=3 * width, is_bigendian=0,
                           data=pixels.tobytes())


def test_sensor_frame_builder_reports_a_bad_message_and_keeps_the_rest_of_the_frame(tiny_model_config):
    rig = load_rig()
    reports = []
    builder = SensorFrameBuilder(rig, tiny_model_config, [f"cam{i}" for i in range(6)], "lidar",
                                 lambda source, exc: reports.append((source, exc.cause)))
    width, height = rig.cameras[0].width, rig.cameras[0].height
    good = _raw_image(width, height)
    wrong_encoding = _raw_image(width, height, "yuv422")
    smaller_than_camera_info = _raw_image(width // 2, height // 2)
    empty_cloud = SimpleNamespace(fields=[SimpleNamespace(name=n, offset=4 * i, datatype=7, count=1)
                                          for i, n in enumerate("xyz")], data=b"", width=0, height=1,
                                  point_step=12, row_step=0, is_bigendian=False)
    assembled = AssembledFrame(stamp_ns=5, images=[good, wrong_encoding, None, smaller_than_camera_info, good, good],
                               camera_stamps_ns=[5] * 6, lidar_stamp_ns=4, lidar=empty_cloud)
    frame = builder.build(assembled, EgoPoses(np.eye(4), np.eye(4), np.zeros(3)))
    assert frame.camera_valid.tolist() == [1, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(frame.images[0], np.frombuffer(good.data, np.uint8).reshape(height, width, 3))
    assert frame.points is None and frame.lidar_stamp_ns is None and frame.T_world_ego_lidar is None
    assert sorted(reports) == [("cam1", "unsupported_encoding"), ("cam3", "size_differs_from_camera_info"),
                               ("lidar", "empty_cloud")]


def test_sensor_frame_builder_checks_compressed_images_at_their_full_size(tiny_model_config):
    import cv2

    rig = load_rig()
    width, height = rig.cameras[0].width, rig.cameras[0].height
    reports = []
    builder = SensorFrameBuilder(rig, tiny_model_config, [f"cam{i}" for i in range(6)], "lidar",
                                 lambda source, exc: reports.append((source, exc.cause)))

    def jpeg(w: int, h: int) -> SimpleNamespace:
        return SimpleNamespace(format="jpeg", data=cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))[1].tobytes())

    images = [jpeg(width, height)] * 5 + [jpeg(width * 2, height * 2)]
    frame = builder.build(AssembledFrame(1, images, [1] * 6, None, None), EgoPoses(None, None, None))
    assert frame.camera_valid.tolist() == [1, 1, 1, 1, 1, 0]
    assert frame.images[0].shape[1] < width  # decoded at a reduction, still accepted as the camera's size
    assert reports == [("cam5", "size_differs_from_camera_info")]


def test_rig_calibration_takes_the_lidar_mount_from_static_tf_and_says_where_each_sensor_came_from():
    rig = load_rig()
    calibration = RigCalibration(rig)
    assert set(calibration.sources.values()) == {"rig file"}
    T = rig.T_ego_lidar.copy()
    T[2, 3] += 0.3
    assert not calibration.update_lidar_frame("")  # no frame id: nothing to look up
    calibration.add_static_transform("base_link", "velodyne", T)
    assert calibration.update_lidar_frame("velodyne")
    np.testing.assert_allclose(calibration.rig.T_ego_lidar, T)
    assert calibration.rig.lidar_frame_id == "velodyne" and calibration.sources["lidar"] == "tf_static"
    cam = rig.cameras[2]
    calibration.update_intrinsics(2, cam.K, cam.width, cam.height, "cam2_optical")
    assert calibration.sources[cam.name] == "CameraInfo"
    calibration.add_static_transform("base_link", "cam2_optical", cam.T_ego_cam)
    assert calibration.sources[cam.name] == "CameraInfo + tf_static"


def _tf(parent: str, child: str, x: float, sec: int) -> SimpleNamespace:
    return SimpleNamespace(header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=5)),
                           child_frame_id=child,
                           transform=SimpleNamespace(translation=SimpleNamespace(x=x, y=0.0, z=0.0),
                                                     rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)))


def test_poses_from_tf_keep_only_the_ego_transform():
    from bev_quant_ros.ros.message_decoding import poses_from_tf

    msg = SimpleNamespace(transforms=[_tf("odom", "base_link", 2.0, 3), _tf("base_link", "cam", 9.0, 3),
                                      _tf("map", "odom", 7.0, 3)])
    [(stamp, T)] = poses_from_tf(msg, "odom", "base_link")
    assert stamp == 3_000_000_005 and T[0, 3] == 2.0


def test_rig_calibration_applies_whole_messages():
    rig = load_rig()
    calibration = RigCalibration(rig)
    cam = rig.cameras[1]
    info = SimpleNamespace(k=(cam.K * [[1.1], [1.1], [1]]).reshape(-1).tolist(), width=cam.width, height=cam.height,
                           header=SimpleNamespace(frame_id="cam1_optical"))
    assert calibration.apply_camera_info(1, info)
    assert calibration.rig.cameras[1].K[0, 0] == pytest.approx(1.1 * cam.K[0, 0])
    with pytest.raises(InvalidMessageError) as bad:
        calibration.apply_camera_info(1, SimpleNamespace(**{**vars(info), "k": [0.0] * 9}))
    assert bad.value.cause == "invalid_intrinsics"
    moved = _tf("base_link", "cam1_optical", 0.5, 1)
    assert calibration.apply_tf_static(SimpleNamespace(transforms=[moved]))
    assert calibration.rig.cameras[1].T_ego_cam[0, 3] == 0.5
    assert not calibration.apply_tf_static(SimpleNamespace(transforms=[moved]))  # unchanged: no new rig
