"""Where the package's shipped files (config/, models/) are found.

A source checkout (or editable install) uses the files next to the package
source; a colcon/ament install uses share/bev_quant_ros/. Checking the source
tree first keeps a developer from silently running stale installed copies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bev_quant_ros.errors import ConfigError

PACKAGE = "bev_quant_ros"
DEFAULT_MODEL_STEM = "bev_v3"  # network v3: detects camera-only when the lidar fails (models/bev_v3.md)


def package_file(subdir: str, name: str) -> Path:
    """Path of ``<subdir>/<name>`` shipped with the package; ConfigError when absent."""
    candidates = [Path(__file__).resolve().parent.parent / subdir / name]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in [*prefixes, sys.prefix]:
        candidates.append(Path(prefix) / "share" / PACKAGE / subdir / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{subdir}/{name} not found; looked in: {', '.join(map(str, candidates))}")


# The INT8 model ships in two Q/DQ flavours of one plan (quant/qdq.py): TensorRT builds the
# symmetric one; ONNX Runtime on a CPU runs the one with unsigned activations fastest. Where a
# QAT student ships, each runtime takes it: <stem>.qat.int8.onnx for TensorRT (v3: it beat the
# PTQ model's TensorRT flavour on the worst held-out condition, models/bev_v3.md) and
# <stem>.qat.int8_cpu.onnx for ONNX Runtime (v3: the CPU-grid student, trained on the uint8 grid
# it runs; it beat the PTQ CPU flavour). Otherwise the PTQ model (bev_tiny).
_INT8_SUFFIXES = {"tensorrt": (".qat.int8.onnx", ".int8.onnx"), "onnxruntime": (".qat.int8_cpu.onnx", ".int8_cpu.onnx")}


def default_model_path(precision: str, backend: str = "onnxruntime", stem: str = DEFAULT_MODEL_STEM) -> Path:
    """The shipped model ``stem`` for ``precision`` on a concrete ``backend``: models/<stem>.onnx
    (fp32), <stem>.qat.int8.onnx where it ships else <stem>.int8.onnx (int8, TensorRT), or
    <stem>.qat.int8_cpu.onnx where it ships else <stem>.int8_cpu.onnx (int8, ONNX Runtime); ``stem``
    bev_tiny for the v2 files (PTQ only)."""
    if precision == "fp32":
        return package_file("models", stem + ".onnx")
    if precision != "int8" or backend not in _INT8_SUFFIXES:
        raise ConfigError(f"no shipped model for precision '{precision}' on backend '{backend}'")
    *preferred, fallback = _INT8_SUFFIXES[backend]
    for suffix in preferred:
        try:
            return package_file("models", stem + suffix)
        except ConfigError:
            continue
    return package_file("models", stem + fallback)
