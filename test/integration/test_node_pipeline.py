"""bev_perception_node as its own process fed with simulated sensors over real DDS.

One node process (tiny untrained model, real ONNX Runtime) serves the tests of
this module in order; each test publishes its own frames and checks its own
stamps and counter deltas. Box accuracy is checked with the trained model in
the evaluation tests; here the contract is stamps, validity, resets, errors.
"""

from __future__ import annotations

import pytest
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from bev_quant_ros.perception.boxes import CLASS_NAMES
from bev_quant_ros.ros.detection_encoding import VELOCITY_HYPOTHESIS
from bev_quant_ros.ros.message_encoding import ns_to_stamp
from bev_quant_ros.sim import generate_frames
from integration.node_harness import OUTPUT_TIMEOUT_S, running_node
from integration.ros_helpers import spin_until


@pytest.fixture(scope="module")
def frames():
    return list(generate_frames(100_002, "day", 40))


@pytest.fixture(scope="module")
def harness(tiny_model_path):
    with running_node(tiny_model_path) as h:
        yield h


def test_detections_carry_the_camera_stamps_and_frame(harness, frames):
    processed, complete = harness.counter("count.frames_processed"), harness.counter("count.sync.frames_complete")
    stamps = harness.stream(frames[:10], harness.offset_ns)
    got = [s for s in stamps if s in harness.detections]
    assert len(got) == 10, (f"only {len(got)} of 10 frames produced detections; "
                            f"{harness.diagnostics_after()}")
    assert set(harness.detections) <= set(stamps)  # nothing stamped with anything but a camera stamp
    msg = harness.detections[stamps[-1]]
    assert msg.header.frame_id == "base_link" and len(msg.detections) > 0
    for detection in msg.detections:
        assert detection.results[0].hypothesis.class_id in CLASS_NAMES
        assert 0.0 <= detection.results[0].hypothesis.score <= 1.0
        assert detection.results[1].hypothesis.class_id == VELOCITY_HYPOTHESIS
        assert detection.bbox.size.x > 0
    values = harness.diagnostics_after()
    assert int(values["count.frames_processed"]) == processed + 10
    assert int(values["count.sync.frames_complete"]) == complete + 10, str(values)
    assert values["last_frame.lidar_used"] == "True", str(values)
    assert values["backend"] == "onnxruntime" and values["precision"] == "fp32"
    assert float(values["latency_ms.engine.p50"]) > 0


def test_camera_that_stops_is_marked_invalid_and_output_continues(harness, frames):
    partial = harness.counter("count.sync.frames_partial")
    stamps = harness.stream(frames[10:18], harness.offset_ns, skip_cameras=[3])
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after()
    assert values["camera_valid.CAM_BACK"] == "False" and values["camera_valid.CAM_FRONT"] == "True"
    assert int(values["count.sync.frames_partial"]) == partial + 8
    assert values["message"] == "degraded: camera(s) missing: CAM_BACK"


def test_malformed_image_is_counted_and_the_frame_still_processed(harness, frames):
    key = "error./CAM_FRONT/image_raw: unsupported_encoding"
    before = harness.counter(key)
    bad = Image(height=450, width=800, encoding="yuv422", step=1600, data=bytes(450 * 1600))
    frame = frames[18]
    stamp = frame.stamp_ns + harness.offset_ns
    bad.header.stamp = ns_to_stamp(stamp)
    harness.sensors.publish_frame(frame, harness.offset_ns, skip_cameras=[0])
    harness.sensors.images[0].publish(bad)
    assert spin_until(harness.node, lambda: stamp in harness.detections, OUTPUT_TIMEOUT_S)
    values = harness.diagnostics_after()
    assert int(values[key]) == before + 1


def test_time_jump_back_resets_the_state(harness, frames):
    before = harness.counter("count.resets.time_backwards")
    stamps = harness.stream(frames[20:24], harness.offset_ns - 10_000_000_000)  # bag looped: 10 s back
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after()
    assert int(values.get("count.resets.time_backwards", "0")) == before + 1


def test_reset_service_resets_before_the_next_frame(harness, frames):
    before = harness.counter("count.resets.requested")
    assert harness.reset_client.wait_for_service(timeout_sec=5.0)
    future = harness.reset_client.call_async(Trigger.Request())
    assert spin_until(harness.node, future.done, 5.0) and future.result().success
    stamps = harness.stream(frames[24:27], harness.offset_ns - 10_000_000_000)
    assert all(s in harness.detections for s in stamps)
    values = harness.diagnostics_after()
    assert int(values["count.resets.requested"]) == before + 1
