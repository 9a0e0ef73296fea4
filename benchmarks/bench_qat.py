"""QAT benchmark: PTQ vs QAT (with and without view-guided distillation), lower bit widths, latency.

Rows on the same held-out drives (seeds >= 100000, one drive per condition) against ground truth:
FP32; the shipped PTQ INT8 (CPU flavour); modelopt all-INT8 PTQ; QAT INT8 without distillation,
image-view only, BEV only, both (VGD: the QAT config's loss weights, distillation only), VGD plus the
detection loss, and all-INT8 VGD (the plan ignored), exported to Q/DQ and run by ONNX Runtime;
W8A8/W6A6/W4A8/W4A6 PTQ vs QAT+VGD as fake quant in PyTorch (W4/W6 cannot be exported). Each QAT row fine-tunes the
same number of steps from the same calibration (config/qat_bev_tiny.yaml); rows are cached in
``--work`` so a rerun continues where it stopped. Latency: ONNX Runtime CPU at one thread.

    PYTHONPATH=. python benchmarks/bench_qat.py --out benchmarks/results/qat.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quant import latency  # noqa: E402
from bev_quant_ros.drives.synth import SynthSpec  # noqa: E402
from bev_quant_ros.evaluation.metrics import evaluate_detections  # noqa: E402
from bev_quant_ros.model.onnx_weights import detector_from_onnx  # noqa: E402
from bev_quant_ros.perception.box_decoding import decode  # noqa: E402
from bev_quant_ros.quant import assess, qat  # noqa: E402
from bev_quant_ros.quant.calib_data import record_sequence, record_set  # noqa: E402
from bev_quant_ros.quant.config import load_quant_config  # noqa: E402
from bev_quant_ros.quant.plan import read_plan  # noqa: E402

CONDITIONS = ("day", "night", "rain", "fog", "glare")
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
    "qat_all_int8_vgd": (8, 8, False, VGD),  # float only where modelopt has no quantizer (Softmax, Add, MatMul)
    "qat_all_int8_vgd_3x_steps": (8, 8, False, VGD),  # the same with 3x the steps (ROW_STEPS_FACTOR)
    "ptq_w6a6": (6, 6, True, None), "qat_vgd_w6a6": (6, 6, True, VGD),
    "ptq_w4a8": (4, 8, True, None), "qat_vgd_w4a8": (4, 8, True, VGD),
    "ptq_w4a6": (4, 6, True, None), "qat_vgd_w4a6": (4, 6, True, VGD),
}
ROW_STEPS_FACTOR = {"qat_all_int8_vgd_3x_steps": 3}  # rows fine-tuned this many times the config's steps


def score(run: assess.ModelRun, sequences: list) -> dict[str, dict[str, float]]:
    """NDS, mAP, mAVE per condition and over all frames, against the drives' ground truth."""
    gt = [b for s in sequences for b in s.ground_truth]
    points = [p for s in sequences for p in s.gt_num_lidar_points]
    result = {}
    for condition in (*CONDITIONS, "all"):
        idx = [i for i, c in enumerate(run.conditions) if condition in (c, "all")]
        m = evaluate_detections([run.detections[i] for i in idx], [gt[i] for i in idx],
                                gt_num_lidar_points=[points[i] for i in idx]).to_json()
        result[condition] = {k: round(float(m[k]), 4) for k in ("NDS", "mAP", "mAVE")}
    return result


