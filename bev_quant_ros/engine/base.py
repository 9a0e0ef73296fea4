"""The one inference interface the pipeline, node, evaluation and benchmarks code against.

An `Engine` owns the recurrent state: callers pass only the per-frame inputs
(`FRAME_INPUTS`, plus the `OPTIONAL_INPUTS` its graph declares: `frame_input_names`); the
backend feeds its own previous `bev_state` as `prev_bev`
and the `prev_valid` flag, so on a GPU the state never leaves device memory.
Backends subclass `Engine` and declare the options they take (`OPTIONS`);
`engine.factory` picks one by name. Imports flow one way: contract -> base ->
backends -> factory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from bev_quant_ros.engine.contract import CONTRACT_INPUTS, OPTIONAL_INPUTS, STATE_INPUT
from bev_quant_ros.engine.io_check import TensorSpec
from bev_quant_ros.errors import EngineInputError

__all__ = ["FRAME_INPUTS", "PREV_VALID_INPUT", "Engine", "EngineDescription", "TensorSpec", "frame_array",
           "frame_input_names", "read_only_view"]

PREV_VALID_INPUT = "prev_valid"
# what a caller passes each frame; the engine supplies the state inputs itself
FRAME_INPUTS: tuple[str, ...] = tuple(n for n in CONTRACT_INPUTS if n not in (STATE_INPUT, PREV_VALID_INPUT))


def frame_input_names(model_inputs: Iterable[TensorSpec]) -> tuple[str, ...]:
    """What a caller passes to a model with these graph inputs: `FRAME_INPUTS`, then the optional
    inputs the graph declares (a v2 graph gets no `dt`/`lidar_valid`)."""
    declared = {spec.name for spec in model_inputs}
    return FRAME_INPUTS + tuple(n for n in OPTIONAL_INPUTS if n in declared)


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

    #: keyword options the backend's constructor takes besides the model and precision
    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one frame of `frame_input_names(inputs)`; return read-only `heatmap`, `box_reg`, `bev_state`.

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
