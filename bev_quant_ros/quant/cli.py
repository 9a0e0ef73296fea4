"""`bev-quant calibrate | sensitivity | quant-report | qat`: the quantization toolkit's commands."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable

from bev_quant_ros.errors import BevQuantError, ConfigError

Command = Callable[[argparse.Namespace], int]


def _guarded(command: Command) -> Command:
    """A bad config, drive or plan is one line on stderr and exit code 2, not a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BevQuantError as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 2
    return run


def _add_runner_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help=f"run {what} as tasks on this many local processes (results equal one process's; "
                             "docs/fleet.md)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="the same tasks on Ray: the cluster at ADDRESS, or a local one without")


def register(subparsers: argparse._SubParsersAction) -> None:
    calibrate = subparsers.add_parser(
        "calibrate", help="calibrate, search the precision plan and write the INT8 Q/DQ model")
    calibrate.add_argument("--config", required=True, help="e.g. config/quant_bev_tiny.yaml")
    calibrate.add_argument("--plan", help="apply this existing precision plan instead of searching one")
    calibrate.add_argument("--refine", action="store_true",
                           help="with --plan: try to return each of its float nodes to INT8 under this calibration "
                                "(the search's prune pass) and write the result as the config's plan")
    _add_runner_arguments(calibrate, "the statistics of each calibration sequence and the sensitivity trials")
    calibrate.set_defaults(func=_guarded(_calibrate))
    sensitivity = subparsers.add_parser("sensitivity", help="per-node sensitivity table (output error vs FP32)")
    sensitivity.add_argument("--config", required=True)
    sensitivity.add_argument("--json", help="also write the table here")
    _add_runner_arguments(sensitivity, "the node trials (two model variants each)")
    sensitivity.set_defaults(func=_guarded(_sensitivity))
    report = subparsers.add_parser("quant-report", help="Markdown + PNG report of ranges, sensitivity, drift, NDS")
    report.add_argument("--config", required=True)
    report.add_argument("--out", default="docs/quant_report")
    report.add_argument("--drift-frames", type=int, default=300)
    report.add_argument("--eval-frames", type=int, default=40, help="held-out frames per drive")
    report.add_argument("--eval-drives", type=int, default=1, help="held-out drives per condition")
    report.set_defaults(func=_guarded(_report))
    qat = subparsers.add_parser("qat", help="quantization-aware training (modelopt) with view-guided distillation, "
                                            "exported to both INT8 Q/DQ flavours")
    qat.add_argument("--config", required=True, help="e.g. config/qat_bev_tiny.yaml")
    qat.add_argument("--out", required=True, help="output dir; qat_last.pt there is resumed")
    qat.add_argument("--steps", type=int, help="override the config's fine-tuning steps")
    qat.add_argument("--cpu-grid", action="store_true",
                     help="train the CPU flavour's grid (ReLU-fed quantizers unsigned); exports the CPU flavour only")
    qat.add_argument("--ship", type=Path, metavar="DIR",
                     help="also copy the TensorRT flavour (cpu_grid: the CPU flavour) and its .yaml into DIR "
                          "(models/: the shipped QAT student)")
    qat.set_defaults(func=_guarded(_qat))


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # ORT warns "consider pre-processing" for every variant
        handler.addFilter(lambda record: "pre-process" not in record.getMessage())


def _calibrate(args: argparse.Namespace) -> int:
    from bev_quant_ros.quant.calibrate import run_calibration
    from bev_quant_ros.quant.config import load_quant_config

    _logging()
    config = load_quant_config(args.config)
    from bev_quant_ros.fleet.runners import make_runner

    parallel = args.workers not in (None, 1) or args.ray is not None
    with make_runner(args.workers, args.ray) as runner:
        plan = run_calibration(config, Path(args.plan) if args.plan else None, refine=args.refine,
                               runner=runner if parallel else None)
    applied = args.plan and not args.refine
    print(f"wrote {config.output} ({config.output.stat().st_size / 1e6:.2f} MB), plan "
          f"{args.plan if applied else config.plan}: {len(plan.float_nodes)} float node(s): {plan.node_names()}")
    if applied:
        print("the plan was applied as written (ranges recalibrated, no search); its measured NDS:")
    print(json.dumps(plan.measured, indent=1))
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from bev_quant_ros.quant.calib_data import record_set
    from bev_quant_ros.quant.calibrate import calibrate_ranges, run_sensitivity, truncated
    from bev_quant_ros.quant.config import load_quant_config

    _logging()
    config = load_quant_config(args.config)
    from bev_quant_ros.fleet.runners import make_runner

    validation = truncated(record_set(config.model, config.validation), config.sensitivity_frames)
    parallel = args.workers not in (None, 1) or args.ray is not None
    with make_runner(args.workers, args.ray) as runner:
        method, errors, rows = run_sensitivity(config, calibrate_ranges(config), validation,
                                               runner if parallel else None)
    print(f"all-INT8 output error per method: {errors}; sensitivity with {method}")
    print(f"{'node':70s} {'op':10s} {'only int8':>10s} {'all but':>10s} {'float gain':>10s}")
    for r in rows:
        print(f"{r.node:70s} {r.op_type:10s} {r.only_int8_error:10.4f} {r.all_but_this_error:10.4f} "
              f"{r.float_gain:10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"method": method, "method_errors": errors,
                                               "nodes": [r.to_dict() for r in rows]}, indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    from bev_quant_ros.quant.config import load_quant_config
    from bev_quant_ros.quant.report import write_report

    _logging()
    path = write_report(load_quant_config(args.config), Path(args.out), args.drift_frames, args.eval_frames,
                        args.eval_drives)
    print(f"wrote {path}")
    return 0


def _qat(args: argparse.Namespace) -> int:
    from bev_quant_ros.quant.qat import load_qat_config, run_qat

    _logging()
    overrides = {"steps": args.steps} if args.steps is not None else {}
    if args.cpu_grid:
        overrides["cpu_grid"] = True
    result = run_qat(load_qat_config(args.config, **overrides), Path(args.out))
    print(f"step {result.step}; last loss parts: {result.history[-1] if result.history else 'resumed, none run'}")
    for path in (result.tensorrt_onnx, result.cpu_onnx):
        if path is not None:
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.ship is not None:
        shipped = result.tensorrt_onnx or result.cpu_onnx  # a cpu_grid student has the CPU flavour only
        if shipped is None:
            raise ConfigError("--ship needs an INT8 export (weight and activation bits 8)")
        for path in (shipped, shipped.with_suffix(".yaml")):
            print(f"shipped {shutil.copy(path, args.ship)}")
    return 0
