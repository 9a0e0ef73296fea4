"""Small rosbag2 bags of known content, written with `rosbags` (no ROS), to exercise replay.

The sample bag mixes what a perception bag holds: std_msgs/String, sensor_msgs/Image,
a latched /tf_static and vision_msgs/Detection3DArray, a type absent from rosbags'
typestore that is registered from its .msg text, so the bag carries its definition
like a bag recorded where vision_msgs is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.ros.bag_types import make_header, typestore_with
from bev_quant_ros.ros.detection_encoding import (
    DetectionMessageClasses,
    build_detection_array,
    make_typestore,
    rosbags_message_classes,
)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
START_NS = 1_700_000_000_000_000_000  # a plausible epoch stamp, far from zero


@dataclass(frozen=True)
class SampleBagLayout:
    """Topics and rates of the sample bag; stamps are START_NS + k / hz."""

    duration_s: float = 1.0
    chatter_hz: float = 10.0
    image_hz: float = 5.0
    detections_hz: float = 5.0
    image_shape: tuple[int, int] = (4, 6)

    def count(self, hz: float) -> int:
        """Messages of a stream at ``hz``: both ends of the duration included."""
        return int(round(self.duration_s * hz)) + 1


def _stamps(hz: float, count: int, offset_ns: int = 0) -> list[int]:
    return [START_NS + offset_ns + int(round(k * 1e9 / hz)) for k in range(count)]


def _image(ts: Typestore, stamp_ns: int, pixels: np.ndarray, frame_id: str):
    height, width, _ = pixels.shape
    return ts.types["sensor_msgs/msg/Image"](
        header=make_header(ts, stamp_ns, frame_id), height=height, width=width, encoding="rgb8",
        is_bigendian=0, step=3 * width, data=pixels.reshape(-1))


def _tf_static(ts: Typestore, stamp_ns: int):
    T = ts.types
    transforms = [T["geometry_msgs/msg/TransformStamped"](
        header=make_header(ts, stamp_ns, "base_link"), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=1.5),
            rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
        for child, x in (("CAM_FRONT", 1.7), ("LIDAR_TOP", 0.9))]
    return T["tf2_msgs/msg/TFMessage"](transforms=transforms)


def _detections(classes: DetectionMessageClasses, stamp_ns: int, k: int):
    """One car, 1 m further ahead in each message, in the node's detection encoding."""
    car = Boxes3D(np.array([[10.0 + k, -2.0, 0.5]]), np.array([[4.5, 1.9, 1.6]]), np.zeros(1), np.zeros((1, 2)),
                  ["car"], np.array([0.5 + 0.01 * k]))
    return build_detection_array(classes, car, [f"track-{k}"], stamp_ns, "base_link")


def write_sample_bag(path: Path, storage: str = "mcap",
                     layout: SampleBagLayout = SampleBagLayout()) -> None:
    """Write the mixed sample bag (see module docstring) to the new directory ``path``."""
    ts = make_typestore()
    detection_classes = rosbags_message_classes(ts)
    rng = np.random.default_rng(0)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        def connection(topic: str, msgtype: str):
            return writer.add_connection(topic, msgtype, typestore=ts), msgtype

        def stream(topic: str, msgtype: str, hz: float, offset_ns: int, make) -> list:
            conn = connection(topic, msgtype)
            return [(conn, stamp, make(k, stamp))
                    for k, stamp in enumerate(_stamps(hz, layout.count(hz), offset_ns))]

        messages = [(connection("/tf_static", "tf2_msgs/msg/TFMessage"), START_NS, _tf_static(ts, START_NS))]
        messages += stream("/chatter", "std_msgs/msg/String", layout.chatter_hz, 1_000_000,
                           lambda k, _: ts.types["std_msgs/msg/String"](data=f"message {k}"))
        messages += stream("/camera/image_raw", "sensor_msgs/msg/Image", layout.image_hz, 2_000_000,
                           lambda _, stamp: _image(ts, stamp, rng.integers(0, 256, (*layout.image_shape, 3),
                                                                           np.uint8), "CAM_FRONT"))
        messages += stream("/detections", "vision_msgs/msg/Detection3DArray", layout.detections_hz,
                           3_000_000, lambda k, stamp: _detections(detection_classes, stamp, k))
        for (conn, msgtype), stamp, message in sorted(messages, key=lambda m: m[1]):
            writer.write(conn, stamp, ts.serialize_cdr(message, msgtype))


def write_camera_bag(path: Path, cameras: int = 6, shape: tuple[int, int] = (900, 1600),
                     hz: float = 30.0, duration_s: float = 3.0) -> int:
    """Write ``cameras`` rgb8 Image streams (mcap) like a camera rig; returns the message count."""
    ts = typestore_with({})
    pixels = np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8)
    count = 0
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = [writer.add_connection(f"/cam{c}/image_raw", "sensor_msgs/msg/Image", typestore=ts)
                  for c in range(cameras)]
        for stamp in _stamps(hz, int(round(duration_s * hz))):
            for c, conn in enumerate(topics):
                message = _image(ts, stamp, pixels, f"cam{c}")
                writer.write(conn, stamp, ts.serialize_cdr(message, "sensor_msgs/msg/Image"))
                count += 1
    return count
