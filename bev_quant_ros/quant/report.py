"""`bev-quant quant-report`: Markdown + PNG evidence for the shipped INT8 model.

Reads what `bev-quant calibrate` left in the work dir (per-condition statistics,
thresholds, sensitivity, plan search) and measures what only makes sense for the
final model: per-condition NDS on held-out sets (seeds >= 100000; a config of drives: its
validation drives) against ground truth or, without it, the FP32 detections (`assess.reference_for`),
and recurrent drift over a long sequence, with the state path float vs int8. With validation
``modes`` beyond ``fused`` every per-condition table has a row per condition and mode
(`calib_data.group_key`), and the image-path ranges show each group against the clip points.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bev_quant_ros.drives.synth import SynthSpec  # noqa: E402
from bev_quant_ros.errors import ConfigError  # noqa: E402
from bev_quant_ros.quant import assess  # noqa: E402
from bev_quant_ros.quant.calib_data import (  # noqa: E402
    FUSED,
    RecordedSequence,
    SequenceSetSpec,
    merge_conditions,
    record_drive,
    record_sequence,
    record_set,
)
from bev_quant_ros.quant.calibrate import (  # noqa: E402
    SEARCH_FILE,
    STATS_FILE,
    THRESHOLDS_FILE,
    load_sensitivity,
    truncated,
)
from bev_quant_ros.quant.config import QuantConfig  # noqa: E402
from bev_quant_ros.quant.drift import DriftCurve, drift_curve, state_path_nodes  # noqa: E402
from bev_quant_ros.quant.outliers import (  # noqa: E402
    clip_points,
    condition_shift,
    image_path_ranges,
    image_path_tensors,
    range_table,
)
from bev_quant_ros.quant.plan import read_plan, sha256  # noqa: E402
from bev_quant_ros.quant.qdq import load_checked, write_qdq  # noqa: E402
from bev_quant_ros.quant.sensitivity import NodeSensitivity, candidate_nodes  # noqa: E402

HELD_OUT_SEED = 100_000
DRIFT_SEED = 100_500
MODE_NOTE = ("Rows `<condition>/camera_only`: the same drives with every lidar sweep withheld (a lidar fault, "
             "the pipeline runs camera-only); `<condition>` alone: fused.", "")


def _short(name: str) -> str:
    return name.replace("/detector/", "").replace("_output_0", "")


def _save(fig: Any, path: Path) -> Path:
    """Write a report figure (small PNG: the report is committed) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def plot_histograms(stats: Mapping, thresholds: Mapping[str, Mapping[str, float]], tensors: Sequence[str],
                    path: Path) -> Path:
    """|x| histograms (log counts) with each method's clip point."""
    merged = merge_conditions(stats)
    fig, axes = plt.subplots(len(tensors), 1, figsize=(8, 2.4 * len(tensors)), squeeze=False)
    for ax, tensor in zip(axes[:, 0], tensors):
        s = merged[tensor]
        used = max(int((s.hist > 0).nonzero()[0].max()) + 1, 2)
        edges = s.bin_edges[: used + 1]
        ax.stairs(s.hist[:used] + 1, edges, fill=True, alpha=0.5)
        ax.set_yscale("log")
        for (method, clip), color in zip(clip_points(thresholds, tensor).items(), ("k", "r", "g", "b")):
            ax.axvline(clip, color=color, linestyle="--", label=f"{method} {clip:.3g}")
        ax.set_title(_short(tensor), fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("|x|")
    return _save(fig, path)


def plot_sensitivity(rows: Sequence[NodeSensitivity], path: Path, top: int = 20) -> Path:
    rows = list(rows)[:top]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r.only_int8_error for r in rows], 0.4, label="only this node int8")
    ax.barh([i - 0.2 for i in y], [r.float_gain for r in rows], 0.4, label="error removed by keeping it float")
    ax.set_yticks(list(y), [_short(r.node) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("head output error vs FP32 (relative L2)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_drift(curves: Mapping[str, DriftCurve], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for label, curve in curves.items():
        axes[0].plot(range(1, len(curve.cosine) + 1), curve.cosine, label=label)
        axes[1].plot(range(1, len(curve.detection_f1) + 1), curve.detection_f1, label=label)
    axes[0].set_ylabel("bev_state cosine INT8 vs FP32")
    axes[1].set_ylabel("detection agreement F1")
    for ax in axes:
        ax.set_xlabel("frame")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _load(work: Path) -> tuple[Any, dict, list[NodeSensitivity], dict]:
    needed = [work / f for f in (STATS_FILE, THRESHOLDS_FILE, SEARCH_FILE)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ConfigError(f"missing {missing}: run `bev-quant calibrate --config ...` first")
    return (pickle.loads((work / STATS_FILE).read_bytes()), json.loads((work / THRESHOLDS_FILE).read_text()),
            load_sensitivity(work), json.loads((work / SEARCH_FILE).read_text()))


MAX_HELD_OUT_DRIVES = DRIFT_SEED - HELD_OUT_SEED  # drive seeds stay below the drift drive's


def held_out_seed(condition_index: int, drive: int) -> int:
    """The seed of held-out drive ``drive`` of the ``condition_index``-th condition."""
    return HELD_OUT_SEED + 1000 * condition_index + drive


def held_out_sequences(model: Path, conditions: Sequence[str], frames: int,
                       modes: Sequence[str] = (FUSED,), drives: int = 1) -> list[RecordedSequence]:
    """``drives`` held-out simulated drives per condition (seeds >= 100000; the first is the one a
    single-drive set has), each recorded in every one of ``modes``; a condition's drives pool into
    its group. One 60-frame drive decides a group's NDS by a few detections: more drives, less noise."""
    if not 1 <= drives <= MAX_HELD_OUT_DRIVES:
        raise ConfigError(f"held-out drives per condition must be 1..{MAX_HELD_OUT_DRIVES}, got {drives}")
    return [record_sequence(model, SynthSpec(c, held_out_seed(i, k), frames), mode)
            for i, c in enumerate(conditions) for k in range(drives) for mode in modes]


def report_sets(config: QuantConfig, eval_frames: int, drift_frames: int, eval_drives: int = 1
                ) -> tuple[list[RecordedSequence], str, RecordedSequence]:
    """(sequences to score, what they are, the drift sequence). A simulated config: held-out seeds
    (>= 100000) per validation condition and mode, and a long fused day drive; a config of drives: its
    validation windows (the plan search's own set, not held out, and the title says so) and its first drive."""
    if isinstance(config.validation, SequenceSetSpec):
        held_out = held_out_sequences(config.model, config.validation.conditions, eval_frames,
                                      config.validation.modes, eval_drives)
        drift = record_sequence(config.model, SynthSpec("day", DRIFT_SEED, drift_frames))
        title = f"held-out sets ({eval_drives} drive(s) of {eval_frames} frames per condition, seeds ≥ {HELD_OUT_SEED})"
        return held_out, title, drift
    condition, first = config.validation.drives()[0]
    [drift] = truncated(record_drive(config.model, first, condition), drift_frames)
    return record_set(config.model, config.validation), "the validation drives (not held out)", drift


def image_path_lines(ranges: Mapping[str, Mapping[str, Mapping[str, float]]], label: str) -> list[str]:
    """Markdown table of `outliers.image_path_ranges`: per tensor, each group's p99.99 |x| and its share
    of the ``label`` calibration's clip point."""
    if not ranges:
        return []
    groups = list(next(iter(ranges.values())))
    lines = ["", f"### Image-path ranges per condition (p99.99 |x| and its share of the {label} clip point)", "",
             "Few levels for a condition (a share far below 1) is how low-light activations collapse to zero "
             "under ranges from brighter data.", "",
             "| tensor | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for tensor, per_group in ranges.items():
        lines.append(f"| `{_short(tensor)}` | " + " | ".join(
            f"{row['p99_99']:.3g} ({row[f'p99_99_over_clip_{label}']:.2f})" for row in per_group.values()) + " |")
    return lines


def drift_curves(config: QuantConfig, thresholds: Mapping[str, float], float_nodes: Sequence[str],
                 sequence: RecordedSequence) -> dict[str, DriftCurve]:
    """Plan as shipped, plan with the state path forced int8, plan with the state path float."""
    loop = state_path_nodes(load_checked(config.model), [n for n, _ in candidate_nodes(config.model,
                                                                                       config.op_types)])
    variants = {"plan": list(float_nodes),
                "plan, state path int8": [n for n in float_nodes if n not in loop],
                "plan + state path float": sorted(set(float_nodes) | set(loop))}
    curves = {}
    with tempfile.TemporaryDirectory(prefix="bev_quant_drift.") as tmp:
        for label, nodes in variants.items():
            path = write_qdq(config.model, Path(tmp) / "variant.onnx", thresholds, nodes, config.op_types)
            curves[label] = drift_curve(config.model, path, sequence, config.reference_score_threshold,
                                        config.threads)
    return curves


def write_report(config: QuantConfig, out_dir: Path, drift_frames: int = 300, eval_frames: int = 40,
                 eval_drives: int = 1) -> Path:
    """Write `README.md` and PNGs into `out_dir`; returns the Markdown path."""
    stats, thresholds, sensitivity, search = _load(config.work_dir)
    plan = read_plan(config.plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = range_table(stats)
    overall = [r for r in rows if r.condition == "all"]
    worst = sorted(overall, key=lambda r: r.max_to_p9999, reverse=True)
    seen: set[tuple[float, float, float]] = set()
    distinct = []  # a Transpose repeats its input's values: plot each distribution once
    for r in worst:
        if (r.minimum, r.maximum, r.p99_99) not in seen:
            seen.add((r.minimum, r.maximum, r.p99_99))
            distinct.append(r.tensor)
    plot_histograms(stats, thresholds, distinct[:4], out_dir / "range_histograms.png")
    plot_sensitivity(sensitivity, out_dir / "sensitivity.png")
    held_out, held_out_title, drift_sequence = report_sets(config, eval_frames, drift_frames, eval_drives)
    curves = drift_curves(config, thresholds[plan.method], plan.node_names(), drift_sequence)
    plot_drift(curves, out_dir / "drift.png")
    models = {"FP32": config.model, "INT8 plan, TensorRT flavour": config.output}
    if config.cpu_output is not None:
        models["INT8 plan, CPU flavour"] = config.cpu_output
    runs = {label: assess.run_model(path, held_out, config.threads) for label, path in models.items()}
    reference = assess.reference_for(held_out, runs["FP32"], config.reference_score_threshold)
    nds = {label: assess.nds_by_condition(run, reference) for label, run in runs.items()}
    shift = condition_shift(stats)
    lines = [f"# Quantization report: `{config.model.name}` → `{config.output.name}`", "",
             f"FP32 model sha256 `{sha256(config.model)[:16]}…`; plan searched on sha256 "
             f"`{plan.model_sha256[:16]}…`.", "",
             f"Calibration: {plan.method} on {config.calibration}; plan budget {plan.budget_nds * 100:.2f} NDS points "
             f"per condition. Regenerate: `bev-quant calibrate --config <config>` then "
             f"`bev-quant quant-report --config <config>`.", "",
             f"## Per-condition NDS on {held_out_title}, against {reference.label}", "",
             *(MODE_NOTE if any(s.mode != FUSED for s in held_out) else ()),
             "| condition | " + " | ".join(nds) + " | "
             + " | ".join(f"Δ NDS points, {k.removeprefix('INT8 plan, ')}" for k in list(nds)[1:]) + " |",
             "|---|" + "---|" * (2 * len(nds) - 1)]
    for condition in nds["FP32"]:
        values = [nds[k][condition]["NDS"] for k in nds]
        lines.append(f"| {condition} | " + " | ".join(f"{v:.4f}" for v in values) + " | "
                     + " | ".join(f"{(v - values[0]) * 100:+.2f}" for v in values[1:]) + " |")
    lines += ["", f"## Float nodes of the plan ({len(plan.float_nodes)})", ""]
    lines += [f"- `{f.node}` ({f.op_type}): {f.reason}" for f in plan.float_nodes] or ["- none"]
    lines += ["", "## Ranges and outliers", "",
              "Outlier-dominated: max |x| > 4 × p99.99 or kurtosis > 50. `levels` = int8 levels the p99.99 "
              "range gets under a minmax scale (127 = all).", "",
              "| tensor | min | max | p99.9 | p99.99 | kurtosis | max/p99.99 | levels | flagged | "
              "p99.99 spread across conditions |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in worst[:15]:
        lines.append(f"| `{_short(r.tensor)}` | {r.minimum:.3g} | {r.maximum:.3g} | {r.p99_9:.3g} | {r.p99_99:.3g} "
                     f"| {r.kurtosis:.3g} | {r.max_to_p9999:.2f} | {r.bulk_levels_minmax:.0f} | "
                     f"{'yes' if r.outlier_dominated else ''} | {shift[r.tensor]:.2f}× |")
    image_path = image_path_ranges(stats, image_path_tensors(load_checked(config.model), [r.tensor for r in overall]),
                                   {plan.method: thresholds[plan.method]})
    lines += image_path_lines(image_path, plan.method)
    lines += ["", "![range histograms with clip points](range_histograms.png)", "",
              "## Sensitivity (output error vs FP32, calibration-held-out frames)", "",
              "![sensitivity](sensitivity.png)", "", "| node | op | only int8 | all but this | float gain |",
              "|---|---|---|---|---|"]
    lines += [f"| `{_short(s.node)}` | {s.op_type} | {s.only_int8_error:.4f} | {s.all_but_this_error:.4f} | "
              f"{s.float_gain:+.4f} |" for s in sensitivity[:15]]
    lines += ["", f"## Recurrent drift over {len(drift_sequence)} frames ({drift_sequence.name})", "",
              f"Detection agreement: INT8 detections matched to FP32 detections >= "
              f"{config.reference_score_threshold:g} (F1).", "",
              "![drift](drift.png)", "", "| variant | cosine @1 | cosine @last | rel. error @last | det. F1 @last |",
              "|---|---|---|---|---|"]
    for label, curve in curves.items():
        last = curve.at(drift_frames)
        lines.append(f"| {label} | {curve.cosine[0]:.4f} | {last['cosine']:.4f} | {last['relative_error']:.4f} | "
                     f"{last['detection_f1']:.3f} |")
    lines += ["", "## Plan search log", "", "All-INT8 (the config's float_modules float in every row), the greedy "
              "additions in sensitivity order (none when an existing plan was refined), then the prune trials "
              "(each set measured once); NDS against "
              f"{search.get('reference', 'ground truth')}.", "",
              "| float nodes | worst per-condition NDS drop (points) | worst group | all-condition NDS |",
              "|---|---|---|---|"]
    lines += [f"| {len(step['float_nodes'])}"
              + (f" (`{_short(step['float_nodes'][0])}`)" if len(step["float_nodes"]) == 1 else "")
              + f" | {step['worst_drop'] * 100:.2f} | {step.get('worst_group', '?')} "
              f"| {step['nds']['all']['NDS']:.4f} |" for step in search["steps"]]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "report.json").write_text(json.dumps({
        "reference": reference.label, "nds": nds, "drift": {k: v.at(drift_frames) for k, v in curves.items()},
        "ranges": [r.to_dict() for r in overall], "image_path_ranges": image_path}, indent=1))
    return path
