"""Calibration and evaluation data as recorded sequences of engine inputs.

Calibration must see what a deployed engine sees (docs/architecture.md §3): the real
preprocessing of `BevPipeline` (images, lidar raster, camera grid, ego-motion,
reset rules) and, as `prev_bev`, the state the FP32 model itself produced on the
previous frame. Recording the per-frame engine inputs once (through the pipeline
with a recording engine) lets calibration, sensitivity, plan search and
benchmarks run many model variants on identical inputs without re-simulating.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.engine.base import Engine, EngineDescription
from bev_quant_ros.engine.contract import STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.errors import CalibrationError, ConfigError
from bev_quant_ros.perception.box_decoding import DecodeConfig
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.model_config import ModelConfig, model_config_for_onnx
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.perception.temporal import TemporalState
from bev_quant_ros.quant.histogram import DEFAULT_BINS, TensorStats
from bev_quant_ros.sim import CONDITIONS

PREV_VALID = "prev_valid"


@dataclass
class RecordedSequence:
    """Engine inputs of consecutive frames of one drive, with their ground truth when it has some."""

    condition: str
    name: str  # the drive and the window's first frame, e.g. "drive_a@12"
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)  # FRAME_INPUTS per frame
    resets: list[bool] = field(default_factory=list)  # True: state reset before this frame
    ground_truth: list[Boxes3D] = field(default_factory=list)  # empty: the drive has no ground truth
    gt_num_lidar_points: list[np.ndarray | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feeds)

    @property
    def has_ground_truth(self) -> bool:
        return 0 < len(self.ground_truth) == len(self.feeds)


class SequenceSet(Protocol):
    """A balanced composition of windows: ``sequences_per_condition`` windows of
    ``frames_per_sequence`` consecutive frames per condition label, cut from ``drives()``."""

    sequences_per_condition: int
    frames_per_sequence: int

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

    def __post_init__(self) -> None:
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
                "seed_base": self.seed_base}


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

    def __post_init__(self) -> None:
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
                "drives": [f"{s.path} ({s.condition})" for s in self.sources]}

    def __str__(self) -> str:
        return (f"{self.sequences_per_condition} x {self.frames_per_sequence} frames per condition of "
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


def record_drive(model_path: str | Path, drive: Drive, condition: str | None = None,
                 frames_per_sequence: int | None = None, windows: int | None = None) -> list[RecordedSequence]:
    """The engine inputs the real pipeline would feed `model_path` on `drive`'s frames.

    Cut into consecutive windows of ``frames_per_sequence`` frames (None: the whole drive as
    one), each starting from a reset, at most ``windows`` of them; a partial last window is
    dropped. ``condition`` labels the windows (default: the drive's own).
    """
    config = model_config_for_onnx(model_path)
    engine = _RecordingEngine(config)
    decode_config = DecodeConfig(x_range_m=config.x_range_m, y_range_m=config.y_range_m,
                                 class_names=config.classes, score_threshold=0.99)
    pipeline = BevPipeline(engine, config, drive.rig, decode_config, TemporalState())
    label = condition or drive.condition
    window = frames_per_sequence or sys.maxsize  # None: the whole drive is one window
    sequences: list[RecordedSequence] = []
    for index, frame in enumerate(drive.frames(config)):
        if index % window == 0:
            pipeline.request_reset()
            sequences.append(RecordedSequence(label, f"{drive.name}@{index}"))
            engine.sequence = sequences[-1]
        pipeline.process(frame.sensors)
        if frame.ground_truth is not None:
            sequences[-1].ground_truth.append(frame.ground_truth)
            sequences[-1].gt_num_lidar_points.append(frame.gt_num_lidar_points)
        if len(sequences[-1]) == window and len(sequences) == windows:
            break  # enough: the rest of the drive is not read
    if frames_per_sequence and sequences and len(sequences[-1]) < frames_per_sequence:
        sequences.pop()
    return sequences


def record_sequence(model_path: str | Path, spec: SynthSpec) -> RecordedSequence:
    """One simulated drive recorded whole (held-out and drift sequences)."""
    return record_drive(model_path, SynthDrive(spec))[0]


def record_set(model_path: str | Path, spec: SequenceSet) -> list[RecordedSequence]:
    """``spec.sequences_per_condition`` windows per condition, from its drives in order.

    A drive shorter than one window, or a condition whose drives give fewer windows, is a
    ConfigError (the set would not be balanced); no frames at all is a CalibrationError.
    """
    per_condition: dict[str, list[RecordedSequence]] = {c: [] for c in spec.conditions}
    window = spec.frames_per_sequence
    for condition, drive in spec.drives():
        wanted = spec.sequences_per_condition - len(per_condition[condition])
        if wanted <= 0 or window == 0:
            continue
        windows = record_drive(model_path, drive, condition, window, wanted)
        if not windows:
            raise ConfigError(f"drive {drive.name} ({condition}) has fewer frames than one window of {window}")
        per_condition[condition] += windows
    short = {c: len(w) for c, w in per_condition.items() if window and len(w) < spec.sequences_per_condition}
    if short:
        raise ConfigError(f"not balanced: condition(s) {short} give fewer than {spec.sequences_per_condition} "
                          f"windows of {window} frames (add drives or lower sequences_per_condition)")
    sequences = [s for windows in per_condition.values() for s in windows]
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


ConditionStats = dict[str, dict[str, TensorStats]]  # condition -> tensor -> stats


def collect_activation_stats(model: onnx.ModelProto, sequences: Sequence[RecordedSequence],
                             tensor_names: Sequence[str], bins: int = DEFAULT_BINS) -> ConditionStats:
    """Stream every sequence through the FP32 model (own recurrent state) and histogram `tensor_names`.

    Statistics are kept per condition so the report can show range shift between
    conditions; `merge_conditions` gives the calibration set's combined view.
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
        per_tensor = result.setdefault(sequence.condition, {n: TensorStats(bins) for n in tensor_names})
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
