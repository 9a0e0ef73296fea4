"""Drive reading (BagDrive.frames: bag read, assembly, decode) next to the engine, in one run.

Every offline tool (evaluate, calibrate, train) reads bags through `BagDrive.frames`: the
node's `FrameAssembler` on bag time and its `SensorFrameBuilder` (JPEG at the largest
power-of-two reduction covering the model input, point cloud unpack). This measures its
throughput on the demo bag (150 frames, six 800x450 JPEG cameras) and on the same frames
with raw rgb8 images (written here once, ~1 GB under .cache/), and, in the same process,
the shipped INT8 CPU model's engine time per frame (`BevPipeline.process` timings,
one ONNX Runtime thread as the node runs it). Each bag is read once untimed first (page
cache, numba), then timed; the ratio says how many engine frames one read frame costs.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_drive_read.py [--out benchmarks/results/drive_read.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bev_quant_ros.drives.bag import BagDrive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.evaluation.demo import DEMO_SEED, ensure_bag
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import BevPipeline, SensorFrame
from bev_quant_ros.resources import default_model_path
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag

FRAMES = 150
RAW_BAG = Path(".cache") / "bench_drive_read" / f"day_{DEMO_SEED}_{FRAMES}_raw"


def raw_bag() -> Path:
    """The demo drive with raw rgb8 cameras, made on first use."""
    if not (RAW_BAG / "metadata.yaml").is_file():
        print(f"writing {RAW_BAG} ({FRAMES} frames, raw images)", flush=True)
        RAW_BAG.parent.mkdir(parents=True, exist_ok=True)
        write_bag(RAW_BAG, generate_frames(DEMO_SEED, "day", FRAMES), load_rig(), compressed=False)
    return RAW_BAG


def bag_size_mb(bag: Path) -> float:
    return sum(f.stat().st_size for f in bag.rglob("*") if f.is_file()) / 1e6


def time_read(drive: BagDrive, cfg: ModelConfig) -> tuple[float, int]:
    """Seconds and frames of one full pass over the drive's frames."""
    start = time.perf_counter()
    count = sum(1 for _ in drive.frames(cfg))
    return time.perf_counter() - start, count


def read_stats(bag: Path, transport: str, cfg: ModelConfig) -> dict:
    drive = BagDrive(bag, ReaderSettings.from_params({"image_transport": transport}), progress=False)
    start = time.perf_counter()
    _ = drive.rig  # CameraInfo + tf_static: read once per drive, not per frame
    rig_ms = (time.perf_counter() - start) * 1e3
    time_read(drive, cfg)  # untimed: page cache, numba
    seconds, frames = time_read(drive, cfg)
    return {"bag_mb": round(bag_size_mb(bag), 1), "frames": frames, "rig_ms": round(rig_ms, 1),
            "frames_per_s": round(frames / seconds, 1), "ms_per_frame": round(1e3 * seconds / frames, 2)}


def engine_stats(pipeline: BevPipeline, sensors: list[SensorFrame]) -> dict:
    """Median stage times of ``BevPipeline.process`` over the drive (one warm-up pass first)."""
    for frame in sensors[:10]:
        pipeline.process(frame)
    pipeline.request_reset()
    timings = [pipeline.process(frame).timings for frame in tqdm(sensors, desc="engine", unit="frame")]
    return {name: round(float(np.median([getattr(t, name) for t in timings])), 2)
            for name in ("engine_ms", "preprocess_ms", "decode_ms")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "drive_read.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    model = default_model_path("int8")
    pipeline = BevPipeline.from_model(model, backend="onnxruntime", intra_op_num_threads=1)
    pipeline.warmup()
    cfg = pipeline.model_config
    compressed = BagDrive(ensure_bag(FRAMES), ReaderSettings.from_params({"image_transport": "compressed"}),
                          progress=False)
    pipeline.set_rig(compressed.rig)
    engine = engine_stats(pipeline, [f.sensors for f in compressed.frames(cfg)])
    reads = {"compressed": read_stats(compressed.path, "compressed", cfg), "raw": read_stats(raw_bag(), "raw", cfg)}
    for stats in reads.values():
        stats["ratio_to_engine"] = round(stats["ms_per_frame"] / engine["engine_ms"], 2)
    result = {
        "benchmark": "BagDrive.frames (bag read + assembly + decode) vs engine time per frame, one process",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_avg_1m_at_start": round(load_at_start, 2)},
        "bag": f"demo day seed {DEMO_SEED}, {FRAMES} frames, 6 x 800x450 cameras",
        "model": model.name, "engine_threads": 1, "model_input": [cfg.image_height, cfg.image_width],
        "pipeline_median_ms": engine, "read": reads,
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
