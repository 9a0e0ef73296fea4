"""`bev-quant nuscenes-to-bag`: nuScenes scenes -> one rosbag2 bag each (drives/nuscenes_bag.py).

Read them with ``--params config/nuscenes.param.yaml`` (compressed transport, nuScenes sync).
Every scene and file is checked before anything is written; each bag is staged and renamed
when complete, so a bad dataroot leaves no output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bev_quant_ros.drives.nuscenes_bag import convert_scene, open_nuscenes, scene_sample_data, select_scenes
from bev_quant_ros.errors import BevQuantError, ConfigError
from bev_quant_ros.sim.bag_writer import check_bag_output


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("nuscenes-to-bag", help="convert nuScenes scenes to rosbag2 bags the node reads",
                                   description=__doc__)
    parser.add_argument("--dataroot", required=True, type=Path, help="nuScenes dataroot (holds <version>/, samples/)")
    parser.add_argument("--version", default="v1.0-mini", help="table version directory, e.g. v1.0-mini")
    scenes = parser.add_mutually_exclusive_group(required=True)
    scenes.add_argument("--scene", action="append", help="scene name, e.g. scene-0061 (repeatable)")
    scenes.add_argument("--all", action="store_true", help="every scene of the version")
    parser.add_argument("--out", required=True, type=Path, help="directory for the bags, one per scene, named after it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        nusc = open_nuscenes(args.dataroot, args.version)
        scenes = select_scenes(nusc, None if args.all else args.scene)
        for scene in scenes:  # every problem found before the first bag is written
            scene_sample_data(nusc, scene)
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"output {args.out} is not a directory")
        created = not args.out.exists()
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            for scene in scenes:
                check_bag_output(args.out / scene["name"])
        except ConfigError:
            if created:
                args.out.rmdir()
            raise
        for scene in scenes:
            summary = convert_scene(nusc, scene, args.out / scene["name"])
            print(f"wrote {summary.path}: {summary.keyframes} keyframes, {summary.objects} objects, "
                  f"{sum(summary.messages.values())} messages, {summary.seconds:.1f} s")
    except (BevQuantError, OSError) as exc:
        print(f"bev-quant nuscenes-to-bag: error: {exc}", file=sys.stderr)
        return 2
    return 0
