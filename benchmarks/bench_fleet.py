"""`evaluate` of 8 drives as Ray tasks on a local cluster of 1 and of 2 CPUs, side by side in one run.

The drives are 8 small synthetic bags (JPEG cameras, made once under .cache/), the model the
shipped INT8 CPU one. Each cluster is started fresh; before timing, one warm-up task per
worker imports the package and loads numba's cache (what a long-running cluster has paid
already), and the round trip of an empty task is measured (Ray's overhead per task). The
timed run is `evaluate_fleet` over the 8 drives, one task each; its merged NDS must equal the
in-process run's. The machine's load average is recorded before and after.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_fleet.py [--out benchmarks/results/fleet.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import ray

from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.evaluation.drive_tasks import EvaluateJob, evaluate_fleet, evaluate_source
from bev_quant_ros.evaluation.offline import EvaluationRun
from bev_quant_ros.fleet.runners import InProcessRunner, RayRunner, Runner, TaskResult, run_tasks
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.resources import default_model_path
from bev_quant_ros.sim import CONDITIONS, generate_frames
from bev_quant_ros.sim.bag_writer import write_bag

DRIVES, FRAMES = 8, 20
DRIVES_DIR = Path(".cache") / "bench_fleet" / f"drives_{DRIVES}x{FRAMES}"
EMPTY_TASKS = 50


def drives_dir() -> Path:
    """8 bags of FRAMES frames (conditions in turn, seeds 100200..), made on first use."""
    for k in range(DRIVES):
        bag = DRIVES_DIR / f"drive_{k}"
        if not (bag / "metadata.yaml").is_file():
            DRIVES_DIR.mkdir(parents=True, exist_ok=True)
            condition = CONDITIONS[k % len(CONDITIONS)]
            write_bag(bag, generate_frames(100_200 + k, condition, FRAMES), load_rig(), compressed=True)
    return DRIVES_DIR


@ray.remote(num_cpus=1)
def _empty() -> None:
    return None


def empty_task_ms() -> float:
    """Median round trip (submit, schedule, run nothing, get) of one empty task."""
    ray.get(_empty.remote())
    times = []
    for _ in range(EMPTY_TASKS):
        start = time.perf_counter()
        ray.get(_empty.remote())
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def timed_fleet(job: EvaluateJob, runner: Runner) -> tuple[float, list[TaskResult]]:
    start = time.perf_counter()
    results = evaluate_fleet(job, drives_dir(), runner)
    wall = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"bench_fleet: {failed[0].name} failed: {failed[0].error}")
    return wall, results


def nds(results: list[TaskResult]) -> float:
    return EvaluationRun.merged(r.value.run for r in results).summary("all")["NDS"]


def on_ray(job: EvaluateJob, cpus: int) -> dict:
    """A fresh local cluster of ``cpus`` CPUs: warm-up, empty-task overhead, the timed run."""
    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False)
    try:
        with RayRunner() as runner:
            warm = [f"synth:day:100199:{k + 1}" for k in range(cpus)]  # one per worker, run at once
            run_tasks(runner, evaluate_source, warm, [(job, s) for s in warm], desc="warm-up")
            overhead = empty_task_ms()
            wall, results = timed_fleet(job, runner)
    finally:
        ray.shutdown()
    return {"workers": cpus, "wall_s": round(wall, 3), "empty_task_round_trip_ms": round(overhead, 3),
            "NDS": nds(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fleet.json"))
    args = parser.parse_args()
    model = default_model_path("int8", "onnxruntime")
    job = EvaluateJob(str(model), "onnxruntime", 0.05, ReaderSettings.from_params({"image_transport": "compressed"}),
                      "bag")
    drives_dir()
    load_before = os.getloadavg()
    in_process_wall, in_process = timed_fleet(job, InProcessRunner())
    one, two = on_ray(job, 1), on_ray(job, 2)
    for run in (one, two):
        if abs(run["NDS"] - nds(in_process)) > 1e-9:
            raise SystemExit(f"bench_fleet: NDS {run['NDS']} on Ray differs from in-process {nds(in_process)}")
    result = {
        "drives": DRIVES, "frames_per_drive": FRAMES, "model": model.name,
        "in_process_wall_s": round(in_process_wall, 3), "ray_1_worker": one, "ray_2_workers": two,
        "speedup_2_vs_1": round(one["wall_s"] / two["wall_s"], 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
