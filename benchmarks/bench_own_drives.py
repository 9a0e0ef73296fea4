"""Calibrate INT8 from "your own drives" and check it on held-out drives of every condition.

The drives: synthetic bags (calibration seeds 50000.., validation 60000..) re-recorded under
Autoware-style topic names with the ground truth left out, read with a node params file for
those names; the rig comes from their CameraInfo + tf_static. `bev-quant calibrate` runs on
them with the model's shipped quantization config (config/quant_<stem>.yaml: method, modes,
op types and float modules; only the drives differ) and its shipped precision plan (`--plan`:
ranges recalibrated, no plan search; the references are the FP32 model's own detections). The
resulting INT8 (CPU flavour) is then evaluated against the FP32 model on held-out simulator
drives (seeds >= 100000) of every condition, fused, next to the shipped PTQ INT8 (the same
method calibrated on simulator drives; where a QAT student is the default, it is not this
comparison's reference). Goal (issue 14):
within 0.5 NDS points in every condition.

Run: .venv/bin/python benchmarks/bench_own_drives.py [--model-stem bev_v3] [--out benchmarks/results/own_drives.json]
(default: the node's default model). Work files go to .cache/own_drives/<stem>/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.remap import autoware_params, autoware_renames, remap_bag
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.evaluation.cli import evaluate_drives
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.resources import DEFAULT_MODEL_STEM, default_model_path, package_file
from bev_quant_ros.sim import CONDITIONS, generate_frames
from bev_quant_ros.sim.bag_writer import write_bag
from bev_quant_ros.sim.ground_truth import GT_TOPIC

ROOT = Path(".cache/own_drives")
DRIVE_CONDITIONS = ("day", "night", "rain", "fog")
BANDS = {"calib": 50_000, "val": 60_000}
SECTION_BAND = {"calibration": "calib", "validation": "val"}  # quantization-config section -> its drives
HELD_OUT_SEED = 100_000


def make_drives(frames: int) -> Path:
    """The bags and the vehicle's params file; made once."""
    for band, base in BANDS.items():
        for i, condition in enumerate(DRIVE_CONDITIONS):
            source, target = ROOT / "synth" / f"{band}_{condition}", ROOT / band / condition
            if not (source / "metadata.yaml").is_file():
                source.parent.mkdir(parents=True, exist_ok=True)
                write_bag(source, generate_frames(base + 1000 * i, condition, frames), load_rig(), compressed=True)
            if not (target / "metadata.yaml").is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                remap_bag(source, target, autoware_renames(compressed=True), drop=frozenset({GT_TOPIC}))
    return autoware_params(ROOT / "vehicle.param.yaml", compressed=True)


def write_config(params: Path, frames: int, stem: str, work: Path) -> Path:
    """The shipped config of ``stem`` with own drives in place of the simulator conditions."""
    shipped = Path("config") / f"quant_{stem}.yaml"
    doc = yaml.safe_load(shipped.read_text())

    def own(section: str, frames_per_sequence: int, sequences: int) -> dict:
        keys = {k: v for k, v in doc[section].items() if k not in ("conditions", "seed_base")}
        return {**keys, "drives": [{"path": str(ROOT / SECTION_BAND[section] / c), "condition": c}
                                   for c in DRIVE_CONDITIONS],
                "params": str(params), "frames_per_sequence": frames_per_sequence, "sequences_per_condition": sequences}

    config = {
        "extends": str(shipped), "output": str(work / f"{stem}.int8.onnx"),
        "cpu_output": str(work / f"{stem}.int8_cpu.onnx"), "plan": str(work / f"{stem}.precision.yaml"),
        "work_dir": str(work / "work"), "calibration": own("calibration", frames // 2, 2),
        "validation": own("validation", frames, 1), "reference_score_threshold": 0.3,
    }
    path = work / "quant.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def held_out_nds(model: Path, frames: int) -> dict[str, float]:
    pipeline = BevPipeline.from_model(model, backend="onnxruntime", score_threshold=0.05)
    nds = {}
    for i, condition in enumerate(CONDITIONS):
        drives = open_drives(f"synth:{condition}:{HELD_OUT_SEED + 1000 * i}:{frames}", progress=False)
        _, total = evaluate_drives(pipeline, drives)
        nds[condition] = float(total.metrics().nd_score)
    return nds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per own drive (30 Hz)")
    parser.add_argument("--held-out-frames", type=int, default=40)
    parser.add_argument("--model-stem", default=DEFAULT_MODEL_STEM, help="shipped model models/STEM.onnx and its "
                        "config/quant_STEM.yaml (default: the node's default model)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "own_drives.json")
    args = parser.parse_args()
    stem, work = args.model_stem, ROOT / args.model_stem
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(make_drives(args.frames), args.frames, stem, work)
    code = bev_quant(["calibrate", "--config", str(config), "--plan", f"models/{stem}.precision.yaml"])
    if code:
        raise SystemExit(f"calibrate failed ({code})")
    models = {"fp32": default_model_path("fp32", stem=stem), "own_drives_int8_cpu": work / f"{stem}.int8_cpu.onnx",
              "shipped_int8_cpu": package_file("models", f"{stem}.int8_cpu.onnx")}
    nds = {name: held_out_nds(path, args.held_out_frames) for name, path in models.items()}
    change = {name: {c: 100.0 * (nds[name][c] - nds["fp32"][c]) for c in CONDITIONS}
              for name in models if name != "fp32"}
    report = {
        "benchmark": "INT8 calibrated from own drives (Autoware topic names, no ground truth, rig from the bags)",
        "model_stem": stem,
        "own_drives": {"conditions": list(DRIVE_CONDITIONS), "frames_per_drive": args.frames,
                       "calibration_seeds_from": BANDS["calib"], "validation_seeds_from": BANDS["val"],
                       "config": f"config/quant_{stem}.yaml with these drives",
                       "plan": f"models/{stem}.precision.yaml (shipped; ranges recalibrated, no search)",
                       "reference": "FP32 detections >= 0.3 (the drives have no ground truth)"},
        "held_out": {"seeds_from": HELD_OUT_SEED, "frames": args.held_out_frames, "conditions": list(CONDITIONS)},
        "nds": nds, "nds_change_points_vs_fp32": change,
        "worst_change_points": {name: min(values.values()) for name, values in change.items()},
        "goal": "worst per-condition change >= -0.5 NDS points",
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"nds_change_points_vs_fp32": change, "worst": report["worst_change_points"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
