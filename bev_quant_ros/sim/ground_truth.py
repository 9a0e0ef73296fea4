"""Simulator ground truth in a bag: vision_msgs/Detection3DArray on GT_TOPIC.

Boxes are encoded as documented in ``ros/detection_encoding.py``, with the sim's
choices: ``id`` is the track id (decimal string, stable over the sequence), the
class score is 1.0, the frame is ``base_link``. vision_msgs is registered from its
.msg text (``bag_types.VISION_MSGS``); the bag then carries the definitions, and
ROS 2 tools read it with the real package.
"""

from __future__ import annotations

from pathlib import Path

from rosbags.rosbag2 import Reader

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.ros.detection_encoding import detection_array_to_boxes, make_typestore
from bev_quant_ros.ros.message_decoding import stamp_to_ns

GT_TOPIC = "/ground_truth/objects"


def read_ground_truth(bag_dir: str | Path) -> dict[int, Boxes3D]:
    """Ground truth of a bag written by ``bev-quant synth``: header stamp (ns) -> boxes in base_link."""
    store = make_typestore()
    out: dict[int, Boxes3D] = {}
    with Reader(Path(bag_dir)) as reader:
        conns = [c for c in reader.connections if c.topic == GT_TOPIC]
        if not conns:
            raise InvalidMessageError(f"bag {bag_dir} has no {GT_TOPIC} topic")
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out[stamp_to_ns(msg.header.stamp)] = detection_array_to_boxes(msg)
    return out
