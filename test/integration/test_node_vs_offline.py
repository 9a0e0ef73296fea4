"""The node and the offline drive reader give the same detections for the same bag.

The bag's own messages (raw CDR, compressed cameras) are fed to the node process over
DDS one frame at a time, the odometry and sweep first and given time to arrive (across
topics DDS and the executor keep no order: a camera set completed before its pose arrived
is run with an extrapolated pose, by design), and each frame's detections are awaited;
offline, `bev-quant evaluate`'s reader runs the same bag through the same model. Same
assembly, same scaled JPEG decode, same preprocessing: the boxes must be identical.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.replay.ros_player import message_class
from bev_quant_ros.ros.detection_encoding import detection_array_to_boxes
from bev_quant_ros.sim.ground_truth import GT_TOPIC
from integration.node_harness import OUTPUT_TIMEOUT_S, running_node
from integration.ros_helpers import spin_until
from integration.sensor_publisher import RELIABLE
from synth_bags import write_synth_bag

LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FRAMES = 8
SCORE_THRESHOLD = "0.01"
FIRST = ("/tf_static", "/odom", "/lidar/points")  # published, then given time to arrive, before the cameras


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("node_vs_offline") / "bag"
    return write_synth_bag(path, 100_007, "rain", FRAMES)


def _messages_by_time(bag) -> tuple[dict[str, str], list[list[tuple[str, bytes]]]]:
    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections if c.topic not in (GT_TOPIC, "/tf")}
        groups: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        for connection, timestamp, raw in reader.messages():
            if connection.topic in types:
                groups[timestamp].append((connection.topic, bytes(raw)))
    return types, [groups[t] for t in sorted(groups)]


def test_node_and_offline_reader_give_the_same_detections(bag, tiny_model_path):
    types, groups = _messages_by_time(bag)
    live: dict[int, object] = {}
    with running_node(tiny_model_path, "image_transport:=compressed", f"score_threshold:={SCORE_THRESHOLD}",
                      raw_sensors=False) as harness:
        publishers = {topic: harness.node.create_publisher(message_class(msgtype), topic,
                                                           LATCHED if topic == "/tf_static" else RELIABLE)
                      for topic, msgtype in types.items()}
        assert spin_until(harness.node, lambda: all(p.get_subscription_count() for p in publishers.values()), 10.0)
        for group in groups:
            for topic, raw in group:
                if topic in FIRST:
                    publishers[topic].publish(raw)
            spin_until(harness.node, lambda: False, 0.3)  # pose and sweep are in before the camera set completes
            for topic, raw in group:
                if topic not in FIRST:
                    publishers[topic].publish(raw)
            before = len(harness.arrivals)
            spin_until(harness.node, lambda: len(harness.arrivals) > before, OUTPUT_TIMEOUT_S)
        live = {stamp: detection_array_to_boxes(msg, with_scores=True) for stamp, msg in harness.detections.items()}
    [drive] = open_drives(bag, ReaderSettings.from_params({"image_transport": "compressed"}))
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=float(SCORE_THRESHOLD))
    pipeline.set_rig(drive.rig)
    offline = {f.sensors.stamp_ns: pipeline.process(f.sensors).detections for f in drive.frames(pipeline.model_config)}
    assert len(offline) == FRAMES and sorted(live) == sorted(offline)
    assert sum(len(boxes) for boxes in offline.values()) > 0
    for stamp, boxes in offline.items():
        got = live[stamp]
        assert got.class_names == boxes.class_names
        np.testing.assert_allclose(got.scores, boxes.scores, atol=1e-6)  # float32 -> float64 message fields
        np.testing.assert_allclose(got.centers, boxes.centers, atol=1e-5)
        np.testing.assert_allclose(got.sizes, boxes.sizes, atol=1e-5)
        np.testing.assert_allclose(got.velocities, boxes.velocities, atol=1e-5)
