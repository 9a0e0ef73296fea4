"""Assembled sensor messages -> `SensorFrame`: the one conversion shared by the node and the
offline drive readers, so a bag evaluated offline gets exactly the engine inputs the node
would have computed from the same messages.

Messages are read by their fields (rclpy and rosbags messages alike); no rclpy import.
A message that cannot be decoded is reported through ``report(source, error)`` and
left out of the frame (that camera invalid, or no lidar), never dropping the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.frame_assembly import AssembledFrame
from bev_quant_ros.perception.geometry import Rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import SensorFrame
from bev_quant_ros.perception.temporal import PoseBuffer
from bev_quant_ros.ros.message_decoding import ScaledImageDecoder, image_to_rgb, pointcloud_to_points

ReportBadInput = Callable[[str, InvalidMessageError], None]


@dataclass(frozen=True)
class EgoPoses:
    """The ego poses a frame needs, looked up once (the node does it under its lock)."""

    T_world_ego: np.ndarray | None  # at the camera stamp
    T_world_ego_lidar: np.ndarray | None  # at the lidar stamp
    velocity_xy_yawrate: np.ndarray | None  # at the lidar stamp (motion within a sweep)

    @classmethod
    def look_up(cls, poses: PoseBuffer, stamp_ns: int, lidar_stamp_ns: int | None) -> "EgoPoses":
        if lidar_stamp_ns is None:
            return cls(poses.pose_at(stamp_ns), None, None)
        return cls(poses.pose_at(stamp_ns), poses.pose_at(lidar_stamp_ns), poses.velocity_at(lidar_stamp_ns))


def is_compressed(msg: Any) -> bool:
    """sensor_msgs/CompressedImage (has ``format``) rather than Image."""
    return hasattr(msg, "format")


class SensorFrameBuilder:
    """Decodes an `AssembledFrame`'s messages (scaled JPEG decode, point cloud unpacking)."""

    def __init__(self, rig: Rig, model_config: ModelConfig, image_sources: Sequence[str], lidar_source: str,
                 report: ReportBadInput) -> None:
        self._model_config = model_config
        self._image_sources = tuple(image_sources)
        self._lidar_source = lidar_source
        self._report = report
        self.set_rig(rig)

    def set_rig(self, rig: Rig) -> None:
        """JPEG reductions start from the rig's image sizes (the first frame is then not decoded at full size);
        every image is checked against its camera's size (from CameraInfo when it came)."""
        cfg = self._model_config
        self._camera_sizes = [(camera.width, camera.height) for camera in rig.cameras]
        self._decoders = [ScaledImageDecoder(cfg.image_width, cfg.image_height, camera.width, camera.height)
                          for camera in rig.cameras]

    def build(self, assembled: AssembledFrame, ego: EgoPoses) -> SensorFrame:
        points = self._points(assembled.lidar)
        lidar_stamp = assembled.lidar_stamp_ns if points is not None else None
        return SensorFrame(assembled.stamp_ns, self._images(assembled.images), points, lidar_stamp,
                           ego.T_world_ego, ego.T_world_ego_lidar if lidar_stamp is not None else None,
                           ego.velocity_xy_yawrate if lidar_stamp is not None else None)

    def _images(self, messages: Sequence[Any]) -> list[np.ndarray | None]:
        images: list[np.ndarray | None] = []
        for index, msg in enumerate(messages):
            image = None
            if msg is not None:
                try:
                    image = self._decode(index, msg)
                except InvalidMessageError as exc:
                    self._report(self._image_sources[index], exc)
            images.append(image)
        return images

    def _decode(self, index: int, msg: Any) -> np.ndarray:
        """RGB of one camera; an image whose size is not its camera's would be lifted with the wrong
        intrinsics, so it is an error (that camera invalid for the frame), not a silent resize."""
        if is_compressed(msg):
            decoder = self._decoders[index]
            image = decoder.decode(msg)
            reduction = decoder.used_reduction
        else:
            image, reduction = image_to_rgb(msg), 1
        width, height = self._camera_sizes[index]
        full_width, full_height = image.shape[1] * reduction, image.shape[0] * reduction
        if abs(full_width - width) >= reduction or abs(full_height - height) >= reduction:
            raise InvalidMessageError(
                f"image is {full_width}x{full_height}, its camera (CameraInfo or rig) "
                f"is {width}x{height}", cause="size_differs_from_camera_info")
        return image

    def _points(self, msg: Any) -> np.ndarray | None:
        if msg is None:
            return None
        try:
            return pointcloud_to_points(msg)
        except InvalidMessageError as exc:
            self._report(self._lidar_source, exc)
            return None
