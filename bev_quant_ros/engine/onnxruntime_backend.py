"""ONNX Runtime backend: the CPU path (and CI), FP32 or INT8 Q/DQ models.

Steady-state inference allocates no numpy buffers: outputs are written by IO
binding into arrays preallocated at load time, and the recurrent state lives in
two preallocated buffers that swap roles each frame (`prev_bev` reads one,
`bev_state` writes the other). One IO binding per parity is prepared up front,
so a frame only binds the caller's input arrays (zero-copy OrtValues over
their memory) and runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from bev_quant_ros.engine.base import (
    PREV_VALID_INPUT,
    Engine,
    EngineDescription,
    frame_array,
    frame_input_names,
    read_only_view,
)
from bev_quant_ros.engine.contract import CONTRACT_OUTPUTS, STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.engine.io_check import TensorSpec, check_contract, onnx_precision, onnx_specs, read_onnx
from bev_quant_ros.errors import ConfigError, ModelContractError

LOG = logging.getLogger(__name__)
CPU_PROVIDER = "CPUExecutionProvider"
OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PRECISIONS = ("fp32", "int8")


def resolve_providers(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """Requested execution providers that this onnxruntime build has, CPU always last; and the dropped ones."""
    available = set(ort.get_available_providers())
    kept = [p for p in requested if p in available and p != CPU_PROVIDER]
    dropped = [p for p in requested if p not in available]
    return kept + [CPU_PROVIDER], dropped


def session_options(intra_op_num_threads: int, inter_op_num_threads: int,
                    graph_optimization_level: str) -> ort.SessionOptions:
    """SessionOptions from the node/CLI parameters (0 threads = onnxruntime's default)."""
    if graph_optimization_level not in OPTIMIZATION_LEVELS:
        raise ConfigError(f"graph_optimization_level must be one of {sorted(OPTIMIZATION_LEVELS)}, "
                          f"got '{graph_optimization_level}'")
    if intra_op_num_threads < 0 or inter_op_num_threads < 0:
        raise ConfigError("intra_op_num_threads and inter_op_num_threads must be >= 0")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = inter_op_num_threads
    options.graph_optimization_level = OPTIMIZATION_LEVELS[graph_optimization_level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class OnnxRuntimeEngine(Engine):
    """`Engine` on an `onnxruntime.InferenceSession` with IO binding and double-buffered state."""

    OPTIONS = frozenset({"execution_providers", "intra_op_num_threads", "inter_op_num_threads",
                         "graph_optimization_level", "expected_dims"})

    def __init__(self, model_path: str | Path, precision: str | None = None, *,
                 execution_providers: Sequence[str] = (CPU_PROVIDER,),
                 intra_op_num_threads: int = 0, inter_op_num_threads: int = 0,
                 graph_optimization_level: str = "all",
                 expected_dims: Mapping[str, int] | None = None,
                 selection_reason: str = "") -> None:
        self._path = Path(model_path)
        model = read_onnx(self._path)
        inputs, outputs = onnx_specs(model)
        self._dims = check_contract(inputs, outputs, expected_dims)
        self._precision = self._check_precision(onnx_precision(model), precision)
        providers, dropped = resolve_providers(execution_providers)
        if dropped:
            LOG.warning("execution providers %s not available in this onnxruntime build; using %s",
                        dropped, providers)
        options = session_options(intra_op_num_threads, inter_op_num_threads, graph_optimization_level)
        try:
            self._session = ort.InferenceSession(str(self._path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/NotImplemented/...
            raise ModelContractError(f"onnxruntime cannot load {self._path}: {exc}") from exc
        self._inputs = {s.name: s for s in inputs}
        self._outputs = {s.name: s for s in outputs}
        self._frame_specs = tuple(self._inputs[n] for n in frame_input_names(inputs))
        self._details = {"selection_reason": selection_reason,
                         "graph_optimization_level": graph_optimization_level,
                         "intra_op_num_threads": str(intra_op_num_threads),
                         "inter_op_num_threads": str(inter_op_num_threads)}
        self._allocate()

    @staticmethod
    def _check_precision(detected: str, requested: str | None) -> str:
        if requested is None:
            return detected
        if requested not in PRECISIONS:
            raise ConfigError(f"onnxruntime precision must be one of {PRECISIONS}, got '{requested}'")
        if requested != detected:
            raise ModelContractError(f"precision '{requested}' requested but the model is {detected} "
                                     "(Q/DQ nodes decide: present = int8)")
        return requested

    def _allocate(self) -> None:
        """Preallocate every engine-owned buffer and one IO binding per state parity."""
        def empty(spec: TensorSpec) -> np.ndarray:
            return np.zeros(spec.shape, spec.dtype)

        state_spec = self._outputs[STATE_OUTPUT]
        self._states = (empty(state_spec), empty(state_spec))
        self._prev_valid = empty(self._inputs[PREV_VALID_INPUT])
        head = {n: empty(self._outputs[n]) for n in CONTRACT_OUTPUTS if n != STATE_OUTPUT}
        # OrtValues over our numpy memory; kept alive as long as the bindings use them
        self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (*self._states, self._prev_valid,
                                                                     *head.values())]
        state_values, prev_valid_value, head_values = self._values[:2], self._values[2], self._values[3:]
        self._bindings = []
        self._results = []
        for parity in (0, 1):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(STATE_INPUT, state_values[parity])
            binding.bind_ortvalue_output(STATE_OUTPUT, state_values[1 - parity])
            binding.bind_ortvalue_input(PREV_VALID_INPUT, prev_valid_value)
            for name, value in zip(head, head_values):
                binding.bind_ortvalue_output(name, value)
            self._bindings.append(binding)
            views = {name: read_only_view(array) for name, array in head.items()}
            views[STATE_OUTPUT] = read_only_view(self._states[1 - parity])
            self._results.append(MappingProxyType(views))
        self._parity = 0
        self._state_valid = False

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        binding = self._bindings[self._parity]
        for spec in self._frame_specs:
            binding.bind_ortvalue_input(spec.name, ort.OrtValue.ortvalue_from_numpy(frame_array(inputs, spec)))
        self._prev_valid[0] = 1 if self._state_valid else 0
        self._session.run_with_iobinding(binding)
        result = self._results[self._parity]
        self._parity = 1 - self._parity
        self._state_valid = True
        return result

    def reset_state(self) -> None:
        for state in self._states:
            state.fill(0)
        self._state_valid = False

    def warmup(self, iterations: int = 3) -> None:
        """Run zero frames through a scratch binding: the engine's buffers and state stay untouched."""
        feeds = {n: np.zeros(s.shape, s.dtype) for n, s in self._inputs.items()}
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        for _ in range(iterations):
            self._session.run_with_iobinding(binding)

    def describe(self) -> EngineDescription:
        return EngineDescription(
            backend="onnxruntime", precision=self._precision,
            providers=tuple(self._session.get_providers()), model_path=str(self._path),
            inputs=tuple(self._inputs.values()), outputs=tuple(self._outputs.values()),
            dims=dict(self._dims), details=dict(self._details))

    @property
    def state_valid(self) -> bool:
        return self._state_valid

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying session (benchmarks compare against a bare `session.run`)."""
        return self._session

