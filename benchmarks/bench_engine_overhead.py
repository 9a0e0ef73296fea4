"""ONNX Runtime backend overhead vs a bare `session.run` on the same inputs (goal: <= 5 %).

With `--tensorrt` it instead measures the TensorRT backend's frame latency
(plain `execute_async_v3` and CUDA graph, copies included) on the same graph
next to the ONNX Runtime backend; `benchmarks/gpu_check.sh` runs that on a GPU.

Both paths use the engine's own session (same options, same threads) and run
alternately in one process, so machine noise hits both equally; the bare path
gets its state fed by hand like a caller without the engine would. Medians go
to `benchmarks/results/engine_overhead.json`.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_engine_overhead.py [--frames 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))

from bev_quant_ros.engine.onnxruntime_backend import OnnxRuntimeEngine  # noqa: E402
from unit.engine_fixtures import TinyDims, random_frame, with_state, write_tiny_models  # noqa: E402

GOAL_PCT = 5.0


def measure(model: Path, dims: TinyDims, frames: int, threads: int) -> dict[str, float]:
    """Alternate engine.infer and bare session.run; return medians and the overhead."""
    engine = OnnxRuntimeEngine(model, intra_op_num_threads=threads, inter_op_num_threads=1)
    session = engine.session
    frame = random_frame(dims, np.random.default_rng(0))
    state = np.zeros((dims.state_channels, dims.ho, dims.wo), np.float32)
    engine.warmup(5)
    engine_ms, bare_ms = [], []
    for _ in range(frames):
        start = time.perf_counter()
        engine.infer(frame)
        engine_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        state = session.run(None, with_state(frame, state, 1.0))[2]
        bare_ms.append((time.perf_counter() - start) * 1e3)
    engine_median, bare_median = float(np.median(engine_ms)), float(np.median(bare_ms))
    return {"engine_median_ms": round(engine_median, 4), "bare_session_run_median_ms": round(bare_median, 4),
            "overhead_pct": round(100.0 * (engine_median - bare_median) / bare_median, 2),
            "engine_p90_ms": round(float(np.percentile(engine_ms, 90)), 4),
            "bare_p90_ms": round(float(np.percentile(bare_ms, 90)), 4)}


def latency(engine, dims: TinyDims, frames: int) -> dict[str, float]:
    """Median/p90 wall time of `engine.infer` (H2D + run + D2H for TensorRT) per frame."""
    frame = random_frame(dims, np.random.default_rng(0))
    engine.warmup(10)
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        engine.infer(frame)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(float(np.median(times)), 4), "p90_ms": round(float(np.percentile(times, 90)), 4)}


def tensorrt_report(models: dict[str, Path], dims: TinyDims, frames: int, threads: int) -> dict:
    from bev_quant_ros.engine.tensorrt_backend import TensorRTEngine

    results = {}
    for name, path in models.items():
        results[f"{name}/onnxruntime_cpu"] = latency(
            OnnxRuntimeEngine(path, intra_op_num_threads=threads), dims, frames)
        for graph in (False, True):
            engine = TensorRTEngine(path, engine_cache_dir=path.parent, use_cuda_graph=graph)
            results[f"{name}/tensorrt{'_cuda_graph' if graph else ''}"] = {
                **latency(engine, dims, frames), "gpu": engine.describe().details["gpu"]}
    return {"benchmark": "TensorRT backend frame latency (copies included) vs ONNX Runtime CPU",
            "frames": frames, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the machine is shared)")
    parser.add_argument("--tensorrt", action="store_true", help="TensorRT latency run (needs a GPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default results/engine_overhead.json, or engine_latency_tensorrt.json)")
    args = parser.parse_args()
    dims = TinyDims.bench()
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = write_tiny_models(Path(tmp), dims)
        models = {"fp32": fp32, "int8_qdq": int8}
        if args.tensorrt:
            return write(tensorrt_report(models, dims, args.frames, args.threads),
                         args.out or REPO / "benchmarks/results/engine_latency_tensorrt.json")
        results = {name: measure(path, dims, args.frames, args.threads) for name, path in models.items()}
    report = {
        "benchmark": "ONNX Runtime engine (IO binding, engine-owned state) vs bare session.run",
        "goal": f"overhead <= {GOAL_PCT} %", "frames": args.frames, "intra_op_num_threads": args.threads,
        "model": {"graph": "test/unit/engine_fixtures.py tiny contract graph", **asdict(dims)},
        "onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "results": results,
        "meets_goal": all(r["overhead_pct"] <= GOAL_PCT for r in results.values()),
    }
    return write(report, args.out or REPO / "benchmarks/results/engine_overhead.json")


def write(report: dict, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
