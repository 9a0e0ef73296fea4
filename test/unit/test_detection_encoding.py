"""The one Detection3DArray encoding: rclpy and rosbags messages round-trip and agree on the wire."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs.msg import Detection3DArray

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.ros.detection_encoding import (
    DETECTION3D_ARRAY,
    VELOCITY_HYPOTHESIS,
    build_detection_array,
    detection_array_to_boxes,
    make_typestore,
    rosbags_message_classes,
)
from bev_quant_ros.ros.message_decoding import stamp_to_ns
from bev_quant_ros.ros.message_encoding import boxes_to_detection_array

STAMP_NS, FRAME = 1_700_000_000_123_456_789, "base_link"
STORE = make_typestore()
ROSBAGS = rosbags_message_classes(STORE)


def _boxes(n: int = 5, with_scores: bool = True) -> Boxes3D:
    rng = np.random.default_rng(3)
    return Boxes3D(rng.normal(0, 20, (n, 3)), rng.uniform(0.5, 5, (n, 3)), rng.uniform(-3.1, 3.1, n),
                   rng.normal(0, 5, (n, 2)), [["car", "truck", "pedestrian"][i % 3] for i in range(n)],
                   rng.uniform(0, 1, n) if with_scores else None)


def _rosbags_cdr(boxes: Boxes3D, ids: list[str]) -> bytes:
    msg = build_detection_array(ROSBAGS, boxes, ids, STAMP_NS, FRAME)
    return bytes(STORE.serialize_cdr(msg, DETECTION3D_ARRAY))


def _assert_same_boxes(got: Boxes3D, want: Boxes3D) -> None:
    for name in ("centers", "sizes", "yaws", "velocities", "scores"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-6, err_msg=name)
    assert got.class_names == want.class_names


def _differences(a, b, path: str = "msg") -> list[str]:
    """Paths of the fields where two rclpy messages differ (recursing into sub-messages and sequences)."""
    if hasattr(a, "get_fields_and_field_types"):
        return [d for field in a.get_fields_and_field_types()
                for d in _differences(getattr(a, field), getattr(b, field), f"{path}.{field}")]
    if isinstance(a, (list, tuple)) and a and hasattr(a[0], "get_fields_and_field_types"):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} elements"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if np.array_equal(np.asarray(a), np.asarray(b)) else [f"{path}: {a!r} != {b!r}"]


def test_rclpy_round_trip_through_cdr():
    boxes = _boxes()
    msg = deserialize_message(serialize_message(boxes_to_detection_array(boxes, STAMP_NS, FRAME)), Detection3DArray)
    assert stamp_to_ns(msg.header.stamp) == STAMP_NS and msg.header.frame_id == FRAME
    assert [d.id for d in msg.detections] == ["0", "1", "2", "3", "4"]
    _assert_same_boxes(detection_array_to_boxes(msg, with_scores=True), boxes)


def test_rosbags_round_trip_through_cdr():
    boxes = _boxes()
    msg = STORE.deserialize_cdr(_rosbags_cdr(boxes, ["7", "8", "9", "10", "11"]), DETECTION3D_ARRAY)
    assert stamp_to_ns(msg.header.stamp) == STAMP_NS and msg.header.frame_id == FRAME
    assert [d.id for d in msg.detections] == ["7", "8", "9", "10", "11"]
    _assert_same_boxes(detection_array_to_boxes(msg, with_scores=True), boxes)


@pytest.mark.parametrize("n", [0, 1, 35])
def test_rclpy_and_rosbags_encodings_are_the_same_message(n):
    boxes = _boxes(n)
    from_rclpy = deserialize_message(serialize_message(boxes_to_detection_array(boxes, STAMP_NS, FRAME)),
                                     Detection3DArray)
    from_rosbags = deserialize_message(_rosbags_cdr(boxes, [str(i) for i in range(n)]), Detection3DArray)
    assert _differences(from_rosbags, from_rclpy) == []
    assert len(from_rosbags.detections) == n


def test_encoding_layout():
    boxes = _boxes(2, with_scores=False)
    msg = STORE.deserialize_cdr(_rosbags_cdr(boxes, ["4", "5"]), DETECTION3D_ARRAY)
    det = msg.detections[1]
    cls, vel = det.results
    assert (cls.hypothesis.class_id, cls.hypothesis.score) == ("truck", 1.0)  # ground truth: score 1
    assert (vel.hypothesis.class_id, vel.hypothesis.score) == (VELOCITY_HYPOTHESIS, 0.0)
    v = vel.pose.pose
    assert (v.position.x, v.position.y, v.position.z) == (*boxes.velocities[1], 0.0)
    assert (v.orientation.x, v.orientation.y, v.orientation.z, v.orientation.w) == (0.0, 0.0, 0.0, 1.0)
    assert cls.pose.pose == det.bbox.center
    assert np.array_equal(cls.pose.covariance, np.zeros(36))
    assert (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) == tuple(boxes.sizes[1])
    q = det.bbox.center.orientation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, np.sin(boxes.yaws[1] / 2), np.cos(boxes.yaws[1] / 2)))
    assert det.header == msg.header


def test_decoder_without_velocity_hypothesis_and_without_class():
    msg = STORE.deserialize_cdr(_rosbags_cdr(_boxes(1), ["0"]), DETECTION3D_ARRAY)
    cls, vel = msg.detections[0].results
    msg.detections[0].results = [cls]
    assert np.isnan(detection_array_to_boxes(msg).velocities).all()
    msg.detections[0].results = [vel]
    with pytest.raises(InvalidMessageError, match="id='0' has no class hypothesis"):
        detection_array_to_boxes(msg)


def test_one_id_per_box():
    with pytest.raises(ValueError, match="1 ids for 2 boxes"):
        build_detection_array(ROSBAGS, _boxes(2), ["0"], STAMP_NS, FRAME)


def test_module_imports_without_rclpy():
    ros_packages = ("rclpy", "builtin_interfaces", "std_msgs", "geometry_msgs", "vision_msgs")
    blocked = f"import sys; sys.modules.update(dict.fromkeys({ros_packages!r})); " \
              "import bev_quant_ros.ros.detection_encoding"
    subprocess.run([sys.executable, "-c", blocked], check=True)
