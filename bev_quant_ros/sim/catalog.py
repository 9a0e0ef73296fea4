"""What objects look like: class-typical sizes, colours and part layouts.

Every object is a handful of oriented boxes ("parts") inside its ground-truth box,
so cameras and lidar see class-typical silhouettes (a car has a cabin, a truck a
cab and a cargo box, a pedestrian legs/torso/head) while the ground truth stays one
box. Clutter kinds (buildings, trees, lamp posts) are rendered and ray-cast but are
never ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bev_quant_ros.perception.boxes import CLASS_NAMES

CLUTTER_NAMES: tuple[str, ...] = ("building", "tree", "lamp_post")
KIND_NAMES: tuple[str, ...] = CLASS_NAMES + CLUTTER_NAMES
NUM_GT_KINDS = len(CLASS_NAMES)

_CAR_PAINT = np.array([[0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.64, 0.66], [0.70, 0.08, 0.07],
                       [0.10, 0.22, 0.55], [0.35, 0.36, 0.38], [0.85, 0.75, 0.20], [0.15, 0.40, 0.20]])
_TRUCK_PAINT = np.array([[0.95, 0.95, 0.93], [0.80, 0.30, 0.08], [0.20, 0.30, 0.60], [0.55, 0.55, 0.55],
                         [0.90, 0.80, 0.10]])
_CLOTHES = np.array([[0.10, 0.10, 0.12], [0.20, 0.25, 0.50], [0.60, 0.10, 0.10], [0.85, 0.85, 0.80],
                     [0.30, 0.45, 0.25], [0.55, 0.40, 0.25], [0.90, 0.55, 0.15]])
_SKIN = np.array([[0.90, 0.72, 0.60], [0.65, 0.45, 0.32], [0.40, 0.26, 0.18]])
_BUILDING = np.array([[0.70, 0.62, 0.52], [0.55, 0.52, 0.50], [0.62, 0.40, 0.32], [0.80, 0.78, 0.72],
                      [0.45, 0.48, 0.55]])
_WINDOW = np.array([0.12, 0.16, 0.22])
_TYRE = np.array([0.05, 0.05, 0.05])
_HEADLIGHT = np.array([0.95, 0.95, 0.85])
_TAILLIGHT = np.array([0.75, 0.05, 0.05])
_CONE = np.array([0.98, 0.40, 0.05])


@dataclass
class Parts:
    """P boxes in an object's local frame (x along heading, y left, z up from the ground)."""

    offsets: np.ndarray  # [P, 3] part centre
    halves: np.ndarray  # [P, 3] half length, half width, half height
    colours: np.ndarray  # [P, 3] albedo RGB in [0, 1]
    reflectivity: np.ndarray  # [P] lidar reflectivity in [0, 1]
    stack: np.ndarray  # [P] int: drawn after lower levels of the same object (painter's order)
    emissive: np.ndarray  # [P] bool: lamps that light up at night


class _PartsBuilder:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, x0: float, x1: float, y_half: float, z0: float, z1: float, colour: np.ndarray,
            refl: float, stack: int, emissive: bool = False, y: float = 0.0) -> None:
        self.rows.append(((0.5 * (x0 + x1), y, 0.5 * (z0 + z1)), (0.5 * (x1 - x0), y_half, 0.5 * (z1 - z0)),
                          colour, refl, stack, emissive))

    def build(self) -> Parts:
        cols = list(zip(*self.rows))
        return Parts(np.array(cols[0], float), np.array(cols[1], float), np.array(cols[2], float),
                     np.array(cols[3], float), np.array(cols[4], np.int32), np.array(cols[5], bool))


