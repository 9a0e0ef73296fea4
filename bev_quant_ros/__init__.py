"""bev_quant_ros: INT8-quantized bird's-eye-view 3D detection for ROS 2."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__version__ = "0.1.0"


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """Module ``__getattr__`` and ``__all__`` for a subpackage's public names (name -> submodule).

    The submodule is imported on first access (PEP 562), so ``import bev_quant_ros.x.y`` stays
    as cheap as before: a launch file reading the parameter table does not load ONNX Runtime.
    """
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)
