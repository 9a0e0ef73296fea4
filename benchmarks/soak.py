"""Soak: the demo bag looped into bev_perception_node at 30 Hz for 10 minutes (CPU INT8 model).

Goals (issue 13): node RSS after warm-up vs at the end grows <= 5 %; per-frame latency p99 of
the first minute and of the last minute within 20 % of each other; dropped frames counted.
Latency here is the node's own wall-clock processing time per frame
(``~/debug/processing_time_ms``: message conversion, pipeline, publishing): the bag loops, so
its stamps repeat and stamp-based latencies are not comparable across loops. Every loop
restarts bag time, which the node sees as a time jump and answers with a state reset (also
exercised here). RSS is read from /proc/<pid>/status every 5 s.

Run: .venv/bin/python benchmarks/soak.py [--minutes 10] [--out benchmarks/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bev_quant_ros.evaluation.demo import ensure_bag
from bev_quant_ros.resources import default_model_path

NODE = "bev_perception_node"
WARMUP_S = 60.0
RSS_PERIOD_S = 5.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=150, help="frames of the looped demo bag")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = parser.parse_args()
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from std_msgs.msg import Float64
    from vision_msgs.msg import Detection3DArray

    from bev_quant_ros.evaluation.live import UNSUBSCRIBED_TOPICS
    from bev_quant_ros.replay.ros_player import BagPlayer

    bag = ensure_bag(args.frames)
    with Reader(bag) as reader:
        topics = [c.topic for c in reader.connections if c.topic not in UNSUBSCRIBED_TOPICS]
    model = default_model_path("int8")
    node = subprocess.Popen([str(Path(sys.executable).parent / NODE), "--ros-args", "-p", f"model_path:={model}",
                             "-p", "use_sim_time:=true", "-p", "qos_reliability:=reliable",
                             "-p", "image_transport:=compressed"], env=dict(os.environ))
    rclpy.init()
    listener = rclpy.create_node("bev_quant_soak")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    processing: list[tuple[float, float]] = []  # (monotonic arrival, processing ms)
    detections = [0]
    listener.create_subscription(Float64, f"/{NODE}/debug/processing_time_ms",
                                 lambda m: processing.append((time.monotonic(), m.data)), reliable)
    listener.create_subscription(Detection3DArray, f"/{NODE}/detections",
                                 lambda m: detections.__setitem__(0, detections[0] + 1), reliable)
    stop = threading.Event()
    executor = SingleThreadedExecutor(context=listener.context)
    executor.add_node(listener)
    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    while not listener.count_publishers(f"/{NODE}/detections") and node.poll() is None:
        time.sleep(0.1)
    player = BagPlayer(bag, loop=True, topics=topics, wait_for_subscribers_s=30.0)
    summary: list = []
    playing = threading.Thread(target=lambda: summary.append(player.play(listener, stop)), daemon=True)
    start = time.monotonic()
    playing.start()
    rss: list[tuple[float, float]] = []
    load: list[float] = []  # 1-minute load average at each RSS sample: other work on the machine shows here
    try:
        while time.monotonic() - start < args.minutes * 60.0 and node.poll() is None:
            rss.append((time.monotonic() - start, rss_mib(node.pid)))
            load.append(os.getloadavg()[0])
            print(f"soak {rss[-1][0]:6.0f} s  rss {rss[-1][1]:7.1f} MiB  frames out {detections[0]}  "
                  f"load {load[-1]:.2f}", flush=True)
            time.sleep(RSS_PERIOD_S)
    finally:
        stop.set()
        playing.join(timeout=30.0)
        spinner.join(timeout=5.0)
        listener.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(subprocess.signal.SIGINT)
        code = node.wait(timeout=30)
    camera_frames = summary[0].counts.get("/CAM_FRONT/image_raw/compressed", 0) if summary else 0
    after_warmup = next(m for t, m in rss if t >= WARMUP_S)
    per_minute = int(WARMUP_S / RSS_PERIOD_S)
    times = np.array([t - start for t, _ in processing])
    values = np.array([v for _, v in processing])
    first = values[(times >= 0) & (times < WARMUP_S)]
    last = values[times >= times.max() - WARMUP_S]
    p99_first, p99_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
    report = {
        "benchmark": "demo bag looped at 30 Hz into bev_perception_node (INT8, CPU flavour, compressed cameras)",
        "minutes": args.minutes, "bag": str(bag), "model": str(model),
        "goals": {"rss_growth_after_warmup_pct": "<= 5", "processing_p99_last_vs_first_minute_pct": "<= 20"},
        "rss_mib": {"after_warmup": after_warmup, "end": rss[-1][1], "max": max(m for _, m in rss),
                    "samples": [[round(t, 1), round(m, 1)] for t, m in rss]},
        "rss_growth_after_warmup_pct": 100.0 * (rss[-1][1] - after_warmup) / after_warmup,
        "processing_ms": {"first_minute_p99": p99_first, "last_minute_p99": p99_last,
                          "first_minute_p50": float(np.median(first)), "last_minute_p50": float(np.median(last))},
        "processing_p99_last_vs_first_minute_pct": 100.0 * (p99_last - p99_first) / p99_first,
        "camera_frames_sent": camera_frames, "frames_out": detections[0],
        "frames_dropped": camera_frames - detections[0],
        "frames_out_pct": 100.0 * detections[0] / max(camera_frames, 1),
        "player_passes": summary[0].passes if summary else 0,
        "node_exit_code": code,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": {"first_minute_max": max(load[:per_minute]),
                                        "last_minute_max": max(load[-per_minute:]),
                                        "max": max(load)}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("rss_mib",)}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
