"""Time synthetic frame generation (6 cameras + lidar) and bag writing.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_synth.py [--frames 60] [--out benchmarks/results/synth.json]
Goal (issue 3): frame generation <= 100 ms median on the 2-core dev machine, i.e. a
300-frame bag in under a minute. At 30/10 Hz every third frame casts a new lidar
sweep; both the overall median and the median of sweep frames are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.sim.bag_writer import write_bag
from bev_quant_ros.sim.conditions import CONDITIONS
from bev_quant_ros.sim.frames import FrameGenerator, generate_frames

GOAL_MS = 100.0


def frame_times(condition: str, frames: int) -> tuple[list[float], list[bool]]:
    gen = FrameGenerator(0, condition, load_rig(), 30.0, 10.0)
    gen.frame(0)  # warm-up: numba cache load, first world chunks
    times, sweep = [], []
    for k in range(1, frames + 1):
        start = time.perf_counter()
        gen.frame(k)
        times.append((time.perf_counter() - start) * 1e3)
        sweep.append(k % 3 == 0)
    return times, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--bag-frames", type=int, default=90)
    parser.add_argument("--out", default="benchmarks/results/synth.json")
    args = parser.parse_args()
    per_condition = {}
    for condition in CONDITIONS:
        times, sweep = frame_times(condition, args.frames)
        t, s = np.array(times), np.array(sweep)
        per_condition[condition] = {"median_ms": round(float(np.median(t)), 1),
                                    "p90_ms": round(float(np.percentile(t, 90)), 1),
                                    "median_sweep_frame_ms": round(float(np.median(t[s])), 1),
                                    "median_camera_only_frame_ms": round(float(np.median(t[~s])), 1)}
        print(condition, per_condition[condition])
    rig = load_rig()
    tmp = Path(tempfile.mkdtemp())
    bags = {}
    try:
        for compressed in (False, True):
            summary = write_bag(tmp / f"bag{int(compressed)}", generate_frames(0, "day", args.bag_frames, rig), rig,
                                compressed=compressed)
            bags["compressed" if compressed else "raw"] = {
                "frames": summary.frames, "seconds": round(summary.seconds, 2), "size_mb": round(summary.size_mb, 1),
                "ms_per_frame": round(summary.seconds / summary.frames * 1e3, 1)}
            print("bag", bags)
    finally:
        shutil.rmtree(tmp)
    worst = max(c["median_ms"] for c in per_condition.values())
    result = {
        "benchmark": "synthetic frame generation (6 x 800x450 cameras + 32x1000 lidar sweep every 3rd frame)",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "frames_per_condition": args.frames, "goal_median_ms": GOAL_MS, "worst_condition_median_ms": worst,
        "meets_goal": worst <= GOAL_MS, "conditions": per_condition, "bag_write_mcap": bags,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"worst_condition_median_ms": worst, "meets_goal": worst <= GOAL_MS}))


if __name__ == "__main__":
    main()
