"""A 32-beam spinning lidar ray-cast against the ground plane and oriented boxes (numba).

The head spins once per sweep, starting and ending at the rear; every azimuth
column fires at its own time, and boxes move (relative to the sensor) linearly
between their poses at the sweep start and end. So points are, as on a real
sensor, in the lidar frame *at their own capture time*, with ``t`` relative to
the sweep end. The cast is box-major: each box only visits the columns its
azimuth span covers, which keeps a sweep of 32 x 1000 rays against hundreds of
boxes at a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from bev_quant_ros.sim.conditions import ConditionParams

HIT_NONE, HIT_GROUND, HIT_SPURIOUS = -2, -1, -3
GROUND_REFLECTIVITY = 0.12


@dataclass(frozen=True)
class LidarModel:
    """Beam layout of an HDL-32E-like sensor."""

    elevations_deg: tuple[float, ...] = tuple(np.linspace(-30.67, 10.67, 32))
    azimuth_steps: int = 1000
    max_range_m: float = 70.0

    def ray_directions(self) -> np.ndarray:
        """Unit rays [B, A, 3] in the lidar frame; column j fires at fraction (j + 0.5) / A of the sweep."""
        el = np.radians(np.asarray(self.elevations_deg))[:, None]
        az = column_azimuths(self.azimuth_steps)[None, :]
        return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], axis=-1)


def column_azimuths(steps: int) -> np.ndarray:
    """Azimuth of every column: from the rear (+pi), clockwise seen from above, back to the rear."""
    return np.pi - 2.0 * np.pi * (np.arange(steps) + 0.5) / steps


@dataclass
class BoxesInSweep:
    """Boxes in the lidar frame at the sweep start and end."""

    center_start: np.ndarray  # [M, 3]
    center_end: np.ndarray  # [M, 3]
    yaw_start: np.ndarray  # [M]
    yaw_end: np.ndarray  # [M]
    halves: np.ndarray  # [M, 3]
    reflectivity: np.ndarray  # [M]


@numba.njit(cache=True)
def _wrap(a: float) -> float:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


@numba.njit(cache=True)
def raycast(dirs, ground_z, max_range, c0, c1, yaw0, yaw1, half):  # pragma: no cover - numba
    """Nearest hit per ray: range [B, A], hit index [B, A] (box index, HIT_GROUND or HIT_NONE), |cos incidence|."""
    B, A = dirs.shape[0], dirs.shape[1]
    rng = np.full((B, A), np.inf)
    hit = np.full((B, A), -2, np.int32)
    cosi = np.zeros((B, A))
    for b in range(B):
        for a in range(A):
            dz = dirs[b, a, 2]
            if dz < -1e-6:
                t = ground_z / dz
                if t < max_range:
                    rng[b, a] = t
                    hit[b, a] = -1
                    cosi[b, a] = -dz
    two_pi = 2.0 * np.pi
    for m in range(c0.shape[0]):
        cm = 0.5 * (c0[m] + c1[m])
        if np.sqrt(cm[0] ** 2 + cm[1] ** 2) - np.sqrt(half[m, 0] ** 2 + half[m, 1] ** 2) > max_range:
            continue
        az_c = np.arctan2(cm[1], cm[0])
        lo, hi = 0.0, 0.0
        inside = False
        for pose in range(2):
            c = c0[m] if pose == 0 else c1[m]
            yw = yaw0[m] if pose == 0 else yaw1[m]
            cs, sn = np.cos(yw), np.sin(yw)
            lx = cs * (-c[0]) + sn * (-c[1])
            ly = -sn * (-c[0]) + cs * (-c[1])
            if abs(lx) < half[m, 0] and abs(ly) < half[m, 1]:
                inside = True
            for sx in (-1.0, 1.0):
                for sy in (-1.0, 1.0):
                    px = c[0] + cs * sx * half[m, 0] - sn * sy * half[m, 1]
                    py = c[1] + sn * sx * half[m, 0] + cs * sy * half[m, 1]
                    d = _wrap(np.arctan2(py, px) - az_c)
                    lo, hi = min(lo, d), max(hi, d)
        if inside:
            continue  # the sensor is inside the footprint: never the case for real objects
        j_first = int(np.floor((np.pi - (az_c + hi)) / two_pi * A - 0.5))
        j_last = int(np.ceil((np.pi - (az_c + lo)) / two_pi * A - 0.5))
        dyaw = _wrap(yaw1[m] - yaw0[m])
        for jj in range(j_first, j_last + 1):
            j = jj % A
            frac = (j + 0.5) / A
            cx = c0[m, 0] + (c1[m, 0] - c0[m, 0]) * frac
            cy = c0[m, 1] + (c1[m, 1] - c0[m, 1]) * frac
            cz = c0[m, 2] + (c1[m, 2] - c0[m, 2]) * frac
            yw = yaw0[m] + dyaw * frac
            cs, sn = np.cos(yw), np.sin(yw)
            ox = cs * (-cx) + sn * (-cy)
            oy = -sn * (-cx) + cs * (-cy)
            oz = -cz
            for b in range(B):
                dx = cs * dirs[b, j, 0] + sn * dirs[b, j, 1]
                dy = -sn * dirs[b, j, 0] + cs * dirs[b, j, 1]
                dzz = dirs[b, j, 2]
                tmin, tmax, axis = -np.inf, np.inf, -1
                ok = True
                for k in range(3):
                    o = ox if k == 0 else (oy if k == 1 else oz)
                    d = dx if k == 0 else (dy if k == 1 else dzz)
                    if abs(d) < 1e-12:
                        if abs(o) > half[m, k]:
                            ok = False
                            break
                        continue
                    t1 = (-half[m, k] - o) / d
                    t2 = (half[m, k] - o) / d
                    if t1 > t2:
                        t1, t2 = t2, t1
                    if t1 > tmin:
                        tmin, axis = t1, k
                    tmax = min(tmax, t2)
                    if tmin > tmax:
                        ok = False
                        break
                if ok and tmin > 0.0 and tmin < rng[b, j]:
                    rng[b, j] = tmin
                    hit[b, j] = m
                    cosi[b, j] = abs(dx if axis == 0 else (dy if axis == 1 else dzz))
    return rng, hit, cosi


def sweep_points(model: LidarModel, dirs: np.ndarray, ground_z: float, boxes: BoxesInSweep,
                 params: ConditionParams, sweep_period_s: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Points [N, 5] (x, y, z, intensity 0..255, t) in the lidar frame and the box index hit by each [N]."""
    ranges, hit, cosi = raycast(dirs, ground_z, model.max_range_m, boxes.center_start, boxes.center_end,
                                boxes.yaw_start, boxes.yaw_end, boxes.halves)
    B, A = hit.shape
    spurious = rng.random((B, A)) < params.lidar_spurious
    spur_range = rng.uniform(*params.lidar_spurious_range_m, size=(B, A))
    spurious &= spur_range < ranges
    ranges = np.where(spurious, spur_range, ranges)
    hit = np.where(spurious, HIT_SPURIOUS, hit)
    finite_range = np.where(hit != HIT_NONE, ranges, 0.0)
    keep_prob = (1.0 - params.lidar_dropout) * np.exp(-2.0 * finite_range / params.lidar_visibility_m)
    valid = (hit != HIT_NONE) & (rng.random((B, A)) < np.where(spurious, 1.0, keep_prob))
    r = ranges[valid] + rng.normal(0.0, params.lidar_range_noise_m, size=int(valid.sum()))
    h = hit[valid]
    refl = np.where(h >= 0, boxes.reflectivity[np.maximum(h, 0)], GROUND_REFLECTIVITY)
    refl = np.where(h == HIT_SPURIOUS, 0.03, refl)
    intensity = 255.0 * refl * np.maximum(cosi[valid], 0.15) * np.exp(-2.0 * r / params.lidar_visibility_m)
    intensity = np.clip(intensity + rng.normal(0.0, 1.5, size=r.size), 0.0, 255.0)
    cols = np.broadcast_to(np.arange(A)[None, :], (B, A))[valid]
    t = -sweep_period_s * (1.0 - (cols + 0.5) / A)
    xyz = dirs[valid] * r[:, None]
    points = np.concatenate([xyz, intensity[:, None], t[:, None]], axis=1).astype(np.float32)
    return points, h
