"""Sensor rig and rigid transforms shared by the simulator, the pipeline and the node.

Conventions (docs/architecture.md §6): base_link/ego is REP-103 (x forward, y left, z up);
camera optical frames are x right, y down, z forward; ``T_a_b`` maps coordinates
in frame b to frame a; quaternions are (x, y, z, w) like ROS messages.
The rig lives in a human-readable YAML file (``config/rig_nuscenes.yaml``) so the
same calibration drives rendering, the camera sampling grid and ``/tf_static``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.resources import package_file

DEFAULT_RIG_FILE = "rig_nuscenes.yaml"
CAMERA_ORDER: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)
# Columns are the optical axes (x right, y down, z forward) written in the body
# frame (x forward, y left, z up): optical x = -body y, y = -body z, z = body x.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_MIN_DEPTH_M = 1e-6


@dataclass(frozen=True)
class CameraModel:
    """One pinhole camera: intrinsics for its image size and its pose on the ego."""

    name: str
    width: int
    height: int
    K: np.ndarray  # [3, 3] float64 intrinsics
    T_ego_cam: np.ndarray  # [4, 4] camera optical frame -> ego (base_link)
    frame_id: str = ""  # TF frame of the optical frame, e.g. "cam_front_optical"


@dataclass(frozen=True)
class Rig:
    """Six cameras in the fixed contract order plus the top lidar."""

    cameras: tuple[CameraModel, ...]
    T_ego_lidar: np.ndarray  # [4, 4] lidar frame -> ego
    lidar_frame_id: str = "lidar_top"

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(cam.name for cam in self.cameras)

    def project(self, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project ego-frame points [N, 3] into every camera.

        Returns pixel coordinates uv [C, N, 2] (NaN where the point is not in front
        of the camera) and depth [C, N] (optical z; <= 0 means behind the camera).
        """
        pts = np.asarray(points_ego, dtype=np.float64).reshape(-1, 3)
        T_cam_ego = np.stack([invert_transform(cam.T_ego_cam) for cam in self.cameras])
        K = np.stack([cam.K for cam in self.cameras])
        p_cam = np.einsum("cij,nj->cni", T_cam_ego[:, :3, :3], pts) + T_cam_ego[:, None, :3, 3]
        depth = p_cam[..., 2]
        pix = np.einsum("cij,cnj->cni", K, p_cam)
        in_front = depth > _MIN_DEPTH_M
        safe = np.where(in_front, depth, 1.0)[..., None]
        uv = np.where(in_front[..., None], pix[..., :2] / safe, np.nan)
        return uv, depth


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact, no general matrix inverse)."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def rotation_from_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix Rz(yaw) @ Ry(pitch) @ Rx(roll), angles in radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    Ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return Rz @ Ry @ Rx


def quaternion_to_matrix(q_xyzw: Sequence[float]) -> np.ndarray:
    """3x3 rotation of a (normalised here) quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) with w >= 0 of a 3x3 rotation matrix (Shepperd's method)."""
    m = np.asarray(R, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quat = np.array(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def pose_matrix(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation and a quaternion (x, y, z, w)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(quaternion_xyzw)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def matrix_to_translation_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation [3] and quaternion (x, y, z, w) [4] of a 4x4 transform."""
    return np.asarray(T[:3, 3], dtype=np.float64).copy(), matrix_to_quaternion(T[:3, :3])


def yaw_to_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation by ``yaw`` radians about +z."""
    return np.array([0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])


def quaternion_to_yaw(q_xyzw: Sequence[float]) -> float:
    """Heading about +z of a quaternion (x, y, z, w) (roll/pitch are ignored)."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def default_rig_path() -> Path:
    """The shipped rig YAML (source checkout first, then the installed share dir)."""
    return package_file("config", DEFAULT_RIG_FILE)


def load_rig(path: str | Path | None = None) -> Rig:
    """Read a rig YAML (see ``config/rig_nuscenes.yaml`` for the format)."""
    rig_path = Path(path) if path is not None else default_rig_path()
    try:
        doc = yaml.safe_load(rig_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rig file {rig_path}: {exc}") from exc
    if not isinstance(doc, dict) or "cameras" not in doc or "lidar" not in doc:
        raise ConfigError(f"rig file {rig_path} needs top-level 'cameras' and 'lidar'")
    cameras = tuple(_camera_from_dict(entry, rig_path) for entry in doc["cameras"])
    names = tuple(cam.name for cam in cameras)
    if names != CAMERA_ORDER:
        raise ConfigError(f"rig file {rig_path}: cameras must be {CAMERA_ORDER} in that order, got {names}")
    lidar = doc["lidar"]
    return Rig(cameras=cameras, T_ego_lidar=_body_pose(lidar, rig_path, "lidar"),
               lidar_frame_id=str(lidar.get("frame_id", "lidar_top")))


def _body_pose(entry: dict[str, Any], rig_path: Path, what: str) -> np.ndarray:
    """Sensor body -> base_link from ``translation`` and ``rotation`` (YPR degrees or quaternion)."""
    try:
        translation = [float(v) for v in entry["translation"]]
        rotation = entry.get("rotation", {})
        if "quaternion_xyzw" in rotation:
            R = quaternion_to_matrix([float(v) for v in rotation["quaternion_xyzw"]])
        else:
            R = rotation_from_ypr(*(np.radians(float(rotation.get(k, 0.0)))
                                    for k in ("yaw_deg", "pitch_deg", "roll_deg")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"rig file {rig_path}: bad pose for {what}: {exc!r}") from exc
    if len(translation) != 3:
        raise ConfigError(f"rig file {rig_path}: {what}.translation needs 3 values")
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = translation
    return T


def _camera_from_dict(entry: dict[str, Any], rig_path: Path) -> CameraModel:
    name = str(entry.get("name", "?"))
    try:
        width, height = int(entry["width"]), int(entry["height"])
        fx, fy, cx, cy = (float(entry[k]) for k in ("fx", "fy", "cx", "cy"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"rig file {rig_path}: bad intrinsics for camera {name}: {exc!r}") from exc
    if width <= 0 or height <= 0 or fx <= 0 or fy <= 0:
        raise ConfigError(f"rig file {rig_path}: camera {name} needs positive width, height, fx, fy")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    T_ego_cam = _body_pose(entry, rig_path, f"camera {name}")
    T_ego_cam[:3, :3] = T_ego_cam[:3, :3] @ R_BODY_OPTICAL
    frame_id = str(entry.get("frame_id", f"{name.lower()}_optical"))
    return CameraModel(name=name, width=width, height=height, K=K, T_ego_cam=T_ego_cam, frame_id=frame_id)
