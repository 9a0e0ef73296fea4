"""Real-time replay evaluation: a bag played over DDS into the node process, as on a vehicle.

The node runs as its own process with ``use_sim_time`` so its clock follows the
player's ``/clock``: ``~/debug/pipeline_latency_ms`` then measures camera stamp to
publish in bag time, reported here in wall time (divided by the replay rate); it moves
in steps of the /clock updates. ``end_to_end_latency_ms`` is measured in wall time
instead: from when the player was due to send the frame's messages (bag time = header
stamp, as in the synthetic bags) to when its detections reached this process. This
module collects the node's outputs and diagnostics, and scores the detections
against the bag's ground truth.
It is a ROS-side tool (imports rclpy), like the replay player it drives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rosbags.rosbag2 import Reader

from bev_quant_ros.evaluation.metrics import evaluate_detections
from bev_quant_ros.ros.detection_encoding import detection_array_to_boxes
from bev_quant_ros.sim.ground_truth import GT_TOPIC, read_ground_truth

NODE_EXECUTABLE = "bev_perception_node"
NODE_NAME = "bev_perception_node"
UNSUBSCRIBED_TOPICS = {GT_TOPIC, "/tf"}  # the node takes ego poses from /odom by default


@dataclass
class LiveReport:
    """What came out of the node while the bag played."""

    camera_frames: int
    detection_messages: int
    output_span_s: float  # first to last detection message received
    pipeline_latency_ms: list[float] = field(default_factory=list)  # the node's own, on the /clock
    end_to_end_latency_ms: list[float] = field(default_factory=list)  # frame due -> detections received
    processing_time_ms: list[float] = field(default_factory=list)
    detections_per_frame: list[int] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    node_exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        def pct(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            p = np.percentile(values, [50, 95, 99])
            return {"p50": float(p[0]), "p95": float(p[1]), "p99": float(p[2])}

        engine = float(self.diagnostics.get("latency_ms.engine.p50", "nan"))
        processing = float(self.diagnostics.get("latency_ms.processing.p50", "nan"))
        return {
            "camera_frames": self.camera_frames,
            "detection_messages": self.detection_messages,
            "frames_processed_pct": 100.0 * self.detection_messages / max(self.camera_frames, 1),
            "output_rate_hz": (self.detection_messages - 1) / self.output_span_s if self.output_span_s > 0 else 0.0,
            "output_span_s": self.output_span_s,
            "pipeline_latency_ms": pct(self.pipeline_latency_ms),
            "end_to_end_latency_ms": pct(self.end_to_end_latency_ms),
            "processing_time_ms": pct(self.processing_time_ms),
            "stage_p50_ms": {stage: float(self.diagnostics.get(f"latency_ms.{stage}.p50", "nan"))
                             for stage in ("convert", "preprocess", "engine", "decode", "processing")},
            "node_added_cost_pct_of_engine": 100.0 * (processing - engine) / engine,
            "frames_dropped_latest_wins": int(self.diagnostics.get("count.frames_dropped_latest_wins", "0")),
            "mean_detections_per_frame": (float(np.mean(self.detections_per_frame))
                                          if self.detections_per_frame else 0.0),
            "metrics_vs_ground_truth": self.metrics,
            "backend": self.diagnostics.get("backend"),
            "precision": self.diagnostics.get("precision"),
            "node_exit_code": self.node_exit_code,
        }


def run_live(bag_dir: str | Path, node_args: Sequence[str], rate: float = 1.0,
             startup_timeout_s: float = 60.0) -> LiveReport:
    """Start the node, replay the bag into it once, and collect its outputs."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # camera-sized messages
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64
    from vision_msgs.msg import Detection3DArray

    from bev_quant_ros.replay.ros_player import BagPlayer
    from bev_quant_ros.ros.message_decoding import stamp_to_ns

    with Reader(Path(bag_dir)) as reader:  # replay only what the node subscribes to, so waiting for
        topics = [c.topic for c in reader.connections if c.topic not in UNSUBSCRIBED_TOPICS]  # its readers ends
    player = BagPlayer(bag_dir, rate=rate, topics=topics, wait_for_subscribers_s=30.0)
    ground_truth = read_ground_truth(bag_dir)
    executable = Path(sys.executable).parent / NODE_EXECUTABLE
    process = subprocess.Popen([str(executable), "--ros-args", "-p", "use_sim_time:=true", *node_args],
                               env=dict(os.environ))
    rclpy.init()
    listener = rclpy.create_node("bev_quant_live_eval")
    detections: dict[int, Any] = {}
    received_at: dict[int, float] = {}  # stamp -> monotonic time its detections arrived
    latency, processing, diagnostics = [], [], {}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

    def on_detections(msg: Detection3DArray) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        received_at[stamp], detections[stamp] = time.monotonic(), msg

    listener.create_subscription(Detection3DArray, f"/{NODE_NAME}/detections", on_detections, reliable)
    listener.create_subscription(Float64, f"/{NODE_NAME}/debug/pipeline_latency_ms",  # bag time -> wall time
                                 lambda m: latency.append(m.data / rate), reliable)
    listener.create_subscription(Float64, f"/{NODE_NAME}/debug/processing_time_ms",
                                 lambda m: processing.append(m.data), reliable)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):
                diagnostics.clear()
                diagnostics.update({kv.key: kv.value for kv in status.values})

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    spinning = threading.Event()
    spinner = threading.Thread(target=_spin, args=(listener, spinning), daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        detections_topic = f"/{NODE_NAME}/detections"  # advertised once the model is loaded and warm
        while (not listener.count_publishers(detections_topic) and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.1)  # (its timers run on /clock, so no diagnostics before the replay)
        if not listener.count_publishers(detections_topic):
            raise RuntimeError(f"{NODE_EXECUTABLE} did not come up (exit code {process.poll()})")
        playback = player.play(listener)
        time.sleep(1.5)  # last frames and one more diagnostics report
    finally:
        spinning.set()
        spinner.join(timeout=5.0)
        listener.destroy_node()
        rclpy.try_shutdown()
        if process.poll() is None:
            process.send_signal(subprocess.signal.SIGINT)
        code = process.wait(timeout=20)
    stamps = sorted(ground_truth)
    predictions = [detection_array_to_boxes(detections[s], with_scores=True) for s in stamps if s in detections]
    truths = [ground_truth[s] for s in stamps if s in detections]
    arrivals = sorted(received_at.values())
    span_s = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    end_to_end = [1e3 * (arrived - playback.first_pass.deadline_s(stamp)) for stamp, arrived in received_at.items()]
    report = LiveReport(len(stamps), len(detections), span_s, latency, end_to_end, processing,
                        [len(p) for p in predictions], dict(diagnostics), node_exit_code=code)
    if predictions:
        report.metrics = evaluate_detections(predictions, truths).to_json()
    return report


def _spin(node, stop: threading.Event) -> None:
    """Spin on a private executor (rclpy's global one does not survive shutdown/init cycles)."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
