"""`bev-quant calibrate`: data -> statistics -> ranges -> sensitivity -> plan -> INT8 Q/DQ model.

One command rebuilds the shipped INT8 model from the config; intermediate results
(per-condition statistics, thresholds per method, sensitivity, search log) go to
the config's work_dir for `bev-quant quant-report`. With an existing plan
(`plan_path`) the search is skipped and the plan is applied as written, or, refining,
only the search's prune pass runs on the plan's float nodes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bev_quant_ros.engine.contract import INPUT_VALUE_RANGES
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.fleet.runners import Runner
from bev_quant_ros.quant.bounded import bounded_tensor_ranges
from bev_quant_ros.quant.calib_data import (
    ConditionStats,
    RecordedSequence,
    collect_activation_stats,
    merge_conditions,
    record_set,
)
from bev_quant_ros.quant.config import AUTO_METHOD, QuantConfig
from bev_quant_ros.quant.parallel_stats import parallel_activation_stats
from bev_quant_ros.quant.plan import (
    PrecisionPlan,
    apply_plan,
    float_reasons,
    module_float_nodes,
    read_plan,
    search_plan,
    sha256,
    write_plan,
)
from bev_quant_ros.quant.qdq import CPU, calibration_tensors, load_checked
from bev_quant_ros.quant.ranges import METHODS, compute_thresholds, group_max_thresholds
from bev_quant_ros.quant.sensitivity import NodeSensitivity, measure_sensitivity, method_errors

LOG = logging.getLogger(__name__)
STATS_FILE, THRESHOLDS_FILE, SENSITIVITY_FILE, SEARCH_FILE = ("stats.pkl", "thresholds.json", "sensitivity.json",
                                                            "search.json")


@dataclass
class Calibration:
    """Statistics of the calibration set and the thresholds of every method (tensors with an exact
    range, from a bounded input, get it in every method and in ``observed``)."""

    stats: ConditionStats
    thresholds: dict[str, dict[str, float]]  # method -> tensor -> clip point
    observed: dict[str, tuple[float, float]]  # tensor -> (min, max) over all conditions


def calibrate_ranges(config: QuantConfig, sequences: list[RecordedSequence] | None = None,
                     runner: Runner | None = None) -> Calibration:
    """Record the calibration set (unless given), collect statistics (one task per sequence on
    ``runner`` when given: merged exactly, docs/fleet.md), compute every method's thresholds."""
    model = load_checked(config.model)
    sequences = sequences if sequences is not None else record_set(config.model, config.calibration)
    tensors = calibration_tensors(model, config.op_types)
    stats = (collect_activation_stats(model, sequences, tensors, config.bins) if runner is None
             else parallel_activation_stats(config.model, sequences, tensors, runner, config.bins))
    merged = merge_conditions(stats)
    thresholds = {m: group_max_thresholds(stats, m, config.percentile) if config.group_ranges == "max"
                  else compute_thresholds(merged, m, config.percentile) for m in METHODS}
    observed = {name: (s.minimum, s.maximum) for name, s in merged.items()}
    # the normalised image's range is known exactly: no method may clip it (quant/bounded.py)
    exact = {name: r for name, r in bounded_tensor_ranges(model, INPUT_VALUE_RANGES).items() if name in observed}
    observed.update(exact)
    for per_tensor in thresholds.values():
        per_tensor.update({name: max(-low, high) for name, (low, high) in exact.items()})
    return Calibration(stats, thresholds, observed)


def truncated(sequences: list[RecordedSequence], frames: int) -> list[RecordedSequence]:
    """The first `frames` frames of each sequence (a cheaper set for the sensitivity proxy)."""
    return [dataclasses.replace(s, feeds=s.feeds[:frames], resets=s.resets[:frames],
                                ground_truth=s.ground_truth[:frames],
                                gt_num_lidar_points=s.gt_num_lidar_points[:frames]) for s in sequences]


def run_sensitivity(config: QuantConfig, calibration: Calibration, proxy_set: list[RecordedSequence],
                    runner: Runner | None = None) -> tuple[str, dict[str, float], list[NodeSensitivity]]:
    """Resolve the method (`auto`: smallest all-INT8 output error) and measure per-node sensitivity."""
    errors = method_errors(config.model, calibration.thresholds, proxy_set, config.op_types, config.threads)
    method = min(errors, key=errors.get) if config.method == AUTO_METHOD else config.method
    LOG.info("all-INT8 output error per method %s: using %s", errors, method)
    sensitivity = measure_sensitivity(config.model, calibration.thresholds[method], proxy_set, config.op_types,
                                      config.threads, runner)
    return method, errors, sensitivity


