"""The driving world: a road, the ego vehicle and flows of actors along it.

Everything moves along the road in *flows*: a lateral slot (lane, bike lane,
parking strip, sidewalk lane, lane line, roadside) with one speed profile shared
by every actor in it, so actors never drive through each other. The ego drives
in the right inner lane and shares its lane's profile (the traffic ahead stops
with it). Actors are generated lazily in 100 m chunks of their start position,
each chunk from its own random stream, so the world is deterministic per seed
and independent of how many frames are asked for. Conditions never change the
world: seed S is the same scene at day, night, rain, fog and glare.

World frame = odom: flat ground at z = 0; base_link sits on the ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bev_quant_ros.sim.catalog import KIND_NAMES, NUM_GT_KINDS, Parts, build_parts, sample_size
from bev_quant_ros.sim.road import Road, SpeedProfile

CHUNK_M = 100.0
EGO_START_S_M = 200.0
EGO_LATERAL_M = -1.75
LANE_JITTER_M = 0.15
VELOCITY_DT_S = 0.01
_CHUNK_OFFSET = 1_000_000  # keeps chunk indices non-negative for seeding
_STREAM_ROAD, _STREAM_EGO, _STREAM_FLOW_PROFILE, _STREAM_CHUNK = 1, 2, 3, 4


@dataclass(frozen=True)
class FlowSpec:
    """One lateral slot of actors (see module docstring)."""

    lateral_m: float
    direction: int  # +1 drives along increasing s, -1 against it
    kinds: tuple[tuple[str, float], ...]  # (kind, probability)
    gap_m: tuple[float, float]  # minimum gap, mean extra (exponential) gap between actors
    cruise_mps: tuple[float, float] | None  # None = static
    jitter_m: float = 0.0
    yaw_jitter_rad: float = 0.0
    ego_lane: bool = False


def _flow_specs() -> tuple[FlowSpec, ...]:
    """Both road sides; traffic keeps right (right side = negative lateral, drives +s)."""
    vehicles = (("car", 0.82), ("truck", 0.18))
    parked = (("car", 0.85), ("truck", 0.15))
    specs: list[FlowSpec] = [FlowSpec(0.0, 1, (("traffic_cone", 1.0),), (1.5, 160.0), None, 0.05, 3.14)]
    for side in (-1, 1):
        d = 1 if side < 0 else -1
        specs += [
            FlowSpec(side * 1.75, d, vehicles, (6.0, 40.0), (7.0, 14.0), LANE_JITTER_M, 0.0, ego_lane=side < 0),
            FlowSpec(side * 5.25, d, vehicles, (6.0, 40.0), (6.0, 15.0), LANE_JITTER_M),
            FlowSpec(side * 7.0, d, (("traffic_cone", 1.0),), (1.5, 120.0), None, 0.05, 3.14),
            FlowSpec(side * 3.5, d, (("traffic_cone", 1.0),), (1.5, 220.0), None, 0.05, 3.14),
            FlowSpec(side * 7.75, d, (("bicycle", 1.0),), (4.0, 60.0), (3.5, 6.5), 0.1),
            FlowSpec(side * 9.75, d, parked, (1.0, 16.0), None, 0.15, 0.04),
            FlowSpec(side * 11.35, d, (("lamp_post", 1.0),), (28.0, 4.0), None),
            FlowSpec(side * 15.8, d, (("tree", 1.0),), (3.0, 20.0), None, 0.3, 0.3),
            FlowSpec(side * 26.5, d, (("building", 1.0),), (2.0, 6.0), None, 1.0),
        ]
        for lateral, speed in ((12.0, (0.9, 1.7)), (12.8, (0.9, 1.7)), (13.6, None)):
            specs.append(FlowSpec(side * lateral, d, (("pedestrian", 1.0),), (1.0, 45.0), speed, 0.1,
                                  0.0 if speed else 3.14))
    return tuple(specs)


_FLOWS = _flow_specs()


@dataclass
class ActorChunk:
    """Actors of one flow whose start position lies in one chunk (arrays indexed by actor)."""

    s0: np.ndarray  # [A] start arc length
    lateral: np.ndarray  # [A]
    yaw_offset: np.ndarray  # [A]
    kind: np.ndarray  # [A] int index into KIND_NAMES
    size: np.ndarray  # [A, 3]
    track_id: np.ndarray  # [A] int64, unique per seed
    parts: Parts  # [P] parts of all actors
    owner: np.ndarray  # [P] actor index within the chunk


@dataclass
class WorldObjects:
    """All objects near a point at one time, world frame."""

    track_id: np.ndarray  # [M]
    kind: np.ndarray  # [M] index into KIND_NAMES (< NUM_GT_KINDS are ground-truth classes)
    size: np.ndarray  # [M, 3] l, w, h
    center: np.ndarray  # [M, 3] world box centre
    yaw: np.ndarray  # [M] world heading
    velocity: np.ndarray  # [M, 2] world velocity over ground
    parts: Parts
    owner: np.ndarray  # [P] object index

    @property
    def is_gt(self) -> np.ndarray:
        return self.kind < NUM_GT_KINDS


class World:
    """Deterministic per seed; query ego pose and nearby objects at any time t >= -1 s."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.road = Road(self._rng(_STREAM_ROAD))
        self.flows = _FLOWS
        self.ego_profile = SpeedProfile(self._rng(_STREAM_EGO), (7.0, 14.0))
        density = float(self._rng(_STREAM_FLOW_PROFILE, 999).uniform(0.6, 1.2))
        self._gap_scale = 1.0 / density
        self._profiles = [self.ego_profile if f.ego_lane else
                          (SpeedProfile(self._rng(_STREAM_FLOW_PROFILE, i), f.cruise_mps) if f.cruise_mps else None)
                          for i, f in enumerate(self.flows)]
        self._chunks: dict[tuple[int, int], ActorChunk] = {}
        self._pool: _Pool | None = None

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *stream])

    # ---- ego -------------------------------------------------------------------------
    def ego_s(self, t: np.ndarray | float) -> np.ndarray:
        return EGO_START_S_M + self.ego_profile.distance(t)

    def ego_pose(self, t: float) -> np.ndarray:
        """T_world_ego [4, 4] at time t (seconds since the start of the sequence)."""
        xy, heading = self.road.place(np.array([self.ego_s(t)]), np.array([EGO_LATERAL_M]))
        T = np.eye(4)
        c, s = np.cos(heading[0]), np.sin(heading[0])
        T[:2, :2] = [[c, -s], [s, c]]
        T[:2, 3] = xy[0]
        return T

    def ego_velocity(self, t: float) -> np.ndarray:
        """Ego velocity [3] in ego axes (m/s), by central difference of the pose."""
        p0, p1 = self.ego_pose(t - VELOCITY_DT_S), self.ego_pose(t + VELOCITY_DT_S)
        v_world = (p1[:3, 3] - p0[:3, 3]) / (2 * VELOCITY_DT_S)
        return self.ego_pose(t)[:3, :3].T @ v_world

    # ---- actors ----------------------------------------------------------------------
    def _chunk(self, flow_index: int, chunk_index: int) -> ActorChunk:
        key = (flow_index, chunk_index)
        if key not in self._chunks:
            self._chunks[key] = self._make_chunk(flow_index, chunk_index)
        return self._chunks[key]

    def _make_chunk(self, flow_index: int, chunk_index: int) -> ActorChunk:
        flow = self.flows[flow_index]
        rng = self._rng(_STREAM_CHUNK, flow_index, chunk_index + _CHUNK_OFFSET)
        kinds, probs = zip(*flow.kinds)
        start, end = chunk_index * CHUNK_M, (chunk_index + 1) * CHUNK_M
        gap_min, gap_mean = flow.gap_m[0], flow.gap_m[1] * self._gap_scale
        pos = start + rng.uniform(0.0, gap_mean)
        rows: list[tuple[float, float, float, int, np.ndarray, Parts]] = []
        while True:
            kind = str(rng.choice(kinds, p=probs))
            size = sample_size(kind, rng)
            parts = build_parts(kind, size, rng)
            lateral = flow.lateral_m + rng.uniform(-flow.jitter_m, flow.jitter_m)
            yaw_offset = rng.uniform(-flow.yaw_jitter_rad, flow.yaw_jitter_rad)
            if pos + size[0] > end:
                break
            s0 = pos + size[0] / 2
            pos += size[0] + gap_min + rng.exponential(gap_mean)
            if flow.ego_lane and abs(s0 - EGO_START_S_M) < size[0] / 2 + 9.0:
                continue  # keep the ego's own slot free
            rows.append((s0, lateral, yaw_offset, KIND_NAMES.index(kind), size, parts))
        base_id = (flow_index * 10_000 + chunk_index + _CHUNK_OFFSET) * 1_000
        return ActorChunk(
            s0=np.array([r[0] for r in rows]), lateral=np.array([r[1] for r in rows]),
            yaw_offset=np.array([r[2] for r in rows]), kind=np.array([r[3] for r in rows], np.int32),
            size=np.array([r[4] for r in rows]).reshape(-1, 3),
            track_id=base_id + np.arange(len(rows), dtype=np.int64),
            parts=_concat_parts([r[5] for r in rows]),
            owner=np.concatenate([np.full(len(r[5].stack), i) for i, r in enumerate(rows)] or [np.zeros(0, np.int64)]),
        )

    def _ensure_chunks(self, t: float, s_lo: float, s_hi: float) -> None:
        """Generate the chunks of every flow that can hold actors inside [s_lo, s_hi] at time t."""
        added = False
        for fi, shift in enumerate(self._flow_shifts(t)):
            lo, hi = s_lo - shift, s_hi - shift
            for ci in range(int(np.floor(lo / CHUNK_M)), int(np.floor(hi / CHUNK_M)) + 1):
                if (fi, ci) not in self._chunks:
                    self._chunks[(fi, ci)] = self._make_chunk(fi, ci)
                    added = True
        if added or self._pool is None:
            self._pool = _Pool.build(self._chunks)

    def _flow_shifts(self, t: float) -> np.ndarray:
        """Distance [F] every flow has moved along s by time t (signed by direction)."""
        return np.array([f.direction * float(p.distance(t)) if p else 0.0 for f, p in zip(self.flows, self._profiles)])

    def objects_near(self, t: float, center_xy: np.ndarray, radius_m: float) -> WorldObjects:
        """Objects whose centre is within ``radius_m`` of ``center_xy`` at time t."""
        ego_s = float(self.ego_s(t))
        s_lo, s_hi = ego_s - radius_m - 40.0, ego_s + radius_m + 40.0
        self._ensure_chunks(t, s_lo, s_hi)
        pool = self._pool
        s_now = pool.s0 + self._flow_shifts(t)[pool.flow]
        sel = np.nonzero((s_now >= s_lo) & (s_now <= s_hi))[0]
        xy, heading = self.road.place(s_now[sel], pool.lateral[sel])
        keep = np.linalg.norm(xy - np.asarray(center_xy)[None, :2], axis=1) <= radius_m
        sel, xy, heading = sel[keep], xy[keep], heading[keep]
        velocity = np.zeros((sel.size, 2))
        for sign in (-1.0, 1.0):
            s_dt = pool.s0[sel] + self._flow_shifts(t + sign * VELOCITY_DT_S)[pool.flow[sel]]
            velocity += sign * self.road.place(s_dt, pool.lateral[sel])[0] / (2 * VELOCITY_DT_S)
        yaw = heading + np.where(pool.direction[sel] < 0, np.pi, 0.0) + pool.yaw_offset[sel]
        remap = np.full(len(pool.s0), -1)
        remap[sel] = np.arange(sel.size)
        part_mask = remap[pool.owner] >= 0
        size = pool.size[sel]
        return WorldObjects(
            track_id=pool.track_id[sel], kind=pool.kind[sel], size=size,
            center=np.concatenate([xy, size[:, 2:3] / 2], axis=1), yaw=np.arctan2(np.sin(yaw), np.cos(yaw)),
            velocity=velocity, parts=_select_parts(pool.parts, part_mask), owner=remap[pool.owner[part_mask]],
        )


