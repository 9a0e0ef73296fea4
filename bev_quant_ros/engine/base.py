"""The one inference interface the pipeline, node, evaluation and benchmarks code against.

An `Engine` owns the recurrent state: callers pass only the per-frame inputs
(`FRAME_INPUTS`); the backend feeds its own previous `bev_state` as `prev_bev`
and the `prev_valid` flag, so on a GPU the state never leaves device memory.
`create_engine` picks a backend by name, `auto` preferring TensorRT when it
is importable and a CUDA GPU is present (the Jetson case) and ONNX Runtime
otherwise (CPU, CI).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bev_quant_ros.engine.contract import CONTRACT_INPUTS, STATE_INPUT
from bev_quant_ros.engine.io_check import TensorSpec
from bev_quant_ros.errors import ConfigError, EngineInputError

__all__ = ["BACKENDS", "FRAME_INPUTS", "PREV_VALID_INPUT", "Engine", "EngineDescription", "TensorSpec",
           "create_engine", "frame_array", "read_only_view", "select_backend", "tensorrt_available"]

LOG = logging.getLogger(__name__)
PREV_VALID_INPUT = "prev_valid"
# what a caller passes each frame; the engine supplies the state inputs itself
FRAME_INPUTS: tuple[str, ...] = tuple(n for n in CONTRACT_INPUTS if n not in (STATE_INPUT, PREV_VALID_INPUT))
BACKENDS = ("auto", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class EngineDescription:
    """What runs: backend, precision, providers and the model's tensors (for logs and diagnostics)."""

    backend: str
    precision: str
    providers: tuple[str, ...]
    model_path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, int]
    details: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (shapes as lists)."""
        data = asdict(self)
        for key in ("inputs", "outputs"):
            data[key] = [{**spec, "shape": list(spec["shape"])} for spec in data[key]]
        data["providers"] = list(self.providers)
        data["dims"], data["details"] = dict(self.dims), dict(self.details)
        return data


class Engine(ABC):
    """A loaded model with its recurrent BEV state (see module docstring).

    Not thread-safe: one caller at a time (the node's inference thread).
    """

    @abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one frame of `FRAME_INPUTS`; return read-only `heatmap`, `box_reg`, `bev_state`.

        The returned arrays are views of engine buffers, valid until the next call.
        """

    @abstractmethod
    def reset_state(self) -> None:
        """Zero the state; the next frame runs with `prev_valid = 0`."""

    @abstractmethod
    def warmup(self, iterations: int = 3) -> None:
        """Run dummy frames (allocator, kernel selection) without touching the recurrent state."""

    @abstractmethod
    def describe(self) -> EngineDescription:
        """Backend, precision, provider(s) and the tensor specs."""

    @property
    @abstractmethod
    def state_valid(self) -> bool:
        """True when the next frame will see a valid previous state (`prev_valid = 1`)."""


def frame_array(inputs: Mapping[str, np.ndarray], spec: TensorSpec) -> np.ndarray:
    """The caller's array for `spec`, checked; copied only when it is not C-contiguous.

    A wrong dtype or shape is an error rather than a silent cast: it means the
    preprocessing and the model config disagree.
    """
    try:
        array = inputs[spec.name]
    except KeyError:
        raise EngineInputError(f"frame lacks input '{spec.name}' (needs {list(FRAME_INPUTS)})") from None
    if array.shape != spec.shape or array.dtype.name != spec.dtype:
        raise EngineInputError(
            f"input '{spec.name}' is {array.dtype.name}{list(array.shape)}, "
            f"model wants {spec.dtype}{list(spec.shape)}")
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def read_only_view(array: np.ndarray) -> np.ndarray:
    """A non-writeable view of an engine buffer: callers cannot corrupt the engine's outputs."""
    view = array.view()
    view.flags.writeable = False
    return view


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
    if backend == "tensorrt":
        from bev_quant_ros.engine.tensorrt_backend import TensorRTEngine

        return TensorRTEngine
    from bev_quant_ros.engine.onnxruntime_backend import OnnxRuntimeEngine

    return OnnxRuntimeEngine


def create_engine(model_path: str | Path, backend: str = "auto", precision: str | None = None,
                  **options: Any) -> Engine:
    """Load `model_path` with the requested backend.

    With an explicit backend an option it does not take is a `ConfigError`;
    with `auto` the options meant for the other backend are dropped (logged),
    so one parameter set can serve both the Jetson and the CPU.
    """
    chosen, reason = select_backend(backend)
    LOG.info("engine backend: %s (%s)", chosen, reason)
    cls = _backend_class(chosen)
    internal = {"self", "model_path", "precision", "selection_reason"}
    accepted = set(inspect.signature(cls.__init__).parameters) - internal
    unknown = sorted(set(options) - accepted)
    if unknown and backend != "auto":
        raise ConfigError(f"{chosen} backend does not take option(s) {unknown}; it takes {sorted(accepted)}")
    if unknown:
        LOG.info("options %s not used by the %s backend", unknown, chosen)
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return cls(model_path, precision=precision, selection_reason=reason, **kwargs)
