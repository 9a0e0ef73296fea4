"""Calibration and evaluation data as recorded sequences of engine inputs.

Calibration must see what a deployed engine sees (docs/architecture.md §3): the real
preprocessing of `BevPipeline` (images, lidar raster, camera grid, ego-motion,
reset rules) and, as `prev_bev`, the state the FP32 model itself produced on the
previous frame. Recording the per-frame engine inputs once (through the pipeline
with a recording engine) lets calibration, sensitivity, plan search and
benchmarks run many model variants on identical inputs without re-simulating.

Sensor modes (``modes`` of a set): ``fused`` windows are the drive as recorded; a
``camera_only`` window is the same frames with every lidar sweep withheld before the
pipeline, as a lidar fault delivers them, so the pipeline itself runs them camera-only
(zero raster, ``lidar_valid`` 0 where the model declares it). Results are grouped per
``group_key(condition, mode)``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from bev_quant_ros.drives.frames import Drive, DriveFrame
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.engine.base import Engine, EngineDescription
from bev_quant_ros.engine.contract import STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.errors import CalibrationError, ConfigError
from bev_quant_ros.perception.box_decoding import DecodeConfig
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.model_config import ModelConfig, model_config_for_onnx
from bev_quant_ros.perception.pipeline import BevPipeline, SensorFrame
from bev_quant_ros.perception.sensor_mode import SensorMode
from bev_quant_ros.perception.temporal import TemporalState
from bev_quant_ros.quant.histogram import DEFAULT_BINS, TensorStats
from bev_quant_ros.sim import CONDITIONS

PREV_VALID = "prev_valid"
FUSED, CAMERA_ONLY = SensorMode.FUSED.value, SensorMode.CAMERA_ONLY.value
MODES = (FUSED, CAMERA_ONLY)  # the sensor modes a calibration or validation set can record
DEFAULT_MODES = (FUSED,)


def group_key(condition: str, mode: str) -> str:
    """The one label results are grouped under: the condition, with the mode appended when it is not
    ``fused`` ("night/camera_only"), so fused-only sets group exactly as before modes existed."""
    return condition if mode == FUSED else f"{condition}/{mode}"


def mode_of(group: str) -> str:
    """The sensor mode of a ``group_key`` label (inverse of its suffix): "night/camera_only" -> camera_only."""
    return group.rpartition("/")[2] if "/" in group else FUSED


def check_modes(modes: Sequence[str]) -> None:
    """ConfigError unless ``modes`` is a non-empty list of distinct known modes."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"unknown mode(s) {unknown}; expected some of {list(MODES)}")
    if not modes or len(set(modes)) != len(modes):
        raise ConfigError(f"modes must be a non-empty list without repeats, got {list(modes)}")


def _describe_modes(modes: tuple[str, ...]) -> dict[str, Any]:
    """The modes for ``describe()``; nothing for the default, so a fused-only plan file reads as before."""
    return {} if modes == DEFAULT_MODES else {"modes": list(modes)}


@dataclass
class RecordedSequence:
    """Engine inputs of consecutive frames of one drive, with their ground truth when it has some."""

    condition: str
    name: str  # the drive and the window's first frame, e.g. "drive_a@12" ("drive_a@12/camera_only")
    mode: str = FUSED  # the sensor mode it was recorded in (MODES)
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)  # FRAME_INPUTS per frame
    resets: list[bool] = field(default_factory=list)  # True: state reset before this frame
    ground_truth: list[Boxes3D] = field(default_factory=list)  # empty: the drive has no ground truth
    gt_num_lidar_points: list[np.ndarray | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feeds)

    @property
    def has_ground_truth(self) -> bool:
        return 0 < len(self.ground_truth) == len(self.feeds)

    @property
    def group(self) -> str:
        """What its results are grouped under (per condition and mode)."""
        return group_key(self.condition, self.mode)


class SequenceSet(Protocol):
    """A balanced composition of windows: ``sequences_per_condition`` windows of
    ``frames_per_sequence`` consecutive frames per condition label and sensor mode, cut from ``drives()``."""

    sequences_per_condition: int
    frames_per_sequence: int
    modes: tuple[str, ...]  # every window is recorded in each of these (MODES)

    @property
    def conditions(self) -> tuple[str, ...]:
        """Condition labels, in order."""

    def drives(self) -> list[tuple[str, Drive]]:
        """(condition label, drive), read in this order."""

    def describe(self) -> dict[str, Any]:
        """What the set is, for the plan file and the report."""


