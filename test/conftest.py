"""Test-wide setup: DDS isolation, a tiny untrained model, short simulated sequences.

Each pytest run gets its own DDS domain (ROS_DOMAIN_ID), set before any rclpy import
so in-process nodes and the node processes the tests start (which inherit
os.environ) see each other and nothing else. The tiny model is exported from
the real network code with small sizes, so pipeline, node and tool tests run
real ONNX Runtime kernels in a few milliseconds.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
# Shared memory + TCP for camera-sized messages: over default UDP (or with discovery limited
# to LOCALHOST) reliable 1 MB images were measured arriving up to 0.8 s late here.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")

@pytest.fixture(scope="session")
def tiny_model_config():
    from tiny_model import tiny_config

    return tiny_config()


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model_config, tmp_path_factory) -> Path:
    """ONNX file (+ its model config YAML) of an untrained tiny BEVDetector."""
    torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is needed to export the tiny model")
    from bev_quant_ros.model.export import export_onnx
    from bev_quant_ros.model.network import BEVDetector

    torch.manual_seed(0)
    return export_onnx(BEVDetector(tiny_model_config).eval(),
                       tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def day_frames():
    """Four consecutive simulated frames (30 Hz cameras, 10 Hz lidar), seed 100001."""
    from bev_quant_ros.sim import generate_frames

    return list(generate_frames(100_001, "day", 4))
