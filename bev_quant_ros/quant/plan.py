"""Mixed-precision plan: the smallest float-node set keeping INT8 NDS within a budget of FP32.

Search (greedy, measured): start all-INT8; while some group's NDS drop exceeds
the budget (a group: a validation condition, per sensor mode when the set records camera-only
windows too, `calib_data.group_key`), keep the next most sensitive node (sensitivity order) float; then try
to return each kept node to INT8 and keep it INT8 when the budget still holds or, while the budget is
missed, when the worst group loses no more than with the node float (a node that buys no accuracy
costs only speed).
(Ranking by the NDS gain of each node alone float was tried: those gains are within
the noise of the validation set, and the search it led reached a worse plan.)
Refining an existing plan (``start``: after a calibration change, such as exact input
ranges) skips the greedy phase and runs the prune pass on its float nodes.
Whole modules can be kept float before the search starts (``fixed``, the quant config's
``float_modules``): the greedy search adds one node at a time and ranks nodes by their own
output error, so it cannot find a module whose nodes buy accuracy only together (v3's detection
heads: no head node alone brought the validation set's worst fused day below 2.8 points; all of
them float took held-out fused night -0.85 -> -0.24).
The result is a human-readable YAML (`models/<name>.precision.yaml`) with the reason
for every float node; `apply_plan` rebuilds the same Q/DQ model from it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from bev_quant_ros.errors import CalibrationError, PrecisionPlanError
from bev_quant_ros.fleet.runners import Runner, run_tasks
from bev_quant_ros.quant import assess
from bev_quant_ros.quant.calib_data import RecordedSequence, mode_of
from bev_quant_ros.quant.qdq import (
    DEFAULT_OP_TYPES,
    TENSORRT,
    ObservedRanges,
    QdqFlavour,
    check_nodes_exist,
    load_checked,
    write_qdq,
)
from bev_quant_ros.quant.sensitivity import NodeSensitivity

LOG = logging.getLogger(__name__)
PLAN_VERSION = 1


@dataclass
class FloatNode:
    node: str
    op_type: str
    reason: str


@dataclass
class PrecisionPlan:
    """Which nodes stay float and why; the calibration that goes with it."""

    model: str
    model_sha256: str
    method: str
    percentile: float
    op_types: list[str]
    budget_nds: float
    float_nodes: list[FloatNode] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)
    mode_budget_scale: dict[str, float] = field(default_factory=dict)  # mode -> factor on budget_nds

    def node_names(self) -> list[str]:
        return [f.node for f in self.float_nodes]

    def to_dict(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "model": self.model, "model_sha256": self.model_sha256,
                "calibration": {"method": self.method, "percentile": self.percentile},
                "op_types": list(self.op_types), "budget_nds": self.budget_nds,
                **({"mode_budget_scale": dict(self.mode_budget_scale)} if self.mode_budget_scale else {}),
                "float_nodes": [{"node": f.node, "op_type": f.op_type, "reason": f.reason} for f in self.float_nodes],
                "measured": self.measured}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mode_budget_scale_from(raw: Mapping[str, Any] | None) -> dict[str, float]:
    """The ``mode_budget_scale`` mapping as a config or plan file states it (absent: every factor 1)."""
    return {str(mode): float(factor) for mode, factor in (raw or {}).items()}


def write_plan(plan: PrecisionPlan, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Precision plan (bev-quant calibrate): nodes kept float in the INT8 Q/DQ model and why.\n"
              "# Everything else of op_types is int8 (symmetric, per-channel weights, float bias).\n"
              + ("# NDS drops quoted: each group's loss divided by its mode's mode_budget_scale.\n"
                 if plan.mode_budget_scale else ""))
    path.write_text(header + yaml.safe_dump(plan.to_dict(), sort_keys=False, width=110))
    return path


def read_plan(path: str | Path) -> PrecisionPlan:
    """Load a plan; malformed content is a PrecisionPlanError naming the file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
        calibration = doc["calibration"]
        return PrecisionPlan(
            model=str(doc["model"]), model_sha256=str(doc.get("model_sha256", "")),
            method=str(calibration["method"]), percentile=float(calibration.get("percentile", 99.99)),
            op_types=[str(o) for o in doc.get("op_types", DEFAULT_OP_TYPES)], budget_nds=float(doc["budget_nds"]),
            float_nodes=[FloatNode(str(f["node"]), str(f.get("op_type", "")), str(f.get("reason", "")))
                         for f in doc.get("float_nodes") or []],
            measured=doc.get("measured") or {},
            mode_budget_scale=mode_budget_scale_from(doc.get("mode_budget_scale")))
    except OSError as exc:
        raise PrecisionPlanError(f"cannot read precision plan {path}: {exc}") from exc
    except (TypeError, KeyError, ValueError, yaml.YAMLError) as exc:
        raise PrecisionPlanError(f"precision plan {path} is malformed: {exc!r}") from exc


