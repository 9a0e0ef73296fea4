"""Ground truth in vision_msgs/Detection3DArray, and the rosbags typestore that carries it.

vision_msgs is registered from its .msg text (``bag_types.VISION_MSGS``); the bag
then carries the definitions, and ROS 2 tools read it with the real package.

Encoding of one ground-truth box (``Detection3D``):

* ``header``: the array's header (camera trigger stamp, frame ``base_link``).
* ``id``: the track id (decimal string), stable over the sequence.
* ``bbox.center``: box centre and heading (yaw about +z) in ``base_link``;
  ``bbox.size``: (length along heading, width, height), metres.
* ``results[0]``: the class: ``hypothesis.class_id`` is a nuScenes class name
  (``car``, ``truck``, ``pedestrian``, ``bicycle``, ``traffic_cone``),
  ``hypothesis.score`` = 1.0, ``pose.pose`` = ``bbox.center``, covariance zero.
* ``results[1]``: the velocity, because Detection3D has no twist field:
  ``hypothesis.class_id`` = ``"velocity"`` (never a class name), score 0.0 so
  consumers that take the highest-scoring hypothesis still get the class;
  ``pose.pose.position`` = (vx, vy, 0) velocity over ground in m/s, ``base_link``
  axes; orientation identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from bev_quant_ros.ros.bag_types import VISION_MSGS, make_header, typestore_with
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.geometry import quaternion_to_yaw, yaw_to_quaternion
from bev_quant_ros.ros.message_decoding import stamp_to_ns

GT_TOPIC = "/ground_truth/objects"
GT_FRAME = "base_link"
VELOCITY_HYPOTHESIS = "velocity"
DETECTION3D_ARRAY = "vision_msgs/msg/Detection3DArray"

def make_typestore() -> Typestore:
    """The ROS 2 kilted typestore plus vision_msgs."""
    return typestore_with(VISION_MSGS)


def boxes_to_detection_array(store: Typestore, boxes: Boxes3D, track_ids: np.ndarray, stamp_ns: int,
                             frame_id: str = GT_FRAME):
    """A Detection3DArray message (rosbags dataclass) encoding ``boxes`` as documented above."""
    t = store.types
    Point, Quat, Pose = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"], t["geometry_msgs/msg/Pose"]
    PoseCov, Vec3 = t["geometry_msgs/msg/PoseWithCovariance"], t["geometry_msgs/msg/Vector3"]
    Hyp, HypPose = t["vision_msgs/msg/ObjectHypothesis"], t["vision_msgs/msg/ObjectHypothesisWithPose"]
    header = make_header(store, stamp_ns, frame_id)
    zero_cov = np.zeros(36)
    detections = []
    for i in range(len(boxes)):
        q = yaw_to_quaternion(float(boxes.yaws[i]))
        cx, cy, cz = (float(v) for v in boxes.centers[i])
        center = Pose(position=Point(x=cx, y=cy, z=cz), orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3]))
        vx, vy = (float(v) for v in boxes.velocities[i])
        velocity = Pose(position=Point(x=vx, y=vy, z=0.0), orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0))
        results = [HypPose(hypothesis=Hyp(class_id=boxes.class_names[i], score=1.0),
                           pose=PoseCov(pose=center, covariance=zero_cov)),
                   HypPose(hypothesis=Hyp(class_id=VELOCITY_HYPOTHESIS, score=0.0),
                           pose=PoseCov(pose=velocity, covariance=zero_cov))]
        size = Vec3(x=float(boxes.sizes[i, 0]), y=float(boxes.sizes[i, 1]), z=float(boxes.sizes[i, 2]))
        detections.append(t["vision_msgs/msg/Detection3D"](
            header=header, results=results, bbox=t["vision_msgs/msg/BoundingBox3D"](center=center, size=size),
            id=str(int(track_ids[i]))))
    return t[DETECTION3D_ARRAY](header=header, detections=detections)


def detection_array_to_boxes(msg, with_scores: bool = False) -> Boxes3D:
    """Inverse of :func:`boxes_to_detection_array` (works on rosbags or rclpy messages).

    The node publishes detections in the same encoding; ``with_scores`` keeps the
    class hypothesis scores (detections) instead of dropping them (ground truth).
    """
    centers, sizes, yaws, velocities, names, scores = [], [], [], [], [], []
    for det in msg.detections:
        classes = [r for r in det.results if r.hypothesis.class_id != VELOCITY_HYPOTHESIS]
        if not classes:
            raise InvalidMessageError(f"Detection3D id={det.id!r} has no class hypothesis")
        best = max(classes, key=lambda r: r.hypothesis.score)
        vel = [r for r in det.results if r.hypothesis.class_id == VELOCITY_HYPOTHESIS]
        c, o, s = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
        centers.append((c.x, c.y, c.z))
        sizes.append((s.x, s.y, s.z))
        yaws.append(quaternion_to_yaw((o.x, o.y, o.z, o.w)))
        velocities.append((vel[0].pose.pose.position.x, vel[0].pose.pose.position.y) if vel else (np.nan, np.nan))
        names.append(best.hypothesis.class_id)
        scores.append(best.hypothesis.score)
    n = len(names)
    return Boxes3D(np.array(centers, float).reshape(n, 3), np.array(sizes, float).reshape(n, 3),
                   np.array(yaws, float).reshape(n), np.array(velocities, float).reshape(n, 2), names,
                   np.array(scores, float).reshape(n) if with_scores else None)


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
