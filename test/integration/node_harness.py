"""bev_perception_node as its own process, and a test-side node that feeds and watches it.

Shared by the node pipeline and fault-injection suites: one node process per test
module; the harness publishes simulated sensors (real messages over DDS), keeps the
detections by stamp and every diagnostics report, and reads the node's log lines
as they come, so a test can count the lines naming one cause.
"""

from __future__ import annotations

import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.ros.message_decoding import stamp_to_ns
from integration.ros_helpers import installed_executable, spin_until, start_process, stop_process
from integration.sensor_publisher import RELIABLE, SimSensorPublisher

NODE = "bev_perception_node"
OUTPUT_TIMEOUT_S = 10.0
SIM_EPOCH_NS = 1_700_000_000_000_000_000  # the simulator's first stamp
TEST_PARAMS = ("precision:=fp32", "qos_reliability:=reliable", "score_threshold:=0.01",
               "diagnostics_period_s:=0.5", "camera_timeout_s:=0.5")


class NodeLog:
    """The node process's stderr (where ROS logging goes), line by line, read in the background."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str, since: int = 0) -> int:
        return sum(text in line for line in self.lines[since:])


class Harness:
    """Test-side ROS node: sensor publishers plus listeners for the node's outputs."""

    def __init__(self, log: NodeLog) -> None:
        self.log = log
        self.node = rclpy.create_node("node_test_harness")
        self.sensors = SimSensorPublisher(self.node, load_rig())
        self.detections: dict[int, Detection3DArray] = {}
        self.arrivals: list[int] = []  # stamps of every detections message, in arrival order
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(Detection3DArray, f"/{NODE}/detections", self._on_detections, RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.reset_client = self.node.create_client(Trigger, f"/{NODE}/reset")
        self.offset_ns = time.time_ns() - SIM_EPOCH_NS  # sim stamps -> now

    def _on_detections(self, msg: Detection3DArray) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.detections[stamp] = msg
        self.arrivals.append(stamp)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                self.diagnostics.append({"message": status.message, "level": str(status.level[0]),
                                         **{kv.key: kv.value for kv in status.values}})

    def stream(self, frames, offset_ns: int | None = None, **kwargs) -> list[int]:
        """Publish frames in lockstep: each waits for its detections (or a timeout).

        Lockstep makes the assertions independent of machine load; throughput with
        latest-wins dropping is measured in benchmarks/, not here.
        """
        stamps = []
        for frame in frames:
            stamp = self.sensors.publish_frame(frame, self.offset_ns if offset_ns is None else offset_ns, **kwargs)
            spin_until(self.node, lambda: stamp in self.detections, OUTPUT_TIMEOUT_S)
            stamps.append(stamp)
        return stamps

    def diagnostics_after(self, since: int | None = None, timeout_s: float = 5.0) -> dict[str, str]:
        """The first diagnostics report received after ``since`` reports (default: from now on)."""
        since = len(self.diagnostics) if since is None else since
        assert spin_until(self.node, lambda: len(self.diagnostics) > since, timeout_s), "no diagnostics"
        return self.diagnostics[-1]

    def counter(self, key: str) -> int:
        """A diagnostics counter as of the next report (0 while never counted)."""
        return int(self.diagnostics_after().get(key, "0"))


@contextmanager
def running_node(model_path: Path, *params: str, raw_sensors: bool = True) -> Iterator[Harness]:
    """Start the node with the test parameters (plus ``params``), yield a harness; with ``raw_sensors``
    after the node subscribed to the harness's sensor publishers (raw images on the default topics)."""
    rclpy.init()
    args = [installed_executable(NODE), "--ros-args", "-p", f"model_path:={model_path}"]
    for param in (*TEST_PARAMS, *params):
        args += ["-p", param]
    process = start_process(args)
    harness = Harness(NodeLog(process))
    try:
        harness.sensors.publish_static(time.time_ns())
        assert spin_until(harness.node, lambda: harness.diagnostics or process.poll() is not None, 60.0)
        assert process.poll() is None, "\n".join(harness.log.lines[-50:])
        publishers = [*harness.sensors.images, *harness.sensors.infos, harness.sensors.lidar, harness.sensors.odom]
        if raw_sensors:
            assert spin_until(harness.node, lambda: all(p.get_subscription_count() > 0 for p in publishers), 10.0)
        harness.process = process
        yield harness
        assert process.poll() is None, "the node died during the tests:\n" + "\n".join(harness.log.lines[-50:])
    finally:
        code, _, _ = stop_process(process)
        print("\n".join(harness.log.lines[-300:]))  # shown by pytest when a test of the module failed
        harness.node.destroy_node()
        rclpy.try_shutdown()
    assert code == 0, "node did not shut down cleanly:\n" + "\n".join(harness.log.lines[-30:])
