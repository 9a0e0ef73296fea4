"""Sensor data -> model inputs of the engine contract (numpy, opencv, numba; no torch).

* ``prepare_images``: six RGB images -> ``images`` [6, 3, H, W] float32 0..255 (the
  graph normalises), resized with opencv.
* ``camera_sampling_grid``: rig calibration -> ``cam_grid`` [Z*Ho, Wo, 2], normalised
  coordinates for GridSample (align_corners=False) on the camera canvas (the six image
  feature maps side by side); cells no camera sees get ``OUTSIDE_IMAGE`` so the sample is
  zero. Depends only on the rig and the model config, so the pipeline computes it once
  and caches it.
* ``lidar_bev``: one sweep -> motion-compensated raster [Cl, Hb, Wb] (numba).
* ``ego_motion_affine``: two ego poses -> the [2, 3] matrix the graph feeds to its
  affine grid to warp the previous BEV state into the current ego frame.

Grid convention: row h <-> ego x = x_min + (h + 0.5) * cell_x, column w <-> ego y. In
GridSample's normalised coordinates the first component indexes columns (ego y) and the
second rows (ego x).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numba
import numpy as np

from bev_quant_ros.engine.contract import NUM_CAMERAS
from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.geometry import Rig, invert_transform
from bev_quant_ros.perception.model_config import ModelConfig

OUTSIDE_IMAGE = -2.0  # any |value| > 1 samples zeros (GridSample padding), so the lift adds nothing
MIN_DEPTH_M = 0.1  # closer than this to a camera's optical centre counts as not visible
MIN_POSE_DT_S = 1e-3  # pose pairs closer in time than this cannot give a velocity


def prepare_images(images: Sequence[np.ndarray | None], cfg: ModelConfig) -> np.ndarray:
    """Six [h, w, 3] uint8 RGB (or a [6, h, w, 3] array) -> [6, 3, H, W] float32 pixel values.

    A missing camera (None) gives a zero plane; it is masked by ``camera_valid`` anyway, so a
    frame without any camera is all zeros (lidar-only; the pipeline needs a sweep then).
    Each image is resized on its own straight into the output (cameras of one rig may
    differ in resolution), so the full-size frames are never stacked or copied:
    INTER_AREA when shrinking by 2x or more (bilinear would alias), else bilinear, 5x
    faster and as close to the full-size reference at these ratios (an 1/4-decoded
    JPEG, 200x113 -> 176x96: mean |diff| 2.30 vs 2.28 grey levels).
    """
    present = [image for image in images if image is not None]
    if len(images) != NUM_CAMERAS:
        raise InvalidMessageError(f"a frame needs {NUM_CAMERAS} camera slots, got {len(images)}",
                                  cause="camera_slots")
    if any(image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 for image in present):
        raise InvalidMessageError("camera images must be [h, w, 3] uint8 RGB, got "
                                  f"{[None if i is None else (i.shape, i.dtype.name) for i in images]}",
                                  cause="image_not_rgb")
    size = (cfg.image_width, cfg.image_height)
    out = np.zeros((NUM_CAMERAS, 3, cfg.image_height, cfg.image_width), np.float32)
    for i, image in enumerate(images):
        if image is not None:
            shrinks_2x = image.shape[0] >= 2 * cfg.image_height and image.shape[1] >= 2 * cfg.image_width
            interp = cv2.INTER_AREA if shrinks_2x else cv2.INTER_LINEAR
            out[i] = cv2.resize(image, size, interpolation=interp).transpose(2, 0, 1)
    return out


def bev_points(cfg: ModelConfig, stride: int = 1) -> np.ndarray:
    """Ego-frame 3D point of every height slice and BEV cell at ``stride``, [Z, Hb/stride, Wb/stride, 3]."""
    xs, ys = cfg.bev_cell_centers(stride)
    z = np.asarray(cfg.z_values_m, dtype=np.float64)
    zz, xx, yy = np.meshgrid(z, xs, ys, indexing="ij")
    return np.stack([xx, yy, zz], axis=-1)


def camera_image_grids(rig: Rig, points: np.ndarray) -> np.ndarray:
    """Normalised image coordinates (align_corners=False) of ego points [N, 3] in each camera,
    [6, N, 2] float64; ``OUTSIDE_IMAGE`` where the camera does not see the point."""
    if len(rig.cameras) != NUM_CAMERAS:
        raise InvalidMessageError(f"rig has {len(rig.cameras)} cameras, the contract needs {NUM_CAMERAS}")
    uv, depth = rig.project(points)  # [6, N, 2] pixels, [6, N]
    sizes = np.array([[cam.width, cam.height] for cam in rig.cameras], dtype=np.float64)[:, None, :]
    # pixel i's centre is at u = i and spans [i - 0.5, i + 0.5): normalised = (2u + 1) / W - 1
    with np.errstate(invalid="ignore"):
        grid = (2.0 * uv + 1.0) / sizes - 1.0
        visible = (depth > MIN_DEPTH_M) & np.all(np.abs(grid) <= 1.0, axis=-1)
    return np.where(visible[..., None], grid, OUTSIDE_IMAGE)


def canvas_x(camera_index: np.ndarray | int, image_x: np.ndarray | float) -> np.ndarray:
    """Normalised x on the camera canvas (the six feature maps side by side, camera k in the
    k-th sixth of the width) of normalised image x in camera ``camera_index``."""
    return (np.asarray(camera_index) + (np.asarray(image_x) + 1.0) / 2.0) * (2.0 / NUM_CAMERAS) - 1.0


def camera_sampling_grid(rig: Rig, cfg: ModelConfig) -> np.ndarray:
    """cam_grid [Z*Ho, Wo, 2] float32 (slice-major rows: index z * Ho + h) on the camera canvas.

    One grid for all cameras: the graph samples the six feature maps side by side once
    (6x fewer samples than one grid per camera, most of whose points are outside that
    camera). A cell seen by two cameras samples the one it projects most centrally in.
    """
    points = bev_points(cfg, cfg.output_stride).reshape(-1, 3)
    grids = camera_image_grids(rig, points)  # [6, N, 2]
    margin = np.where(grids[..., 0] != OUTSIDE_IMAGE, np.abs(grids).max(axis=-1), np.inf)
    best = margin.argmin(axis=0)
    chosen = grids[best, np.arange(points.shape[0])]  # [N, 2]
    canvas = np.stack([canvas_x(best, chosen[:, 0]), chosen[:, 1]], axis=-1)
    grid = np.where(np.isfinite(margin.min(axis=0))[:, None], canvas, OUTSIDE_IMAGE)
    return grid.reshape(cfg.Z * cfg.Ho, cfg.Wo, 2).astype(np.float32)


def planar_velocity(T_world_ego_a: np.ndarray, T_world_ego_b: np.ndarray, dt_s: float) -> np.ndarray:
    """Constant (vx, vy, yaw_rate) in frame a that moves pose a to pose b in dt_s seconds."""
    T_a_b = invert_transform(T_world_ego_a) @ T_world_ego_b
    yaw = np.arctan2(T_a_b[1, 0], T_a_b[0, 0])
    return np.array([T_a_b[0, 3] / dt_s, T_a_b[1, 3] / dt_s, yaw / dt_s])


def lidar_bev(points: np.ndarray, T_ego_lidar: np.ndarray, T_world_ego_lidar: np.ndarray,
              T_world_ego_cam: np.ndarray, lidar_to_cam_dt_s: float, cfg: ModelConfig,
              ego_velocity_xy_yawrate: np.ndarray | None = None) -> np.ndarray:
    """Motion-compensated lidar raster [Cl, Hb, Wb] in the ego frame at the camera stamp.

    points [N, 5] x, y, z, intensity, t in the lidar frame at each point's capture time,
    t in seconds relative to the sweep stamp (<= 0). T_world_ego_lidar is the ego pose at
    the sweep stamp, T_world_ego_cam at the camera stamp (``lidar_to_cam_dt_s`` =
    camera stamp - sweep stamp). Within the sweep the ego moves with constant planar
    velocity, taken from the two poses, or from ``ego_velocity_xy_yawrate`` (ego frame)
    when the stamps coincide. Channels: occupancy per lidar z bin, max intensity / intensity_max,
    log(1 + count) / log(64), mean time lag / max_time_lag_s (lag to the camera stamp).
    """
    if points.ndim != 2 or points.shape[1] != 5:
        raise InvalidMessageError(f"lidar points must be [N, 5] (x, y, z, intensity, t), got {points.shape}")
    if abs(lidar_to_cam_dt_s) >= MIN_POSE_DT_S:
        velocity = planar_velocity(T_world_ego_lidar, T_world_ego_cam, lidar_to_cam_dt_s)
    elif ego_velocity_xy_yawrate is not None:
        velocity = np.asarray(ego_velocity_xy_yawrate, dtype=np.float64)
    else:
        velocity = np.zeros(3)
    T_cam_lidar_ego = invert_transform(T_world_ego_cam) @ T_world_ego_lidar
    raster = np.zeros((cfg.Cl, cfg.Hb, cfg.Wb), np.float32)
    _rasterize(np.ascontiguousarray(points, dtype=np.float32), np.ascontiguousarray(T_ego_lidar, np.float64),
               velocity, np.ascontiguousarray(T_cam_lidar_ego), float(lidar_to_cam_dt_s),
               np.asarray(cfg.lidar_z_edges_m, np.float64), cfg.x_range_m[0], cfg.y_range_m[0],
               cfg.cell_x_m, cfg.cell_y_m, cfg.lidar_max_time_lag_s, 1.0 / cfg.lidar_intensity_max, raster)
    return raster


@numba.njit(cache=True, nogil=True)  # the node prepares frames on a second thread
def _rasterize(points, T_ego_lidar, velocity, T_cam_lidar_ego, lidar_to_cam_dt_s, z_edges,
               x_min, y_min, cell_x, cell_y, max_lag_s, intensity_scale, raster):  # pragma: no cover - numba
    n_bins = z_edges.shape[0] - 1
    hb, wb = raster.shape[1], raster.shape[2]
    ch_int, ch_count, ch_lag = n_bins, n_bins + 1, n_bins + 2
    for i in range(points.shape[0]):
        px, py, pz, t = points[i, 0], points[i, 1], points[i, 2], points[i, 4]
        # lidar -> ego at the point's capture time
        ex = T_ego_lidar[0, 0] * px + T_ego_lidar[0, 1] * py + T_ego_lidar[0, 2] * pz + T_ego_lidar[0, 3]
        ey = T_ego_lidar[1, 0] * px + T_ego_lidar[1, 1] * py + T_ego_lidar[1, 2] * pz + T_ego_lidar[1, 3]
        ez = T_ego_lidar[2, 0] * px + T_ego_lidar[2, 1] * py + T_ego_lidar[2, 2] * pz + T_ego_lidar[2, 3]
        # ego at capture time -> ego at the sweep stamp (constant planar velocity over t)
        a = velocity[2] * t
        ca, sa = np.cos(a), np.sin(a)
        sx = ca * ex - sa * ey + velocity[0] * t
        sy = sa * ex + ca * ey + velocity[1] * t
        # ego at the sweep stamp -> ego at the camera stamp (exact, from the two poses)
        x = T_cam_lidar_ego[0, 0] * sx + T_cam_lidar_ego[0, 1] * sy + T_cam_lidar_ego[0, 2] * ez + T_cam_lidar_ego[0, 3]
        y = T_cam_lidar_ego[1, 0] * sx + T_cam_lidar_ego[1, 1] * sy + T_cam_lidar_ego[1, 2] * ez + T_cam_lidar_ego[1, 3]
        z = T_cam_lidar_ego[2, 0] * sx + T_cam_lidar_ego[2, 1] * sy + T_cam_lidar_ego[2, 2] * ez + T_cam_lidar_ego[2, 3]
        h = int(np.floor((x - x_min) / cell_x))
        w = int(np.floor((y - y_min) / cell_y))
        if h < 0 or h >= hb or w < 0 or w >= wb or z < z_edges[0] or z >= z_edges[n_bins]:
            continue
        for k in range(n_bins):
            if z < z_edges[k + 1]:
                raster[k, h, w] = 1.0
                break
        raster[ch_int, h, w] = max(raster[ch_int, h, w], min(points[i, 3] * intensity_scale, 1.0))
        raster[ch_count, h, w] += 1.0
        raster[ch_lag, h, w] += min((lidar_to_cam_dt_s - t) / max_lag_s, 1.0)
    for h in range(hb):
        for w in range(wb):
            count = raster[ch_count, h, w]
            if count > 0:
                raster[ch_lag, h, w] /= count
                raster[ch_count, h, w] = np.log1p(count) / np.log(64.0)


def ego_motion_affine(T_world_ego_prev: np.ndarray, T_world_ego_curr: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """[2, 3] float32 theta for ``affine_grid(theta, align_corners=False)`` warping prev BEV -> current.

    For each current cell (normalised n = (n_col, n_row)) theta gives where that ground point
    lies in the previous BEV: ego = A n + c with A = [[0, sx], [sy, 0]] (row <-> x, col <-> y),
    so n_prev = A^-1 R A n + A^-1 (R c + t - c) with (R, t) the planar part of T_prev_curr.
    """
    T_prev_curr = invert_transform(T_world_ego_prev) @ T_world_ego_curr
    yaw = np.arctan2(T_prev_curr[1, 0], T_prev_curr[0, 0])
    R = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    t = T_prev_curr[:2, 3]
    (x0, x1), (y0, y1) = cfg.x_range_m, cfg.y_range_m
    c = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    A = np.array([[0.0, (x1 - x0) / 2.0], [(y1 - y0) / 2.0, 0.0]])
    A_inv = np.linalg.inv(A)
    theta = np.concatenate([A_inv @ R @ A, (A_inv @ (R @ c + t - c))[:, None]], axis=1)
    return theta.astype(np.float32)
