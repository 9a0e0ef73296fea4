"""The perception core: torch-free and ROS-free, shared by the node, the drive readers,
calibration, evaluation and the benchmarks (sensor frames in, boxes out)."""
