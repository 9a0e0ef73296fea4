"""Simulated drives written as rosbag2 files: the tests' stand-in for recordings."""

from pathlib import Path

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag


def write_synth_bag(path: Path, seed: int, condition: str, frames: int, compressed: bool = True) -> Path:
    """A simulated drive on the shipped rig as a rosbag2 (compressed cameras unless told)."""
    write_bag(path, generate_frames(seed, condition, frames), load_rig(), compressed=compressed)
    return path
