"""Synthetic multi-sensor driving world: frames in memory and rosbag2 output."""

from bev_quant_ros.sim.conditions import CONDITIONS
from bev_quant_ros.sim.frames import SimFrame, generate_frames

__all__ = ["CONDITIONS", "SimFrame", "generate_frames"]
