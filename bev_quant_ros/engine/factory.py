"""Pick and load an engine backend by name.

`auto` prefers TensorRT when it is importable and a CUDA GPU is present (the
Jetson case) and ONNX Runtime otherwise (CPU, CI). Backend modules are imported
only when chosen, so a machine without TensorRT never imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Mapping

from bev_quant_ros.engine.base import Engine
from bev_quant_ros.errors import ConfigError

__all__ = ["BACKENDS", "BackendUnavailableError", "backend_options", "create_engine", "select_backend",
           "supported_options", "tensorrt_available"]

LOG = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt")
_BACKEND_CLASSES = {"onnxruntime": ("bev_quant_ros.engine.onnxruntime_backend", "OnnxRuntimeEngine"),
                    "tensorrt": ("bev_quant_ros.engine.tensorrt_backend", "TensorRTEngine")}


class BackendUnavailableError(ConfigError):
    """The requested backend cannot run on this machine (missing library, driver or GPU)."""


def tensorrt_available() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, with the reason either way."""
    for module in ("tensorrt", "pycuda"):
        if importlib.util.find_spec(module) is None:
            return False, f"python module '{module}' is not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own error types per driver failure
        return False, f"no usable CUDA driver: {exc}"
    if count == 0:
        return False, "no CUDA GPU found"
    return True, f"tensorrt importable and {count} CUDA GPU(s) found ({cuda.Device(0).name()})"


def select_backend(requested: str = "auto") -> tuple[str, str]:
    """Resolve `auto` to a concrete backend; return (backend, reason)."""
    if requested not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got '{requested}'")
    if requested != "auto":
        return requested, f"backend '{requested}' requested"
    ok, reason = tensorrt_available()
    return ("tensorrt", f"auto: {reason}") if ok else ("onnxruntime", f"auto: TensorRT unavailable ({reason})")


def _backend_class(backend: str) -> type[Engine]:
    module, name = _BACKEND_CLASSES[backend]
    return getattr(importlib.import_module(module), name)


def backend_options(backend: str) -> frozenset[str]:
    """The options a concrete backend takes (its class's `OPTIONS`)."""
    if backend not in _BACKEND_CLASSES:
        raise ConfigError(f"backend must be one of {tuple(_BACKEND_CLASSES)}, got '{backend}'")
    return _backend_class(backend).OPTIONS


def supported_options(backend: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``backend`` takes: one parameter set serves every backend."""
    accepted = backend_options(backend)
    return {key: value for key, value in options.items() if key in accepted}


def create_engine(model_path: str | Path, backend: str = "auto", precision: str | None = None,
                  **options: Any) -> Engine:
    """Load `model_path` with the requested backend.

    With an explicit backend an option it does not take is a `ConfigError` and a
    backend that cannot run here is a `BackendUnavailableError`; with `auto` the
    options meant for the other backend are dropped (logged).
    """
    chosen, reason = select_backend(backend)
    if chosen == "tensorrt" and backend == "tensorrt":
        ok, why = tensorrt_available()
        if not ok:
            raise BackendUnavailableError(f"backend 'tensorrt' cannot run here: {why}")
    LOG.info("engine backend: %s (%s)", chosen, reason)
    accepted = backend_options(chosen)
    unknown = sorted(set(options) - accepted)
    if unknown and backend != "auto":
        raise ConfigError(f"{chosen} backend does not take option(s) {unknown}; it takes {sorted(accepted)}")
    if unknown:
        LOG.info("options %s not used by the %s backend", unknown, chosen)
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return _backend_class(chosen)(model_path, precision=precision, selection_reason=reason, **kwargs)
