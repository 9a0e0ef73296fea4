"""One frame through the BEV detector: preprocess -> temporal rules -> engine -> decode.

The same object serves the ROS node, offline bag evaluation, calibration and
benchmarks (docs/architecture.md §1), so they cannot drift apart. It takes an already
assembled :class:`SensorFrame` (the node builds it with ``FrameAssembler`` (perception/frame_assembly.py),
offline tools from bags or the simulator) and returns detections plus per-stage
timings. A frame needs a camera image or a lidar sweep: without cameras it runs lidar-only
(every camera masked), without a sweep camera-only. The optional inputs ``dt`` and
``lidar_valid`` are fed only to a model whose config (checked against the graph) declares
them. No ROS imports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bev_quant_ros.engine.base import FRAME_INPUTS, Engine, frame_input_names
from bev_quant_ros.engine.contract import DT_INPUT, LIDAR_VALID_INPUT, OPTIONAL_INPUTS
from bev_quant_ros.engine.factory import create_engine
from bev_quant_ros.errors import InvalidMessageError, ModelContractError
from bev_quant_ros.perception.box_decoding import DecodeConfig, decode
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import Rig, load_rig
from bev_quant_ros.perception.model_config import ModelConfig, model_config_for_onnx
from bev_quant_ros.perception.preprocess import camera_sampling_grid, ego_motion_affine, lidar_bev, prepare_images
from bev_quant_ros.perception.temporal import ResetReason, TemporalState

NS_PER_S = 1_000_000_000


@dataclass
class SensorFrame:
    """Sensor data of one frame, whatever its source (ROS, bag, simulator)."""

    stamp_ns: int  # camera stamp: detections are stamped with it
    images: Sequence[np.ndarray | None]  # six [h, w, 3] uint8 RGB in model order; None = missing
    points: np.ndarray | None = None  # [N, 5] x, y, z, intensity, t (s, rel. to lidar stamp), lidar frame
    lidar_stamp_ns: int | None = None
    T_world_ego: np.ndarray | None = None  # ego pose at stamp_ns
    T_world_ego_lidar: np.ndarray | None = None  # ego pose at lidar_stamp_ns
    # (vx, vy, yaw rate) ego frame at the lidar stamp: compensates motion within a sweep
    # when the sweep and camera stamps coincide (the two poses then give no velocity)
    ego_velocity_xy_yawrate: np.ndarray | None = None

    @property
    def camera_valid(self) -> np.ndarray:
        return np.array([image is not None for image in self.images], dtype=np.float32)


@dataclass
class StageTimings:
    """Wall time of each stage of one frame, milliseconds."""

    preprocess_ms: float
    engine_ms: float
    decode_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.engine_ms + self.decode_ms


@dataclass
class PreparedFrame:
    """A frame's stateless model inputs, made by ``BevPipeline.prepare``.

    Preparing does not touch the recurrent state, so the node prepares frame N+1 on
    one thread while frame N runs through the engine on another.
    """

    stamp_ns: int
    T_world_ego: np.ndarray | None
    inputs: dict[str, np.ndarray]  # every contract input except the state and ego_motion
    lidar_used: bool
    preprocess_ms: float


@dataclass
class PipelineResult:
    """Detections of one frame and how they were made."""

    stamp_ns: int
    detections: Boxes3D
    camera_valid: np.ndarray
    lidar_used: bool
    reset_reason: ResetReason | None
    timings: StageTimings
    ego_pose_used: bool = True  # False: no ego pose at the stamp (state reset, no motion compensation)


class FramePreprocessor:
    """A frame's stateless model inputs: resized images, motion-compensated lidar raster and the
    camera grid cached per rig. The pipeline's first stage, and usable without an engine
    (training reads drives through it)."""

    def __init__(self, model_config: ModelConfig, rig: Rig) -> None:
        self.model_config = model_config
        self._lidar_empty = np.zeros((model_config.Cl, model_config.Hb, model_config.Wb), np.float32)
        self.set_rig(rig)

    def set_rig(self, rig: Rig) -> None:
        """Use a new calibration; the camera sampling grid is cached until the next call."""
        self.rig = rig
        self._cam_grid = camera_sampling_grid(rig, self.model_config)

    def prepare(self, frame: SensorFrame) -> PreparedFrame:
        """Preprocess a frame (images, lidar raster); raises InvalidMessageError for unusable data."""
        t0 = time.perf_counter()
        inputs, lidar_used = self._inputs(frame)
        return PreparedFrame(frame.stamp_ns, frame.T_world_ego, inputs, lidar_used,
                             (time.perf_counter() - t0) * 1e3)

    def _inputs(self, frame: SensorFrame) -> tuple[dict[str, np.ndarray], bool]:
        images = prepare_images(frame.images, self.model_config)  # checks slots and sizes
        lidar_used = frame.points is not None and frame.lidar_stamp_ns is not None
        camera_valid = frame.camera_valid
        if not lidar_used and not camera_valid.any():
            raise InvalidMessageError("a frame needs at least one camera image or a lidar sweep, got neither",
                                      cause="no_sensor_data")
        if lidar_used:
            # without odometry the sweep is used as if the ego stood still (no motion compensation)
            have_poses = frame.T_world_ego is not None and frame.T_world_ego_lidar is not None
            T_lidar = frame.T_world_ego_lidar if have_poses else np.eye(4)
            T_camera = frame.T_world_ego if have_poses else np.eye(4)
            raster = lidar_bev(frame.points, self.rig.T_ego_lidar, T_lidar, T_camera,
                               (frame.stamp_ns - frame.lidar_stamp_ns) / NS_PER_S, self.model_config,
                               ego_velocity_xy_yawrate=frame.ego_velocity_xy_yawrate)
        else:
            raster = self._lidar_empty
        inputs = {"images": images, "camera_valid": camera_valid, "cam_grid": self._cam_grid, "lidar_bev": raster}
        if LIDAR_VALID_INPUT in self.model_config.optional_inputs:
            inputs[LIDAR_VALID_INPUT] = np.array([1.0 if lidar_used else 0.0], np.float32)
        return inputs, lidar_used


class BevPipeline:
    """Turns SensorFrames into detections with a recurrent engine (see module docstring)."""

    def __init__(self, engine: Engine, model_config: ModelConfig, rig: Rig,
                 decode_config: DecodeConfig, temporal: TemporalState) -> None:
        self.engine = engine
        self.model_config = model_config
        self.decode_config = decode_config
        self.temporal = temporal
        self.preprocessor = FramePreprocessor(model_config, rig)
        self._identity_motion = np.array([[1, 0, 0], [0, 1, 0]], np.float32)

    @classmethod
    def from_model(cls, model_path: str | Path, *, backend: str = "auto", precision: str | None = None,
                   rig: Rig | None = None, score_threshold: float = 0.3, max_detections: int = 100,
                   temporal: TemporalState | None = None, **engine_options: Any) -> "BevPipeline":
        """Load the model and its config (the YAML next to the ONNX) and build the pipeline."""
        if not Path(model_path).is_file():
            raise ModelContractError(f"model file {model_path} does not exist")
        model_config = model_config_for_onnx(model_path)
        engine = create_engine(model_path, backend=backend, precision=precision,
                               expected_dims=model_config.symbols(), **engine_options)
        graph_optional = frame_input_names(engine.describe().inputs)[len(FRAME_INPUTS):]
        if graph_optional != model_config.optional_inputs:
            raise ModelContractError(f"{model_path}: the graph declares optional inputs {list(graph_optional)}, "
                                     f"its model config {list(model_config.optional_inputs)} "
                                     f"(inputs.optional, of {list(OPTIONAL_INPUTS)})")
        decode_config = DecodeConfig(x_range_m=model_config.x_range_m, y_range_m=model_config.y_range_m,
                                     class_names=model_config.classes, score_threshold=score_threshold,
                                     max_detections=max_detections)
        return cls(engine, model_config, rig or load_rig(), decode_config, temporal or TemporalState())

    def warmup(self) -> None:
        """Run every stage once on dummy data, leaving the recurrent state untouched.

        numba compiles the lidar raster and NMS kernels on first use (seconds without a
        cache): done here, the first real frames are not late and not dropped.
        """
        cfg = self.model_config
        images = [np.zeros((camera.height, camera.width, 3), np.uint8) for camera in self.rig.cameras]
        points = np.array([[10.0, 0.0, 0.0, 10.0, -0.05]], np.float32)
        self.prepare(SensorFrame(0, images, points, 0, np.eye(4), np.eye(4), np.zeros(3)))
        ego_motion_affine(np.eye(4), np.eye(4), cfg)
        self.engine.warmup()
        heatmap = np.random.default_rng(0).random((cfg.K, cfg.Ho, cfg.Wo)).astype(np.float32)
        decode(heatmap, np.zeros((cfg.R, cfg.Ho, cfg.Wo), np.float32), self.decode_config)

    @property
    def rig(self) -> Rig:
        return self.preprocessor.rig

    def set_rig(self, rig: Rig) -> None:
        """Use a new calibration; the camera sampling grid is cached until the next call."""
        self.preprocessor.set_rig(rig)

    def request_reset(self) -> None:
        """Drop the recurrent state before the next frame."""
        self.temporal.request_reset()

    def process(self, frame: SensorFrame) -> PipelineResult:
        """Run one frame; raises InvalidMessageError for unusable sensor data."""
        return self.infer(self.prepare(frame))

    def prepare(self, frame: SensorFrame) -> PreparedFrame:
        """Preprocess a frame (stateless: the node prepares frame N+1 while N is in the engine)."""
        return self.preprocessor.prepare(frame)

    def infer(self, prepared: PreparedFrame) -> PipelineResult:
        """Apply the reset rules, run the engine on the recurrent state and decode; frames must
        arrive in stamp order (a stamp going back is a reset, like a looping bag)."""
        t1 = time.perf_counter()
        inputs = dict(prepared.inputs)
        decision = self.temporal.step(prepared.stamp_ns, prepared.T_world_ego)
        if decision.reset_reason is not None:
            self.engine.reset_state()
            inputs["ego_motion"] = self._identity_motion
        else:
            inputs["ego_motion"] = ego_motion_affine(decision.T_world_ego_prev, decision.T_world_ego,
                                                     self.model_config)
        if DT_INPUT in self.model_config.optional_inputs:
            inputs[DT_INPUT] = np.array([decision.dt_s], np.float32)
        t2 = time.perf_counter()
        outputs = self.engine.infer(inputs)
        t3 = time.perf_counter()
        detections = decode(outputs["heatmap"], outputs["box_reg"], self.decode_config)
        t4 = time.perf_counter()
        preprocess_ms = prepared.preprocess_ms + (t2 - t1) * 1e3
        return PipelineResult(prepared.stamp_ns, detections, inputs["camera_valid"], prepared.lidar_used,
                              decision.reset_reason,
                              StageTimings(preprocess_ms, (t3 - t2) * 1e3, (t4 - t3) * 1e3),
                              ego_pose_used=prepared.T_world_ego is not None)
