"""QAT benchmark: PTQ vs QAT (with and without view-guided distillation), lower bit widths, latency.

Rows on the same held-out drives (seeds >= 100000, ``--drives`` per condition, recorded in every mode of
the quant config's ``validation.modes``) against ground truth, per group (the condition, and for v3 also
"night/camera_only": the same drive with the lidar withheld): FP32; the shipped PTQ INT8 (the quant
config's ``cpu_output`` and ``output``); modelopt all-INT8 PTQ; QAT INT8 without distillation,
image-view only, BEV only, both (VGD: the QAT config's loss weights, distillation only), VGD plus the
detection loss, VGD quantized progressively (image encoder, then fusion/temporal, then the head), VGD with a
quantizer after every int8 conv (so the CPU flavour fuses each into QLinearConv), and all-INT8 VGD (the plan
ignored; also with the conv-output quantizers, 100 and 300 steps), exported to Q/DQ and run by ONNX Runtime
(CPU_FLAVOUR_ROWS also as the CPU flavour); W8A8/W6A6/W4A8/W4A6 PTQ vs QAT+VGD as fake quant in PyTorch
(W4/W6 cannot be exported). Each QAT row fine-tunes the same number of steps from the same calibration
(config/qat_bev_tiny.yaml, v3: config/qat_bev_v3.yaml) on its own stream of training windows (``run_seed``;
``--repeats N`` runs each QAT row N times); ``--rows`` picks some; rows are cached in ``--work`` so a rerun
continues where it stopped. The worst NDS
drop vs FP32 is reported over every group and per mode (fused, camera_only). Latency: ONNX Runtime CPU
at one thread. Training curves: each QAT row's loss parts (``curve``, bin means) and one figure of them
(``--curves``, default beside ``--out``).

    PYTHONPATH=. python benchmarks/bench_qat.py --out benchmarks/results/qat.json
    PYTHONPATH=. python benchmarks/bench_qat.py --config config/qat_bev_v3.yaml --out benchmarks/results/qat_v3.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quant import latency  # noqa: E402
from bev_quant_ros.evaluation.metrics import evaluate_detections  # noqa: E402
from bev_quant_ros.model.onnx_weights import detector_from_onnx  # noqa: E402
from bev_quant_ros.perception.box_decoding import decode  # noqa: E402
from bev_quant_ros.quant import assess, qat  # noqa: E402
from bev_quant_ros.quant.calib_data import RecordedSequence, record_set  # noqa: E402
from bev_quant_ros.quant.config import QuantConfig, load_quant_config  # noqa: E402
from bev_quant_ros.quant.plan import PrecisionPlan, read_plan  # noqa: E402
from bev_quant_ros.quant.report import held_out_seed, held_out_sequences  # noqa: E402

CONDITIONS = ("day", "night", "rain", "fog", "glare")  # held-out drives (here and in bench_prune.py)
# row -> (weight bits, activation bits, honour the plan, loss weights, VGD or None = PTQ only)
VGD = "config"  # the QAT config's loss weights (config/qat_bev_tiny.yaml: distillation only)
ROWS = {
    "ptq_all_int8_modelopt": (8, 8, False, None),
    "ptq_w8a8_plan": (8, 8, True, None),
    "qat_int8_no_distill": (8, 8, True, qat.LossWeights(1.0, 0.0, 0.0)),
    "qat_int8_img_only": (8, 8, True, qat.LossWeights(0.0, 1.0, 0.0)),
    "qat_int8_bev_only": (8, 8, True, qat.LossWeights(0.0, 0.0, 1.0)),
    "qat_int8_vgd": (8, 8, True, VGD),
    "qat_int8_vgd_plus_detection": (8, 8, True, qat.LossWeights(1.0, 1.0, 1.0)),
    "qat_int8_vgd_progressive": (8, 8, True, VGD),  # quantized stage by stage (qat.PROGRESSIVE_STAGES)
    "qat_int8_vgd_conv_outputs": (8, 8, True, VGD),  # and a quantizer after every int8 conv (CONV_OUTPUT_ROWS)
    "qat_int8_vgd_cpu_grid": (8, 8, True, VGD),  # the same trained on the CPU flavour's grid (CPU_GRID_ROWS)
    "qat_all_int8_vgd": (8, 8, False, VGD),  # float only where modelopt has no quantizer (Softmax, Add, MatMul)
    "qat_all_int8_vgd_3x_steps": (8, 8, False, VGD),  # the same with 3x the steps (ROW_STEPS_FACTOR)
    "qat_all_int8_vgd_3x_steps_cosine": (8, 8, False, VGD),  # and the lr decaying to 0 (ROW_LR_SCHEDULE)
    "qat_all_int8_vgd_conv_outputs": (8, 8, False, VGD),  # all-INT8 with a quantizer after every conv
    "qat_all_int8_vgd_conv_outputs_3x_steps": (8, 8, False, VGD),  # the same with 3x the steps
    "qat_all_int8_vgd_cpu_grid": (8, 8, False, VGD),  # all-INT8 with conv outputs, trained on the CPU grid
    "qat_all_int8_vgd_head": (8, 8, False, qat.LossWeights(0.0, 1.0, 1.0, head=1.0)),  # + the head's outputs
    "qat_all_int8_vgd_head_cpu_grid": (8, 8, False, qat.LossWeights(0.0, 1.0, 1.0, head=1.0)),  # on the CPU grid
    "ptq_w6a6": (6, 6, True, None), "qat_vgd_w6a6": (6, 6, True, VGD),
    "ptq_w4a8": (4, 8, True, None), "qat_vgd_w4a8": (4, 8, True, VGD),
    "ptq_w4a6": (4, 6, True, None), "qat_vgd_w4a6": (4, 6, True, VGD),
}
ROW_STEPS_FACTOR = {"qat_all_int8_vgd_3x_steps": 3, "qat_all_int8_vgd_3x_steps_cosine": 3,
                    "qat_all_int8_vgd_conv_outputs_3x_steps": 3}  # x the config's steps
ROW_LR_SCHEDULE = {"qat_all_int8_vgd_3x_steps_cosine": "cosine"}  # every other row: the config's schedule
PROGRESSIVE_ROWS = {"qat_int8_vgd_progressive"}  # every other row quantizes all at once
# qat.conv_output_modules quantized too, so the CPU flavour fuses every int8 conv into QLinearConv
CONV_OUTPUT_ROWS = {"qat_int8_vgd_conv_outputs", "qat_all_int8_vgd_conv_outputs",
                    "qat_all_int8_vgd_conv_outputs_3x_steps", "qat_int8_vgd_cpu_grid", "qat_all_int8_vgd_cpu_grid",
                    "qat_all_int8_vgd_head", "qat_all_int8_vgd_head_cpu_grid"}
# ReLU-fed quantizers trained unsigned: CPU-only students
CPU_GRID_ROWS = {"qat_int8_vgd_cpu_grid", "qat_all_int8_vgd_cpu_grid", "qat_all_int8_vgd_head_cpu_grid"}
CPU_FLAVOUR_ROWS = ("qat_int8_vgd", *sorted(CONV_OUTPUT_ROWS))  # also scored and timed as the CPU flavour
# "qat_int8_vgd#2": the row's second run (--repeats), from the same calibration, fine-tuned on another stream of
# training windows (training seed = the config's + 1; run_seed)
REPEAT_MARK = "#"
CURVE_POINTS = 20  # training-curve points per QAT row (means over equal step bins)


def loss_curve(history: list[dict[str, float]], points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """Per-step loss parts as ``points`` bin means per part, with the step each bin ends at."""
    if not history:
        return {}
    bins = np.array_split(np.arange(len(history)), min(points, len(history)))
    curve: dict[str, list[float]] = {"step": [int(b[-1]) + 1 for b in bins]}
    for key in history[0]:
        curve[key] = [round(float(np.mean([history[i][key] for i in b])), 6) for b in bins]
    return curve


def plot_curves(rows: dict[str, dict], path: Path) -> None:
    """Total fine-tuning loss vs step of every QAT row in one figure (the report's training curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in rows.items():
        if row.get("curve"):
            ax.plot(row["curve"]["step"], row["curve"]["loss"], label=name)
    ax.set(xlabel="QAT step", ylabel="loss (bin mean)", yscale="log", title="QAT fine-tuning loss per row")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def groups_by_mode(sequences: list[RecordedSequence]) -> dict[str, list[str]]:
    """Sensor mode -> its groups ("night", "night/camera_only"), in the sequences' order."""
    modes: dict[str, list[str]] = {}
    for s in sequences:
        groups = modes.setdefault(s.mode, [])
        if s.group not in groups:
            groups.append(s.group)
    return modes


def score(run: assess.ModelRun, sequences: list[RecordedSequence]) -> dict[str, dict[str, float]]:
    """NDS, mAP, mAVE per group and over all frames, against the drives' ground truth."""
    gt = [b for s in sequences for b in s.ground_truth]
    points = [p for s in sequences for p in s.gt_num_lidar_points]
    result = {}
    for group in (*(g for groups in groups_by_mode(sequences).values() for g in groups), "all"):
        idx = [i for i, g in enumerate(run.conditions) if group in (g, "all")]
        m = evaluate_detections([run.detections[i] for i in idx], [gt[i] for i in idx],
                                gt_num_lidar_points=[points[i] for i in idx]).to_json()
        result[group] = {k: round(float(m[k]), 4) for k in ("NDS", "mAP", "mAVE")}
    return result


def worst_drop_points(fp32: dict, metrics: dict, groups: Sequence[str] = CONDITIONS) -> float:
    """Largest NDS loss over ``groups`` of ``metrics`` vs ``fp32`` (``score`` results), in points."""
    return round(100 * max(fp32[g]["NDS"] - metrics[g]["NDS"] for g in groups), 2)


def worst_drops(fp32: dict, metrics: dict, modes: dict[str, list[str]]) -> dict[str, float]:
    """The worst drop over every group ("all") and per sensor mode (``groups_by_mode``)."""
    every = [g for groups in modes.values() for g in groups]
    return {"all": worst_drop_points(fp32, metrics, every),
            **{mode: worst_drop_points(fp32, metrics, groups) for mode, groups in modes.items()}}


def cached_rows(path: Path, setup: dict) -> dict:
    """Rows of an earlier run of the same ``setup`` (held-out set, steps); another setup's are an error."""
    if not path.is_file():
        return {}
    cache = json.loads(path.read_text())
    if cache.get("setup") != setup:
        raise SystemExit(f"{path} holds rows of another setup ({cache.get('setup')}); use another --work")
    return cache["rows"]


def write_result(out: str, result: dict, summary_keys: tuple[str, ...]) -> None:
    """The JSON to ``out``; the summary keys printed."""
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in summary_keys}, indent=1))


