"""The node's per-frame work stage by stage, next to the engine, on the demo bag's messages.

Issue 7 asks for the node's cost over the bare engine (goal <= 25 % of engine time).
The live benchmark (bench_node_replay.py) gives it under DDS and a concurrent player, so
it swings with the machine's load; this one runs the node's own functions on the same
messages in one process, every stage once per frame in turn, so the ratios are stable.
Two camera transports: compressed (the demo bag: six 800x450 JPEGs, decoded at the largest
power-of-two reduction that covers the model input: 1/2 for v3's 232x128) and raw (the
same pictures as rgb8 Images, built here from full-size decodes: what a vehicle's camera
driver publishes).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_node_stages.py [--frames 60] \
        [--out benchmarks/results/node_stages.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage, PointCloud2

from bev_quant_ros.evaluation.demo import ensure_bag
from bev_quant_ros.perception.pipeline import BevPipeline, SensorFrame
from bev_quant_ros.perception.preprocess import lidar_bev, prepare_images
from bev_quant_ros.resources import default_model_path
from bev_quant_ros.ros.message_decoding import ScaledImageDecoder, compressed_to_rgb, image_to_rgb, pointcloud_to_points
from bev_quant_ros.ros.message_encoding import boxes_to_detection_array, boxes_to_markers, rgb_to_image
from bev_quant_ros.ros.parameters import DEFAULT_CAMERA_NAMES

GOAL_PCT = 25.0
# stages of each transport's frame, besides the engine (names as in the JSON)
COMMON_STAGES = ("pointcloud_unpack", "lidar_raster", "temporal_and_ego_motion", "decode_boxes",
                 "detections_msg", "detections_serialize", "markers_msg", "markers_serialize")
TRANSPORT_STAGES = {"compressed": ("jpeg_decode_scaled", "image_resize"), "raw": ("raw_image_view", "image_resize_raw")}


def read_frames(bag: Path, count: int) -> list[tuple[list[CompressedImage], PointCloud2]]:
    """(six camera JPEGs in the node's camera order, latest lidar sweep) per camera stamp."""
    topics = {f"/{name}/image_raw/compressed": i for i, name in enumerate(DEFAULT_CAMERA_NAMES)}
    images: dict[int, list] = defaultdict(lambda: [None] * len(topics))
    frames, cloud = [], None
    with Reader(bag) as reader:
        for connection, stamp, raw in reader.messages():
            if connection.msgtype == "sensor_msgs/msg/PointCloud2":
                cloud = deserialize_message(bytes(raw), PointCloud2)
            elif connection.topic in topics:
                images[stamp][topics[connection.topic]] = deserialize_message(bytes(raw), CompressedImage)
                if all(m is not None for m in images[stamp]) and cloud is not None:
                    frames.append((images.pop(stamp), cloud))
                    if len(frames) == count:
                        break
    return frames


def timed(times: dict[str, list[float]], stage: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = fn()
    times[stage].append((time.perf_counter() - start) * 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "node_stages.json")
    args = parser.parse_args()
    model = default_model_path("int8", "onnxruntime")
    pipeline = BevPipeline.from_model(model, backend="onnxruntime", intra_op_num_threads=1)
    pipeline.warmup()
    cfg = pipeline.model_config
    decoders = [ScaledImageDecoder(cfg.image_width, cfg.image_height, camera.width, camera.height)
                for camera in pipeline.rig.cameras]
    frames = read_frames(ensure_bag(150), args.frames)
    raw_frames = [[rgb_to_image(compressed_to_rgb(m), 0, "camera") for m in jpegs] for jpegs, _ in frames]
    times: dict[str, list[float]] = defaultdict(list)
    detection_counts: list[int] = []
    for index, ((jpegs, cloud), raws) in enumerate(zip(frames, raw_frames)):
        stamp = index * 33_333_333
        images = timed(times, "jpeg_decode_scaled", lambda: [d.decode(m) for d, m in zip(decoders, jpegs)])
        timed(times, "image_resize", lambda: prepare_images(images, cfg))
        full = timed(times, "raw_image_view", lambda: [image_to_rgb(m) for m in raws])
        timed(times, "image_resize_raw", lambda: prepare_images(full, cfg))
        points = timed(times, "pointcloud_unpack", lambda: pointcloud_to_points(cloud))
        timed(times, "lidar_raster", lambda: lidar_bev(points, pipeline.rig.T_ego_lidar, np.eye(4), np.eye(4),
                                                       0.0, cfg, ego_velocity_xy_yawrate=np.zeros(3)))
        prepared = pipeline.prepare(SensorFrame(stamp, images, points, stamp, np.eye(4), np.eye(4), np.zeros(3)))
        result = pipeline.infer(prepared)
        detection_counts.append(len(result.detections))
        times["engine"].append(result.timings.engine_ms)
        times["decode_boxes"].append(result.timings.decode_ms)
        times["temporal_and_ego_motion"].append(result.timings.preprocess_ms - prepared.preprocess_ms)
        detections = timed(times, "detections_msg",
                           lambda: boxes_to_detection_array(result.detections, stamp, "base_link"))
        timed(times, "detections_serialize", lambda: serialize_message(detections))
        markers = timed(times, "markers_msg", lambda: boxes_to_markers(result.detections, stamp, "base_link"))
        timed(times, "markers_serialize", lambda: serialize_message(markers))
    median = {stage: round(float(np.median(values[3:])), 3) for stage, values in times.items()}
    engine = median["engine"]
    transports = {}
    for transport, stages in TRANSPORT_STAGES.items():
        for markers in (True, False):
            used = [*stages, *(s for s in COMMON_STAGES if markers or not s.startswith("markers"))]
            cost = sum(median[s] for s in used)
            transports[f"{transport}{'' if markers else '_no_markers'}"] = {
                "node_cost_ms": round(cost, 2), "node_cost_pct_of_engine": round(100 * cost / engine, 1)}
    report = {"benchmark": "node stages on the demo bag's messages, one process (no DDS), medians",
              "model": model.name, "frames": len(frames), "engine_threads": 1, "goal_pct_of_engine": GOAL_PCT,
              "jpeg_decode_reduction": decoders[0].reduction,
              "stage_median_ms": median, "node_cost": transports,
              "mean_detections_per_frame": float(np.mean(detection_counts)),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_1m_at_end": os.getloadavg()[0]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"stage_median_ms": median, "node_cost": transports}, indent=1))


if __name__ == "__main__":
    main()
