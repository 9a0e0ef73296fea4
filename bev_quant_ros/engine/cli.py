"""`bev-quant build-engine`: build (or reuse) the cached TensorRT engine for an ONNX model.

The build-only step of a deployment (as Autoware's `build_only`): run it once on
the target Jetson so the node starts without a minutes-long engine build.
`--trt-module tensorrt_rtx` lets a machine without a GPU check that a Q/DQ ONNX
parses and builds (that engine is not usable on a Jetson).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bev_quant_ros.engine.build import PRECISIONS, TENSORRT_MODULES, BuildOptions, ensure_engine
from bev_quant_ros.errors import BevQuantError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build-engine",
                                   help="build or reuse the cached TensorRT engine of an ONNX model")
    parser.add_argument("onnx", type=Path, help="the (Q/DQ) ONNX model")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="engine cache directory (default: next to the ONNX)")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8")
    parser.add_argument("--no-fp16", action="store_true",
                        help="TensorRT 10: keep float layers in FP32 (no BuilderFlag.FP16)")
    parser.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit")
    parser.add_argument("--timing-cache", type=Path, default=None, help="timing cache file (read and updated)")
    parser.add_argument("--gpu-name", default=None,
                        help="cache-key GPU name (default: CUDA device 0; needed with tensorrt_rtx without a GPU)")
    parser.add_argument("--trt-module", choices=TENSORRT_MODULES, default="tensorrt")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached engine matches")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = BuildOptions(precision=args.precision, allow_fp16=not args.no_fp16,
                               workspace_mib=args.workspace_mib, timing_cache_path=args.timing_cache)
        path, rebuilt = ensure_engine(args.onnx, args.cache_dir or args.onnx.parent, options,
                                      trt_module=args.trt_module, gpu_name=args.gpu_name, force=args.force)
    except BevQuantError as exc:
        print(f"build-engine: {exc}")
        return 2
    print(f"{'built' if rebuilt else 'cached'}: {path}")
    return 0
