"""The in-memory frame API: numpy frames for training and calibration without bags.

Cameras trigger together at ``camera_rate_hz``; the lidar completes a sweep every
``1 / lidar_rate_hz`` and each frame carries the latest *complete* sweep, so at
30/10 Hz a new sweep is cast every third frame and reused in between (as a
synchroniser on the vehicle would). Ground truth is at the camera stamp.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D
from bev_quant_ros.perception.geometry import Rig, invert_transform, load_rig
from bev_quant_ros.sim.catalog import NUM_GT_KINDS
from bev_quant_ros.sim.conditions import CONDITIONS, ConditionParams, condition_params
from bev_quant_ros.sim.lidar import BoxesInSweep, LidarModel, sweep_points
from bev_quant_ros.sim.render import ID_CLUTTER, CameraRenderer, DrawParts, GroundLayer
from bev_quant_ros.sim.world import World, WorldObjects, parts_world

BASE_STAMP_NS = 1_700_000_000_000_000_000
GT_RADIUS_M = 60.0
QUERY_RADIUS_M = 90.0
MIN_VISIBLE_ID_PIXELS = 3  # quarter-resolution pixels (about 50 full-resolution pixels)
_ASPHALT = np.array([0.20, 0.20, 0.21])
_SIDEWALK = np.array([0.55, 0.54, 0.50])
_WHITE = np.array([0.90, 0.90, 0.88])
_YELLOW = np.array([0.90, 0.75, 0.15])
_ROAD_BEHIND_M, _ROAD_AHEAD_M, _ROAD_STEP_M = 60.0, 90.0, 3.0
_DASH_PERIOD_M, _DASH_LENGTH_M = 9.0, 3.0


@dataclass
class SimFrame:
    """One synchronised multi-sensor frame (see the module docstring for timing)."""

    index: int
    stamp_ns: int  # camera trigger time (six cameras share it)
    condition: str
    images: np.ndarray  # [6, H, W, 3] uint8 RGB, rig camera order
    lidar_stamp_ns: int  # end time of the latest complete lidar sweep (<= stamp_ns)
    points: np.ndarray  # [N, 5] float32 x, y, z, intensity (0..255), t (s, relative to lidar_stamp_ns)
    ego_pose: np.ndarray  # [4, 4] T_world_ego at stamp_ns
    lidar_ego_pose: np.ndarray  # [4, 4] T_world_ego at lidar_stamp_ns
    ego_velocity: np.ndarray  # [3] m/s in ego axes
    gt: Boxes3D  # objects within GT_RADIUS_M at stamp_ns, ego frame
    gt_num_lidar_points: np.ndarray  # [M] returns on the object in the latest sweep
    gt_visible_cameras: np.ndarray  # [M, 6] bool: at least a few unoccluded pixels in that camera
    gt_track_ids: np.ndarray  # [M] int64, stable across frames


def generate_frames(seed: int, condition: str, num_frames: int, rig: Rig | None = None,
                    camera_rate_hz: float = 30.0, lidar_rate_hz: float = 10.0) -> Iterator[SimFrame]:
    """Frames 0..num_frames-1 of sequence ``seed`` under ``condition`` (deterministic)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if camera_rate_hz <= 0 or lidar_rate_hz <= 0 or lidar_rate_hz > camera_rate_hz:
        raise ValueError(f"need 0 < lidar_rate_hz <= camera_rate_hz, got {lidar_rate_hz}, {camera_rate_hz}")
    return FrameGenerator(seed, condition, rig or load_rig(), camera_rate_hz, lidar_rate_hz).frames(num_frames)