def sample_size(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Length, width, height [3] typical of the kind."""
    ranges = {
        "car": ((3.9, 5.1), (1.70, 2.00), (1.40, 1.80)),
        "truck": ((6.0, 10.0), (2.30, 2.60), (2.80, 3.80)),
        "pedestrian": ((0.45, 0.80), (0.50, 0.75), (1.55, 1.90)),
        "bicycle": ((1.60, 1.90), (0.50, 0.70), (1.55, 1.85)),
        "traffic_cone": ((0.30, 0.45), (0.30, 0.45), (0.50, 0.80)),
        "building": ((8.0, 15.0), (8.0, 14.0), (5.0, 18.0)),
        "tree": ((2.5, 3.5), (2.5, 3.5), (5.0, 7.0)),
        "lamp_post": ((0.6, 0.6), (0.3, 0.3), (6.0, 7.0)),
    }[kind]
    return np.array([rng.uniform(lo, hi) for lo, hi in ranges])


def build_parts(kind: str, size: np.ndarray, rng: np.random.Generator) -> Parts:
    """The parts of one object of ``kind`` with envelope ``size`` (l, w, h)."""
    L, W, H = (float(v) for v in size)
    hl, hw = L / 2, W / 2
    b = _PartsBuilder()
    if kind == "car":
        paint = _CAR_PAINT[rng.integers(len(_CAR_PAINT))]
        belt = 0.62 * H
        b.add(-hl * 0.9, hl * 0.9, hw * 0.92, 0.0, 0.35, _TYRE, 0.15, 0)
        b.add(-hl, hl, hw, 0.30, belt, paint, 0.55, 1)
        b.add(-hl * 0.62, hl * 0.42, hw * 0.88, belt, H, _WINDOW, 0.30, 2)
        for side in (-1, 1):
            b.add(hl, hl + 0.03, 0.15, belt - 0.2, belt - 0.06, _HEADLIGHT, 0.9, 2, True, side * (hw - 0.3))
            b.add(-hl - 0.03, -hl, 0.15, belt - 0.2, belt - 0.06, _TAILLIGHT, 0.9, 2, True, side * (hw - 0.3))
    elif kind == "truck":
        cab_colour = _TRUCK_PAINT[rng.integers(len(_TRUCK_PAINT))]
        cargo_colour = _TRUCK_PAINT[rng.integers(len(_TRUCK_PAINT))]
        cab_front = hl - 0.24 * L
        b.add(-hl * 0.95, hl * 0.95, hw * 0.9, 0.0, 0.6, _TYRE, 0.15, 0)
        b.add(-hl, cab_front - 0.3, hw, 0.6, H, cargo_colour, 0.6, 1)
        b.add(cab_front, hl, hw * 0.98, 0.6, 0.62 * H, cab_colour, 0.55, 1)
        b.add(cab_front + 0.1, hl - 0.1, hw * 0.96, 0.62 * H, 0.8 * H, _WINDOW, 0.3, 2)
        for side in (-1, 1):
            b.add(hl, hl + 0.03, 0.18, 0.8, 1.0, _HEADLIGHT, 0.9, 2, True, side * (hw - 0.35))
            b.add(-hl - 0.03, -hl, 0.12, 0.7, 0.95, _TAILLIGHT, 0.9, 2, True, side * (hw - 0.3))
    elif kind == "pedestrian":
        shirt, trousers = _CLOTHES[rng.integers(len(_CLOTHES), size=2)]
        b.add(-hl * 0.55, hl * 0.55, hw * 0.6, 0.0, 0.47 * H, trousers, 0.25, 0)
        b.add(-hl * 0.75, hl * 0.75, hw, 0.47 * H, 0.86 * H, shirt, 0.3, 1)
        b.add(-0.11, 0.11, 0.10, 0.86 * H, H, _SKIN[rng.integers(len(_SKIN))], 0.25, 2)
    elif kind == "bicycle":
        rider = _CLOTHES[rng.integers(len(_CLOTHES))]
        b.add(-hl, hl, 0.08, 0.0, 0.75, _TYRE, 0.35, 0)
        b.add(-hl * 0.35, hl * 0.3, hw * 0.45, 0.75, 0.95, np.array([0.6, 0.6, 0.65]), 0.5, 1)
        b.add(-hl * 0.3, hl * 0.2, hw, 0.95, 0.88 * H, rider, 0.3, 2)
        b.add(-0.11, 0.11, 0.10, 0.88 * H, H, _SKIN[rng.integers(len(_SKIN))], 0.25, 3)
    elif kind == "traffic_cone":
        b.add(-hl, hl, hw, 0.0, 0.05, _CONE, 0.9, 0)
        b.add(-hl * 0.5, hl * 0.5, hw * 0.5, 0.05, H, _CONE, 0.95, 1)
        b.add(-hl * 0.55, hl * 0.55, hw * 0.55, 0.45 * H, 0.62 * H, np.array([0.95, 0.95, 0.95]), 0.98, 2)
    elif kind == "building":
        b.add(-hl, hl, hw, 0.0, H, _BUILDING[rng.integers(len(_BUILDING))], 0.4, 0)
    elif kind == "tree":
        b.add(-0.15, 0.15, 0.15, 0.0, 2.4, np.array([0.35, 0.24, 0.14]), 0.3, 0)
        b.add(-hl, hl, hw, 2.2, H, np.array([0.16, 0.38, 0.12]) * rng.uniform(0.8, 1.2), 0.25, 1)
    elif kind == "lamp_post":
        b.add(-0.1, 0.1, 0.1, 0.0, H, np.array([0.35, 0.36, 0.38]), 0.5, 0)
        b.add(-0.1, hl, hw, H - 0.25, H, np.array([0.95, 0.92, 0.75]), 0.6, 1, True)
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    return b.build()
