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
DEFAULT_MODEL_STEM = "bev_tiny"


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


def default_model_path(precision: str) -> Path:
    """The shipped model for ``precision``: models/bev_tiny.onnx (fp32) or bev_tiny.int8.onnx."""
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return package_file("models", DEFAULT_MODEL_STEM + suffix)
