"""The simulator as one kind of drive: ``synth:<condition>:<seed>:<frames>``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from bev_quant_ros.drives.frames import DriveFrame
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.geometry import Rig, load_rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import SensorFrame
from bev_quant_ros.perception.temporal import PoseBuffer
from bev_quant_ros.sim import CONDITIONS, generate_frames

SYNTH_PREFIX = "synth:"


@dataclass(frozen=True)
class SynthSpec:
    """Frames made on the fly by the simulator."""

    condition: str
    seed: int
    frames: int

    @classmethod
    def parse(cls, text: str) -> "SynthSpec":
        parts = text[len(SYNTH_PREFIX):].split(":")
        if len(parts) != 3:
            raise ConfigError(f"data spec '{text}' must be synth:<condition>:<seed>:<frames>")
        condition, seed, frames = parts
        if condition not in CONDITIONS:
            raise ConfigError(f"data spec '{text}': condition must be one of {CONDITIONS}")
        try:
            spec = cls(condition, int(seed), int(frames))
        except ValueError as exc:
            raise ConfigError(f"data spec '{text}': seed and frames must be integers") from exc
        if spec.frames <= 0:
            raise ConfigError(f"data spec '{text}': frames must be positive")
        return spec

    def __str__(self) -> str:
        return f"{SYNTH_PREFIX}{self.condition}:{self.seed}:{self.frames}"


def synth_frames(spec: SynthSpec) -> Iterator[DriveFrame]:
    """Simulated frames with exact ground truth (and lidar point counts per box).

    The ego velocity for intra-sweep motion compensation comes from the poses the
    node would get on /odom, so a bag of these frames evaluates identically.
    """
    poses = PoseBuffer()  # velocity from poses, exactly as from a bag's /odom
    for f in generate_frames(spec.seed, spec.condition, spec.frames):
        poses.add(f.stamp_ns, f.ego_pose)
        sensors = SensorFrame(f.stamp_ns, list(f.images), f.points, f.lidar_stamp_ns, f.ego_pose, f.lidar_ego_pose,
                              poses.velocity_at(f.lidar_stamp_ns))
        yield DriveFrame(sensors, f.gt, f.gt_num_lidar_points, f.condition)


class SynthDrive:
    """A simulated drive on the shipped rig."""

    has_ground_truth = True

    def __init__(self, spec: SynthSpec) -> None:
        self.spec, self.name, self.condition = spec, str(spec), spec.condition

    @property
    def rig(self) -> Rig:
        return load_rig()

    def frames(self, model_config: ModelConfig | None = None) -> Iterator[DriveFrame]:
        """Rendered at the rig's size (images in memory, no decode)."""
        return synth_frames(self.spec)