def run_calibration(config: QuantConfig, plan_path: Path | None = None, refine: bool = False,
                    runner: Runner | None = None) -> PrecisionPlan:
    """The whole `calibrate` command (module docstring); returns the plan that was applied.

    ``refine``: instead of applying ``plan_path`` as written, try to return each of its float
    nodes to INT8 under the new calibration (the search's prune pass)."""
    if refine and plan_path is None:
        raise ConfigError("refining needs the plan to refine (--plan)")
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    fixed = module_float_nodes(config.model, config.float_modules, config.op_types)  # a typo fails before calibrating
    LOG.info("calibration set %s", config.calibration)
    calibration = calibrate_ranges(config, runner=runner)
    (work / STATS_FILE).write_bytes(pickle.dumps(calibration.stats))
    (work / THRESHOLDS_FILE).write_text(json.dumps(calibration.thresholds, indent=1))
    if plan_path is not None and not refine:
        plan = read_plan(plan_path)
        if plan.model_sha256 and plan.model_sha256 != sha256(config.model):
            LOG.warning("plan %s was searched on another %s (sha256 differs): its float nodes exist but "
                        "its measured NDS is not this model's; rerun without --plan to search again",
                        plan_path, config.model.name)
        write_models(config, plan, calibration)
        return plan
    validation = record_set(config.model, config.validation)
    method, errors, sensitivity = run_sensitivity(config, calibration,
                                                  truncated(validation, config.sensitivity_frames), runner)
    thresholds = calibration.thresholds[method]
    (work / SENSITIVITY_FILE).write_text(json.dumps([s.to_dict() for s in sensitivity], indent=1))
    start = read_plan(plan_path).node_names() if refine else None
    chosen, steps, fp32, reference = search_plan(
        config.model, thresholds, sensitivity, validation, config.search_budget_nds, config.op_types, config.threads,
        max_float_nodes=config.max_float_nodes, start=start,
        reference_score_threshold=config.reference_score_threshold, runner=runner,
        mode_budget_scale=config.mode_budget_scale, fixed=[f.node for f in fixed])
    (work / SEARCH_FILE).write_text(json.dumps({"method_errors": errors, "method": method, "reference": reference,
                                                "fp32": fp32, "steps": [s.__dict__ for s in steps]}, indent=1))
    final = next(s for s in reversed(steps) if sorted(s.float_nodes) == sorted(chosen))
    plan = PrecisionPlan(
        model=config.model.name, model_sha256=sha256(config.model), method=method,
        percentile=config.percentile, op_types=list(config.op_types), budget_nds=config.search_budget_nds,
        mode_budget_scale=dict(config.mode_budget_scale),
        float_nodes=float_reasons(chosen, sensitivity, steps, reference, fixed),
        measured={**_measured(config, fp32, final.nds, steps[0].nds, reference),
                  "all_int8_output_error_per_method": {m: round(e, 4) for m, e in errors.items()}})
    write_plan(plan, config.plan)
    write_models(config, plan, calibration)
    return plan


def write_models(config: QuantConfig, plan: PrecisionPlan, calibration: Calibration) -> None:
    """The plan's Q/DQ model in the TensorRT flavour, and in the CPU flavour when configured."""
    thresholds = calibration.thresholds[plan.method]
    apply_plan(plan, config.model, thresholds, config.output)
    if config.cpu_output is not None:
        apply_plan(plan, config.model, thresholds, config.cpu_output, CPU, calibration.observed)


def _measured(config: QuantConfig, fp32: dict, plan_nds: dict, first: dict, reference: str) -> dict[str, Any]:
    """What the plan achieved on the validation set, NDS per condition against ``reference`` (plan file)."""
    def rounded(table: dict) -> dict[str, float]:
        return {c: round(v["NDS"], 4) for c, v in table.items()}

    start = "nds_float_modules_only" if config.float_modules else "nds_all_int8"  # the search's first trial
    return {"validation_set": config.validation.describe(), "reference": reference,
            "nds_fp32": rounded(fp32), "nds_plan": rounded(plan_nds), start: rounded(first)}


def load_sensitivity(work_dir: Path) -> list[NodeSensitivity]:
    rows = json.loads((work_dir / SENSITIVITY_FILE).read_text())
    return [NodeSensitivity(r["node"], r["op_type"], r["only_int8_error"], r["all_but_this_error"],
                            r["all_int8_error"]) for r in rows]
