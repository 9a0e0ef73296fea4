"""Detection metrics and offline evaluation of the BEV pipeline."""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DetectionMetrics": "metrics",
    "EvalConfig": "metrics",
    "evaluate_detections": "metrics",
    "run_live": "live",
    "run_pipeline": "offline",
})
