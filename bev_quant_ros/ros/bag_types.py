"""rosbags typestores: ROS 2 kilted plus message types given as .msg text.

vision_msgs is not in rosbags' typestores; registering it from its .msg text lets
bags carry the definitions, and ROS 2 tools then read them with the real package.
"""

from __future__ import annotations

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# vision_msgs 4.x (Humble ... Kilted) types we use; same fields, so same type hash, as upstream
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D":
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n",
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}


def typestore_with(definitions: dict[str, str]) -> Typestore:
    """The kilted typestore plus message types given as .msg text (name -> text)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name, text in definitions.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def make_header(store: Typestore, stamp_ns: int, frame_id: str):
    """std_msgs/Header (rosbags class of ``store``) for an integer-nanosecond stamp."""
    Time = store.types["builtin_interfaces/msg/Time"]
    return store.types["std_msgs/msg/Header"](stamp=Time(sec=stamp_ns // 1_000_000_000,
                                                         nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
