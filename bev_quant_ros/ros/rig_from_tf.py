"""Live rig calibration: CameraInfo intrinsics and /tf_static extrinsics over the rig file.

The rig YAML gives the starting calibration; a vehicle publishes its real one.
RigCalibration merges both and hands out a new :class:`Rig` only when something
changed beyond a tolerance, so the cached camera sampling grid is recomputed
rarely. No ROS imports: the node passes plain matrices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bev_quant_ros.perception.geometry import Rig

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

    def add_static_transform(self, parent: str, child: str, T_parent_child: np.ndarray) -> bool:
        """Apply one /tf_static transform; True when any camera's extrinsics changed."""
        self.transforms.add(parent, child, T_parent_child)
        return any([self._apply_extrinsics(index) for index in self._camera_frames])

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
