"""The engine I/O contract (docs/architecture.md §2): tensor names and their shapes.

Every model, exporter, quantizer and runtime refers to tensors by these names;
shapes are symbolic here and resolved from the model config.
"""

from __future__ import annotations

NUM_CAMERAS = 6

# name -> symbolic shape; symbols are resolved by a ModelConfig
CONTRACT_INPUTS: dict[str, tuple[str | int, ...]] = {
    "images": (NUM_CAMERAS, 3, "H", "W"),
    "camera_valid": (NUM_CAMERAS,),
    # one sampling grid into the six cameras' features side by side (see preprocess.py)
    "cam_grid": ("Z*Ho", "Wo", 2),
    "lidar_bev": ("Cl", "Hb", "Wb"),
    "prev_bev": ("C", "Ho", "Wo"),  # the state lives on the head grid
    "ego_motion": (2, 3),
    "prev_valid": (1,),
}
# inputs a model may declare (v3 network): fed only to a graph that has them, so models
# without them (the shipped v2 ones) run unchanged
DT_INPUT = "dt"  # seconds since the previous processed frame; 0 on the first frame / after a reset
LIDAR_VALID_INPUT = "lidar_valid"  # 1 = lidar_bev holds a sweep's raster, 0 = zeros (camera-only frame)
OPTIONAL_INPUTS: dict[str, tuple[str | int, ...]] = {DT_INPUT: (1,), LIDAR_VALID_INPUT: (1,)}
# inputs whose values are bounded by definition: images are uint8 pixel values passed as float
# (the graph normalises them), so quantization ranges derived from them need no calibration
INPUT_VALUE_RANGES: dict[str, tuple[float, float]] = {"images": (0.0, 255.0)}
CONTRACT_OUTPUTS: dict[str, tuple[str | int, ...]] = {
    "heatmap": ("K", "Ho", "Wo"),
    "box_reg": ("R", "Ho", "Wo"),
    "bev_state": ("C", "Ho", "Wo"),
}

# box_reg channel layout, in order (R = 10)
BOX_REG_CHANNELS: tuple[str, ...] = (
    "offset_x", "offset_y", "z", "log_l", "log_w", "log_h", "sin_yaw", "cos_yaw", "vel_x", "vel_y",
)

STATE_INPUT = "prev_bev"
STATE_OUTPUT = "bev_state"
