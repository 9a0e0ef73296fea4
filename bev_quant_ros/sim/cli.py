"""`bev-quant synth`: write a synthetic multi-sensor bag with ground truth."""

from __future__ import annotations

import argparse
import sys

from bev_quant_ros.errors import BevQuantError
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.sim.bag_writer import STORAGE_PLUGINS, write_bag
from bev_quant_ros.sim.conditions import CONDITIONS
from bev_quant_ros.sim.frames import generate_frames


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="write a synthetic 6-camera + lidar rosbag2 bag with ground truth",
                                   description=__doc__)
    parser.add_argument("--out", required=True, help="output bag directory (must not exist or be empty)")
    parser.add_argument("--frames", type=int, required=True, help="number of camera frames")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (same seed = same scene in every condition)")
    parser.add_argument("--condition", default="day", help=f"one of {', '.join(CONDITIONS)}")
    parser.add_argument("--compressed", action="store_true", help="write CompressedImage (jpeg) instead of Image")
    parser.add_argument("--storage", default="mcap", help=f"one of {', '.join(STORAGE_PLUGINS)}")
    parser.add_argument("--camera-rate-hz", type=float, default=30.0)
    parser.add_argument("--lidar-rate-hz", type=float, default=10.0)
    parser.add_argument("--rig", default=None, help="rig YAML (default: config/rig_nuscenes.yaml)")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> str | None:
    if args.condition not in CONDITIONS:
        return f"unknown condition {args.condition!r}; expected one of {', '.join(CONDITIONS)}"
    if args.frames <= 0:
        return f"--frames must be a positive integer, got {args.frames}"
    if args.storage not in STORAGE_PLUGINS:
        return f"unknown storage {args.storage!r}; expected one of {', '.join(STORAGE_PLUGINS)}"
    if not (0 < args.lidar_rate_hz <= args.camera_rate_hz):
        return f"need 0 < --lidar-rate-hz <= --camera-rate-hz, got {args.lidar_rate_hz} and {args.camera_rate_hz}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"bev-quant synth: error: {problem}", file=sys.stderr)
        return 2
    try:
        rig = load_rig(args.rig)
        frames = generate_frames(args.seed, args.condition, args.frames, rig, args.camera_rate_hz, args.lidar_rate_hz)
        summary = write_bag(args.out, frames, rig, compressed=args.compressed, storage=args.storage)
    except (BevQuantError, OSError) as exc:
        print(f"bev-quant synth: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {summary.path}: {summary.frames} frames, {summary.objects} objects, "
          f"{summary.size_mb:.1f} MB, {summary.seconds:.1f} s ({args.condition}, seed {args.seed})")
    return 0
