"""TensorRT engine build from the Q/DQ ONNX, and the on-disk engine cache.

A serialized TensorRT engine is only valid for the TensorRT version and GPU it
was built on, so (like Autoware and Isaac ROS) the engine is cached next to a
JSON key of ONNX sha256 + TensorRT version + GPU name + precision options, and
rebuilt when any of them changes. `ensure_engine` is the build-only entry point
(`bev-quant build-engine`, or a node started with `build_only`).

Precision (docs/architecture.md §3): INT8 comes from the graph's Q/DQ nodes (explicit
quantization, no calibrator). On TensorRT 10 (weakly typed, JetPack 6) the
builder gets `BuilderFlag.INT8` and, when `allow_fp16`, `BuilderFlag.FP16` so
float layers may run in FP16. TensorRT 11 and TensorRT-RTX removed those flags
(strongly typed only): there the network is created `STRONGLY_TYPED` and the
ONNX types decide, so an FP16 float path must already be in the ONNX.

Verification status: the build path (parse, config, timing cache, serialize,
cache key/rebuild) runs in the unit tests with `tensorrt_rtx` on a CPU-only
machine. With TensorRT 10/11 proper it has only been reviewed against the
TensorRT Python API docs (IBuilderConfig.set_memory_pool_limit /
create_timing_cache / set_timing_cache / get_timing_cache, BuilderFlag,
NetworkDefinitionCreationFlag.STRONGLY_TYPED, OnnxParser.parse_from_file,
Builder.build_serialized_network); `benchmarks/gpu_check.sh` runs it on a GPU.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bev_quant_ros.engine.io_check import check_contract, onnx_precision, onnx_specs, read_onnx
from bev_quant_ros.errors import ConfigError, EngineBuildError, ModelContractError

LOG = logging.getLogger(__name__)
PRECISIONS = ("int8", "fp16", "fp32")
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


@dataclass(frozen=True)
class BuildOptions:
    """How to build: precision policy, workspace limit and timing cache file."""

    precision: str = "int8"
    allow_fp16: bool = True
    workspace_mib: int = 1024
    timing_cache_path: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got '{self.precision}'")
        if self.workspace_mib <= 0:
            raise ConfigError(f"workspace_mib must be > 0, got {self.workspace_mib}")


@dataclass(frozen=True)
class CacheKey:
    """Everything a serialized engine depends on; a cached engine is reused only on equality."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    allow_fp16: bool

    def differences(self, other: "CacheKey") -> list[str]:
        """Names of the fields that differ (the rebuild reason)."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: {theirs[k]!r} -> {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def import_tensorrt(module: str = "tensorrt") -> ModuleType:
    """Import a TensorRT flavour (`tensorrt` or `tensorrt_rtx`) or raise EngineBuildError."""
    if module not in TENSORRT_MODULES:
        raise ConfigError(f"TensorRT module must be one of {TENSORRT_MODULES}, got '{module}'")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineBuildError(f"python module '{module}' is not importable: {exc}") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def current_gpu_name(device_index: int = 0) -> str:
    """Name of the CUDA device the engine will run on (pycuda)."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return str(cuda.Device(device_index).name())
    except Exception as exc:  # ImportError or pycuda's driver errors
        raise EngineBuildError(f"cannot query CUDA device {device_index}: {exc}") from exc


def engine_paths(cache_dir: Path, onnx_path: Path, precision: str) -> tuple[Path, Path]:
    """(engine file, JSON key file) for a model in the cache directory."""
    engine = Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}.engine"
    return engine, engine.with_suffix(".engine.json")


def _is_weakly_typed(trt: ModuleType) -> bool:
    """TensorRT 10 still has precision builder flags; TensorRT 11 and TensorRT-RTX do not."""
    return hasattr(trt.BuilderFlag, "INT8")


def _check_onnx(onnx_path: Path, precision: str) -> None:
    """Fail before a long build when the ONNX does not fit the contract or the precision."""
    model = read_onnx(onnx_path)
    check_contract(*onnx_specs(model))
    if precision == "int8" and onnx_precision(model) != "int8":
        raise ModelContractError(f"{onnx_path} has no Q/DQ nodes: INT8 engines are built from a Q/DQ "
                                 "ONNX (explicit quantization); quantize it first")


def build_serialized_engine(trt: ModuleType, onnx_path: Path, options: BuildOptions,
                            logger: Any = None) -> bytes:
    """Parse the ONNX and build a serialized engine with the precision policy above."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak = _is_weakly_typed(trt)
    flags = 0 if weak else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if weak:
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if options.precision == "fp16" or (options.precision == "int8" and options.allow_fp16):
            config.set_flag(trt.BuilderFlag.FP16)
    else:
        LOG.info("strongly typed build (%s %s): layer precisions come from the ONNX types",
                 trt.__name__, trt.__version__)
    cache_path = options.timing_cache_path
    blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(blob)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    if cache_path:
        _write_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure_engine(onnx_path: str | Path, cache_dir: str | Path, options: BuildOptions = BuildOptions(), *,
                  trt_module: str = "tensorrt", gpu_name: str | None = None,
                  force: bool = False) -> tuple[Path, bool]:
    """Return (engine path, rebuilt): reuse the cached engine when its key matches, else build it."""
    onnx_path, cache_dir = Path(onnx_path), Path(cache_dir)
    _check_onnx(onnx_path, options.precision)
    trt = import_tensorrt(trt_module)
    key = CacheKey(file_sha256(onnx_path), str(trt.__version__), gpu_name or current_gpu_name(),
                   options.precision, options.allow_fp16)
    engine_path, key_path = engine_paths(cache_dir, onnx_path, options.precision)
    reason = _stale_reason(engine_path, key_path, key) if not force else "rebuild forced"
    if reason is None:
        LOG.info("engine cache hit: %s", engine_path)
        return engine_path, False
    LOG.info("building TensorRT engine %s (%s)", engine_path, reason)
    _write_atomic(engine_path, build_serialized_engine(trt, onnx_path, options))
    _write_atomic(key_path, json.dumps(asdict(key), indent=2).encode())
    return engine_path, True


def read_cache_key(key_path: Path) -> CacheKey | None:
    """The key stored next to a cached engine, or None when absent/unreadable."""
    try:
        return CacheKey(**json.loads(key_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _stale_reason(engine_path: Path, key_path: Path, key: CacheKey) -> str | None:
    if not engine_path.is_file():
        return "no cached engine"
    stored = read_cache_key(key_path)
    if stored is None:
        return f"cache key {key_path.name} missing or unreadable"
    changed = key.differences(stored)
    return "cache key changed: " + ", ".join(changed) if changed else None