def apply_plan(plan: PrecisionPlan, model_path: str | Path, thresholds: Mapping[str, float],
               out_path: str | Path, flavour: QdqFlavour = TENSORRT, observed: ObservedRanges | None = None) -> Path:
    """The Q/DQ model of `plan`; unknown node names are a PrecisionPlanError before anything is written."""
    check_nodes_exist(load_checked(model_path), plan.node_names(), f"precision plan for {Path(model_path).name}")
    return write_qdq(model_path, out_path, thresholds, plan.node_names(), plan.op_types, flavour, observed)


def module_float_nodes(model_path: str | Path, modules: Sequence[str], op_types: Sequence[str]) -> list[FloatNode]:
    """The quantizable nodes (``op_types``) of each module, a node-name prefix such as ``/detector/box_head``,
    in graph order, each with its module as reason; a module matching no such node is a PrecisionPlanError
    (a typo must not silently mean int8)."""
    nodes = [n for n in load_checked(model_path).graph.node if n.op_type in op_types]
    chosen: dict[str, FloatNode] = {}
    for module in modules:
        prefix = module.rstrip("/")
        found = [n for n in nodes if n.name == prefix or n.name.startswith(prefix + "/")]
        if not found:
            example = nodes[0].name if nodes else None
            raise PrecisionPlanError(f"float module '{module}' matches no {list(op_types)} node of "
                                     f"{Path(model_path).name} (node names look like {example!r})")
        for n in found:
            chosen.setdefault(n.name, FloatNode(n.name, n.op_type, f"in float module {prefix} (quant config "
                                                                   "float_modules): float in every search trial"))
    return list(chosen.values())


def worst_group(fp32: Mapping[str, Mapping[str, float]], int8: Mapping[str, Mapping[str, float]],
                mode_budget_scale: Mapping[str, float] | None = None) -> tuple[str, float]:
    """(group, NDS loss FP32 - INT8) of the group losing most, over the groups (not the pooled 'all').

    With ``mode_budget_scale`` each group's loss is divided by its mode's scale (default 1) first: a mode
    whose goal is a larger loss (camera-only: 1.0 point vs fused 0.5) is judged against its own goal, so
    the loss is in units of the fused budget."""
    scale = mode_budget_scale or {}
    return max(((g, (fp32[g]["NDS"] - int8[g]["NDS"]) / scale.get(mode_of(g), 1.0)) for g in fp32 if g != "all"),
               key=lambda item: item[1])


@dataclass
class SearchStep:
    float_nodes: list[str]
    worst_drop: float  # the worst group's loss, divided by its mode's budget scale (`worst_group`)
    nds: dict[str, dict[str, float]]
    worst_group: str  # the group (condition[/mode]) that lost worst_drop


MAX_FLOAT_NODES = 16  # default cap of the greedy phase: each float node costs int8 speed


