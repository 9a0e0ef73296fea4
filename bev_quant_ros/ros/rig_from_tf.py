"""Live rig calibration: CameraInfo intrinsics and /tf_static extrinsics over the rig file.

The rig YAML gives the starting calibration; a vehicle publishes its real one.
RigCalibration merges both and hands out a new :class:`Rig` only when something
changed beyond a tolerance, so the cached camera sampling grid is recomputed
rarely. No ROS imports: the node passes plain matrices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bev_quant_ros.perception.geometry import Rig
from bev_quant_ros.ros.message_decoding import camera_info_to_intrinsics, transform_to_matrix

INTRINSICS_TOLERANCE_PX = 1e-3
EXTRINSICS_TOLERANCE = 1e-6


class StaticTransforms:
    """The static TF tree (child -> parent) so chains like base_link -> cam -> cam_optical resolve."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        self._parent[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def lookup(self, target: str, frame: str, max_depth: int = 16) -> np.ndarray | None:
        """T_target_frame by walking parents from ``frame``; None when not connected."""
        T = np.eye(4)
        current = frame
        for _ in range(max_depth):
            if current == target:
                return T
            if current not in self._parent:
                return None
            parent, T_parent_current = self._parent[current]
            T = T_parent_current @ T
            current = parent
        return None


class RigCalibration:
    """Current rig = rig file, overridden per camera by CameraInfo and static TF."""

    def __init__(self, rig: Rig, base_frame: str = "base_link") -> None:
        self.rig = rig
        self.base_frame = base_frame
        self.transforms = StaticTransforms()
        self._camera_frames: dict[int, str] = {}
        self._lidar_frame: str | None = None

    def update_intrinsics(self, camera_index: int, K: np.ndarray, width: int, height: int,
                          frame_id: str) -> bool:
        """Apply a CameraInfo; True when the rig changed."""
        if frame_id:
            self._camera_frames[camera_index] = frame_id
        camera = self.rig.cameras[camera_index]
        changed = (camera.width, camera.height) != (width, height) \
            or not np.allclose(camera.K, K, atol=INTRINSICS_TOLERANCE_PX, rtol=0)
        if changed:
            self._replace(camera_index, K=np.asarray(K, np.float64), width=int(width), height=int(height))
        return self._apply_extrinsics(camera_index) or changed

    def apply_camera_info(self, camera_index: int, msg: Any) -> bool:
        """Apply a sensor_msgs/CameraInfo; True when the rig changed. InvalidMessageError for a bad K."""
        return self.update_intrinsics(camera_index, camera_info_to_intrinsics(msg), msg.width, msg.height,
                                      msg.header.frame_id)

    def apply_tf_static(self, msg: Any) -> bool:
        """Apply every transform of a tf2_msgs/TFMessage from /tf_static; True when the rig changed."""
        changed = [self.add_static_transform(t.header.frame_id, t.child_frame_id, transform_to_matrix(t.transform))
                   for t in msg.transforms]
        return any(changed)

    def update_lidar_frame(self, frame_id: str) -> bool:
        """The lidar's frame (a PointCloud2 header); True when its mount changed from static TF."""
        if not frame_id or frame_id == self._lidar_frame:
            return False
        self._lidar_frame = frame_id
        return self._apply_lidar_extrinsics()

    def add_static_transform(self, parent: str, child: str, T_parent_child: np.ndarray) -> bool:
        """Apply one /tf_static transform; True when any sensor's extrinsics changed."""
        self.transforms.add(parent, child, T_parent_child)
        cameras = [self._apply_extrinsics(index) for index in self._camera_frames]
        return self._apply_lidar_extrinsics() or any(cameras)

    def _apply_lidar_extrinsics(self) -> bool:
        T = self.transforms.lookup(self.base_frame, self._lidar_frame) if self._lidar_frame else None
        if T is None or np.allclose(self.rig.T_ego_lidar, T, atol=EXTRINSICS_TOLERANCE, rtol=0):
            return False
        self.rig = dataclasses.replace(self.rig, T_ego_lidar=T, lidar_frame_id=self._lidar_frame)
        return True

    @property
    def sources(self) -> dict[str, str]:
        """Where each sensor's calibration came from (for the note a reader prints)."""
        cameras = {camera.name: ("CameraInfo + tf_static" if self._camera_frames.get(i) and
                                 self.transforms.lookup(self.base_frame, self._camera_frames[i]) is not None
                                 else "CameraInfo" if i in self._camera_frames else "rig file")
                   for i, camera in enumerate(self.rig.cameras)}
        lidar_from_tf = self._lidar_frame and self.transforms.lookup(self.base_frame, self._lidar_frame) is not None
        return {**cameras, "lidar": "tf_static" if lidar_from_tf else "rig file"}

    def _apply_extrinsics(self, camera_index: int) -> bool:
        frame = self._camera_frames.get(camera_index)
        T = self.transforms.lookup(self.base_frame, frame) if frame else None
        camera = self.rig.cameras[camera_index]
        if T is None or np.allclose(camera.T_ego_cam, T, atol=EXTRINSICS_TOLERANCE, rtol=0):
            return False
        self._replace(camera_index, T_ego_cam=T, frame_id=frame)
        return True

    def _replace(self, camera_index: int, **changes) -> None:
        cameras = list(self.rig.cameras)
        cameras[camera_index] = dataclasses.replace(cameras[camera_index], **changes)
        self.rig = dataclasses.replace(self.rig, cameras=tuple(cameras))
