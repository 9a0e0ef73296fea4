"""Quantization benchmark: every INT8 variant side by side with FP32, in one run, on held-out data.

Rows (same FP32 model, same calibration set, same held-out frames, seeds >= 100000):
FP32; ONNX Runtime `quantize_static` defaults (MinMax, QDQ, all op types); all-INT8 with
each of our calibration methods; our precision plan in the TensorRT flavour (symmetric
int8) and in the CPU flavour (u8 activations; quant/qdq.py). Each row per condition, and
with ``--modes fused camera_only`` per condition and sensor mode (the same held-out drives
with the lidar withheld: "night/camera_only"). Scenario shift: day-only vs balanced
calibration (plan applied to both) on every held-out group of day, night and fog, and why:
per-condition ranges of the image-path tensors (`outliers.IMAGE_PATH_NODES`: each image
encoder stage's ReLU, the encoder's output conv = the lift input, the camera BEV ReLU) of the
balanced calibration data against each calibration's clip point. Plus INT8 vs FP32 engine
latency of both flavours (median of alternated runs in one process); bev_state drift at frame 300.

    PYTHONPATH=. python benchmarks/bench_quant.py --config config/quant_bev_tiny.yaml \
        --modes fused camera_only --out benchmarks/results/quant.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bev_quant_ros.drives.synth import SynthSpec  # noqa: E402
from bev_quant_ros.engine.factory import create_engine  # noqa: E402
from bev_quant_ros.quant import assess  # noqa: E402
from bev_quant_ros.quant.calib_data import FUSED, MODES, record_sequence, record_set  # noqa: E402
from bev_quant_ros.quant.calibrate import Calibration, calibrate_ranges  # noqa: E402
from bev_quant_ros.quant.config import QuantConfig, load_quant_config  # noqa: E402
from bev_quant_ros.quant.drift import drift_curve  # noqa: E402
from bev_quant_ros.quant.outliers import IMAGE_PATH_NODES, image_path_ranges, image_path_tensors  # noqa: E402
from bev_quant_ros.quant.plan import read_plan, sha256  # noqa: E402
from bev_quant_ros.quant.qdq import CPU, load_checked, tensorrt_style, write_ort_default, write_qdq  # noqa: E402
from bev_quant_ros.quant.ranges import METHODS  # noqa: E402
from bev_quant_ros.quant.report import DRIFT_SEED, HELD_OUT_SEED, held_out_sequences  # noqa: E402

SHIFT_CONDITIONS = ("day", "night", "fog")  # the scenario-shift comparison: day is the control


def latency(models: dict[str, Path], feeds: list[dict], threads: int, rounds: int) -> dict[str, float]:
    """Median engine.infer time of each model (first = reference) and each one's ratio to the first,
    runs alternated so load changes hit all alike, in an order rotated every round. After each
    switch one untimed run refills the caches: the first run after another model was 6-9 %
    slower (a node runs one model, so that cost is the benchmark's, not the model's), and which
    model paid it depended on the order."""
    engines = {name: create_engine(path, backend="onnxruntime", intra_op_num_threads=threads)
               for name, path in models.items()}
    for engine in engines.values():
        engine.warmup(3)
    times: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for index in range(rounds):
        feed = feeds[index % len(feeds)]
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:  # each model in each position equally often
            engines[name].infer(feed)
            start = time.perf_counter()
            engines[name].infer(feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    reference = next(iter(medians))
    return {**{f"{name}_ms": ms for name, ms in medians.items()},
            **{f"{name}_ratio": ms / medians[reference] for name, ms in medians.items() if name != reference}}


def float_only_share(model: Path, feeds: list[dict], op_types: tuple[str, ...], runs: int = 8) -> dict:
    """ORT profile of the FP32 model: time share of ops int8 cannot speed up (no int8 kernel or not
    in op_types, e.g. GridSample). Even infinitely fast int8 kernels leave this share: a floor on the ratio."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench_quant_profile_") as profile_dir:  # never in the cwd
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "fp32")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        try:
            state_shape = next(i.shape for i in session.get_inputs() if i.name == "prev_bev")
            feed = {**feeds[0], "prev_bev": np.zeros(state_shape, np.float32), "prev_valid": np.ones(1, np.float32)}
            for _ in range(runs):
                session.run(None, feed)
        finally:
            profile = Path(session.end_profiling())
        events = [e for e in json.loads(profile.read_text())
                  if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    by_op: dict[str, float] = {}
    for event in events:
        by_op[event["args"]["op_name"]] = by_op.get(event["args"]["op_name"], 0.0) + event["dur"] / runs / 1e3
    total = sum(by_op.values())
    fixed = sum(ms for op, ms in by_op.items() if op not in op_types)
    return {"fp32_kernel_ms": round(total, 2), "float_only_ms": round(fixed, 2),
            "float_only_share": round(fixed / total, 3),
            "float_only_ops_ms": {op: round(ms, 2) for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])
                                  if op not in op_types and ms > 0.2}}