def search_plan(model_path: str | Path, thresholds: Mapping[str, float], sensitivity: Sequence[NodeSensitivity],
                validation: Sequence[RecordedSequence], budget_nds: float = 0.005,
                op_types: Sequence[str] = DEFAULT_OP_TYPES, threads: int = 1,
                max_float_nodes: int = MAX_FLOAT_NODES, start: Sequence[str] | None = None,
                reference_score_threshold: float = assess.REFERENCE_SCORE_THRESHOLD, runner: Runner | None = None,
                mode_budget_scale: Mapping[str, float] | None = None, fixed: Sequence[str] = ()
                ) -> tuple[list[str], list[SearchStep], dict[str, dict[str, float]], str]:
    """Greedy search, or with ``start`` the prune pass over those float nodes (module docstring);
    returns (float nodes, every set measured once, FP32 NDS, the reference's label).

    The greedy steps depend on each other and run in order. With ``runner`` the prune pass's
    trials run as parallel tasks first (``speculative_prune_trials``); the pass then takes each
    from there while its set is the one measured, so the result equals one process's.

    NDS is scored against `assess.reference_for`: ground truth, or without it the FP32 model's
    detections >= ``reference_score_threshold`` (FP32 then scores 1, and the drop is INT8's departure).
    ``mode_budget_scale`` (mode -> factor) allows a mode's groups that factor times the budget.
    ``fixed`` nodes are float in every trial and never pruned; the returned nodes start with them."""
    if start is not None:
        check_nodes_exist(load_checked(model_path), start, "plan to refine")
    fp32_run = assess.run_model(model_path, validation, threads)
    reference = assess.reference_for(validation, fp32_run, reference_score_threshold)
    fp32 = assess.nds_by_condition(fp32_run, reference)
    LOG.info("plan search: NDS against %s", reference.label)
    measured: dict[frozenset[str], SearchStep] = {}
    precomputed: dict[frozenset[str], dict[str, dict[str, float]]] = {}
    task_args = (str(model_path), dict(thresholds), list(validation), reference, list(op_types), threads)

    fixed = list(dict.fromkeys(fixed))

    def measure(searched: list[str]) -> SearchStep:
        float_nodes = [*fixed, *searched]
        key = frozenset(float_nodes)
        if key not in measured:
            nds = precomputed.pop(key) if key in precomputed else variant_nds(*task_args, [float_nodes])[0]
            group, drop = worst_group(fp32, nds, mode_budget_scale)
            measured[key] = SearchStep(float_nodes, drop, nds, group)
            LOG.info("plan: %d float node(s), worst NDS drop %.4f (%s)", len(float_nodes), drop, group)
        return measured[key]

    chosen: list[str] = []
    current = measure(chosen)
    if start is None:
        for node in [s.node for s in sensitivity if s.damage > 0 and s.node not in fixed][:max_float_nodes]:
            if current.worst_drop <= budget_nds:
                break
            chosen.append(node)
            current = measure(chosen)
    else:  # most sensitive first, so the prune below tries the least sensitive first
        rank = {s.node: index for index, s in enumerate(sensitivity)}
        chosen = sorted((n for n in start if n not in fixed), key=lambda node: rank.get(node, -1))
        current = measure(chosen)
    if runner is not None:
        precomputed.update(speculative_prune_trials(runner, task_args, chosen, fixed))
    chosen = prune_pass(chosen, current.worst_drop, lambda nodes: measure(nodes).worst_drop, budget_nds)
    return [*fixed, *chosen], list(measured.values()), fp32, reference.label


def prune_pass(chosen: Sequence[str], drop: float, measure_drop: Callable[[list[str]], float],
               budget_nds: float) -> list[str]:
    """Try to return each float node to INT8, least sensitive (last) first: a removal is taken when
    the worst drop stays within the budget, or, while the budget is missed, is no worse than now."""
    chosen = list(chosen)
    for node in list(reversed(chosen)):
        trial = [n for n in chosen if n != node]
        trial_drop = measure_drop(trial)
        if trial_drop <= max(budget_nds, drop):
            chosen, drop = trial, trial_drop
    return chosen


