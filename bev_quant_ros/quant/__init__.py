"""INT8 quantization toolkit: calibration, ranges, sensitivity, precision plan, Q/DQ export."""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "CPU": "qdq",
    "METHODS": "ranges",
    "PrecisionPlan": "plan",
    "QuantConfig": "config",
    "TENSORRT": "qdq",
    "compute_thresholds": "ranges",
    "drift_curve": "drift",
    "read_plan": "plan",
    "write_qdq": "qdq",
})