def torch_run(net: torch.nn.Module, sequences: list, model_path: Path) -> assess.ModelRun:
    """Detections of the (fake-quant) torch network, own state, resets as recorded."""
    decode_config = assess.decode_config_for(model_path)
    run = assess.ModelRun()
    for sequence in sequences:
        for heatmap, box_reg, _ in qat.run_sequence(net, sequence):
            run.conditions.append(sequence.group)
            run.detections.append(decode(heatmap[0].numpy(), box_reg[0].numpy(), decode_config))
    return run


@dataclasses.dataclass
class Bench:
    """What every row shares: the configs, the FP32 teacher, the calibration and held-out sets."""

    cfg: qat.QatConfig
    quant_config: QuantConfig
    plan: PrecisionPlan
    teacher: torch.nn.Module
    calibration: list[RecordedSequence]
    held_out: list[RecordedSequence]
    work: Path


def row_name(key: str) -> str:
    """The ROWS name of a cached row key (``qat_int8_vgd#2`` -> ``qat_int8_vgd``)."""
    return key.split(REPEAT_MARK)[0]


def run_keys(names: Sequence[str], repeats: int) -> list[str]:
    """The cached row keys of ``names``: each QAT row ``repeats`` times (what it reaches depends on the
    windows it was fine-tuned on), PTQ rows once (deterministic)."""
    return [f"{name}{REPEAT_MARK}{k}" if k > 1 else name for name in names
            for k in range(1, (repeats if ROWS[name][3] is not None else 1) + 1)]


