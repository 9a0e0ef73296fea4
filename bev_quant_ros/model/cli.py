"""`bev-quant train` and `bev-quant export` (need the optional torch extra)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from bev_quant_ros.errors import BevQuantError
from bev_quant_ros.evaluation.cli import add_drive_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the reference BEV network on synthetic sequences and drives")
    train.add_argument("--config", required=True, help="training YAML, e.g. config/train_bev_tiny.yaml")
    train.add_argument("--out", required=True, help="output dir; last.pt there is resumed")
    train.add_argument("--drives", nargs="+", default=[], metavar="PATH",
                       help="also train on these drives with ground truth: rosbag2 directories, directories of "
                            "bags, synth:<condition>:<seed>:<frames> (added to the config's data.drives)")
    train.add_argument("--condition", default="bag", help="condition label of the --drives (logs)")
    train.add_argument("--no-synthetic", action="store_true", help="train on the drives only (no simulated seeds)")
    add_drive_arguments(train)
    train.set_defaults(func=_train)
    export = subparsers.add_parser("export", help="export a checkpoint to ONNX with the engine I/O contract")
    export.add_argument("--checkpoint", required=True, help="last.pt written by `bev-quant train`")
    export.add_argument("--out", required=True, help="ONNX path; the model config YAML is written next to it")
    export.set_defaults(func=_export)
    prune = subparsers.add_parser(
        "prune", help="structured channel pruning of an FP32 model (image encoder + BEV trunk), before fine-tuning")
    prune.add_argument("--model", required=True, help="FP32 ONNX model, e.g. models/bev_tiny.onnx")
    prune.add_argument("--keep", type=float, default=0.5, help="fraction of channels kept (default 0.5)")
    prune.add_argument("--halve-tokens", action="store_true",
                       help="pool attention tokens over twice the columns: half the queries")
    prune.add_argument("--out", required=True, help="ONNX path of the pruned network (model config YAML beside it); "
                                                    "fine-tune it with a training config whose init_from names it")
    prune.set_defaults(func=_prune)
    evaluate = subparsers.add_parser(
        "model-eval", help="held-out metrics of a PyTorch checkpoint with camera/lidar/temporal ablations")
    evaluate.add_argument("--checkpoint", required=True,
                          help="last.pt written by `bev-quant train`, or an FP32 ONNX model "
                               "(e.g. models/bev_tiny.onnx)")
    evaluate.add_argument("--conditions", nargs="+", default=["day", "night", "rain", "fog", "glare"])
    evaluate.add_argument("--sequences", type=int, default=6, help="sequences per condition (seeds >= 100000)")
    evaluate.add_argument("--frames", type=int, default=10, help="frames per sequence")
    evaluate.add_argument("--rates", nargs="+", default=["30hz"],
                          help="frame rates (30hz, 15hz, 12hz): 15hz feeds every other frame, 12hz renders "
                               "12 Hz cameras; rates other than 30hz run the full and camera_only ablations "
                               "(keys 'ABLATION@RATE')")
    evaluate.add_argument("--threads", type=int, default=2,
                          help="torch threads (1 on a shared CPU: two threads on a busy core ran several times slower)")
    evaluate.add_argument("--json", help="write all metrics here")
    evaluate.set_defaults(func=_model_eval)


def _train(args: argparse.Namespace) -> int:
    from bev_quant_ros.drives.settings import ReaderSettings
    from bev_quant_ros.model.train import DriveEntry, load_train_config, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_train_config(args.config)
        drives = cfg.drives + tuple(DriveEntry(path, args.condition) for path in args.drives)
        seeds = (cfg.seeds[0], cfg.seeds[0]) if args.no_synthetic else cfg.seeds
        cfg = dataclasses.replace(cfg, drives=drives, seeds=seeds)
        train(cfg, Path(args.out), ReaderSettings.from_params_file(args.params, args.namespace, args.gt_topic))
    except BevQuantError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    from bev_quant_ros.model.export import MAX_ABS_DIFF, check_contract, compare_with_torch, export_onnx, real_inputs
    from bev_quant_ros.model.train import load_detector

    net = load_detector(args.checkpoint)
    inputs = real_inputs(net.cfg)
    path = export_onnx(net, args.out, inputs)
    check_contract(path, net.cfg)
    diffs = compare_with_torch(net, path, inputs)
    for name, diff in diffs.items():
        print(f"{name}: max abs diff ONNX Runtime vs PyTorch = {diff:.3e}")
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.2f} MB) and {path.with_suffix('.yaml')}")
    if max(diffs.values()) > MAX_ABS_DIFF:
        print(f"FAILED: difference above {MAX_ABS_DIFF}")
        return 1
    return 0


def _prune(args: argparse.Namespace) -> int:
    from bev_quant_ros.model.export import export_onnx
    from bev_quant_ros.model.onnx_weights import detector_from_onnx
    from bev_quant_ros.model.prune import prune_detector

    try:
        net = detector_from_onnx(args.model)
        pruned = prune_detector(net, args.keep, args.halve_tokens)
    except (BevQuantError, ValueError) as exc:
        print(f"prune: {exc}", file=sys.stderr)
        return 2
    path = export_onnx(pruned, args.out)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (net, pruned)]
    print(f"C {net.cfg.C} -> {pruned.cfg.C}, image channels {net.cfg.network.image_channels} -> "
          f"{pruned.cfg.network.image_channels}, attention pool {net.cfg.network.attention_pool_hw} -> "
          f"{pruned.cfg.network.attention_pool_hw}, parameters {sizes[0]} -> {sizes[1]}; wrote {path}")
    return 0


def _model_eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from bev_quant_ros.model.onnx_weights import detector_from_onnx
    from bev_quant_ros.model.train import load_detector
    from bev_quant_ros.model.validate import ABLATIONS, FRAME_RATES, evaluate_checkpoint

    unknown = sorted(set(args.rates) - set(FRAME_RATES))
    if unknown:
        print(f"model-eval: unknown rate(s) {unknown}; expected {sorted(FRAME_RATES)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    net = detector_from_onnx(args.checkpoint) if args.checkpoint.endswith(".onnx") else load_detector(args.checkpoint)
    results = {}
    for condition in args.conditions:
        results[condition] = {}
        for rate in args.rates:
            ablations = ABLATIONS if rate == "30hz" else ("full", "camera_only")
            metrics = evaluate_checkpoint(net, condition, args.sequences, args.frames, ablations, frame_rate=rate)
            results[condition].update({a if rate == "30hz" else f"{a}@{rate}": m for a, m in metrics.items()})
        for ablation, m in results[condition].items():
            print(f"{condition:6s} {ablation:12s} mAP {m['mAP']:.3f} NDS {m['NDS']:.3f} "
                  f"mATE {m['mATE']:.3f} mAVE {m['mAVE']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