@dataclass
class _Pool:
    """Every generated actor in flat arrays, so a query is a few vectorised operations."""

    flow: np.ndarray
    direction: np.ndarray
    s0: np.ndarray
    lateral: np.ndarray
    yaw_offset: np.ndarray
    kind: np.ndarray
    size: np.ndarray
    track_id: np.ndarray
    parts: Parts
    owner: np.ndarray

    @classmethod
    def build(cls, chunks: dict[tuple[int, int], ActorChunk]) -> "_Pool":
        keys = sorted(chunks)
        items = [chunks[k] for k in keys]
        counts = np.array([len(c.s0) for c in items])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flow = np.repeat([k[0] for k in keys], counts).astype(np.int64)
        return cls(
            flow=flow, direction=np.array([_FLOWS[f].direction for f in flow], np.int64),
            s0=np.concatenate([c.s0 for c in items]), lateral=np.concatenate([c.lateral for c in items]),
            yaw_offset=np.concatenate([c.yaw_offset for c in items]),
            kind=np.concatenate([c.kind for c in items]), size=np.concatenate([c.size for c in items]),
            track_id=np.concatenate([c.track_id for c in items]),
            parts=_concat_parts([c.parts for c in items]),
            owner=np.concatenate([c.owner + st for c, st in zip(items, starts)]).astype(np.int64),
        )


def _concat_parts(parts: list[Parts]) -> Parts:
    if not parts:
        return Parts(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int32),
                     np.zeros(0, bool))
    return Parts(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                   ("offsets", "halves", "colours", "reflectivity", "stack", "emissive")))


def _select_parts(parts: Parts, mask: np.ndarray) -> Parts:
    return Parts(parts.offsets[mask], parts.halves[mask], parts.colours[mask], parts.reflectivity[mask],
                 parts.stack[mask], parts.emissive[mask])


def parts_world(objects: WorldObjects) -> tuple[np.ndarray, np.ndarray]:
    """World centres [P, 3] and yaws [P] of every part (parts share their object's heading)."""
    yaw = objects.yaw[objects.owner]
    c, s = np.cos(yaw), np.sin(yaw)
    off = objects.parts.offsets
    base = objects.center[objects.owner] - np.concatenate(
        [np.zeros((len(yaw), 2)), objects.size[objects.owner, 2:3] / 2], axis=1)
    centers = base + np.stack([c * off[:, 0] - s * off[:, 1], s * off[:, 0] + c * off[:, 1], off[:, 2]], axis=1)
    return centers, yaw
