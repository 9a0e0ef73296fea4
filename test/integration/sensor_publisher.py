"""Streams simulated frames as real ROS messages: six cameras, CameraInfo, lidar, odometry, TF."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

from bev_quant_ros.perception.geometry import Rig, matrix_to_translation_quaternion
from bev_quant_ros.ros.message_encoding import ns_to_stamp, points_to_pointcloud, rgb_to_image

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _transform(parent: str, child: str, T: np.ndarray, stamp_ns: int) -> TransformStamped:
    msg = TransformStamped(child_frame_id=child)
    msg.header.frame_id, msg.header.stamp = parent, ns_to_stamp(stamp_ns)
    t, q = matrix_to_translation_quaternion(T)
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in t)
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


class SimSensorPublisher:
    """Publishers for one rig on the node's default topics (reliable QoS)."""

    def __init__(self, node: Node, rig: Rig) -> None:
        self.node, self.rig = node, rig
        self.images = [node.create_publisher(Image, f"/{c.name}/image_raw", RELIABLE) for c in rig.cameras]
        self.infos = [node.create_publisher(CameraInfo, f"/{c.name}/camera_info", RELIABLE) for c in rig.cameras]
        self.lidar = node.create_publisher(PointCloud2, "/lidar/points", RELIABLE)
        self.odom = node.create_publisher(Odometry, "/odom", RELIABLE)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._last_lidar_ns: int | None = None

    def publish_static(self, stamp_ns: int) -> None:
        self.tf_static.publish(TFMessage(transforms=[
            _transform("base_link", c.frame_id, c.T_ego_cam, stamp_ns) for c in self.rig.cameras]))

    def publish_frame(self, frame, stamp_offset_ns: int = 0, skip_cameras: Iterable[int] = (),
                      images: Mapping[int, Image] | None = None, infos: Mapping[int, CameraInfo] | None = None,
                      lidar: PointCloud2 | None = None, publish_lidar: bool = True, publish_odom: bool = True) -> int:
        """Publish one SimFrame (odometry, lidar when new, cameras); return the camera stamp used.

        ``images``/``infos``/``lidar`` replace the frame's own messages (fault injection; their
        stamps are set to the frame's); ``publish_lidar``/``publish_odom`` False keep a sensor silent.
        """
        stamp = frame.stamp_ns + stamp_offset_ns
        if publish_odom:
            self._publish_odometry(frame, stamp)
        lidar_stamp = frame.lidar_stamp_ns + stamp_offset_ns
        if publish_lidar and (lidar is not None or lidar_stamp != self._last_lidar_ns):
            if lidar is None:
                lidar = points_to_pointcloud(frame.points, lidar_stamp, self.rig.lidar_frame_id)
            lidar.header.stamp = ns_to_stamp(lidar_stamp)
            self.lidar.publish(lidar)
            self._last_lidar_ns = lidar_stamp
        skipped = set(skip_cameras)
        for index, camera in enumerate(self.rig.cameras):
            info = (infos or {}).get(index)
            if info is None:
                info = CameraInfo(width=camera.width, height=camera.height, k=camera.K.reshape(-1).tolist())
                info.header.frame_id = camera.frame_id
            info.header.stamp = ns_to_stamp(stamp)
            self.infos[index].publish(info)
            if index in skipped:
                continue
            image = (images or {}).get(index)
            if image is None:
                image = rgb_to_image(frame.images[index], stamp, camera.frame_id)
            image.header.stamp = ns_to_stamp(stamp)
            self.images[index].publish(image)
        return stamp

    def _publish_odometry(self, frame, stamp: int) -> None:
        odom = Odometry(child_frame_id="base_link")
        odom.header.frame_id, odom.header.stamp = "odom", ns_to_stamp(stamp)
        t, q = matrix_to_translation_quaternion(frame.ego_pose)
        p, o = odom.pose.pose.position, odom.pose.pose.orientation
        p.x, p.y, p.z = (float(v) for v in t)
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        self.odom.publish(odom)
