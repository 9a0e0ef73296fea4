"""Any rosbag2 (mcap or sqlite3) as a drive, read the way the node reads its topics.

Topics, transport and sync come from the node's params file (`ReaderSettings`); the rig
from the bag's CameraInfo and tf_static (the rig YAML only where the bag lacks a sensor's
calibration, with a printed note); frames are assembled by the node's `FrameAssembler`
clocked by the bag's receive times and decoded by the node's `SensorFrameBuilder`. Ground
truth (vision_msgs/Detection3DArray on ``ground_truth_topic``) is optional.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rosbags.rosbag2 import Reader
from tqdm import tqdm

from bev_quant_ros.drives.frames import DriveFrame
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.errors import BagError, ConfigError, InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.frame_assembly import AssembledFrame, FrameAssembler
from bev_quant_ros.perception.geometry import Rig, load_rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.temporal import PoseBuffer
from bev_quant_ros.ros.detection_encoding import DETECTION3D_ARRAY, detection_array_to_boxes, make_typestore
from bev_quant_ros.ros.message_decoding import odometry_to_pose, poses_from_tf, stamp_to_ns
from bev_quant_ros.ros.rig_from_tf import RigCalibration
from bev_quant_ros.ros.sensor_frames import EgoPoses, SensorFrameBuilder

LOG = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
END_OF_BAG_S = 1e6  # bag time added at the end: every incomplete camera set times out
GROUND_TRUTH_WAIT_S = 1.0  # bag time a frame waits for ground truth recorded after its images


def _expected_types(settings: ReaderSettings) -> dict[str, str]:
    compressed = settings.image_topics[0].endswith("/compressed")
    image = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    types = {topic: image for topic in settings.image_topics}
    types.update({topic: "sensor_msgs/msg/CameraInfo" for topic in settings.camera_info_topics})
    types[settings.lidar_topic] = "sensor_msgs/msg/PointCloud2"
    types[settings.tf_static_topic] = "tf2_msgs/msg/TFMessage"
    types[settings.ground_truth_topic] = DETECTION3D_ARRAY
    if settings.ego_pose_source == "odom":
        types[settings.odom_topic] = "nav_msgs/msg/Odometry"
    else:
        types[settings.tf_topic] = "tf2_msgs/msg/TFMessage"
    return types


class BagDrive:
    """One rosbag2 directory read with ``settings`` (see module docstring)."""

    def __init__(self, path: str | Path, settings: ReaderSettings, condition: str = "bag",
                 progress: bool = True) -> None:
        self.path, self.settings, self.condition = Path(path), settings, condition
        self.name, self.progress = self.path.name, progress
        self.bad_inputs: Counter[str] = Counter()  # "<topic>: <cause>" -> messages left out
        if not (self.path / "metadata.yaml").is_file():
            raise ConfigError(f"{self.path} is not a rosbag2 directory (no metadata.yaml)")
        with self._open() as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
            self._counts = {c.topic: c.msgcount for c in reader.connections}
        self._topics = self._check_topics(present)
        self.has_ground_truth = settings.ground_truth_topic in self._topics
        self._rig: Rig | None = None

    @contextmanager
    def _open(self) -> Iterator[Reader]:
        reader = Reader(self.path)
        try:
            reader.open()
        except Exception as exc:  # rosbags raises its own error types for bad metadata or storage
            raise BagError(f"cannot open bag {self.path}: {type(exc).__name__}: {exc}") from exc
        try:
            yield reader
        finally:
            reader.close()

    def _check_topics(self, present: dict[str, str]) -> dict[str, str]:
        """The wanted topics this bag has; ConfigError for a wrong type or no camera at all."""
        expected = _expected_types(self.settings)
        for topic, msgtype in expected.items():
            if topic in present and present[topic] != msgtype:
                raise ConfigError(f"bag {self.path}: topic {topic} is {present[topic]}, the node's "
                                  f"configuration reads it as {msgtype}")
        found = {topic: msgtype for topic, msgtype in expected.items() if topic in present}
        if not set(found) & set(self.settings.image_topics):
            images = sorted(t for t, m in present.items() if m.endswith("Image"))
            raise ConfigError(f"bag {self.path} has none of the camera topics of the params file "
                              f"({', '.join(self.settings.image_topics)}); its image topics: "
                              f"{', '.join(images) or 'none'} (set camera_image_topics / image_transport)")
        return found

    @property
    def rig(self) -> Rig:
        """The rig from the bag's CameraInfo (first of each camera) and tf_static, over the rig file."""
        if self._rig is None:
            self._rig = self._read_rig()
        return self._rig

    def _read_rig(self) -> Rig:
        s = self.settings
        calibration = RigCalibration(load_rig(s.rig_path or None), base_frame=s.output_frame_id)
        info_index = {topic: i for i, topic in enumerate(s.camera_info_topics)}
        seen_info: set[str] = set()
        store = make_typestore()
        with self._open() as reader:  # small messages: all static TF, the first CameraInfo of each camera
            connections = [c for c in reader.connections if c.topic in {*info_index, s.tf_static_topic}]
            for connection, _, raw in reader.messages(connections=connections):
                if connection.topic in seen_info:
                    continue
                msg = store.deserialize_cdr(raw, connection.msgtype)
                if connection.topic == s.tf_static_topic:
                    calibration.apply_tf_static(msg)
                    continue
                seen_info.add(connection.topic)
                try:
                    calibration.apply_camera_info(info_index[connection.topic], msg)
                except InvalidMessageError as exc:
                    self._report(connection.topic, exc)
            lidar = [c for c in reader.connections if c.topic == s.lidar_topic]
            # the first sweep names the frame; no connections would mean every message to rosbags
            for connection, _, raw in reader.messages(connections=lidar) if lidar else ():
                calibration.update_lidar_frame(store.deserialize_cdr(raw, connection.msgtype).header.frame_id)
                break
        from_file = sorted(name for name, source in calibration.sources.items() if source == "rig file")
        if from_file:
            print(f"{self.name}: calibration of {', '.join(from_file)} from the rig file "
                  f"{s.rig_path or '(shipped default)'}: the bag has no CameraInfo / tf_static for them", flush=True)
        return calibration.rig

    def _report(self, topic: str, exc: InvalidMessageError) -> None:
        key = f"{topic}: {exc.cause}"
        if not self.bad_inputs[key]:
            LOG.warning("%s: %s: %s (counted; further ones not shown)", self.name, key, exc)
        self.bad_inputs[key] += 1

    def frames(self, model_config: ModelConfig) -> Iterator[DriveFrame]:
        """The bag's frames in order; images decoded for ``model_config``'s input size as the node
        decodes them (JPEGs at the largest power-of-two reduction that still covers it)."""
        s = self.settings
        camera_index = {topic: i for i, topic in enumerate(s.image_topics)}
        bag_time_s = [0.0]
        assembler: FrameAssembler = FrameAssembler(len(s.image_topics), s.sync_slop_s, s.camera_timeout_s,
                                                   s.max_lidar_age_s, monotonic=lambda: bag_time_s[0])
        builder = SensorFrameBuilder(self.rig, model_config, s.image_topics, s.lidar_topic,
                                     self._report)
        poses = PoseBuffer()
        ground_truth: dict[int, Boxes3D] = {}
        pending: list[tuple[float, AssembledFrame]] = []  # (bag time assembled, frame), in order
        store = make_typestore()
        pose_topic = s.odom_topic if s.ego_pose_source == "odom" else s.tf_topic
        wanted = [t for t in (*camera_index, s.lidar_topic, pose_topic, s.ground_truth_topic) if t in self._topics]
        total = self._counts.get(s.image_topics[0]) or max(self._counts.get(t, 0) for t in camera_index)
        with self._open() as reader, tqdm(total=total, unit="frame", desc=self.name, disable=not self.progress,
                                          mininterval=1.0) as bar:
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, timestamp, raw in reader.messages(connections=connections):
                bag_time_s[0] = timestamp / NS_PER_S
                msg = store.deserialize_cdr(raw, connection.msgtype)
                topic = connection.topic
                if topic in camera_index:
                    ready = assembler.add_camera(camera_index[topic], stamp_to_ns(msg.header.stamp), msg)
                    pending += [(bag_time_s[0], frame) for frame in ready]
                elif topic == s.lidar_topic:
                    assembler.add_lidar(stamp_to_ns(msg.header.stamp), msg)
                elif topic == s.ground_truth_topic:
                    ground_truth[stamp_to_ns(msg.header.stamp)] = detection_array_to_boxes(msg)
                else:
                    self._add_pose(poses, topic, msg)
                pending += [(bag_time_s[0], frame) for frame in assembler.poll()]
                for frame in self._ready(pending, ground_truth, poses, builder, bag_time_s[0]):
                    bar.update(1)
                    yield frame
            bag_time_s[0] += END_OF_BAG_S
            pending += [(bag_time_s[0], frame) for frame in assembler.poll()]
            for frame in self._ready(pending, ground_truth, poses, builder, bag_time_s[0]):
                bar.update(1)
                yield frame
        if self.bad_inputs:
            print(f"{self.name}: messages left out of their frames: "
                  + ", ".join(f"{key} x{count}" for key, count in sorted(self.bad_inputs.items())), flush=True)

    def _add_pose(self, poses: PoseBuffer, topic: str, msg: Any) -> None:
        s = self.settings
        if s.ego_pose_source == "odom":
            try:
                poses.add(stamp_to_ns(msg.header.stamp), odometry_to_pose(msg))
            except InvalidMessageError as exc:
                self._report(topic, exc)
            return
        for stamp_ns, T in poses_from_tf(msg, s.odom_frame_id, s.output_frame_id):
            poses.add(stamp_ns, T)

    def _ready(self, pending: list[tuple[float, AssembledFrame]], ground_truth: dict[int, Boxes3D],
               poses: PoseBuffer, builder: SensorFrameBuilder, bag_time_s: float) -> Iterator[DriveFrame]:
        """Frames in order, each with its ground truth when the drive has some at its stamp.

        Ground truth may be recorded after the images, so a frame waits for it up to
        GROUND_TRUTH_WAIT_S of bag time; a frame without any (nuScenes sweeps between
        keyframes, a drive without labels) still runs: the recurrent state needs every frame.
        """
        while pending:
            assembled_at_s, assembled = pending[0]
            stamp = assembled.stamp_ns
            waiting = self.has_ground_truth and stamp not in ground_truth
            if waiting and bag_time_s - assembled_at_s < GROUND_TRUTH_WAIT_S:
                return
            pending.pop(0)
            sensors = builder.build(assembled, EgoPoses.look_up(poses, stamp, assembled.lidar_stamp_ns))
            yield DriveFrame(sensors, ground_truth.pop(stamp, None), None, self.condition)
