"""What every drive yields, whatever it comes from (a bag, nuScenes, the simulator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import Rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import SensorFrame


@dataclass
class DriveFrame:
    """One frame to run, and the boxes it should produce when the drive has ground truth."""

    sensors: SensorFrame
    ground_truth: Boxes3D | None  # None: the drive has no ground truth for this frame
    gt_num_lidar_points: np.ndarray | None  # None where unknown (bags do not carry it)
    condition: str


class Drive(Protocol):
    """A named sequence of frames with the rig they were recorded with."""

    name: str
    condition: str
    has_ground_truth: bool

    @property
    def rig(self) -> Rig:
        """The calibration the frames need (the pipeline's camera grid is built from it)."""

    def frames(self, model_config: ModelConfig) -> Iterator[DriveFrame]:
        """The frames in order (the recurrent state carries over from one to the next), decoded
        for ``model_config``'s input as the node would."""
