"""Road centreline and speed profiles, generated lazily and prefix-stable.

Both are extended on demand from their own random stream, so a longer run
reproduces a shorter one exactly: frame k of seed S is the same whether 10 or
10 000 frames are generated.
"""

from __future__ import annotations

import numpy as np

SAMPLE_STEP_M = 0.5
PROFILE_DT_S = 0.02


class Road:
    """A planar centreline x(s), y(s), heading(s) over arc length s >= 0: straights and curves."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._s = np.zeros(1)
        self._xy = np.zeros((1, 2))
        self._heading = np.zeros(1)

    def _extend(self, s_needed: float) -> None:
        while self._s[-1] < s_needed:
            length = float(self._rng.uniform(60.0, 220.0))
            # half the segments straight, the rest arcs of radius 80..400 m either way
            curvature = 0.0 if self._rng.random() < 0.5 else float(
                self._rng.choice([-1.0, 1.0]) / self._rng.uniform(80.0, 400.0))
            n = int(np.ceil(length / SAMPLE_STEP_M))
            ds = np.full(n, SAMPLE_STEP_M)
            heading = self._heading[-1] + curvature * np.cumsum(ds)
            mid_heading = heading - 0.5 * curvature * ds
            steps = np.stack([np.cos(mid_heading), np.sin(mid_heading)], axis=1) * ds[:, None]
            self._xy = np.concatenate([self._xy, self._xy[-1] + np.cumsum(steps, axis=0)])
            self._heading = np.concatenate([self._heading, heading])
            self._s = np.concatenate([self._s, self._s[-1] + np.cumsum(ds)])

    def frame_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centreline points [N, 2] and headings [N] at arc lengths s (clamped at s = 0)."""
        s = np.maximum(np.asarray(s, dtype=np.float64), 0.0)
        if s.size:
            self._extend(float(s.max()) + 1.0)
        xy = np.stack([np.interp(s, self._s, self._xy[:, 0]), np.interp(s, self._s, self._xy[:, 1])], axis=-1)
        return xy, np.interp(s, self._s, self._heading)

    def place(self, s: np.ndarray, lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World xy [N, 2] and road heading [N] of points ``lateral`` metres left of the centreline at s."""
        xy, heading = self.frame_at(s)
        normal = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)
        return xy + normal * np.asarray(lateral, dtype=np.float64)[..., None], heading


class SpeedProfile:
    """Distance travelled S(t) for t >= 0 of a vehicle that cruises, brakes to stops and goes again."""

    def __init__(self, rng: np.random.Generator, cruise_mps: tuple[float, float],
                 stop_gap_s: tuple[float, float] = (8.0, 25.0), accel_mps2: float = 1.8,
                 decel_mps2: float = 2.5) -> None:
        self._rng = rng
        self._cruise = cruise_mps
        self._stop_gap = stop_gap_s
        self._accel, self._decel = accel_mps2, decel_mps2
        self._speed = float(rng.uniform(*cruise_mps))
        self._v = np.array([self._speed])
        self._dist = np.zeros(1)

    def _extend(self, t_needed: float) -> None:
        while (len(self._v) - 1) * PROFILE_DT_S < t_needed:
            target = self._speed
            cruise_s = float(self._rng.uniform(*self._stop_gap))
            wait_s = float(self._rng.uniform(1.5, 5.0))
            next_speed = float(self._rng.uniform(*self._cruise))
            pieces = [np.full(int(cruise_s / PROFILE_DT_S), target),
                      np.linspace(target, 0.0, max(int(target / self._decel / PROFILE_DT_S), 1)),
                      np.zeros(int(wait_s / PROFILE_DT_S)),
                      np.linspace(0.0, next_speed, max(int(next_speed / self._accel / PROFILE_DT_S), 1))]
            v = np.concatenate(pieces)
            dist = self._dist[-1] + np.cumsum(0.5 * (np.concatenate([[self._v[-1]], v[:-1]]) + v)) * PROFILE_DT_S
            self._v = np.concatenate([self._v, v])
            self._dist = np.concatenate([self._dist, dist])
            self._speed = next_speed

    def distance(self, t: np.ndarray | float) -> np.ndarray:
        """Metres travelled since t = 0; before t = 0 the vehicle cruises at its initial speed."""
        t = np.asarray(t, dtype=np.float64)
        self._extend(float(np.max(t)) + 1.0)
        ahead = np.interp(np.maximum(t, 0.0) / PROFILE_DT_S, np.arange(len(self._dist)), self._dist)
        return ahead + np.minimum(t, 0.0) * self._v[0]
