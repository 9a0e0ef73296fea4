"""The calibration config file (`config/quant_bev_tiny.yaml`): every size and choice in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.quant.calib_data import SequenceSetSpec
from bev_quant_ros.quant.qdq import DEFAULT_OP_TYPES
from bev_quant_ros.quant.ranges import METHODS

AUTO_METHOD = "auto"  # pick the method with the smallest all-INT8 output error on the validation frames


@dataclass(frozen=True)
class QuantConfig:
    model: Path  # FP32 ONNX (its model config YAML next to it)
    output: Path  # INT8 Q/DQ ONNX, TensorRT flavour (symmetric int8)
    plan: Path  # precision plan YAML
    work_dir: Path  # statistics, sensitivity, search log (git-ignored)
    method: str
    percentile: float
    bins: int
    calibration: SequenceSetSpec
    validation: SequenceSetSpec  # plan search (calibration-held-out)
    sensitivity_frames: int  # first frames of each validation sequence used for the output proxy
    budget_nds: float  # the goal: worst per-condition NDS loss vs FP32 on held-out data
    search_budget_nds: float  # what the plan search demands on the (small) validation set: a margin for noise
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    threads: int = 1
    cpu_output: Path | None = None  # same plan and ranges, ONNX Runtime CPU flavour (quant/qdq.py)


def _spec(doc: dict[str, Any], where: str) -> SequenceSetSpec:
    try:
        return SequenceSetSpec(tuple(doc["conditions"]), int(doc["sequences_per_condition"]),
                               int(doc["frames_per_sequence"]), int(doc["seed_base"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: needs conditions, sequences_per_condition, frames_per_sequence, "
                          f"seed_base ({exc!r})") from None


def load_quant_config(path: str | Path, root: str | Path | None = None) -> QuantConfig:
    """Parse and validate; relative paths are resolved against `root` (default: the current directory)."""
    path = Path(path)
    base = Path(root) if root is not None else Path.cwd()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read quantization config {path}: {exc}") from exc
    try:
        calibration = doc["calibration"]
        config = QuantConfig(
            model=base / doc["model"], output=base / doc["output"], plan=base / doc["plan"],
            work_dir=base / doc.get("work_dir", ".cache/quant"),
            method=str(calibration.get("method", AUTO_METHOD)),
            percentile=float(calibration.get("percentile", 99.99)), bins=int(calibration.get("bins", 2048)),
            calibration=_spec(calibration, f"{path}: calibration"),
            validation=_spec(doc["validation"], f"{path}: validation"),
            sensitivity_frames=int(doc["validation"].get("sensitivity_frames", 12)),
            budget_nds=float(doc.get("budget_nds", 0.005)),
            search_budget_nds=float(doc.get("search_budget_nds", float(doc.get("budget_nds", 0.005)) / 2)),
            op_types=tuple(doc.get("op_types", DEFAULT_OP_TYPES)), threads=int(doc.get("threads", 1)),
            cpu_output=base / doc["cpu_output"] if doc.get("cpu_output") else None)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"quantization config {path} lacks {exc}") from None
    if config.method not in (*METHODS, AUTO_METHOD):
        raise ConfigError(f"{path}: calibration.method must be one of {(*METHODS, AUTO_METHOD)}, "
                          f"got '{config.method}'")
    if not 50.0 < config.percentile <= 100.0:
        raise ConfigError(f"{path}: calibration.percentile must be in (50, 100], got {config.percentile}")
    if config.bins < 256 or config.bins & (config.bins - 1):
        raise ConfigError(f"{path}: calibration.bins must be a power of two >= 256, got {config.bins}")
    if not 0 <= config.search_budget_nds <= config.budget_nds:
        raise ConfigError(f"{path}: need 0 <= search_budget_nds <= budget_nds, got {config.search_budget_nds} "
                          f"and {config.budget_nds}")
    return config
