"""PyTorch reference network, training and ONNX export (optional extra: torch)."""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BEVDetector": "network",
    "export_onnx": "export",
})