@dataclass(frozen=True)
class SequenceSetSpec:
    """A balanced (or deliberately unbalanced) composition of simulated sequences: one drive each."""

    conditions: tuple[str, ...]
    sequences_per_condition: int
    frames_per_sequence: int
    seed_base: int
    modes: tuple[str, ...] = DEFAULT_MODES

    def __post_init__(self) -> None:
        check_modes(self.modes)
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ConfigError(f"unknown condition(s) {unknown}; expected some of {CONDITIONS}")
        if self.sequences_per_condition < 0 or self.frames_per_sequence < 0:
            raise ConfigError("sequences_per_condition and frames_per_sequence must be >= 0")
        seeds = [s.seed for s in self.synth_specs()]
        if seeds and (min(seeds) < 10_000 or max(seeds) >= 100_000):
            raise ConfigError(f"seeds {min(seeds)}..{max(seeds)} overlap training (< 10000) or held-out "
                              "evaluation (>= 100000) seeds")

    def synth_specs(self) -> list[SynthSpec]:
        """One SynthSpec per sequence; seeds differ across conditions so scenes differ too."""
        return [SynthSpec(condition, self.seed_base + 1000 * index + k, self.frames_per_sequence)
                for index, condition in enumerate(self.conditions)
                for k in range(self.sequences_per_condition)]

    def drives(self) -> list[tuple[str, Drive]]:
        return [(s.condition, SynthDrive(s)) for s in self.synth_specs()]

    def describe(self) -> dict[str, Any]:
        return {"conditions": list(self.conditions),
                "frames_per_condition": self.sequences_per_condition * self.frames_per_sequence,
                "seed_base": self.seed_base, **_describe_modes(self.modes)}


@dataclass(frozen=True)
class DriveSource:
    """One ``drives:`` entry of the config: a rosbag2, a directory of bags or ``synth:...``, and its label."""

    path: str
    condition: str


@dataclass(frozen=True)
class DriveSetSpec:
    """Windows cut from a user's own drives, read with the node's configuration (``settings``)."""

    sources: tuple[DriveSource, ...]
    sequences_per_condition: int
    frames_per_sequence: int
    settings: ReaderSettings
    modes: tuple[str, ...] = DEFAULT_MODES

    def __post_init__(self) -> None:
        check_modes(self.modes)
        if not self.sources:
            raise ConfigError("drives: the list is empty")
        if self.sequences_per_condition < 1 or self.frames_per_sequence < 1:
            raise ConfigError("sequences_per_condition and frames_per_sequence must be >= 1")
        self.drives()  # a missing path or a bag the params file cannot read fails here, before any work

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.condition for s in self.sources))

    def drives(self) -> list[tuple[str, Drive]]:
        return [(s.condition, drive) for s in self.sources for drive in open_drives(s.path, self.settings,
                                                                                     s.condition)]

    def describe(self) -> dict[str, Any]:
        return {"conditions": list(self.conditions),
                "frames_per_condition": self.sequences_per_condition * self.frames_per_sequence,
                "drives": [f"{s.path} ({s.condition})" for s in self.sources], **_describe_modes(self.modes)}

    def __str__(self) -> str:
        modes = "" if self.modes == DEFAULT_MODES else f" and mode ({', '.join(self.modes)})"
        return (f"{self.sequences_per_condition} x {self.frames_per_sequence} frames per condition{modes} of "
                + ", ".join(f"{s.path} ({s.condition})" for s in self.sources))


class _RecordingEngine(Engine):
    """Stands in for the engine inside `BevPipeline`: keeps each frame's inputs, infers nothing."""

    def __init__(self, config: ModelConfig) -> None:
        self.sequence: RecordedSequence | None = None
        self._reset_pending = True
        shapes = config.output_shapes()
        self._outputs = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        assert self.sequence is not None
        # the pipeline reuses its cached camera grid / identity motion: those are shared read-only
        self.sequence.feeds.append({k: np.array(v, copy=True) if k != "cam_grid" else v for k, v in inputs.items()})
        self.sequence.resets.append(self._reset_pending)
        self._reset_pending = False
        return self._outputs

    def reset_state(self) -> None:
        self._reset_pending = True

    def warmup(self, iterations: int = 3) -> None:
        """Nothing to warm up."""

    def describe(self) -> EngineDescription:
        raise NotImplementedError("the recording engine is internal to calibration")

    @property
    def state_valid(self) -> bool:
        return not self._reset_pending


