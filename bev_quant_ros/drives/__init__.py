"""Drives in: any rosbag2 read with the node's own configuration, and the simulator.

One reader for evaluate, calibrate, sensitivity, the report, the demo, train and the
benchmarks: frames are assembled by the node's `FrameAssembler` and decoded by its
`SensorFrameBuilder`, so offline numbers are the node's numbers.
"""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BagDrive": "bag",
    "Drive": "frames",
    "DriveFrame": "frames",
    "ReaderSettings": "settings",
    "SynthDrive": "synth",
    "SynthSpec": "synth",
    "load_node_params": "settings",
    "open_drives": "spec",
    "synth_frames": "synth",
})
