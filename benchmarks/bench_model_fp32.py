"""FP32 latency of the shipped BEV model under ONNX Runtime on this CPU (goal: <= 40 ms median).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_model_fp32.py [--model models/bev_tiny.onnx]
     [--threads 1] [--out benchmarks/results/model_fp32.json]
Inputs are random but well-formed contract tensors (latency does not depend on values);
two input sets alternate so no run reuses the previous run's cache state. Reports the
median and p90 of single-frame session.run calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bev_quant_ros.perception.model_config import example_inputs, model_config_for_onnx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "bev_tiny.onnx")
    parser.add_argument("--threads", type=int, default=1, help="the node's default intra_op_num_threads")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_fp32.json")
    args = parser.parse_args()
    cfg = model_config_for_onnx(args.model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    feeds = [example_inputs(cfg, seed) for seed in (0, 1)]
    for i in range(args.warmup):
        session.run(None, feeds[i % 2])
    times_ms = []
    for i in range(args.repeats):
        start = time.perf_counter()
        session.run(None, feeds[i % 2])
        times_ms.append(1e3 * (time.perf_counter() - start))
    result = {
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "inputs": {k: list(v.shape) for k, v in feeds[0].items()},
        "repeats": args.repeats,
        "latency_ms_median": float(np.median(times_ms)),
        "latency_ms_p90": float(np.percentile(times_ms, 90)),
        "latency_ms_min": float(np.min(times_ms)),
        "goal_ms_median": 40.0,
        "load_average_1min": os.getloadavg()[0],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