def _without_sweep(sensors: SensorFrame) -> SensorFrame:
    """The frame as the node's reader builds it when no sweep was delivered (SensorFrameBuilder.build
    with no lidar message): no points, no lidar stamp, no pose or velocity at a lidar stamp."""
    return dataclasses.replace(sensors, points=None, lidar_stamp_ns=None, T_world_ego_lidar=None,
                               ego_velocity_xy_yawrate=None)


def frame_in_mode(frame: DriveFrame, mode: str) -> DriveFrame | None:
    """``frame`` as the pipeline receives it in ``mode`` (None: the mode has no such frame).

    ``camera_only``: every sweep withheld, as under a lidar fault, so the windows pair with the fused
    ones (same images, stamps and poses; only the lidar differs). FrameAssembler keeps lidar-only
    frames apart from camera sets, so the camera sets are those a bag without its lidar topic gives;
    a lidar-only frame (no valid camera) does not exist without a lidar and is left out.
    """
    if mode == FUSED:
        return frame
    if not frame.sensors.camera_valid.any():
        return None
    return dataclasses.replace(frame, sensors=_without_sweep(frame.sensors))


class _WindowRecorder:
    """The windows of one sensor mode, recorded frame by frame through the real pipeline."""

    def __init__(self, config: ModelConfig, drive: Drive, label: str, mode: str, frames_per_sequence: int | None,
                 windows: int | None) -> None:
        self.engine = _RecordingEngine(config)
        decode_config = DecodeConfig(x_range_m=config.x_range_m, y_range_m=config.y_range_m,
                                     class_names=config.classes, score_threshold=0.99)
        self.pipeline = BevPipeline(self.engine, config, drive.rig, decode_config, TemporalState())
        self.drive_name, self.label, self.mode = drive.name, label, mode
        self.whole_drive = not frames_per_sequence  # None: one window, kept however long
        self.window, self.windows = frames_per_sequence or sys.maxsize, windows
        self.sequences: list[RecordedSequence] = []
        self._frames = 0

    @property
    def done(self) -> bool:
        return bool(self.sequences) and len(self.sequences[-1]) == self.window and len(self.sequences) == self.windows

    def add(self, frame: DriveFrame) -> None:
        if self._frames % self.window == 0:
            self.pipeline.request_reset()
            suffix = group_key("", self.mode)  # "" or "/camera_only": the name says its mode like its group
            self.sequences.append(RecordedSequence(self.label, f"{self.drive_name}@{self._frames}{suffix}", self.mode))
            self.engine.sequence = self.sequences[-1]
        self._frames += 1
        self.pipeline.process(frame.sensors)
        if frame.ground_truth is not None:
            self.sequences[-1].ground_truth.append(frame.ground_truth)
            self.sequences[-1].gt_num_lidar_points.append(frame.gt_num_lidar_points)

    def complete_windows(self) -> list[RecordedSequence]:
        """The windows, a partial last one dropped."""
        if not self.whole_drive and self.sequences and len(self.sequences[-1]) < self.window:
            self.sequences.pop()
        return self.sequences


def record_drive_modes(model_path: str | Path, drive: Drive, condition: str | None,
                       frames_per_sequence: int | None, windows: Mapping[str, int | None]
                       ) -> dict[str, list[RecordedSequence]]:
    """``record_drive`` in several modes (mode -> at most that many windows) from one read of the
    drive: rendering or decoding a frame is paid once, not once per mode."""
    check_modes(list(windows))
    config = model_config_for_onnx(model_path)
    recorders = [_WindowRecorder(config, drive, condition or drive.condition, mode, frames_per_sequence, wanted)
                 for mode, wanted in windows.items()]
    for frame in drive.frames(config):
        for recorder in recorders:
            moded = frame_in_mode(frame, recorder.mode) if not recorder.done else None
            if moded is not None:
                recorder.add(moded)
        if all(r.done for r in recorders):
            break  # enough: the rest of the drive is not read
    return {r.mode: r.complete_windows() for r in recorders}


def record_drive(model_path: str | Path, drive: Drive, condition: str | None = None,
                 frames_per_sequence: int | None = None, windows: int | None = None,
                 mode: str = FUSED) -> list[RecordedSequence]:
    """The engine inputs the real pipeline would feed `model_path` on `drive`'s frames in sensor ``mode``.

    Cut into consecutive windows of ``frames_per_sequence`` frames (None: the whole drive as
    one), each starting from a reset, at most ``windows`` of them; a partial last window is
    dropped. ``condition`` labels the windows (default: the drive's own).
    """
    return record_drive_modes(model_path, drive, condition, frames_per_sequence, {mode: windows})[mode]


