"""bev_quant_ros: INT8-quantized bird's-eye-view 3D detection for ROS 2."""

__version__ = "0.1.0"
