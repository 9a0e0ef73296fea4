"""launch_testing: the launch file brings the node up, detections flow, shutdown is clean.

Runs where launch_testing is installed and bev_quant_ros is in the ament index, i.e. a
ROS 2 install after `colcon build` (`colcon test`, or `launch_test
test/launch/test_bev_perception_launch.py`): the launch file finds its parameters file
in share/bev_quant_ros and launch_ros the node in lib/bev_quant_ros. pytest skips this
file with the reason printed where launch_testing is missing (the PyPI-only CPU setup), its
pytest plugin is disabled (`-p no:launch_testing`: the tests would run without the launch),
or bev_quant_ros is not in the ament index (an editable pip install).
"""

import os
import sys
import time
import unittest
from pathlib import Path

# Read before this file imports pytest: the `launch_test` CLI does not import it first.
_COLLECTED_BY_PYTEST = "pytest" in sys.modules

import pytest  # noqa: E402

pytest.importorskip("launch_testing", reason="launch_testing is not installed (not on PyPI; part of a ROS 2 install)")
if _COLLECTED_BY_PYTEST and "launch_testing.pytest.hooks" not in sys.modules:
    pytest.skip("launch_testing's pytest plugin is not loaded (-p no:launch_testing): "
                "run `launch_test test/launch/test_bev_perception_launch.py`", allow_module_level=True)

# Before any DDS participant exists, here and in the node (it inherits this environment):
# `launch_test` does not load conftest.py, and over default UDP camera-sized messages arrive late.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python import has_resource  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test"))
from bev_quant_ros.perception.geometry import load_rig  # noqa: E402
from bev_quant_ros.resources import default_model_path  # noqa: E402
from bev_quant_ros.ros.message_decoding import stamp_to_ns  # noqa: E402
from bev_quant_ros.sim import generate_frames  # noqa: E402
from integration.sensor_publisher import RELIABLE, SimSensorPublisher  # noqa: E402

MODEL = default_model_path("fp32")  # the shipped FP32 model: runs on any CPU


# A mark, not pytest.skip(): launch_testing's plugin imports this file while making its collector,
# where a module-level skip ends a run naming this file with "found no collectors".
@pytest.mark.launch_test
@pytest.mark.skipif(not has_resource("packages", "bev_quant_ros"),
                    reason="bev_quant_ros is not in the ament index (AMENT_PREFIX_PATH), so launch_ros "
                    "cannot find the node: build it with colcon, or `setup.py install --prefix P` and "
                    "AMENT_PREFIX_PATH=P:$AMENT_PREFIX_PATH")
def generate_test_description():
    bringup = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(ROOT / "launch" / "bev_perception.launch.py")),
        launch_arguments={"model_path": str(MODEL), "precision": "fp32"}.items())
    return launch.LaunchDescription([bringup, launch_testing.actions.ReadyToTest()])


class TestDetectionsFlow(unittest.TestCase):
    def test_launch_arguments_reach_the_node(self, proc_output):
        proc_output.assertWaitFor(f"fp32 model {MODEL}", timeout=30.0)

    def test_detections_for_published_frames(self):
        rclpy.init()
        node = rclpy.create_node("launch_test_client")
        try:
            received = {}
            node.create_subscription(Detection3DArray, "/bev_perception_node/detections",
                                     lambda m: received.__setitem__(stamp_to_ns(m.header.stamp), m), RELIABLE)
            sensors = SimSensorPublisher(node, load_rig())
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and not all(
                    p.get_subscription_count() > 0 for p in [*sensors.images, sensors.lidar, sensors.odom]):
                rclpy.spin_once(node, timeout_sec=0.1)
            offset = time.time_ns() - 1_700_000_000_000_000_000
            stamps = []
            for frame in generate_frames(100_006, "day", 10):
                stamps.append(sensors.publish_frame(frame, offset))
                end = time.monotonic() + 5.0
                while stamps[-1] not in received and time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.05)
            self.assertGreaterEqual(sum(s in received for s in stamps), 9)
            self.assertEqual(received[stamps[-1]].header.frame_id, "base_link")
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
