"""`bev-quant evaluate`: metrics of a model on drives (bags, a directory of bags, or the simulator).

Bags are read with the node's own configuration (`--params`), offline and deterministic
(no DDS). Several drives: one line each, then the metrics over all their frames together
(computed once, not averaged per drive). A drive without ground truth is run and reported
(frames, detections per frame, timing) without metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.errors import BevQuantError
from bev_quant_ros.evaluation.drive_tasks import DEFAULT_OVERLAP, EvaluateJob, evaluate_drive, evaluate_fleet
from bev_quant_ros.evaluation.offline import EvaluationRun
from bev_quant_ros.fleet.runners import TaskResult, make_runner
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.sim.ground_truth import GT_TOPIC


def add_drive_arguments(parser: argparse.ArgumentParser) -> None:
    """--params / --namespace / --gt-topic: how bags are read (shared by every drive-reading tool)."""
    parser.add_argument("--params", type=Path, default=None,
                        help="the node's params file: topics, transport, sync settings (default: the node's defaults)")
    parser.add_argument("--namespace", default="/", help="namespace the node would run in (resolves relative topics)")
    parser.add_argument("--gt-topic", default=GT_TOPIC, help="ground-truth Detection3DArray topic (optional in a bag)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="nuScenes metrics of a model on bags or synth:<cond>:<seed>:<n>")
    parser.add_argument("--data", required=True,
                        help="rosbag2 directory, directory of bags (one drive each), "
                             "or synth:<condition>:<seed>:<frames>")
    parser.add_argument("--model", required=True, help="ONNX model (FP32 or INT8 Q/DQ) with its .yaml config")
    parser.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "tensorrt"))
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="low on purpose: AP integrates over the whole score range")
    parser.add_argument("--condition", default="bag", help="condition label of the bags in the output")
    add_drive_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the metrics JSON here")
    parser.add_argument("--nuscenes-results", type=Path, default=None,
                        help="bags from nuscenes-to-bag: write the keyframes' detections as a nuScenes results JSON")
    parser.add_argument("--devkit", type=Path, default=None, metavar="DATAROOT",
                        help="bags from nuscenes-to-bag: also score them with nuscenes-devkit on this dataroot")
    parser.add_argument("--workers", type=int, default=None,
                        help="drives as parallel tasks on this many local processes (with --ray: the local "
                             "cluster's CPUs); default: one drive after the other in this process")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="drives as Ray tasks: on the cluster at ADDRESS (ray://head:10001), or on a local "
                             "cluster without one (docs/fleet.md)")
    parser.add_argument("--fail-fast", action="store_true",
                        help="with --workers/--ray: stop at the first drive that fails (default: report it, go on)")
    parser.add_argument("--chunk-frames", type=int, default=None, metavar="K",
                        help="a drive longer than K frames becomes tasks of K scored frames each (with --workers/"
                             "--ray they run in parallel); metrics close to, not equal to, one pass (docs/fleet.md)")
    parser.add_argument("--chunk-overlap", type=int, default=DEFAULT_OVERLAP, metavar="W",
                        help="with --chunk-frames: each chunk first runs the W frames before it, unscored, to build "
                             f"the recurrent state (default {DEFAULT_OVERLAP})")
    parser.set_defaults(func=run)


def evaluate_drives(pipeline: BevPipeline, drives: list) -> tuple[list[tuple[str, EvaluationRun]], EvaluationRun]:
    """Each drive from a reset state on its own rig; the per-drive runs and all frames together."""
    runs = [(drive.name, evaluate_drive(pipeline, drive)) for drive in drives]
    return runs, EvaluationRun.merged(run for _, run in runs)


def _line(name: str, summary: dict[str, Any]) -> str:
    if summary.get("ground_truth") is False:
        return (f"{name}: {summary['frames']} frames  {summary['detections_per_frame']:.1f} detections/frame  "
                "(no ground truth: no metrics)")
    per_class = ", ".join(f"{c} {v['AP']:.3f}" for c, v in summary["per_class"].items() if v["AP"] is not None)
    return (f"{name}: {summary['frames']} frames  mAP {summary['mAP']:.4f}  NDS {summary['NDS']:.4f}  "
            f"mATE {summary['mATE']:.3f}  mASE {summary['mASE']:.3f}  mAOE {summary['mAOE']:.3f}  "
            f"mAVE {summary['mAVE']:.3f}  (AAE omitted)\n  AP: {per_class}")


def _evaluate_in_tasks(args: argparse.Namespace, settings: ReaderSettings) -> list[TaskResult]:
    """--workers / --ray / --chunk-frames: one task per drive or chunk (bev_quant_ros/fleet), results in drive order."""
    job = EvaluateJob(str(Path(args.model).resolve()), args.backend, args.score_threshold, settings, args.condition)
    with make_runner(args.workers, args.ray) as runner:
        return evaluate_fleet(job, args.data, runner, args.fail_fast, args.chunk_frames, args.chunk_overlap)


def run(args: argparse.Namespace) -> int:
    failed: list[TaskResult] = []
    try:
        settings = ReaderSettings.from_params_file(args.params, args.namespace, args.gt_topic)
        if args.workers not in (None, 1) or args.ray is not None or args.chunk_frames is not None:
            results = _evaluate_in_tasks(args, settings)
            failed = [r for r in results if not r.ok]
            drives = [r.value for r in results if r.ok]  # DriveRun: name, condition, path, run
            if not drives:
                raise BevQuantError(f"every drive failed ({len(failed)})")
            runs = [(d.name, d.run) for d in drives]
            total = EvaluationRun.merged(r for _, r in runs)
        else:
            pipeline = BevPipeline.from_model(args.model, backend=args.backend, score_threshold=args.score_threshold)
            drives = open_drives(args.data, settings, args.condition)
            runs, total = evaluate_drives(pipeline, drives)
    except BevQuantError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    per_drive = {name: r.summary(getattr(d, "condition", args.condition)) for (name, r), d in zip(runs, drives)}
    if len(runs) > 1:
        for name, summary in per_drive.items():
            print(_line(name, summary))
    summary = total.summary(drives[0].condition if len(drives) == 1 else "all")
    summary.update(model=str(args.model), data=args.data, drives=per_drive if len(runs) > 1 else None)
    if failed:
        summary["failed_drives"] = {r.name: r.error for r in failed}
    print(_line(args.data if len(runs) == 1 else f"all {len(runs)} drives", summary))
    if args.nuscenes_results or args.devkit:
        from bev_quant_ros.evaluation.nuscenes_results import nuscenes_report
        try:
            print(nuscenes_report([getattr(d, "path", None) for d in drives], [r for _, r in runs], settings, summary,
                                  args.nuscenes_results, args.devkit))
        except BevQuantError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    for r in failed:
        print(f"evaluate: drive {r.name} failed, left out of the metrics: {r.error}", file=sys.stderr)
    return 2 if failed else 0
