"""TensorRT backend (Jetson Orin / any CUDA GPU): tensorrt 10+ Python API with pycuda.

Data path per frame, all on one CUDA stream: the caller's arrays are copied into
pinned host buffers (`cuda.pagelocked_empty`) and sent with async H2D copies;
tensor addresses are set by name (`IExecutionContext.set_tensor_address`) and
the engine runs with `execute_async_v3`; outputs come back with async D2H copies
and one stream synchronize. The recurrent state never leaves the device: two
device buffers swap roles each frame (`prev_bev` reads one, `bev_state` writes
the other); a host copy of `bev_state` is made only when `return_state` is on.
With `use_cuda_graph` one CUDA graph per state parity is captured (tensor
addresses are baked into a graph, hence two) and launched instead of
`execute_async_v3`.

The pycuda context is the device's *primary* context (shared with TensorRT and
the CUDA runtime), pushed around every call, so the engine may be used from a
thread other than the one that created it (ROS executors).

Verification status: NOT run here (no GPU, and the `tensorrt` wheels cannot
install on the development machines). Reviewed against the TensorRT 10/11 Python
API docs: ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_shape / get_tensor_dtype, IExecutionContext.set_tensor_address /
execute_async_v3(stream_handle), Runtime.deserialize_cuda_engine, and the CUDA
graph recipe of the TensorRT developer guide (one enqueue before capture, then
cudaStreamBeginCapture → execute_async_v3 → cudaStreamEndCapture →
cudaGraphInstantiate; capture via cuda-python's runtime bindings because pycuda
has no stream capture). `test/unit/test_engine_tensorrt.py` and
`benchmarks/gpu_check.sh` exercise all of it on a machine with a GPU.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np

from bev_quant_ros.engine.base import (
    PREV_VALID_INPUT,
    Engine,
    EngineDescription,
    frame_array,
    frame_input_names,
    read_only_view,
)
from bev_quant_ros.engine.build import BuildOptions, ensure_engine, import_tensorrt, read_cache_key
from bev_quant_ros.engine.contract import CONTRACT_OUTPUTS, STATE_INPUT, STATE_OUTPUT
from bev_quant_ros.engine.io_check import TensorSpec, check_contract, onnx_precision, read_onnx
from bev_quant_ros.errors import EngineBuildError, ModelContractError

LOG = logging.getLogger(__name__)
ENGINE_SUFFIXES = (".engine", ".plan")
HEAD_OUTPUTS = tuple(n for n in CONTRACT_OUTPUTS if n != STATE_OUTPUT)


class _CudaGraphs:
    """One instantiated CUDA graph per state parity, captured around `execute_async_v3`."""

    def __init__(self, context: Any, stream_handle: int, set_state_addresses: Any) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python layout
        self._cudart = cudart
        self._stream = stream_handle
        self._execs = []
        for parity in (0, 1):
            set_state_addresses(parity)
            context.execute_async_v3(stream_handle)  # flush deferred updates before capture (TRT guide)
            self._check(cudart.cudaStreamBeginCapture(
                stream_handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            context.execute_async_v3(stream_handle)
            graph = self._check(cudart.cudaStreamEndCapture(stream_handle))
            self._execs.append(self._check(cudart.cudaGraphInstantiate(graph, 0)))

    def _check(self, result: tuple) -> Any:
        err, *values = result
        if int(err) != 0:
            raise EngineBuildError(f"CUDA graph call failed: {self._cudart.cudaGetErrorString(err)[1]}")
        return values[0] if values else None

    def launch(self, parity: int) -> None:
        self._check(self._cudart.cudaGraphLaunch(self._execs[parity], self._stream))


class TensorRTEngine(Engine):
    """`Engine` on a TensorRT engine: pinned buffers, one stream, device-resident state."""

    OPTIONS = frozenset({"engine_cache_dir", "workspace_mib", "allow_fp16", "timing_cache_path", "use_cuda_graph",
                         "return_state", "device_index", "expected_dims"})

    def __init__(self, model_path: str | Path, precision: str | None = None, *,
                 engine_cache_dir: str | Path | None = None, workspace_mib: int = 1024,
                 allow_fp16: bool = True, timing_cache_path: str | Path | None = None,
                 use_cuda_graph: bool = False, return_state: bool = True, device_index: int = 0,
                 expected_dims: Mapping[str, int] | None = None, selection_reason: str = "") -> None:
        self._trt = trt = import_tensorrt("tensorrt")
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise EngineBuildError(f"pycuda is not importable: {exc}") from exc
        self._cuda = cuda
        cuda.init()
        self._context_handle = cuda.Device(device_index).retain_primary_context()
        self._path = Path(model_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with self._active():
            engine_path, self._precision = self._resolve_engine(
                precision, engine_cache_dir, workspace_mib, allow_fp16, timing_cache_path, device_index)
            self._engine = self._deserialize(engine_path)
            inputs, outputs = self._io_specs()
            self._dims = check_contract(inputs, outputs, expected_dims)
            self._inputs, self._outputs = {s.name: s for s in inputs}, {s.name: s for s in outputs}
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._return_state = return_state
            self._allocate()
            self._graphs = None
            if use_cuda_graph:
                self._graphs = _CudaGraphs(self._context, self._stream.handle, self._set_state_addresses)
                self._zero_states()  # the pre-capture enqueues wrote into the state buffers
        self._details = {"selection_reason": selection_reason, "engine_path": str(engine_path),
                         "tensorrt_version": str(trt.__version__), "gpu": str(cuda.Device(device_index).name()),
                         "cuda_graph": str(use_cuda_graph)}

    @contextmanager
    def _active(self) -> Iterator[None]:
        self._context_handle.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _resolve_engine(self, precision: str | None, cache_dir: str | Path | None, workspace_mib: int,
                        allow_fp16: bool, timing_cache_path: str | Path | None,
                        device_index: int) -> tuple[Path, str]:
        """A `.engine`/`.plan` is used as is; an ONNX goes through the engine cache (build on miss)."""
        if self._path.suffix in ENGINE_SUFFIXES:
            stored = read_cache_key(self._path.with_suffix(".engine.json"))
            return self._path, precision or (stored.precision if stored else "unknown")
        detected = onnx_precision(read_onnx(self._path))
        options = BuildOptions(precision=precision or detected, allow_fp16=allow_fp16,
                               workspace_mib=workspace_mib,
                               timing_cache_path=Path(timing_cache_path) if timing_cache_path else None)
        cache = Path(cache_dir) if cache_dir else self._path.parent
        path, _ = ensure_engine(self._path, cache, options, gpu_name=str(self._cuda.Device(device_index).name()))
        return path, options.precision

    def _deserialize(self, engine_path: Path) -> Any:
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise ModelContractError(f"TensorRT cannot deserialize {engine_path} (built by another "
                                     "TensorRT version or for another GPU? rebuild it with build-engine)")
        self._runtime = runtime  # the runtime must outlive the engine
        return engine

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelContractError(f"engine tensor '{name}' has a dynamic shape {shape}")
            spec = TensorSpec(name, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        return inputs, outputs

    def _allocate(self) -> None:
        """Pinned host + device buffer per tensor, two device state buffers; addresses set by name."""
        cuda = self._cuda
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        frame_names = frame_input_names(self._inputs.values())  # + dt / lidar_valid where the graph has them
        for spec in [*(self._inputs[n] for n in (*frame_names, PREV_VALID_INPUT)),
                     *(self._outputs[n] for n in HEAD_OUTPUTS)]:
            self._host[spec.name] = cuda.pagelocked_zeros(spec.shape, spec.dtype)
            self._device[spec.name] = cuda.mem_alloc(spec.nbytes)
            self._context.set_tensor_address(spec.name, int(self._device[spec.name]))
        state = self._outputs[STATE_OUTPUT]
        self._states = (cuda.mem_alloc(state.nbytes), cuda.mem_alloc(state.nbytes))
        self._state_host = cuda.pagelocked_zeros(state.shape, state.dtype)
        self._frame_specs = tuple(self._inputs[n] for n in frame_names)
        views = {n: read_only_view(self._host[n]) for n in HEAD_OUTPUTS}
        if self._return_state:
            views[STATE_OUTPUT] = read_only_view(self._state_host)
        self._result = MappingProxyType(views)
        self._parity = 0
        self._zero_states()

    def _zero_states(self) -> None:
        for buffer in self._states:
            self._cuda.memset_d8_async(buffer, 0, self._outputs[STATE_OUTPUT].nbytes, self._stream)
        self._stream.synchronize()
        self._state_valid = False

    def _set_state_addresses(self, parity: int, output: Any = None) -> None:
        """`prev_bev` reads state[parity]; `bev_state` writes state[1 - parity] (or `output`)."""
        target = self._states[1 - parity] if output is None else output
        self._context.set_tensor_address(STATE_INPUT, int(self._states[parity]))
        self._context.set_tensor_address(STATE_OUTPUT, int(target))

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        arrays = [frame_array(inputs, spec) for spec in self._frame_specs]  # validate before any copy
        cuda, stream = self._cuda, self._stream
        with self._active():
            for spec, array in zip(self._frame_specs, arrays):
                np.copyto(self._host[spec.name], array)
                cuda.memcpy_htod_async(self._device[spec.name], self._host[spec.name], stream)
            self._host[PREV_VALID_INPUT][0] = 1 if self._state_valid else 0
            cuda.memcpy_htod_async(self._device[PREV_VALID_INPUT], self._host[PREV_VALID_INPUT], stream)
            if self._graphs is not None:
                self._graphs.launch(self._parity)
            else:
                self._set_state_addresses(self._parity)
                if not self._context.execute_async_v3(stream.handle):
                    raise EngineBuildError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            for name in HEAD_OUTPUTS:
                cuda.memcpy_dtoh_async(self._host[name], self._device[name], stream)
            if self._return_state:
                cuda.memcpy_dtoh_async(self._state_host, self._states[1 - self._parity], stream)
            stream.synchronize()
        self._parity = 1 - self._parity
        self._state_valid = True
        return self._result

    def reset_state(self) -> None:
        with self._active():
            self._zero_states()
        self._state_host.fill(0)

    def warmup(self, iterations: int = 3) -> None:
        """Enqueue with `prev_valid = 0` into a scratch state buffer; host outputs and state untouched."""
        cuda, stream = self._cuda, self._stream
        with self._active():
            scratch = cuda.mem_alloc(self._outputs[STATE_OUTPUT].nbytes)
            zero = cuda.pagelocked_zeros(1, self._inputs[PREV_VALID_INPUT].dtype)
            cuda.memcpy_htod_async(self._device[PREV_VALID_INPUT], zero, stream)
            self._set_state_addresses(self._parity, output=scratch)
            for _ in range(iterations):
                self._context.execute_async_v3(stream.handle)
            stream.synchronize()
            self._set_state_addresses(self._parity)
            scratch.free()

    def describe(self) -> EngineDescription:
        return EngineDescription(
            backend="tensorrt", precision=self._precision, providers=("TensorRT",),
            model_path=str(self._path), inputs=tuple(self._inputs.values()),
            outputs=tuple(self._outputs.values()), dims=dict(self._dims), details=dict(self._details))

    @property
    def state_valid(self) -> bool:
        return self._state_valid

