"""One array-of-boxes type for ground truth, detections and metrics.

Ego frame (REP-103: x forward, y left, z up), metres, radians, m/s. Keeping
ground truth and detections in the same structure means the simulator, the
decoder, the metrics and the ROS conversion all agree on one layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("car", "truck", "pedestrian", "bicycle", "traffic_cone")


@dataclass
class Boxes3D:
    """N oriented 3D boxes; every array has N rows."""

    centers: np.ndarray  # [N, 3] float64 box centre x, y, z
    sizes: np.ndarray  # [N, 3] float64 length (along heading), width, height
    yaws: np.ndarray  # [N] float64 heading, counter-clockwise from +x
    velocities: np.ndarray  # [N, 2] float64 velocity over ground, ego axes
    class_names: list[str] = field(default_factory=list)  # [N] nuScenes class names
    scores: np.ndarray | None = None  # [N] float64 for detections, None for ground truth

    def __post_init__(self) -> None:
        n = len(self.class_names)
        for name, arr, width in (("centers", self.centers, 3), ("sizes", self.sizes, 3),
                                 ("velocities", self.velocities, 2)):
            if arr.shape != (n, width):
                raise ValueError(f"Boxes3D.{name} has shape {arr.shape}, expected ({n}, {width})")
        if self.yaws.shape != (n,):
            raise ValueError(f"Boxes3D.yaws has shape {self.yaws.shape}, expected ({n},)")
        if self.scores is not None and self.scores.shape != (n,):
            raise ValueError(f"Boxes3D.scores has shape {self.scores.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.class_names)

    @classmethod
    def empty(cls, with_scores: bool = False) -> "Boxes3D":
        """No boxes (a frame without objects or detections)."""
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 2)), [],
                   np.zeros(0) if with_scores else None)

    def select(self, mask_or_index: np.ndarray) -> "Boxes3D":
        """The subset picked by a boolean mask or an index array."""
        idx = np.arange(len(self))[mask_or_index]
        return Boxes3D(self.centers[idx], self.sizes[idx], self.yaws[idx], self.velocities[idx],
                       [self.class_names[i] for i in idx],
                       None if self.scores is None else self.scores[idx])
