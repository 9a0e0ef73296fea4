"""Detection-head outputs → 3D boxes: peak extraction, box decoding, class-aware NMS.

The head (CenterPoint style) emits, on a BEV grid of ``Ho × Wo`` output cells:

* ``heatmap`` [K, Ho, Wo]: per-class centre probability (already sigmoid).
* ``box_reg`` [R=10, Ho, Wo], channels in ``BOX_REG_CHANNELS`` order:

  ====================  ==================================================================
  ``offset_x/offset_y``  centre offset **in output cells from the cell centre** along ego
                         x (rows) / y (columns); about [-0.5, 0.5) for the cell holding the
                         centre: ``x = x_min + (h + 0.5 + offset_x) * cell_x``
  ``z``                  box-centre height, metres, ego frame
  ``log_l/log_w/log_h``  natural log of length (along heading) / width / height, metres
  ``sin_yaw/cos_yaw``    heading (CCW from ego +x) as sine and cosine; need not be unit norm
  ``vel_x/vel_y``        velocity over ground, m/s, ego axes
  ====================  ==================================================================

Grid convention (docs/architecture.md, shared by every BEV tensor): row ``h`` ↔ ego
``x = x_min + (h + 0.5) * cell_x`` with ``cell_x = (x_max - x_min) / Ho``; column ``w`` ↔
ego y likewise. Training targets must be encoded with :func:`center_to_cell_offset`, the
exact inverse of :func:`offset_to_center` used here, so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Protocol

import cv2
import numba
import numpy as np

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS
from bev_quant_ros.errors import ConfigError, ModelContractError
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D

# Centre-distance NMS radius per class (metres): smaller than the closest centre spacing
# two real objects of that class can have side by side, larger than a duplicate peak.
DEFAULT_NMS_CENTER_DISTANCE_M: Mapping[str, float] = {
    "car": 1.0, "truck": 2.0, "pedestrian": 0.3, "bicycle": 0.5, "traffic_cone": 0.3,
}

_REG = {name: i for i, name in enumerate(BOX_REG_CHANNELS)}


class BevGrid(Protocol):
    """Anything carrying the BEV grid extent (DecodeConfig, model_config.ModelConfig)."""

    @property
    def x_range_m(self) -> tuple[float, float]: ...

    @property
    def y_range_m(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class DecodeConfig:
    """How raw head outputs become detections. Validated on construction."""

    x_range_m: tuple[float, float]  # ego x extent of the grid, metres (low, high)
    y_range_m: tuple[float, float]  # ego y extent of the grid, metres (low, high)
    class_names: tuple[str, ...] = CLASS_NAMES  # heatmap channel k ↔ class_names[k]
    score_threshold: float = 0.1  # peaks below this heatmap value are not detections
    max_detections: int = 100  # per frame, highest scores first, after NMS
    peak_kernel: int = 3  # odd max-pool window (cells) for local-maximum extraction
    max_candidates: int = 1000  # peaks kept (by score) before NMS; bounds the NMS cost
    # centre-distance NMS radius (metres): one value for all classes or one per class;
    # a candidate closer than the radius to a higher-scored kept box of its class is dropped
    nms_center_distance_m: Mapping[str, float] | float = field(
        default_factory=lambda: dict(DEFAULT_NMS_CENTER_DISTANCE_M))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range."""
        for name in ("x_range_m", "y_range_m"):
            lo_hi = getattr(self, name)
            if (len(lo_hi) != 2 or not np.all(np.isfinite(lo_hi)) or not lo_hi[0] < lo_hi[1]):
                raise ConfigError(f"DecodeConfig.{name} must be finite (low, high) with low < high,"
                                  f" got {lo_hi!r}")
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ConfigError("DecodeConfig.class_names must be non-empty and unique, got "
                              f"{self.class_names!r}")
        if not 0.0 < self.score_threshold <= 1.0:
            raise ConfigError("DecodeConfig.score_threshold must be in (0, 1], got "
                              f"{self.score_threshold!r}")
        for name in ("max_detections", "max_candidates"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"DecodeConfig.{name} must be an integer >= 1, got {value!r}")
        if (not isinstance(self.peak_kernel, (int, np.integer)) or self.peak_kernel < 1
                or self.peak_kernel % 2 == 0):
            raise ConfigError("DecodeConfig.peak_kernel must be an odd integer >= 1, got "
                              f"{self.peak_kernel!r}")
        radii = self.nms_radius_per_class()
        if not np.all(np.isfinite(radii)) or np.any(radii < 0):
            raise ConfigError("DecodeConfig.nms_center_distance_m must be finite and >= 0, got "
                              f"{self.nms_center_distance_m!r}")

    def nms_radius_per_class(self) -> np.ndarray:
        """NMS radius (metres) for each heatmap channel, in class_names order."""
        radius = self.nms_center_distance_m
        if isinstance(radius, Mapping):
            missing = [c for c in self.class_names if c not in radius]
            if missing:
                raise ConfigError(f"DecodeConfig.nms_center_distance_m has no radius for {missing}")
            return np.array([float(radius[c]) for c in self.class_names])
        return np.full(len(self.class_names), float(radius))