def worst_drop_points(fp32: dict, metrics: dict) -> float:
    """Largest per-condition NDS loss of ``metrics`` vs ``fp32`` (``score`` results), in points."""
    return round(100 * max(fp32[c]["NDS"] - metrics[c]["NDS"] for c in CONDITIONS), 2)


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
            run.conditions.append(sequence.condition)
            run.detections.append(decode(heatmap[0].numpy(), box_reg[0].numpy(), decode_config))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/qat_bev_tiny.yaml")
    parser.add_argument("--out", default="benchmarks/results/qat.json")
    parser.add_argument("--work", default=".cache/bench_qat", help="per-row results and QAT checkpoints")
    parser.add_argument("--frames", type=int, default=24, help="held-out frames per condition")
    parser.add_argument("--steps", type=int, help="QAT steps per row (default: the config's)")
    parser.add_argument("--rounds", type=int, default=40, help="latency rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {"steps": args.steps} if args.steps else {}
    cfg = qat.load_qat_config(args.config, **overrides)
    quant_config = load_quant_config(cfg.quant_config)
    model = quant_config.model
    plan = read_plan(quant_config.plan)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows_path = work / "rows.json"
    rows = json.loads(rows_path.read_text()) if rows_path.is_file() else {}

    held_out = [record_sequence(model, SynthSpec(c, 100_000 + 1000 * i, args.frames)) for i, c in enumerate(CONDITIONS)]
    calibration = record_set(model, quant_config.calibration)
    teacher = detector_from_onnx(model)
    shipped_cpu = ROOT / "models" / "bev_tiny.int8_cpu.onnx"
    for name, path in (("fp32", model), ("ptq_int8_shipped_cpu", shipped_cpu)):
        if name not in rows:
            rows[name] = {"metrics": score(assess.run_model(path, held_out), held_out), "runs_on": "ONNX Runtime"}
    sample = None
    for name, (w_bits, a_bits, honour, weights) in ROWS.items():
        if name in rows:
            continue
        t0 = time.monotonic()
        student = qat.quantize_student(detector_from_onnx(model), calibration, w_bits, a_bits,
                                       plan if honour else None)
        entry: dict = {"weight_bits": w_bits, "activation_bits": a_bits, "plan": honour}
        weights = cfg.weights if weights == VGD else weights
        if weights is not None:
            sample = sample or qat.training_sampler(cfg, teacher.cfg, 0)
            steps = cfg.steps * ROW_STEPS_FACTOR.get(name, 1)
            row_cfg = dataclasses.replace(cfg, weights=weights, steps=steps)
            history, _ = qat.finetune(student, teacher, sample, row_cfg)
            entry.update(steps=row_cfg.steps, loss_weights=dataclasses.asdict(weights),
                         last_loss=history[-1] if history else None)
        if w_bits == a_bits == 8 and weights is not None:
            inputs = qat.full_inputs(calibration[0].feeds[1], teacher.cfg)
            onnx_path = qat.export_qdq(student, work / f"{name}.onnx", inputs, model)
            entry["metrics"] = score(assess.run_model(onnx_path, held_out), held_out)
            entry["runs_on"] = "Q/DQ ONNX (TensorRT flavour) on ONNX Runtime; TensorRT"
            if name == "qat_int8_vgd":
                cpu = qat.export_cpu_flavour(student, quant_config, plan, work / f"{name}_cpu.onnx", inputs,
                                             calibration, work)
                entry["cpu_flavour_metrics"] = score(assess.run_model(cpu, held_out), held_out)
        else:
            entry["metrics"] = score(torch_run(student, held_out, model), held_out)
            entry["runs_on"] = ("fake quant only (PyTorch): INT8 export needs 8 bits" if w_bits < 8 or a_bits < 8
                                else "PyTorch fake quant (exportable to Q/DQ)")
        entry["seconds"] = round(time.monotonic() - t0, 1)
        rows[name] = entry
        rows_path.write_text(json.dumps(rows, indent=1))
        print(f"{name}: NDS all {entry['metrics']['all']['NDS']:.4f} ({entry['seconds']:.0f} s)", flush=True)

    models = {"fp32": model, "int8_cpu_shipped": shipped_cpu}
    if (work / "qat_int8_vgd_cpu.onnx").is_file():
        models["int8_cpu_qat_vgd"] = work / "qat_int8_vgd_cpu.onnx"
    feeds = [f for s in held_out for f in s.feeds]
    fp32 = rows["fp32"]["metrics"]
    result = {
        "model": str(model.relative_to(ROOT)), "config": args.config,
        "held_out": {"conditions": list(CONDITIONS), "frames_per_condition": args.frames,
                     "seeds": [100_000 + 1000 * i for i in range(len(CONDITIONS))]},
        "qat": {"steps": cfg.steps, "batch_size": cfg.batch_size, "window": cfg.window, "lr": cfg.lr,
                "train_seeds": list(cfg.train_seeds)},
        "rows": rows,
        "worst_nds_drop_points": {name: worst_drop_points(fp32, r["metrics"]) for name, r in rows.items()},
        "latency_1_thread": latency(models, feeds, threads=1, rounds=args.rounds),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": 1},
    }
    write_result(args.out, result, ("worst_nds_drop_points", "latency_1_thread"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
