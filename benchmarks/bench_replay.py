"""Replay six 900×1600 rgb8 camera streams at 30 Hz to a subscriber in another process.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_replay.py [--out benchmarks/results/replay.json]
Writes a 3 s camera bag under /tmp (about 2.3 GB, deleted afterwards), plays it
with `bev-quant replay` and receives it in a second process, both over Fast DDS with
FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (shared memory). The subscriber takes raw CDR bytes so it
measures the player and the transport, not Python deserialization. Reported: achieved message
rate, the player's lateness percentiles and CPU per message (whole process, start-up included),
the bag-reading share of it, messages lost, and each message's delivery delay relative to the
best-delivered one (arrival − recorded stamp, minus its minimum). On a shared 2-core machine
these numbers depend on what else runs: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CAMERAS, SHAPE, HZ, DURATION_S = 6, (900, 1600), 30.0, 3.0
TOPICS = [f"/cam{c}/image_raw" for c in range(CAMERAS)]
IDLE_END_S = 3.0  # the subscriber stops this long after the last message


def subscriber(expected: int, out: Path) -> None:
    """Second process: count raw Image messages with their arrival time and header stamp."""
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_replay_subscriber")
    arrivals: list[tuple[int, float, int]] = []

    def keep(index: int):
        def on_raw(raw: bytes) -> None:
            sec, nanosec = struct.unpack_from("<iI", raw, 4)  # CDR header, then Header.stamp
            arrivals.append((index, time.monotonic(), sec * 10**9 + nanosec))
        return on_raw

    # Subscribe only once the player's publishers are known here: a reader drops what a
    # publisher sent before the reader's side of discovery matched it (not a replay loss).
    deadline = time.monotonic() + 60.0
    while not all(node.count_publishers(t) for t in TOPICS) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    for index, topic in enumerate(TOPICS):
        node.create_subscription(Image, topic, keep(index), QoSProfile(depth=30), raw=True)
    last_change, seen = time.monotonic(), 0
    while len(arrivals) < expected and time.monotonic() - last_change < (IDLE_END_S if seen else 30.0):
        rclpy.spin_once(node, timeout_sec=0.1)
        if len(arrivals) != seen:
            last_change, seen = time.monotonic(), len(arrivals)
    out.write_text(json.dumps(arrivals))
    node.destroy_node()
    rclpy.try_shutdown()


def cpu_s(process: subprocess.Popen) -> float:
    """User + system CPU seconds of a child, reaped here with wait4 (Popen.wait drops the usage)."""
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def read_ms_per_message(bag: Path) -> float:
    """Cost of reading the bag alone (rosbags, page cache): the player's share besides publishing."""
    from bev_quant_ros.replay.bag_source import BagSource

    with BagSource(bag) as source:
        start = time.perf_counter()
        count = sum(1 for _ in source.records())
        return 1e3 * (time.perf_counter() - start) / count


def run_benchmark(workdir: Path) -> dict:
    from bev_quant_ros.replay.sample_bag import write_camera_bag

    bag = workdir / "cameras"
    start = time.perf_counter()
    published = write_camera_bag(bag, CAMERAS, SHAPE, HZ, DURATION_S)
    os.sync()  # else gigabytes of writeback compete with the replay being measured
    write_s = time.perf_counter() - start
    read_ms = read_ms_per_message(bag)
    load_before = os.getloadavg()[0]
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    arrivals_path, summary_path = workdir / "arrivals.json", workdir / "summary.json"
    sub = subprocess.Popen([sys.executable, __file__, "--subscriber", str(published), str(arrivals_path)],
                           env=env)
    player = subprocess.Popen([str(Path(sys.executable).parent / "bev-quant"), "replay", "--bag", str(bag),
                               "--wait-for-subscribers-s", "30", "--summary-json", str(summary_path)],
                              env=env, stdout=subprocess.PIPE, text=True)
    player_out = player.stdout.read()
    player_cpu_s = cpu_s(player)
    sub.wait(timeout=120)
    summary = json.loads(summary_path.read_text())
    arrivals = np.asarray(json.loads(arrivals_path.read_text()), dtype=float).reshape(-1, 3)
    received = len(arrivals)
    span_s = float(np.ptp(arrivals[:, 1])) if received > 1 else 0.0
    delay_ms = 1e3 * (arrivals[:, 1] - arrivals[:, 2] / 1e9)
    delay_ms -= delay_ms.min() if received else 0.0
    return {
        "bag": {"cameras": CAMERAS, "height": SHAPE[0], "width": SHAPE[1], "encoding": "rgb8",
                "hz": HZ, "duration_s": DURATION_S, "messages": published,
                "bytes_per_message": SHAPE[0] * SHAPE[1] * 3, "write_s": round(write_s, 2)},
        "transport": "Fast DDS, FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, reliable, depth 30",
        "player": {"published": summary["counts"], "wall_s": round(summary["wall_duration_s"], 3),
                   "lateness_p50_ms": round(summary["lateness_p50_ms"], 2),
                   "lateness_p95_ms": round(summary["lateness_p95_ms"], 2),
                   "lateness_max_ms": round(summary["lateness_max_ms"], 2),
                   "late_messages_over_1ms": summary["late_messages"], "cpu_s": round(player_cpu_s, 2),
                   "process_cpu_ms_per_message": round(1e3 * player_cpu_s / published, 2),
                   "bag_read_ms_per_message": round(read_ms, 2)},
        "subscriber": {"received": received, "lost": published - received,
                       "per_topic": {topic: int(np.count_nonzero(arrivals[:, 0] == index))
                                     for index, topic in enumerate(TOPICS)},
                       "achieved_rate_hz": round((received - 1) / span_s, 1) if span_s else 0.0,
                       "target_rate_hz": CAMERAS * HZ,
                       "achieved_mb_per_s": round(received * SHAPE[0] * SHAPE[1] * 3 / 1e6 / span_s, 1)
                       if span_s else 0.0,
                       "relative_delivery_delay_p50_ms": round(float(np.percentile(delay_ms, 50)), 2),
                       "relative_delivery_delay_p95_ms": round(float(np.percentile(delay_ms, 95)), 2)},
        "player_output": player_out.strip().splitlines(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1min_before": round(load_before, 2),
                    "load_avg_1min_after": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "replay.json")
    parser.add_argument("--subscriber", nargs=2, metavar=("EXPECTED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        subscriber(int(args.subscriber[0]), Path(args.subscriber[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench_replay_", dir="/tmp") as workdir:
        result = run_benchmark(Path(workdir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("player", "subscriber")}, indent=2))


if __name__ == "__main__":
    main()
