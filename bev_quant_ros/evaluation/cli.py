"""`bev-quant evaluate`: metrics of a model on a bag or simulated frames (offline, no DDS)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bev_quant_ros.errors import BevQuantError
from bev_quant_ros.evaluation.offline import run_pipeline
from bev_quant_ros.evaluation.sources import frames_from_spec
from bev_quant_ros.perception.pipeline import BevPipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="nuScenes metrics of a model on a bag or synth:<cond>:<seed>:<n>")
    parser.add_argument("--data", required=True,
                        help="rosbag2 directory with /ground_truth/objects, or synth:<condition>:<seed>:<frames>")
    parser.add_argument("--model", required=True, help="ONNX model (FP32 or INT8 Q/DQ) with its .yaml config")
    parser.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "tensorrt"))
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="low on purpose: AP integrates over the whole score range")
    parser.add_argument("--json", type=Path, help="also write the metrics JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        pipeline = BevPipeline.from_model(args.model, backend=args.backend, score_threshold=args.score_threshold)
        frames, condition = frames_from_spec(args.data, pipeline)
        summary = run_pipeline(pipeline, frames).summary(condition)
    except BevQuantError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    summary["model"] = str(args.model)
    summary["data"] = args.data
    per_class = ", ".join(f"{name} {v['AP']:.3f}" for name, v in summary["per_class"].items())
    print(f"{args.data}: {summary['frames']} frames  mAP {summary['mAP']:.4f}  NDS {summary['NDS']:.4f}  "
          f"mATE {summary['mATE']:.3f}  mASE {summary['mASE']:.3f}  mAOE {summary['mAOE']:.3f}  "
          f"mAVE {summary['mAVE']:.3f}  (AAE omitted)\n  AP: {per_class}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
