"""The calibration config file (`config/quant_bev_tiny.yaml`): every size and choice in one place.

Calibration and validation sets come in two forms with one meaning (calib_data.py): simulated
(``conditions`` + ``seed_base``) or a user's drives (``drives: [{path, condition}]`` read with
the node's ``params`` file in ``namespace``). Either form may list ``modes`` (default ``[fused]``):
the sensor modes every window is recorded in (``camera_only``: the drive's lidar withheld).
Unknown keys and modes are errors, so a typo is not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.synth import SYNTH_PREFIX
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.quant.assess import REFERENCE_SCORE_THRESHOLD
from bev_quant_ros.quant.calib_data import DEFAULT_MODES, MODES, DriveSetSpec, DriveSource, SequenceSet, SequenceSetSpec
from bev_quant_ros.quant.plan import MAX_FLOAT_NODES, mode_budget_scale_from
from bev_quant_ros.quant.qdq import DEFAULT_OP_TYPES
from bev_quant_ros.quant.ranges import GROUP_RANGES, METHODS
from bev_quant_ros.sim.ground_truth import GT_TOPIC

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
    calibration: SequenceSet  # synthetic seeds or a user's drives (calib_data.py)
    validation: SequenceSet  # plan search (calibration-held-out); without ground truth: FP32 detections
    sensitivity_frames: int  # first frames of each validation sequence used for the output proxy
    budget_nds: float  # the goal: worst per-condition NDS loss vs FP32 on held-out data
    search_budget_nds: float  # what the plan search demands on the (small) validation set: a margin for noise
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    threads: int = 1
    cpu_output: Path | None = None  # same plan and ranges, ONNX Runtime CPU flavour (quant/qdq.py)
    reference_score_threshold: float = REFERENCE_SCORE_THRESHOLD  # FP32 detections kept as reference (assess.py)
    max_float_nodes: int = MAX_FLOAT_NODES  # the greedy search keeps at most this many float (latency bound)
    group_ranges: str = "merged"  # clip points from pooled statistics, or "max" of each group's own (ranges.py)
    mode_budget_scale: Mapping[str, float] = field(default_factory=dict)  # mode -> factor on both budgets (plan.py)
    float_modules: tuple[str, ...] = ()  # node-name prefixes kept float before the search (plan.module_float_nodes)

    def goal_points(self, mode: str) -> float:
        """The held-out goal for a group of ``mode``: its worst NDS loss vs FP32, in NDS points."""
        return self.budget_nds * 100 * self.mode_budget_scale.get(mode, 1.0)


TOP_KEYS = frozenset({"model", "output", "cpu_output", "plan", "work_dir", "threads", "calibration", "validation",
                      "budget_nds", "search_budget_nds", "op_types", "reference_score_threshold",
                      "max_float_nodes", "mode_budget_scale", "float_modules"})
SYNTH_KEYS = frozenset({"conditions", "sequences_per_condition", "frames_per_sequence", "seed_base", "modes"})
DRIVE_KEYS = frozenset({"drives", "sequences_per_condition", "frames_per_sequence", "params", "namespace",
                        "gt_topic", "modes"})
SECTION_KEYS = {"calibration": frozenset({"method", "percentile", "bins", "group_ranges"}),
                "validation": frozenset({"sensitivity_frames"})}


def _unknown(doc: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def _drive_sources(entries: Any, base: Path, where: str) -> tuple[DriveSource, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}.drives must be a list of {{path, condition}}")
    sources = []
    for i, entry in enumerate(entries):
        _unknown(entry, frozenset({"path", "condition"}), f"{where}.drives[{i}]")
        if "path" not in entry or "condition" not in entry:
            raise ConfigError(f"{where}.drives[{i}] needs path and condition")
        text = str(entry["path"])
        sources.append(DriveSource(text if text.startswith(SYNTH_PREFIX) else str(base / text),
                                   str(entry["condition"])))
    return tuple(sources)


def _modes(doc: dict, where: str) -> tuple[str, ...]:
    """``modes:`` as a tuple (the values are checked by the set); a bare string is an error, not its letters."""
    modes = doc.get("modes", list(DEFAULT_MODES))
    if not isinstance(modes, list):
        raise ConfigError(f"{where}.modes must be a list such as [fused, camera_only], got {modes!r}")
    return tuple(str(m) for m in modes)


def _spec(doc: Any, where: str, section: str, base: Path) -> SequenceSet:
    """The synthetic form (conditions + seed_base) or the drives form (bags with condition labels)."""
    drives = isinstance(doc, dict) and "drives" in doc
    _unknown(doc, (DRIVE_KEYS if drives else SYNTH_KEYS) | SECTION_KEYS[section], where)
    modes = _modes(doc, where)
    try:
        if drives:
            params = doc.get("params")
            settings = ReaderSettings.from_params_file(base / params if params else None,
                                                       str(doc.get("namespace", "/")),
                                                       str(doc.get("gt_topic", GT_TOPIC)))
            return DriveSetSpec(_drive_sources(doc["drives"], base, where), int(doc["sequences_per_condition"]),
                                int(doc["frames_per_sequence"]), settings, modes)
        return SequenceSetSpec(tuple(doc["conditions"]), int(doc["sequences_per_condition"]),
                               int(doc["frames_per_sequence"]), int(doc["seed_base"]), modes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        needed = "drives" if drives else "conditions, seed_base"
        raise ConfigError(f"{where}: needs {needed}, sequences_per_condition, frames_per_sequence "
                          f"({exc!r})") from None


def _float_modules(raw: Any, path: Path) -> tuple[str, ...]:
    """``float_modules:`` as node-name prefixes; whether each names a node is checked against the model
    when calibrating (`plan.module_float_nodes`)."""
    if not isinstance(raw, list) or not all(isinstance(m, str) and m.strip("/") for m in raw):
        raise ConfigError(f"{path}: float_modules must be a list of node-name prefixes such as "
                          f"['/detector/box_head'], got {raw!r}")
    return tuple(raw)


def _read_doc(path: Path, base: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML of ``path``; with ``extends: other.yaml`` (relative to ``base``) that file's keys first,
    each top-level key of ``path`` replacing the one it names (a variant config states only what differs)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read quantization config {path}: {exc}") from exc
    if not isinstance(doc, dict) or "extends" not in doc:
        return doc
    parent = base / doc.pop("extends")
    if parent.resolve() in seen:
        raise ConfigError(f"{path}: extends {parent} again (a cycle)")
    return {**_read_doc(parent, base, (*seen, path.resolve())), **doc}


def load_quant_config(path: str | Path, root: str | Path | None = None) -> QuantConfig:
    """Parse and validate; relative paths are resolved against `root` (default: the current directory)."""
    path = Path(path)
    base = Path(root) if root is not None else Path.cwd()
    doc = _read_doc(path, base)
    _unknown(doc, TOP_KEYS, str(path))
    try:
        calibration = doc["calibration"]
        config = QuantConfig(
            model=base / doc["model"], output=base / doc["output"], plan=base / doc["plan"],
            work_dir=base / doc.get("work_dir", ".cache/quant"),
            method=str(calibration.get("method", AUTO_METHOD)),
            percentile=float(calibration.get("percentile", 99.99)), bins=int(calibration.get("bins", 2048)),
            calibration=_spec(calibration, f"{path}: calibration", "calibration", base),
            validation=_spec(doc["validation"], f"{path}: validation", "validation", base),
            sensitivity_frames=int(doc["validation"].get("sensitivity_frames", 12)),
            budget_nds=float(doc.get("budget_nds", 0.005)),
            search_budget_nds=float(doc.get("search_budget_nds", float(doc.get("budget_nds", 0.005)) / 2)),
            op_types=tuple(doc.get("op_types", DEFAULT_OP_TYPES)), threads=int(doc.get("threads", 1)),
            cpu_output=base / doc["cpu_output"] if doc.get("cpu_output") else None,
            reference_score_threshold=float(doc.get("reference_score_threshold", REFERENCE_SCORE_THRESHOLD)),
            max_float_nodes=int(doc.get("max_float_nodes", MAX_FLOAT_NODES)),
            group_ranges=str(calibration.get("group_ranges", "merged")),
            mode_budget_scale=mode_budget_scale_from(doc.get("mode_budget_scale")),
            float_modules=_float_modules(doc.get("float_modules", []), path))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"quantization config {path} lacks {exc}") from None
    if config.method not in (*METHODS, AUTO_METHOD):
        raise ConfigError(f"{path}: calibration.method must be one of {(*METHODS, AUTO_METHOD)}, "
                          f"got '{config.method}'")
    if not 50.0 < config.percentile <= 100.0:
        raise ConfigError(f"{path}: calibration.percentile must be in (50, 100], got {config.percentile}")
    if config.bins < 256 or config.bins & (config.bins - 1):
        raise ConfigError(f"{path}: calibration.bins must be a power of two >= 256, got {config.bins}")
    if not 0.0 < config.reference_score_threshold < 1.0:
        raise ConfigError(f"{path}: reference_score_threshold must be in (0, 1), got "
                          f"{config.reference_score_threshold}")
    if config.group_ranges not in GROUP_RANGES:
        raise ConfigError(f"{path}: calibration.group_ranges must be one of {GROUP_RANGES}, got "
                          f"'{config.group_ranges}'")
    if config.max_float_nodes < 0:
        raise ConfigError(f"{path}: max_float_nodes must be >= 0, got {config.max_float_nodes}")
    unknown_modes = set(config.mode_budget_scale) - set(MODES)
    if unknown_modes or any(f <= 0 for f in config.mode_budget_scale.values()):
        raise ConfigError(f"{path}: mode_budget_scale maps modes {MODES} to factors > 0, got "
                          f"{dict(config.mode_budget_scale)}")
    if not 0 <= config.search_budget_nds <= config.budget_nds:
        raise ConfigError(f"{path}: need 0 <= search_budget_nds <= budget_nds, got {config.search_budget_nds} "
                          f"and {config.budget_nds}")
    return config
