"""Pruning + quantization benchmark (issue 16): accuracy vs latency, unpruned vs channel-pruned.

Rows on bench_qat's held-out drives (seeds >= 100000, one drive per condition, recorded in every
mode of the quant config's validation modes: v3 also camera-only) against ground truth: FP32 and
the shipped PTQ INT8 (CPU flavour) of models/<model>.onnx; the network pruned to half its
image-encoder and state channels (`bev-quant prune`) and fine-tuned (config/train_<model>_p50.yaml)
in FP32, PTQ INT8 with the shipped plan (same node names; config/quant_<model>_p50.yaml, both
flavours) and QAT+VGD INT8 (teacher: the pruned FP32; the model's QAT recipe on the pruned model).
Latency: ONNX Runtime CPU at one thread, every model side by side in one run
(bench_quant.latency), ratios to unpruned FP32. For v3 replace bev_tiny by bev_v3 and add --model bev_v3:

    bev-quant prune --model models/bev_tiny.onnx --keep 0.5 --out .cache/prune/bev_tiny_p50_init.onnx
    bev-quant train --config config/train_bev_tiny_p50.yaml --out .cache/train_bev_tiny_p50
    bev-quant export --checkpoint .cache/train_bev_tiny_p50/last.pt --out .cache/prune/bev_tiny_p50.onnx
    bev-quant calibrate --config config/quant_bev_tiny_p50.yaml --plan models/bev_tiny.precision.yaml
    PYTHONPATH=. python benchmarks/bench_prune.py --out benchmarks/results/prune.json
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_qat import CONDITIONS, groups_by_mode, score, worst_drops, write_result  # noqa: E402
from benchmarks.bench_quant import latency  # noqa: E402
from bev_quant_ros.model.onnx_weights import detector_from_onnx  # noqa: E402
from bev_quant_ros.quant import assess, qat  # noqa: E402
from bev_quant_ros.quant.calib_data import record_set  # noqa: E402
from bev_quant_ros.quant.config import load_quant_config  # noqa: E402
from bev_quant_ros.quant.plan import read_plan  # noqa: E402
from bev_quant_ros.quant.report import held_out_sequences  # noqa: E402


@dataclasses.dataclass(frozen=True)
class PruneSetup:
    """The configs of one model's pruning rows; the unpruned PTQ config's plan is applied to the pruned model."""

    unpruned_quant: str
    pruned_quant: str
    pruned_train: str
    qat: str  # the QAT recipe (steps, loss weights), run on the pruned model


SETUPS = {stem: PruneSetup(f"config/quant_{stem}.yaml", f"config/quant_{stem}_p50.yaml",
                           f"config/train_{stem}_p50.yaml", f"config/qat_{stem}.yaml")
          for stem in ("bev_tiny", "bev_v3")}


def pruned_qat(setup: PruneSetup, plan_path: Path, work: Path) -> tuple[Path, Path, float]:
    """QAT+VGD of the pruned model with the unpruned model's plan (same node names), both flavours
    exported; -> (TensorRT flavour, CPU flavour, last loss)."""
    cfg = qat.load_qat_config(setup.qat, quant_config=setup.pruned_quant, train_config=setup.pruned_train)
    quant_config = load_quant_config(cfg.quant_config)
    plan = read_plan(plan_path)
    calibration = record_set(quant_config.model, quant_config.calibration)
    teacher = detector_from_onnx(quant_config.model)
    student = qat.quantize_student(detector_from_onnx(quant_config.model), calibration, 8, 8, plan)
    history, _ = qat.finetune(student, teacher, qat.training_sampler(cfg, teacher.cfg, 0), cfg)
    inputs = qat.full_inputs(calibration[0].feeds[1], teacher.cfg)
    trt = qat.export_qdq(student, work / "pruned_qat_vgd.onnx", inputs, quant_config.model)
    cpu = qat.export_cpu_flavour(trt, work / "pruned_qat_vgd_cpu.onnx", teacher.cfg)
    return trt, cpu, float(history[-1]["loss"]) if history else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(SETUPS), default="bev_tiny", help="the unpruned model's stem")
    parser.add_argument("--out", default="benchmarks/results/prune.json")
    parser.add_argument("--work", help="default .cache/bench_prune (bev_tiny), .cache/bench_prune_<model>")
    parser.add_argument("--frames", type=int, default=24, help="held-out frames per condition")
    parser.add_argument("--rounds", type=int, default=60, help="latency rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = SETUPS[args.model]
    work = Path(args.work or (".cache/bench_prune" if args.model == "bev_tiny" else f".cache/bench_prune_{args.model}"))
    work.mkdir(parents=True, exist_ok=True)
    unpruned, pruned = load_quant_config(setup.unpruned_quant), load_quant_config(setup.pruned_quant)
    if not pruned.cpu_output.is_file():
        print(f"missing {pruned.cpu_output}: run the commands in this script's docstring first", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    trt_qat, cpu_qat, qat_loss = pruned_qat(setup, unpruned.plan, work)
    qat_seconds = time.monotonic() - t0
    models = {"fp32": unpruned.model, "ptq_int8_cpu": unpruned.cpu_output,
              "pruned_fp32": pruned.model, "pruned_ptq_int8_cpu": pruned.cpu_output,
              "pruned_ptq_int8_tensorrt_flavour": pruned.output,
              "pruned_qat_vgd_int8_cpu": cpu_qat, "pruned_qat_vgd_int8_tensorrt_flavour": trt_qat}
    # pruning changes only the state width inside the engine: the frame inputs are the same for every model
    held_out = held_out_sequences(unpruned.model, CONDITIONS, args.frames, unpruned.validation.modes)
    rows = {}
    for name, path in models.items():
        rows[name] = score(assess.run_model(path, held_out), held_out)
        print(f"{name}: NDS all {rows[name]['all']['NDS']:.4f}", flush=True)
    fp32, modes = rows["fp32"], groups_by_mode(held_out)
    drops = {name: worst_drops(fp32, r, modes) for name, r in rows.items()}
    cpu_models = {k: v for k, v in models.items() if "tensorrt" not in k}  # the CPU runs the u8 flavour
    feeds = [f for s in held_out for f in s.feeds]
    result = {
        "model": str(unpruned.model.relative_to(ROOT)),
        "held_out": {"conditions": list(CONDITIONS), "modes": list(modes), "frames_per_condition": args.frames,
                     "seeds": [100_000 + 1000 * i for i in range(len(CONDITIONS))]},
        "pruning": {"keep": 0.5, "train_config": setup.pruned_train, "quant_config": setup.pruned_quant,
                    "qat_config": setup.qat, "qat_seconds": round(qat_seconds, 1), "qat_last_loss": qat_loss},
        "rows": rows,
        "worst_nds_drop_points_vs_unpruned_fp32": {name: d["all"] for name, d in drops.items()},
        "worst_nds_drop_points_per_mode": {name: {m: d[m] for m in modes} for name, d in drops.items()},
        "latency_1_thread": latency(cpu_models, feeds, threads=1, rounds=args.rounds),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
    }
    write_result(args.out, result, ("worst_nds_drop_points_vs_unpruned_fp32", "latency_1_thread"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