def variant_nds(model_path: str, thresholds: Mapping[str, float], validation: Sequence[RecordedSequence],
                reference: Any, op_types: Sequence[str], threads: int,
                float_node_sets: Sequence[Sequence[str]]) -> list[dict[str, dict[str, float]]]:
    """NDS per group of the Q/DQ variant keeping each set of nodes float (a search trial; a task)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bev_quant_plan.") as tmp:
        for float_nodes in float_node_sets:
            path = write_qdq(model_path, Path(tmp) / "candidate.onnx", thresholds, float_nodes, op_types)
            results.append(assess.nds_by_condition(assess.run_model(path, validation, threads), reference))
    return results


def speculative_prune_trials(runner: Runner, task_args: tuple, chosen: Sequence[str], fixed: Sequence[str] = ()
                             ) -> dict[frozenset[str], dict[str, dict[str, float]]]:
    """The prune pass's trials as long as no removal succeeds (the plan minus each node, ``fixed`` float
    in each), as parallel tasks. A trial after a successful removal has another set and is measured then."""
    sets = [[*fixed, *(n for n in chosen if n != node)] for node in reversed(chosen)]
    results = run_tasks(runner, variant_nds, [f"without {node}" for node in reversed(chosen)],
                        [(*task_args, [s]) for s in sets], desc="prune trials", fail_fast=True)
    failed = [r for r in results if not r.ok]
    if failed:
        raise CalibrationError(f"plan prune trial '{failed[0].name}' failed: {failed[0].error}")
    return {frozenset(s): r.value[0] for s, r in zip(sets, results)}


def _step_without(node: str, chosen: Sequence[str], steps: Sequence[SearchStep]) -> SearchStep | None:
    """The measured set closest to the plan minus ``node``: exactly that set, else the smallest
    measured superset of it without ``node`` (its prune trial, when later trials pruned others)."""
    rest = set(chosen) - {node}
    candidates = [st for st in steps if node not in st.float_nodes and rest <= set(st.float_nodes)]
    return min(reversed(candidates), key=lambda st: len(st.float_nodes), default=None)


def float_reasons(chosen: Sequence[str], sensitivity: Sequence[NodeSensitivity],
                  steps: Sequence[SearchStep], reference_label: str,
                  fixed: Sequence[FloatNode] = ()) -> list[FloatNode]:
    """One line per float node: its measured sensitivity and what returning it to int8 cost
    (NDS against ``reference_label``, which the line names).

    When the exact plan-minus-node set was never measured (a later prune trial removed
    another node), its superset trial is quoted with how many more nodes were float in it:
    evidence, not proof, since NDS is not monotone in the float set.
    ``fixed`` (`module_float_nodes`) were never searched: their line names their module."""
    by_name = {s.node: s for s in sensitivity}
    by_set = {frozenset(st.float_nodes): st for st in steps}
    final = by_set.get(frozenset(chosen))
    given = {f.node: f for f in fixed}
    result = []
    for node in chosen:
        if node in given:
            result.append(given[node])
            continue
        s = by_name[node]
        without = _step_without(node, chosen, steps)
        cost = ""
        if without is not None:
            extra = len(without.float_nodes) - (len(chosen) - 1)
            cost = (f"; returning it to int8 gives worst-condition NDS drop {without.worst_drop * 100:.2f} points"
                     + (f" (measured with {extra} more node(s) float)" if extra else ""))
        kept = f" (plan: {final.worst_drop * 100:.2f})" if final is not None else ""
        kept += f"; NDS vs {reference_label}"
        result.append(FloatNode(node, s.op_type,
                                f"output error vs FP32 all-INT8 {s.all_int8_error:.4f} -> {s.all_but_this_error:.4f} "
                                f"with it float; alone in int8 {s.only_int8_error:.4f}{cost}{kept}"))
    return result