class FrameGenerator:
    """Holds the world, the renderer and the last lidar sweep of one sequence."""

    def __init__(self, seed: int, condition: str, rig: Rig, camera_rate_hz: float, lidar_rate_hz: float) -> None:
        self.seed, self.condition, self.rig = seed, condition, rig
        self.camera_rate_hz, self.lidar_rate_hz = camera_rate_hz, lidar_rate_hz
        self.world = World(seed)
        params = condition_params(condition, seed)
        if params.glare:  # a low sun ahead of the ego at the start, so the front cameras face it
            start_yaw = float(np.arctan2(self.world.ego_pose(0.0)[1, 0], self.world.ego_pose(0.0)[0, 0]))
            offset = float(np.random.default_rng([seed, 13]).uniform(-0.35, 0.35))
            params = dataclasses.replace(params, sun_azimuth_rad=start_yaw + offset)
        self.params: ConditionParams = params
        self.renderer = CameraRenderer(rig, params, seed)
        self.lidar = LidarModel()
        self._rays = self.lidar.ray_directions()
        self._sweep_index: int | None = None
        self._sweep: tuple[np.ndarray, dict[int, int]] = (np.zeros((0, 5), np.float32), {})
        el, az = params.sun_elevation_rad, params.sun_azimuth_rad
        self._sun_world = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])

    def frames(self, num_frames: int) -> Iterator[SimFrame]:
        for k in range(num_frames):
            yield self.frame(k)

    def frame(self, k: int) -> SimFrame:
        t = k / self.camera_rate_hz
        stamp_ns = BASE_STAMP_NS + round(k * 1e9 / self.camera_rate_hz)
        sweep_index = int(np.floor(t * self.lidar_rate_hz + 1e-9))
        lidar_t = sweep_index / self.lidar_rate_hz
        if sweep_index != self._sweep_index:
            self._sweep = self._cast_sweep(lidar_t)
            self._sweep_index = sweep_index
        points, hits_per_track = self._sweep

        T_we = self.world.ego_pose(t)
        objects = self.world.objects_near(t, T_we[:2, 3], QUERY_RADIUS_M)
        T_ew = invert_transform(T_we)
        ego_center = objects.center @ T_ew[:3, :3].T + T_ew[:3, 3]
        ego_yaw_world = np.arctan2(T_we[1, 0], T_we[0, 0])
        gt_sel = np.nonzero((objects.kind < NUM_GT_KINDS)
                            & (np.linalg.norm(ego_center[:, :2], axis=1) <= GT_RADIUS_M))[0]
        draw_id = np.full(len(objects.kind), ID_CLUTTER, np.uint16)
        draw_id[gt_sel] = np.arange(1, gt_sel.size + 1)
        rng = np.random.default_rng([self.seed, 17, CONDITIONS.index(self.condition), k])
        images, ids = self.renderer.render(self._ground_layers(t, T_ew), self._draw_parts(objects, T_ew, draw_id),
                                           rng, T_ew[:3, :3] @ self._sun_world)
        counts = np.stack([np.bincount(cam_ids.ravel(), minlength=gt_sel.size + 1)[1:gt_sel.size + 1]
                           for cam_ids in ids], axis=1)
        yaw = objects.yaw[gt_sel] - ego_yaw_world
        vel = objects.velocity[gt_sel] @ T_ew[:2, :2].T
        gt = Boxes3D(ego_center[gt_sel], objects.size[gt_sel].copy(), np.arctan2(np.sin(yaw), np.cos(yaw)), vel,
                     [CLASS_NAMES[i] for i in objects.kind[gt_sel]])
        track_ids = objects.track_id[gt_sel]
        return SimFrame(
            index=k, stamp_ns=stamp_ns, condition=self.condition, images=images,
            lidar_stamp_ns=BASE_STAMP_NS + round(sweep_index * 1e9 / self.lidar_rate_hz), points=points,
            ego_pose=T_we, lidar_ego_pose=self.world.ego_pose(lidar_t),
            ego_velocity=self.world.ego_velocity(t), gt=gt,
            gt_num_lidar_points=np.array([hits_per_track.get(int(i), 0) for i in track_ids], np.int64),
            gt_visible_cameras=counts >= MIN_VISIBLE_ID_PIXELS, gt_track_ids=track_ids,
        )

    def _cast_sweep(self, t_end: float) -> tuple[np.ndarray, dict[int, int]]:
        """Points of the sweep ending at t_end and the number of returns per track id."""
        period = 1.0 / self.lidar_rate_hz
        T_we_end = self.world.ego_pose(t_end)
        objects = self.world.objects_near(t_end, T_we_end[:2, 3], self.lidar.max_range_m + 15.0)
        centers_end, yaws = parts_world(objects)
        centers_start = centers_end.copy()
        centers_start[:, :2] -= objects.velocity[objects.owner] * period
        c0, yaw0 = self._to_lidar(centers_start, yaws, t_end - period)
        c1, yaw1 = self._to_lidar(centers_end, yaws, t_end)
        boxes = BoxesInSweep(c0, c1, yaw0, yaw1, objects.parts.halves, objects.parts.reflectivity)
        rng = np.random.default_rng([self.seed, 19, CONDITIONS.index(self.condition), int(round(t_end * 1e3))])
        ground_z = -float((self.rig.T_ego_lidar)[2, 3])
        points, hit = sweep_points(self.lidar, self._rays, ground_z, boxes, self.params, period, rng)
        owners = objects.owner[hit[hit >= 0]]
        tracks, counts = np.unique(objects.track_id[owners], return_counts=True)
        return points, dict(zip(tracks.tolist(), counts.tolist()))

    def _to_lidar(self, centers_world: np.ndarray, yaws_world: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        T_wl = self.world.ego_pose(t) @ self.rig.T_ego_lidar
        T_lw = invert_transform(T_wl)
        return centers_world @ T_lw[:3, :3].T + T_lw[:3, 3], yaws_world - np.arctan2(T_wl[1, 0], T_wl[0, 0])

    def _draw_parts(self, objects: WorldObjects, T_ew: np.ndarray, draw_id: np.ndarray) -> DrawParts:
        centers, yaws = parts_world(objects)
        ego_yaw = np.arctan2(T_ew[0, 1], T_ew[0, 0])  # T_ew rotation is R_we transposed
        obj_center = objects.center @ T_ew[:3, :3].T + T_ew[:3, 3]
        return DrawParts(centers=centers @ T_ew[:3, :3].T + T_ew[:3, 3], yaws=yaws - ego_yaw,
                         halves=objects.parts.halves, colours=objects.parts.colours,
                         emissive=objects.parts.emissive, stack=objects.parts.stack,
                         object_center=obj_center[objects.owner], draw_id=draw_id[objects.owner])

    def _ground_layers(self, t: float, T_ew: np.ndarray) -> list[GroundLayer]:
        """Road, sidewalks and markings around the ego, as ego-frame polygons."""
        road = self.world.road
        ego_s = float(self.world.ego_s(t))
        s = np.arange(ego_s - _ROAD_BEHIND_M, ego_s + _ROAD_AHEAD_M, _ROAD_STEP_M)

        def strip(s_samples: np.ndarray, lo: float, hi: float) -> np.ndarray:
            left, _ = road.place(s_samples, np.full(s_samples.size, hi))
            right, _ = road.place(s_samples[::-1], np.full(s_samples.size, lo))
            xy = np.concatenate([left, right])
            pts = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
            return pts @ T_ew[:3, :3].T + T_ew[:3, 3]

        first_dash = np.ceil(s[0] / _DASH_PERIOD_M) * _DASH_PERIOD_M
        dashes = [np.array([d, d + _DASH_LENGTH_M]) for d in np.arange(first_dash, s[-1], _DASH_PERIOD_M)]
        line = 0.075
        return [
            GroundLayer(_ASPHALT, [strip(s, -11.0, 11.0)]),
            GroundLayer(_SIDEWALK, [strip(s, -15.0, -11.0), strip(s, 11.0, 15.0)]),
            GroundLayer(_YELLOW, [strip(s, -0.2 - line, -0.2 + line), strip(s, 0.2 - line, 0.2 + line)]),
            GroundLayer(_WHITE, [strip(s, lat - line, lat + line) for lat in (-8.5, -7.0, 7.0, 8.5)]
                        + [strip(d, lat - line, lat + line) for d in dashes for lat in (-3.5, 3.5)]),
        ]
