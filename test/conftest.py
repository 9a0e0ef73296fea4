"""Test-wide setup: DDS isolation, the tiny models, short simulated sequences, the torch gate.

Each pytest run gets its own DDS domain (ROS_DOMAIN_ID), set before any rclpy import
so in-process nodes and the node processes the tests start (which inherit
os.environ) see each other and nothing else. Pipeline, node and tool tests run a
torch-free contract graph at the tiny config's sizes (`tiny_model_path`), so they run
on a ROS machine without the training extra; tests of the real network use
`tiny_network_path`, exported from the network code with the same config.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from tiny_model import tiny_config, write_contract_model

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
# Shared memory + TCP for camera-sized messages: over default UDP (or with discovery limited
# to LOCALHOST) reliable 1 MB images were measured arriving up to 0.8 s late here.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")

TORCH_REASON = "torch (the optional 'train' extra) is not installed"
# test modules that import torch or bev_quant_ros.model at module level
TORCH_MODULES = frozenset({"test_model_export.py", "test_model_network.py", "test_model_train.py",
                           "test_model_warm_start.py", "test_model_prune.py"})


@pytest.hookimpl(tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport | None:
    """Skip the torch test modules, with the reason, before they import torch; else limit its threads."""
    if not isinstance(collector, pytest.Module) or collector.path.name not in TORCH_MODULES:
        return None
    if importlib.util.find_spec("torch") is None:
        where = (str(collector.path), None, f"Skipped: {TORCH_REASON}")
        return pytest.CollectReport(collector.nodeid, "skipped", where, [])
    import torch

    torch.set_num_threads(1)  # tiny tensors; extra threads only fight the other processes on the CPU
    return None


@pytest.fixture(scope="session")
def tiny_model_config():
    return tiny_config()


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model_config, tmp_path_factory) -> Path:
    """ONNX file (+ its model config YAML) of the torch-free contract graph at the tiny config's sizes."""
    return write_contract_model(tiny_model_config, tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_network_path(tiny_model_config, tmp_path_factory) -> Path:
    """ONNX file (+ its model config YAML) of an untrained tiny BEVDetector, for tests of the real graph."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    from bev_quant_ros.model.export import export_onnx
    from bev_quant_ros.model.network import BEVDetector

    torch.manual_seed(0)
    return export_onnx(BEVDetector(tiny_model_config).eval(),
                       tmp_path_factory.mktemp("tiny_network") / "tiny.onnx")


@pytest.fixture(scope="session")
def day_frames():
    """Four consecutive simulated frames (30 Hz cameras, 10 Hz lidar), seed 100001."""
    from bev_quant_ros.sim import generate_frames

    return list(generate_frames(100_001, "day", 4))
