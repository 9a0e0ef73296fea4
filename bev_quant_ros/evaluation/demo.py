"""`bev-quant demo`: the live demo of the README's first command.

Synthesizes a day-time bag once (kept under .cache/demo/), starts
bev_perception_node with the shipped model, replays the bag into it in real time
over DDS, and prints output rate, latency percentiles, detection counts and
the metrics of the published detections against the bag's ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bev_quant_ros.errors import BevQuantError
from bev_quant_ros.resources import DEFAULT_MODEL_STEM, default_model_path

DEMO_SEED = 100_100  # held-out: never used in training (< 10000) or calibration
DEMO_DIR = Path(".cache") / "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="live demo: synth bag -> replay -> node -> metrics")
    parser.add_argument("--bag", type=Path, default=None,
                        help="bag to replay (default: synthesize .cache/demo/day_<seed> if missing)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the synthesized bag (30 Hz)")
    parser.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto",
                        help="which shipped model the node runs; auto = INT8 when shipped, else FP32")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--json", type=Path, help="also write the report JSON here")
    parser.set_defaults(func=run)


def ensure_bag(frames: int) -> Path:
    """The demo bag (compressed cameras keep 6 x 30 Hz within two cores), made on first use."""
    from bev_quant_ros.perception.geometry import load_rig
    from bev_quant_ros.sim import generate_frames
    from bev_quant_ros.sim.bag_writer import write_bag

    bag = DEMO_DIR / f"day_{DEMO_SEED}_{frames}"
    if not (bag / "metadata.yaml").is_file():
        print(f"demo: synthesizing {bag} ({frames} frames)", flush=True)
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        write_bag(bag, generate_frames(DEMO_SEED, "day", frames), load_rig(), compressed=True)
    return bag


def _shipped(precision: str) -> bool:
    try:
        default_model_path(precision)
    except BevQuantError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from bev_quant_ros.evaluation.live import run_live

    try:
        bag = args.bag or ensure_bag(args.frames)
        precision = args.precision
        if precision == "auto":
            precision = "int8" if _shipped("int8") else "fp32"
            if precision == "fp32":
                print(f"demo: no shipped INT8 CPU model (models/{DEFAULT_MODEL_STEM}.int8_cpu.onnx); running FP32",
                      flush=True)
        model = default_model_path(precision)
        node_args = ["-p", f"model_path:={model}", "-p", f"precision:={precision}",
                     "-p", "qos_reliability:=reliable", "-p", "image_transport:=compressed"]
        report = run_live(bag, node_args, rate=args.rate).to_json()
    except (BevQuantError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    latency, metrics = report["end_to_end_latency_ms"], report["metrics_vs_ground_truth"]
    print(f"demo: {report['backend']} {report['precision']} model {model.name} on {bag}\n"
          f"  output: {report['detection_messages']}/{report['camera_frames']} frames "
          f"({report['frames_processed_pct']:.1f} %), {report['output_rate_hz']:.1f} Hz, "
          f"{report['mean_detections_per_frame']:.1f} detections/frame\n"
          f"  latency camera stamp -> detections received (wall time): p50 {latency.get('p50', float('nan')):.1f} ms, "
          f"p95 {latency.get('p95', float('nan')):.1f} ms, p99 {latency.get('p99', float('nan')):.1f} ms\n"
          f"  stages p50: " + ", ".join(f"{k} {v:.1f} ms" for k, v in report["stage_p50_ms"].items()) + "\n"
          f"  vs ground truth: mAP {metrics.get('mAP', 0):.3f}, NDS {metrics.get('NDS', 0):.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["detection_messages"] > 0 and report["node_exit_code"] == 0 else 1