def repeat_spread(rows: dict[str, dict], fp32: dict, modes: dict[str, list[str]]) -> dict[str, dict]:
    """Per row run more than once: every run's worst drop per mode, both flavours where scored."""
    runs: dict[str, list[dict]] = {}
    for key, row in rows.items():
        runs.setdefault(row_name(key), []).append(row)
    spread = {}
    for name, entries in runs.items():
        if len(entries) < 2:
            continue
        spread[name] = {"runs": len(entries)}
        for field, label in (("metrics", "worst_nds_drop_points_per_mode"),
                             ("cpu_flavour_metrics", "worst_nds_drop_points_per_mode_cpu_flavour")):
            if all(field in e for e in entries):
                drops = [worst_drops(fp32, e[field], modes) for e in entries]
                spread[name][label] = {mode: [d[mode] for d in drops] for mode in modes}
    return spread


def run_seed(cfg: qat.QatConfig, key: str) -> int:
    """The training-window seed of a row key: the config's for a row's first run, +k-1 for its k-th. Each
    row draws its own stream, so a row's result does not depend on which rows ran before it."""
    return cfg.seed + (int(key.split(REPEAT_MARK)[1]) - 1 if REPEAT_MARK in key else 0)


def run_row(bench: Bench, key: str) -> dict:
    """One ROWS entry (``key``: its name, or a repeat of it): quantize, fine-tune unless PTQ, score (exported
    Q/DQ at 8 bits, else fake quant)."""
    name = row_name(key)
    w_bits, a_bits, honour, weights = ROWS[name]
    model, cfg = bench.quant_config.model, bench.cfg
    student = qat.quantize_student(detector_from_onnx(model), bench.calibration, w_bits, a_bits,
                                   bench.plan if honour else None, model if name in CONV_OUTPUT_ROWS else None,
                                   cpu_grid=name in CPU_GRID_ROWS)
    entry: dict = {"weight_bits": w_bits, "activation_bits": a_bits, "plan": honour}
    weights = cfg.weights if weights == VGD else weights
    if weights is not None:
        row_cfg = dataclasses.replace(cfg, weights=weights, steps=cfg.steps * ROW_STEPS_FACTOR.get(name, 1),
                                      progressive=name in PROGRESSIVE_ROWS,
                                      lr_schedule=ROW_LR_SCHEDULE.get(name, cfg.lr_schedule), seed=run_seed(cfg, key))
        sample = qat.training_sampler(row_cfg, bench.teacher.cfg, 0)
        history, _ = qat.finetune(student, bench.teacher, sample, row_cfg)
        entry.update(training_seed=row_cfg.seed, steps=row_cfg.steps, lr_schedule=row_cfg.lr_schedule,
                     loss_weights=dataclasses.asdict(weights),
                     progressive=row_cfg.progressive,
                     last_loss=history[-1] if history else None, curve=loss_curve(history))
    if w_bits == a_bits == 8 and weights is not None:
        inputs = qat.full_inputs(bench.calibration[0].feeds[1], bench.teacher.cfg)
        if name in CPU_GRID_ROWS:
            cpu = qat.export_cpu_student(student, bench.work / f"{key}_cpu.onnx", inputs, model)
            entry["metrics"] = entry["cpu_flavour_metrics"] = score(assess.run_model(cpu, bench.held_out),
                                                                    bench.held_out)
            entry["runs_on"] = "CPU flavour only (uint8 grid trained; not TensorRT-consumable) on ONNX Runtime"
        else:
            onnx_path = qat.export_qdq(student, bench.work / f"{key}.onnx", inputs, model)
            entry["metrics"] = score(assess.run_model(onnx_path, bench.held_out), bench.held_out)
            entry["runs_on"] = "Q/DQ ONNX (TensorRT flavour) on ONNX Runtime; TensorRT"
            if name in CPU_FLAVOUR_ROWS:
                cpu = qat.export_cpu_flavour(onnx_path, bench.work / f"{key}_cpu.onnx", bench.teacher.cfg)
                entry["cpu_flavour_metrics"] = score(assess.run_model(cpu, bench.held_out), bench.held_out)
    else:
        entry["metrics"] = score(torch_run(student, bench.held_out, model), bench.held_out)
        entry["runs_on"] = ("fake quant only (PyTorch): INT8 export needs 8 bits" if w_bits < 8 or a_bits < 8
                            else "PyTorch fake quant (exportable to Q/DQ)")
    return entry