def day_only_calibration(config: QuantConfig) -> Calibration:
    """Ranges from day frames alone: as many windows (in the same modes) as the balanced set has in all."""
    total = len(config.calibration.conditions) * config.calibration.sequences_per_condition
    spec = dataclasses.replace(config.calibration, conditions=("day",), sequences_per_condition=total)
    return calibrate_ranges(dataclasses.replace(config, calibration=spec))


def scenario_shift(rows: dict[str, dict], groups: list[str]) -> dict[str, dict[str, float]]:
    """NDS of the plan under both calibrations on ``groups``, and balanced minus day-only in points."""
    balanced, day_only = rows["ours_plan"], rows["ours_plan_day_only_calibration"]
    return {"balanced": {g: round(balanced[g]["NDS"], 4) for g in groups},
            "day_only": {g: round(day_only[g]["NDS"], 4) for g in groups},
            "balanced_minus_day_only_points": {g: round((balanced[g]["NDS"] - day_only[g]["NDS"]) * 100, 2)
                                               for g in groups}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config/quant_bev_tiny.yaml"))
    parser.add_argument("--frames", type=int, default=40, help="held-out frames per drive")
    parser.add_argument("--drives", type=int, default=1, help="held-out drives per condition")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=[FUSED],
                        help="sensor modes of the held-out drives (camera_only: the lidar withheld)")
    parser.add_argument("--drift-frames", type=int, default=300)
    parser.add_argument("--latency-rounds", type=int, default=60, help="a multiple of 3: every order as often")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/quant.json"))
    args = parser.parse_args()
    config = load_quant_config(args.config, root=ROOT)
    plan = read_plan(config.plan)
    conditions = list(config.validation.conditions)
    t0 = time.time()
    calibration_set = record_set(config.model, config.calibration)
    balanced = calibrate_ranges(config, calibration_set)
    day_only = day_only_calibration(config)
    held_out = held_out_sequences(config.model, conditions, args.frames, args.modes, args.drives)
    mode_of = {s.group: s.mode for s in held_out}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_quant.") as tmp:
        models = {"fp32": config.model,
                  "ort_quantize_static_defaults": write_ort_default(config.model, Path(tmp) / "ort.onnx",
                                                                    calibration_set)}
        for method in METHODS:
            models[f"all_int8_{method}"] = write_qdq(config.model, Path(tmp) / f"all_{method}.onnx",
                                                     balanced.thresholds[method], (), config.op_types)
        models["ours_plan"] = write_qdq(config.model, Path(tmp) / "plan.onnx", balanced.thresholds[plan.method],
                                        plan.node_names(), plan.op_types)
        models["ours_plan_cpu"] = write_qdq(config.model, Path(tmp) / "plan_cpu.onnx",
                                            balanced.thresholds[plan.method], plan.node_names(), plan.op_types,
                                            CPU, balanced.observed)
        models["ours_plan_day_only_calibration"] = write_qdq(
            config.model, Path(tmp) / "plan_day.onnx", day_only.thresholds[plan.method], plan.node_names(),
            plan.op_types)
        consumable = {label: tensorrt_style(path)[1] if label != "fp32" else "float"
                      for label, path in models.items()}
        for label, path in models.items():  # fp32 first: the reference where a sequence has no ground truth
            run = assess.run_model(path, held_out, config.threads)
            if label == "fp32":
                reference = assess.reference_for(held_out, run, config.reference_score_threshold)
            rows[label] = assess.nds_by_condition(run, reference)
            print(label, {c: round(v["NDS"], 4) for c, v in rows[label].items()}, flush=True)
        feeds = [f for s in held_out for f in s.feeds[:4]]
        timed = {"fp32": config.model, "int8_tensorrt_flavour": models["ours_plan"],
                 "int8_cpu_flavour": models["ours_plan_cpu"]}
        latency_rows = {f"threads_{n}": latency(timed, feeds, n, args.latency_rounds) for n in (1, 2)}
        latency_rows["fp32_float_only_profile"] = float_only_share(config.model, feeds, tuple(config.op_types))
        drift_sequence = record_sequence(config.model, SynthSpec("day", DRIFT_SEED, args.drift_frames))
        drift = {row: drift_curve(config.model, models[row], drift_sequence, threads=config.threads)
                 for row in ("ours_plan", "ours_plan_cpu")}
    fp32 = rows["fp32"]
    groups = list(mode_of)
    int8_rows = {k: v for k, v in rows.items() if k not in ("fp32", "ours_plan_day_only_calibration")}
    delta = {k: {g: (v[g]["NDS"] - fp32[g]["NDS"]) * 100 for g in fp32} for k, v in int8_rows.items()}
    worst = {k: min(d[g] for g in groups) for k, d in delta.items()}
    worst_per_mode = {k: {m: min(d[g] for g in groups if mode_of[g] == m) for m in args.modes}
                      for k, d in delta.items()}
    image_tensors = image_path_tensors(load_checked(config.model), balanced.observed)
    clips = {"balanced": balanced.thresholds[plan.method], "day_only": day_only.thresholds[plan.method]}
    result = {
        "model": str(config.model.relative_to(ROOT)) if config.model.is_relative_to(ROOT) else str(config.model),
        "model_sha256": sha256(config.model),
        "plan": str(config.plan.name), "float_nodes": plan.node_names(), "method": plan.method,
        "held_out": {"conditions": conditions, "modes": args.modes, "drives_per_condition": args.drives,
                     "frames_per_drive": args.frames, "seed_base": HELD_OUT_SEED},
        "nds": {k: {c: round(v["NDS"], 4) for c, v in r.items()} for k, r in rows.items()},
        "map": {k: {c: round(v["mAP"], 4) for c, v in r.items()} for k, r in rows.items()},
        "nds_delta_points_vs_fp32": {k: {c: round(x, 2) for c, x in d.items()} for k, d in delta.items()},
        "worst_condition_delta_points": {k: round(v, 2) for k, v in worst.items()},
        "worst_delta_points_per_mode": {k: {m: round(x, 2) for m, x in v.items()} for k, v in worst_per_mode.items()},
        "best_int8_row": max(worst, key=worst.get),
        "tensorrt_consumable": consumable,
        "best_tensorrt_consumable_int8_row": max((k for k in worst if consumable[k].startswith("symmetric")),
                                                 key=worst.get),
        "goal_points_per_mode": {m: config.goal_points(m) for m in args.modes},
        "goal_met_every_group": {row: all(x >= -config.goal_points(m) for m, x in worst_per_mode[row].items())
                                 for row in ("ours_plan", "ours_plan_cpu")},
        "scenario_shift": scenario_shift(rows, list(dict.fromkeys(s.group for s in held_out
                                                                  if s.condition in SHIFT_CONDITIONS))),
        "image_path_ranges": {
            "tensors": f"outputs of nodes matching {IMAGE_PATH_NODES.pattern!r}",
            "calibration_data": "the balanced calibration set, per group; clip points of the plan's method",
            "clip_points": {t: {label: round(c[t], 4) for label, c in clips.items()} for t in image_tensors},
            "per_tensor": image_path_ranges(balanced.stats, image_tensors, clips)},
        "latency": latency_rows, "latency_goal_ratio": 0.6,
        "drift": {row: {"frames": args.drift_frames, **curve.at(args.drift_frames),
                        "cosine_min": float(min(curve.cosine)), "goal_cosine": 0.99}
                  for row, curve in drift.items()},
        "machine": platform.processor() or platform.machine(), "elapsed_s": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("worst_condition_delta_points", "worst_delta_points_per_mode",
                                             "best_int8_row", "best_tensorrt_consumable_int8_row", "scenario_shift",
                                             "latency", "drift")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
