"""Time decode (per frame, the node's hot path) and evaluate_detections (offline).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_decode.py [--out benchmarks/results/decode.json]
Grid is the shipped model's output (models/bev_tiny.yaml: 5 classes, 64 × 64 cells over
±51.2 m). Two heatmaps: a realistic one (40 Gaussian blobs on low noise) and a worst case
(uniform noise: thousands of local maxima, capped by max_candidates).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS
from bev_quant_ros.evaluation.metrics import evaluate_detections
from bev_quant_ros.perception.box_decoding import DecodeConfig, decode
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D

GRID = 64
CONFIG = DecodeConfig(x_range_m=(-51.2, 51.2), y_range_m=(-51.2, 51.2))


def blob_heatmap(rng: np.random.Generator, num_objects: int) -> np.ndarray:
    heat = rng.uniform(0, 0.05, (len(CLASS_NAMES), GRID, GRID)).astype(np.float32)
    rows, cols = np.mgrid[:GRID, :GRID]
    for _ in range(num_objects):
        k, r, c = rng.integers(len(CLASS_NAMES)), *rng.uniform(0, GRID, 2)
        blob = rng.uniform(0.3, 1.0) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 2.0)
        heat[k] = np.maximum(heat[k], blob)
    return heat


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: numba compile / cache load
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def random_boxes(rng: np.random.Generator, n: int, scores: bool) -> Boxes3D:
    return Boxes3D(np.c_[rng.uniform(-50, 50, (n, 2)), np.zeros(n)], rng.uniform(0.5, 5, (n, 3)),
                   rng.uniform(-3, 3, n), rng.normal(size=(n, 2)),
                   list(rng.choice(CLASS_NAMES, n)), rng.uniform(size=n) if scores else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    box_reg = rng.normal(0, 0.5, (len(BOX_REG_CHANNELS), GRID, GRID)).astype(np.float32)
    realistic = blob_heatmap(rng, 40)
    worst = rng.uniform(0, 1, realistic.shape).astype(np.float32)
    gts = [random_boxes(rng, 40, False) for _ in range(500)]
    preds = [random_boxes(rng, 100, True) for _ in range(500)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "grid": [len(CLASS_NAMES), GRID, GRID],
        "decode_realistic_ms_median": median_ms(lambda: decode(realistic, box_reg, CONFIG), 200),
        "decode_realistic_detections": len(decode(realistic, box_reg, CONFIG)),
        "decode_worst_case_ms_median": median_ms(lambda: decode(worst, box_reg, CONFIG), 50),
        "evaluate_500_frames_40_gt_100_pred_ms": median_ms(
            lambda: evaluate_detections(preds, gts), 3),
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
