"""Inference engines behind one interface (ONNX Runtime on CPU, TensorRT on Jetson)."""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BACKENDS": "factory",
    "BackendUnavailableError": "factory",
    "BuildOptions": "build",
    "CONTRACT_INPUTS": "contract",
    "CONTRACT_OUTPUTS": "contract",
    "Engine": "base",
    "EngineDescription": "base",
    "FRAME_INPUTS": "base",
    "check_contract": "io_check",
    "create_engine": "factory",
    "ensure_engine": "build",
    "select_backend": "factory",
    "tensorrt_available": "factory",
})