def record_sequence(model_path: str | Path, spec: SynthSpec, mode: str = FUSED) -> RecordedSequence:
    """One simulated drive recorded whole (held-out and drift sequences)."""
    return record_drive(model_path, SynthDrive(spec), mode=mode)[0]


def record_set(model_path: str | Path, spec: SequenceSet) -> list[RecordedSequence]:
    """``spec.sequences_per_condition`` windows per condition and mode, from its drives in order
    (each drive recorded in every mode of ``spec.modes``: paired windows of the same frames).

    A drive shorter than one window, or a condition whose drives give fewer windows, is a
    ConfigError (the set would not be balanced); no frames at all is a CalibrationError.
    """
    per_group: dict[str, list[RecordedSequence]] = {group_key(c, m): [] for c in spec.conditions for m in spec.modes}
    window = spec.frames_per_sequence
    for condition, drive in spec.drives():
        wanted = {mode: spec.sequences_per_condition - len(per_group[group_key(condition, mode)])
                  for mode in spec.modes}
        wanted = {mode: count for mode, count in wanted.items() if count > 0}
        if not wanted or window == 0:
            continue
        for mode, windows in record_drive_modes(model_path, drive, condition, window, wanted).items():
            if not windows:
                raise ConfigError(f"drive {drive.name} ({group_key(condition, mode)}) has fewer frames than "
                                  f"one window of {window}")
            per_group[group_key(condition, mode)] += windows
    short = {g: len(w) for g, w in per_group.items() if window and len(w) < spec.sequences_per_condition}
    if short:
        raise ConfigError(f"not balanced: condition(s) {short} give fewer than {spec.sequences_per_condition} "
                          f"windows of {window} frames (add drives or lower sequences_per_condition)")
    sequences = [s for windows in per_group.values() for s in windows]
    if not sequences:
        raise CalibrationError(f"calibration set {spec} has no frames")
    return sequences


def state_feeds(session: ort.InferenceSession, sequence: RecordedSequence,
                output_names: Sequence[str]) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Run `session` over the sequence feeding back its own `bev_state`; yield (full feed, outputs).

    This is how calibration sees the recurrent state: the one the (FP32) model produced
    on the previous frame, zero with `prev_valid = 0` after a reset.
    """
    names = list(dict.fromkeys([STATE_OUTPUT, *output_names]))
    state_shape = next(i.shape for i in session.get_inputs() if i.name == STATE_INPUT)
    state = np.zeros(state_shape, np.float32)
    for feed, reset in zip(sequence.feeds, sequence.resets):
        if reset:
            state = np.zeros(state_shape, np.float32)
        full = {**feed, STATE_INPUT: state, PREV_VALID: np.array([0.0 if reset else 1.0], np.float32)}
        values = dict(zip(names, session.run(names, full)))
        state = values[STATE_OUTPUT]
        yield full, values


ConditionStats = dict[str, dict[str, TensorStats]]  # group (condition[/mode], group_key) -> tensor -> stats


def collect_activation_stats(model: onnx.ModelProto, sequences: Sequence[RecordedSequence],
                             tensor_names: Sequence[str], bins: int = DEFAULT_BINS) -> ConditionStats:
    """Stream every sequence through the FP32 model (own recurrent state) and histogram `tensor_names`.

    Statistics are kept per group (condition and mode) so the report can show range shift between
    them; `merge_conditions` gives the calibration set's combined view.
    """
    if not sequences or not any(len(s) for s in sequences):
        raise CalibrationError("the calibration set is empty: no frames to calibrate on")
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    for name in tensor_names:
        if name not in present:
            augmented.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(augmented.SerializeToString(), providers=["CPUExecutionProvider"])
    result: ConditionStats = {}
    for sequence in sequences:
        per_tensor = result.setdefault(sequence.group, {n: TensorStats(bins) for n in tensor_names})
        for _, values in state_feeds(session, sequence, tensor_names):
            for name in tensor_names:
                per_tensor[name].update(values[name])
    return result


def merge_conditions(stats: ConditionStats) -> dict[str, TensorStats]:
    """Per-tensor statistics over all conditions together."""
    merged: dict[str, TensorStats] = {}
    for per_tensor in stats.values():
        for name, tensor_stats in per_tensor.items():
            merged[name] = merged[name].merged(tensor_stats) if name in merged else tensor_stats
    return merged
