"""bev_perception_node as its own process fed with simulated sensors over real DDS.

One node process (tiny untrained model, real ONNX Runtime) serves the tests of
this module in order; each test publishes its own frames and checks its own
stamps and counter deltas. Box accuracy is checked with the trained model in
the evaluation tests; here the contract is stamps, validity, resets, errors.
"""

from __future__ import annotations

import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray

from bev_quant_ros.perception.boxes import CLASS_NAMES
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.ros.message_decoding import stamp_to_ns
from bev_quant_ros.ros.message_encoding import ns_to_stamp
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.ground_truth import VELOCITY_HYPOTHESIS

from integration.ros_helpers import installed_executable, spin_until, start_process, stop_process
from integration.sensor_publisher import RELIABLE, SimSensorPublisher

NODE = "bev_perception_node"
OUTPUT_TIMEOUT_S = 10.0


class Harness:
    """Test-side ROS node: sensor publishers plus listeners for the node's outputs."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("node_pipeline_test")
        self.sensors = SimSensorPublisher(self.node, load_rig())
        self.detections: dict[int, Detection3DArray] = {}
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(Detection3DArray, f"/{NODE}/detections",
                                      lambda m: self.detections.__setitem__(stamp_to_ns(m.header.stamp), m),
                                      RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.reset_client = self.node.create_client(Trigger, f"/{NODE}/reset")

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                self.diagnostics.append({"message": status.message, **{kv.key: kv.value for kv in status.values}})

    def stream(self, frames, offset_ns: int, **kwargs) -> list[int]:
        """Publish frames in lockstep: each waits for its detections (or a timeout).

        Lockstep makes the assertions independent of machine load; throughput with
        latest-wins dropping is measured in benchmarks/, not here.
        """
        stamps = []
        for frame in frames:
            stamp = self.sensors.publish_frame(frame, offset_ns, **kwargs)
            spin_until(self.node, lambda: stamp in self.detections, OUTPUT_TIMEOUT_S)
            stamps.append(stamp)
        return stamps

    def diagnostics_after(self, since: int, timeout_s: float = 5.0) -> dict[str, str]:
        """The first diagnostics report received after ``since`` reports."""
        assert spin_until(self.node, lambda: len(self.diagnostics) > since, timeout_s), "no diagnostics"
        return self.diagnostics[-1]


@pytest.fixture(scope="module")
def frames():
    return list(generate_frames(100_002, "day", 40))


@pytest.fixture(scope="module")
def harness(tiny_model_path):
    rclpy.init()
    process = start_process([installed_executable(NODE), "--ros-args",
                             "-p", f"model_path:={tiny_model_path}", "-p", "precision:=fp32",
                             "-p", "qos_reliability:=reliable", "-p", "score_threshold:=0.01",
                             "-p", "diagnostics_period_s:=0.5", "-p", "camera_timeout_s:=0.5"])
    h = Harness()
    h.sensors.publish_static(time.time_ns())
    assert spin_until(h.node, lambda: h.diagnostics or process.poll() is not None, 60.0)
    assert process.poll() is None, stop_process(process)[2]
    publishers = [*h.sensors.images, *h.sensors.infos, h.sensors.lidar, h.sensors.odom]
    assert spin_until(h.node, lambda: all(p.get_subscription_count() > 0 for p in publishers), 10.0)
    h.offset_ns = time.time_ns() - 1_700_000_000_000_000_000  # sim stamps -> now
    yield h
    code, out, err = stop_process(process)
    print(out[-20000:], err[-5000:])  # shown by pytest when a test of this module failed
    h.node.destroy_node()
    rclpy.try_shutdown()
    assert code == 0, f"node did not shut down cleanly: {err[-2000:]}"


def test_detections_carry_the_camera_stamps_and_frame(harness, frames):
    stamps = harness.stream(frames[:10], harness.offset_ns)
    got = [s for s in stamps if s in harness.detections]
    assert len(got) == 10, (f"only {len(got)} of 10 frames produced detections; "
                            f"{harness.diagnostics_after(len(harness.diagnostics))}")
    assert set(harness.detections) <= set(stamps)  # nothing stamped with anything but a camera stamp
    msg = harness.detections[stamps[-1]]
    assert msg.header.frame_id == "base_link" and len(msg.detections) > 0
    for detection in msg.detections:
        assert detection.results[0].hypothesis.class_id in CLASS_NAMES
        assert 0.0 <= detection.results[0].hypothesis.score <= 1.0
        assert detection.results[1].hypothesis.class_id == VELOCITY_HYPOTHESIS
        assert detection.bbox.size.x > 0
    values = harness.diagnostics_after(len(harness.diagnostics))
    assert int(values["count.frames_processed"]) == 10
    assert values["count.sync.frames_complete"] == "10" and values["last_frame.lidar_used"] == "True", str(values)
    assert values["backend"] == "onnxruntime" and values["precision"] == "fp32"
    assert float(values["latency_ms.engine.p50"]) > 0


def test_camera_that_stops_is_marked_invalid_and_output_continues(harness, frames):
    stamps = harness.stream(frames[10:18], harness.offset_ns, skip_cameras=[3])
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after(len(harness.diagnostics))
    assert values["camera_valid.CAM_BACK"] == "False" and values["camera_valid.CAM_FRONT"] == "True"
    assert int(values["count.sync.frames_partial"]) == 8
    assert values["message"] == "degraded: camera(s) missing: CAM_BACK"


def test_malformed_image_is_counted_and_the_frame_still_processed(harness, frames):
    bad = Image(height=450, width=800, encoding="yuv422", step=1600, data=bytes(450 * 1600))
    frame = frames[18]
    stamp = frame.stamp_ns + harness.offset_ns
    bad.header.stamp = ns_to_stamp(stamp)
    harness.sensors.publish_frame(frame, harness.offset_ns, skip_cameras=[0])
    harness.sensors.images[0].publish(bad)
    assert spin_until(harness.node, lambda: stamp in harness.detections, OUTPUT_TIMEOUT_S)
    values = harness.diagnostics_after(len(harness.diagnostics))
    assert int(values["error./CAM_FRONT/image_raw: InvalidMessageError"]) == 1


def test_time_jump_back_resets_the_state(harness, frames):
    before = harness.diagnostics_after(len(harness.diagnostics)).get("count.resets.time_backwards", "0")
    stamps = harness.stream(frames[20:24], harness.offset_ns - 10_000_000_000)  # bag looped: 10 s back
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after(len(harness.diagnostics))
    assert int(values.get("count.resets.time_backwards", "0")) == int(before) + 1


def test_reset_service_resets_before_the_next_frame(harness, frames):
    assert harness.reset_client.wait_for_service(timeout_sec=5.0)
    future = harness.reset_client.call_async(Trigger.Request())
    assert spin_until(harness.node, future.done, 5.0) and future.result().success
    stamps = harness.stream(frames[24:27], harness.offset_ns - 10_000_000_000)
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after(len(harness.diagnostics))
    assert values["count.resets.requested"] == "1"
