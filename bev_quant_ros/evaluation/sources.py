"""Where evaluation frames come from: the simulator in memory, or a rosbag2 bag.

Both yield :class:`EvalFrame` (a pipeline SensorFrame plus its ground truth), so
metrics, calibration and drift studies run on either without DDS and
deterministically: a bag is assembled with the node's own FrameAssembler, clocked
by the bag's receive times instead of the wall clock.

Data spec strings (CLI ``--data``): a bag directory, or
``synth:<condition>:<seed>:<frames>`` e.g. ``synth:night:100000:60``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from rosbags.rosbag2 import Reader

from bev_quant_ros.errors import ConfigError, InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.frame_assembly import FrameAssembler
from bev_quant_ros.perception.geometry import CAMERA_ORDER, Rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import BevPipeline, SensorFrame
from bev_quant_ros.perception.temporal import PoseBuffer
from bev_quant_ros.ros.detection_encoding import detection_array_to_boxes, make_typestore
from bev_quant_ros.ros.message_decoding import odometry_to_pose, stamp_to_ns
from bev_quant_ros.ros.sensor_frames import EgoPoses, SensorFrameBuilder
from bev_quant_ros.sim import CONDITIONS, generate_frames
from bev_quant_ros.sim.ground_truth import GT_TOPIC

LOG = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
SYNTH_PREFIX = "synth:"


@dataclass
class EvalFrame:
    """One frame to run and the boxes it should produce."""

    sensors: SensorFrame
    ground_truth: Boxes3D
    gt_num_lidar_points: np.ndarray | None  # None where unknown (bags do not carry it)
    condition: str


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


def synth_frames(spec: SynthSpec) -> Iterator[EvalFrame]:
    """Simulated frames with exact ground truth (and lidar point counts per box).

    The ego velocity for intra-sweep motion compensation comes from the poses the
    node would get on /odom, so a bag of these frames evaluates identically.
    """
    poses = PoseBuffer()  # velocity from poses, exactly as from a bag's /odom
    for f in generate_frames(spec.seed, spec.condition, spec.frames):
        poses.add(f.stamp_ns, f.ego_pose)
        sensors = SensorFrame(f.stamp_ns, list(f.images), f.points, f.lidar_stamp_ns, f.ego_pose, f.lidar_ego_pose,
                              poses.velocity_at(f.lidar_stamp_ns))
        yield EvalFrame(sensors, f.gt, f.gt_num_lidar_points, f.condition)


def bag_frames(bag_dir: str | Path, rig: Rig, model_config: ModelConfig,
               camera_names: tuple[str, ...] = CAMERA_ORDER, lidar_topic: str = "/lidar/points",
               odom_topic: str = "/odom", sync_slop_s: float = 0.02, camera_timeout_s: float = 0.1,
               max_lidar_age_s: float = 0.2, condition: str = "bag") -> Iterator[EvalFrame]:
    """Frames of a bag, assembled and decoded like the node does (its FrameAssembler and
    SensorFrameBuilder); only frames with ground truth are yielded. A message that cannot be
    decoded is logged once per topic and cause and left out of its frame, as in the node."""
    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        raise ConfigError(f"{bag_dir} is not a rosbag2 directory (no metadata.yaml)")
    store = make_typestore()
    camera_index = {}
    for index, name in enumerate(camera_names):
        camera_index[f"/{name}/image_raw"] = index
        camera_index[f"/{name}/image_raw/compressed"] = index
    bag_time_s = [0.0]
    assembler: FrameAssembler = FrameAssembler(len(camera_names), sync_slop_s, camera_timeout_s, max_lidar_age_s,
                                               monotonic=lambda: bag_time_s[0])
    poses = PoseBuffer()
    ground_truth: dict[int, Boxes3D] = {}
    pending: list = []
    image_topics = list(camera_index)[::2]
    builder = SensorFrameBuilder(rig, model_config, image_topics, lidar_topic, _log_bad_input())
    with Reader(bag_dir) as reader:
        wanted = set(camera_index) | {lidar_topic, odom_topic, GT_TOPIC}
        connections = [c for c in reader.connections if c.topic in wanted]
        topics = {c.topic for c in connections}
        if not topics & set(camera_index):
            raise InvalidMessageError(f"bag {bag_dir} has no camera topic of {camera_names}")
        if GT_TOPIC not in topics:
            raise InvalidMessageError(f"bag {bag_dir} has no {GT_TOPIC}: nothing to evaluate against")
        for connection, timestamp, raw in reader.messages(connections=connections):
            bag_time_s[0] = timestamp / NS_PER_S
            msg = store.deserialize_cdr(raw, connection.msgtype)
            stamp = stamp_to_ns(msg.header.stamp)
            if connection.topic in camera_index:
                pending += assembler.add_camera(camera_index[connection.topic], stamp, msg)
            elif connection.topic == lidar_topic:
                assembler.add_lidar(stamp, msg)
            elif connection.topic == odom_topic:
                poses.add(stamp, odometry_to_pose(msg))
            else:
                ground_truth[stamp] = detection_array_to_boxes(msg)
            pending += assembler.poll()
            yield from _ready(pending, ground_truth, poses, builder, condition)
    pending += assembler.poll()
    bag_time_s[0] += 1e6  # end of bag: every incomplete set times out
    pending += assembler.poll()
    yield from _ready(pending, ground_truth, poses, builder, condition, flush=True)


def _log_bad_input() -> Callable[[str, InvalidMessageError], None]:
    """A reporter that warns once per topic and cause (a long drive must not flood the terminal)."""
    seen: set[str] = set()

    def report(source: str, exc: InvalidMessageError) -> None:
        key = f"{source}: {exc.cause}"
        if key not in seen:
            seen.add(key)
            LOG.warning("%s: %s (further ones not shown)", key, exc)
    return report


def _ready(pending: list, ground_truth: dict[int, Boxes3D], poses: PoseBuffer, builder: SensorFrameBuilder,
           condition: str, flush: bool = False) -> Iterator[EvalFrame]:
    """Yield assembled frames whose ground truth has been read (it may come after the images)."""
    while pending and (pending[0].stamp_ns in ground_truth or flush):
        assembled = pending.pop(0)
        if assembled.stamp_ns not in ground_truth:
            continue
        sensors = builder.build(assembled, EgoPoses.look_up(poses, assembled.stamp_ns, assembled.lidar_stamp_ns))
        yield EvalFrame(sensors, ground_truth.pop(assembled.stamp_ns), None, condition)


def frames_from_spec(data: str, pipeline: BevPipeline) -> tuple[Iterator[EvalFrame], str]:
    """Frames and a condition label for a ``--data`` string (bag dir or synth spec), decoded for
    ``pipeline``'s model input and rig as the node would."""
    if data.startswith(SYNTH_PREFIX):
        spec = SynthSpec.parse(data)
        return synth_frames(spec), spec.condition
    return bag_frames(data, pipeline.rig, pipeline.model_config), "bag"