def cell_centers(grid: BevGrid, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Ego x of every row centre [num_rows] and ego y of every column centre [num_cols]."""
    (x_min, x_max), (y_min, y_max) = grid.x_range_m, grid.y_range_m
    x = x_min + (np.arange(num_rows) + 0.5) * ((x_max - x_min) / num_rows)
    y = y_min + (np.arange(num_cols) + 0.5) * ((y_max - y_min) / num_cols)
    return x, y


def offset_to_center(grid: BevGrid, num_rows: int, num_cols: int, rows: np.ndarray,
                     cols: np.ndarray, offset_x: np.ndarray, offset_y: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Ego (x, y) of box centres given their cell and offset from the cell centre (in cells)."""
    (x_min, x_max), (y_min, y_max) = grid.x_range_m, grid.y_range_m
    x = x_min + (rows + 0.5 + offset_x) * ((x_max - x_min) / num_rows)
    y = y_min + (cols + 0.5 + offset_y) * ((y_max - y_min) / num_cols)
    return x, y


class CellOffset(NamedTuple):
    """Where a box centre falls on the output grid (training-target encoding)."""

    rows: np.ndarray  # int64 row index h (may lie outside [0, Ho) — see ``inside``)
    cols: np.ndarray  # int64 column index w
    offset_x: np.ndarray  # offset from the cell centre in cells, in [-0.5, 0.5)
    offset_y: np.ndarray
    inside: np.ndarray  # bool: the centre lies on the grid


def center_to_cell_offset(grid: BevGrid, num_rows: int, num_cols: int, x: np.ndarray,
                          y: np.ndarray) -> CellOffset:
    """Inverse of :func:`offset_to_center`: the cell holding each centre and its offset."""
    (x_min, x_max), (y_min, y_max) = grid.x_range_m, grid.y_range_m
    u = (np.asarray(x, dtype=np.float64) - x_min) / ((x_max - x_min) / num_rows)
    v = (np.asarray(y, dtype=np.float64) - y_min) / ((y_max - y_min) / num_cols)
    rows, cols = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (rows >= 0) & (rows < num_rows) & (cols >= 0) & (cols < num_cols)
    return CellOffset(rows, cols, u - rows - 0.5, v - cols - 0.5, inside)


def decode(heatmap: np.ndarray, box_reg: np.ndarray, config: DecodeConfig) -> Boxes3D:
    """Boxes (with scores, highest first) from one frame of head outputs.

    NaN heatmap values are treated as 0 (no detection there). A candidate whose decoded box
    is not finite (NaN/inf regression, or a log size that overflows) is discarded before NMS,
    so it can neither be published nor suppress a valid neighbour.
    """
    num_classes = len(config.class_names)
    if heatmap.ndim != 3 or heatmap.shape[0] != num_classes:
        raise ModelContractError(f"heatmap has shape {heatmap.shape}, expected "
                                 f"({num_classes}, Ho, Wo) for classes {config.class_names}")
    _, num_rows, num_cols = heatmap.shape
    if box_reg.shape != (len(BOX_REG_CHANNELS), num_rows, num_cols):
        raise ModelContractError(f"box_reg has shape {box_reg.shape}, expected "
                                 f"({len(BOX_REG_CHANNELS)}, {num_rows}, {num_cols})")

    candidates, scores = _find_peaks(heatmap, config)
    class_ids, rows, cols = np.unravel_index(candidates, heatmap.shape)
    reg = box_reg[:, rows, cols].astype(np.float64)  # [R, n]
    x, y = offset_to_center(config, num_rows, num_cols, rows, cols,
                            reg[_REG["offset_x"]], reg[_REG["offset_y"]])
    with np.errstate(over="ignore"):
        sizes = np.exp(reg[[_REG["log_l"], _REG["log_w"], _REG["log_h"]]].T)
    centers = np.stack([x, y, reg[_REG["z"]]], axis=1)
    yaws = np.arctan2(reg[_REG["sin_yaw"]], reg[_REG["cos_yaw"]])
    velocities = reg[[_REG["vel_x"], _REG["vel_y"]]].T

    finite = (np.isfinite(centers).all(1) & np.isfinite(sizes).all(1) & np.isfinite(yaws)
              & np.isfinite(velocities).all(1))
    finite_idx = np.flatnonzero(finite)
    keep = finite_idx[_greedy_center_nms(centers[finite_idx, :2], class_ids[finite_idx],
                                         config.nms_radius_per_class(), config.max_detections)]
    return Boxes3D(centers[keep], sizes[keep], yaws[keep], velocities[keep],
                   [config.class_names[k] for k in class_ids[keep]], scores[keep])


def _find_peaks(heatmap: np.ndarray, config: DecodeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and scores of local maxima ≥ threshold, best first, at most max_candidates."""
    dtype = np.float64 if heatmap.dtype == np.float64 else np.float32  # the dtypes cv2 pools
    heat = np.nan_to_num(heatmap.astype(dtype, copy=False), nan=0.0)
    kernel = np.ones((config.peak_kernel, config.peak_kernel), np.uint8)
    # cv2's constant border for dilate is -inf, so edge cells compare only with real cells
    pooled = np.stack([cv2.dilate(np.ascontiguousarray(plane), kernel) for plane in heat])
    flat = heat.ravel()
    candidates = np.flatnonzero((heat == pooled).ravel() & (flat >= config.score_threshold))
    scores = flat[candidates]
    if len(candidates) > config.max_candidates:
        top = np.argpartition(-scores, config.max_candidates - 1)[:config.max_candidates]
        candidates, scores = candidates[top], scores[top]
    # descending score; ties by ascending flat index, so the result is deterministic
    order = np.lexsort((candidates, -scores))
    return candidates[order], scores[order].astype(np.float64)


@numba.njit(cache=True, nogil=True)
def _greedy_center_nms(xy: np.ndarray, class_ids: np.ndarray, radius_by_class: np.ndarray,
                       max_keep: int) -> np.ndarray:
    """Indices kept by greedy same-class centre-distance NMS; input sorted best first."""
    n = xy.shape[0]
    suppressed = np.zeros(n, np.bool_)
    keep = np.empty(min(n, max_keep), np.int64)
    count = 0
    for i in range(n):
        if count == max_keep:
            break
        if suppressed[i]:
            continue
        keep[count] = i
        count += 1
        radius_sq = radius_by_class[class_ids[i]] ** 2
        for j in range(i + 1, n):
            if not suppressed[j] and class_ids[j] == class_ids[i]:
                dx = xy[j, 0] - xy[i, 0]
                dy = xy[j, 1] - xy[i, 1]
                if dx * dx + dy * dy < radius_sq:
                    suppressed[j] = True
    return keep[:count]