def held_out_description(modes: list[str], drives: int, frames: int) -> dict:
    """The held-out set as ``held_out_sequences`` records it (seeds per condition, then per drive)."""
    seeds = [held_out_seed(i, k) for i in range(len(CONDITIONS)) for k in range(drives)]
    return {"conditions": list(CONDITIONS), "modes": modes, "drives_per_condition": drives,
            "frames_per_drive": frames, "seeds": seeds}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/qat_bev_tiny.yaml")
    parser.add_argument("--out", default="benchmarks/results/qat.json")
    parser.add_argument("--work", help="per-row results and QAT checkpoints (default .cache/bench_qat/<config>)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="NAME",
                        help=f"rows to run besides FP32 and the shipped PTQ (default all: {', '.join(ROWS)})")
    parser.add_argument("--frames", type=int, default=24, help="held-out frames per drive")
    parser.add_argument("--drives", type=int, default=1, help="held-out drives per condition")
    parser.add_argument("--steps", type=int, help="QAT steps per row (default: the config's)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each QAT row (their spread is reported)")
    parser.add_argument("--rounds", type=int, default=40, help="latency rounds")
    parser.add_argument("--curves", help="training-curve figure (default: --out with _curves.png)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    cfg = qat.load_qat_config(args.config, **({"steps": args.steps} if args.steps else {}))
    quant_config = load_quant_config(cfg.quant_config)
    model, modes = quant_config.model, list(quant_config.validation.modes)
    work = Path(args.work or f".cache/bench_qat/{Path(args.config).stem}")
    work.mkdir(parents=True, exist_ok=True)
    setup = {"held_out": held_out_description(modes, args.drives, args.frames), "steps": cfg.steps}
    rows_path = work / "rows.json"
    rows = cached_rows(rows_path, setup)
    held_out = held_out_sequences(model, CONDITIONS, args.frames, modes, args.drives)
    mode_groups = groups_by_mode(held_out)
    references = {"fp32": model, "ptq_int8_shipped_cpu": quant_config.cpu_output,
                  "ptq_int8_shipped_tensorrt": quant_config.output}
    for name, path in references.items():
        if name not in rows and path is not None:
            rows[name] = {"metrics": score(assess.run_model(path, held_out), held_out), "runs_on": "ONNX Runtime"}
    fp32 = rows["fp32"]["metrics"]
    bench = Bench(cfg, quant_config, read_plan(quant_config.plan), detector_from_onnx(model),
                  record_set(model, quant_config.calibration), held_out, work)
    keys = run_keys(args.rows, args.repeats)
    for name in keys:
        if name in rows:
            continue
        t0 = time.monotonic()
        entry = run_row(bench, name)
        entry["seconds"] = round(time.monotonic() - t0, 1)
        rows[name] = entry
        rows_path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1))
        print(f"{name}: NDS all {entry['metrics']['all']['NDS']:.4f}, worst drop (points) "
              f"{worst_drops(fp32, entry['metrics'], mode_groups)} ({entry['seconds']:.0f} s)", flush=True)

    more_runs = [key for key in rows if row_name(key) in args.rows and key not in keys]  # cached repeats
    shown = {name: rows[name] for name in (*references, *keys, *more_runs) if name in rows}
    models = {"fp32": model, "int8_cpu_shipped": quant_config.cpu_output}
    cpu_rows = [name for name in CPU_FLAVOUR_ROWS if "cpu_flavour_metrics" in shown.get(name, {})]
    models.update({f"int8_cpu_{name.replace('qat_int8_', 'qat_')}": work / f"{name}_cpu.onnx" for name in cpu_rows})
    drops = {name: worst_drops(fp32, r["metrics"], mode_groups) for name, r in shown.items()}
    cpu_drops = {name: worst_drops(fp32, shown[name]["cpu_flavour_metrics"], mode_groups) for name in cpu_rows}
    result = {
        "model": str(model.relative_to(ROOT)), "config": args.config,
        "held_out": {**setup["held_out"], "frames_per_condition": args.frames * args.drives},
        "qat": {"steps": cfg.steps, "batch_size": cfg.batch_size, "window": cfg.window, "lr": cfg.lr,
                "train_seeds": list(cfg.train_seeds)},
        "rows": shown,
        "worst_nds_drop_points": {name: d["all"] for name, d in drops.items()},
        "worst_nds_drop_points_per_mode": {name: {m: d[m] for m in modes} for name, d in drops.items()},
        "worst_nds_drop_points_per_mode_cpu_flavour": {name: {m: d[m] for m in modes} for name, d in cpu_drops.items()},
        "repeats": repeat_spread(shown, fp32, mode_groups),
        "latency_1_thread": latency({k: v for k, v in models.items() if v is not None},
                                    [f for s in held_out for f in s.feeds], threads=1, rounds=args.rounds),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": 1},
    }
    write_result(args.out, result, ("worst_nds_drop_points", "worst_nds_drop_points_per_mode",
                                    "worst_nds_drop_points_per_mode_cpu_flavour", "repeats", "latency_1_thread"))
    curves = Path(args.curves or Path(args.out).with_name(f"{Path(args.out).stem}_curves.png"))
    plot_curves(shown, curves)
    print(f"wrote {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
