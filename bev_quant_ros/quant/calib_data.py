"""Calibration and evaluation data as recorded sequences of engine inputs.

Calibration must see what a deployed engine sees (docs/architecture.md §3): the real
preprocessing of `BevPipeline` (images, lidar raster, camera grid, ego-motion,
reset rules) and, as `prev_bev`, the state the FP32 model itself produced on the
previous frame. Recording the per-frame engine inputs once (through the pipeline
with a recording engine) lets calibration, sensitivity, plan search and
benchmarks run many model variants on identical inputs without re-simulating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from bev_quant_ros.drives.synth import SynthSpec, synth_frames
from bev_quant_ros.engine.base import Engine, EngineDescription
from bev_quant_ros.engine.contract import STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.errors import CalibrationError, ConfigError
from bev_quant_ros.perception.box_decoding import DecodeConfig
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.model_config import ModelConfig, model_config_for_onnx
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.perception.temporal import TemporalState
from bev_quant_ros.quant.histogram import DEFAULT_BINS, TensorStats
from bev_quant_ros.sim import CONDITIONS

PREV_VALID = "prev_valid"


@dataclass
class RecordedSequence:
    """Engine inputs of consecutive frames of one drive, with their ground truth."""

    condition: str
    seed: int
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)  # FRAME_INPUTS per frame
    resets: list[bool] = field(default_factory=list)  # True: state reset before this frame
    ground_truth: list[Boxes3D] = field(default_factory=list)
    gt_num_lidar_points: list[np.ndarray | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feeds)


@dataclass(frozen=True)
class SequenceSetSpec:
    """A balanced (or deliberately unbalanced) composition of simulated sequences."""

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


def record_sequence(model_path: str | Path, spec: SynthSpec) -> RecordedSequence:
    """Simulate `spec` and keep the engine inputs the real pipeline would feed `model_path`."""
    config = model_config_for_onnx(model_path)
    engine = _RecordingEngine(config)
    decode_config = DecodeConfig(x_range_m=config.x_range_m, y_range_m=config.y_range_m,
                                 class_names=config.classes, score_threshold=0.99)
    pipeline = BevPipeline(engine, config, load_rig(), decode_config, TemporalState())
    engine.sequence = RecordedSequence(spec.condition, spec.seed)
    for frame in synth_frames(spec):
        pipeline.process(frame.sensors)
        engine.sequence.ground_truth.append(frame.ground_truth)
        engine.sequence.gt_num_lidar_points.append(frame.gt_num_lidar_points)
    return engine.sequence


def record_set(model_path: str | Path, spec: SequenceSetSpec) -> list[RecordedSequence]:
    """All sequences of `spec`; an empty result is a CalibrationError (nothing to calibrate on)."""
    sequences = [record_sequence(model_path, s) for s in spec.synth_specs()]
    if not sequences or not any(len(s) for s in sequences):
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
