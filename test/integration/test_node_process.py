"""The node as its own process, through its installed executable, over real DDS."""

from __future__ import annotations

import subprocess

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from integration.ros_helpers import installed_executable, spin_until, start_process, stop_process

NODE = "bev_perception_node"


def test_node_publishes_diagnostics_with_its_status(ros_context, tiny_model_path):
    process = start_process([installed_executable(NODE), "--ros-args", "-p", f"model_path:={tiny_model_path}",
                             "-p", "precision:=fp32", "-p", "diagnostics_period_s:=0.5"])
    listener = rclpy.create_node("diagnostics_listener")
    received: list[DiagnosticStatus] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        received.extend(s for s in msg.status if s.name.startswith(NODE))

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    try:
        got = spin_until(listener, lambda: len(received) >= 2, timeout_s=30.0)
        assert got, f"no diagnostics from {NODE}; stderr: {process.stderr and process.poll()}"
    finally:
        code, _, err = stop_process(process)
        listener.destroy_node()
    status = received[-1]
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == f"{NODE}: pipeline"
    assert status.level == DiagnosticStatus.WARN and status.message == "waiting for sensor data"
    assert values["precision"] == "fp32"  # the override reached the node
    assert values["backend"] == "onnxruntime"  # auto resolved: no TensorRT here
    assert float(values["uptime_s"]) >= 0.0
    assert code == 0, f"node did not shut down cleanly on SIGINT: {err}"


@pytest.mark.parametrize("override, name", [
    ("sync_slop_s:=5.0", "sync_slop_s"),          # outside the descriptor range
    ("backend:=cuda", "backend"),                  # not one of the choices
    ("score_threshold:=high", "score_threshold"),  # wrong type
    ("intra_op_num_threads:=-1", "intra_op_num_threads"),
    ("model_path:=/nonexistent/model.onnx", "model_path"),
    ("rig_path:=/nonexistent/rig.yaml", "rig_path"),
])
def test_bad_parameter_exits_non_zero_naming_it(override, name):
    result = subprocess.run([installed_executable(NODE), "--ros-args", "-p", override],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"parameter '{name}'" in result.stderr


def test_tensorrt_backend_where_it_cannot_run_exits_with_one_line_about_tensorrt():
    from bev_quant_ros.engine.factory import tensorrt_available

    ok, reason = tensorrt_available()
    if ok:
        pytest.skip(f"TensorRT runs on this machine ({reason}): the node would start")
    result = subprocess.run([installed_executable(NODE), "--ros-args", "-p", "backend:=tensorrt"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, result.stderr
    assert "parameter 'backend'" in errors[0] and "tensorrt" in errors[0] and reason in errors[0]
    assert "model_path" not in errors[0]


def test_repeated_ctrl_c_during_shutdown_exits_cleanly(ros_context, tiny_model_path):
    import signal
    import time

    process = start_process([installed_executable(NODE), "--ros-args", "-p", f"model_path:={tiny_model_path}",
                             "-p", "precision:=fp32", "-p", "diagnostics_period_s:=0.2"])
    listener = rclpy.create_node("sigint_listener")
    received: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    try:
        assert spin_until(listener, lambda: received or process.poll() is not None, 30.0) and process.poll() is None
    finally:
        listener.destroy_node()
    for _ in range(8):  # Ctrl-C held down: the first stops spinning, the others land in the cleanup
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    code, _, err = stop_process(process)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
